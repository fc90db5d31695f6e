"""The embedded default dataset: shapes on textured backgrounds, generated on the fly.

Nothing is read or downloaded, so `segcli train` with no arguments runs anywhere. Four classes:
background (0), disc (1), square (2), triangle (3).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from segcli.data.readers import ClassPixels, SegmentationSamples
from segcli.data.settings import SPLITS


class SyntheticDataset(SegmentationSamples):
    """Discs, squares and triangles (classes 1..3) on textured backgrounds (class 0).

    Image ``index`` of ``split`` is a pure function of (split, index): the same on every machine.

    Args:
        length: number of images.
        image_size: (height, width) in pixels.
        split: "train", "val" or "test" (different images for each).
        transform: as for ``PairedFolderDataset``.
        augment_seed: see ``data.readers.SegmentationSamples``; None for evaluation.
    """

    def __init__(
        self,
        length: int,
        image_size: Sequence[int],
        split: str,
        transform: Callable,
        augment_seed: int | None = None,
    ) -> None:
        self.length, self.size, self.transform = (
            int(length),
            tuple(int(s) for s in image_size),
            transform,
        )
        self.augment_seed = augment_seed
        self.split_id = SPLITS.index(split)

    def __len__(self) -> int:
        return self.length

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(H, W, 3) uint8`` image and ``(H, W) int64`` mask of image ``index``."""
        h, w = self.size
        rng = np.random.default_rng([self.split_id, index])
        low = rng.uniform(0, 255, size=(max(h // 16, 2), max(w // 16, 2), 3)).astype(np.float32)
        image = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
        image += rng.normal(0, 12, size=(h, w, 3)).astype(np.float32)
        mask = np.zeros((h, w), dtype=np.int64)
        base_colors = np.array(
            [[0, 0, 0], [220, 40, 60], [40, 180, 80], [240, 220, 30]], np.float32
        )
        for _ in range(rng.integers(2, 6)):
            cls = int(rng.integers(1, 4))
            cy, cx = rng.integers(0, h), rng.integers(0, w)
            r = int(rng.integers(max(h, w) // 12, max(h, w) // 5))
            layer = np.zeros((h, w), np.uint8)
            if cls == 1:
                cv2.circle(layer, (int(cx), int(cy)), r, 1, -1)
            elif cls == 2:
                cv2.rectangle(layer, (int(cx - r), int(cy - r)), (int(cx + r), int(cy + r)), 1, -1)
            else:
                pts = np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]], np.int32)
                cv2.fillPoly(layer, [pts], 1)
            on = layer.astype(bool)
            image[on] = 0.6 * base_colors[cls] + 0.4 * image[on]
            mask[on] = cls
        return np.clip(image, 0, 255).astype(np.uint8), mask

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        return (*self.render(index), f"{SPLITS[self.split_id]}_{index:05d}")

    def class_pixels(self) -> ClassPixels:
        """Pixels of each of the 4 classes over the split, and the pixels of the images each
        occurs in (for class weights, as ``data.readers.check_pairs`` gives for folder data)."""
        pixels, present = np.zeros(4, np.int64), np.zeros(4, np.int64)
        for i in range(self.length):
            counts = np.bincount(self.render(i)[1].ravel(), minlength=4)
            pixels += counts
            present += np.where(counts > 0, counts.sum(), 0)
        return ClassPixels(pixels, present)
