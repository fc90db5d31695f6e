"""Two-stage cascades (model.cascade, models/cascade.py): stage 2's checkpoint holds the frozen
stage 1, runs without stage 1's file, and with roi_class predicts only inside stage 1's region."""

import hashlib
import shutil
from pathlib import Path

import cv2
import pytest
import torch
from helpers import CONTAINERS, TINY_RUN, segcli, write_containers

pytestmark = pytest.mark.e2e
COMMON = [*CONTAINERS, *TINY_RUN, "dataset.crop_size=[64,64]"]


@pytest.fixture(scope="module")
def cascade_runs(module_tmp) -> dict[str, Path]:
    """A stage-1 run and two stage-2 runs on it (probabilities; region of class 1), 1 epoch each
    on 8 + 3 images of 64x64: ``{"root", "stage1", "probs", "roi"}`` (the runs' best.pt)."""
    base = module_tmp("cascade")
    root = base / "data"
    write_containers(root, {"train": 8, "val": 3})
    out = {"root": root}
    for name, extra in (
        ("stage1", []),
        ("probs", ["model.cascade.from={stage1}"]),
        ("roi", ["model.cascade.from={stage1}", "model.cascade.roi_class=1"]),
    ):
        extra = [e.format(stage1=out.get("stage1")) for e in extra]
        r = segcli(
            "train",
            *COMMON,
            f"dataset.root={root}",
            *extra,
            f"hydra.run.dir={base / name}",
            cwd=base,
        )
        assert r.returncode == 0, r.stderr
        out[name] = base / name / "checkpoints" / "best.pt"
    return out


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def test_stage_two_stores_the_frozen_stage_one_and_its_hash(cascade_runs):
    stage1 = _load(cascade_runs["stage1"])
    for name, extra in (("probs", 3), ("roi", 1)):
        ckpt = _load(cascade_runs[name])
        entry = ckpt["cascade"]
        assert entry["sha256"] == hashlib.sha256(cascade_runs["stage1"].read_bytes()).hexdigest()
        assert entry["num_classes"] == 3 and entry["in_channels"] == 3
        # stage 2 sees the image and stage 1's probabilities (3) or its region's (1)
        assert ckpt["model"]["stage2.encoder.conv1.weight"].shape[1] == 3 + extra
        for key, value in stage1["model"].items():  # stage 1 trained no further
            torch.testing.assert_close(ckpt["model"][f"stage1.{key}"], value, rtol=0, atol=0)


def test_eval_predict_and_export_run_both_stages_without_stage_one_s_file(cascade_runs, tmp_path):
    root = cascade_runs["root"]
    run = tmp_path / "roi"
    shutil.copytree(cascade_runs["roi"].parents[1], run)
    stage1 = tmp_path / "stage1.pt"
    shutil.copy(cascade_runs["stage1"], stage1)
    images = sorted(str(p) for p in (root / "images" / "val").glob("*.png"))
    r = segcli("predict", *images, "-c", str(stage1), "--amp", "false", "-o", "one", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    hidden = cascade_runs["stage1"].with_suffix(".away")
    cascade_runs["stage1"].rename(hidden)  # stage 2 needs nothing but its own checkpoint
    try:
        best = run / "checkpoints" / "best.pt"
        r = segcli("eval", str(best), "--amp", "false", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        r = segcli("predict", *images, "-c", str(best), "--amp", "false", "-o", "two", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        r = segcli("export", str(best), "-o", "bundle", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    finally:
        hidden.rename(cascade_runs["stage1"])
    inside = 0
    for image in images:
        name = Path(image).stem
        first = cv2.imread(str(tmp_path / "one" / f"{name}.png"), -1)
        second = cv2.imread(str(tmp_path / "two" / f"{name}.png"), -1)
        # outside stage 1's container region every pixel is background
        assert (second[first != 1] == 0).all()
        inside += int((first == 1).sum())
    assert inside > 0  # and there was a region to segment


def test_bad_cascades_are_one_line_errors(cascade_runs, tmp_path):
    root = cascade_runs["root"]
    common = [*COMMON, f"dataset.root={root}", "trainer.epochs=1"]
    r = segcli(
        "train", *common, f"model.cascade.from={cascade_runs['stage1']}",
        "model.cascade.roi_class=5", f"hydra.run.dir={tmp_path / 'a'}", cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 2
    assert "model.cascade.roi_class=[5]: stage 1 has 3 classes" in r.stderr
    r = segcli(
        "train", *common, f"model.cascade.from={tmp_path / 'none.pt'}",
        f"hydra.run.dir={tmp_path / 'b'}", cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 2 and f"{tmp_path / 'none.pt'}: checkpoint not found" in r.stderr
    assert not (tmp_path / "a" / "checkpoints").exists() and not (tmp_path / "b").exists()
