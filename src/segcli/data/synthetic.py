"""The embedded default dataset: shapes on textured backgrounds, generated on the fly.

Nothing is read or downloaded, so `segcli train` with no arguments runs anywhere. Four classes:
background (0), disc (1), square (2), triangle (3).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from segcli.data.instances import InstanceAnnotations, InstanceSource
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
        image, shapes = self.render_shapes(index)
        mask = np.zeros(self.size, dtype=np.int64)
        for cls, on in shapes:
            mask[on] = cls
        return image, mask

    def render_shapes(self, index: int) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
        """``(H, W, 3) uint8`` image and its shapes in drawing order, each ``(class 1..3, (H, W)
        bool)`` as drawn: later shapes cover earlier ones where they overlap."""
        h, w = self.size
        rng = np.random.default_rng([self.split_id, index])
        low = rng.uniform(0, 255, size=(max(h // 16, 2), max(w // 16, 2), 3)).astype(np.float32)
        image = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
        image += rng.normal(0, 12, size=(h, w, 3)).astype(np.float32)
        base_colors = np.array(
            [[0, 0, 0], [220, 40, 60], [40, 180, 80], [240, 220, 30]], np.float32
        )
        shapes = []
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
            shapes.append((cls, on))
        return np.clip(image, 0, 255).astype(np.uint8), shapes

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        return (*self.render(index), self.name(index))

    def name(self, index: int) -> str:
        return f"{SPLITS[self.split_id]}_{index:05d}"

    def class_pixels(self) -> ClassPixels:
        """Pixels of each of the 4 classes over the split, and the pixels of the images each
        occurs in (for class weights, as ``data.readers.check_pairs`` gives for folder data)."""
        pixels, present = np.zeros(4, np.int64), np.zeros(4, np.int64)
        for i in range(self.length):
            counts = np.bincount(self.render(i)[1].ravel(), minlength=4)
            pixels += counts
            present += np.where(counts > 0, counts.sum(), 0)
        return ClassPixels(pixels, present)


class SyntheticInstances(InstanceSource):
    """The synthetic images of ``SyntheticDataset`` as instances (``task=instance``): every drawn
    shape is one object, its mask the part no later shape covers (shapes touch and overlap, as
    objects in photos occlude each other); a shape covered entirely is no object. The semantic
    mask of an image is the union of its objects' masks, so semantic and instance runs on the
    synthetic set see the same images and the same pixels.

    Args:
        length, image_size, split: as ``SyntheticDataset``'s.
    """

    def __init__(self, length: int, image_size: Sequence[int], split: str) -> None:
        self.images = SyntheticDataset(length, image_size, split, None)
        self.class_names = ["background", "disc", "square", "triangle"]
        self.category_ids = [1, 2, 3]

    def __len__(self) -> int:
        return len(self.images)

    def name(self, i: int) -> str:
        return f"{SPLITS[self.images.split_id]}_{i:05d}"

    def file_name(self, i: int) -> str:
        return f"{self.name(i)}.png"

    def load(self, i: int) -> tuple[np.ndarray, InstanceAnnotations]:
        """``(H, W, 3) uint8`` image and its visible objects (see the class docstring)."""
        image, shapes = self.images.render_shapes(i)
        covered = np.zeros(self.images.size, bool)
        masks, labels = [], []
        for cls, on in reversed(shapes):
            visible = on & ~covered
            covered |= on
            if visible.any():
                masks.append(visible.astype(np.uint8))
                labels.append(cls)
        masks, labels = masks[::-1], labels[::-1]
        h, w = self.images.size
        return image, InstanceAnnotations(
            np.stack(masks) if masks else np.zeros((0, h, w), np.uint8),
            np.array(labels, np.int64),
            np.zeros(len(labels), bool),
        )
