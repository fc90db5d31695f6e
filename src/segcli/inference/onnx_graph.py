"""torch -> ONNX, and an ONNX graph run as a model: ``export_onnx`` (torch's dynamo exporter with
onnxscript, else its TorchScript exporter; a dynamic graph checked against torch at a second size)
and ``OnnxModel`` (an onnxruntime session called like a torch module). ``require_export`` names the
extra when onnx, onnxruntime or onnxscript is missing.
"""

from __future__ import annotations

from pathlib import Path

import torch

from segcli.errors import SegcliError
from segcli.inference.parity import check_parity

SIZE_DIVISOR = 32


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
    """An onnxruntime session as a model: ``(N, C_in, H, W) float32`` tensor -> ``(N, C, H, W)
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
        x = pad_to_fixed(x, self.size, self.path)
        out = self.session.run(None, {self.input: x.detach().float().cpu().contiguous().numpy()})[0]
        return torch.from_numpy(out)[..., :h, :w]


def pad_to_fixed(x: torch.Tensor, size: tuple[int, int] | None, path: Path) -> torch.Tensor:
    """``x: (N, C_in, h, w)`` padded bottom/right with zeros to a fixed-size model's ``size`` (H, W)
    (itself when ``size`` is None); the caller crops the output back to ``h, w``.

    Raises:
        SegcliError: ``x`` larger than ``size`` (naming the model file and slide inference)."""
    if size is None:
        return x
    h, w = x.shape[-2:]
    if h > size[0] or w > size[1]:
        raise SegcliError(
            f"{path}: input {h}x{w} is larger than the model's fixed {size[0]}x{size[1]}; use "
            f"--inference slide inference.crop=[{size[0]},{size[1]}]"
        )
    return torch.nn.functional.pad(x, (0, size[1] - w, 0, size[0] - h))


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
    ``example``'s shape ``(N, C_in, H, W)``. torch's dynamo exporter first; where it fails, or its
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
                n, c, h, w = example.shape
                other = torch.randn(n + 1, c, h + SIZE_DIVISOR, w + 2 * SIZE_DIVISOR)
                if not check_parity(model, OnnxModel(path, None), [other], "generated").ok:
                    raise ValueError(
                        f"its graph differs from torch at {h + SIZE_DIVISOR}x{w + 2 * SIZE_DIVISOR}"
                    )
            return exporter
        except SegcliError:
            raise
        # torch.export, onnxscript, onnxruntime: any error means "no"
        except Exception as exc:  # noqa: BLE001
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
