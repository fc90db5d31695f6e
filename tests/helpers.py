"""The suite's plain helpers (no fixtures: those are conftest.py's): the tiny configs, ``segcli`` in
a subprocess as a user runs it, ``write_pair`` for image/mask folders, the CamVid copy, and the
one-line-error check. Test modules import them with ``from helpers import ...``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

# The suite's one tiny, fast run. TINY_RUN: conf/trainer/debug.yaml (one epoch, batches of 4 and 2,
# no loader workers) and resnet18, on any dataset. TINY: that on the synthetic dataset (the
# default), 8 training and 4 validation images of 64x64. Tests add what they need after it (Hydra
# takes the last value of a key): [*TINY, "trainer.epochs=3"].
TINY_RUN = ["trainer=debug", "model.encoder_name=resnet18"]
TINY = [
    *TINY_RUN,
    "dataset.num_train=8",
    "dataset.num_val=4",
    "dataset.image_size=[64,64]",
    "dataset.crop_size=[64,64]",
]
FAST = [*TINY_RUN, "dataset.crop_size=[32,32]"]
CAMVID = Path(os.environ.get("SEGCLI_CAMVID", REPO.parent / "shared" / "data" / "camvid"))


def segcli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m segcli ARGS`` in ``cwd`` as a user runs it (no Hydra tracebacks, 200 columns);
    ``env``: extra environment variables."""
    full = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "COLUMNS": "200", **(env or {})}
    full.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", "segcli", *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def segcli_without(modules: list[str], *args: str) -> subprocess.CompletedProcess:
    """``segcli ARGS`` in a fresh interpreter where importing any of ``modules`` fails (their
    ``sys.modules`` entries set to None), as on a machine without that extra."""
    code = (
        "import sys\n"
        + "".join(f"sys.modules[{m!r}] = None\n" for m in modules)
        + f"sys.argv = ['segcli', *{list(args)!r}]\n"
        + "from segcli.cli import main\nmain()"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)


