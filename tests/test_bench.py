"""segcli bench on tiny synthetic data: the table and the JSON file with the promised keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_cli import segcli


def test_bench_writes_every_key_and_consistent_ratios(tmp_path: Path):
    r = segcli("bench", "--seconds", "0.3", "--repeats", "1", "--crop", "64", "--json", "b.json",
               "dataset.image_size=[96,96]", "dataset.num_train=16", "dataset.num_val=4", "trainer.num_workers=0",
               cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    b = json.loads((tmp_path / "b.json").read_text())
    for key in ("train_images_per_s", "eval_images_per_s", "loader_images_per_s", "reference_train_images_per_s",
                "reference_eval_images_per_s", "metric_updates_per_s", "torchmetrics_updates_per_s",
                "naive_train_images_per_s", "naive_eval_images_per_s"):
        assert key in b
    assert all(b[k] > 0 for k in ("train_images_per_s", "eval_images_per_s", "loader_images_per_s",
                                  "reference_train_images_per_s", "metric_updates_per_s"))
    assert b["train_vs_reference"] == pytest.approx(b["train_images_per_s"] / b["reference_train_images_per_s"])
    assert b["settings"]["crop"] == [64, 64] and b["settings"]["eval_size"] == [96, 96]
    assert "train (images/s)" in r.stdout and "loader alone" in r.stdout
    r = segcli("bench", "--seconds", "0", cwd=tmp_path)
    assert r.returncode == 2 and "expected --seconds > 0" in r.stderr
