"""Shared fixtures: tiny image/mask folders written per test, and the CamVid copy when present."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

REPO = Path(__file__).resolve().parents[1]

# The suite's one tiny, fast run. TINY_RUN: resnet18, small batches, no loader workers (any dataset).
# TINY: that for one epoch on the synthetic dataset (the default), 8 training and 4 validation images
# of 64x64. Tests add what they need after it (Hydra takes the last value of a key):
# [*TINY, "trainer.epochs=3"].
TINY_RUN = ["model.encoder_name=resnet18", "trainer.batch_size=4", "trainer.eval_batch_size=2", "trainer.num_workers=0"]
TINY = [*TINY_RUN, "trainer.epochs=1", "dataset.num_train=8", "dataset.num_val=4", "dataset.image_size=[64,64]",
        "dataset.crop_size=[64,64]"]
CAMVID = Path(os.environ.get("SEGCLI_CAMVID", REPO.parent / "shared" / "data" / "camvid"))


def write_pair(image_dir: Path, mask_dir: Path, name: str, h: int, w: int, classes: int, seed: int,
               mask_ext: str = ".png", values: list[int] | None = None) -> None:
    """A random RGB image and a blocky mask of class indices (or of the given raw values)."""
    rng = np.random.default_rng(seed)
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    mask = np.zeros((h, w), np.uint8)
    values = values if values is not None else list(range(classes))
    for i, v in enumerate(values):
        mask[(i * h) // len(values):((i + 1) * h) // len(values), :] = v
    image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    image[..., 0] = np.clip(mask.astype(int) * 60 + 20, 0, 255)  # learnable: red channel encodes the class
    cv2.imwrite(str(image_dir / f"{name}.jpg"), image)
    cv2.imwrite(str(mask_dir / f"{name}{mask_ext}"), mask)


@pytest.fixture
def segnet_root(tmp_path: Path) -> Path:
    """CamVid's layout: train/ trainannot/ val/ valannot/ test/ testannot/, 3 classes, 48x80."""
    root = tmp_path / "segnet"
    for split, n in (("train", 8), ("val", 3), ("test", 2)):
        for i in range(n):
            write_pair(root / split, root / f"{split}annot", f"{split}{i}", 48, 80, 3, seed=i)
    return root


@pytest.fixture
def flat_binary_root(tmp_path: Path) -> Path:
    """images/ + masks/ with no split folders, masks saved as 0/255."""
    root = tmp_path / "flat"
    for i in range(10):
        write_pair(root / "images", root / "masks", f"img{i:02d}", 40, 56, 2, seed=i, values=[0, 255])
    return root


def camvid_or_skip() -> Path:
    if not (CAMVID / "train").is_dir():
        pytest.skip(f"CamVid not found at {CAMVID}")
    return CAMVID
