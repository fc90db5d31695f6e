"""``segcli train`` and ``segcli bench``: the config composed from trailing Hydra arguments, handed
to ``training.jobs`` (one run, a sweep's job, a torchrun rank, a resume) or ``training.bench``.
"""

from __future__ import annotations

import math
import shutil
import textwrap
import traceback
from pathlib import Path
from typing import Annotated

import typer

from segcli import console
from segcli.cli.common import AmpOption, JsonOption, user_errors
from segcli.config import (
    check_train_args,
    config_dir,
    distributed_args,
    group_options,
    run_hydra,
    sweep_args,
    to_plain,
)
from segcli.errors import RunInterrupted, SegcliError

HYDRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}


SUMMARY = "Train a model. OVERRIDES use Hydra's syntax: group=option, key=value, +new_key=value."


def instance_options(group: str) -> set[str]:
    """The packaged options of ``group`` that only task=instance takes (``tasks.options_for``)."""
    from segcli.tasks import TASK_GROUPS, options_for

    if group not in TASK_GROUPS:
        return set()
    return set(options_for(group, "instance")) - set(options_for(group, "semantic"))


def train_help() -> str:
    lines = [
        SUMMARY,
        "",
        "Config groups (files of conf/; add your own with --config-dir DIR):",
        "",
    ]
    # the terminal's width (COLUMNS too), less Typer's margin: each group's options wrap under it
    width = max(60, shutil.get_terminal_size().columns - 2)
    for group, options in group_options().items():
        shown = [f"{o} (instance)" if o in instance_options(group) else o for o in options]
        lines += textwrap.wrap(
            ", ".join(shown), width, initial_indent=f"  {group:<13} ", subsequent_indent=" " * 16
        )
    legend = "(instance): an option of task=instance only; the others are semantic"
    lines += textwrap.wrap(legend, width, initial_indent=" " * 16, subsequent_indent=" " * 16)
    lines += [
        "",
        "Examples:",
        "",
        "  segcli train model=fpn model.encoder_name=resnet34 trainer.epochs=30 optimizer.lr=3e-4",
        "  segcli train dataset=camvid dataset.root=data/camvid trainer.max_minutes=20",
        "  segcli train --cfg job          print the composed config (--resolve to resolve it)",
        "  segcli train -m loss=ce,dice    a Hydra multirun sweep",
        "  segcli train task=instance      Mask R-CNN: one mask, class and score per object",
        "  segcli train --resume RUN_DIR   continue a stopped run from checkpoints/last.pt",
        "  segcli train --resume RUN_DIR --allow-changes trainer.epochs=100",
        "",
        (
            f"Configs: {config_dir()}. Hydra's own flags (--cfg, -m, --config-dir, --hydra-help) "
            "pass through."
        ),
    ]
    return "\b\n" + "\n".join(lines)  # \b: click keeps the line breaks


