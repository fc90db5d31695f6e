"""Boxes -> training masks (``weak.fill``): Box, Box^i, GrabCut and dense CRF fillings, and the
refinement of a model's prediction inside the boxes between training rounds.

The recipes are from the papers (Khoreva et al. 2017, "Simple Does It: Weakly Supervised Instance
and Semantic Segmentation"; Papandreou et al. 2015, "Weakly- and Semi-Supervised Learning of a
DCNN for Semantic Image Segmentation"); no library implements them, so the rules are our own
code, while OpenCV's ``cv2.grabCut`` and pydensecrf (``inference.refine.dense_crf``) do the
segmentation work.

Common rule of every filling: boxes are painted from the largest area to the smallest (ties in
the order given), so where boxes overlap the smaller box wins (Khoreva et al. 2017). Each box
paints only the pixels it claims as its object (Box^i also marks its uncertain band
``ignore_index``); the pixels of a box it does not claim keep what lies beneath (a larger box's
claim, or the outside value). ``outside`` is the class of the pixels outside every box (the
background class), or None -> ``ignore_index`` (datasets without a background class, e.g.
CamVid). An image without boxes is all ``outside`` (or ``ignore_index``).

Pixel rule: a box ``x1, y1, x2, y2`` in float pixel edges covers columns ``floor(x1)`` ..
``ceil(x2) - 1`` and rows ``floor(y1)`` .. ``ceil(y2) - 1``, clipped to the image (a box of one
pixel at column 3, row 5 is ``[3, 5, 4, 6]``); a box left with no pixels paints nothing.
"""

from __future__ import annotations

import inspect
import math

import cv2
import numpy as np
import torch

from segcli.errors import SegcliError
from segcli.inference.refine import CrfSettings, dense_crf
from segcli.weak.labels import ImageLabels

#: ``weak.fill`` values
FILL_METHODS = ("box", "box_i", "grabcut", "crf")

#: probability of a box's class in its inner Box^i region for the CRF's unaries
INNER_CONFIDENCE = 0.95

#: GrabCut's crop around a box: this share of the box's longer side on each side, at least
#: GRABCUT_MIN_MARGIN pixels (the background model's pixels)
GRABCUT_MARGIN = 0.25
GRABCUT_MIN_MARGIN = 8
#: crops longer than this (pixels) run GrabCut downscaled to it (CamVid: 0.6 s a frame, not 4.1)
GRABCUT_MAX_SIDE = 160


