"""weak/fill.py: Box and Box^i pixel by pixel on a hand-made 10x12 case (the smaller box wins, the
pixel rule's +1 edge, the inner box's sizes computed by hand, outside 0 and None), GrabCut and the
dense CRF against the true masks of synthetic discs, the EM round's refinement and
``pseudo_mask``'s dispatch and one-line errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from segcli.errors import SegcliError
from segcli.inference.refine import CrfSettings
from segcli.weak.fill import (
    crf_boxes,
    fill_boxes,
    grabcut_boxes,
    inner_range,
    pseudo_mask,
)
from segcli.weak.labels import ImageLabels
from segcli.weak.refine import refine_with_prediction

IGNORE = 255
# Listed smaller first: the painting order comes from the areas, not the list.
# B: columns floor(6.5) = 6 .. ceil(12) - 1 = 11, rows 5 .. 9 (6 x 5 = 30 px), class 2.
# A: columns 0 .. 9, rows 0 .. 7 (10 x 8 = 80 px), class 1.
BOXES = np.array([[6.5, 5.2, 12.0, 10.0], [0.0, 0.0, 10.0, 8.0]], np.float32)
CLASSES = np.array([2, 1])
SIZE = (10, 12)


def grid(*rows: str) -> np.ndarray:
    """A mask from rows of characters: a digit is its class, '.' is IGNORE."""
    return np.array([[IGNORE if ch == "." else int(ch) for ch in row] for row in rows], np.int64)


BOX = grid(
    *["111111111100"] * 5,
    *["111111222222"] * 3,
    *["000000222222"] * 2,
)
# Box^i, inner_share 0.2 (sides * sqrt(0.2) = 0.447, rounded; offset (side - inner) // 2):
# A 10 x 8 -> 4 x 4 at column 0 + 3, row 0 + 2: columns 3..6, rows 2..5;
# B 6 x 5 -> round(2.68) = 3 x round(2.24) = 2 at column 6 + 1, row 5 + 1: columns 7..9, rows 6..7.
# B's band (painted after A) covers A's inner pixel (row 5, column 6).
BOX_I = grid(
    *["..........00"] * 2,
    *["...1111...00"] * 3,
    "...111......",
    *[".......222.."] * 2,
    *["000000......"] * 2,
)


def test_box_filling_pixel_by_pixel_the_smaller_box_wins():
    assert np.array_equal(fill_boxes(BOXES, CLASSES, SIZE, 0, IGNORE), BOX)
    none = fill_boxes(BOXES, CLASSES, SIZE, None, IGNORE)
    assert np.array_equal(none, np.where(BOX == 0, IGNORE, BOX))
    assert none.dtype == np.int64


def test_box_i_filling_pixel_by_pixel():
    assert inner_range((0, 8, 0, 10), 0.2) == (2, 6, 3, 7)
    assert inner_range((5, 10, 6, 12), 0.2) == (6, 8, 7, 10)
    assert np.array_equal(fill_boxes(BOXES, CLASSES, SIZE, 0, IGNORE, inner_share=0.2), BOX_I)
    none = fill_boxes(BOXES, CLASSES, SIZE, None, IGNORE, inner_share=0.2)
    assert np.array_equal(none, np.where(BOX_I == 0, IGNORE, BOX_I))


def test_one_pixel_box_no_boxes_and_boxes_past_the_border():
    one = fill_boxes(np.array([[3, 5, 4, 6]]), np.array([1]), SIZE, 0, IGNORE)
    assert one.sum() == 1 and one[5, 3] == 1
    assert (fill_boxes(np.zeros((0, 4)), np.zeros(0), SIZE, 0, IGNORE) == 0).all()
    assert (fill_boxes(np.zeros((0, 4)), np.zeros(0), SIZE, None, IGNORE) == IGNORE).all()
    past = fill_boxes(np.array([[-3.0, 8.5, 20.0, 30.0]]), np.array([1]), SIZE, 0, IGNORE)
    assert (past[8:] == 1).all() and (past[:8] == 0).all()
    with pytest.raises(SegcliError, match=r"^weak\.inner_share=0\.0: .*\(0, 1\]$"):
        fill_boxes(BOXES, CLASSES, SIZE, 0, IGNORE, inner_share=0.0)


def discs(seed: int = 0):
    """96x128 RGB: three reddish discs (class 1) on a blue background, Gaussian noise of 12 grey
    levels; the discs' tight boxes; the true mask."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((96, 128), np.uint8)
    circles = [(30, 30, 18), (90, 40, 14), (60, 72, 16)]
    for cx, cy, r in circles:
        cv2.circle(truth, (cx, cy), r, 1, -1)
    image = np.where(truth[..., None] == 1, [200, 60, 50], [60, 120, 190]).astype(np.float64)
    image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
    boxes = np.array([[cx - r, cy - r, cx + r + 1, cy + r + 1] for cx, cy, r in circles])
    return image, boxes.astype(np.float32), np.ones(3, np.int64), truth.astype(np.int64)


