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
from helpers import TINY as TINY_BASE
from helpers import assert_user_error, segcli

from segcli.errors import SegcliError
from segcli.training.resume import (
    apply_overrides,
    capture_rng,
    config_changes,
    restore_rng,
    resume_config,
)

# A small deterministic run: 4 steps per epoch, last.pt after every step.
TINY = [
    *TINY_BASE,
    "dataset.num_train=16",
    "+model.params.encoder_depth=3",
    "+model.params.decoder_channels=[32,16,8]",
    "trainer.num_workers=2",
    "trainer.epochs=3",
    "trainer.deterministic=true",
    "trainer.checkpoint_minutes=1e-6",
]
TIMING = {"epoch_seconds", "train_images_per_second", "val_seconds"}
TESTS = Path(__file__).resolve().parents[1]  # pause_points.py


def start(*args: str, cwd: Path, pause: str | None = None) -> subprocess.Popen:
    """``segcli ARGS`` in its own process group; with ``pause`` (see pause_points.py) it stops at
    that point of training and waits there (``wait_paused``)."""
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    command = [sys.executable, "-m", "segcli", *args]
    if pause is not None:
        folder = cwd / ("pause-" + pause.replace(":", "-"))
        folder.mkdir()
        env.update(
            SEGCLI_PAUSE=pause,
            SEGCLI_PAUSE_DIR=str(folder),
            PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")])),
        )
        command = [sys.executable, "-m", "pause_points", *args]
    return subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_paused(proc: subprocess.Popen, cwd: Path, pause: str, timeout: float = 300) -> None:
    """Wait until ``proc`` (started with ``pause``) stands at its pause point."""
    marker = cwd / ("pause-" + pause.replace(":", "-")) / "paused"
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        if marker.exists():
            assert json.loads(marker.read_text())["point"] == pause
            return
        time.sleep(0.01)
    err = proc.communicate()[1] if proc.poll() is not None else "timed out"
    raise AssertionError(f"segcli never reached {pause}: exit {proc.poll()} {err}")


def release(cwd: Path, pause: str, after_signal: bool = False) -> None:
    """Let a paused run go on; ``after_signal``: first wait until its signal handler has run."""
    folder = cwd / ("pause-" + pause.replace(":", "-"))
    end = time.time() + 60
    while after_signal and not (folder / "signalled").exists():
        assert time.time() < end, "the signal was not handled"
        time.sleep(0.01)
    (folder / "release").touch()


def kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> tuple[str, str]:
    os.killpg(
        proc.pid, sig
    )  # the whole process group, as a terminal's Ctrl-C does: loader workers too
    return proc.communicate(timeout=120)


def saved_position(run: Path) -> tuple[int, int, int]:
    """(epoch to continue, optimizer steps done, steps done in that epoch) of ``last.pt``."""
    ckpt = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    return ckpt["progress"]["epoch"], ckpt["step"], ckpt["progress"]["epoch_totals"].get("steps", 0)


def wait_for_lines(run: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        path = run / "metrics.jsonl"
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.02)
    raise AssertionError(
        f"run did not reach {n} epochs: {proc.poll()} {proc.stderr.read() if proc.stderr else ''}"
    )


def records(run: Path) -> list[dict]:
    return [
        {k: v for k, v in json.loads(line).items() if k not in TIMING}
        for line in (run / "metrics.jsonl").read_text().splitlines()
    ]


def checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def leaves(value, prefix: str = "") -> dict:
    """``{dotted path: leaf}`` of a checkpoint's nested dicts and lists (tensors and plain
    values)."""
    if isinstance(value, dict):
        return {
            k: v for key, item in value.items() for k, v in leaves(item, f"{prefix}{key}.").items()
        }
    if isinstance(value, (list, tuple)) and any(
        isinstance(v, (dict, list, tuple, torch.Tensor)) for v in value
    ):
        return {
            k: v for i, item in enumerate(value) for k, v in leaves(item, f"{prefix}{i}.").items()
        }
    return {prefix.rstrip("."): value}


# What a resumed run's checkpoints may hold differently: wall-clock seconds and its resume records.
RESUME_ONLY = ("progress.elapsed", "progress.val_reserve", "progress.resumes")


def assert_same_checkpoint(a: Path, b: Path) -> None:
    """Every tensor (weights, optimizer moments, random states) equal; the same keys at every level;
    the same plain values except the timing and resume records."""
    la, lb = leaves(checkpoint(a)), leaves(checkpoint(b))
    la, lb = (
        {
            k: v
            for k, v in d.items()
            if not k.startswith(RESUME_ONLY) and k.rsplit(".", 1)[-1] not in TIMING
        }
        for d in (la, lb)
    )
    assert sorted(la) == sorted(lb)
    tensors = [k for k, v in lb.items() if isinstance(v, torch.Tensor)]
    assert len(tensors) > 50
    for key, value in lb.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(la[key], value), key
        else:
            assert la[key] == value, key


@pytest.fixture(scope="module")
def reference(module_tmp) -> Path:
    """The same run, never interrupted."""
    cwd = module_tmp("reference")
    r = segcli("train", *TINY, "hydra.run.dir=ref", cwd=cwd)
    assert r.returncode == 0, r.stderr
    return cwd / "ref"


def assert_same_run(run: Path, ref: Path) -> None:
    assert records(run) == records(ref)  # every loss, mIoU and lr, bit for bit; no line twice
    a, b = (
        json.loads((run / "summary.json").read_text()),
        json.loads((ref / "summary.json").read_text()),
    )
    assert a["status"] == "done" and a["best_epoch"] == b["best_epoch"] and a["val"] == b["val"]
    for name in ("best.pt", "last.pt"):
        assert_same_checkpoint(run / "checkpoints" / name, ref / "checkpoints" / name)
    assert {"optimizer", "rng", "progress"} <= set(checkpoint(run / "checkpoints" / "last.pt"))


