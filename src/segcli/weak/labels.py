"""``ImageLabels``: one training image's weak labels, the common currency of weak/readers.py
(annotation files), weak/simulate.py (derived from full masks) and weak/fill.py (boxes -> masks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segcli.data.settings import LABEL_KINDS, SIMULATED

__all__ = ["LABEL_KINDS", "SIMULATED", "ImageLabels"]


@dataclass(frozen=True)
class ImageLabels:
    """One image's weak labels, in pixels of the image as read.

    Attributes:
        boxes: ``(K, 4) float32`` ``x1, y1, x2, y2`` in pixel edges (COCO's convention: ``x2`` is
            the last column + 1, so a box of one pixel at column 3, row 5 is ``[3, 5, 4, 6]``);
            ``(0, 4)`` for an image without boxes (all background).
        box_classes: ``(K,) int64`` class index 0..C-1 of each box.
        sparse: ``(H, W)`` integer (int64 from the readers and simulators; weak/pseudo.py keeps
            label files' as int16) points or scribbles: a class index where labelled,
            ignore_index elsewhere; None for box labels.
    """

    boxes: np.ndarray
    box_classes: np.ndarray
    sparse: np.ndarray | None = None

    @classmethod
    def of_boxes(cls, boxes, classes) -> ImageLabels:
        """Box labels from any sequences (``(K, 4)`` and ``(K,)``; K may be 0)."""
        return cls(
            np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes, np.int64).reshape(-1)
        )

    @classmethod
    def of_sparse(cls, sparse: np.ndarray) -> ImageLabels:
        """Point or scribble labels from an ``(H, W)`` integer mask (ignore_index = unlabelled)."""
        return cls(
            np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.asarray(sparse, np.int64)
        )
