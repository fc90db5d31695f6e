"""The pixel contract between data, models and inference: ImageNet's channel statistics (the
default normalisation, stored in every checkpoint) and ``denormalize``, its inverse. The data
pipeline normalises (``data.augment.fixed_tail``); the classical baselines, the dense CRF and the
superpixels need the 8-bit image back. Top level, so that models and inference need not import
the data pipeline for it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def denormalize(
    x: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> np.ndarray:
    """The 8-bit RGB images ``(N, H, W, 3) uint8`` (rounded) of a batch ``x: (N, 3, H, W) float``
    normalised as ``data.augment.fixed_tail`` does (``(pixel / 255 - mean) / std``; mean and std in
    0..1 units)."""
    m = torch.tensor(tuple(mean), device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(tuple(std), device=x.device).view(1, 3, 1, 1)
    images = ((x.float() * s + m) * 255).round().clamp(0, 255).to(torch.uint8)
    return images.permute(0, 2, 3, 1).cpu().numpy()
