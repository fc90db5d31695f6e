"""``segcli export``: a checkpoint as an ONNX bundle that runs without PyTorch, checked against
the checkpoint before anyone ships it.

A bundle is a folder: ``model.onnx`` (input ``image``: ``(N, 3, H, W) float32``, output
``logits``: ``(N, C, H, W) float32``), ``bundle.json`` (classes, colours, the preprocessing in
words and numbers, the input size rule, the parity figures) and, with ``--quantize``,
``model.int8.onnx``. The export is torch's own (``torch.onnx.export``, the dynamo exporter with
onnxscript), the runtime onnxruntime, the int8 model onnxruntime's ``quantize_dynamic``; what
is written here is the bundle's description, the parity check (SMP's export notebook uses
``rtol=1e-3, atol=1e-5``; we also require argmax agreement >= 99.9%) and a Predictor over
onnxruntime, so that ``segcli predict -c BUNDLE`` shares every inference mode that makes sense
there (whole, slide, flip, multi-scale; dense CRF too) with the checkpoint path.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from segcli.errors import SegcliError

MODEL_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
BUNDLE_FILE = "bundle.json"
BUNDLE_FORMAT = 1
SIZE_DIVISOR = 32
# SMP's export notebook checks rtol 1e-3 / atol 1e-5; we keep its rtol, allow 1e-4 absolute (float32
# logits near 0 of ViT encoders differ by up to ~8e-5 between torch and onnxruntime: DPT measured) and
# ask that at least 99.9% of the pixels keep their argmax.
RTOL, ATOL, AGREEMENT = 1e-3, 1e-4, 0.999


def require_export():
    """``(onnx, onnxruntime)``.

    Raises:
        SegcliError: one of onnx, onnxruntime, onnxscript is missing (names the extra)."""
    try:
        import onnx
        import onnxruntime
        import onnxscript  # noqa: F401  (torch's dynamo exporter needs it)
    except ImportError as exc:
        raise SegcliError(
            f"ONNX export and bundles need {exc.name}: pip install 'segcli[export]'"
        ) from None
    return onnx, onnxruntime


@dataclass
class Parity:
    """onnxruntime against the torch model (float32, no autocast) on the same inputs.

    ``max_abs``: largest absolute logit difference; ``allclose``: every logit within
    ``atol + rtol * |torch|``; ``agreement``: fraction of pixels whose argmax agrees (0..1);
    ``images``: how many; ``source``: where they came from."""

    model: str
    images: int
    source: str
    max_abs: float
    allclose: bool
    agreement: float

    @property
    def ok(self) -> bool:
        """Within tolerance: allclose and argmax agreement >= ``AGREEMENT``."""
        return self.allclose and self.agreement >= AGREEMENT


def is_bundle(path: Path) -> bool:
    """A bundle folder (with ``bundle.json``) or an ``.onnx`` file (with ``bundle.json`` beside it)."""
    path = Path(path)
    return (path.is_dir() and (path / BUNDLE_FILE).is_file()) or path.suffix.lower() == ".onnx"


def parse_size(text: str | None) -> tuple[int, int] | None:
    """``"HxW"`` -> (H, W) in pixels, multiples of 32.

    Raises:
        SegcliError: not two positive multiples of 32 joined by x."""
    if text is None:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SegcliError(f"--size {text}: expected HxW in pixels, e.g. 384x480") from None
    if h < 1 or w < 1 or h % SIZE_DIVISOR or w % SIZE_DIVISOR:
        raise SegcliError(
            f"--size {text}: expected positive multiples of {SIZE_DIVISOR} (the models' stride)"
        )
    return h, w


class OnnxModel:
    """An onnxruntime session as a model: ``(N, 3, H, W) float32`` tensor -> ``(N, C, H, W) float32``
    logits tensor on the CPU. A fixed-size model gets inputs smaller than its size padded
    bottom/right (the output cropped back).

    Raises:
        SegcliError: an input larger than a fixed-size model's input (use slide inference)."""

    def __init__(
        self, path: Path, size: tuple[int, int] | None, threads: int | None = None
    ) -> None:
        _, ort = require_export()
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.path, self.size = Path(path), size
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.size is not None:
            if h > self.size[0] or w > self.size[1]:
                raise SegcliError(
                    f"{self.path}: input {h}x{w} is larger than the model's fixed {self.size[0]}x"
                    f"{self.size[1]}; use --inference slide inference.crop=[{self.size[0]},{self.size[1]}]"
                )
            x = torch.nn.functional.pad(x, (0, self.size[1] - w, 0, self.size[0] - h))
        out = self.session.run(None, {self.input: x.detach().float().cpu().contiguous().numpy()})[0]
        return torch.from_numpy(out)[..., :h, :w]