def test_sigkill_at_two_points_then_resume_gives_the_uninterrupted_run(
    reference: Path, tmp_path: Path
):
    run = tmp_path / "run"
    # first kill: inside epoch 2, right after last.pt of step 6 (the epoch's second of four) was
    # written
    proc = start("train", *TINY, f"hydra.run.dir={run}", cwd=tmp_path, pause="checkpoint:2:6")
    wait_paused(proc, tmp_path, "checkpoint:2:6")
    kill(proc)
    assert saved_position(run) == (2, 6, 2)
    assert [x["epoch"] for x in records(run)] == [1] and not (run / "summary.json").exists()

    # second kill: the resumed run, right after epoch 2's metrics line
    proc = start("train", "--resume", str(run), cwd=tmp_path, pause="epoch_line:2")
    wait_paused(proc, tmp_path, "epoch_line:2")
    out, _ = kill(proc)
    assert "resuming at epoch 2, step 6" in out
    assert saved_position(run) == (3, 8, 0)
    assert [x["epoch"] for x in records(run)] == [1, 2] and not (run / "summary.json").exists()

    r = segcli("train", "--resume", str(run), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "resuming at epoch 3, step 8" in r.stdout and r.stdout.strip().splitlines()[-1] == str(
        run
    )
    assert_same_run(run, reference)
    summary = json.loads((run / "summary.json").read_text())
    amp = summary["precision"][
        "amp"
    ]  # trainer.amp=auto: what this machine computes in, each process alike
    assert summary["resumes"] == [
        {"epoch": 2, "step": 6, "changes": {}, "amp": amp},
        {"epoch": 3, "step": 8, "changes": {}, "amp": amp},
    ]

    r = segcli("train", "--resume", str(run), cwd=tmp_path)  # a finished run is left alone
    assert r.returncode == 0 and "already done" in r.stdout
    assert_same_run(run, reference)


def test_sigkill_between_last_pt_and_its_metrics_line_then_resume_gives_the_uninterrupted_run(
    reference: Path, tmp_path: Path
):
    """The end of epoch 1 writes last.pt (epoch 2 to come, step 4), then best.pt, then epoch 1's
    line of metrics.jsonl: killed right after last.pt, the line is missing; the resume writes it
    from last.pt's history (``RunDir.rewrite_metrics``) and best.pt from last.pt's weights."""
    run = tmp_path / "run"
    proc = start("train", *TINY, f"hydra.run.dir={run}", cwd=tmp_path, pause="checkpoint:2:4")
    wait_paused(proc, tmp_path, "checkpoint:2:4")
    kill(proc)
    assert saved_position(run) == (2, 4, 0)
    assert (
        not (run / "metrics.jsonl").exists() or records(run) == []
    )  # epoch 1's line never written
    assert [
        x["epoch"] for x in checkpoint(run / "checkpoints" / "last.pt")["progress"]["history"]
    ] == [1]
    assert not (run / "checkpoints" / "best.pt").exists() and not (run / "summary.json").exists()

    r = segcli("train", "--resume", str(run), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "resuming at epoch 2, step 4" in r.stdout
    assert_same_run(run, reference)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_save_and_exit_then_resume(
    reference: Path, tmp_path: Path, sig: int, code: int
):
    run = tmp_path / "run"
    proc = start("train", *TINY, f"hydra.run.dir={run}", cwd=tmp_path, pause="epoch_line:1")
    wait_paused(proc, tmp_path, "epoch_line:1")
    os.killpg(
        proc.pid, sig
    )  # the whole process group, as a terminal's Ctrl-C does: loader workers too
    release(
        tmp_path, "epoch_line:1", after_signal=True
    )  # acted on at the end of epoch 1, before epoch 2
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == code, err
    assert f"segcli train --resume {run}" in err and "Traceback" not in err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and (summary["epoch"], summary["step"]) == (2, 4)
    assert saved_position(run) == (2, 4, 0) and [x["epoch"] for x in records(run)] == [1]

    r = segcli("train", "resume=" + str(run), cwd=tmp_path)  # the key=value spelling
    assert r.returncode == 0, r.stderr
    assert "resuming at epoch 2, step 4" in r.stdout
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
    assert config_changes(cfg, new) == {
        "trainer.epochs": (3, 5),
        "trainer.max_minutes": (None, 1.5),
    }
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


def test_a_kill_between_last_and_best_checkpoint_is_repaired_on_resume(
    reference: Path, tmp_path: Path
):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    (run / "summary.json").unlink()
    (
        run / "checkpoints" / "best.pt"
    ).unlink()  # last.pt of the final (best) epoch was written, best.pt not
    r = segcli("train", "--resume", str(run), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert_same_run(run, reference)


def test_more_minutes_continue_a_run_that_its_budget_stopped(tmp_path: Path):
    r = segcli(
        "train",
        *TINY,
        "trainer.checkpoint_minutes=null",
        "trainer.max_minutes=0.0001",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert (
        json.loads((tmp_path / "run" / "summary.json").read_text())["stopped_by"] == "max_minutes"
    )
    r = segcli(
        "train", "--resume", "run", "--allow-changes", "trainer.max_minutes=null", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stopped_by"] == "epochs" and summary["epochs"] == 3
    assert [x["epoch"] for x in records(tmp_path / "run")] == [1, 2, 3]
