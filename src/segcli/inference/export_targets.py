"""The targets of ``segcli export`` beyond the ONNX bundle (``--format openvino|litert|web``),
each written into the bundle's folder and checked against the checkpoint like the ONNX model:
``Checks`` (the images every model is checked on), ``check_models`` (parity and speed into
bundle.json), and one ``add_*`` step per target; ``export.export_bundle`` runs them. The graphs
and runtimes are ``openvino_graph``'s, ``litert_graph``'s and ``web_page``'s.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from segcli.errors import SegcliError
from segcli.inference.bundle import MODEL_FILE
from segcli.inference.onnx_graph import SIZE_DIVISOR
from segcli.inference.parity import (
    AGREEMENT,
    ATOL,
    RTOL,
    Parity,
    check_parity,
    images_per_second,
    parity_samples,
)


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


def parity_record(p: Parity) -> dict:
    """bundle.json's entry of one model's parity."""
    return {**asdict(p), "ok": p.ok, "rtol": RTOL, "atol": ATOL, "min_agreement": AGREEMENT}


def check_models(loaded, models: dict, checks: Checks, bundle: dict) -> None:
    """Each of ``models`` (name -> an exported model: ``(1, C_in, H, W) float32`` ->
    ``(1, C, H, W)`` logits) checked against the checkpoint (``bundle["parity"]``) and, when
    ``checks.speed``, timed (``bundle["speed_images_per_second"][name]``, images/s; a model with
    its own ``images_per_second``, the page, times itself)."""
    for name, model in models.items():
        bundle["parity"].append(parity_record(checks.parity(loaded, model)))
        if checks.speed:
            timer = getattr(model, "images_per_second", None)
            speed = timer(checks.inputs) if timer else images_per_second(model, checks.inputs)
            bundle["speed_images_per_second"][name] = round(speed, 3)


def add_openvino(
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
    check_models(loaded, models, checks, bundle)
    bundle["openvino"] = {
        "model": ir.name,
        "int8": "model.int8.xml" if quantize else None,
        "calibration": calibration_source,
        "version": ov.__version__,
    }


def add_litert(
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
    check_models(loaded, models, checks, bundle)
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


def web_setup(loaded, checkpoint: Path, given: Path | None):
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


def add_web(loaded, folder: Path, checks: Checks, bundle: dict, browser: str, ort) -> None:
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
        check_models(loaded, {"onnxruntime-web float32 (wasm, 1 thread)": page}, checks, bundle)
    write_bundle_js(folder, bundle)
