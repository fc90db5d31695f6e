"""``segcli data doctor`` on instance annotations (data/instance_doctor.py through doctor.diagnose):
a COCO JSON with its image folder, COCO's official layout, labelme split folders (and a flat one),
VOC SegmentationObject beside the semantic VOC tree, Cityscapes instanceIds. Each tree is written
here, tiny, with hand-counted objects; each proposed command is composed and opened as training
opens it."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from helpers import segcli
from PIL import Image

from segcli.config import compose_config, to_plain
from segcli.data import instance_doctor
from segcli.data.doctor import diagnose
from segcli.data.instance_datasets import open_sources

VOC_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [64] * (3 * 253)
H, W = 8, 10


def write_rgb(path: Path, h: int = H, w: int = W) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), (10, 20, 30), np.uint8)).save(path)


def coco(images: list[str], objects: dict[str, list[tuple[int, int]]]) -> dict:
    """A COCO JSON of 10x8 images; ``objects[file] = [(category_id, iscrowd), ...]``, each a
    polygon (crowd: an uncompressed RLE). Categories: person (id 1), car (id 3)."""
    anns = []
    for i, name in enumerate(images):
        for cat, crowd in objects.get(name, []):
            segm = {"size": [H, W], "counts": [50, 4, 26]} if crowd else [[1, 1, 4, 1, 4, 3, 1, 3]]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cat,
                         "iscrowd": crowd, "area": 4, "segmentation": segm})  # fmt: skip
    return {
        "images": [{"id": i + 1, "file_name": n, "width": W, "height": H}
                   for i, n in enumerate(images)],
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
        "annotations": anns,
    }  # fmt: skip


def opened(command: str) -> dict[str, int]:
    """The images per split training opens with the doctor's ``segcli train ...`` command."""
    overrides = command.removeprefix("segcli train ").split(" ")
    group = to_plain(compose_config(overrides))["dataset"]
    return {s: len(src) for s, src in open_sources(group, ("train", "val")).items()}


def test_a_coco_json_with_an_image_folder_is_named_with_its_overrides(tmp_path):
    root = tmp_path / "export"
    for name in ("a.png", "b.png", "c.png"):
        write_rgb(root / "images" / name)
    train = coco(["a.png", "b.png"], {"a.png": [(1, 0), (3, 0), (3, 1)]})  # b: no objects
    (root / "train.json").write_text(json.dumps(train))
    (root / "val.json").write_text(json.dumps(coco(["c.png"], {"c.png": [(1, 0), (1, 0)]})))
    found = diagnose(root)
    assert (found.builtin, found.task, found.usable, found.config) == ("coco", "instance", True, {})
    assert found.command == (
        f"segcli train task=instance dataset=coco dataset.root={root} "
        "dataset.annotations.train=train.json dataset.images.train=images "
        "dataset.annotations.val=val.json dataset.images.val=images"
    )
    assert "COCO JSON: train: train.json + images/, val: val.json + images/" in found.findings
    assert (
        "train: 2 images, 2 classes; objects: person 1, car 1 (+1 crowd region)" in found.findings
    )
    assert "val: 1 image, 2 classes; objects: person 2" in found.findings
    assert opened(found.command) == {"train": 2, "val": 1}

    (root / "val.json").unlink()  # one JSON: it is val too, and the report says so
    found = diagnose(root)
    assert found.usable and found.command.endswith(
        "dataset.annotations.val=train.json dataset.images.val=images"
    )
    assert any(line.startswith("note: one annotation file, train.json") for line in found.findings)

    (root / "images" / "b.png").unlink()  # the reader's error, naming the file
    found = diagnose(root)
    assert not found.usable and any("b.png: image of train.json" in p for p in found.problems)