def box_ranges(boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(K, 4) int64`` ``r0, r1, c0, c1`` (end exclusive) of float pixel-edge boxes ``(K, 4)``
    in an image of ``size = (H, W)``: the module's pixel rule."""
    h, w = size
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    c0 = np.clip(np.floor(b[:, 0]), 0, w)
    r0 = np.clip(np.floor(b[:, 1]), 0, h)
    c1 = np.clip(np.ceil(b[:, 2]), 0, w)
    r1 = np.clip(np.ceil(b[:, 3]), 0, h)
    return np.stack([r0, np.maximum(r1, r0), c0, np.maximum(c1, c0)], 1).astype(np.int64)


def painting_order(ranges: np.ndarray) -> np.ndarray:
    """Indices of the boxes from the largest pixel area to the smallest (stable: ties in order)."""
    areas = (ranges[:, 1] - ranges[:, 0]) * (ranges[:, 3] - ranges[:, 2])
    return np.argsort(-areas, kind="stable")


def inner_range(rng, inner_share: float) -> tuple[int, int, int, int]:
    """The centred inner box of the Box^i filling of a box's pixel range ``r0, r1, c0, c1``: sides
    ``max(1, round(side * sqrt(inner_share)))`` pixels (same aspect ratio, ``inner_share`` of the
    area), offset ``(side - inner side) // 2`` from the box's top-left pixel."""
    r0, r1, c0, c1 = (int(v) for v in rng)
    scale = math.sqrt(inner_share)
    hi, wi = max(1, round((r1 - r0) * scale)), max(1, round((c1 - c0) * scale))
    ri, ci = r0 + (r1 - r0 - hi) // 2, c0 + (c1 - c0 - wi) // 2
    return ri, ri + hi, ci, ci + wi


def _check_share(name: str, share: float) -> None:
    if not 0.0 < share <= 1.0:
        raise SegcliError(f"weak.{name}={share}: expected a share of the box's area in (0, 1]")


def blank(size, outside: int | None, ignore_index: int) -> np.ndarray:
    """An ``(H, W) int64`` mask of ``outside`` (or ``ignore_index`` when None): no box painted."""
    return np.full(size, ignore_index if outside is None else outside, dtype=np.int64)


def _paint_box_i(out: np.ndarray, rng, cls: int, ignore_index: int, inner_share: float) -> None:
    r0, r1, c0, c1 = (int(v) for v in rng)
    out[r0:r1, c0:c1] = ignore_index
    ri0, ri1, ci0, ci1 = inner_range(rng, inner_share)
    out[ri0:ri1, ci0:ci1] = cls


def fill_boxes(
    boxes: np.ndarray,
    classes: np.ndarray,
    size: tuple[int, int],
    outside: int | None,
    ignore_index: int,
    inner_share: float | None = None,
) -> np.ndarray:
    """Box and Box^i fillings (Khoreva et al. 2017).

    Box (``inner_share`` None): each box filled with its class. Box^i: the centred inner box with
    ``inner_share`` of the box's area (same aspect ratio; see ``inner_range``) filled with the
    class, the band between it and the box ``ignore_index`` (Khoreva et al.: 20% of the area
    filled). Largest box first, so the smaller wins where boxes overlap.

    Args:
        boxes: ``(K, 4) float`` ``x1, y1, x2, y2`` in pixel edges; classes: ``(K,) int``.
        size: ``(H, W)`` pixels.

    Returns:
        ``(H, W) int64`` class indices or ``ignore_index``.

    Raises:
        SegcliError: ``inner_share`` not in (0, 1].
    """
    if inner_share is not None:
        _check_share("inner_share", inner_share)
    out = blank(size, outside, ignore_index)
    ranges = box_ranges(boxes, size)
    classes = np.asarray(classes, np.int64).reshape(-1)
    for k in painting_order(ranges):
        r0, r1, c0, c1 = ranges[k]
        if inner_share is None:
            out[r0:r1, c0:c1] = classes[k]
        elif r1 > r0 and c1 > c0:
            _paint_box_i(out, ranges[k], int(classes[k]), ignore_index, inner_share)
    return out


def _grabcut_claim(image: np.ndarray, rng, iterations: int) -> np.ndarray | None:
    """GrabCut's foreground (GC_FGD or GC_PR_FGD) inside a box's pixel range, ``(h, w) bool``, or
    None when the crop around the box has no pixel outside it (no background model)."""
    r0, r1, c0, c1 = (int(v) for v in rng)
    height, width = image.shape[:2]
    margin = max(GRABCUT_MIN_MARGIN, round(GRABCUT_MARGIN * max(r1 - r0, c1 - c0)))
    y0, y1 = max(0, r0 - margin), min(height, r1 + margin)
    x0, x1 = max(0, c0 - margin), min(width, c1 + margin)
    if (y0, y1, x0, x1) == (r0, r1, c0, c1):
        return None
    crop = np.ascontiguousarray(image[y0:y1, x0:x1, ::-1])  # OpenCV's BGR
    factor = min(1.0, GRABCUT_MAX_SIDE / max(crop.shape[:2]))
    if factor < 1:  # large boxes: GrabCut at a lower resolution (its time grows with the pixels)
        crop = cv2.resize(crop, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    mask = np.zeros(crop.shape[:2], np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)  # GrabCut's k-means initialisation: the same mask on every call
    sy, sx = crop.shape[0] / (y1 - y0), crop.shape[1] / (x1 - x0)
    left, top = int((c0 - x0) * sx), int((r0 - y0) * sy)
    right = max(left + 1, min(crop.shape[1], round((c1 - x0) * sx)))
    bottom = max(top + 1, min(crop.shape[0], round((r1 - y0) * sy)))
    if (left, top, right, bottom) == (0, 0, crop.shape[1], crop.shape[0]):
        return None
    rect = (left, top, right - left, bottom - top)
    cv2.grabCut(crop, mask, rect, bgd, fgd, iterations, cv2.GC_INIT_WITH_RECT)
    if factor < 1:
        mask = cv2.resize(mask, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
    inside = mask[r0 - y0 : r1 - y0, c0 - x0 : c1 - x0]
    return (inside == cv2.GC_FGD) | (inside == cv2.GC_PR_FGD)


def grabcut_boxes(
    image: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    outside: int | None,
    ignore_index: int,
    iterations: int = 5,
    min_share: float = 0.1,
    inner_share: float = 0.2,
) -> np.ndarray:
    """GrabCut filling (Rother et al. 2004, as the "GrabCut" baseline of Khoreva et al. 2017).

    OpenCV's ``cv2.grabCut`` with each box as its rectangle (GC_INIT_WITH_RECT, ``iterations``
    rounds), run on a crop of the box plus a margin (``GRABCUT_MARGIN`` of its longer side, at
    least ``GRABCUT_MIN_MARGIN`` px: speed, and the margin gives the background model its pixels);
    the GC_FGD/GC_PR_FGD pixels are claimed by the box. A box too small for GrabCut (< 4 px a
    side), one covering the whole image (no background pixels) or one whose foreground is under
    ``min_share`` of its area falls back to its Box^i filling (``inner_share``). Seeded
    (``cv2.setRNGSeed(0)``): deterministic.

    Args:
        image: ``(H, W, 3) uint8`` RGB; boxes ``(K, 4)`` pixel edges; classes ``(K,)``.

    Returns:
        ``(H, W) int64`` class indices or ``ignore_index``.

    Raises:
        SegcliError: ``image`` not ``(H, W, 3) uint8``, or a share not in (0, 1].
    """
    _check_image(image)
    _check_share("inner_share", inner_share)
    size = image.shape[:2]
    out = blank(size, outside, ignore_index)
    ranges = box_ranges(boxes, size)
    classes = np.asarray(classes, np.int64).reshape(-1)
    for k in painting_order(ranges):
        r0, r1, c0, c1 = ranges[k]
        if r1 <= r0 or c1 <= c0:
            continue
        claim = None
        if min(r1 - r0, c1 - c0) >= 4:
            claim = _grabcut_claim(image, ranges[k], iterations)
        if claim is None or claim.sum() < min_share * claim.size:
            _paint_box_i(out, ranges[k], int(classes[k]), ignore_index, inner_share)
        else:
            out[r0:r1, c0:c1][claim] = classes[k]
    return out


def _check_image(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise SegcliError(
            f"weak.fill: expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}"
        )


def _box_unaries(ranges, classes, num_classes, outside, confidence, inner_share, size):
    """The CRF's ``(C, H, W)`` probabilities and ``(C, H, W) bool`` allowed labels (see
    ``crf_boxes``)."""
    h, w = size
    allowed = np.zeros((num_classes, h, w), bool)
    owner_conf = np.zeros((h, w), np.float64)
    owner = np.full((h, w), -1, np.int64)
    for k in painting_order(ranges):
        r0, r1, c0, c1 = ranges[k]
        allowed[classes[k], r0:r1, c0:c1] = True
        owner[r0:r1, c0:c1] = classes[k]
        owner_conf[r0:r1, c0:c1] = confidence
        ri0, ri1, ci0, ci1 = inner_range(ranges[k], inner_share)
        owner_conf[ri0:ri1, ci0:ci1] = INNER_CONFIDENCE
    in_box = owner >= 0
    if outside is not None:
        allowed[outside] = True
    probs = np.full((num_classes, h, w), 1.0 / num_classes)
    probs[:, in_box] = 0.0
    others = allowed.sum(0) - 1  # the labels a boxed pixel could take besides its owner's
    rows, cols = np.nonzero(in_box)
    probs[owner[rows, cols], rows, cols] = owner_conf[rows, cols]
    for c in range(num_classes):
        share = allowed[c] & in_box & (owner != c) & (others > 0)
        probs[c][share] = ((1.0 - owner_conf) / np.maximum(others, 1))[share]
    rows, cols = np.nonzero(in_box & (others == 0))
    probs[:, rows, cols] = 0.0
    probs[owner[rows, cols], rows, cols] = 1.0
    if outside is not None:
        probs[:, ~in_box] = 0.0
        probs[outside, ~in_box] = 1.0
    return probs, allowed, in_box


def crf_boxes(
    image: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    num_classes: int,
    outside: int | None,
    ignore_index: int,
    settings: CrfSettings | None = None,
    confidence: float = 0.7,
    inner_share: float = 0.2,
) -> np.ndarray:
    """Dense CRF filling (the "DenseCRF" box baseline of Khoreva et al. 2017; Krähenbühl and
    Koltun 2011 through ``inference.refine.dense_crf``, ``settings`` default ``CrfSettings()``).

    Unaries from the boxes: inside a box, the smallest box covering the pixel (the one that wins)
    gives its class probability ``confidence`` in its band and ``INNER_CONFIDENCE`` (0.95) in its
    inner Box^i region (``inner_share`` of its area), the rest shared evenly among the other labels
    the pixel could take (the classes of the other boxes covering it, and ``outside`` when not
    None); a pixel with no other label takes its box's class. Outside every box: ``outside`` with
    certainty, or, when ``outside`` is None, uniform and not refined (stays ``ignore_index``).
    After inference each boxed pixel takes the most probable of its allowed labels: a box never
    gives its class to a pixel outside it. Unboxed objects count as outside with certainty, so the
    bilateral kernel pulls boxed pixels of their colour toward ``outside``: box every object.

    Args:
        image: ``(H, W, 3) uint8`` RGB (the bilateral kernel); boxes ``(K, 4)`` pixel edges;
            classes ``(K,)`` in 0..num_classes-1.

    Returns:
        ``(H, W) int64`` class indices or ``ignore_index``.

    Raises:
        SegcliError: a bad image, ``confidence`` not in (0, 1], ``inner_share`` not in (0, 1], or
            pydensecrf2 missing.
    """
    _check_image(image)
    _check_share("confidence", confidence)
    _check_share("inner_share", inner_share)
    size = image.shape[:2]
    out = blank(size, outside, ignore_index)
    ranges = box_ranges(boxes, size)
    classes = np.asarray(classes, np.int64).reshape(-1)
    keep = (ranges[:, 1] > ranges[:, 0]) & (ranges[:, 3] > ranges[:, 2])
    ranges, classes = ranges[keep], classes[keep]
    if not len(ranges):
        return out
    probs, allowed, in_box = _box_unaries(
        ranges, classes, num_classes, outside, confidence, inner_share, size
    )
    refined = dense_crf(
        torch.from_numpy(probs[None].astype(np.float32)),
        image[None],
        settings or CrfSettings(),
    )[0].numpy()
    best = np.where(allowed, refined, -1.0).argmax(0)
    out[in_box] = best[in_box]
    return out


def pseudo_mask(
    method: str,
    image: np.ndarray,
    labels: ImageLabels,
    num_classes: int,
    outside: int | None,
    ignore_index: int,
    **params,
) -> np.ndarray:
    """One training image's mask from its weak labels: ``method`` in ``FILL_METHODS`` (``box``,
    ``box_i``, ``grabcut``, ``crf``: ``fill_boxes`` without/with ``inner_share`` (default 0.2),
    ``grabcut_boxes``, ``crf_boxes``), ``params`` the method's keyword parameters. Sparse labels
    (points, scribbles: ``labels.sparse`` not None) are returned unchanged.

    Args:
        image: ``(H, W, 3) uint8`` RGB (``box`` and ``box_i`` use only its size).

    Returns:
        ``(H, W) int64`` class indices or ``ignore_index``.

    Raises:
        SegcliError: an unknown method or parameter (one line naming ``weak.fill``), or see the
            method.
    """
    if method not in FILL_METHODS:
        raise SegcliError(
            f"weak.fill={method}: unknown filling; expected one of {', '.join(FILL_METHODS)}"
        )
    if labels.sparse is not None:
        return labels.sparse
    if method in ("box", "box_i"):
        fill = fill_boxes
        params = {"inner_share": None if method == "box" else 0.2, **params}
        args = (labels.boxes, labels.box_classes, image.shape[:2], outside, ignore_index)
    elif method == "grabcut":
        fill, args = grabcut_boxes, (image, labels.boxes, labels.box_classes, outside, ignore_index)
    else:
        fill = crf_boxes
        args = (image, labels.boxes, labels.box_classes, num_classes, outside, ignore_index)
    known = list(inspect.signature(fill).parameters)[len(args) :]
    unknown = sorted(set(params) - set(known))
    if unknown or (method == "box" and params["inner_share"] is not None):
        raise SegcliError(
            f"weak.fill={method}: unknown parameter {(unknown or ['inner_share'])[0]}; expected "
            f"{', '.join(known) if method != 'box' else 'none (box_i takes inner_share)'}"
        )
    return fill(*args, **params)
