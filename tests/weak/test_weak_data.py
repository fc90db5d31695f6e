"""The data side of weak labels without a training run: the ``weak`` group's and the dataset keys'
checks, the layouts that leave the training masks out when label files replace them, the training
images' folder of each layout, and ``PseudoMaskDataset`` over a folder of training masks."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import write_pair

from segcli.data.layouts import find_split_files
from segcli.data.masks import encode_training_mask, training_mask_decoder
from segcli.data.readers import PseudoMaskDataset
from segcli.data.settings import DatasetSettings
from segcli.data.weak_images import train_image_folder
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
        ({"rounds": "2"}, "weak.rounds=2: expected a whole number"),
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
        cv2.imwrite(str(masks / f"{name}.png"), encode_training_mask(a, 3))
    ds = PseudoMaskDataset(images, masks, training_mask_decoder(3, 9), lambda **kw: kw)
    assert len(ds) == 2 and [ds.name(i) for i in range(2)] == ["n0", "n2"]
    image, mask, name = ds.load(1)
    assert name == "n2" and image.shape == (6, 5, 3)
    np.testing.assert_array_equal(mask, a)
    stats = ds.class_pixels(3)
    assert stats.pixels.tolist() == [12, 12, 12] and stats.present.tolist() == [36, 36, 36]
    cv2.imwrite(str(masks / "n0.png"), encode_training_mask(a[:5], 3))
    with pytest.raises(SegcliError, match=r"n0.png: training mask is 5x5 \(WxH\); expected"):
        ds.load(0)


def synthetic_cfg(*overrides: str) -> dict:
    from segcli.config import compose_config, to_plain

    return to_plain(
        compose_config(
            ["dataset.num_train=4", "dataset.num_val=2", "dataset.image_size=[32,32]", *overrides]
        )
    )


def test_keys_of_weak_labels_in_a_full_mask_run_are_refused_not_ignored():
    from segcli.weak.settings import check_full_masks

    with pytest.raises(SegcliError, match=r"^dataset.weak_labels=a.json is read for weak labels"):
        check_full_masks(settings(weak_labels="a.json"), None)
    with pytest.raises(SegcliError, match=r"^weak.rounds=2 refines weak labels"):
        check_full_masks(settings(), {"rounds": 2})
    check_full_masks(settings(), {"fill": "grabcut"})  # the group's other keys are inert


def test_a_resume_may_not_change_how_the_training_masks_are_made(tmp_path: Path):
    from segcli.training.weak_rounds import WeakRounds

    cfg = synthetic_cfg("dataset.simulate=boxes")
    for key in ("weak.fill", "dataset.simulate", "dataset.background_class"):
        with pytest.raises(SegcliError, match=rf"^{key}: a resume cannot change"):
            WeakRounds(cfg, tmp_path, changes={key: ("a", "b")})
    WeakRounds(cfg, tmp_path, changes={"trainer.epochs": (1, 2)})


def test_masks_of_other_settings_are_made_again(tmp_path: Path):
    from segcli.weak.pseudo import WeakLabels

    folder = tmp_path / "round1"
    box = WeakLabels(synthetic_cfg("dataset.simulate=boxes", "weak.fill=box")).first_round(folder)
    first = {p.name: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in box.glob("*.png")}
    assert len(first) == 4 and all((m != 255).all() for m in first.values())  # Box: no band
    again = WeakLabels(synthetic_cfg("dataset.simulate=boxes", "weak.fill=box")).first_round(folder)
    assert {p.name: p.stat().st_mtime_ns for p in again.glob("*.png")} == {
        p.name: p.stat().st_mtime_ns for p in box.glob("*.png")
    }  # the same settings: kept
    WeakLabels(synthetic_cfg("dataset.simulate=boxes", "weak.fill=box_i")).first_round(folder)
    second = {p.name: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in box.glob("*.png")}
    assert any((m == 255).any() for m in second.values())  # Box^i's ignored bands
    import json

    assert json.loads((folder / "pseudo.json").read_text())["settings"]["weak"]["fill"] == "box_i"


def test_simulated_training_masks_over_folder_data_read_the_image_files_only(segnet_root: Path):
    from helpers import segnet_overrides

    from segcli.config import compose_config, to_plain
    from segcli.data.datasets import build_datasets

    masks = segnet_root / "pseudo"
    masks.mkdir()
    for i in range(8):
        cv2.imwrite(str(masks / f"train{i}.png"), np.full((48, 80), 2, np.uint8))
    cfg = to_plain(compose_config([*segnet_overrides(segnet_root), "dataset.simulate=boxes"]))
    _, data, counts = build_datasets(cfg, ("train", "val"), 0, train_masks=masks)
    ds = data["train"]
    assert isinstance(ds, PseudoMaskDataset) and ds.base is None  # the true masks are not decoded
    assert [p.name for p in ds.paths] == [f"train{i}.jpg" for i in range(8)]
    assert (ds.load(3)[1] == 2).all() and counts["train"].pixels.tolist() == [0, 0, 8 * 48 * 80]
