"""``segcli export --format litert``: the checkpoint's network as a LiteRT (TensorFlow Lite)
flatbuffer, float32 and (``--quantize``) int8, and ``LiteRtModel`` (the LiteRT interpreter as a
model, for the parity check and ``segcli predict -c BUNDLE/model.tflite``).

Everything here is Google's own work: ``litert_torch.convert`` (litert-torch, the PyTorch -> LiteRT
converter, formerly ai-edge-torch) traces the torch model at one static input size and writes the
``.tflite`` file; ``litert_torch.to_channel_last_io`` gives it NHWC input and output when asked
(phones' camera frames are HWC); int8 is PyTorch's pt2e post-training quantisation
(``torchao.quantization.pt2e``) with litert-torch's ``PT2EQuantizer`` (symmetric, per-channel
weights), calibrated on the run's training images; the runtime is ``ai_edge_litert``'s
``Interpreter`` (XNNPACK on the CPU). The int8 model takes and returns int8 tensors: the model here
quantises its input and dequantises its output with the tensors' own scale and zero point.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import torch

from segcli.errors import SegcliError

TFLITE_FILE, INT8_TFLITE_FILE = "model.tflite", "model.int8.tflite"


def require_litert():
    """The ``litert_torch`` module (the converter) after checking the interpreter is there.

    Raises:
        SegcliError: litert-torch or ai-edge-litert is not installed (one line naming the extra)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the converter's TensorFlow-style logs
    try:
        import ai_edge_litert.interpreter  # noqa: F401
        import litert_torch
    except ImportError:
        raise SegcliError(
            "segcli export --format litert needs litert-torch and ai-edge-litert: "
            "pip install 'segcli[litert]'"
        ) from None
    return litert_torch


def _in_channels(model: torch.nn.Module) -> int:
    """The input channels of ``model``'s first convolution (3 for RGB models)."""
    first = next((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), None)
    return 3 if first is None else int(first.in_channels)


def convert(
    model: torch.nn.Module,
    size: tuple[int, int],
    folder: Path,
    nhwc: bool = False,
    calibration: Sequence[torch.Tensor] | None = None,
) -> Path:
    """``model`` (eval mode, float32, CPU; ``(1, 3, H, W) float32 -> (1, C, H, W)`` logits) as a
    LiteRT file for input ``size`` (H, W) in pixels: ``folder/model.tflite``, or with
    ``calibration`` (``(1, 3, H, W) float32`` preprocessed training images at ``size``) the int8
    ``folder/model.int8.tflite``; NHWC input ``(1, H, W, 3)`` and output ``(1, H, W, C)`` when
    ``nhwc``. Returns the file's path.

    Raises:
        SegcliError: the converter is missing or fails (one line, its reason)."""
    litert_torch = require_litert()
    example = torch.zeros(1, _in_channels(model), *size)
    path = folder / (TFLITE_FILE if calibration is None else INT8_TFLITE_FILE)
    try:
        # the converter and the quantizer print their progress: kept off segcli's output
        with torch.no_grad(), redirect_stdout(io.StringIO()):
            quant_config = None
            if calibration is not None:
                model, quant_config = _quantized(model, example, calibration)
            if nhwc:
                model = litert_torch.to_channel_last_io(model, args=[0], outputs=[0])
                example = example.permute(0, 2, 3, 1).contiguous()
            edge = litert_torch.convert(model, (example,), quant_config=quant_config)
            edge.export(str(path))
    except Exception as exc:  # noqa: BLE001  (the converter raises many kinds)
        what = "quantize" if calibration is not None else "convert"
        raise SegcliError(f"litert-torch cannot {what} the model: {_first_line(exc)}") from None
    return path


def _quantized(model, example, calibration):
    """pt2e: export, insert observers (litert-torch's quantizer), calibrate, convert."""
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import move_exported_model_to_eval, quantize_pt2e

    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True)
    )
    graph = torch.export.export(model, (example,)).module()
    graph = move_exported_model_to_eval(quantize_pt2e.prepare_pt2e(graph, quantizer))
    with torch.no_grad():
        for x in calibration:
            graph(x.float())
    graph = move_exported_model_to_eval(quantize_pt2e.convert_pt2e(graph, fold_quantize=False))
    # the eval ops are in the graph now; the flag is what litert-torch reads (an exported module
    # refuses .eval()), or it warns that the model "is converted in training mode"
    graph.training = False
    return graph, QuantConfig(pt2e_quantizer=quantizer)


class LiteRtModel:
    """A LiteRT file on ``ai_edge_litert``'s interpreter as a model: ``(1, channels, h, w)
    float32`` tensor -> ``(1, C, h, w) float32`` logits tensor, the input padded bottom/right with
    zeros to the file's fixed size and the output cropped back (as ``onnx_graph.OnnxModel``); an
    NHWC file (input ``(1, H, W, channels)``) gets its input and output transposed, an int8 file
    its input quantised and its output dequantised (each tensor's scale and zero point).
    ``threads``: the interpreter's (default torch's intra-op threads); ``channels``: the model's
    input channels (3 for RGB; the checkpoint's or bundle's), which tells NHWC from NCHW.

    Raises:
        SegcliError: ai-edge-litert missing, the file unreadable, a batch other than 1, or an input
            larger than the file's size."""

    def __init__(self, path: Path, threads: int | None = None, channels: int = 3) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise SegcliError(
                f"{path}: running a LiteRT file needs ai-edge-litert: pip install 'segcli[litert]'"
            ) from None
        self.path = Path(path)
        try:
            self.interpreter = Interpreter(
                model_path=str(path), num_threads=threads or torch.get_num_threads()
            )
            self.interpreter.allocate_tensors()
        except Exception as exc:  # noqa: BLE001
            raise SegcliError(f"{path}: LiteRT cannot load it: {_first_line(exc)}") from None
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        shape = [int(v) for v in self.input["shape"]]
        self.nhwc = shape[-1] == channels and shape[1] != channels  # the model's input channels
        self.size = tuple(shape[1:3]) if self.nhwc else tuple(shape[2:4])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from segcli.inference.onnx_graph import pad_to_fixed

        if x.shape[0] != 1:
            raise SegcliError(f"{self.path}: a LiteRT file takes one image at a time")
        h, w = x.shape[-2:]
        a = pad_to_fixed(x.detach().float().cpu(), self.size, self.path).numpy()
        if self.nhwc:
            a = a.transpose(0, 2, 3, 1)
        a = _quantize(np.ascontiguousarray(a), self.input)
        self.interpreter.set_tensor(self.input["index"], a)
        self.interpreter.invoke()
        out = _dequantize(self.interpreter.get_tensor(self.output["index"]), self.output)
        if self.nhwc:
            out = out.transpose(0, 3, 1, 2)
        return torch.from_numpy(np.ascontiguousarray(out))[..., :h, :w]


def _quantize(a: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return a.astype(np.float32)
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(a / scale) + zero, info.min, info.max).astype(detail["dtype"])


def _dequantize(a: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return a.copy()
    scale, zero = detail["quantization"]
    return (a.astype(np.float32) - zero) * scale


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"
