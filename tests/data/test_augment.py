from pathlib import Path

import numpy as np
import pytest

from segcli.config import compose_config, to_plain
from segcli.data.augment import build_transforms, seed_transform
from segcli.errors import SegcliError

PRESETS = sorted(
    p.stem for p in (Path(__file__).resolve().parents[2] / "conf" / "augmentation").glob("*.yaml")
)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_builds_and_pads_masks_with_ignore_index(preset):
    cfg = to_plain(compose_config([f"augmentation={preset}", "dataset.crop_size=[64,64]"]))
    ignore = cfg["dataset"]["ignore_index"]
    transform = build_transforms(cfg["augmentation"]["train"], ignore)
    image = np.full((40, 50, 3), 128, np.uint8)  # smaller than the crop: padding is needed
    mask = np.ones((40, 50), np.int64)
    padded = 0
    for i in range(8):
        seed_transform(transform, (0, 1, i))
        out = transform(image=image, mask=mask)
        values = set(out["mask"].unique().tolist())
        assert values <= {1, ignore}, f"padding filled the mask with {values - {1, ignore}}"
        if preset != "none":
            assert tuple(out["mask"].shape) == (64, 64)
        padded += ignore in values
    assert padded > 0  # a 40x50 image in a 64x64 crop leaves padding (unless scaled up)


def test_seeded_transforms_draw_independently_and_repeat():
    """albumentations' Compose.set_random_seed gives every transform the same seed, so two p=0.5
    flips always agree; seed_transform shares one stream, so they agree about half the time."""
    flips = build_transforms(
        [
            {"_target_": "albumentations.HorizontalFlip", "p": 0.5},
            {"_target_": "albumentations.VerticalFlip", "p": 0.5},
        ],
        255,
    )
    image = np.arange(16, dtype=np.uint8).reshape(4, 4)[..., None].repeat(3, 2)
    corners = []
    for i in range(200):
        seed_transform(flips, (0, 0, i))
        corners.append(int(flips(image=image, mask=image[..., 0])["mask"][0, 0]))
    agree = sum(c in (0, 15) for c in corners)  # no flip, or both flips
    assert 70 < agree < 130
    assert set(corners) == {0, 3, 12, 15}
    seed_transform(flips, (0, 0, 7))
    again = int(flips(image=image, mask=image[..., 0])["mask"][0, 0])
    assert again == corners[7]


def test_old_albumentations_argument_names_are_errors_not_warnings():
    spec = [
        {
            "_target_": "albumentations.PadIfNeeded",
            "min_height": 64,
            "min_width": 64,
            "mask_value": 11,
        }
    ]
    with pytest.raises(
        SegcliError, match=r"augmentation entry 0 \(albumentations.PadIfNeeded\).*mask_value"
    ):
        build_transforms(spec, 11)
    with pytest.raises(SegcliError, match="albumentations.NoSuchTransform"):
        build_transforms([{"_target_": "albumentations.NoSuchTransform"}], 11)
