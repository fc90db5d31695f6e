"""weak/readers.py (``read_labels``): COCO bbox JSON, VOC XML, YOLO txt, point CSV/JSON, labelme
points and lines, scribble PNGs, against boxes and pixels computed by hand from tiny files, and the
one-line errors naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from segcli.errors import SegcliError
from segcli.weak.readers import LabelSpec, read_labels

IGNORE = 255
SPEC = LabelSpec(
    class_names=["background", "Cat", "dog"],
    ignore_index=IGNORE,
    image_sizes={"a": (8, 10), "b": (6, 12)},  # (H, W)
)


def user_error(fragment: str, *args) -> str:
    """The one-line SegcliError of ``read_labels(*args)``, which contains ``fragment``."""
    with pytest.raises(SegcliError) as info:
        read_labels(*args)
    message = str(info.value)
    assert "\n" not in message, message
    assert fragment in message, message
    return message


# boxes: COCO --------------------------------------------------------------------------------


def coco(tmp_path: Path, categories=None, annotations=None) -> Path:
    """2 images (one without annotations), 3 boxes, categories 7 "CAT" and 3 "Dog"."""
    data = {
        "images": [
            {"id": 1, "file_name": "train/a.jpg", "width": 10, "height": 8},
            {"id": 5, "file_name": "b.png", "width": 12, "height": 6},
            {"id": 9, "file_name": "c.png", "width": 4, "height": 4},
        ][: 2 if annotations is None else 3],
        "annotations": annotations
        or [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 2, 3, 4], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [0.5, 0, 20, 5], "iscrowd": 1},
            {"id": 3, "image_id": 1, "category_id": 7, "bbox": [6, 7, 1, 1]},
        ],
        "categories": categories or [{"id": 7, "name": "CAT"}, {"id": 3, "name": "Dog"}],
    }
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_boxes_are_x_plus_w_edges_clipped_with_classes_by_name(tmp_path):
    labels = read_labels("boxes", coco(tmp_path), SPEC)
    assert set(labels) == {"a", "b"}
    np.testing.assert_array_equal(
        labels["a"].boxes, [[1, 2, 4, 6], [0.5, 0, 10, 5], [6, 7, 7, 8]]
    )  # the second clipped from x2 = 20.5 to the width 10 (crowd kept)
    np.testing.assert_array_equal(labels["a"].box_classes, [1, 2, 1])
    assert labels["a"].boxes.dtype == np.float32 and labels["a"].sparse is None
    assert labels["b"].boxes.shape == (0, 4) and labels["b"].box_classes.shape == (0,)


def test_coco_unknown_category_is_named(tmp_path):
    path = coco(tmp_path, categories=[{"id": 7, "name": "CAT"}, {"id": 3, "name": "horse"}])
    message = user_error("'horse'", "boxes", path, SPEC)
    assert str(path) in message and "background, Cat, dog" in message


def test_coco_image_not_in_training_images_counts_them(tmp_path):
    annotations = [{"id": 1, "image_id": 9, "category_id": 7, "bbox": [0, 0, 1, 1]}]
    path = coco(tmp_path, annotations=annotations)
    message = user_error("'c'", "boxes", path, SPEC)
    assert str(path) in message and "1 of the 3 labelled images" in message


def test_coco_box_outside_the_image_is_degenerate(tmp_path):
    annotations = [{"id": 4, "image_id": 1, "category_id": 7, "bbox": [10, 2, 3, 3]}]
    path = coco(tmp_path, annotations=annotations)
    spec = LabelSpec(SPEC.class_names, IGNORE, {**SPEC.image_sizes, "c": (4, 4)})
    user_error(f"{path}: annotation 4", "boxes", path, spec)


# boxes: VOC ---------------------------------------------------------------------------------


def voc_xml(width=10, height=8, objects=((1, 1, 3, 4, "cat"),)) -> str:
    objs = "".join(
        f"<object><name>{n}</name><difficult>1</difficult><bndbox><xmin>{a}</xmin>"
        f"<ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>"
        for a, b, c, d, n in objects
    )
    return (
        "<annotation><filename>a.jpg</filename><size><width>"
        f"{width}</width><height>{height}</height><depth>3</depth></size>{objs}</annotation>"
    )


def test_voc_boxes_are_one_based_inclusive(tmp_path):
    (tmp_path / "a.xml").write_text(voc_xml(objects=((1, 1, 3, 4, "cat"), (5, 2, 10, 8, "DOG"))))
    (tmp_path / "b.xml").write_text(voc_xml(12, 6, ()))
    labels = read_labels("boxes", tmp_path, SPEC)
    # xmin=1 is the first column: edge 0; xmax=3 the third: edge 3 (3 pixels wide)
    np.testing.assert_array_equal(labels["a"].boxes, [[0, 0, 3, 4], [4, 1, 10, 8]])
    np.testing.assert_array_equal(labels["a"].box_classes, [1, 2])  # difficult kept
    assert labels["b"].boxes.shape == (0, 4)


def test_voc_size_mismatch_and_truncated_xml_name_the_file(tmp_path):
    (tmp_path / "a.xml").write_text(voc_xml(width=11))
    message = user_error(str(tmp_path / "a.xml"), "boxes", tmp_path, SPEC)
    assert "11x8" in message and "10x8" in message
    (tmp_path / "a.xml").write_text(voc_xml()[:40])
    message = user_error(str(tmp_path / "a.xml"), "boxes", tmp_path, SPEC)
    assert "XML" in message


# boxes: YOLO --------------------------------------------------------------------------------


def test_yolo_boxes_with_classes_txt_names(tmp_path):
    (tmp_path / "classes.txt").write_text("dog\ncat\n")  # another order than class_names
    (tmp_path / "a.txt").write_text("0 0.5 0.5 0.2 0.25\n\n1 0.1 0.9 0.4 0.5\n")
    labels = read_labels("boxes", tmp_path, SPEC)
    # W=10, H=8: centre (5, 4) size (2, 2); centre (1, 7.2) size (4, 4), clipped
    np.testing.assert_allclose(labels["a"].boxes, [[4, 3, 6, 5], [0, 5.2, 3, 8]], atol=1e-5)
    np.testing.assert_array_equal(labels["a"].box_classes, [2, 1])


def test_yolo_without_names_skips_background_and_reads_data_yaml(tmp_path):
    labels_dir = tmp_path / "labels" / "train"
    labels_dir.mkdir(parents=True)
    (labels_dir / "b.txt").write_text("0 0.5 0.5 0.5 1\n1 0.25 0.5 0.5 0.5\n")
    labels = read_labels("boxes", labels_dir, SPEC)
    np.testing.assert_allclose(labels["b"].boxes, [[3, 0, 9, 6], [0, 1.5, 6, 4.5]], atol=1e-5)
    np.testing.assert_array_equal(labels["b"].box_classes, [1, 2])  # id 0 -> Cat, 1 -> dog
    (tmp_path / "data.yaml").write_text("names: {0: dog, 1: cat}\n")  # Ultralytics layout
    np.testing.assert_array_equal(read_labels("boxes", labels_dir, SPEC)["b"].box_classes, [2, 1])


def test_yolo_bad_line_and_unknown_image_name_file_and_line(tmp_path):
    (tmp_path / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n1 0.5 0.5 1.5 0.2\n")
    user_error(f"{tmp_path / 'a.txt'}:2", "boxes", tmp_path, SPEC)
    (tmp_path / "a.txt").write_text("0 0.5 0.5 0.2\n")
    user_error(f"{tmp_path / 'a.txt'}:1", "boxes", tmp_path, SPEC)
    (tmp_path / "a.txt").write_text("0 0.5 x 0.2 0.2\n")
    user_error(f"{tmp_path / 'a.txt'}:1", "boxes", tmp_path, SPEC)
    (tmp_path / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "zz.txt").write_text("")
    (tmp_path / "zy.txt").write_text("")
    message = user_error("'zy'", "boxes", tmp_path, SPEC)
    assert str(tmp_path / "zy.txt") in message and "2 of the 3 labelled images" in message


# points -------------------------------------------------------------------------------------


def expected_points(pixels: dict[str, dict[tuple[int, int], int]]) -> dict[str, np.ndarray]:
    out = {}
    for key, by_pixel in pixels.items():
        out[key] = np.full(SPEC.image_sizes[key], IGNORE, np.int64)
        for (row, col), cls in by_pixel.items():
            out[key][row, col] = cls
    return out


POINTS = {"a": {(2, 9): 1, (7, 0): 2}, "b": {(5, 3): 0}}  # (row, column): class


def assert_points(labels, pixels=POINTS) -> None:
    assert set(labels) == set(pixels)
    for key, mask in expected_points(pixels).items():
        assert labels[key].sparse.dtype == np.int64
        np.testing.assert_array_equal(labels[key].sparse, mask)
        assert labels[key].boxes.shape == (0, 4)


def test_points_csv_by_name_and_index(tmp_path):
    path = tmp_path / "points.csv"
    path.write_text(
        "x,image,extra,y,Label\n9.7,a.png,-,2.2,cat\n0,a,-,7.99,2\n3,train/b.jpg,-,5,Background\n"
        "5,a.png,-,5,dog\n5,a,-,5,0\n"  # the later point wins
    )
    assert_points(read_labels("points", path, SPEC), {**POINTS, "a": {**POINTS["a"], (5, 5): 0}})


def test_points_json_list_and_mapping(tmp_path):
    path = tmp_path / "points.json"
    path.write_text(
        json.dumps(
            [
                {"image": "a.png", "x": 9.7, "y": 2.2, "class": "CAT"},
                {"image": "a", "x": 0, "y": 7.5, "class": 2},
                {"image": "b", "x": 3.5, "y": 5.0, "class": "background"},
            ]
        )
    )
    assert_points(read_labels("points", path, SPEC))
    path.write_text(json.dumps({"a.png": [[9.7, 2.2, "cat"], [0, 7.5, 2]], "b": [[3, 5, 0]]}))
    assert_points(read_labels("points", path, SPEC))


def test_point_outside_and_unknown_class_are_named(tmp_path):
    path = tmp_path / "points.json"
    path.write_text(json.dumps({"a": [[1, 1, 1], [10, 3, 1]]}))  # x = W is outside
    user_error(f"{path}: 'a'[1]", "points", path, SPEC)
    path.write_text(json.dumps([{"image": "a", "x": 1, "y": 8, "class": 1}]))  # y = H
    user_error(f"{path}: entry 0", "points", path, SPEC)
    path.write_text(json.dumps([{"image": "a", "x": 1, "y": 1, "class": 3}]))
    user_error(f"{path}: entry 0", "points", path, SPEC)
    csv = tmp_path / "points.csv"
    csv.write_text("image,x,y,class\na,1,1,cat\nq,1,1,horse\n")
    user_error(f"{csv}: image 'q' is not a training image (1 of the 2", "points", csv, SPEC)
    csv.write_text("image,x,y,class\na,1,1,cat\na,1,1,horse\n")
    user_error(f"{csv}:3", "points", csv, SPEC)


# labelme points and lines -------------------------------------------------------------------


def labelme(folder: Path, stem: str, shapes: list[tuple[str, str, list]], image=None) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / f"{stem}.json"
    data = {
        "version": "5.5.0",
        "shapes": [
            {"label": label, "points": points, "shape_type": kind, "group_id": None}
            for label, kind, points in shapes
        ],
        "imagePath": image or f"{stem}.jpg",
    }
    path.write_text(json.dumps(data))
    return path


def test_labelme_points_ignore_other_shapes(tmp_path):
    labelme(
        tmp_path, "x", [("cat", "point", [[9.7, 2.2]]), ("dog", "point", [[0.4, 7.6]])], "a.png"
    )
    labelme(tmp_path, "b", [("background", "point", [[3, 5]]), ("dog", "line", [[0, 0], [3, 3]])])
    assert_points(read_labels("points", tmp_path, SPEC))


def test_labelme_lines_are_polylines_of_scribble_width_and_points_circles(tmp_path):
    line = [[1, 1], [7.9, 1.2], [7, 6]]
    labelme(tmp_path, "a", [("Cat", "linestrip", line), ("dog", "point", [[1, 6]])])
    labelme(tmp_path, "b", [("dog", "line", [[2, 3], [9, 3]]), ("cat", "polygon", [[0, 0]])])
    (tmp_path / "a.png").write_bytes(b"")  # labelme's image beside its JSON: not a scribble PNG
    spec = LabelSpec(SPEC.class_names, IGNORE, SPEC.image_sizes, scribble_width=3)
    labels = read_labels("scribbles", tmp_path, spec)
    a = np.full((8, 10), IGNORE, np.int32)
    pts = np.array([[1, 1], [7, 1], [7, 6]], np.int32).reshape(-1, 1, 2)  # floored
    cv2.polylines(a, [pts], False, 1, thickness=2, lineType=cv2.LINE_8)
    a[5:8, 1] = a[6, 0:3] = 2  # the point: a filled circle 3 pixels wide (a cross), over the line
    np.testing.assert_array_equal(labels["a"].sparse, a)
    b = np.full((6, 12), IGNORE, np.int64)
    b[2:5, 1:11] = 2  # a horizontal line 3 pixels wide (round caps one pixel past its ends)
    b[2, 1] = b[4, 1] = b[2, 10] = b[4, 10] = IGNORE
    np.testing.assert_array_equal(labels["b"].sparse, b)
    assert labels["b"].sparse.dtype == np.int64
    wide = LabelSpec(SPEC.class_names, IGNORE, SPEC.image_sizes, scribble_width=5)
    rows = np.nonzero(read_labels("scribbles", tmp_path, wide)["b"].sparse[:, 5] == 2)[0]
    np.testing.assert_array_equal(rows, [1, 2, 3, 4, 5])


def test_labelme_unknown_label_names_the_file(tmp_path):
    path = labelme(tmp_path, "a", [("horse", "line", [[0, 0], [3, 3]])])
    message = user_error("'horse'", "scribbles", tmp_path, SPEC)
    assert str(path) in message and "background, Cat, dog" in message


# scribble PNGs ------------------------------------------------------------------------------


def decode(path: Path) -> np.ndarray:
    """The dataset's decoding of these PNGs: 0 -> ignore, k -> class k - 1."""
    raw = np.array(Image.open(path)).astype(np.int64)
    return np.where(raw == 0, IGNORE, raw - 1)


