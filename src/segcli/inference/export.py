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
there (whole, slide, flip, multi-scale; dense CRF too) with the checkpoint path. Here: the
bundle, written and read back; the graph and its runtime in ``onnx_graph``, the check in
``parity``.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import torch

from segcli.errors import SegcliError
from segcli.inference.onnx_graph import SIZE_DIVISOR, OnnxModel, export_onnx, require_export
from segcli.inference.parity import (
    AGREEMENT,
    ATOL,
    RTOL,
    Parity,
    check_parity,
    images_per_second,
    parity_inputs,
)

MODEL_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
BUNDLE_FILE = "bundle.json"
BUNDLE_FORMAT = 1


def is_bundle(path: Path) -> bool:
    """A bundle folder (with ``bundle.json``) or an ``.onnx`` file (with ``bundle.json`` beside
    it)."""
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
        the bundle description (``bundle.json``), whose ``parity`` lists the ``Parity`` figures
        of the float32 model (and the int8 one), and ``speed_images_per_second``: torch (float32,
        eager), onnxruntime float32 (and int8) on the parity inputs, when ``speed``.

    Raises:
        SegcliError: extras missing, checkpoint unreadable, export failure (see ``export_onnx``).
    """
    from segcli.runs.checkpoints import load_checkpoint

    require_export()
    ckpt = load_checkpoint(checkpoint)
    model = _exportable_model(ckpt, checkpoint)
    inputs, source = parity_inputs(ckpt, data_root, size, parity_images)
    with _staged(Path(out_dir)) as tmp:
        arch = ckpt["config"]["model"]["arch"]
        exporter = export_onnx(model, inputs[0], tmp / MODEL_FILE, opset, size is None, arch)
        parity, speeds = _check_models(model, tmp, size, inputs, source, quantize, speed)
        bundle = {
            **_describe(ckpt, checkpoint, opset, size, parity, speeds, inputs[0].shape),
            "exporter": exporter,
        }
        (tmp / BUNDLE_FILE).write_text(json.dumps(bundle, indent=2) + "\n")
    return bundle


def _exportable_model(ckpt: dict, checkpoint: Path) -> torch.nn.Module:
    """The checkpoint's model on the CPU, refused when it has no torch graph to export."""
    from segcli.models.build import model_from_checkpoint

    cfg = ckpt["config"]
    model = model_from_checkpoint(ckpt, torch.device("cpu"))
    if getattr(model, "fits_from_data", False):
        raise SegcliError(
            f"{checkpoint}: model.arch={cfg['model']['arch']} is a scikit-learn/NumPy baseline; "
            "it has no ONNX graph to export (eval and predict run it from the checkpoint)"
        )
    return model


@contextmanager
def _staged(out_dir: Path) -> Iterator[Path]:
    """A temporary folder beside ``out_dir`` that replaces ``out_dir`` when the block completes
    (and is removed when it raises)."""
    import shutil

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        yield tmp
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _check_models(
    model: torch.nn.Module,
    folder: Path,
    size: tuple[int, int] | None,
    inputs: Sequence[torch.Tensor],
    source: str,
    quantize: bool,
    speed: bool,
) -> tuple[list[Parity], dict[str, float]]:
    """The parity of ``folder``'s float32 model (and, with ``quantize``, of the int8 model written
    beside it) against ``model``, and their speeds in images/s when ``speed``."""
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
    return parity, speeds


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
            "padding": "pad bottom/right with black pixels (0, before normalising) to a multiple "
            f"of {SIZE_DIVISOR}" + (" / the fixed size" if size else "") + "; crop the output back",
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
