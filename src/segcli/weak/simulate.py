"""Weak labels derived from full masks (``dataset.simulate``): boxes, points and scribbles as an
annotator would have drawn them, for annotation-budget studies on datasets that have full masks.

The recipes are from the papers (tight boxes of each object as in Khoreva et al. 2017 and
Papandreou et al. 2015; random labelled points as in Bearman et al. 2016, "What's the Point";
skeleton scribbles per region, background included, as in ScribbleSup, Lin et al. 2016); OpenCV's
connected components and morphology and scikit-image's skeletonisation do the work. Each returns
an ``ImageLabels`` (weak/labels.py) in pixels of the mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from segcli.data.masks import keep_points
from segcli.errors import SegcliError
from segcli.weak.labels import ImageLabels


def _components(mask: np.ndarray, cls: int, min_area: int):
    """``(labels (H, W) int32, stats (N, 5))`` of the 8-connected components of ``mask == cls``
    (OpenCV's ``x, y, w, h, area`` rows), and the component indices with at least ``min_area``
    pixels."""
    count, comp, stats, _ = cv2.connectedComponentsWithStats(
        (mask == cls).astype(np.uint8), connectivity=8
    )
    kept = [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= min_area]
    return comp, stats, kept


def boxes_from_mask(
    mask: np.ndarray,
    num_classes: int,
    ignore_index: int,
    background_class: int | None,
    min_area: int = 16,
) -> ImageLabels:
    """One tight box per 8-connected component (``cv2.connectedComponentsWithStats``) of each
    class except ``background_class`` (None: every class boxed, as for CamVid); components under
    ``min_area`` pixels left out (specks an annotator would not box). ``ignore_index`` pixels
    belong to no component.

    Args:
        mask: ``(H, W) int64`` class indices 0..num_classes-1 or ``ignore_index``.

    Returns:
        ``ImageLabels`` with ``(K, 4) float32`` boxes in pixel edges (``x2`` = last column + 1),
        by class, then in OpenCV's raster order of the components' first pixels.
    """
    boxes, classes = [], []
    for c in range(num_classes):
        if c == background_class or c == ignore_index:
            continue
        _, stats, kept = _components(mask, c, min_area)
        for i in kept:
            x, y, w, h = (int(v) for v in stats[i, :4])
            boxes.append([x, y, x + w, y + h])
            classes.append(c)
    return ImageLabels.of_boxes(boxes, classes)


def points_from_mask(
    mask: np.ndarray, per_class: int, key: Sequence[int], num_classes: int, ignore_index: int
) -> ImageLabels:
    """``per_class`` random labelled pixels of each class present (Bearman et al. 2016), drawn by
    ``data.masks.keep_points`` seeded with ``key`` (e.g. run seed, image name hash: the same points
    every epoch and after a resume).

    Args:
        mask: ``(H, W) int64`` class indices or ``ignore_index``.

    Returns:
        ``ImageLabels`` whose ``sparse`` is ``(H, W) int64``: at most ``per_class`` pixels of each
        class, the rest ``ignore_index``.
    """
    return ImageLabels.of_sparse(keep_points(mask, per_class, key, num_classes, ignore_index))


def require_skeletonize():
    """scikit-image's ``skeletonize``.

    Raises:
        SegcliError: scikit-image is not installed (one line naming the extra)."""
    try:
        from skimage.morphology import skeletonize
    except ImportError:
        raise SegcliError(
            "dataset.simulate=scribbles needs scikit-image: pip install 'segcli[classical]'"
        ) from None
    return skeletonize


def scribbles_from_mask(
    mask: np.ndarray, num_classes: int, ignore_index: int, width: int = 3, min_area: int = 16
) -> ImageLabels:
    """A scribble per 8-connected component of each class, background included (ScribbleSup's
    annotators scribble the background too, Lin et al. 2016): the skeleton
    (``skimage.morphology.skeletonize``) of the component eroded by ``width // 2`` pixels so that
    the line stays inside (a component the erosion removes: its own skeleton), dilated to
    ``width`` pixels (a ``width`` x ``width`` square) and cut to the component: never outside it.
    Components under ``min_area`` pixels left out. Deterministic (no random draw).

    Args:
        mask: ``(H, W) int64`` class indices or ``ignore_index``; width: pixels, >= 1.

    Returns:
        ``ImageLabels`` whose ``sparse`` is ``(H, W) int64``: the scribbles' classes, the rest
        ``ignore_index``.

    Raises:
        SegcliError: width < 1, or scikit-image missing.
    """
    if width < 1:
        raise SegcliError(f"weak.scribble_width={width}: expected >= 1 pixels")
    skeletonize = require_skeletonize()
    erode = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * (width // 2) + 1,) * 2)
    pen = cv2.getStructuringElement(cv2.MORPH_RECT, (width, width))
    out = np.full(mask.shape, ignore_index, dtype=np.int64)
    for c in range(num_classes):
        if c == ignore_index:
            continue
        comp, _, kept = _components(mask, c, min_area)
        for i in kept:
            region = (comp == i).astype(np.uint8)
            core = cv2.erode(region, erode, borderValue=0)
            line = skeletonize((core if core.any() else region).astype(bool))
            drawn = cv2.dilate(line.astype(np.uint8), pen) & region
            out[drawn.astype(bool)] = c
    return ImageLabels.of_sparse(out)


#: ``dataset.simulate`` values -> simulator (called with keywords; ``tags`` is not done)
SIMULATORS = {
    "boxes": boxes_from_mask,
    "points": points_from_mask,
    "scribbles": scribbles_from_mask,
}