def write_pair(
    image_dir: Path,
    mask_dir: Path,
    name: str,
    h: int,
    w: int,
    classes: int,
    seed: int,
    mask_ext: str = ".png",
    values: list[int] | None = None,
) -> None:
    """A random RGB image and a blocky mask of class indices (or of the given raw values)."""
    rng = np.random.default_rng(seed)
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    mask = np.zeros((h, w), np.uint8)
    values = values if values is not None else list(range(classes))
    for i, v in enumerate(values):
        mask[(i * h) // len(values) : ((i + 1) * h) // len(values), :] = v
    image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    image[..., 0] = np.clip(
        mask.astype(int) * 60 + 20, 0, 255
    )  # learnable: red channel encodes the class
    cv2.imwrite(str(image_dir / f"{name}.jpg"), image)
    cv2.imwrite(str(mask_dir / f"{name}{mask_ext}"), mask)


def segnet_overrides(root: Path) -> list[str]:
    """Overrides that train on ``segnet_root`` (CamVid's layout, 3 classes a, b, c)."""
    return [
        "dataset=camvid",
        f"dataset.root={root}",
        "dataset.num_classes=3",
        "dataset.class_names=[a,b,c]",
        "dataset.colors=[[255,0,0],[0,255,0],[0,0,255]]",
        "dataset.ignore_index=255",
    ]


def camvid_or_skip() -> Path:
    if not (CAMVID / "train").is_dir():
        pytest.skip(f"CamVid not found at {CAMVID}")
    return CAMVID


# a small U-Net that learns segnet_root's task in about 12 epochs
LEARNS = [
    "+model.params.encoder_depth=3",
    "+model.params.decoder_channels=[32,16,8]",
    "optimizer.lr=0.003",
    "dataset.crop_size=[48,48]",
    "trainer.samples=0",
]


def whole_image_prediction(checkpoint: str, image_path: Path) -> np.ndarray:
    """``(H, W) uint8`` argmax of the checkpoint's model on the image: RGB, zero-padded bottom/right
    to a multiple of 32, ImageNet-normalised, one forward pass, logits cropped back to H x W."""
    import torch

    from segcli.models.build import model_from_checkpoint
    from segcli.runs.checkpoints import load_checkpoint

    ckpt = load_checkpoint(Path(checkpoint))
    model = model_from_checkpoint(ckpt, torch.device("cpu"))
    image = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)
    h, w = image.shape[:2]
    padded = np.zeros((-(-h // 32) * 32, -(-w // 32) * 32, 3), np.uint8)
    padded[:h, :w] = image
    x = (padded / 255.0 - np.array(ckpt["normalization"]["mean"])) / np.array(
        ckpt["normalization"]["std"]
    )
    with torch.no_grad():
        logits = model(torch.from_numpy(x).permute(2, 0, 1)[None].float())
    return logits[0, :, :h, :w].argmax(0).numpy().astype(np.uint8)


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("segcli: error: ") and "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def toy_model_and_batches(n: int = 6):
    """A seeded 1x1 convolution (3 -> 2 classes) and ``n`` batches of two 4x4 images whose class is
    the sign of channel 0 (learnable): ``{"image": (2, 3, 4, 4) float32, "mask": (2, 4, 4)
    int64}``."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 2, 1)
    images = [torch.randn(2, 3, 4, 4) for _ in range(n)]
    return model, [{"image": x, "mask": (x[:, 0] > 0).long()} for x in images]


def write_rgbd(root: Path, splits: dict[str, int], size: int = 64, seed: int = 0) -> None:
    """An RGB-D set (``root/images/<split>/NAME.png``, ``root/depth/<split>/NAME_depth.png``
    16-bit, ``root/masks/<split>/NAME.png``) of 3 classes: 0 background (gray noise, depth about
    2000), 1 a red 16x16 square (seen in RGB; flat in depth), 2 a disk of radius 9 whose depth is
    600 lower and whose colour is the background's: only the depth channel shows class 2."""
    for split, n in splits.items():
        for sub in ("images", "depth", "masks"):
            (root / sub / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            rng = np.random.default_rng([seed, i, len(split)])
            rgb = rng.integers(60, 120, (size, size, 3)).astype(np.uint8)
            depth = (2000 + rng.normal(0, 20, (size, size))).astype(np.uint16)
            mask = np.zeros((size, size), np.uint8)
            x, y = rng.integers(2, size - 18, 2)
            rgb[y : y + 16, x : x + 16] = (200, 40, 40)
            mask[y : y + 16, x : x + 16] = 1
            cx, cy = rng.integers(10, size - 10, 2)
            disk = np.zeros((size, size), np.uint8)
            cv2.circle(disk, (int(cx), int(cy)), 9, 1, -1)
            disk = disk.astype(bool) & (mask == 0)
            depth[disk] -= 600
            mask[disk] = 2
            name = f"{split}{i}"
            cv2.imwrite(str(root / "images" / split / f"{name}.png"), rgb[..., ::-1])
            cv2.imwrite(str(root / "depth" / split / f"{name}_depth.png"), depth)
            cv2.imwrite(str(root / "masks" / split / f"{name}.png"), mask)


RGBD = ["dataset=folder", "dataset.num_classes=3", "dataset.class_names=[background,square,disk]"]
EXTRA_DEPTH = "dataset.extra_inputs=[{dir: depth, suffix: _depth}]"


def write_containers(root: Path, splits: dict[str, int], size: int = 64, seed: int = 0) -> None:
    """A "container and contents" set (``root/images/<split>/NAME.png``, ``root/masks/...``) of 3
    classes: 0 background (gray noise), 1 a container (an orange rectangle, a third to two thirds
    of the side), 2 its contents (two disks of radius 3-5 inside it). Disks of the contents'
    colour lie outside the containers too, as background: telling contents from those needs
    to know where the container is."""
    color, contents = (200, 120, 40), (60, 160, 220)
    for split, n in splits.items():
        for sub in ("images", "masks"):
            (root / sub / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            rng = np.random.default_rng([seed, i, len(split), 7])
            image = rng.integers(90, 140, (size, size, 3)).astype(np.uint8)
            mask = np.zeros((size, size), np.uint8)
            h, w = rng.integers(size // 3, 2 * size // 3, 2)
            y, x = rng.integers(0, size - h), rng.integers(0, size - w)
            image[y : y + h, x : x + w] = color
            mask[y : y + h, x : x + w] = 1
            for inside in (True, True, False, False):
                r = int(rng.integers(3, 6))
                for _ in range(50):  # a centre inside (or well outside) the container
                    cy, cx = rng.integers(r, size - r, 2)
                    within = y + r <= cy < y + h - r and x + r <= cx < x + w - r
                    near = y - r <= cy < y + h + r and x - r <= cx < x + w + r
                    if (inside and within) or (not inside and not near):
                        break
                else:
                    continue
                disk = np.zeros((size, size), np.uint8)
                cv2.circle(disk, (int(cx), int(cy)), r, 1, -1)
                image[disk > 0] = contents
                if inside:
                    mask[disk > 0] = 2
            noise = rng.integers(-12, 13, image.shape)
            image = np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8)
            cv2.imwrite(str(root / "images" / split / f"{split}{i}.png"), image[..., ::-1])
            cv2.imwrite(str(root / "masks" / split / f"{split}{i}.png"), mask)


CONTAINERS = [
    "dataset=folder",
    "dataset.num_classes=3",
    "dataset.class_names=[background,container,contents]",
]