def test_scribble_pngs_decoded_and_sized(tmp_path):
    raw = np.zeros((8, 10), np.uint8)
    raw[1, 2:5], raw[6, 7] = 2, 3
    Image.fromarray(raw).save(tmp_path / "a.png")
    spec = LabelSpec(SPEC.class_names, IGNORE, SPEC.image_sizes, decode_mask=decode)
    labels = read_labels("scribbles", tmp_path, spec)
    expected = np.full((8, 10), IGNORE)
    expected[1, 2:5], expected[6, 7] = 1, 2
    np.testing.assert_array_equal(labels["a"].sparse, expected)
    assert set(labels) == {"a"}
    user_error(str(tmp_path), "scribbles", tmp_path, SPEC)  # no decode_mask
    Image.fromarray(np.zeros((10, 8), np.uint8)).save(tmp_path / "a.png")
    message = user_error(str(tmp_path / "a.png"), "scribbles", tmp_path, spec)
    assert "10x8" in message or "(10, 8)" in message


# kinds and paths ----------------------------------------------------------------------------


def test_tags_masks_and_unknown_paths(tmp_path):
    user_error("docs/weak-labels.md", "tags", tmp_path, SPEC)
    user_error("masks", "masks", tmp_path, SPEC)
    (tmp_path / "notes.md").write_text("")
    user_error("a COCO .json file", "boxes", tmp_path, SPEC)
    user_error(".csv or .json", "points", tmp_path / "notes.md", SPEC)
    user_error("labelme", "scribbles", tmp_path / "missing", SPEC)
