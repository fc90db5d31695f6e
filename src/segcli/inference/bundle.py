"""An ONNX bundle of ``segcli export`` (inference/export.py, which writes and checks it) at run
time: ``OnnxModel`` (an onnxruntime session as a model), ``load_bundle`` and a Predictor over
onnxruntime, so that ``segcli predict -c BUNDLE`` shares every inference mode that makes sense
there (whole, slide, flip, multi-scale; dense CRF too) with the checkpoint path.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from segcli.errors import SegcliError

MODEL_FILE = "model.onnx"
BUNDLE_FILE = "bundle.json"
BUNDLE_FORMAT = 1


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


class OnnxModel:
    """An onnxruntime session as a model: ``(N, 3, H, W) float32`` tensor -> ``(N, C, H, W)
    float32`` logits tensor on the CPU. A fixed-size model gets inputs smaller than its size padded
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
                fixed = f"{self.size[0]}x{self.size[1]}"
                raise SegcliError(
                    f"{self.path}: input {h}x{w} is larger than the model's fixed {fixed}; use "
                    f"--inference slide inference.crop=[{self.size[0]},{self.size[1]}]"
                )
            x = torch.nn.functional.pad(x, (0, self.size[1] - w, 0, self.size[0] - h))
        out = self.session.run(None, {self.input: x.detach().float().cpu().contiguous().numpy()})[0]
        return torch.from_numpy(out)[..., :h, :w]


def is_bundle(path: Path) -> bool:
    """A bundle folder (with ``bundle.json``) or an ``.onnx`` file (``bundle.json`` beside it)."""
    path = Path(path)
    return (path.is_dir() and (path / BUNDLE_FILE).is_file()) or path.suffix.lower() == ".onnx"


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