def test_an_export_with_a_json_in_each_split_folder(tmp_path):
    root = tmp_path / "rf"  # Roboflow's COCO export: train/ and valid/, JSON beside the images
    for folder, names in (("train", ["a.jpg", "b.jpg"]), ("valid", ["c.jpg"])):
        for name in names:
            write_rgb(root / folder / name)
        data = coco(names, {names[0]: [(3, 0)]})
        (root / folder / "_annotations.coco.json").write_text(json.dumps(data))
    found = diagnose(root)
    assert found.usable, found.problems
    assert found.command == (
        f"segcli train task=instance dataset=coco dataset.root={root} "
        "dataset.annotations.train=train/_annotations.coco.json "
        "dataset.annotations.val=valid/_annotations.coco.json"
    )
    assert "val: 1 image, 2 classes; objects: car 1" in found.findings
    assert opened(found.command) == {"train": 2, "val": 1}


def coco_layout(root: Path) -> Path:
    for split, names in (("train", ["1.jpg", "2.jpg", "3.jpg", "4.jpg"]), ("val", ["5.jpg"])):
        for name in names:
            write_rgb(root / f"{split}2017" / name)
        data = coco(names, {n: [(1, 0)] for n in names})
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(data))
    return root


def test_the_official_coco_layout_counts_the_first_images_and_skips_large_files(
    tmp_path, monkeypatch
):
    root = coco_layout(tmp_path / "coco")
    found = diagnose(root)
    assert (found.builtin, found.usable) == ("coco", True), found.problems
    assert found.command == f"segcli train task=instance dataset=coco dataset.root={root}"
    assert found.findings[0] == (
        "COCO layout: annotations/instances_train2017.json + train2017/, "
        "annotations/instances_val2017.json + val2017/"
    )  # 4 train images, SAMPLE=3 of them counted: 3 persons
    assert "train: 4 images, 2 classes; objects in the first 3: person 3" in found.findings
    assert opened(found.command) == {"train": 4, "val": 1}

    size = (root / "annotations" / "instances_train2017.json").stat().st_size
    monkeypatch.setattr(instance_doctor, "SNIFF_LIMIT", size - 1)  # train's JSON is "large"
    found = diagnose(root)
    assert found.usable, found.problems
    assert (
        "train: 4 image files; instances_train2017.json (0 MiB) not opened here (large)"
        in found.findings
    )
    assert not any(line.startswith("train: 4 images") for line in found.findings)
    assert "val: 1 image, 2 classes; objects: person 1" in found.findings

    (root / "train2017").rename(root / "elsewhere")
    found = diagnose(root)
    assert not found.usable
    assert found.problems == [
        f"{root / 'train2017'}: image folder of instances_train2017.json is missing"
    ]


def labelme_file(folder: Path, name: str, shapes: list[tuple[str, int | None]]) -> None:
    """``name.json`` and its 10x8 ``name.png``: one square polygon per ``(label, group_id)``."""
    write_rgb(folder / f"{name}.png")
    square = [[1, 1], [3, 1], [3, 3], [1, 3]]
    data = {"version": "5.5.0", "flags": {}, "imagePath": f"{name}.png", "imageData": None,
            "imageHeight": H, "imageWidth": W,
            "shapes": [{"label": label, "points": square, "group_id": g, "shape_type": "polygon"}
                       for label, g in shapes]}  # fmt: skip
    (folder / f"{name}.json").write_text(json.dumps(data))


def test_labelme_split_folders_and_a_flat_folder(tmp_path):
    root = tmp_path / "lm"
    labelme_file(root / "train", "a", [("cat", 1), ("cat", 1), ("cat", None), ("dog", None)])
    labelme_file(root / "train", "b", [("dog", None)])
    labelme_file(root / "val", "c", [("cat", None)])
    found = diagnose(root)
    assert (found.builtin, found.usable) == ("labelme", True), found.problems
    assert found.command == f"segcli train task=instance dataset=labelme dataset.root={root}"
    # the two cat shapes of group 1 are one object
    assert "train: 2 images, 2 classes; objects: cat 2, dog 2" in found.findings
    assert "val: 1 image, 2 classes; objects: cat 1" in found.findings
    assert opened(found.command) == {"train": 2, "val": 1}

    labelme_file(root / "val", "c", [("bird", None)])  # val takes train's classes, as training
    found = diagnose(root)
    assert not found.usable and any(
        "c.json: label 'bird' is not a class" in p for p in found.problems
    )

    flat = tmp_path / "flat"
    labelme_file(flat, "a", [("cat", None)])
    found = diagnose(flat)
    assert (found.builtin, found.usable) == ("labelme", False)
    assert found.problems == [
        (
            f"{flat}: labelme JSON files directly in the folder; dataset=labelme reads one "
            "folder per split: move each JSON with its image into train/ and val/ under it"
        )
    ]