def export_onnx(
    model: torch.nn.Module,
    example: torch.Tensor,
    path: Path,
    opset: int,
    dynamic: bool,
    arch: str = "model",
) -> str:
    """``model`` (eval mode, float32, CPU) to ONNX at ``path``; returns the exporter used.

    ``dynamic``: batch, height and width free (height and width multiples of 32), else fixed to
    ``example``'s shape ``(N, 3, H, W)``. torch's dynamo exporter first; where it fails, or its
    dynamic graph does not run or does not match torch at another size (adaptive pooling can
    freeze sizes), torch's TorchScript exporter. A dynamic graph is checked at a second size and
    batch (N + 1, H + 32, W + 64) against torch.

    Raises:
        SegcliError: neither exporter gives a working graph (one line naming ``arch`` and the
            first exporter's reason; for a dynamic export, the hint to fix a size with ``--size``).
    """
    require_export()
    reasons = []
    for exporter in ("dynamo", "torchscript"):
        try:
            _export_with(exporter, model, example, path, opset, dynamic)
            if dynamic:
                n, _, h, w = example.shape
                other = torch.randn(n + 1, 3, h + SIZE_DIVISOR, w + 2 * SIZE_DIVISOR)
                if not check_parity(model, OnnxModel(path, None), [other], "generated").ok:
                    raise ValueError(
                        f"its graph differs from torch at {h + SIZE_DIVISOR}x{w + 2 * SIZE_DIVISOR}"
                    )
            return exporter
        except SegcliError:
            raise
        except Exception as exc:  # noqa: BLE001 - torch.export, onnxscript, onnxruntime: any error means "no"
            reasons.append(f"{exporter}: {_first_line(exc)}")
    hint = "; export a fixed size instead: --size HxW" if dynamic else ""
    raise SegcliError(f"model.arch={arch}: no working ONNX graph ({reasons[0][:300]}){hint}")


def _export_with(exporter: str, model, example, path: Path, opset: int, dynamic: bool) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            shapes = None
            if dynamic:
                dim = torch.export.Dim
                shapes = (
                    {
                        0: dim("batch", min=1, max=1024),
                        2: SIZE_DIVISOR * dim("h32", min=1, max=1024),
                        3: SIZE_DIVISOR * dim("w32", min=1, max=1024),
                    },
                )
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                dynamic_shapes=shapes,
                opset_version=opset,
                input_names=["image"],
                output_names=["logits"],
                verbose=False,
            )
            program.save(str(path))
            return
        axes = {
            "image": {0: "batch", 2: "height", 3: "width"},
            "logits": {0: "batch", 2: "height", 3: "width"},
        }
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=min(opset, 17),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes=axes if dynamic else None,
        )


