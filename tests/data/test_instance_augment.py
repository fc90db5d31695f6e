from pathlib import Path

import numpy as np
import pytest
import torch

from segcli.config import compose_config, to_plain
from segcli.data.augment import seed_transform
from segcli.data.instance_augment import build_instance_transforms
from segcli.errors import SegcliError
from segcli.preprocessing import IMAGENET_MEAN, IMAGENET_STD

PRESETS = sorted(
    p.stem for p in (Path(__file__).resolve().parents[2] / "conf" / "augmentation").glob("*.yaml")
)
RANDOM_PRESETS = [p for p in PRESETS if p != "none"]


def preset_specs(preset, crop=32):
    cfg = to_plain(compose_config([f"augmentation={preset}", f"dataset.crop_size=[{crop},{crop}]"]))
    return cfg["augmentation"]["train"]


def two_instances():
    """A 5x8 image; instance 0 (label 7) rows 1-2 x cols 0-2, box [0, 1, 3, 3]; instance 1
    (label 3, crowd) rows 3-4 x cols 4-5, box [4, 3, 6, 5]."""
    image = np.arange(5 * 8 * 3, dtype=np.uint8).reshape(5, 8, 3)
    masks = np.zeros((2, 5, 8), np.uint8)
    masks[0, 1:3, 0:3] = 1
    masks[1, 3:5, 4:6] = 1
    return image, masks, np.array([7, 3]), np.array([False, True])


def tight_box(mask):
    rows, cols = np.nonzero(mask)
    return [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]


def test_horizontal_flip_flips_masks_and_boxes_keeps_labels():
    image, masks, labels, iscrowd = two_instances()
    t = build_instance_transforms([{"_target_": "albumentations.HorizontalFlip", "p": 1.0}])
    out = t(image, masks, labels, iscrowd)
    assert out["masks"].dtype == torch.uint8 and tuple(out["masks"].shape) == (2, 32, 32)
    assert np.array_equal(out["masks"][:, :5, :8].numpy(), masks[:, :, ::-1])
    assert out["masks"][:, 5:, :].sum() == 0 and out["masks"][:, :, 8:].sum() == 0
    # x -> 8 - x: cols 0-2 become 5-7, cols 4-5 become 2-3
    assert out["boxes"].tolist() == [[5, 1, 8, 3], [2, 3, 4, 5]]
    assert out["boxes"].dtype == torch.float32
    assert out["labels"].tolist() == [7, 3] and out["labels"].dtype == torch.int64
    assert out["iscrowd"].tolist() == [False, True] and out["iscrowd"].dtype == torch.bool


def test_crop_drops_the_instance_it_removes_and_shifts_the_other():
    image, masks, labels, iscrowd = two_instances()
    extra = np.zeros((1, 5, 8), np.uint8)  # box [0, 0, 8, 5] meets the crop, its pixels do not
    extra[0, 0, 7] = extra[0, 4, 0] = 1
    masks = np.concatenate([masks, extra])
    labels, iscrowd = np.array([7, 3, 9]), np.array([False, True, False])
    crop = {"_target_": "albumentations.Crop", "x_min": 3, "y_min": 2, "x_max": 8, "y_max": 5}
    out = build_instance_transforms([crop])(image, masks, labels, iscrowd)
    # instance 0 (cols 0-2) lies left of x_min 3; instance 2 keeps a box but no pixel
    assert out["labels"].tolist() == [3] and out["iscrowd"].tolist() == [True]
    assert out["boxes"].tolist() == [[1, 1, 3, 3]]  # [4, 3, 6, 5] - (3, 2)
    assert tuple(out["masks"].shape) == (1, 32, 32)
    assert np.array_equal(out["masks"][0, :3, :5].numpy(), masks[1, 2:5, 3:8])


def test_fill_mask_of_the_specs_is_background():
    """A 45-degree rotation fills the corners with fill_mask; with fill_mask 1 (ignore_index 1)
    the corners would join the instance."""
    image = np.zeros((16, 16, 3), np.uint8)
    masks = np.zeros((1, 16, 16), np.uint8)
    masks[0, 6:10, 6:10] = 1
    rotate = {
        "_target_": "albumentations.Rotate",
        "limit": [45, 45],
        "border_mode": 0,
        "fill_mask": 1,
        "p": 1.0,
    }
    out = build_instance_transforms([rotate])(image, masks, [1], [False])
    assert out["masks"][0, 0, 0] == 0 and out["masks"][0, 15, 15] == 0
    assert 0 < out["masks"].sum() < 40  # the 4x4 square, rotated


