"""Sweeps: what makes Hydra's multirun (and shell loops) safe to re-run.

- A failed job does not stop a sweep: ``cli.train._train_task`` catches the job's error, prints it
  as one line (with its traceback under ``--debug``), appends it to ``SWEEP_DIR/failures.jsonl`` and
  returns NaN (Hydra's basic launcher would otherwise stop at a SystemExit, and its sweeper
  re-raises a job's exception after the batch). ``SweepReport``, a Hydra callback run in the
  launching process, lists the failures when the sweep ends and then exits 1 (``SystemExit`` passes
  through Hydra's runner to the shell).
- A re-run of the same sweep command resumes it: without ``hydra.sweep.dir=``, the sweep folder is
  named after the command's overrides (``config.default_sweep_dir``), so the same command finds the
  same job folders; each job skips a finished run of its own config (``trainer.skip_if_done``),
  resumes an unfinished one from ``checkpoints/last.pt`` and starts the missing ones (see
  ``jobs.existing_run``). Optuna sweeps keep Hydra's dated folder (their trials differ per run).

Hydra's launchers and sweepers are used as they are; only the callback and the task function
are ours.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from segcli import console

FAILURES = "failures.jsonl"


def record_failure(sweep_dir: Path, job: dict) -> None:
    """Append one job's failure (``{"job", "dir", "overrides", "error"}``) to ``failures.jsonl``;
    one ``write`` of one line on an O_APPEND file, so parallel jobs never interleave."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(sweep_dir / FAILURES, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (json.dumps(job) + "\n").encode())
    finally:
        os.close(fd)


def read_failures(sweep_dir: Path) -> list[dict]:
    """The failures recorded in this attempt of the sweep, by job number."""
    path = Path(sweep_dir) / FAILURES
    if not path.is_file():
        return []
    jobs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted(jobs, key=lambda j: j.get("job", 0))


class SweepReport(Callback):
    """Hydra callback (``hydra.callbacks.sweep_report`` in conf/train.yaml): clears the failure log
    when a multirun starts and, when it ends, prints how many jobs ran and which failed.

    Raises:
        SystemExit: exit code 1 when a job failed (at the sweep's end).
    """

    def on_multirun_start(self, config, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        (sweep_dir / FAILURES).unlink(missing_ok=True)
        console.out.print(f"segcli: sweep folder {sweep_dir}", highlight=False)

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        failures = read_failures(sweep_dir)
        numbers = {p.parent.parent.name for p in sweep_dir.glob("*/.hydra/overrides.yaml")}
        jobs = len(
            numbers | {str(j["job"]) for j in failures}
        )  # a job that failed before its first checkpoint left no folder
        if not failures:
            console.out.print(f"segcli: sweep done: {jobs} job(s) in {sweep_dir}", highlight=False)
            return
        console.error(
            f"{len(failures)} of {jobs} job(s) failed in {sweep_dir} "
            "(run the same command again to retry them):"
        )
        for job in failures:
            console.err.print(
                f"  job {job['job']} ({' '.join(job['overrides'])}): {job['error']}",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
        raise SystemExit(1)


def record_job_failure(hydra_cfg, run_dir: Path, error: str) -> None:
    """``record_failure`` for the current job of a Hydra multirun (``hydra_cfg``:
    HydraConfig.get()): its number, run folder, overrides and the one-line ``error``."""
    record_failure(
        Path(hydra_cfg.sweep.dir),
        {
            "job": hydra_cfg.job.num,
            "dir": str(run_dir),
            "overrides": list(hydra_cfg.overrides.task),
            "error": error,
        },
    )
