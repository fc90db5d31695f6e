"""A run on RGB + depth (dataset.extra_inputs): the checkpoint keeps the training data's
per-channel statistics and a 4-channel first convolution, and eval and predict use those stored
statistics, not the data's current ones."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import EXTRA_DEPTH, RGBD, TINY_RUN, segcli, write_rgbd

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def rgbd_run(module_tmp) -> tuple[Path, Path]:
    """(data root, run folder) of a 1-epoch run on 8 + 3 RGB-D images of 64x64."""
    base = module_tmp("rgbd")
    root = base / "data"
    write_rgbd(root, {"train": 8, "val": 3})
    r = segcli(
        "train",
        *RGBD,
        f"dataset.root={root}",
        EXTRA_DEPTH,
        *TINY_RUN,
        "dataset.crop_size=[64,64]",
        f"hydra.run.dir={base / 'run'}",
        cwd=base,
    )
    assert r.returncode == 0, r.stderr
    return root, base / "run"


def _train_stack(root: Path) -> np.ndarray:
    """Every training pixel as (N, 4) float64: R, G, B from the PNGs, then depth."""
    rows = []
    for image in sorted((root / "images" / "train").glob("*.png")):
        rgb = cv2.imread(str(image))[..., ::-1].reshape(-1, 3)
        depth = cv2.imread(str(root / "depth" / "train" / f"{image.stem}_depth.png"), -1)
        rows.append(np.concatenate([rgb, depth.reshape(-1, 1)], axis=1))
    return np.concatenate(rows).astype(np.float64)


def test_the_checkpoint_stores_the_training_channels_statistics(rgbd_run):
    root, run = rgbd_run
    ckpt = torch.load(run / "checkpoints" / "best.pt", map_location="cpu", weights_only=False)
    norm = ckpt["normalization"]
    pixels = _train_stack(root)  # 8 images of 4096 pixels: under the sample size, so exact
    assert norm["mean"] == pytest.approx(pixels.mean(0).tolist(), rel=1e-6)
    assert norm["std"] == pytest.approx(pixels.std(0).tolist(), rel=1e-6)
    assert norm["max_pixel_value"] == 1.0
    assert norm["channels"] == [
        {"file": "image", "channels": 3, "dtype": "uint8"},
        {"file": "depth", "channels": 1, "dtype": "uint16"},
    ]
    assert ckpt["model"]["encoder.conv1.weight"].shape[1] == 4  # model.in_channels from the data


def _matrices(npz: Path) -> dict[str, np.ndarray]:
    with np.load(npz) as z:
        return dict(zip(list(z["names"]), z["matrices"], strict=True))


def test_eval_and_predict_use_the_stored_statistics_after_the_data_changed(rgbd_run, tmp_path):
    root, run = rgbd_run
    ckpt = run / "checkpoints" / "best.pt"
    r = segcli("eval", str(ckpt), "--amp", "false", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    before = _matrices(run / "evals" / "best-val.npz")
    for depth in (root / "depth" / "train").glob("*.png"):  # the training statistics change
        cv2.imwrite(str(depth), (cv2.imread(str(depth), -1) // 2).astype(np.uint16))
    r = segcli("eval", str(ckpt), "--amp", "false", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    after = _matrices(run / "evals" / "best-val.npz")
    assert before.keys() == after.keys() and len(after) == 3
    for name in before:
        np.testing.assert_array_equal(before[name], after[name])
    images = sorted(str(p) for p in (root / "images" / "val").glob("*.png"))
    r = segcli("predict", *images, "-c", str(ckpt), "--amp", "false", "-o", "pred", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for name, matrix in after.items():
        pred = cv2.imread(str(tmp_path / "pred" / f"{name}.png"), -1).astype(np.int64)
        truth = cv2.imread(str(root / "masks" / "val" / f"{name}.png"), -1).astype(np.int64)
        mine = np.bincount(truth.ravel() * 3 + pred.ravel(), minlength=9).reshape(3, 3)
        np.testing.assert_array_equal(mine, matrix)
    # a frame without its depth file: one line naming what was looked for
    lonely = tmp_path / "lonely.png"
    lonely.write_bytes(Path(images[0]).read_bytes())
    r = segcli("predict", str(lonely), "-c", str(ckpt), "-o", "p2", cwd=tmp_path)
    assert r.returncode == 2
    assert f"{lonely}: no extra input lonely_depth.*" in r.stderr.replace("\n", "")


def test_export_keeps_the_channels_and_predict_runs_the_bundle_alike(rgbd_run, tmp_path):
    import json

    root, run = rgbd_run
    ckpt = run / "checkpoints" / "best.pt"
    r = segcli("export", str(ckpt), "-o", "bundle", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    bundle = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)["normalization"]
    assert bundle["input"]["normalization"]["mean"] == saved["mean"]
    assert bundle["input"]["extra_inputs"] == [["depth", "_depth"]]
    assert bundle["example_input"][1] == 4 and bundle["parity"][0]["ok"]
    images = sorted(str(p) for p in (root / "images" / "val").glob("*.png"))
    for name, model in (("torch", str(ckpt)), ("onnx", str(tmp_path / "bundle"))):
        r = segcli("predict", *images, "-c", model, "--amp", "false", "-o", name, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    for image in images:
        a, b = (cv2.imread(str(tmp_path / d / Path(image).name), -1) for d in ("torch", "onnx"))
        assert (a == b).mean() >= 0.999


def test_a_resumed_run_keeps_its_statistics_when_the_data_changed(rgbd_run, tmp_path):
    import shutil

    root, run = rgbd_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = torch.load(copy / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    for depth in (root / "depth" / "train").glob("*.png"):  # the data's statistics change
        cv2.imwrite(str(depth), (cv2.imread(str(depth), -1) // 3 + 7).astype(np.uint16))
    r = segcli(
        "train", "--resume", str(copy), "--allow-changes", "trainer.epochs=2", cwd=tmp_path
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    after = torch.load(copy / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert after["epoch"] == 2 and before["epoch"] == 1
    assert after["normalization"] == before["normalization"]
