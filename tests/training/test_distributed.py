"""torchrun: two CPU processes on the gloo backend train one run; rank 0 alone writes it; the
distributed validation (shards, summed confusion matrices) gives the mIoU a single process gets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import TINY, segcli

from segcli.data.loaders import EpochSampler


@pytest.mark.parametrize("length,world", [(10, 2), (11, 2), (7, 3), (2, 3)])
def test_training_shards_are_torch_distributed_samplers_over_the_epoch_order(length, world):
    from torch.utils.data.distributed import DistributedSampler

    for rank in range(world):
        ours = EpochSampler(length, seed=5, shuffle=True, rank=rank, world=world)
        ours.set_epoch(3)
        order = EpochSampler(length, seed=5, shuffle=True)
        order.set_epoch(3)
        order = order.order()
        torch_sampler = DistributedSampler(
            range(length), num_replicas=world, rank=rank, shuffle=False
        )
        assert [i for _, i in ours] == [order[i] for i in torch_sampler]
        assert len(ours) == len(torch_sampler)


def test_evaluation_shards_cover_the_split_once():
    shards = []
    for rank in range(3):
        sampler = EpochSampler(11, seed=0, shuffle=False, rank=rank, world=3)
        shards += [i for _, i in sampler]
        assert len(sampler) == len(list(sampler))
    assert sorted(shards) == list(range(11))


def torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_port=29517",
            "-m",
            "segcli",
            "train",
            *args,
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_torchrun_two_gloo_processes_match_a_single_process(tmp_path: Path):
    args = [
        *TINY,
        "trainer.epochs=2",
        "dataset.num_train=16",
        "dataset.num_val=7",
        "hydra.run.dir=ddp",
    ]
    r = torchrun(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == str(tmp_path / "ddp")
    assert r.stdout.count("best val mIoU") == 1  # rank 1 prints nothing
    run = tmp_path / "ddp"
    summary = json.loads((run / "summary.json").read_text())
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert summary["status"] == "done" and [x["epoch"] for x in lines] == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]  # no second run folder
    # 16 images on 2 ranks, batch 4 per rank: 2 steps per rank per epoch, 16 images in all
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["progress"]["step"] == 4

    r = segcli("eval", "ddp/checkpoints/best.pt", "--json", "e.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    single = json.loads((tmp_path / "e.json").read_text())
    assert single["images"] == 7
    assert single["miou"] == pytest.approx(summary["val"]["miou"], abs=1e-12)
    assert single["per_class_iou"] == pytest.approx(summary["val"]["per_class_iou"], abs=1e-12)
    # each rank validated its own shard (4 + 3 images): the summed matrix counts every pixel once
    # (two ranks each validating the whole split would double it and leave IoU unchanged)
    matrix = torch.tensor(summary["val"]["confusion_matrix"])
    assert int(matrix.sum()) == 7 * 64 * 64

    # the same start-or-resume decision as a single run (jobs.run_job, tested in test_sweeps): a
    # finished run is refused with trainer.skip_if_done=false, which torchrun used to ignore
    r = torchrun(*args, "trainer.skip_if_done=false", cwd=tmp_path)
    assert r.returncode != 0 and "holds a finished run of this config" in r.stderr
    assert json.loads((run / "summary.json").read_text()) == summary
