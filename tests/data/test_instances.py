"""data/instances.py (the instance readers): COCO JSON (polygon, both RLEs, crowd, non-contiguous
ids, an image without objects, the one-line errors), labelme (shapes, group_id, imageData), VOC
SegmentationObject, Cityscapes instanceIds, boxes, the format guess and COCO's split files. Masks
are checked pixel by pixel against what each test drew."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from segcli.data.instances import (
    CityscapesInstanceSource,
    CocoSource,
    LabelmeSource,
    VocInstanceSource,
    boxes_from_masks,
    coco_split_files,
    detect_instance_format,
)
from segcli.errors import SegcliError

H, W = 8, 10  # the COCO test image


def write_rgb(path: Path, h: int, w: int, value=(10, 20, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)


def box(h: int, w: int, rows: slice, cols: slice) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[rows, cols] = 1
    return m


def coco_json(tmp_path: Path) -> dict:
    """Image 1 (10x8 RGB): a person polygon, a car crowd region as uncompressed RLE, a person as
    compressed RLE, two degenerate annotations; image 2 (6x5 gray): no objects."""
    write_rgb(tmp_path / "images" / "one.png", H, W)
    Image.fromarray(np.full((5, 6), 77, np.uint8)).save(tmp_path / "images" / "two.png")
    compressed = mask_utils.encode(np.asfortranarray(box(H, W, slice(5, 7), slice(7, 10))))
    compressed["counts"] = compressed["counts"].decode()
    # column 6, rows 2..5: column-major (Fortran) index 6 * 8 + 2 = 50, 4 pixels, 26 zeros after
    uncompressed = {"size": [H, W], "counts": [50, 4, 26]}
    return {
        "images": [
            {"id": 11, "file_name": "one.png", "width": W, "height": H},
            {"id": 42, "file_name": "two.png", "width": 6, "height": 5},
        ],
        "categories": [{"id": 7, "name": "car"}, {"id": 3, "name": "person"}],
        "annotations": [
            {"id": 1, "image_id": 11, "category_id": 3, "iscrowd": 0, "area": 6.0,
             "segmentation": [[1, 1, 4, 1, 4, 3, 1, 3]]},
            {"id": 2, "image_id": 11, "category_id": 7, "iscrowd": 1, "area": 4,
             "segmentation": uncompressed},
            {"id": 3, "image_id": 11, "category_id": 3, "iscrowd": 0, "area": 6,
             "segmentation": compressed},
            {"id": 4, "image_id": 11, "category_id": 7, "iscrowd": 0, "area": 0,
             "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]},
            {"id": 5, "image_id": 11, "category_id": 7, "iscrowd": 0, "area": 1,
             "segmentation": [[0, 0, 2, 2]]},
        ],
    }  # fmt: skip


def coco_source(tmp_path: Path, data: dict, class_names=None) -> CocoSource:
    (tmp_path / "ann.json").write_text(json.dumps(data))
    return CocoSource(tmp_path / "ann.json", tmp_path / "images", class_names)


def test_coco_masks_labels_crowd_and_an_image_without_objects(tmp_path):
    source = coco_source(tmp_path, coco_json(tmp_path))
    assert source.class_names == ["background", "person", "car"]  # ids 3, 7 sorted -> 1, 2
    assert source.category_ids == [3, 7]
    assert len(source) == 2
    assert [source.name(0), source.file_name(0), source.image_id(0)] == ["one", "one.png", 11]
    image, ann = source.load(0)
    assert image.shape == (H, W, 3) and image.dtype == np.uint8 and (image == (10, 20, 30)).all()
    assert ann.masks.dtype == np.uint8 and ann.masks.shape == (3, H, W)
    np.testing.assert_array_equal(ann.masks[0], box(H, W, slice(1, 3), slice(1, 4)))  # polygon
    np.testing.assert_array_equal(ann.masks[1], box(H, W, slice(2, 6), slice(6, 7)))  # RLE list
    np.testing.assert_array_equal(ann.masks[2], box(H, W, slice(5, 7), slice(7, 10)))  # RLE str
    assert ann.labels.tolist() == [1, 2, 1] and ann.labels.dtype == np.int64
    assert ann.iscrowd.tolist() == [False, True, False] and ann.iscrowd.dtype == bool
    image, ann = source.load(1)  # grayscale file -> RGB; no annotations -> K = 0
    assert image.shape == (5, 6, 3) and (image == 77).all()
    assert ann.masks.shape == (0, 5, 6) and ann.labels.shape == (0,) and ann.iscrowd.shape == (0,)
    assert source.image_id(1) == 42


def test_coco_class_names_restrict_and_order_the_categories(tmp_path):
    source = coco_source(tmp_path, coco_json(tmp_path), ["background", "car", "person"])
    assert source.class_names == ["background", "car", "person"]
    assert source.category_ids == [7, 3]
    _, ann = source.load(0)
    assert ann.labels.tolist() == [2, 1, 2]
    only_car = coco_source(tmp_path, coco_json(tmp_path), ["car"])
    _, ann = only_car.load(0)
    assert only_car.class_names == ["background", "car"] and ann.labels.tolist() == [1]
    np.testing.assert_array_equal(ann.masks[0], box(H, W, slice(2, 6), slice(6, 7)))
    with pytest.raises(SegcliError, match="'dog' is not a category"):
        coco_source(tmp_path, coco_json(tmp_path), ["car", "dog"])


def _break(data: dict, what: str) -> str | dict:
    if what == "not json":
        return "{not json"
    if what == "no categories":
        del data["categories"]
    elif what == "unknown image":
        data["annotations"][0]["image_id"] = 99
    elif what == "unknown category":
        data["annotations"][0]["category_id"] = 5
    elif what == "missing image":
        data["images"][1]["file_name"] = "three.png"
    return data


@pytest.mark.parametrize(
    ("what", "message"),
    [
        ("not json", "ann.json: not a JSON file"),
        ("no categories", 'ann.json: no "categories" list'),
        ("unknown image", "ann.json: annotation 1 has image_id 99, not in images"),
        ("unknown category", "ann.json: annotation 1 has category_id 5, not in categories"),
        ("missing image", "three.png: image of ann.json .image id 42. is missing"),
    ],
)
def test_coco_errors_are_one_line_and_name_the_file(tmp_path, what, message):
    data = _break(coco_json(tmp_path), what)
    (tmp_path / "ann.json").write_text(data if isinstance(data, str) else json.dumps(data))
    with pytest.raises(SegcliError, match=message) as caught:
        CocoSource(tmp_path / "ann.json", tmp_path / "images")
    assert "\n" not in str(caught.value)


def test_coco_an_image_of_another_size_than_its_json_is_an_error(tmp_path):
    data = coco_json(tmp_path)
    data["images"][1]["width"] = 7
    source = coco_source(tmp_path, data)
    with pytest.raises(SegcliError, match=r"two.png: image is 6x5 .* says 7x5"):
        source.load(1)


def labelme_file(folder: Path, name: str, shapes: list, image_path: str, **extra) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    data = {"version": "5.5.0", "flags": {}, "shapes": shapes, "imagePath": image_path,
            "imageData": None, **extra}  # fmt: skip
    (folder / f"{name}.json").write_text(json.dumps(data))


def shape(label, points, kind="polygon", group_id=None) -> dict:
    return {"label": label, "points": points, "group_id": group_id, "shape_type": kind}


def labelme_folder(tmp_path: Path) -> Path:
    """a.json (12x10 image file): a cat polygon, a dog rectangle, a cat of two polygons
    (group_id 1), a dog with group_id 1 (another object), a point, a circle; b.json: the image
    only as imageData (4x3), one dog polygon."""
    folder = tmp_path / "labelme"
    write_rgb(folder / "a.png", 10, 12, (1, 2, 3))
    square = [[0, 0], [1, 0], [1, 1], [0, 1]]
    shapes = [
        shape("cat", [[1, 1], [4, 1], [4, 4], [1, 4]]),
        shape("dog", [[9, 8], [6, 6]], "rectangle"),
        shape("cat", [[x, y + 7] for x, y in square], group_id=1),
        shape("dog", [[x + 10, y] for x, y in square], group_id=1),
        shape("tree", [[5, 5]], "point"),
        shape("cat", [[x + 3, y + 7] for x, y in square], group_id=1),
        shape("cat", [[6, 2], [8, 2]], "circle"),
    ]
    labelme_file(folder, "a", shapes, "a.png", imageHeight=10, imageWidth=12)
    buffer = io.BytesIO()
    Image.fromarray(np.full((3, 4, 3), (200, 100, 50), np.uint8)).save(buffer, format="PNG")
    labelme_file(folder, "b", [shape("dog", [[0, 0], [2, 0], [2, 2]])], "../gone/b.png",
                 imageData=base64.b64encode(buffer.getvalue()).decode())  # fmt: skip
    return folder


def test_labelme_shapes_group_ids_and_classes(tmp_path):
    source = LabelmeSource(labelme_folder(tmp_path))
    assert source.class_names == ["background", "cat", "dog"]  # "tree" is only a point
    assert source.category_ids == [1, 2]
    assert [source.name(0), source.file_name(0), source.image_id(0)] == ["a", "a.png", 1]
    image, ann = source.load(0)
    assert image.shape == (10, 12, 3) and (image == (1, 2, 3)).all()
    assert ann.labels.tolist() == [1, 2, 1, 2, 1]
    assert not ann.iscrowd.any()
    np.testing.assert_array_equal(ann.masks[0], box(10, 12, slice(1, 5), slice(1, 5)))
    np.testing.assert_array_equal(ann.masks[1], box(10, 12, slice(6, 9), slice(6, 10)))
    grouped = box(10, 12, slice(7, 9), slice(0, 2)) | box(10, 12, slice(7, 9), slice(3, 5))
    np.testing.assert_array_equal(ann.masks[2], grouped)  # group_id 1 + cat: one object
    np.testing.assert_array_equal(ann.masks[3], box(10, 12, slice(0, 2), slice(10, 12)))
    rows, cols = np.mgrid[:10, :12]
    distance = np.hypot(cols - 6, rows - 2)  # circle: centre (6, 2), radius 2
    circle = ann.masks[4].astype(bool)
    assert circle[distance <= 1.5].all() and not circle[distance > 2.5].any()


def test_labelme_reads_image_data_when_the_image_file_is_missing(tmp_path):
    source = LabelmeSource(labelme_folder(tmp_path))
    image, ann = source.load(1)
    assert source.file_name(1) == "b.png"
    assert image.shape == (3, 4, 3) and (image == (200, 100, 50)).all()
    triangle = np.array([[1, 1, 1, 0], [0, 1, 1, 0], [0, 0, 1, 0]], np.uint8)  # (0,0)(2,0)(2,2)
    np.testing.assert_array_equal(ann.masks[0], triangle)
    assert ann.labels.tolist() == [2]


def test_labelme_errors(tmp_path):
    folder = labelme_folder(tmp_path)
    with pytest.raises(SegcliError, match=r"a.json: label 'cat' is not a class"):
        LabelmeSource(folder, ["background", "dog"])
    labelme_file(folder, "a", [], "a.png", imageHeight=9, imageWidth=12)
    with pytest.raises(SegcliError, match=r"a.json: image is 12x10 .* says 12x9"):
        LabelmeSource(folder).load(0)
    labelme_file(folder, "b", [], "gone.png")
    with pytest.raises(SegcliError, match=r"b.json: image .*gone.png is missing"):
        LabelmeSource(folder).load(1)


VOC_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [64] * (3 * 253)


def palette_png(path: Path, indices: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(indices.astype(np.uint8), mode="P")
    im.putpalette(VOC_PALETTE)
    im.save(path)


def test_voc_objects_take_their_majority_class_and_void_is_no_object(tmp_path):
    write_rgb(tmp_path / "JPEGImages" / "a.jpg", 6, 8)
    objects = np.zeros((6, 8), np.uint8)
    objects[0:3, 0:3] = 1
    objects[3:6, 5:8] = 2
    objects[:, 4] = 255  # void boundary
    classes = np.where(objects == 1, 15, np.where(objects == 2, 7, 0)).astype(np.uint8)
    classes[0, 0] = 8  # one cat pixel in the person: the majority (person) wins
    classes[1, 1] = 255  # void in the class map: not counted, still the object's pixel
    classes[3:5, 5:8] = 255  # the car: 6 void pixels, 3 car pixels (void does not vote)
    classes[:, 4] = 255
    classes[0:3, 4] = 15  # void in the object map (no object) over person pixels
    palette_png(tmp_path / "SegmentationObject" / "a.png", objects)
    palette_png(tmp_path / "SegmentationClass" / "a.png", classes)
    (tmp_path / "ImageSets" / "Segmentation").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Segmentation" / "val.txt").write_text("a\n\n")
    source = VocInstanceSource(tmp_path, "val")
    assert len(source) == 1 and source.name(0) == "a" and source.file_name(0) == "a.jpg"
    assert source.class_names[15] == "person" and len(source.class_names) == 21
    assert source.category_ids == list(range(1, 21))
    image, ann = source.load(0)
    assert image.shape == (6, 8, 3)
    assert ann.labels.tolist() == [15, 7]
    np.testing.assert_array_equal(ann.masks[0], box(6, 8, slice(0, 3), slice(0, 3)))
    np.testing.assert_array_equal(ann.masks[1], box(6, 8, slice(3, 6), slice(5, 8)))
    assert not ann.masks[:, :, 4].any()
    with pytest.raises(SegcliError, match=r"train.txt: missing"):
        VocInstanceSource(tmp_path, "train")


def test_cityscapes_instance_ids(tmp_path):
    stem = "aachen_000000_000019"
    write_rgb(tmp_path / "leftImg8bit" / "train" / "aachen" / f"{stem}_leftImg8bit.png", 4, 6)
    ids = np.full((4, 6), 7, np.uint16)  # road
    ids[0, 0:2] = 26001
    ids[1:3, 4] = 26002
    ids[3, :] = 24  # a group of persons: no instance
    ids[2, 0] = 24000  # the first person instance (index 0)
    gt = tmp_path / "gtFine" / "train" / "aachen"
    gt.mkdir(parents=True)
    cv2.imwrite(str(gt / f"{stem}_gtFine_instanceIds.png"), ids)
    source = CityscapesInstanceSource(tmp_path, "train")
    assert source.class_names[1:4] == ["person", "rider", "car"] and len(source.class_names) == 9
    assert source.category_ids == [24, 25, 26, 27, 28, 31, 32, 33]
    assert [source.name(0), source.file_name(0)] == [stem, f"{stem}_leftImg8bit.png"]
    image, ann = source.load(0)
    assert image.shape == (4, 6, 3)
    assert ann.labels.tolist() == [1, 3, 3]
    np.testing.assert_array_equal(ann.masks[0], box(4, 6, slice(2, 3), slice(0, 1)))
    np.testing.assert_array_equal(ann.masks[1], box(4, 6, slice(0, 1), slice(0, 2)))
    np.testing.assert_array_equal(ann.masks[2], box(4, 6, slice(1, 3), slice(4, 5)))
    with pytest.raises(SegcliError, match=r"gtFine/val: no CITY/\*_gtFine_instanceIds.png"):
        CityscapesInstanceSource(tmp_path, "val")


def test_boxes_are_pixel_edges():
    masks = np.zeros((3, 8, 10), np.uint8)
    masks[0, 5, 3] = 1
    masks[1, 1:3, 2:5] = 1
    boxes = boxes_from_masks(masks)
    assert boxes.dtype == np.float32 and boxes.shape == (3, 4)
    assert boxes.tolist() == [[3, 5, 4, 6], [2, 1, 5, 3], [0, 0, 0, 0]]
    assert boxes_from_masks(np.zeros((0, 8, 10), np.uint8)).shape == (0, 4)


def test_detect_instance_format(tmp_path):
    (tmp_path / "coco" / "annotations").mkdir(parents=True)
    (tmp_path / "coco" / "annotations" / "instances_val2017.json").write_text("{}")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "train.json").write_text('{"images": [], "annotations": []}')
    (tmp_path / "voc" / "SegmentationObject").mkdir(parents=True)
    (tmp_path / "cs" / "gtFine" / "val" / "bonn").mkdir(parents=True)
    (tmp_path / "cs" / "gtFine" / "val" / "bonn" / "b_gtFine_instanceIds.png").write_bytes(b"")
    labelme_folder(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "other.json").write_text('{"images": []}')
    found = {d: detect_instance_format(tmp_path / d) for d in
             ("coco", "plain", "voc", "cs", "labelme", "empty", "nowhere")}  # fmt: skip
    assert found == {"coco": "coco", "plain": "coco", "voc": "voc_instances",
                     "cs": "cityscapes_instances", "labelme": "labelme", "empty": None,
                     "nowhere": None}  # fmt: skip


def test_coco_split_files(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text("{}")
    (tmp_path / "val2017").mkdir()
    assert coco_split_files(tmp_path, "val") == (
        tmp_path / "annotations" / "instances_val2017.json",
        tmp_path / "val2017",
    )
    (tmp_path / "annotations" / "instances_train2014.json").write_text("{}")
    with pytest.raises(SegcliError, match=r"train2014: image folder of instances_train2014.json"):
        coco_split_files(tmp_path, "train")
    (tmp_path / "train2014").mkdir()
    assert coco_split_files(tmp_path, "train")[1] == tmp_path / "train2014"
    with pytest.raises(SegcliError, match=r"annotations: no instances_test\*.json"):
        coco_split_files(tmp_path, "test")
