"""segcli bench on tiny synthetic data: the table and the JSON file with the promised keys."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers import assert_user_error, segcli


def test_bench_writes_every_key_and_consistent_ratios(tmp_path: Path):
    r = segcli(
        "bench",
        "--seconds",
        "0.3",
        "--repeats",
        "1",
        "--crop",
        "64",
        "--json",
        "b.json",
        "dataset.image_size=[96,96]",
        "dataset.num_train=16",
        "dataset.num_val=4",
        "trainer.num_workers=0",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    b = json.loads((tmp_path / "b.json").read_text())
    for key in (
        "train_images_per_s",
        "eval_images_per_s",
        "loader_images_per_s",
        "reference_train_images_per_s",
        "reference_eval_images_per_s",
        "metric_updates_per_s",
        "torchmetrics_updates_per_s",
        "naive_train_images_per_s",
        "naive_eval_images_per_s",
    ):
        assert key in b
    numbers = {
        k: v for k, v in b.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    assert len(numbers) == 14  # 9 rates (torchmetrics is in the test extra) and 5 ratios
    assert all(math.isfinite(v) and v > 0 for v in numbers.values()), numbers
    assert all(0 < lo <= hi and math.isfinite(hi) for lo, hi in b["spread"].values())
    assert b["train_vs_reference"] == pytest.approx(
        b["train_images_per_s"] / b["reference_train_images_per_s"]
    )
    assert b["settings"]["crop"] == [64, 64] and b["settings"]["eval_size"] == [96, 96]
    assert "train (images/s)" in r.stdout and "loader alone" in r.stdout
    assert_user_error(segcli("bench", "--seconds", "0", cwd=tmp_path), "expected --seconds > 0")


def test_bench_refuses_a_classical_baseline_in_one_line():
    from segcli.config import compose_config, to_plain
    from segcli.errors import SegcliError
    from segcli.training.bench import benchmark

    cfg = to_plain(
        compose_config(
            [
                "model=pixel_forest",
                "trainer.num_workers=0",
                "trainer.batch_size=2",
                "dataset.num_train=4",
                "dataset.num_val=2",
                "dataset.image_size=[32,32]",
                "dataset.crop_size=[32,32]",
            ]
        )
    )
    with pytest.raises(SegcliError) as err:
        benchmark(cfg, seconds=0.05, repeats=1, crop=32)
    assert str(err.value) == (
        "model.arch=pixel_forest: segcli bench times optimizer steps; this baseline has none "
        "(its train and eval images/s are in the run's metrics.jsonl)"
    )
