"""The data side of weak labels without a training run: the ``weak`` group's and the dataset keys'
checks, the layouts that leave the training masks out when label files replace them, the training
images' folder of each layout, and ``PseudoMaskDataset`` over a folder of training masks."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import write_pair

from segcli.data.layouts import find_split_files, train_image_folder
from segcli.data.masks import encode_training_mask, training_mask_decoder
from segcli.data.readers import PseudoMaskDataset
from segcli.data.settings import DatasetSettings
from segcli.errors import SegcliError
from segcli.weak.settings import WeakSettings, check_weak, weak_kind


def settings(**values) -> DatasetSettings:
    return DatasetSettings.from_config({"kind": "folder", "root": "/nowhere", **values})


@pytest.mark.parametrize(
    ("group", "message"),
    [
        ({"fill": "snake"}, "weak.fill=snake: expected one of box, box_i, grabcut, crf"),
        ({"inner_share": 0}, "weak.inner_share=0.0: expected a share in (0, 1]"),
        ({"inner_share": 1.5}, "weak.inner_share=1.5: expected a share in (0, 1]"),
        ({"rounds": 0}, "weak.rounds=0: expected an integer >= 1"),
        ({"rounds": "2"}, "weak.rounds=2: expected a int"),
        ({"crf_confidence": 0.5}, "weak.crf_confidence=0.5: expected a probability in (0.5, 1)"),
        ({"min_area": -1}, "weak.min_area=-1: expected pixels >= 0"),
        ({"round": 2}, "weak.round: unknown key; expected one of fill, inner_share"),
    ],
)
def test_a_wrong_weak_value_is_one_line_naming_the_key(group, message):
    with pytest.raises(SegcliError) as info:
        WeakSettings.from_config(group)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_the_weak_defaults_are_the_yaml_files():
    from omegaconf import OmegaConf

    from segcli.config import config_dir

    group = OmegaConf.to_container(OmegaConf.load(config_dir() / "weak" / "default.yaml"))
    assert WeakSettings.from_config(group) == WeakSettings()


@pytest.mark.parametrize(
    ("values", "weak", "message"),
    [
        ({"labels": "tags", "weak_labels": "t.csv"}, {}, "dataset.labels=tags: image-level tags"),
        ({"simulate": "boxes", "labels": "points"}, {}, "dataset.simulate=boxes derives labels"),
        ({"simulate": "points", "point_labels": 3}, {}, "dataset.point_labels=3 and dataset.sim"),
        ({"labels": "boxes"}, {}, "dataset.labels=boxes: dataset.weak_labels is not set"),
        ({"simulate": "boxes", "background_class": 3}, {}, "dataset.background_class=3: expected"),
        ({"simulate": "points"}, {"rounds": 2}, "weak.rounds=2: rounds refine predictions inside"),
    ],
)
def test_the_dataset_keys_of_weak_labels_are_checked_together(values, weak, message):
    with pytest.raises(SegcliError) as info:
        check_weak(settings(**values), WeakSettings.from_config(weak), 3)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_synthetic_data_can_only_simulate_and_the_kind_follows_the_keys():
    synthetic = DatasetSettings.from_config({"kind": "synthetic", "labels": "boxes"})
    with pytest.raises(SegcliError, match="expected dataset.simulate=boxes"):
        check_weak(synthetic, WeakSettings(), 4)
    assert weak_kind(settings()) is None
    assert weak_kind(settings(simulate="scribbles")) == "scribbles"
    assert weak_kind(settings(labels="points", weak_labels="p.csv")) == "points"
    check_weak(settings(simulate="boxes"), WeakSettings(rounds=3), 3)  # boxes take rounds


def test_label_files_leave_the_training_masks_unread_in_split_folders(segnet_root: Path):
    import shutil

    shutil.rmtree(segnet_root / "trainannot")
    base = {"layout": "segnet", "root": str(segnet_root), "num_classes": 3}
    with pytest.raises(SegcliError, match="trainannot"):
        find_split_files(settings(**base), 0)
    weak = settings(**base, labels="boxes", weak_labels="b.json")
    files = find_split_files(weak, 0)
    assert sorted(files.pairs) == ["test", "val"] and len(files.pairs["val"]) == 3
    assert train_image_folder(weak) == segnet_root / "train"
    assert train_image_folder(settings(**base, weak_images="val")) == segnet_root / "val"
    with pytest.raises(SegcliError, match="set dataset.weak_images"):
        train_image_folder(settings(**base, weak_images="nothing"))


def test_label_files_need_a_validation_split_with_masks(tmp_path: Path):
    for i in range(3):
        write_pair(tmp_path / "images", tmp_path / "masks", f"x{i}", 8, 8, 2, seed=i)
    flat = settings(root=str(tmp_path), labels="boxes", weak_labels="b.json")
    with pytest.raises(SegcliError, match="needs a validation split with full masks"):
        find_split_files(flat, 0)
    folder = settings(root=str(tmp_path))
    assert train_image_folder(settings(root=str(tmp_path), weak_images="images")) == (
        tmp_path / "images"
    )
    with pytest.raises(SegcliError, match="training images not found"):
        train_image_folder(folder)  # images/train does not exist


def test_the_pseudo_mask_dataset_reads_the_images_that_have_a_training_mask(tmp_path: Path):
    images = []
    for i in range(3):
        write_pair(tmp_path / "img", tmp_path / "unused", f"n{i}", 6, 5, 3, seed=i)
        images.append(tmp_path / "img" / f"n{i}.jpg")
    masks = tmp_path / "masks"
    masks.mkdir()
    a = np.array([[0, 1, 2, 9, 9]] * 6)  # 9: ignore_index
    for name in ("n0", "n2"):
        cv2.imwrite(str(masks / f"{name}.png"), encode_training_mask(a, 3, 9))
    ds = PseudoMaskDataset(images, masks, training_mask_decoder(3, 9), lambda **kw: kw)
    assert len(ds) == 2 and [ds.name(i) for i in range(2)] == ["n0", "n2"]
    image, mask, name = ds.load(1)
    assert name == "n2" and image.shape == (6, 5, 3)
    np.testing.assert_array_equal(mask, a)
    stats = ds.class_pixels(3)
    assert stats.pixels.tolist() == [12, 12, 12] and stats.present.tolist() == [36, 36, 36]
    cv2.imwrite(str(masks / "n0.png"), encode_training_mask(a[:5], 3, 9))
    with pytest.raises(SegcliError, match=r"n0.png: training mask is 5x5 \(WxH\); expected"):
        ds.load(0)
