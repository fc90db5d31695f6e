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
The steps of those targets, and the checks they share, are ``export_targets``'.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from segcli.errors import SegcliError
from segcli.inference.bundle import BUNDLE_FILE, BUNDLE_FORMAT, MODEL_FILE
from segcli.inference.export_targets import (
    Checks,
    add_litert,
    add_openvino,
    add_web,
    parity_record,
    web_setup,
)
from segcli.inference.onnx_graph import SIZE_DIVISOR, OnnxModel, export_onnx, require_export
from segcli.inference.parity import (
    Parity,
    images_per_second,
    parity_samples,
)

INT8_FILE = "model.int8.onnx"
#: ``segcli export --format`` values
TARGETS = ("onnx", "openvino", "litert", "web")


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
    web = web_setup(loaded, checkpoint, onnxruntime_web) if target == "web" else None
    inputs, masks, source = parity_samples(loaded, data_root, size, parity_images)
    checks = Checks(inputs, masks, source, speed)

    def write(folder: Path) -> dict:
        int8 = quantize and target not in ("openvino", "litert")
        bundle = _write_bundle(loaded, folder, opset, size, int8, checks)
        if target == "openvino":
            add_openvino(loaded, folder, size, quantize, checks, bundle, data_root)
        if target == "litert":
            add_litert(loaded, folder, size, quantize, checks, bundle, data_root, nhwc)
        if web is not None:
            add_web(loaded, folder, checks, bundle, *web)
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
        "parity": [parity_record(p) for p in parity],
        "speed_images_per_second": {k: round(v, 3) for k, v in speeds.items()},
    }