def _train_task(cfg) -> float:
    """Hydra's task function: returns the best val mIoU (mask AP for task=instance; NaN for a
    failed job of a sweep), the objective of Hydra's optuna sweeper. In a sweep a job's error is
    printed (with its traceback under --debug), recorded in the sweep's failures.jsonl, and the
    next job runs; Ctrl-C still stops the whole sweep. Under torchrun every rank runs the job in
    rank 0's run folder."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from segcli.training import distributed, jobs, sweeps

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if distributed.launched_by_torchrun():
        return _train_distributed(cfg, run_dir)
    if hydra_cfg.mode != RunMode.MULTIRUN:
        with user_errors():
            return _report_best(jobs.run_job(to_plain(cfg), run_dir), run_dir)
    try:
        summary = jobs.run_job(to_plain(cfg), run_dir)
    except (RunInterrupted, KeyboardInterrupt):
        with user_errors():
            raise
    except Exception as exc:  # noqa: BLE001 - any job failure is reported and the sweep goes on
        line = (
            console.error_line(exc)
            if isinstance(exc, SegcliError)
            else f"{type(exc).__name__}: {exc}"
        )
        if console.debugging():
            traceback.print_exc()
        console.error(f"job {hydra_cfg.job.num}: {line}")
        sweeps.record_job_failure(hydra_cfg, run_dir, line)
        return math.nan
    return _report_best(summary, run_dir)


def _report_best(summary: dict, run_dir: Path, processes: int = 1) -> float:
    """Print the best val mIoU and, as the last line, the run folder (``run=$(segcli train ... |
    tail -1)``); returns the mIoU (NaN when none)."""
    key = summary.get("key_metric", "miou")  # task=instance: mask_ap
    best = summary.get("val") and summary["val"].get(key)
    where = f" ({processes} processes)" if processes > 1 else ""
    label = {"miou": "mIoU", "mask_ap": "mask AP"}.get(key, key)
    console.out.print(
        f"best val {label} {console.fmt(best)} at epoch {summary.get('best_epoch')}{where}; "
        "run directory:",
        highlight=False,
    )
    print(run_dir, flush=True)
    return math.nan if best is None else float(best)


def _train_distributed(cfg, run_dir: Path) -> float:
    """One rank of ``torchrun -m segcli train``: join the group, take rank 0's run folder (the other
    ranks' Hydra folders are throw-away temporary ones), run the job; only rank 0 prints and
    writes."""
    from segcli.training import distributed, jobs

    ddp = distributed.init_from_env()
    run_dir = distributed.shared_run_dir(ddp, run_dir)
    if not ddp.main:
        console.out.quiet = True
    try:
        with user_errors():
            summary = jobs.run_job(to_plain(cfg), run_dir, ddp)
    finally:
        distributed.shutdown()
    if not ddp.main:
        return math.nan
    return _report_best(summary, run_dir, ddp.world)


def _resume(run_dir: Path, overrides: list[str], allow_changes: bool) -> None:
    from segcli.training import jobs

    with user_errors():
        summary = jobs.resume(run_dir, overrides, allow_changes)
    _report_best(summary, run_dir.resolve())


def train(
    ctx: typer.Context,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            help="Continue RUN_DIR from checkpoints/last.pt (also: resume=RUN_DIR). "
            "OVERRIDES must then match the run's config, or be safe changes with --allow-changes.",
        ),
    ] = None,
    allow_changes: Annotated[
        bool,
        typer.Option(
            "--allow-changes",
            help="With --resume: apply safe changes (more epochs, max_minutes, num_workers, ...).",
        ),
    ] = False,
) -> None:
    """Compose the config from the trailing arguments and run the training job under Hydra."""
    from segcli.training import distributed

    args = list(ctx.args)
    for arg in list(args):
        if arg.startswith("resume="):
            args.remove(arg)
            resume = Path(arg.split("=", 1)[1])
    if resume is not None:
        if distributed.launched_by_torchrun():
            with user_errors():
                raise SegcliError(
                    f"--resume under torchrun: start the same command with hydra.run.dir={resume}; "
                    "the ranks resume it together"
                )
        _resume(resume, args, allow_changes)
        return
    with user_errors():
        if allow_changes:
            raise SegcliError("--allow-changes only applies with --resume RUN_DIR")
        check_train_args(args)
    args = sweep_args(args)
    if distributed.launched_by_torchrun():
        with user_errors():
            args = distributed_args(args)
    run_hydra(_train_task, args)  # a sweep with failed jobs exits 1 (sweeps.SweepReport)


def bench(
    ctx: typer.Context,
    seconds: Annotated[
        float, typer.Option(help="Seconds per timed phase (after one warm-up step).")
    ] = 20.0,
    repeats: Annotated[
        int,
        typer.Option(help="Alternating repeats of engine/reference/naive; the median is shown."),
    ] = 2,
    crop: Annotated[int, typer.Option(help="Training crop size in pixels (square).")] = 256,
    json_path: JsonOption = None,
    amp: AmpOption = None,
) -> None:
    """Images/s of segcli's train and eval loops against a hand-written PyTorch loop with the same
    settings and a plain eager float32 one, the data loader alone, and metric updates/s against
    torchmetrics, for the config composed from OVERRIDES and Hydra's --config-dir/-cd,
    --config-name, --cfg job (as segcli train)."""
    from segcli.config import compose_command
    from segcli.files import write_json
    from segcli.training.bench import benchmark

    with user_errors():
        amp_override = [f"trainer.amp={amp}"] if amp is not None else []
        composed = compose_command(
            ctx.args, "segcli bench", [f"dataset.crop_size=[{crop},{crop}]", *amp_override]
        )
        if composed.show is not None:
            console.out.print(composed.show, end="", highlight=False, markup=False)
            return
        cfg = to_plain(composed.cfg)
        result = benchmark(cfg, seconds, repeats, crop)
        console.print_wide(console.bench_table(result))
        if json_path:
            write_json(json_path, result)
            console.out.print(f"wrote {json_path}", highlight=False)
