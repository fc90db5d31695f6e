"""The ``slide`` mode of the ``inference`` config group: tiles of ``crop`` pixels every
``stride`` pixels, logits merged by averaging or by Gaussian weighting (nnU-Net; sigma =
``sigma`` x the tile). The tiling is MONAI's ``sliding_window_inference``; what is written here is
the choice of tile and overlap, clamped to the (padded) image, so that a tile that covers the
image *is* the whole-image pass.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from segcli.inference.modes import InferenceSettings


def slide(
    model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, s: InferenceSettings
) -> torch.Tensor:
    """Sliding-window logits ``(N, C, H, W)`` of ``x: (N, 3, H, W)`` (H, W multiples of 32) with
    MONAI's ``sliding_window_inference``: tiles of ``s.crop`` clamped to the image, ``s.stride``
    apart (the last tile of a row or column ends at the image's edge), merged by ``s.merge``. A
    tile that covers the image runs ``model(x)`` once, exactly the whole-image pass."""
    h, w = x.shape[-2:]
    roi = (min(s.crop[0], h), min(s.crop[1], w))
    if roi == (h, w):
        return model(x)
    sliding_window_inference = monai_sliding_window()
    stride = s.stride_or_default()
    # MONAI takes an overlap fraction and steps int(roi * (1 - overlap)) pixels; the half pixel
    # keeps float rounding from turning a stride of 341 into 340.
    overlap = [
        0.0 if r == size else max(0.0, 1 - (min(st, r) + 0.5) / r)
        for r, st, size in zip(roi, stride, (h, w), strict=True)
    ]
    out = sliding_window_inference(
        x,
        roi,
        s.tile_batch,
        lambda t: model(t).float(),
        overlap=overlap,
        mode="constant" if s.merge == "mean" else "gaussian",
        sigma_scale=s.sigma,
        padding_mode="constant",
        cval=0.0,
    )
    return out.as_tensor() if hasattr(out, "as_tensor") else out


def monai_sliding_window():
    """MONAI's ``sliding_window_inference``, imported on a separate thread the first time.

    MONAI's ``optional_import`` keeps the exceptions of optional modules that are missing, and with
    their tracebacks every frame of the stack that first imported MONAI, locals included. Imported
    from inside an eval loop, that kept the DataLoader's persistent workers alive until exit, where
    they blocked it. A thread's stack ends at the thread, so nothing of ours is kept."""
    if "monai.inferers" not in sys.modules:
        import threading

        thread = threading.Thread(
            target=importlib.import_module, args=("monai.inferers",), daemon=True
        )
        thread.start()
        thread.join()
    from monai.inferers import sliding_window_inference

    return sliding_window_inference
