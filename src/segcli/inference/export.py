"""``segcli export``: a checkpoint as an ONNX bundle that runs without PyTorch, checked against
the checkpoint before anyone ships it.

A bundle is a folder: ``model.onnx`` (input ``image``: ``(N, C_in, H, W) float32``, output
``logits``: ``(N, C, H, W) float32``), ``bundle.json`` (classes, colours, the preprocessing in
words and numbers, the input size rule, the parity figures) and, with ``--quantize``,
``model.int8.onnx``. The export is torch's own (``torch.onnx.export``, the dynamo exporter with
onnxscript), the runtime onnxruntime, the int8 model onnxruntime's ``quantize_dynamic``; what
is written here is the bundle and its description; the graph and its runtime are
``onnx_graph``'s, the parity check ``parity``'s (SMP's export notebook uses ``rtol=1e-3,
atol=1e-5``; we also require argmax agreement >= 99.9%), reading a bundle back (``segcli predict
-c BUNDLE``) ``bundle``'s. ``--format openvino`` adds the bundle's OpenVINO IR (and NNCF's int8),
written and run by ``openvino_graph``, checked the same way. ``--format web`` adds an offline web
page running ``model.onnx`` on onnxruntime-web, written and checked in headless Chromium by
``web_page``. ``--format litert`` adds the LiteRT (TFLite) file of the torch model (and its
int8), converted by litert-torch and run on the LiteRT interpreter by ``litert_graph``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from segcli.errors import SegcliError
from segcli.inference.bundle import BUNDLE_FILE, BUNDLE_FORMAT, MODEL_FILE
from segcli.inference.onnx_graph import SIZE_DIVISOR, OnnxModel, export_onnx, require_export
from segcli.inference.parity import (
    AGREEMENT,
    ATOL,
    RTOL,
    Parity,
    check_parity,
    images_per_second,
    parity_samples,
)

INT8_FILE = "model.int8.onnx"
#: ``segcli export --format`` values
TARGETS = ("onnx", "openvino", "litert", "web")


@dataclass(frozen=True)
class Checks:
    """What every exported model is checked on: ``inputs`` (``(1, C_in, H, W) float32``,
    preprocessed) and their ``masks`` (``(1, H, W) int64``; None for generated images), where they
    come from, and whether to time the models (images/s)."""

    inputs: list[torch.Tensor]
    masks: list[torch.Tensor] | None
    source: str
    speed: bool

    def parity(self, loaded, exported) -> Parity:
        """``check_parity`` of ``exported`` against ``loaded.model``, with the masks' mIoU."""
        return check_parity(
            loaded.model, exported, self.inputs, self.source, self.masks, loaded.classes
        )


def _parity_record(p: Parity) -> dict:
    """bundle.json's entry of one model's parity."""
    return {**asdict(p), "ok": p.ok, "rtol": RTOL, "atol": ATOL, "min_agreement": AGREEMENT}


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
    target: str = "onnx",
    onnxruntime_web: Path | None = None,
    nhwc: bool = False,
) -> dict:
    """Write the bundle of ``checkpoint`` into ``out_dir`` (see module docstring) and check it.
    ``target``: ``onnx`` (the bundle above), or ``openvino``: the same bundle plus its OpenVINO IR
    ``model.xml`` (with ``quantize``, NNCF's int8 ``model.int8.xml`` calibrated on the run's
    training images instead of onnxruntime's dynamic int8), each checked the same way
    (inference/openvino_graph.py), or ``web``: the ONNX bundle plus its web page (index.html and
    the files beside it; onnxruntime-web from ``onnxruntime_web``, an npm tarball or package
    folder, else npm's tarball cached or downloaded once: ``web_page.onnxruntime_web``), checked
    in headless Chromium on the parity images' pixels; or ``litert``: the ONNX bundle plus the
    LiteRT file ``model.tflite`` of the torch model at a static size (``size``, else the largest
    parity image's), NHWC input/output with ``nhwc``, and with ``quantize`` pt2e's int8
    ``model.int8.tflite`` calibrated on the run's training images (inference/litert_graph.py).

    ``size``: (H, W) for a fixed input size, None for any multiple of 32 (and any batch). The bundle
    is written to a temporary folder beside ``out_dir`` and moved into place when complete.

    Returns:
        the bundle description (``bundle.json``), whose ``parity`` lists the ``Parity`` figures of
        the float32 model (and the int8 one), and ``speed_images_per_second``: torch (float32,
        eager), onnxruntime float32 (and int8) on the parity inputs, when ``speed``.

    Raises:
        SegcliError: extras missing, checkpoint unreadable, export failure (see ``export_onnx``),
            an unknown ``target``; for ``web`` no Chromium, onnxruntime-web not found, a run
            whose preprocessing the page does not do (``dataset.scale`` other than 1,
            ``augmentation.eval`` transforms), a page that does not load.
    """
    _require_extras(target, quantize)
    loaded = _exportable(checkpoint)
    web = _web_setup(loaded, checkpoint, onnxruntime_web) if target == "web" else None
    inputs, masks, source = parity_samples(loaded, data_root, size, parity_images)
    checks = Checks(inputs, masks, source, speed)

    def write(folder: Path) -> dict:
        int8 = quantize and target not in ("openvino", "litert")
        bundle = _write_bundle(loaded, folder, opset, size, int8, checks)
        if target == "openvino":
            _add_openvino(loaded, folder, size, quantize, checks, bundle, data_root)
        if target == "litert":
            _add_litert(loaded, folder, size, quantize, checks, bundle, data_root, nhwc)
        if web is not None:
            _add_web(loaded, folder, checks, bundle, *web)
        (folder / BUNDLE_FILE).write_text(json.dumps(bundle, indent=2) + "\n")
        return bundle

    return _in_place(Path(out_dir), write)


