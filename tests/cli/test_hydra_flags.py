"""Every command that composes the training config (train, data check, bench) takes Hydra's
--config-dir/-cd, --config-name and --cfg job as train does, and an option it does not know gets
segcli's one-line error naming it (issue: a new user's `segcli data check --config-dir conf
dataset=mine` got Hydra's grammar trace)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import segcli, write_pair


@pytest.fixture(scope="module")
def doctored(module_tmp) -> Path:
    """A folder dataset (images/ + masks/, 6 pairs, 3 classes) and the config segcli data doctor
    wrote for it in ``myconf/dataset/mine.yaml``; returns the working folder."""
    base = module_tmp("doctored")
    for i in range(6):
        write_pair(base / "mine" / "images", base / "mine" / "masks", f"im{i}", 48, 64, 3, seed=i)
    r = segcli("data", "doctor", "mine", "--write", "myconf/dataset/mine.yaml", cwd=base)
    assert r.returncode == 0 and "segcli train --config-dir myconf dataset=mine" in r.stdout
    return base


def test_data_check_takes_the_config_dir_doctor_told_the_user_to_train_with(doctored):
    for flag in ("--config-dir", "-cd"):
        r = segcli("data", "check", flag, "myconf", "dataset=mine", cwd=doctored)
        assert r.returncode == 0, r.stderr
        assert "no problems found" in r.stdout and "Lexer" not in r.stderr
    # --cfg job prints the composed config instead of checking: the doctor's file, as composed
    r = segcli(
        "data",
        "check",
        "-cd",
        "myconf",
        "dataset=mine",
        "--cfg",
        "job",
        "-p",
        "dataset",
        cwd=doctored,
    )
    assert r.returncode == 0, r.stderr
    written = yaml.safe_load((doctored / "myconf" / "dataset" / "mine.yaml").read_text())
    shown = yaml.safe_load(r.stdout)
    assert shown == {**shown, **written} and shown["root"] == "mine"
    assert "problem" not in r.stdout  # nothing was checked


def test_bench_composes_with_the_config_dir_and_its_own_options_on_top(doctored):
    r = segcli(
        "bench",
        "--crop",
        "96",
        "--config-dir",
        "myconf",
        "dataset=mine",
        "trainer.batch_size=3",
        "--cfg",
        "job",
        cwd=doctored,
    )
    assert r.returncode == 0, r.stderr
    cfg = yaml.safe_load(r.stdout)
    assert cfg["dataset"]["root"] == "mine" and cfg["dataset"]["kind"] == "folder"
    assert cfg["dataset"]["crop_size"] == [96, 96] and cfg["trainer"]["batch_size"] == 3
    assert "images/s" not in r.stdout  # --cfg job: printed, not benchmarked


@pytest.mark.parametrize("command", [["train"], ["data", "check"], ["bench"]])
def test_an_unknown_option_is_named_in_one_line(command, tmp_path):
    r = segcli(*command, "--bogus-flag", "trainer.epochs=1", cwd=tmp_path)
    name = "segcli " + " ".join(command)
    assert r.returncode == 2
    assert r.stderr.startswith(f"segcli: error: {name}: unknown option --bogus-flag;")
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_flags_that_run_jobs_or_lack_a_value_are_refused_in_one_line(tmp_path):
    r = segcli("data", "check", "-m", "dataset=synthetic", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "segcli data check: -m/--multirun is segcli train's" in r.stderr
    r = segcli("bench", "--config-dir", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "usage:" not in r.stderr
    assert "segcli bench: argument --config-dir/-cd: expected one argument" in r.stderr
