"""The pixel contract between data, models and inference: ImageNet's channel statistics (the
default normalisation, stored in every checkpoint) and ``denormalize``, its inverse. The data
pipeline normalises (``data.augment.fixed_tail``); the classical baselines, the dense CRF and the
superpixels need the 8-bit image back. Top level, so that models and inference need not import
the data pipeline for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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


def display_rgb(image: np.ndarray, normalization: Mapping) -> np.ndarray:
    """A picture of one normalised input ``image: (H, W, C) float`` for galleries: ``(H, W, 3)
    uint8``: for 8-bit RGB (``normalization`` without ``max_pixel_value`` 1) the pixels back,
    for stored channels ``stored_rgb`` of the values back."""
    mean, std = np.asarray(normalization["mean"]), np.asarray(normalization["std"])
    if float(normalization.get("max_pixel_value") or 255.0) != 1.0:
        return (np.clip(image * std + mean, 0, 1) * 255).astype(np.uint8)
    return stored_rgb(image * std + mean, normalization)


def stored_rgb(raw: np.ndarray, normalization: Mapping) -> np.ndarray:
    """A picture of stored channels ``raw: (H, W, C)`` (the files' values, data/channels.py):
    ``(H, W, 3) uint8``; channels 0-2 as they are when the first file is 8-bit RGB, otherwise the
    first three channels (or the first, as gray, when there are fewer) each stretched from its
    clipping bounds (else its training min..max) to 0..255. Images that are already ``(H, W, 3)
    uint8`` come back as they are."""
    if raw.dtype == np.uint8 and raw.ndim == 3 and raw.shape[2] == 3:
        return raw
    first = (normalization.get("channels") or [{}])[0]
    if first.get("channels") == 3 and first.get("dtype") == "uint8":
        return np.clip(raw[..., :3], 0, 255).round().astype(np.uint8)
    clip = normalization.get("clip")
    low = np.asarray(clip[0] if clip else normalization.get("min", raw.min((0, 1))), np.float32)
    high = np.asarray(clip[1] if clip else normalization.get("max", raw.max((0, 1))), np.float32)
    shown = [0, 1, 2] if raw.shape[2] >= 3 else [0, 0, 0]
    out = (raw[..., shown] - low[shown]) / np.maximum(high[shown] - low[shown], 1e-12)
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)