def iou(mask: np.ndarray, truth: np.ndarray) -> float:
    a, t = mask == 1, truth == 1
    return float((a & t).sum() / (a | t).sum())


def test_grabcut_and_crf_beat_the_box_filling_on_discs():
    image, boxes, classes, truth = discs()
    box = iou(fill_boxes(boxes, classes, truth.shape, 0, IGNORE), truth)
    grabcut = iou(grabcut_boxes(image, boxes, classes, 0, IGNORE), truth)
    crf = crf_boxes(image, boxes, classes, 2, 0, IGNORE)
    # measured: Box 0.733 (a disc in its tight box, ~pi/4), GrabCut 1.000, CRF 0.992
    assert box == pytest.approx(0.733, abs=0.01)
    assert grabcut > box + 0.2
    assert iou(crf, truth) > box + 0.2
    inside = fill_boxes(boxes, classes, truth.shape, 0, IGNORE) == 1
    assert (crf[~inside] == 0).all()  # a box gives its class to no pixel outside it
    again = grabcut_boxes(image, boxes, classes, 0, IGNORE)
    assert np.array_equal(again, grabcut_boxes(image, boxes, classes, 0, IGNORE))


def test_grabcut_falls_back_to_box_i():
    image, boxes, classes, truth = discs()
    box_i = fill_boxes(boxes, classes, truth.shape, 0, IGNORE, inner_share=0.2)
    # no box's foreground is its whole area: all under min_share 1.0
    assert np.array_equal(grabcut_boxes(image, boxes, classes, 0, IGNORE, min_share=1.0), box_i)
    tiny = np.array([[10, 10, 13, 20], [0, 0, 128, 96]], np.float32)  # 3 px wide; the whole image
    expected = fill_boxes(tiny, np.array([1, 1]), truth.shape, 0, IGNORE, inner_share=0.2)
    assert np.array_equal(grabcut_boxes(image, tiny, np.array([1, 1]), 0, IGNORE), expected)


def test_crf_keeps_labels_inside_their_boxes():
    image, boxes, _, truth = discs()
    classes = np.array([1, 2, 1])
    crf = crf_boxes(image, boxes, classes, 3, None, IGNORE)
    covered = fill_boxes(boxes, classes, truth.shape, None, IGNORE)
    assert (crf[covered == IGNORE] == IGNORE).all()  # outside None: not refined
    # each box alone with no outside label: its class everywhere in it, the others nowhere
    assert np.array_equal(crf, covered)
    # a strong bilateral term pulls the third disc (class 2, the colour of the class-1 discs)
    # toward class 1 (measured: the unrestricted argmax gives all its 797 px class 1); the
    # restriction to the labels of the boxes covering a pixel keeps it to 2 (621 px) or outside
    strong = CrfSettings(bi_w=50.0, bi_rgb_std=13.0)
    pulled = crf_boxes(image, boxes, np.array([1, 1, 2]), 3, 0, IGNORE, settings=strong)
    assert set(np.unique(pulled[56:89, 44:77])) == {0, 2}
    # a green square (class 2) inside the first disc, boxed: the CRF gives it class 2 and gives
    # class 2 to no pixel outside its box (measured: the square all 2, 8 stray band pixels of 2)
    rng = np.random.default_rng(1)
    green = np.clip(np.array([60, 200, 60]) + rng.normal(0, 12, (9, 9, 3)), 0, 255)
    image[26:35, 26:35] = green.astype(np.uint8)
    nested = np.vstack([boxes, [[24, 24, 37, 37]]]).astype(np.float32)
    out = crf_boxes(image, nested, np.array([1, 1, 1, 2]), 3, 0, IGNORE)
    assert (out[26:35, 26:35] == 2).all()
    rows, cols = np.nonzero(out == 2)
    assert rows.min() >= 24 and rows.max() < 37 and cols.min() >= 24 and cols.max() < 37
    truth[26:35, 26:35] = 2
    assert iou(out, truth) > 0.95


