"""What every instance reader returns (``InstanceAnnotations``), their base class
(``InstanceSource``) and the helpers they share: masks -> boxes, a list of masks -> the arrays."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from segcli.errors import SegcliError


@dataclass(frozen=True)
class InstanceAnnotations:
    """One image's objects before any transform.

    Attributes:
        masks: ``(K, H, W) uint8`` 0/1, one mask per object (``(0, H, W)`` for no objects).
        labels: ``(K,) int64`` contiguous classes 1..C-1 (0 is background, never a label).
        iscrowd: ``(K,) bool`` COCO ``iscrowd=1`` regions (always False for other formats).
    """

    masks: np.ndarray
    labels: np.ndarray
    iscrowd: np.ndarray


class InstanceSource(ABC):
    """Base class of every instance reader: an indexable set of images with their objects.

    Attributes:
        class_names: background first: ``["background", "person", "car", ...]`` (C names).
        category_ids: the dataset's own id of classes 1..C-1 (COCO category ids; for other formats
            the class index itself, or Cityscapes' label id).
    """

    class_names: list[str]
    category_ids: list[int]

    @abstractmethod
    def __len__(self) -> int:
        """Number of images."""

    @abstractmethod
    def name(self, i: int) -> str:
        """Image ``i``'s file stem, unique within the source."""

    @abstractmethod
    def file_name(self, i: int) -> str:
        """Image ``i``'s file name as in the source (COCO's ``file_name``)."""

    def image_id(self, i: int) -> int:
        """Image ``i``'s id: COCO's image id for COCO JSON, else ``i + 1``."""
        return i + 1

    @abstractmethod
    def load(self, i: int) -> tuple[np.ndarray, InstanceAnnotations]:
        """Image ``i`` as ``(H, W, 3) uint8`` RGB and its objects (masks of the same H, W).

        Raises:
            SegcliError: a file is missing or unreadable, or does not match its annotation.
        """


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """Tight boxes of masks, in pixel edges: ``x2`` is the last column + 1, so a one-pixel mask at
    column 3, row 5 is ``[3, 5, 4, 6]`` (COCO's convention: bbox width = column count).

    Args:
        masks: ``(K, H, W)`` 0/1 (any integer or bool dtype).

    Returns:
        ``(K, 4) float32`` ``x1, y1, x2, y2`` in pixels; all zeros for an empty mask.
    """
    masks = np.asarray(masks)
    boxes = np.zeros((len(masks), 4), np.float32)
    for k, mask in enumerate(masks):
        cols = np.flatnonzero(mask.any(axis=0))
        rows = np.flatnonzero(mask.any(axis=1))
        if len(cols):
            boxes[k] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes


def annotations(
    masks: Sequence[np.ndarray], labels: Sequence[int], size: tuple[int, int], iscrowd=None
) -> InstanceAnnotations:
    """``InstanceAnnotations`` of per-object ``(H, W)`` masks; ``size`` (H, W) shapes K = 0."""
    stacked = (
        np.stack([np.asarray(m, np.uint8) for m in masks])
        if len(masks)
        else np.zeros((0, *size), np.uint8)
    )
    crowd = np.zeros(len(masks), bool) if iscrowd is None else np.asarray(iscrowd, bool)
    return InstanceAnnotations(stacked, np.asarray(labels, np.int64), crowd)


def check_size(path, image: np.ndarray, size: tuple[int, int], what: str) -> None:
    """Raise a one-line ``SegcliError`` naming ``path`` when ``image``'s (H, W) is not ``size``."""
    if image.shape[:2] != tuple(size):
        h, w = image.shape[:2]
        raise SegcliError(
            f"{path}: image is {w}x{h} (width x height) but {what} says {size[1]}x{size[0]}"
        )