def _first_line(exc: BaseException) -> str:
    """The most telling line of an exporter's error: the root cause's first non-empty line."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    import re

    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()]
    return f"{type(exc).__name__}: " + next((line for line in lines if line), "")


def _parity_inputs(
    ckpt: dict, data_root: str | None, size: tuple[int, int] | None, count: int, seed: int = 0
) -> tuple[list[torch.Tensor], str]:
    """Up to ``count`` preprocessed ``(1, 3, H, W)`` inputs from the run's val split (else test,
    train), each cut/padded to ``size`` when fixed; generated images when the data is not reachable."""
    from segcli.config import run_seed
    from segcli.data.datasets import build_datasets

    cfg = ckpt["config"]
    if data_root is not None:
        cfg["dataset"]["root"] = data_root
    for split in ("val", "test", "train"):
        try:
            _, data, _ = build_datasets(cfg, (split,), run_seed(cfg), augmented=())
            dataset = data[split]
            if len(dataset) == 0:
                continue
        except SegcliError:  # data missing, moved or unreadable: fall back to generated images
            continue
        picks = np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int)
        inputs = [dataset[int(i)]["image"].unsqueeze(0) for i in dict.fromkeys(picks)]
        where = cfg["dataset"].get("root") or cfg["dataset"]["kind"]
        return [_fit(x, size) for x in inputs], f"{split} split of {where}"
    rng = np.random.default_rng(seed)
    h, w = size or (256, 256)
    norm = ckpt["normalization"]
    mean = torch.tensor(norm["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(norm["std"]).view(1, 3, 1, 1)
    inputs = [
        (
            (torch.from_numpy(rng.integers(0, 256, (1, 3, h, w)).astype(np.float32)) / 255 - mean)
            / std
        )
        for _ in range(count)
    ]
    return inputs, f"generated {h}x{w} images (the run's data was not found)"


def _fit(x: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    if size is None:
        return x
    x = x[..., : size[0], : size[1]]
    return torch.nn.functional.pad(x, (0, size[1] - x.shape[-1], 0, size[0] - x.shape[-2]))


def check_parity(
    model: torch.nn.Module, onnx_model: OnnxModel, inputs: Sequence[torch.Tensor], source: str
) -> Parity:
    """Compare ``model`` (torch, float32) with ``onnx_model`` on ``inputs`` (see ``Parity``)."""
    max_abs, close, agree, pixels = 0.0, True, 0, 0
    with torch.inference_mode():
        for x in inputs:
            ref = model(x).float()
            out = onnx_model(x)
            diff = (out - ref).abs()
            max_abs = max(max_abs, float(diff.max()))
            close = close and bool((diff <= ATOL + RTOL * ref.abs()).all())
            agree += int((out.argmax(1) == ref.argmax(1)).sum())
            pixels += ref.shape[0] * ref.shape[-2] * ref.shape[-1]
    return Parity(onnx_model.path.name, len(inputs), source, max_abs, close, agree / max(pixels, 1))


def images_per_second(model, inputs: Sequence[torch.Tensor], repeats: int = 2) -> float:
    """Throughput in images/s of ``model`` over ``inputs`` (one warm-up pass, then the best of
    ``repeats`` timed passes)."""
    with torch.inference_mode():
        model(inputs[0])
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            for x in inputs:
                model(x)
            best = min(best, time.perf_counter() - start)
    return sum(x.shape[0] for x in inputs) / best


def _write_bundle(
    model: torch.nn.Module,
    ckpt: dict,
    checkpoint: Path,
    parity_inputs: tuple[list[torch.Tensor], str],
    folder: Path,
    opset: int,
    size: tuple[int, int] | None,
    quantize: bool,
    speed: bool,
) -> dict:
    """``export_bundle``'s files in ``folder``: the float32 graph (and the int8 one), each checked
    for parity on ``parity_inputs`` ((N, 3, H, W) float32 batches, where they come from), their
    speeds when ``speed``, and ``bundle.json``; returns the bundle description.

    Raises:
        SegcliError: export failure (see ``export_onnx``).
    """
    inputs, source = parity_inputs
    exporter = export_onnx(
        model, inputs[0], folder / MODEL_FILE, opset, size is None, ckpt["config"]["model"]["arch"]
    )
    fp32 = OnnxModel(folder / MODEL_FILE, size)
    parity = [check_parity(model, fp32, inputs, source)]
    speeds = {}
    if speed:
        speeds = {
            "torch float32 (eager)": images_per_second(model, inputs),
            "onnxruntime float32": images_per_second(fp32, inputs),
        }
    if quantize:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(
            str(folder / MODEL_FILE), str(folder / INT8_FILE), weight_type=QuantType.QInt8
        )
        int8 = OnnxModel(folder / INT8_FILE, size)
        parity.append(check_parity(model, int8, inputs, source))
        if speed:
            speeds["onnxruntime int8 (dynamic)"] = images_per_second(int8, inputs)
    bundle = {
        **_describe(ckpt, checkpoint, opset, size, parity, speeds, inputs[0].shape),
        "exporter": exporter,
    }
    (folder / BUNDLE_FILE).write_text(json.dumps(bundle, indent=2) + "\n")
    return bundle


def export_bundle(
    checkpoint: Path,
    out_dir: Path,
    opset: int = 18,
    size: tuple[int, int] | None = None,
    quantize: bool = False,
    data_root: str | None = None,
    parity_images: int = 8,
    speed: bool = True,
) -> dict:
    """Write the bundle of ``checkpoint`` into ``out_dir`` (see module docstring) and check it.

    ``size``: (H, W) for a fixed input size, None for any multiple of 32 (and any batch). The bundle
    is written to a temporary folder beside ``out_dir`` and moved into place when complete.

    Returns:
        the bundle description (``bundle.json``), whose ``parity`` lists the ``Parity`` figures of the
        float32 model (and the int8 one), and ``speed_images_per_second``: torch (float32, eager),
        onnxruntime float32 (and int8) on the parity inputs, when ``speed``.

    Raises:
        SegcliError: extras missing, checkpoint unreadable, export failure (see ``export_onnx``).
    """
    import shutil

    from segcli.models.build import model_from_checkpoint
    from segcli.models.classical import ClassicalModel
    from segcli.runs.checkpoints import load_checkpoint

    require_export()
    ckpt = load_checkpoint(checkpoint)
    cfg = ckpt["config"]
    model = model_from_checkpoint(ckpt, torch.device("cpu"))
    if isinstance(model, ClassicalModel):
        raise SegcliError(
            f"{checkpoint}: model.arch={cfg['model']['arch']} is a scikit-learn/NumPy baseline; "
            "it has no ONNX graph to export (eval and predict run it from the checkpoint)"
        )
    inputs, source = _parity_inputs(ckpt, data_root, size, parity_images)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        bundle = _write_bundle(
            model, ckpt, checkpoint, (inputs, source), tmp, opset, size, quantize, speed
        )
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return bundle


def _describe(
    ckpt: dict,
    checkpoint: Path,
    opset: int,
    size,
    parity: list[Parity],
    speeds: dict,
    shape: Sequence[int],
) -> dict:
    from segcli.models.build import model_label

    cfg, classes, norm = ckpt["config"], ckpt["classes"], ckpt["normalization"]
    return {
        "format": BUNDLE_FORMAT,
        "model": MODEL_FILE,
        "architecture": model_label(cfg["model"]),
        "class_names": classes["class_names"],
        "colors": classes["colors"],
        "num_classes": int(classes["num_classes"]),
        "ignore_index": int(classes["ignore_index"]),
        "input": {
            "name": "image",
            "layout": "NCHW float32, RGB",
            "normalization": {
                "mean": list(norm["mean"]),
                "std": list(norm["std"]),
                "rule": "x = (pixel / 255 - mean) / std, per channel",
            },
            "size": (
                f"fixed {size[0]}x{size[1]}"
                if size
                else f"any height and width that are multiples of {SIZE_DIVISOR}, any batch"
            ),
            "fixed_size": list(size) if size else None,
            "padding": f"pad bottom/right with black pixels (0, before normalising) to a multiple of {SIZE_DIVISOR}"
            + (" / the fixed size" if size else "")
            + "; crop the output back",
            "scale": float(cfg["dataset"].get("scale", 1.0)),
        },
        "output": {"name": "logits", "layout": "NCHW float32", "prediction": "argmax over C"},
        "eval_augmentation": cfg["augmentation"].get("eval"),
        "checkpoint": str(Path(checkpoint).resolve()),
        "epoch": ckpt.get("epoch"),
        "opset": opset,
        "torch": torch.__version__,
        "example_input": list(shape),
        "parity": [
            {**asdict(p), "ok": p.ok, "rtol": RTOL, "atol": ATOL, "min_agreement": AGREEMENT}
            for p in parity
        ],
        "speed_images_per_second": {k: round(v, 3) for k, v in speeds.items()},
    }


def load_bundle(path: Path) -> tuple[dict, Path]:
    """``(bundle.json, model file)`` of a bundle folder or an ``.onnx`` file inside one.

    Raises:
        SegcliError: no bundle.json, or one of another format."""
    path = Path(path)
    folder, model = (path, path / MODEL_FILE) if path.is_dir() else (path.parent, path)
    meta = folder / BUNDLE_FILE
    if not meta.is_file():
        raise SegcliError(f"{meta}: missing; a segcli bundle is a folder written by segcli export")
    if not model.is_file():
        raise SegcliError(f"{model}: no such ONNX model file")
    try:
        bundle = json.loads(meta.read_text())
        assert bundle["format"] == BUNDLE_FORMAT
    except (ValueError, KeyError, AssertionError):
        raise SegcliError(
            f"{meta}: not a segcli bundle description (format {BUNDLE_FORMAT})"
        ) from None
    return bundle, model


def predictor_from_bundle(path: Path, settings=None):
    """A ``predict.Predictor`` running the bundle's ONNX model on onnxruntime (CPU, float32 or the
    int8 file when named), with the bundle's preprocessing and ``settings`` (inference/modes.py).

    Raises:
        SegcliError: see ``load_bundle``, ``require_export``; a CRF without pydensecrf2.
    """
    from segcli.data.augment import build_transforms
    from segcli.inference.modes import Inference, InferenceSettings
    from segcli.inference.predict import Predictor
    from segcli.runtime import Precision, StepContext

    bundle, model_file = load_bundle(path)
    spec = bundle["input"]
    norm = spec["normalization"]
    size = tuple(spec["fixed_size"]) if spec.get("fixed_size") else None
    transform = build_transforms(
        bundle.get("eval_augmentation"), bundle["ignore_index"], mean=norm["mean"], std=norm["std"]
    )
    ctx = StepContext(
        torch.device("cpu"),
        None,
        False,
        float(spec.get("scale", 1.0)),
        Precision(None, "false", "onnxruntime float32"),
    )
    return Predictor(
        OnnxModel(model_file, size),
        transform,
        bundle["colors"],
        bundle["class_names"],
        ctx,
        Inference(settings or InferenceSettings(), norm["mean"], norm["std"]),
    )
