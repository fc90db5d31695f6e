"""task=instance data: ``SyntheticInstances`` (every drawn shape an object, later shapes occluding
earlier ones, the union the semantic mask), and ``build_instance_datasets`` on composed configs:
``InstanceDataset`` samples (shapes, dtypes, tight boxes, seeded augmentation),
``instance_collate``, a tiny COCO export, labelme split folders and the one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segcli.config import compose_config, to_plain
from segcli.data.instance_datasets import build_instance_datasets, instance_collate
from segcli.data.synthetic import SyntheticDataset, SyntheticInstances
from segcli.errors import SegcliError


def build(*overrides: str, splits=("train", "val"), seed: int = 0):
    """``build_instance_datasets`` on the config of ``segcli train task=instance OVERRIDES``."""
    cfg = to_plain(compose_config(["task=instance", *overrides]))
    return build_instance_datasets(cfg, splits, seed)


def tight_boxes(masks: np.ndarray) -> np.ndarray:
    """``(K, 4)`` x1, y1, x2, y2 of ``(K, H, W)`` masks, x2/y2 = last column/row + 1."""
    out = []
    for m in masks:
        rows, cols = np.nonzero(m)
        out.append([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
    return np.array(out, np.float32).reshape(-1, 4)


def touching(a: np.ndarray, b: np.ndarray) -> bool:
    """A pixel of ``a`` 4-adjacent to a pixel of ``b`` (both (H, W) bool)."""
    grown = a.copy()
    grown[1:] |= a[:-1]
    grown[:-1] |= a[1:]
    grown[:, 1:] |= a[:, :-1]
    grown[:, :-1] |= a[:, 1:]
    return bool((grown & b).any())


# ---------------------------------------------------------------- SyntheticInstances


@pytest.mark.parametrize("split", ["train", "val"])
def test_synthetic_objects_paste_into_the_semantic_mask(split):
    source = SyntheticInstances(12, (64, 80), split)
    semantic = SyntheticDataset(12, (64, 80), split, None)
    for i in range(12):
        image, ann = source.load(i)
        sem_image, sem_mask = semantic.render(i)
        assert np.array_equal(image, sem_image)
        pasted = np.zeros((64, 80), np.int64)
        for mask, label in zip(ann.masks, ann.labels):
            pasted[mask == 1] = label
        assert np.array_equal(pasted, sem_mask), i
        assert ann.masks.dtype == np.uint8 and ann.labels.dtype == np.int64
        assert ann.masks.sum(axis=0).max() <= 1  # disjoint
        assert not ann.iscrowd.any()


def test_synthetic_objects_are_the_visible_parts_of_the_drawn_shapes():
    # independently: a shape's object is what no later shape covers; a covered shape is none
    # (train image 39 at 64x64 draws 3 shapes, one of them covered entirely)
    source = SyntheticInstances(40, (64, 64), "train")
    assert len(source.images.render_shapes(39)[1]) == 3 and len(source.load(39)[1].labels) == 2
    for i in [*range(12), 39]:
        _, shapes = source.images.render_shapes(i)
        expected_masks, expected_labels = [], []
        for k, (cls, on) in enumerate(shapes):
            later = np.zeros_like(on)
            for _, other in shapes[k + 1 :]:
                later |= other
            if (on & ~later).any():
                expected_masks.append(on & ~later)
                expected_labels.append(cls)
        _, ann = source.load(i)
        assert ann.labels.tolist() == expected_labels
        assert np.array_equal(
            ann.masks.astype(bool), np.array(expected_masks).reshape(ann.masks.shape)
        )


def test_some_synthetic_objects_touch():
    source = SyntheticInstances(32, (128, 128), "train")
    found = []
    for i in range(32):
        masks = source.load(i)[1].masks.astype(bool)
        pairs = [(a, b) for a in range(len(masks)) for b in range(a + 1, len(masks))]
        if any(touching(masks[a], masks[b]) for a, b in pairs):
            found.append(i)
    assert found, "no image of the first 32 has two touching objects"


def test_touching_helper():
    a = np.zeros((3, 4), bool)
    b = np.zeros((3, 4), bool)
    a[1, 1], b[1, 2] = True, True
    assert touching(a, b)
    b[1, 2], b[2, 2] = False, True  # diagonal only
    assert not touching(a, b)


# ---------------------------------------------------------------- InstanceDataset


@pytest.mark.parametrize("augmentation", ["none", "light"])
def test_samples_shapes_dtypes_and_tight_boxes(augmentation):
    info, data, counts = build(
        f"augmentation={augmentation}",
        "dataset.num_train=4",
        "dataset.num_val=2",
        "dataset.image_size=[50,70]",
        "dataset.crop_size=[40,48]",
    )
    assert info.class_names == ["background", "disc", "square", "triangle"]
    assert counts["train"].pixels.sum() > 0  # objects per class of the training split
    for split in ("train", "val"):
        for i in range(len(data[split])):
            s = data[split][(0, i)]
            image, t = s["image"], s["target"]
            assert image.dtype == torch.float32 and image.shape[0] == 3
            h, w = image.shape[1:]
            assert h % 32 == 0 and w % 32 == 0
            k = len(t["labels"])
            assert t["masks"].shape == (k, h, w) and t["masks"].dtype == torch.uint8
            assert t["boxes"].shape == (k, 4) and t["boxes"].dtype == torch.float32
            assert t["labels"].dtype == torch.int64
            assert ((t["labels"] >= 1) & (t["labels"] <= 3)).all()
            assert t["masks"].amax(dim=(1, 2)).eq(1).all()  # no empty mask survives
            assert np.array_equal(t["boxes"].numpy(), tight_boxes(t["masks"].numpy()))
            assert s["size"] == (50, 70) and s["name"] == f"{split}_{i:05d}"
    eval_sample = data["val"][0]
    assert eval_sample["image"].shape == (3, 64, 96)  # 50x70 padded bottom/right to 32s


def test_none_preset_keeps_the_source_objects():
    _, data, _ = build("augmentation=none", "dataset.num_train=3", "dataset.image_size=[64,64]")
    source = SyntheticInstances(3, (64, 64), "train")
    for i in range(3):
        _, ann = source.load(i)
        t = data["train"][i]["target"]
        assert np.array_equal(t["masks"].numpy(), ann.masks)
        assert np.array_equal(t["labels"].numpy(), ann.labels)


def test_light_augmentation_is_a_function_of_epoch_and_index():
    args = ("augmentation=light", "dataset.num_train=4", "dataset.image_size=[64,64]")
    _, data, _ = build(*args, "dataset.crop_size=[64,64]")
    _, again, _ = build(*args, "dataset.crop_size=[64,64]")
    train = data["train"]
    for i in range(4):
        a, b = train[(3, i)], again["train"][(3, i)]
        assert torch.equal(a["image"], b["image"])
        for key in ("masks", "boxes", "labels"):
            assert torch.equal(a["target"][key], b["target"][key])
        assert torch.equal(train[(3, i)]["image"], a["image"])  # asked twice: the same
    differs = [not torch.equal(train[(0, i)]["image"], train[(1, i)]["image"]) for i in range(4)]
    assert all(differs)
    # the eval split is not augmented: any epoch gives the same sample
    assert torch.equal(data["val"][(0, 1)]["image"], data["val"][(7, 1)]["image"])


def test_collate_pads_images_and_keeps_targets():
    _, small, _ = build("augmentation=none", "dataset.num_train=1", "dataset.image_size=[40,60]")
    _, large, _ = build("augmentation=none", "dataset.num_train=1", "dataset.image_size=[70,33]")
    a, b = small["train"][0], large["train"][0]  # images 64x64 and 96x64
    batch = instance_collate([a, b])
    assert batch["image"].shape == (2, 3, 96, 64) and batch["image"].dtype == torch.float32
    assert torch.equal(batch["image"][0, :, :64, :64], a["image"])
    assert not batch["image"][0, :, 64:].any()
    assert torch.equal(batch["image"][1], b["image"])
    assert batch["targets"][0] is a["target"] and batch["targets"][1] is b["target"]
    assert batch["targets"][0]["masks"].shape[1:] == (64, 64)
    assert batch["name"] == ["train_00000", "train_00000"]
    assert batch["size"] == [(40, 60), (70, 33)] and batch["image_id"] == [1, 1]


# ---------------------------------------------------------------- COCO and labelme folders


def write_png(path: Path, h: int, w: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(path)


def coco_export(root: Path) -> None:
    """train.json: a.png (6x8) with an apple square, b.png (6x8) with a zebra square, c.png (4x5)
    without objects; categories listed zebra (id 9) before apple (id 5)."""
    for name, (h, w) in {"a.png": (6, 8), "b.png": (6, 8), "c.png": (4, 5)}.items():
        write_png(root / "images" / name, h, w)
    data = {
        "images": [
            {"id": 3, "file_name": "a.png", "width": 8, "height": 6},
            {"id": 4, "file_name": "b.png", "width": 8, "height": 6},
            {"id": 8, "file_name": "c.png", "width": 5, "height": 4},
        ],
        "categories": [{"id": 9, "name": "zebra"}, {"id": 5, "name": "apple"}],
        # polygons in pixel edges (COCO): columns 2..5 x rows 1..3; columns 0..2 x rows 3..5
        "annotations": [
            {"id": 1, "image_id": 3, "category_id": 5, "segmentation": [[2, 1, 6, 1, 6, 4, 2, 4]]},
            {"id": 2, "image_id": 4, "category_id": 9, "segmentation": [[0, 3, 3, 3, 3, 6, 0, 6]]},
        ],
    }
    (root / "train.json").write_text(json.dumps(data))


def test_coco_export_through_the_config(tmp_path):
    coco_export(tmp_path)
    info, data, counts = build(
        "dataset=coco",
        f"dataset.root={tmp_path}",
        "dataset.annotations.train=train.json",
        "dataset.images.train=images",
        "augmentation=none",
        splits=("train",),
    )
    assert info.class_names == ["background", "apple", "zebra"] and info.num_classes == 3
    assert data["train"].source.category_ids == [5, 9]
    assert counts == {}
    a, b, c = (data["train"][i] for i in range(3))
    expected = np.zeros((32, 32), np.uint8)
    expected[1:4, 2:6] = 1
    assert np.array_equal(a["target"]["masks"].numpy(), expected[None])
    assert a["target"]["labels"].tolist() == [1] and a["image_id"] == 3
    assert a["target"]["boxes"].tolist() == [[2.0, 1.0, 6.0, 4.0]]
    assert b["target"]["labels"].tolist() == [2]
    assert b["target"]["boxes"].tolist() == [[0.0, 3.0, 3.0, 6.0]]
    assert c["target"]["masks"].shape == (0, 32, 32) and c["target"]["boxes"].shape == (0, 4)
    assert c["target"]["labels"].shape == (0,) and c["name"] == "c" and c["size"] == (4, 5)


def labelme_file(folder: Path, stem: str, shapes: list[tuple[str, list]]) -> None:
    """``folder/stem.json`` beside ``stem.png`` (8x10) with polygon ``shapes`` (label, points)."""
    write_png(folder / f"{stem}.png", 8, 10)
    entries = [{"label": label, "points": pts, "shape_type": "polygon"} for label, pts in shapes]
    doc = {"shapes": entries, "imagePath": f"{stem}.png", "imageHeight": 8, "imageWidth": 10}
    (folder / f"{stem}.json").write_text(json.dumps(doc))


SQUARE = [[1, 1], [4, 1], [4, 4], [1, 4]]


def test_labelme_val_takes_the_train_classes(tmp_path):
    labelme_file(tmp_path / "train", "t0", [("dog", SQUARE), ("cat", [[5, 5], [8, 5], [8, 7]])])
    labelme_file(tmp_path / "val", "v0", [("dog", SQUARE)])  # no cat in val
    info, data, _ = build(
        "dataset=labelme", f"dataset.root={tmp_path}", "augmentation=none", splits=("val", "train")
    )
    assert info.class_names == ["background", "cat", "dog"]
    assert data["val"].source.class_names == ["background", "cat", "dog"]
    assert data["val"][0]["target"]["labels"].tolist() == [2]  # dog, as in train
    assert data["train"][0]["target"]["labels"].tolist() == [2, 1]


def test_missing_root_folder_is_one_line_naming_dataset_root(tmp_path):
    with pytest.raises(SegcliError) as info:
        build("dataset=coco", f"dataset.root={tmp_path / 'nowhere'}", splits=("train",))
    message = str(info.value)
    assert message.startswith("dataset.root=") and "nowhere" in message and "\n" not in message


def test_labelme_root_without_val_folder(tmp_path):
    labelme_file(tmp_path / "train", "t0", [("dog", SQUARE)])
    with pytest.raises(SegcliError) as info:
        build("dataset=labelme", f"dataset.root={tmp_path}")
    message = str(info.value)
    assert str(tmp_path / "val") in message and "found: train" in message
    assert "\n" not in message


def test_coco_val_with_fewer_categories_keeps_the_train_classes(tmp_path):
    coco_export(tmp_path)
    val = json.loads((tmp_path / "train.json").read_text())
    val["images"] = val["images"][1:2]
    val["annotations"] = val["annotations"][1:]
    val["categories"] = [{"id": 9, "name": "zebra"}]
    (tmp_path / "val.json").write_text(json.dumps(val))
    overrides = ["dataset.annotations.train=train.json", "dataset.annotations.val=val.json"]
    try:
        _, data, _ = build(
            "dataset=coco",
            f"dataset.root={tmp_path}",
            *overrides,
            "dataset.images.train=images",
            "dataset.images.val=images",
            "augmentation=none",
        )
    except SegcliError as exc:  # refusing the mismatch in one line is fine too
        assert "val.json" in str(exc) and "\n" not in str(exc)
        return
    assert data["val"].source.class_names == ["background", "apple", "zebra"]
    assert data["val"][0]["target"]["labels"].tolist() == [2]


def test_data_check_reads_every_image_and_counts_objects_and_pixels(tmp_path):
    from segcli.data.datasets import check_dataset

    coco_export(tmp_path)
    (tmp_path / "images" / "b.png").write_bytes(b"not a png")  # zebra's image, unreadable
    cfg = to_plain(
        compose_config(
            [
                "task=instance",
                "dataset=coco",
                f"dataset.root={tmp_path}",
                "dataset.annotations.train=train.json",
                "dataset.images.train=images",
                "dataset.annotations.val=train.json",
                "dataset.images.val=images",
            ]
        )
    )
    result = check_dataset(cfg)  # task=instance: the instance data's check
    assert result["class_names"] == ["background", "apple", "zebra"]
    assert set(result["splits"]) == {"train", "val"}  # no test annotations: no test split
    train = result["splits"]["train"]
    assert (train["images"], train["bad"]) == (2, 1)
    assert train["sizes"] == {"4x5": 1, "6x8": 1}
    assert train["objects"] == [0, 1, 0] and train["crowd"] == 0
    assert train["class_pixels"] == [36 + 20, 12, 0]  # a: 48 pixels, its apple 12; c: 20
    assert len(result["problems"]) == 2 and all("b.png" in p for p in result["problems"])
