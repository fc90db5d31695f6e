"""inference/instance_predict.py: a task=instance checkpoint's detections as the files predict
writes: COCO results entries with the dataset's own category ids and xywh boxes, the semantic
mask pasted by score, and the overlay's colours per object."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from pycocotools import mask as mask_utils

from segcli.inference.instance_predict import InstancePredictor, draw_instances


def predictor(category_ids=(3, 7, 11)) -> InstancePredictor:
    loaded = SimpleNamespace(
        config={"task": {"mask_threshold": 0.5, "score_threshold": 0.05}},
        ctx=None,
        transform=lambda: None,
        classes=SimpleNamespace(
            class_names=["background", "disc", "square", "triangle"],
            colors=[[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]],
        ),
        category_ids=list(category_ids),
    )
    return InstancePredictor(loaded)


def detections() -> dict:
    masks = np.zeros((2, 20, 30), np.uint8)
    masks[0, 2:8, 3:13] = 1  # square (class 2): rows 2..7, columns 3..12
    masks[1, 5:15, 10:20] = 1  # disc (class 1), overlapping it
    return {
        "masks": masks,
        "probabilities": masks.astype(np.float32),
        "boxes": np.array([[3, 2, 13, 8], [10, 5, 20, 15]], np.float32),
        "labels": np.array([2, 1]),
        "scores": np.array([0.9, 0.6], np.float32),
    }


def test_results_use_the_datasets_category_ids_xywh_boxes_and_decodable_rles():
    entries = predictor().results(detections(), image_id=42, file_name="a.png")
    assert [e["category_id"] for e in entries] == [7, 3]  # classes 2 and 1 -> COCO ids 7 and 3
    assert entries[0]["bbox"] == [3.0, 2.0, 10.0, 6.0] and entries[1]["bbox"] == [
        10.0,
        5.0,
        10.0,
        10.0,
    ]
    assert all(e["image_id"] == 42 and e["file_name"] == "a.png" for e in entries)
    decoded = mask_utils.decode(
        {**entries[0]["segmentation"], "counts": entries[0]["segmentation"]["counts"].encode()}
    )
    assert np.array_equal(decoded, detections()["masks"][0])
    assert [round(e["score"], 6) for e in entries] == [0.9, 0.6]


def test_semantic_mask_pastes_by_score_and_the_overlay_colours_each_object():
    p, det = predictor(), detections()
    semantic = p.semantic(det, 20, 30)
    assert semantic.dtype == np.uint8 and semantic[6, 11] == 2  # the overlap: the higher score
    assert semantic[12, 15] == 1 and semantic[0, 0] == 0
    image = np.zeros((20, 30, 3), np.uint8)
    drawn = draw_instances(image, det, p.class_names, alpha=1.0, scores=False)
    inside_first, inside_second = drawn[4, 6], drawn[12, 15]
    assert inside_first.any() and inside_second.any()
    assert not np.array_equal(inside_first, inside_second)  # one colour per object
    assert np.array_equal(drawn[18, 28], [0, 0, 0])  # background untouched
