"""An ONNX bundle of ``segcli export`` (inference/export.py, which writes and checks it) at run
time: ``OnnxModel`` (an onnxruntime session as a model), ``load_bundle`` and a Predictor over
onnxruntime, or over OpenVINO's CPU runtime for the bundle's OpenVINO IR (``-c BUNDLE/model.xml``,
inference/openvino_graph.py), or over the LiteRT interpreter for its LiteRT file (``-c
BUNDLE/model.tflite``, inference/litert_graph.py), so that ``segcli predict -c BUNDLE`` shares
every inference mode that makes sense there (whole, slide, flip, multi-scale; dense CRF too) with
the checkpoint path.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from segcli.errors import SegcliError
from segcli.inference.onnx_graph import OnnxModel

MODEL_FILE = "model.onnx"
BUNDLE_FILE = "bundle.json"
BUNDLE_FORMAT = 1


def is_bundle(path: Path) -> bool:
    """A bundle folder (with ``bundle.json``), an ``.onnx`` file, an OpenVINO ``.xml`` file or a
    LiteRT ``.tflite`` file (``bundle.json`` beside it)."""
    path = Path(path)
    return (path.is_dir() and (path / BUNDLE_FILE).is_file()) or path.suffix.lower() in (
        ".onnx",
        ".xml",
        ".tflite",
    )


def load_bundle(path: Path) -> tuple[dict, Path]:
    """``(bundle.json, model file)`` of a bundle folder or a model file (``.onnx``, OpenVINO's
    ``.xml``, LiteRT's ``.tflite``) inside one.

    Raises:
        SegcliError: no bundle.json, or one of another format."""
    path = Path(path)
    folder, model = (path, path / MODEL_FILE) if path.is_dir() else (path.parent, path)
    meta = folder / BUNDLE_FILE
    if not meta.is_file():
        raise SegcliError(f"{meta}: missing; a segcli bundle is a folder written by segcli export")
    if not model.is_file():
        raise SegcliError(f"{model}: no such model file")
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
    int8 file when named), a named OpenVINO IR (``.xml``) on OpenVINO's CPU runtime, or a named
    LiteRT file (``.tflite``, its own fixed size) on the LiteRT interpreter, with the bundle's
    preprocessing and ``settings`` (inference/modes.py).

    Raises:
        SegcliError: see ``load_bundle``, ``require_export``, ``openvino_graph.OpenVinoModel``,
            ``litert_graph.LiteRtModel``; a CRF without pydensecrf2.
    """
    from segcli.data.augment import build_transforms
    from segcli.inference.modes import Inference, InferenceSettings
    from segcli.inference.predict import Predictor
    from segcli.runtime import Precision, StepContext

    bundle, model_file = load_bundle(path)
    spec = bundle["input"]
    norm = spec["normalization"]
    reader = _reader(spec)
    if reader is not None and settings is not None and settings.crf is not None:
        raise SegcliError(
            f"{path}: the dense CRF compares 8-bit RGB colours; this model takes {reader.described}"
        )
    size = tuple(spec["fixed_size"]) if spec.get("fixed_size") else None
    transform = build_transforms(
        bundle.get("eval_augmentation"), bundle["ignore_index"], normalization=norm
    )
    if model_file.suffix.lower() == ".xml":
        from segcli.inference.openvino_graph import OpenVinoModel

        runtime, model = "openvino", OpenVinoModel(model_file, size)
    elif model_file.suffix.lower() == ".tflite":
        from segcli.inference.litert_graph import LiteRtModel

        runtime, model = "litert", LiteRtModel(model_file, channels=len(norm["mean"]))
    else:
        runtime, model = "onnxruntime", OnnxModel(model_file, size)
    kind = "int8" if "int8" in model_file.name else "float32"
    ctx = StepContext(
        torch.device("cpu"),
        None,
        False,
        float(spec.get("scale", 1.0)),
        Precision(None, "false", f"{runtime} {kind}"),
    )
    return Predictor(
        model,
        transform,
        bundle["colors"],
        bundle["class_names"],
        ctx,
        Inference(settings or InferenceSettings(), norm["mean"], norm["std"]),
        norm,
        reader,
    )


def _reader(spec: dict):
    """How the bundle's images are read: 8-bit RGB, or stored channels (``normalization`` with
    ``max_pixel_value`` 1) with the bundle's ``extra_inputs`` (data/channels.py)."""
    norm = spec["normalization"]
    if float(norm.get("max_pixel_value") or 255.0) != 1.0:
        return None
    from segcli.data.channels import StoredReader, describe_layout

    described = describe_layout(norm.get("channels") or [])
    extras = tuple((str(d), str(x)) for d, x in spec.get("extra_inputs") or ())
    return StoredReader(extras, len(norm["mean"]), described)
