"""Resume: a run killed at any point and resumed ends exactly like the same run left alone;
Ctrl-C and SIGTERM save and exit 130/143; a resumed run keeps its own config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from segcli.errors import SegcliError
from segcli.resume import apply_overrides, capture_rng, config_changes, restore_rng, resume_config
from test_cli import assert_user_error, segcli

# A small deterministic run: 4 steps per epoch, last.pt after (nearly) every step.
TINY = ["dataset.num_train=16", "dataset.num_val=4", "dataset.image_size=[64,64]", "dataset.crop_size=[64,64]",
        "+model.params.encoder_depth=3", "+model.params.decoder_channels=[32,16,8]", "trainer.batch_size=4",
        "trainer.eval_batch_size=4", "trainer.num_workers=2", "trainer.epochs=3", "trainer.deterministic=true",
        "trainer.checkpoint_minutes=0.0005"]
TIMING = {"epoch_seconds", "train_images_per_second", "val_seconds"}


def start(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    return subprocess.Popen([sys.executable, "-m", "segcli", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for_lines(run: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        path = run / "metrics.jsonl"
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"run did not reach {n} epochs: {proc.poll()} {proc.stderr.read() if proc.stderr else ''}")


def records(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The same run, never interrupted."""
    cwd = tmp_path_factory.mktemp("reference")
    r = segcli("train", *TINY, "hydra.run.dir=ref", cwd=cwd)
    assert r.returncode == 0, r.stderr
    return cwd / "ref"


def assert_same_run(run: Path, ref: Path) -> None:
    assert records(run) == records(ref)  # every loss, mIoU and lr, bit for bit; no line twice
    a, b = json.loads((run / "summary.json").read_text()), json.loads((ref / "summary.json").read_text())
    assert a["status"] == "done" and a["best_epoch"] == b["best_epoch"] and a["val"] == b["val"]
    wa, wb = weights(run / "checkpoints" / "best.pt"), weights(ref / "checkpoints" / "best.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wb)


def test_sigkill_at_two_points_then_resume_gives_the_uninterrupted_run(reference: Path, tmp_path: Path):
    run = tmp_path / "run"
    proc = start("train", *TINY, f"hydra.run.dir={run}", cwd=tmp_path)
    wait_for_lines(run, 1, proc)
    time.sleep(0.4)  # somewhere inside epoch 2
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "summary.json").exists()

    proc = start("train", "--resume", str(run), cwd=tmp_path)
    wait_for_lines(run, 2, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # right after an epoch's line
    proc.wait()

    r = segcli("train", "--resume", str(run), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "resuming at epoch" in r.stdout and r.stdout.strip().splitlines()[-1] == str(run)
    assert_same_run(run, reference)
    assert len(json.loads((run / "summary.json").read_text())["resumes"]) == 2

    r = segcli("train", "--resume", str(run), cwd=tmp_path)  # a finished run is left alone
    assert r.returncode == 0 and "already done" in r.stdout
    assert_same_run(run, reference)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_save_and_exit_then_resume(reference: Path, tmp_path: Path, sig: int, code: int):
    run = tmp_path / "run"
    proc = start("train", *TINY, "trainer.checkpoint_minutes=null", f"hydra.run.dir={run}", cwd=tmp_path)
    wait_for_lines(run, 1, proc)
    os.killpg(proc.pid, sig)  # the whole process group, as a terminal's Ctrl-C does: loader workers too
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert f"segcli train --resume {run}" in err and "Traceback" not in err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len({json.loads(x)["epoch"] for x in lines}) >= 1

    r = segcli("train", "resume=" + str(run), cwd=tmp_path)  # the key=value spelling
    assert r.returncode == 0, r.stderr
    assert_same_run(run, reference)


def test_resume_refuses_a_different_config_and_shows_it(reference: Path, tmp_path: Path):
    r = segcli("train", "--resume", str(reference), "optimizer.lr=0.1", cwd=tmp_path)
    assert_user_error(r, "optimizer.lr: 0.001 -> 0.1", "cannot change in a resumed run")
    r = segcli("train", "--resume", str(reference), "trainer.epochs=4", cwd=tmp_path)
    assert_user_error(r, "trainer.epochs: 3 -> 4", "--allow-changes")
    r = segcli("train", "--resume", str(reference), "model=fpn", cwd=tmp_path)
    assert_user_error(r, "model=fpn", "cannot change")
    r = segcli("train", "--resume", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert_user_error(r, "run directory not found")


def test_allowed_change_continues_a_finished_run(reference: Path, tmp_path: Path):
    import shutil

    run = tmp_path / "more"
    shutil.copytree(reference, run)
    r = segcli("train", "--resume", str(run), "--allow-changes", "trainer.epochs=4", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert [x["epoch"] for x in records(run)] == [1, 2, 3, 4]
    assert records(run)[:3] == records(reference)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 4 and summary["resumes"][0]["changes"] == {"trainer.epochs": [3, 4]}


def test_apply_overrides_and_config_changes():
    cfg = {"trainer": {"epochs": 3, "max_minutes": None}, "model": {"arch": "Unet"}}
    new = apply_overrides(cfg, ["trainer.epochs=5", "trainer.max_minutes=1.5"])
    assert new["trainer"] == {"epochs": 5, "max_minutes": 1.5} and cfg["trainer"]["epochs"] == 3
    assert config_changes(cfg, new) == {"trainer.epochs": (3, 5), "trainer.max_minutes": (None, 1.5)}
    with pytest.raises(SegcliError, match="no such key"):
        apply_overrides(cfg, ["trainer.epoch=5"])
    with pytest.raises(SegcliError, match="expected key=value"):
        apply_overrides(cfg, ["+trainer.new=1"])


def test_resume_config_needs_a_run_directory(tmp_path: Path):
    with pytest.raises(SegcliError, match="not a segcli run directory"):
        resume_config(tmp_path, [], False)


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path: Path):
    import random

    import numpy as np

    torch.save(capture_rng(), tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_a_kill_between_last_and_best_checkpoint_is_repaired_on_resume(reference: Path, tmp_path: Path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    (run / "summary.json").unlink()
    (run / "checkpoints" / "best.pt").unlink()  # last.pt of the final (best) epoch was written, best.pt not
    r = segcli("train", "--resume", str(run), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert_same_run(run, reference)


def test_more_minutes_continue_a_run_that_its_budget_stopped(tmp_path: Path):
    r = segcli("train", *TINY, "trainer.checkpoint_minutes=null", "trainer.max_minutes=0.0001", "hydra.run.dir=run",
               cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["stopped_by"] == "max_minutes"
    r = segcli("train", "--resume", "run", "--allow-changes", "trainer.max_minutes=null", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stopped_by"] == "epochs" and summary["epochs"] == 3
    assert [x["epoch"] for x in records(tmp_path / "run")] == [1, 2, 3]
