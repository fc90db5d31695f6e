from pathlib import Path

import numpy as np
import pytest

from segcli.augment import build_transforms
from segcli.config import compose_config, to_plain
from segcli.errors import SegcliError

PRESETS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "augmentation").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_builds_and_pads_masks_with_ignore_index(preset):
    cfg = to_plain(compose_config([f"augmentation={preset}", "dataset.crop_size=[64,64]"]))
    ignore = cfg["dataset"]["ignore_index"]
    transform = build_transforms(cfg["augmentation"]["train"], ignore)
    image = np.full((40, 50, 3), 128, np.uint8)  # smaller than the crop: padding is needed
    mask = np.ones((40, 50), np.int64)
    for _ in range(5):
        out = transform(image=image, mask=mask)
        values = set(out["mask"].unique().tolist())
        assert values <= {1, ignore}, f"padding filled the mask with {values - {1, ignore}}"
        if preset != "none":
            assert tuple(out["mask"].shape) == (64, 64)
    assert ignore in values  # a 40x50 image in a 64x64 crop leaves padding


def test_old_albumentations_argument_names_are_errors_not_warnings():
    spec = [{"_target_": "albumentations.PadIfNeeded", "min_height": 64, "min_width": 64, "mask_value": 11}]
    with pytest.raises(SegcliError, match=r"augmentation entry 0 \(albumentations.PadIfNeeded\).*mask_value"):
        build_transforms(spec, 11)
    with pytest.raises(SegcliError, match="albumentations.NoSuchTransform"):
        build_transforms([{"_target_": "albumentations.NoSuchTransform"}], 11)
