"""``segcli export --format openvino``: the bundle's ONNX graph as an OpenVINO IR, float32 and
(``--quantize``) int8, and ``OpenVinoModel`` (OpenVINO's CPU runtime as a model, for the parity
check and ``segcli predict -c BUNDLE/model.xml``).

Everything here is OpenVINO's and NNCF's own work: ``openvino.convert_model`` reads the ONNX file
(the graph torch exported and onnxruntime checked), ``openvino.save_model`` writes ``model.xml`` +
``model.bin`` (weights kept float32: ``compress_to_fp16=False``, so the float32 parity is the
graph's, not a storage rounding's), and ``nncf.quantize`` (post-training quantisation, NNCF's
default preset) calibrates ``model.int8.xml`` on the run's training images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from segcli.errors import SegcliError

IR_FILE, INT8_IR_FILE = "model.xml", "model.int8.xml"


def require_openvino():
    """The ``openvino`` module.

    Raises:
        SegcliError: OpenVINO is not installed (one line naming the extra)."""
    try:
        import openvino
    except ImportError:
        raise SegcliError(
            "segcli export --format openvino needs OpenVINO: pip install 'segcli[openvino]'"
        ) from None
    return openvino


def require_nncf():
    """The ``nncf`` module (int8 post-training quantisation of OpenVINO models).

    Raises:
        SegcliError: NNCF is not installed (one line naming the extra)."""
    try:
        import nncf
    except ImportError:
        raise SegcliError(
            "--format openvino --quantize needs NNCF: pip install 'segcli[openvino]'"
        ) from None
    return nncf


def convert_onnx(onnx_path: Path, folder: Path) -> Path:
    """``onnx_path`` as an OpenVINO IR ``folder/model.xml`` (+ ``model.bin``, float32 weights);
    returns the xml's path.

    Raises:
        SegcliError: OpenVINO missing, or it cannot convert the graph (one line, its reason)."""
    ov = require_openvino()
    try:
        model = ov.convert_model(str(onnx_path))
        ov.save_model(model, str(folder / IR_FILE), compress_to_fp16=False)
    except Exception as exc:  # noqa: BLE001  (OpenVINO's converters raise many kinds)
        raise SegcliError(f"{onnx_path}: OpenVINO cannot convert it: {_first_line(exc)}") from None
    return folder / IR_FILE


#: architectures with transformer encoders: NNCF's ``ModelType.TRANSFORMER`` scheme (it keeps the
#: attention's sensitive operations out of int8)
TRANSFORMERS = ("Segformer", "DPT")


def quantize_ir(
    ir_path: Path, calibration: Sequence[torch.Tensor], folder: Path, transformer: bool = False
) -> Path:
    """``ir_path`` quantised to int8 by NNCF's post-training quantisation, calibrated on
    ``calibration`` (``(1, C_in, H, W) float32`` preprocessed training images), with NNCF's
    transformer scheme when ``transformer``; writes ``folder/model.int8.xml`` and returns its
    path.

    Raises:
        SegcliError: NNCF missing or quantisation failing (one line, its reason)."""
    ov, nncf = require_openvino(), require_nncf()
    model = ov.Core().read_model(str(ir_path))
    data = nncf.Dataset([x.detach().float().cpu().numpy() for x in calibration])
    try:
        extra = {"model_type": nncf.ModelType.TRANSFORMER} if transformer else {}
        quantized = nncf.quantize(model, data, subset_size=len(calibration), **extra)
        ov.save_model(quantized, str(folder / INT8_IR_FILE), compress_to_fp16=False)
    except Exception as exc:  # noqa: BLE001
        raise SegcliError(f"{ir_path}: NNCF cannot quantize it: {_first_line(exc)}") from None
    return folder / INT8_IR_FILE


class OpenVinoModel:
    """An OpenVINO IR compiled for the CPU (inference precision f32: the int8 model's int8
    operations stay int8, the rest float32) as a model: ``(N, C_in, H, W) float32`` tensor ->
    ``(N, C, H, W) float32`` logits tensor. A fixed-size model gets smaller inputs padded
    bottom/right (the output cropped back), as ``onnx_graph.OnnxModel``.

    Raises:
        SegcliError: OpenVINO missing, the file unreadable, or an input larger than a fixed-size
            model's input."""

    def __init__(self, path: Path, size: tuple[int, int] | None) -> None:
        ov = require_openvino()
        self.path, self.size = Path(path), size
        try:
            # f32: OpenVINO's CPU plugin otherwise runs bf16 where the CPU has it (AVX512_BF16,
            # AMX): logits 5e-2 off on the AMD EPYC Zen 4, not the graph's own float32
            self.compiled = ov.Core().compile_model(
                str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
            )
        except Exception as exc:  # noqa: BLE001
            raise SegcliError(f"{path}: OpenVINO cannot load it: {_first_line(exc)}") from None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from segcli.inference.onnx_graph import pad_to_fixed

        h, w = x.shape[-2:]
        x = pad_to_fixed(x, self.size, self.path)
        out = self.compiled(np.ascontiguousarray(x.detach().float().cpu().numpy()))
        return torch.from_numpy(np.array(out[self.compiled.output(0)]))[..., :h, :w]


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"
