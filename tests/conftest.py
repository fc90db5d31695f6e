"""Shared fixtures: tiny image/mask folders written per test, and the CamVid copy when present."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# pair-check caches (pair_cache.py) of the tests' throw-away trees: not in the user's ~/.cache
os.environ.setdefault("SEGCLI_CACHE_DIR", tempfile.mkdtemp(prefix="segcli-test-cache-"))

REPO = Path(__file__).resolve().parents[1]

# pytester: the isolation test runs a small suite of its own (test_amx_guard.py)
pytest_plugins = ["pytester"]

# The suite's one tiny, fast run. TINY_RUN: resnet18, small batches, no loader workers (any dataset).
# TINY: that for one epoch on the synthetic dataset (the default), 8 training and 4 validation images
# of 64x64. Tests add what they need after it (Hydra takes the last value of a key):
# [*TINY, "trainer.epochs=3"].
TINY_RUN = ["model.encoder_name=resnet18", "trainer.batch_size=4", "trainer.eval_batch_size=2", "trainer.num_workers=0"]
TINY = [*TINY_RUN, "trainer.epochs=1", "dataset.num_train=8", "dataset.num_val=4", "dataset.image_size=[64,64]",
        "dataset.crop_size=[64,64]"]
FAST = [*TINY_RUN, "dataset.crop_size=[32,32]"]
CAMVID = Path(os.environ.get("SEGCLI_CAMVID", REPO.parent / "shared" / "data" / "camvid"))


def segcli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m segcli ARGS`` in ``cwd`` as a user runs it (no Hydra tracebacks, 200 columns);
    ``env``: extra environment variables."""
    full = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "COLUMNS": "200", **(env or {})}
    full.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", "segcli", *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=600, check=False)


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


def segnet_overrides(root: Path) -> list[str]:
    """Overrides that train on ``segnet_root`` (CamVid's layout, 3 classes a, b, c)."""
    return ["dataset=camvid", f"dataset.root={root}", "dataset.num_classes=3", "dataset.class_names=[a,b,c]",
            "dataset.colors=[[255,0,0],[0,255,0],[0,0,255]]", "dataset.ignore_index=255"]


@pytest.fixture(scope="session")
def evaluated_runs(tmp_path_factory) -> dict[str, Path]:
    """Two runs on a segnet tree (CamVid's layout, 3 classes; runs of 1 and 3 epochs, 2 sample
    images each), each evaluated on the test split with ``--worst 2``: ``{"short", "longer", "root"}``.
    Shared by several tests: copy a run before changing it."""
    base = tmp_path_factory.mktemp("evaluated")
    root = base / "segnet"
    for split, n in (("train", 8), ("val", 3), ("test", 2)):
        for i in range(n):
            write_pair(root / split, root / f"{split}annot", f"{split}{i}", 48, 80, 3, seed=i)
    out = {"root": root}
    for name, epochs in (("short", 1), ("longer", 3)):
        run = out[name] = base / name
        r = segcli("train", *segnet_overrides(root), *FAST, f"trainer.epochs={epochs}", "trainer.samples=2",
                   f"hydra.run.dir={run}", cwd=base)
        assert r.returncode == 0, r.stderr
        r = segcli("eval", str(run / "checkpoints" / "best.pt"), "--split", "test", "--worst", "2", cwd=base)
        assert r.returncode == 0, r.stderr
    return out


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