def sample(seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    masks = np.zeros((3, 40, 50), np.uint8)
    masks[0, 0:10, 0:12] = 1  # at the corner
    masks[1, 20:40, 30:50] = 1  # at the opposite corner
    masks[2, 5:30, 15:20] = masks[2, 25:30, 15:40] = 1  # an L
    return image, masks, np.array([1, 2, 3]), np.array([False, False, True])


@pytest.mark.parametrize("preset", RANDOM_PRESETS)
def test_box_is_the_tight_box_of_its_mask_after_each_preset(preset):
    t = build_instance_transforms(preset_specs(preset))
    image, masks, labels, iscrowd = sample(0)
    for i in range(6):
        seed_transform(t.compose, (0, 0, i))
        out = t(image, masks, labels, iscrowd)
        assert tuple(out["image"].shape) == (3, 32, 32)
        assert set(out["masks"].unique().tolist()) <= {0, 1}
        k = len(out["labels"])
        assert out["masks"].shape[0] == out["boxes"].shape[0] == out["iscrowd"].shape[0] == k
        assert out["boxes"].tolist() == [tight_box(m) for m in out["masks"].numpy()]
        crowd = dict(zip(labels.tolist(), iscrowd.tolist()))
        assert out["labels"].tolist() == sorted(out["labels"].tolist())  # input order
        assert out["iscrowd"].tolist() == [crowd[c] for c in out["labels"].tolist()]


def test_padding_to_32_with_background_masks_and_normalized_image():
    image = np.full((20, 40, 3), 51, np.uint8)
    masks = np.ones((1, 20, 40), np.uint8)
    out = build_instance_transforms([])(image, masks, [5], [False])
    assert tuple(out["image"].shape) == (3, 32, 64) and out["image"].dtype == torch.float32
    assert tuple(out["masks"].shape) == (1, 32, 64)
    assert out["masks"][0, :20, :40].all() and out["masks"].sum() == 20 * 40
    assert out["boxes"].tolist() == [[0, 0, 40, 20]]
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    assert torch.allclose(out["image"][:, 0, 0], (0.2 - mean) / std, atol=1e-5)
    assert torch.allclose(out["image"][:, 31, 63], -mean / std, atol=1e-5)  # padded with 0


@pytest.mark.parametrize("preset", PRESETS)
def test_no_instances_for_each_preset(preset):
    t = build_instance_transforms(preset_specs(preset))
    image = np.zeros((40, 50, 3), np.uint8)
    seed_transform(t, (1, 2, 3))
    out = t(image, np.zeros((0, 40, 50), np.uint8), np.zeros(0, np.int64), np.zeros(0, bool))
    h, w = out["image"].shape[1:]
    assert h % 32 == 0 and w % 32 == 0
    assert tuple(out["masks"].shape) == (0, h, w) and out["masks"].dtype == torch.uint8
    assert tuple(out["boxes"].shape) == (0, 4) and out["boxes"].dtype == torch.float32
    assert out["labels"].dtype == torch.int64 and out["iscrowd"].dtype == torch.bool
    assert len(out["labels"]) == len(out["iscrowd"]) == 0


def test_empty_input_masks_are_dropped_before_the_transform():
    image, masks, labels, iscrowd = two_instances()
    masks[0] = 0
    out = build_instance_transforms([])(image, masks, labels, iscrowd)
    assert out["labels"].tolist() == [3] and out["boxes"].tolist() == [[4, 3, 6, 5]]


def test_same_seed_key_same_output():
    t = build_instance_transforms(preset_specs("heavy"))
    image, masks, labels, iscrowd = sample(1)
    outs = []
    for key in [(0, 1, 5), (0, 1, 6), (0, 1, 5)]:
        seed_transform(t.compose, key)
        outs.append(t(image, masks, labels, iscrowd))
    for name in outs[0]:
        assert torch.equal(outs[0][name], outs[2][name]), name
    assert not torch.equal(outs[0]["image"], outs[1]["image"])
    seed_transform(t, (0, 1, 5))  # InstanceTransform.set_random_state: the same stream
    again = t(image, masks, labels, iscrowd)
    assert all(torch.equal(again[name], outs[0][name]) for name in again)


def test_min_area_drops_small_instances():
    image, masks, labels, iscrowd = two_instances()  # areas 6 and 4
    out = build_instance_transforms([], min_area=5)(image, masks, labels, iscrowd)
    assert out["labels"].tolist() == [7]


def test_transform_without_box_support_is_a_one_line_error():
    with pytest.raises(
        SegcliError,
        match=r"^augmentation entry 1 \(albumentations.OverlayElements\): OverlayElements "
        r"transforms masks but not bounding boxes[^\n]*$",
    ):
        build_instance_transforms(
            [
                {"_target_": "albumentations.HorizontalFlip"},
                {"_target_": "albumentations.OverlayElements"},
            ]
        )
    with pytest.raises(SegcliError, match=r"augmentation entry 0 \(albumentations.NoSuchTransform"):
        build_instance_transforms([{"_target_": "albumentations.NoSuchTransform"}])


def test_mismatched_inputs_are_errors():
    image, masks, labels, iscrowd = two_instances()
    t = build_instance_transforms([])
    with pytest.raises(SegcliError, match="2 masks but 1 labels"):
        t(image, masks, labels[:1], iscrowd)
    with pytest.raises(SegcliError, match=r"masks \(2, 5, 7\) and image \(5, 8, 3\)"):
        t(image, masks[:, :, :7], labels, iscrowd)


def test_min_visibility_drops_mostly_cropped_instances():
    image, masks, labels, iscrowd = two_instances()
    crop = {"_target_": "albumentations.Crop", "x_min": 2, "y_min": 0, "x_max": 8, "y_max": 5}
    kept = build_instance_transforms([crop])(image, masks, labels, iscrowd)
    assert kept["labels"].tolist() == [7, 3] and kept["boxes"].tolist()[0] == [0, 1, 1, 3]
    # instance 0 keeps 1 of its 3 columns: visibility 1/3
    out = build_instance_transforms([crop], min_visibility=0.5)(image, masks, labels, iscrowd)
    assert out["labels"].tolist() == [3] and out["boxes"].tolist() == [[2, 3, 4, 5]]