def test_refine_with_prediction():
    # A: rows 0..5, columns 0..5 (36 px), class 1; B: rows 2..7, columns 7..11 (30 px), class 2
    boxes = np.array([[0, 0, 6, 6], [7, 2, 12, 8]], np.float32)
    classes = np.array([1, 2])
    fallback = fill_boxes(boxes, classes, SIZE, 0, IGNORE, inner_share=0.2)
    pred = np.zeros(SIZE, np.int64)
    pred[1:5, 1:5] = 1  # A: 16 of 36 px, kept
    pred[2, 7:9] = 2  # B: 2 of 30 px (< 0.1): reset to its fallback
    pred[8:, :] = 1  # outside every box: reset to outside
    pred[0, 0] = 2  # not A's class: not A's claim
    out = refine_with_prediction(pred, boxes, classes, fallback, 0, IGNORE)
    expected = np.zeros(SIZE, np.int64)
    expected[1:5, 1:5] = 1
    expected[2:8, 7:12] = fallback[2:8, 7:12]
    assert np.array_equal(out, expected)
    assert (expected[2:8, 7:12] == IGNORE).any() and (expected[2:8, 7:12] == 2).any()
    none = refine_with_prediction(pred, boxes, classes, fallback, None, IGNORE)
    assert np.array_equal(none, np.where(expected == 0, IGNORE, expected))
    with pytest.raises(SegcliError, match=r"^weak\.rounds: .*\(10, 12\) and \(3, 3\)$"):
        refine_with_prediction(pred, boxes, classes, fallback[:3, :3], 0, IGNORE)


def test_pseudo_mask_dispatch_and_errors():
    image, boxes, classes, truth = discs()
    labels = ImageLabels.of_boxes(boxes, classes)
    box = pseudo_mask("box", image, labels, 2, 0, IGNORE)
    assert np.array_equal(box, fill_boxes(boxes, classes, truth.shape, 0, IGNORE))
    box_i = pseudo_mask("box_i", image, labels, 2, 0, IGNORE, inner_share=0.5)
    assert np.array_equal(box_i, fill_boxes(boxes, classes, truth.shape, 0, IGNORE, 0.5))
    grabcut = pseudo_mask("grabcut", image, labels, 2, 0, IGNORE, iterations=2)
    assert np.array_equal(grabcut, grabcut_boxes(image, boxes, classes, 0, IGNORE, 2))
    sparse = ImageLabels.of_sparse(np.full(truth.shape, IGNORE))
    assert pseudo_mask("crf", image, sparse, 2, 0, IGNORE) is sparse.sparse
    with pytest.raises(SegcliError, match=r"^weak\.fill=boxes: .*box, box_i, grabcut, crf$") as e:
        pseudo_mask("boxes", image, labels, 2, 0, IGNORE)
    assert "\n" not in str(e.value)
    with pytest.raises(SegcliError, match=r"^weak\.fill=crf: unknown parameter sigma; .*"):
        pseudo_mask("crf", image, labels, 2, 0, IGNORE, sigma=3)
    with pytest.raises(SegcliError, match=r"^weak\.fill=box: unknown parameter inner_share"):
        pseudo_mask("box", image, labels, 2, 0, IGNORE, inner_share=0.2)
