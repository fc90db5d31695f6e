"""What a ``segcli train`` job does in its run folder: one start-or-resume decision, made by the
same rules for single runs, sweep jobs and torchrun ranks, then the run ``trainer.build_run``
gives (a ``trainer.Trainer``, or a ``classical_fit.ClassicalFit`` for a classical baseline).

``existing_run`` says what the folder holds, as a ``FolderState``:

- ``NEW``: no run there (or one stopped before its first checkpoint): train from scratch; a
  failure before the first checkpoint leaves no folder behind.
- ``DONE``: a finished run of the same config: skipped (``trainer.skip_if_done``, the default),
  or refused with one line when it is false.
- ``UNFINISHED``: an unfinished run of the same config (interrupted, failed or killed): continued
  from ``checkpoints/last.pt`` (a weak-label run still in an earlier round: from that round's,
  training/weak_rounds.py).
- a run of another config: refused, every differing key listed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path

from segcli import console
from segcli.config import flatten
from segcli.errors import SegcliError
from segcli.runs.run_dir import RunDir
from segcli.training.distributed import Distributed
from segcli.training.resume import absolute_root, config_changes, format_value, resume_config
from segcli.training.settings import TrainerSettings

# Keys that may differ between a run and a re-run of the same job (machine settings, names).
RERUN_IGNORES = (
    "trainer.skip_if_done",
    "trainer.num_workers",
    "trainer.eval_batch_size",
    "trainer.device",
    "trainer.checkpoint_minutes",
    "run.name",
)


class FolderState(Enum):
    """What a job's run folder holds (see the module docstring): ``NEW`` (train from scratch),
    ``DONE`` (skip, or refuse with ``trainer.skip_if_done=false``), ``UNFINISHED`` (resume)."""

    NEW = "new"
    DONE = "done"
    UNFINISHED = "unfinished"


def existing_run(run_dir: Path, cfg: Mapping) -> FolderState:
    """What a new job finds in its run folder ``run_dir`` for the resolved config ``cfg`` (see the
    module docstring). Keys the saved config lacks (options a newer segcli added) do not count.

    Raises:
        SegcliError: the folder holds a run of another config (every differing key listed).
    """
    run = saved = RunDir.read(run_dir)
    if not run.last.is_file():
        # a weak-label run still in an earlier round: round 1's checkpoint holds the run's config
        saved = RunDir.read(run.weak_round(1))
        if not saved.last.is_file():
            return FolderState.NEW
    old = absolute_root(saved.saved_config())
    known = flatten(old)  # keys a newer segcli added are not differences of the run's own config
    changes = {
        k: v
        for k, v in config_changes(old, absolute_root(json.loads(json.dumps(cfg)))).items()
        if k not in RERUN_IGNORES and k in known
    }
    if changes:
        listed = "; ".join(
            f"{k}: {format_value(a)} -> {format_value(b)}" for k, (a, b) in changes.items()
        )
        raise SegcliError(
            f"{run_dir} holds a run of another config ({listed}); choose another run.name, "
            "hydra.run.dir or hydra.sweep.dir, or continue it with segcli train --resume "
            f"{run_dir} "
            "--allow-changes"
        )
    return FolderState.DONE if run.last.is_file() and run.done() else FolderState.UNFINISHED


def _decide(run: RunDir, cfg: dict, ddp: Distributed) -> FolderState:
    """``existing_run`` on rank 0, the same answer (or the same error) on every rank; Hydra's record
    of the folder kept (new run) or put back (any other)."""
    state, error = None, None
    if ddp.main:
        try:
            state = existing_run(run.path, cfg)
        except SegcliError as exc:
            error = str(exc)
        if state is FolderState.NEW:
            run.keep_hydra_record()
        else:
            # a refused or continued job's config must not replace the run's own
            run.restore_hydra_record()
    state, error = ddp.broadcast((state, error))
    if error:
        raise SegcliError(error)
    if state is FolderState.DONE and not TrainerSettings.from_config(cfg["trainer"]).skip_if_done:
        raise SegcliError(
            f"{run.path} holds a finished run of this config; set trainer.skip_if_done=true to "
            "skip it, or choose another run.name or hydra.run.dir"
        )
    return state


def run_job(cfg: dict, run_dir: Path, ddp: Distributed | None = None) -> dict:
    """One training job in ``run_dir`` (a single run, a sweep job or every torchrun rank): skip,
    resume or train as ``existing_run`` decides; returns summary.json's dict.

    Raises:
        SegcliError, RunInterrupted: see ``existing_run`` and ``trainer.build_run``.
    """
    from segcli.training.tasks import build_run

    ddp, run = ddp or Distributed(), RunDir.read(run_dir)
    state = _decide(run, cfg, ddp)
    if state is FolderState.DONE:
        console.out.print(f"segcli: {run_dir}: already done; skipped", highlight=False)
        return run.summary()
    if state is FolderState.UNFINISHED:
        console.out.print(
            f"segcli: {run_dir}: unfinished run of this config; resuming it", highlight=False
        )
        return resume(run_dir, ddp=ddp)
    try:
        return build_run(cfg, run_dir, ddp).fit()
    except (Exception, KeyboardInterrupt):
        if ddp.main:
            # failed before any checkpoint (bad input): leave no run dir behind
            run.remove_unstarted()
        raise


def resume(
    run_dir: Path,
    overrides: Sequence[str] = (),
    allow_changes: bool = False,
    ddp: Distributed | None = None,
) -> dict:
    """Continue the run in ``run_dir`` (``segcli train --resume``); see ``trainer.build_run`` and
    training/resume.py.

    A finished run (summary.json status "done") is left alone unless the overrides change it
    (e.g. more ``trainer.epochs`` with ``allow_changes``); its summary is returned.

    Raises:
        SegcliError: see ``resume.resume_config`` and ``trainer.build_run``.
    """
    from segcli.training.tasks import build_run

    run_dir = Path(run_dir)
    cfg, changes = resume_config(run_dir, overrides, allow_changes)
    run = RunDir.read(run_dir)
    if not changes and run.done():
        console.out.print(f"segcli: {run_dir} is already done; nothing to resume", highlight=False)
        return run.summary()
    return build_run(cfg, run_dir, ddp, resume=True, changes=changes).fit()
