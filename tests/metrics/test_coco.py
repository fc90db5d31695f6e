"""COCO instance scores (metrics.coco) against APs worked out by hand from COCO's protocol:
101 recall points 0, .01, .., 1, precision made monotone, AP = mean over them and the 10 IoU
thresholds (pycocotools/cocoeval.py, accumulate). COCOeval's precision is tp / (tp + fp + eps),
hence a tolerance of 1e-6 rather than equality."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from segcli.errors import SegcliError
from segcli.metrics.coco import CocoEvaluator, instance_id_map, paste_semantic, results_json

H, W = 60, 80  # not square: a transposed mask would not fit


def square(y: int, x: int, side: int, h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[y : y + side, x : x + side] = 1
    return m


def box(y: int, x: int, side: int) -> list[float]:
    """xyxy in pixel-edge coordinates of square(y, x, side)."""
    return [x, y, x + side, y + side]


def add(ev, image_id, gts=(), crowd=(), dets=(), h=H, w=W):
    """gts: [(mask, label)]; dets: [(mask, box, label, score)]."""
    gm = np.stack([m for m, _ in gts]) if gts else np.zeros((0, h, w), np.uint8)
    ev.add(
        image_id,
        f"img{image_id}.png",
        h,
        w,
        gm,
        np.array([lab for _, lab in gts], np.int64),
        np.array(crowd if crowd else [False] * len(gts), bool),
        np.stack([d[0] for d in dets]) if dets else np.zeros((0, h, w), np.uint8),
        np.array([d[1] for d in dets], np.float64).reshape(-1, 4),
        np.array([d[2] for d in dets], np.int64),
        np.array([d[3] for d in dets], np.float64),
    )


def test_perfect_match_is_ap_1():
    ev = CocoEvaluator(["bg", "cell"])
    g = square(10, 40, 40)  # area 1600: medium
    add(ev, 1, gts=[(g, 1)], dets=[(g, box(10, 40, 40), 1, 0.9)])
    s = ev.compute()
    for k in ("mask_ap", "mask_ap50", "mask_ap75", "mask_ap_medium", "mask_ar100", "box_ap"):
        assert s[k] == pytest.approx(1.0, abs=1e-6), k
    assert s["box_ap50"] == pytest.approx(1.0, abs=1e-6)
    assert s["mask_ap_small"] is None and s["mask_ap_large"] is None  # no gt of that size
    assert s["per_class"]["cell"]["mask_ap"] == pytest.approx(1.0, abs=1e-6)
    assert s["per_class"]["cell"]["box_ap"] == pytest.approx(1.0, abs=1e-6)
    assert s["images"] == 1


def test_miss_and_hit_in_two_images_is_51_of_101():
    # 2 gt, 1 correct detection: recall .5 with precision 1; precision 0 beyond. Of the 101 recall
    # points 0, .01, .., .50 (51 of them) reach recall .5: AP = 51/101 at every IoU threshold.
    ev = CocoEvaluator(["bg", "cell"])
    g = square(5, 5, 40)
    add(ev, 1, gts=[(g, 1)], dets=[(g, box(5, 5, 40), 1, 0.9)])
    add(ev, 2, gts=[(square(10, 20, 40), 1)])
    s = ev.compute()
    assert s["mask_ap"] == pytest.approx(51 / 101, abs=1e-6)
    assert s["box_ap"] == pytest.approx(51 / 101, abs=1e-6)
    assert s["mask_ar100"] == pytest.approx(0.5, abs=1e-6)
    assert s["images"] == 2


def test_false_positive_scored_above_the_true_positive_halves_ap():
    # ranked: FP (.95) then TP (.9): precision 0 at recall 0, .5 at recall 1; made monotone, .5
    # at every recall point -> AP .5
    ev = CocoEvaluator(["bg", "cell"])
    g = square(5, 5, 20)
    fp = square(35, 50, 20)
    add(ev, 1, gts=[(g, 1)], dets=[(g, box(5, 5, 20), 1, 0.9), (fp, box(35, 50, 20), 1, 0.95)])
    s = ev.compute()
    assert s["mask_ap"] == pytest.approx(0.5, abs=1e-6)
    assert s["box_ap"] == pytest.approx(0.5, abs=1e-6)
    # ranked TP first: AP 1 (the FP after full recall does not lower interpolated precision)
    ev = CocoEvaluator(["bg", "cell"])
    add(ev, 1, gts=[(g, 1)], dets=[(g, box(5, 5, 20), 1, 0.9), (fp, box(35, 50, 20), 1, 0.5)])
    assert ev.compute()["mask_ap"] == pytest.approx(1.0, abs=1e-6)


def test_detection_on_crowd_region_is_neither_tp_nor_fp():
    ev = CocoEvaluator(["bg", "cell"])
    g, crowd = square(5, 5, 20), square(30, 40, 25)
    on_crowd = square(32, 42, 15)  # inside the crowd region: IoU with crowd = 225/225 = 1
    add(
        ev,
        1,
        gts=[(g, 1), (crowd, 1)],
        crowd=[False, True],
        dets=[(g, box(5, 5, 20), 1, 0.5), (on_crowd, box(32, 42, 15), 1, 0.99)],
    )
    s = ev.compute()
    assert s["mask_ap"] == pytest.approx(1.0, abs=1e-6)
    assert s["box_ap"] == pytest.approx(1.0, abs=1e-6)
    (row,) = ev.per_image()
    assert (row["gt"], row["tp50"], row["fp50"], row["fn50"]) == (1, 1, 0, 0)


def test_per_image_counts_and_matched_ious():
    ev = CocoEvaluator(["bg", "a", "b"])
    g1, g2 = square(10, 10, 20), square(30, 50, 20)
    shifted = square(12, 12, 20)  # 18x18 overlap: IoU 324 / (800 - 324)
    add(
        ev,
        7,
        gts=[(g1, 1), (g2, 2)],
        dets=[(shifted, box(12, 12, 20), 1, 0.8), (g2, box(30, 50, 20), 1, 0.7)],  # 2nd: b's, as a
    )
    add(ev, 8)  # no gt, no detections
    add(ev, 9, dets=[(g1, box(10, 10, 20), 2, 0.6)])  # no gt: one FP
    rows = ev.per_image()
    assert [r["image_id"] for r in rows] == [7, 8, 9]
    assert [r["file_name"] for r in rows] == ["img7.png", "img8.png", "img9.png"]
    r7 = rows[0]
    assert (r7["gt"], r7["tp50"], r7["fp50"], r7["fn50"]) == (2, 1, 1, 1)
    assert r7["ious"] == pytest.approx([324 / 476])
    empty = {"gt": 0, "tp50": 0, "fp50": 0, "fn50": 0, "ious": []}
    assert {k: rows[1][k] for k in empty} == empty
    assert (rows[2]["gt"], rows[2]["fp50"]) == (0, 1)


def test_per_class_ap_follows_category_ids_not_their_order():
    # COCOeval sorts category ids: class "a" has id 7, "b" id 3; only "a" is found. "c" (id 5)
    # has no gt, only a false positive: no AP (None), and left out of the mean
    ev = CocoEvaluator(["bg", "a", "b", "c"], category_ids=[7, 3, 5])
    ga, gb = square(5, 5, 20), square(30, 40, 20)
    dets = [(ga, box(5, 5, 20), 1, 0.9), (gb, box(30, 40, 20), 3, 0.95)]
    add(ev, 1, gts=[(ga, 1), (gb, 2)], dets=dets)
    s = ev.compute()
    assert s["per_class"]["c"] == {"mask_ap": None, "box_ap": None, "mask_ap50": None}
    assert s["per_class"]["a"]["mask_ap"] == pytest.approx(1.0, abs=1e-6)
    assert s["per_class"]["a"]["mask_ap50"] == pytest.approx(1.0, abs=1e-6)
    assert s["per_class"]["b"] == {"mask_ap": 0.0, "box_ap": 0.0, "mask_ap50": 0.0}
    assert s["mask_ap"] == pytest.approx(0.5, abs=1e-6)  # mean over the two classes
    assert {c["id"]: c["name"] for c in ev.gt_json()["categories"]} == {7: "a", 3: "b", 5: "c"}
    assert [d["category_id"] for d in ev.detections()] == [7, 5]


def test_small_object_scores_small_not_medium():
    ev = CocoEvaluator(["bg", "cell"])
    g = square(5, 5, 20)  # area 400 < 32^2: small
    add(ev, 1, gts=[(g, 1)], dets=[(g, box(5, 5, 20), 1, 0.9)])
    s = ev.compute()
    assert s["mask_ap_small"] == pytest.approx(1.0, abs=1e-6)
    assert s["box_ap_small"] == pytest.approx(1.0, abs=1e-6)
    assert s["mask_ap_medium"] is None and s["mask_ap_large"] is None
    assert ev.gt_json()["annotations"][0]["area"] == 400.0


def test_segm_area_ranges_use_the_detection_mask_area_not_its_box():
    # An unmatched detection outside an area range is ignored there (COCOeval.evaluateImg). The
    # FP is an L of mask area 40 + 39 - 1 = 78 (small) in a 39x40 box (1560, medium): for "segm"
    # its area is the mask's, so it is ignored in "medium" and mask AP medium stays 1; for
    # "bbox" it is a medium FP scored above the TP: box AP medium .5.
    ev = CocoEvaluator(["bg", "cell"])
    g = square(5, 5, 40)
    ell = np.zeros((H, W), np.uint8)
    ell[10:50, 40] = 1  # rows 10..49 of column 40
    ell[49, 40:79] = 1  # columns 40..78 of row 49
    assert ell.sum() == 78
    dets = [(g, box(5, 5, 40), 1, 0.5), (ell, [40, 10, 79, 50], 1, 0.9)]
    add(ev, 1, gts=[(g, 1)], dets=dets)
    s = ev.compute()
    assert s["mask_ap_medium"] == pytest.approx(1.0, abs=1e-6)
    assert s["box_ap_medium"] == pytest.approx(0.5, abs=1e-6)


def test_ar100_counts_more_than_one_detection_per_image():
    # two objects, two exact detections: AR with 100 detections 1, (AR with 1 would be .5)
    ev = CocoEvaluator(["bg", "cell"])
    a, b = square(5, 5, 20), square(30, 50, 20)
    dets = [(a, box(5, 5, 20), 1, 0.9), (b, box(30, 50, 20), 1, 0.8)]
    add(ev, 1, gts=[(a, 1), (b, 1)], dets=dets)
    assert ev.compute()["mask_ar100"] == pytest.approx(1.0, abs=1e-6)


def test_no_detections_gives_zero_and_no_images_gives_none():
    ev = CocoEvaluator(["bg", "cell"])
    add(ev, 1, gts=[(square(5, 5, 40), 1)])
    add(ev, 2)  # an image without gt
    s = ev.compute()
    assert s["mask_ap"] == 0.0 and s["box_ap"] == 0.0 and s["mask_ar100"] == 0.0
    assert s["per_class"]["cell"]["mask_ap"] == 0.0
    assert ev.detections() == []
    s = CocoEvaluator(["bg", "cell"]).compute()
    assert s["mask_ap"] is None and s["images"] == 0


def test_gt_json_rle_round_trip_and_box_from_mask():
    ev = CocoEvaluator(["bg", "cell"])
    g = np.zeros((H, W), np.uint8)
    g[3:10, 50:75] = 1  # not symmetric, near the right edge
    g[3, 20] = 1
    add(ev, 4, gts=[(g, 1)], dets=[(g, [20, 3, 75, 10], 1, 0.3)])
    d = ev.gt_json()
    assert d["images"] == [{"id": 4, "file_name": "img4.png", "height": H, "width": W}]
    (ann,) = d["annotations"]
    assert ann["id"] >= 1 and ann["iscrowd"] == 0 and ann["category_id"] == 1
    assert isinstance(ann["segmentation"]["counts"], str)
    assert np.array_equal(mask_utils.decode(ann["segmentation"]), g)
    assert ann["bbox"] == [20.0, 3.0, 55.0, 7.0] and ann["area"] == float(g.sum())
    (det,) = ev.detections()
    assert np.array_equal(mask_utils.decode(det["segmentation"]), g)
    assert det["bbox"] == [20.0, 3.0, 55.0, 7.0]  # xyxy -> xywh
    assert det["file_name"] == "img4.png" and det["score"] == 0.3
    assert json.loads(json.dumps(d)) == d  # JSON-ready
    assert json.loads(json.dumps(ev.detections())) == ev.detections()


def test_detections_round_trip_through_pycocotools(tmp_path):
    rng = np.random.default_rng(0)
    ev = CocoEvaluator(["bg", "a", "b"])
    for i in range(3):
        gts = [(square(*rng.integers(0, 30, 2), int(rng.integers(8, 30))), int(rng.integers(1, 3)))]
        dets = []
        for _ in range(3):
            y, x, s = *rng.integers(0, 30, 2), int(rng.integers(8, 30))
            dets.append((square(y, x, s), box(y, x, s), int(rng.integers(1, 3)), rng.random()))
        add(ev, i + 1, gts=gts, dets=dets)
    s = ev.compute()
    path = tmp_path / "results.json"
    results_json(ev, path)
    gt_file = tmp_path / "gt.json"
    gt_file.write_text(json.dumps(ev.gt_json()))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        for prefix, iou_type in (("mask", "segm"), ("box", "bbox")):
            res = json.loads(path.read_text())
            if iou_type == "segm":
                res = [{k: v for k, v in r.items() if k != "bbox"} for r in res]
            e = COCOeval(gt, gt.loadRes(res), iou_type)
            e.evaluate()
            e.accumulate()
            e.summarize()
            assert s[f"{prefix}_ap"] == pytest.approx(max(e.stats[0], 0.0))
            assert s[f"{prefix}_ap50"] == pytest.approx(max(e.stats[1], 0.0))
            assert s[f"{prefix}_ar100"] == pytest.approx(max(e.stats[8], 0.0))


def test_add_rejects_bad_input():
    ev = CocoEvaluator(["bg", "cell"])
    with pytest.raises(SegcliError, match=r"img1.png.*gt_masks has shape \(1, 10, 10\)"):
        add(ev, 1, gts=[(square(0, 0, 3, 10, 10), 1)])
    with pytest.raises(SegcliError, match="gt_labels has 2, expected 1..1"):
        add(ev, 1, gts=[(square(0, 0, 3), 2)])
    with pytest.raises(SegcliError, match="pred_masks must be binary"):
        add(ev, 1, dets=[(square(0, 0, 3) * 0.7, box(0, 0, 3), 1, 0.5)])
    add(ev, 1)
    with pytest.raises(SegcliError, match="image_id 1 was added before"):
        add(ev, 1)
    with pytest.raises(SegcliError, match="category_ids"):
        CocoEvaluator(["bg", "a"], category_ids=[1, 2])


def test_paste_semantic_overlap_and_threshold():
    m = np.zeros((3, 4, 5), np.float32)
    m[0, :2, :] = 0.9  # label 1, score .2 (lowest)
    m[1, 1:3, :] = 0.6  # label 2, score .9 (highest): on top at row 1
    m[2, :, 0] = 0.4  # label 3: under the threshold everywhere
    out = paste_semantic(m, np.array([1, 2, 3]), np.array([0.2, 0.9, 0.5]))
    expected = np.zeros((4, 5), np.int64)
    expected[0] = 1
    expected[1:3] = 2
    assert out.dtype == np.int64 and np.array_equal(out, expected)
    low = paste_semantic(m, np.array([1, 2, 3]), np.array([0.2, 0.9, 0.5]), threshold=0.3)
    # label 3 (score .5) now covers column 0: above label 1 (.2) at row 0, under label 2 (.9)
    assert np.array_equal(low[:, 0], [3, 2, 2, 3]) and np.array_equal(low[:, 1:], expected[:, 1:])
    assert np.array_equal(paste_semantic(np.zeros((0, 4, 5)), [], []), np.zeros((4, 5)))


def test_instance_id_map_order_and_limits():
    m = np.zeros((3, 2, 3), np.uint8)
    m[0, 0, :] = 1  # score .1: rank 3
    m[1, :, 0] = 1  # score .8: rank 1, on top at (0, 0)
    m[2, 1, 1:] = 1  # score .5: rank 2
    out = instance_id_map(m, np.array([0.1, 0.8, 0.5]))
    assert out.dtype == np.uint16
    assert np.array_equal(out, [[1, 3, 3], [1, 2, 2]])
    assert np.array_equal(instance_id_map(np.zeros((0, 2, 3)), []), np.zeros((2, 3)))
    with pytest.raises(SegcliError, match="65535"):
        instance_id_map(np.zeros((65536, 1, 1), np.uint8), np.zeros(65536))