def _in_place(out_dir: Path, write) -> dict:
    """``write(folder)`` into a temporary folder beside ``out_dir``, moved into place (replacing
    it) only when complete, removed on any failure; returns what ``write`` returns."""
    import shutil

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would hide the bundle from a web server
    try:
        result = write(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return result


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _require_extras(target: str, quantize: bool) -> None:
    """The libraries ``target`` needs, before any export work.

    Raises:
        SegcliError: an unknown target, or a missing extra (one line naming it)."""
    if target not in TARGETS:
        raise SegcliError(f"--format {target}: expected one of {', '.join(TARGETS)}")
    require_export()
    if target == "openvino":
        from segcli.inference.openvino_graph import require_nncf, require_openvino

        require_openvino()
        if quantize:
            require_nncf()
    if target == "litert":
        from segcli.inference.litert_graph import require_litert

        require_litert()
    if target == "web":
        from segcli.inference.web_page import require_browser

        require_browser()


def _exportable(checkpoint: Path):
    """The checkpoint's ``LoadedModel`` on the CPU in float32, if it has a graph to export.

    Raises:
        SegcliError: unreadable, a task=instance checkpoint, or a classical baseline."""
    from segcli.inference.loaded import LoadedModel
    from segcli.inference.tasks import inference_of
    from segcli.models.classical import ClassicalModel

    loaded = LoadedModel.load(checkpoint, "cpu", "false", channels_last=False)
    if not inference_of(loaded.task).exports:
        raise SegcliError(
            f"{checkpoint}: a task={loaded.task} checkpoint; segcli export writes semantic models "
            "only (Mask R-CNN's post-processing is not exported yet)"
        )
    if isinstance(loaded.model, ClassicalModel):
        arch = loaded.config["model"]["arch"]
        raise SegcliError(
            f"{checkpoint}: model.arch={arch} is a scikit-learn/NumPy baseline; "
            "it has no ONNX graph to export (eval and predict run it from the checkpoint)"
        )
    return loaded


def _write_bundle(
    loaded,
    folder: Path,
    opset: int,
    size: tuple[int, int] | None,
    quantize: bool,
    checks: Checks,
) -> dict:
    """Export ``loaded.model`` (an ``inference.loaded.LoadedModel`` on the CPU, float32) into
    ``folder`` (model.onnx, with ``quantize`` model.int8.onnx), check each graph on ``checks``'
    inputs, time them when it says so; returns bundle.json's content (written by the caller)."""
    model, arch = loaded.model, loaded.config["model"]["arch"]
    inputs, speed = checks.inputs, checks.speed
    exporter = export_onnx(model, inputs[0], folder / MODEL_FILE, opset, size is None, arch)
    fp32 = OnnxModel(folder / MODEL_FILE, size)
    parity = [checks.parity(loaded, fp32)]
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
        parity.append(checks.parity(loaded, int8))
        if speed:
            speeds["onnxruntime int8 (dynamic)"] = images_per_second(int8, inputs)
    bundle = {
        **_describe(loaded, opset, size, parity, speeds, inputs[0].shape),
        "exporter": exporter,
    }
    return bundle


def _describe(
    loaded, opset: int, size, parity: list[Parity], speeds: dict, shape: Sequence[int]
) -> dict:
    """bundle.json of ``loaded`` (an ``inference.loaded.LoadedModel``), less the exporter's name."""
    from segcli.models.build import model_label

    classes, pre = loaded.classes, loaded.preprocessing
    return {
        "format": BUNDLE_FORMAT,
        "model": MODEL_FILE,
        "architecture": model_label(loaded.config["model"]),
        "class_names": classes.class_names,
        "colors": classes.colors,
        "num_classes": classes.num_classes,
        "ignore_index": classes.ignore_index,
        "input": {
            "name": "image",
            "layout": "NCHW float32, RGB"
            if pre.stored is None
            else "NCHW float32, " + (pre.describe_channels()),
            "normalization": {
                **pre.normalization,
                "rule": "x = (pixel / 255 - mean) / std, per channel"
                if pre.stored is None
                else "x = (clip(value, clip[0], clip[1]) - mean) / std, per channel, in the "
                "files' units (clip when not null)",
            },
            "extra_inputs": [list(e) for e in pre.extra_inputs],
            "size": (
                f"fixed {size[0]}x{size[1]}"
                if size
                else f"any height and width that are multiples of {SIZE_DIVISOR}, any batch"
            ),
            "fixed_size": list(size) if size else None,
            "padding": "pad bottom/right with black pixels (0, before normalising) to a multiple "
            f"of {SIZE_DIVISOR}" + (" / the fixed size" if size else "") + "; crop the output back",
            "scale": pre.scale,
        },
        "output": {"name": "logits", "layout": "NCHW float32", "prediction": "argmax over C"},
        "eval_augmentation": pre.eval_augmentation,
        "checkpoint": str(loaded.path.resolve()),
        "epoch": loaded.epoch,
        "opset": opset,
        "torch": torch.__version__,
        "example_input": list(shape),
        "parity": [_parity_record(p) for p in parity],
        "speed_images_per_second": {k: round(v, 3) for k, v in speeds.items()},
    }


def _check_models(loaded, models: dict, checks: Checks, bundle: dict) -> None:
    """Each of ``models`` (name -> an exported model: ``(1, C_in, H, W) float32`` ->
    ``(1, C, H, W)`` logits) checked against the checkpoint (``bundle["parity"]``) and, when
    ``checks.speed``, timed (``bundle["speed_images_per_second"][name]``, images/s; a model with
    its own ``images_per_second``, the page, times itself)."""
    for name, model in models.items():
        bundle["parity"].append(_parity_record(checks.parity(loaded, model)))
        if checks.speed:
            timer = getattr(model, "images_per_second", None)
            speed = timer(checks.inputs) if timer else images_per_second(model, checks.inputs)
            bundle["speed_images_per_second"][name] = round(speed, 3)


def _add_openvino(
    loaded,
    folder: Path,
    size,
    quantize: bool,
    checks: Checks,
    bundle: dict,
    data_root: str | None,
) -> None:
    """The OpenVINO IR of ``folder/model.onnx`` (and its NNCF int8 with ``quantize``, calibrated
    on up to 32 training images), their parity and speed added to ``bundle``."""
    from segcli.inference.openvino_graph import (
        TRANSFORMERS,
        OpenVinoModel,
        convert_onnx,
        quantize_ir,
        require_openvino,
    )

    ov = require_openvino()
    ir = convert_onnx(folder / MODEL_FILE, folder)
    models = {"openvino float32": OpenVinoModel(ir, size)}
    calibration_source = None
    if quantize:
        calibration, _, calibration_source = parity_samples(
            loaded, data_root, size, 32, splits=("train", "val", "test")
        )
        transformer = loaded.config["model"]["arch"] in TRANSFORMERS
        int8 = quantize_ir(ir, calibration, folder, transformer)
        models["openvino int8 (NNCF)"] = OpenVinoModel(int8, size)
    _check_models(loaded, models, checks, bundle)
    bundle["openvino"] = {
        "model": ir.name,
        "int8": "model.int8.xml" if quantize else None,
        "calibration": calibration_source,
        "version": ov.__version__,
    }


def _add_litert(
    loaded,
    folder: Path,
    size,
    quantize: bool,
    checks: Checks,
    bundle: dict,
    data_root: str | None,
    nhwc: bool,
) -> None:
    """The LiteRT file of ``loaded.model`` at ``size`` (else the largest parity input's size), and
    with ``quantize`` its int8 (calibrated on up to 32 training images at that size), their
    parity and speed added to ``bundle``."""
    from importlib.metadata import version

    from segcli.inference.litert_graph import LiteRtModel, convert

    if size is None:
        size = tuple(max(x.shape[d] for x in checks.inputs) for d in (-2, -1))
    files = {"litert float32": convert(loaded.model, size, folder, nhwc)}
    calibration_source = None
    if quantize:
        calibration, _, calibration_source = parity_samples(
            loaded, data_root, size, 32, splits=("train", "val", "test")
        )
        files["litert int8 (pt2e)"] = convert(loaded.model, size, folder, nhwc, calibration)
    channels = loaded.preprocessing.in_channels
    models = {k: LiteRtModel(p, channels=channels) for k, p in files.items()}
    _check_models(loaded, models, checks, bundle)
    bundle["litert"] = {
        "model": files["litert float32"].name,
        "int8": files["litert int8 (pt2e)"].name if quantize else None,
        "input_size": list(size),
        "layout": "NHWC input and output" if nhwc else "NCHW input and output, as model.onnx",
        "int8_io": "int8 input and output: q = round(x / scale) + zero_point (the tensors' own)"
        if quantize
        else None,
        "calibration": calibration_source,
        "litert_torch": version("litert-torch"),
        "ai_edge_litert": version("ai-edge-litert"),
    }


def _web_setup(loaded, checkpoint: Path, given: Path | None):
    """The browser and onnxruntime-web's files for ``--format web``, before any export work.

    Raises:
        SegcliError: preprocessing the page does not do; see ``web_page.onnxruntime_web``."""
    from segcli.inference.web_page import onnxruntime_web, require_browser

    pre = loaded.preprocessing
    if pre.stored is not None:
        raise SegcliError(
            f"{checkpoint}: the model takes {pre.describe_channels()}; the web page reads 8-bit "
            "RGB images only (use --format onnx, openvino or litert)"
        )
    if pre.scale != 1.0:
        raise SegcliError(
            f"{checkpoint}: dataset.scale={pre.scale}; the web page runs the model at the "
            "image's own resolution (scale 1) only"
        )
    if pre.eval_augmentation:
        raise SegcliError(
            f"{checkpoint}: augmentation.eval has {len(pre.eval_augmentation)} transform(s); the "
            "web page does only the pad-and-normalise tail of segcli predict's preprocessing"
        )
    return require_browser(), onnxruntime_web(given)


def _add_web(loaded, folder: Path, checks: Checks, bundle: dict, browser: str, ort) -> None:
    """The page of ``folder/model.onnx`` (``web_page.write_page``), checked in ``browser`` on
    ``checks``' images (their uint8 pixels: the page preprocesses them itself), its parity and
    speed added to ``bundle`` and bundle.js."""
    from segcli.inference.web_page import PAGE, BrowserModel, write_bundle_js, write_page

    bundle["web"] = {
        "page": PAGE,
        "runtime": "onnxruntime-web, WebAssembly (SIMD), 1 thread",
        "onnxruntime_web": ort.version,
        "onnxruntime_web_source": ort.source,
        "model": MODEL_FILE,
        "input_name": "image",
        "output_name": "logits",
        "size_divisor": SIZE_DIVISOR,
        "browser": browser,
    }
    write_page(folder, bundle, folder / MODEL_FILE, ort)
    pre = loaded.preprocessing
    fixed = bundle["input"]["fixed_size"] is not None
    with BrowserModel(folder / PAGE, browser, pre.mean, pre.std, fixed) as page:
        _check_models(loaded, {"onnxruntime-web float32 (wasm, 1 thread)": page}, checks, bundle)
    write_bundle_js(folder, bundle)
