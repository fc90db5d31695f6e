"""Pictures of predictions, OpenCV only: the sample strips a run saves at its best epoch
(``samples/best.png``: image | truth | prediction) and the worst-image galleries of ``segcli eval
--worst K`` (with an error map).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from segcli.preprocessing import display_rgb


def colorize(mask: np.ndarray, colors: Sequence[Sequence[int]], ignore_index: int) -> np.ndarray:
    """``mask: (H, W) int`` -> ``(H, W, 3) uint8`` RGB; ignore_index (and any value outside the
    palette) black."""
    palette = np.zeros((256, 3), np.uint8)
    palette[: len(colors)] = np.asarray(colors, dtype=np.uint8)
    out = palette[np.clip(mask, 0, 255).astype(np.int64)]
    out[(mask == ignore_index) | (mask >= len(colors))] = 0
    return out


@torch.inference_mode()
def predict_sample(
    model: torch.nn.Module, sample: dict, ctx, normalization: Mapping
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One eval-transformed sample (``image (C, H, W) float32`` normalised with the checkpoint's
    ``normalization``, ``mask (H, W) int64``) through ``model`` as validation runs it: ``(image
    (H, W, 3) uint8 RGB (``preprocessing.display_rgb``), truth (H, W) int64, prediction (H, W)
    int64)``."""
    from segcli.inference.loop import forward_at_scale

    x = sample["image"].unsqueeze(0).to(ctx.device)
    if ctx.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with ctx.autocast():
        pred = forward_at_scale(model, x, ctx.eval_scale).float().argmax(1)[0].cpu().numpy()
    image = display_rgb(sample["image"].permute(1, 2, 0).cpu().numpy(), normalization)
    return image, sample["mask"].cpu().numpy(), pred


def error_map(
    image: np.ndarray, truth: np.ndarray, pred: np.ndarray, colors, ignore_index: int
) -> np.ndarray:
    """``(H, W, 3) uint8``: wrong pixels in the colour of their true class, right ones as the image
    in dim gray, ignore_index pixels black."""
    gray = (image.mean(2, keepdims=True) * 0.35).astype(np.uint8).repeat(3, 2)
    out = np.where((pred != truth)[..., None], colorize(truth, colors, ignore_index), gray)
    out[truth == ignore_index] = 0
    return out


def _write_png(rows: list[np.ndarray], path: Path) -> None:
    """Stack RGB rows (padded to one width, 4 black pixels between) into one PNG, atomically."""
    width = max(r.shape[1] for r in rows)
    grid = np.concatenate(
        [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0))) for r in rows], axis=0
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    cv2.imwrite(str(tmp), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    tmp.replace(path)


def _caption(text: str, width: int) -> np.ndarray:
    """A ``(22, width, 3) uint8`` white strip with ``text`` in black (OpenCV's Hershey font)."""
    strip = np.full((22, width, 3), 255, np.uint8)
    cv2.putText(strip, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


@torch.inference_mode()
def save_samples(
    model: torch.nn.Module,
    dataset,
    count: int,
    ctx,
    colors,
    ignore_index: int,
    normalization: Mapping,
    path: Path,
) -> None:
    """One PNG of ``count`` rows (image | truth | prediction) for images spread evenly over
    ``dataset`` (its eval transform: whole images, normalised, padded), predicted by ``model`` in
    eval mode. The prediction is drawn where the truth is labelled (black on ignore_index and
    padding, as the metrics skip them). The model is put back into the mode it was in; no random
    state is used.
    """
    was_training = model.training
    model.eval()
    rows = []
    picks = (
        sorted({int(i) for i in np.linspace(0, len(dataset) - 1, min(count, len(dataset)))})
        if len(dataset)
        else []
    )
    for index in picks:
        image, truth, pred = predict_sample(model, dataset[index], ctx, normalization)
        pred = np.where(truth == ignore_index, ignore_index, pred)
        rows.append(
            np.concatenate(
                [
                    image,
                    colorize(truth, colors, ignore_index),
                    colorize(pred, colors, ignore_index),
                ],
                axis=1,
            )
        )
    model.train(was_training)
    if rows:
        _write_png(rows, path)


@torch.inference_mode()
def save_gallery(
    model: torch.nn.Module,
    dataset,
    picks: Sequence[tuple[int, str]],
    ctx,
    colors,
    ignore_index: int,
    normalization: Mapping,
    path: Path,
) -> None:
    """One PNG with a captioned row per ``(dataset index, caption)``: image | truth | prediction |
    error map (``error_map``), as ``save_samples`` predicts them (``segcli eval --worst K``)."""
    model.eval()
    rows = []
    for index, caption in picks:
        image, truth, pred = predict_sample(model, dataset[index], ctx, normalization)
        pred = np.where(truth == ignore_index, ignore_index, pred)
        row = np.concatenate(
            [
                image,
                colorize(truth, colors, ignore_index),
                colorize(pred, colors, ignore_index),
                error_map(image, truth, pred, colors, ignore_index),
            ],
            axis=1,
        )
        rows.append(np.concatenate([_caption(caption, row.shape[1]), row], axis=0))
    if rows:
        _write_png(rows, path)