def palette_png(path: Path, indices: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(indices.astype(np.uint8), mode="P")
    im.putpalette(VOC_PALETTE)
    im.save(path)


def test_voc_object_masks_are_named_beside_the_semantic_voc_dataset(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2012"
    objects = np.zeros((H, W), np.uint8)
    objects[0:3, 0:3], objects[4:8, 5:9], objects[:, 4] = 1, 2, 255  # two objects, void border
    classes = np.where(objects == 1, 15, np.where(objects == 2, 7, 0)).astype(np.uint8)
    classes[:, 4] = 255
    for name in ("2007_000001", "2007_000002"):
        write_rgb(root / "JPEGImages" / f"{name}.jpg")
        palette_png(root / "SegmentationObject" / f"{name}.png", objects)
        palette_png(root / "SegmentationClass" / f"{name}.png", classes)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000001\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000002\n")
    found = diagnose(tmp_path)
    assert (found.builtin, found.task, found.usable) == ("voc", "semantic", True), found.problems
    assert found.command == f"segcli train dataset=voc dataset.root={tmp_path}"
    command = f"segcli train task=instance dataset=voc_instances dataset.root={root}"
    assert f"train instances with: {command}" in found.findings
    assert "instances, train: 1 image, 20 classes; objects: car 1, person 1" in found.findings
    assert opened(command) == {"train": 1, "val": 1}


def test_cityscapes_instance_ids_without_semantic_labels(tmp_path):
    root = tmp_path / "cityscapes"
    ids = np.full((H, W), 7, np.uint16)  # road
    ids[0, 0:2], ids[1:3, 4], ids[3, :], ids[5, 5] = 26000, 26001, 24, 24000
    for split, city in (("train", "aachen"), ("val", "bonn")):
        stem = f"{city}_000000_000019"
        write_rgb(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
        (root / "gtFine" / split / city).mkdir(parents=True)
        cv2.imwrite(str(root / "gtFine" / split / city / f"{stem}_gtFine_instanceIds.png"), ids)
    found = diagnose(root)  # the semantic cityscapes layout, but no labelIds: the instances win
    assert (found.builtin, found.task, found.usable) == ("cityscapes_instances", "instance", True)
    assert found.command == (
        f"segcli train task=instance dataset=cityscapes_instances dataset.root={root}"
    )
    # 26000, 26001: two cars; 24000: a person; 24 (a group of persons) is no object
    assert "train: 1 image, 8 classes; objects: person 1, car 2" in found.findings
    assert any(
        line.startswith("note: not usable as dataset=cityscapes: ") for line in found.findings
    )
    assert opened(found.command) == {"train": 1, "val": 1}


def test_the_cli_says_to_train_with_task_instance(tmp_path):
    root = coco_layout(tmp_path / "coco")
    r = segcli("data", "doctor", str(root), "--json", "doctor.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "- val: 1 image, 2 classes; objects: person 1" in r.stdout
    assert (
        f"usable; train with: segcli train task=instance dataset=coco dataset.root={root}"
        in r.stdout.replace("\n", "")
    )
    saved = json.loads((tmp_path / "doctor.json").read_text())
    assert (saved["builtin"], saved["usable"], saved["command"]) == ("coco", True, r_command(root))


def r_command(root: Path) -> str:
    return f"segcli train task=instance dataset=coco dataset.root={root}"
