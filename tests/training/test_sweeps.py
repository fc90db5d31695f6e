"""Sweeps as users run them: Hydra multirun (basic, joblib, optuna, submitit), shell loops, and
`segcli runs` ranking the results. Tiny synthetic runs; each test checks the files the sweep
wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import TINY, segcli

REPO = Path(__file__).resolve().parents[2]


def job_dirs(sweep: Path) -> dict[str, Path]:
    return {p.parent.parent.name: p.parent.parent for p in sweep.glob("*/.hydra/overrides.yaml")}


def status(job: Path) -> str | None:
    path = job / "summary.json"
    return json.loads(path.read_text())["status"] if path.is_file() else None


def test_multirun_2x2_then_rerun_skips_done_resumes_unfinished_and_runs_missing(tmp_path: Path):
    cmd = ("train", "-m", "loss=ce,dice", "seed=0,1", *TINY)
    r = segcli(*cmd, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (sweep,) = (
        tmp_path / "multirun"
    ).iterdir()  # the default folder: multirun/sweep-HASH of the overrides
    assert sweep.name.startswith("sweep-") and "sweep done: 4 job(s)" in r.stdout
    jobs = job_dirs(sweep)
    assert sorted(jobs) == ["0", "1", "2", "3"] and all(status(j) == "done" for j in jobs.values())
    first = {
        n: json.loads((j / "summary.json").read_text())["val"]["miou"] for n, j in jobs.items()
    }

    (jobs["1"] / "summary.json").unlink()  # killed after its last checkpoint
    for path in sorted(jobs["2"].rglob("*"), reverse=True):  # never started
        path.unlink() if path.is_file() else path.rmdir()
    jobs["2"].rmdir()
    r = segcli(*cmd, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert [p.name for p in (tmp_path / "multirun").iterdir()] == [
        sweep.name
    ]  # the same sweep folder
    assert r.stdout.count("already done; skipped") == 2
    assert f"{jobs['1']}: unfinished run of this config; resuming it" in r.stdout
    assert all(status(j) == "done" for j in job_dirs(sweep).values())
    again = {
        n: json.loads((j / "summary.json").read_text())["val"]["miou"]
        for n, j in job_dirs(sweep).items()
    }
    assert again["0"] == first["0"] and again["3"] == first["3"] and again["1"] == first["1"]
    assert yaml.safe_load((jobs["0"] / ".hydra" / "overrides.yaml").read_text())[:2] == [
        "loss=ce",
        "seed=0",
    ]

    # segcli runs ranks them: the differing overrides, best first, csv/json/filter
    r = segcli("runs", "--format", "json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    runs = json.loads(r.stdout)
    assert len(runs) == 4 and all(x["status"] == "done" and x["epochs"] == 1 for x in runs)
    assert [x["miou"] for x in runs] == sorted(again.values(), reverse=True)
    assert set(runs[0]["overrides"]) == {"loss", "seed"}
    r = segcli(
        "runs",
        "multirun",
        "--format",
        "csv",
        "--filter",
        "loss=dice",
        "--sort",
        "seed",
        cwd=tmp_path,
    )
    lines = r.stdout.strip().splitlines()
    assert (
        lines[0] == "name,overrides,miou,mdice,best_epoch,epochs,minutes,status" and len(lines) == 3
    )
    assert "loss=dice seed=0" in lines[1] and "loss=dice seed=1" in lines[2]
    r = segcli("runs", "--filter", "miou>2", cwd=tmp_path)
    assert r.returncode == 0 and "0 run(s)" in r.stdout
    r = segcli("runs", "--filter", "miou~2", cwd=tmp_path)
    assert r.returncode == 2 and "--filter miou~2: expected KEY=VALUE" in r.stderr

    # seeds as an axis: one row per loss, mean and sample std over its two seeds
    r = segcli("runs", "--group-seeds", "--format", "json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    groups = {g["overrides"]: g for g in json.loads(r.stdout)}
    assert set(groups) == {"loss=ce", "loss=dice"}
    for loss, (a, b) in (("ce", (again["0"], again["1"])), ("dice", (again["2"], again["3"]))):
        g = groups[f"loss={loss}"]
        assert g["n"] == 2 and g["seeds"] == "0 1" and [x["seed"] for x in g["runs"]] == ["0", "1"]
        assert g["miou_mean"] == pytest.approx((a + b) / 2) and g["miou_std"] == pytest.approx(
            abs(a - b) / 2**0.5
        )
        assert sorted(x["miou"] for x in g["runs"]) == sorted([a, b])
    r = segcli("runs", "--group-seeds", cwd=tmp_path)
    assert (
        r.returncode == 0
        and "2 config(s)" in r.stdout
        and "loss=ce" in r.stdout
        and " ± " in r.stdout
    )
    r = segcli("runs", "--group-seeds", "--format", "csv", cwd=tmp_path)
    assert r.stdout.splitlines()[0] == "overrides,n,seeds,miou_mean,miou_std,mdice_mean,mdice_std"


def test_a_failed_job_does_not_stop_the_sweep(tmp_path: Path):
    cmd = (
        "train",
        "-m",
        "trainer.batch_size=0,4",
        *[a for a in TINY if not a.startswith("trainer.batch_size")],
        "hydra.sweep.dir=sw",
    )
    r = segcli(*cmd, cwd=tmp_path)
    assert r.returncode == 1
    assert "segcli: error: job 0: trainer.batch_size=0: expected an integer >= 1" in r.stderr
    assert "1 of 2 job(s) failed in sw" in r.stderr and "Traceback" not in r.stderr
    assert status(tmp_path / "sw" / "1") == "done" and not (tmp_path / "sw" / "0").exists()
    failures = [
        json.loads(x) for x in (tmp_path / "sw" / "failures.jsonl").read_text().splitlines()
    ]
    assert [f["job"] for f in failures] == [0] and "trainer.batch_size=0" in failures[0][
        "overrides"
    ]
    r = segcli(*cmd, cwd=tmp_path)  # the re-run retries the failed job and skips the finished one
    assert (
        r.returncode == 1
        and "already done; skipped" in r.stdout
        and "1 of 2 job(s) failed" in r.stderr
    )
    r = segcli(
        "--debug", *cmd, cwd=tmp_path
    )  # --debug shows the failing job's traceback, and the sweep goes on
    assert (
        r.returncode == 1
        and "Traceback" in r.stderr
        and "segcli/config.py" in r.stderr
        and "raise SegcliError(" in r.stderr
    )
    assert "1 of 2 job(s) failed" in r.stderr


def test_a_run_folder_of_another_config_is_refused_and_its_record_kept(tmp_path: Path):
    r = segcli("train", "run.name=a", *TINY, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = segcli("train", "run.name=a", *TINY, cwd=tmp_path)
    assert r.returncode == 0 and "already done; skipped" in r.stdout
    r = segcli("train", "run.name=a", *TINY, "optimizer.lr=0.1", cwd=tmp_path)
    assert (
        r.returncode == 2
        and "holds a run of another config (optimizer.lr: 0.001 -> 0.1)" in r.stderr
    )
    assert (
        "optimizer.lr=0.1"
        not in (tmp_path / "outputs" / "a" / ".hydra" / "overrides.yaml").read_text()
    )
    r = segcli("train", "run.name=a", *TINY, "trainer.skip_if_done=false", cwd=tmp_path)
    assert r.returncode == 2 and "holds a finished run of this config" in r.stderr
    # a run made before an option existed (no `logger` in its config) still counts as the same
    # config
    import torch

    last = tmp_path / "outputs" / "a" / "checkpoints" / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    del ckpt["config"]["logger"]
    torch.save(ckpt, last)
    r = segcli("train", "run.name=a", *TINY, cwd=tmp_path)
    assert r.returncode == 0 and "already done; skipped" in r.stdout


def test_joblib_launcher_runs_the_jobs_in_parallel(tmp_path: Path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    # with DataLoader workers: a loky process's own start method cannot start them (found by hand)
    r = segcli(
        "train",
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "loss=ce,dice",
        "seed=0,1",
        *TINY,
        "trainer.num_workers=1",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    (sweep,) = (tmp_path / "multirun").iterdir()
    jobs = job_dirs(sweep)
    assert sorted(jobs) == ["0", "1", "2", "3"] and all(status(j) == "done" for j in jobs.values())
    assert "Joblib.Parallel(n_jobs=2" in r.stdout + r.stderr


def test_optuna_sweeper_maximises_val_miou(tmp_path: Path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    r = segcli(
        "train",
        "-m",
        "hydra/sweeper=optuna",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.direction=maximize",
        "hydra.sweeper.sampler.seed=0",
        "optimizer.lr=interval(0.0001,0.01)",
        "hydra.sweep.dir=opt",
        *TINY,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    jobs = job_dirs(tmp_path / "opt")
    assert len(jobs) == 3 and all(status(j) == "done" for j in jobs.values())
    best = yaml.safe_load((tmp_path / "opt" / "optimization_results.yaml").read_text())
    scores = [json.loads((j / "summary.json").read_text())["val"]["miou"] for j in jobs.values()]
    assert best["best_value"] == pytest.approx(max(scores))
    assert 1e-4 <= best["best_params"]["optimizer.lr"] <= 1e-2


def test_submitit_slurm_launcher_config_composes(tmp_path: Path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    r = segcli(
        "train",
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.gpus_per_node=1",
        "hydra.launcher.timeout_min=60",
        "--cfg",
        "hydra",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    launcher = yaml.safe_load(r.stdout)["hydra"]["launcher"]
    assert (
        launcher["_target_"]
        == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    )
    assert (
        launcher["partition"] == "gpu"
        and launcher["gpus_per_node"] == 1
        and launcher["timeout_min"] == 60
    )
    assert not (tmp_path / "multirun").exists()


def test_submitit_local_executor_runs_a_sweep(tmp_path: Path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    r = segcli(
        "train",
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        "loss=ce,dice",
        "hydra.sweep.dir=sub",
        *TINY,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    jobs = job_dirs(tmp_path / "sub")
    assert sorted(jobs) == ["0", "1"] and all(status(j) == "done" for j in jobs.values())
    assert list((tmp_path / "sub" / ".submitit").glob("*/*_result.pkl"))  # submitit ran them


def test_shell_loop_example(tmp_path: Path):
    env = {
        **os.environ,
        "NO_ALBUMENTATIONS_UPDATE": "1",
        "MODELS": "unet",
        "LOSSES": "ce dice",
        "SEEDS": "0",
        "SEGCLI": f"{sys.executable} -m segcli",
    }
    run = lambda *extra: subprocess.run(
        ["bash", str(REPO / "examples" / "sweep.sh"), *TINY, *extra],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    r = run()
    assert r.returncode == 0, r.stderr
    assert "2 run(s) under outputs/sweep" in r.stdout
    assert all(
        status(tmp_path / "outputs" / "sweep" / n) == "done" for n in ("unet_ce_s0", "unet_dice_s0")
    )
    mtime = (tmp_path / "outputs" / "sweep" / "unet_ce_s0" / "summary.json").stat().st_mtime
    r = run()  # the re-run skips both
    assert (
        r.returncode == 0
        and (tmp_path / "outputs" / "sweep" / "unet_ce_s0" / "summary.json").stat().st_mtime
        == mtime
    )
    r = run("trainer.batch_size=0")  # every run fails: listed, exit 1
    assert r.returncode == 1 and "failed: sweep/unet_ce_s0 sweep/unet_dice_s0" in r.stderr


def test_plots_samples_and_loggers_record_the_same_numbers(tmp_path: Path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setenv(
        "MLFLOW_ALLOW_FILE_STORE", "true"
    )  # MLflow 3 reads its file store only when asked
    for package in (
        "tensorboard",
        "mlflow",
    ):  # both come with the test extra: a visible skip otherwise
        if not _has(package):
            pytest.skip(f"{package} is not installed (pip install -e '.[test]')")
    r = segcli(
        "train",
        "-m",
        "logger=csv,tensorboard,mlflow",
        *[a for a in TINY if a != "trainer.epochs=1"],
        "trainer.epochs=2",
        "hydra.sweep.dir=lg",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    jobs = {
        yaml.safe_load((j / ".hydra" / "overrides.yaml").read_text())[0].split("=")[1]: j
        for j in job_dirs(tmp_path / "lg").values()
    }
    assert sorted(jobs) == ["csv", "mlflow", "tensorboard"]
    for name, job in jobs.items():
        records = [json.loads(x) for x in (job / "metrics.jsonl").read_text().splitlines()]
        summary = json.loads((job / "summary.json").read_text())
        # the best epoch's confusion matrix gives the summary's per-class IoU
        import numpy as np

        m = np.asarray(summary["val"]["confusion_matrix"], dtype=float)
        iou = np.diag(m) / (m.sum(0) + m.sum(1) - np.diag(m))
        assert [v for v in iou if not np.isnan(v)] == pytest.approx(
            [v for v in summary["val"]["per_class_iou"].values() if v is not None]
        )
        sample = __import__("cv2").imread(str(job / "samples" / "best.png"))
        assert sample.shape == (4 * (64 + 4), 3 * 64, 3)  # 4 val images: image | truth | prediction
        if name == "csv":
            import csv

            rows = list(csv.DictReader((job / "metrics.csv").open()))
            assert [float(r["val_miou"]) for r in rows] == pytest.approx(
                [x["val_miou"] for x in records]
            )
        if name == "tensorboard":
            from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

            events = EventAccumulator(str(job / "tensorboard"))
            events.Reload()
            scalars = events.Scalars("val/miou")
            assert [e.step for e in scalars] == [x["epoch"] for x in records]
            assert [e.value for e in scalars] == pytest.approx(
                [x["val_miou"] for x in records], rel=1e-6
            )
        if name == "mlflow":
            from mlflow.tracking import MlflowClient

            client = MlflowClient((tmp_path / "mlruns").resolve().as_uri())
            (run,) = client.search_runs([client.get_experiment_by_name("segcli").experiment_id])
            assert run.info.status == "FINISHED" and run.data.params["optimizer.lr"] == "0.001"
            history = client.get_metric_history(run.info.run_id, "val_miou")
            assert [h.step for h in history] == [x["epoch"] for x in records]
            assert [h.value for h in history] == pytest.approx([x["val_miou"] for x in records])

    r = segcli("plot", *[str(j) for j in jobs.values()], "-o", "plots", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    written = r.stdout.split()
    assert written[:2] == ["plots/curves.png", "plots/per_class_iou.png"] and len(
        written
    ) == 2 + len(jobs)
    assert all((tmp_path / w).stat().st_size > 10_000 for w in written)
    assert "plots/confusion_logger_csv.png" in written
    r = segcli("plot", "nowhere", cwd=tmp_path)
    assert r.returncode == 2 and "nowhere: not a segcli run" in r.stderr


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
