"""weak/simulate.py: boxes (8-connected components, min_area, background skipped, exact pixel
edges), points (count per class, seeding) and scribbles (inside their components, width,
background scribbled, deterministic) from hand-drawn masks."""

from __future__ import annotations

import numpy as np
import pytest

from segcli.errors import SegcliError
from segcli.weak.fill import fill_boxes
from segcli.weak.simulate import (
    SIMULATORS,
    boxes_from_mask,
    points_from_mask,
    scribbles_from_mask,
)

IGNORE = 255


def scene() -> np.ndarray:
    """40x60, background 0: class 1 a 5x6 block (rows 2..6, columns 3..8) and a diagonal pair of
    3x3 blocks touching at a corner (8-connected: one component, rows 20..25, columns 30..35);
    class 2 a 4x4 speck (16 px, rows 30..33, columns 50..53) and a 3x5 one (15 px, under
    min_area); an ignored band in row 39."""
    mask = np.zeros((40, 60), np.int64)
    mask[2:7, 3:9] = 1
    mask[20:23, 30:33] = 1
    mask[23:26, 33:36] = 1
    mask[30:34, 50:54] = 2
    mask[10:13, 50:55] = 2
    mask[39] = IGNORE
    return mask


def test_boxes_from_mask_components_edges_min_area_background():
    labels = boxes_from_mask(scene(), 3, IGNORE, background_class=0)
    assert labels.boxes.dtype == np.float32 and labels.box_classes.dtype == np.int64
    assert labels.boxes.tolist() == [[3, 2, 9, 7], [30, 20, 36, 26], [50, 30, 54, 34]]
    assert labels.box_classes.tolist() == [1, 1, 2]
    assert labels.sparse is None
    # the boxes' Box filling covers each kept component exactly where it is a rectangle
    filled = fill_boxes(labels.boxes, labels.box_classes, (40, 60), 0, IGNORE)
    assert (filled[2:7, 3:9] == 1).all() and (filled == 1).sum() == 30 + 36
    small = boxes_from_mask(scene(), 3, IGNORE, background_class=0, min_area=15)
    assert [50, 10, 55, 13] in small.boxes.tolist()
    everything = boxes_from_mask(scene(), 3, IGNORE, background_class=None)
    assert everything.box_classes.tolist() == [0, 1, 1, 2]  # the background: one component
    assert everything.boxes[0].tolist() == [0, 0, 60, 39]  # row 39 ignored
    empty = boxes_from_mask(np.zeros((5, 5), np.int64), 3, IGNORE, 0)
    assert empty.boxes.shape == (0, 4) and empty.box_classes.shape == (0,)


def test_points_from_mask_count_per_class_and_seeding():
    mask = scene()
    labels = points_from_mask(mask, per_class=5, key=(0, 7), num_classes=3, ignore_index=IGNORE)
    sparse = labels.sparse
    assert labels.boxes.shape == (0, 4)
    assert [(sparse == c).sum() for c in range(3)] == [5, 5, 5]
    kept = sparse != IGNORE
    assert (sparse[kept] == mask[kept]).all()
    again = points_from_mask(mask, per_class=5, key=(0, 7), num_classes=3, ignore_index=IGNORE)
    assert np.array_equal(again.sparse, sparse)
    other = points_from_mask(mask, per_class=5, key=(1, 7), num_classes=3, ignore_index=IGNORE)
    assert not np.array_equal(other.sparse, sparse)
    many = points_from_mask(mask, per_class=40, key=(0, 7), num_classes=3, ignore_index=IGNORE)
    assert (many.sparse == 2).sum() == 31  # all of a class with fewer pixels


@pytest.mark.parametrize("width", [3, 5])
def test_scribbles_inside_components_width_background_deterministic(width):
    mask = np.zeros((40, 80), np.int64)
    mask[10:21, 10:70] = 1  # 11 x 60: its skeleton's long middle line is row 15
    mask[30:32, 5:45] = 2  # 2 px thin: the erosion removes it, its own skeleton is scribbled
    mask[35:37, 60:63] = 2  # 6 px: under min_area
    mask[0] = IGNORE
    sparse = scribbles_from_mask(mask, 3, IGNORE, width=width).sparse
    drawn = sparse != IGNORE
    assert (sparse[drawn] == mask[drawn]).all()  # never outside its component
    assert [bool((sparse == c).any()) for c in range(3)] == [True, True, True]
    assert not (sparse[35:37, 60:63] != IGNORE).any()
    column = sparse[:, 40] == 1
    assert column.sum() == width and column[15 - width // 2 : 16 + width // 2].all()
    assert (sparse == 1).sum() < (mask == 1).sum() / 2  # a line, not the region
    again = scribbles_from_mask(mask, 3, IGNORE, width=width).sparse
    assert np.array_equal(again, sparse)


def test_scribble_width_error_and_simulators_by_keyword():
    with pytest.raises(SegcliError, match=r"^weak\.scribble_width=0: "):
        scribbles_from_mask(scene(), 3, IGNORE, width=0)
    assert set(SIMULATORS) == {"boxes", "points", "scribbles"}
    boxes = SIMULATORS["boxes"](
        mask=scene(), num_classes=3, ignore_index=IGNORE, background_class=0
    )
    assert len(boxes.boxes) == 3
    points = SIMULATORS["points"](
        mask=scene(), per_class=1, key=(3,), num_classes=3, ignore_index=IGNORE
    )
    assert (points.sparse != IGNORE).sum() == 3
    scribbles = SIMULATORS["scribbles"](mask=scene(), num_classes=3, ignore_index=IGNORE)
    assert scribbles.sparse.shape == (40, 60)
