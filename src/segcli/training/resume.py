"""Resuming a run: the training state that ``checkpoints/last.pt`` carries beyond the weights,
and the check that a resumed run keeps its own config.

A resumed run continues exactly where the saved one stopped: the epoch and the batch inside it,
the optimizer, scheduler and AMP scaler state, the best score so far, the metrics history,
and the random state of python, numpy and torch. The data order and the augmentation draws need
no saved state: they are pure functions of (seed, epoch, sample index) (data.loaders.EpochSampler,
augment.seed_transform). On the CPU a resumed run therefore gives the same numbers as an
uninterrupted one (tests/training/test_resume.py kills a run with SIGKILL and checks this).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from segcli.config import flatten
from segcli.errors import SegcliError
from segcli.runs.run_dir import RunDir

# Keys a resumed run may change with --allow-changes: they do not alter what was already
# trained or what the remaining steps compute (beyond their number, where data is read, and the
# rounding of the forward pass: device, compile and autocast; weights and optimizer state are
# float32 in every case, so a run started on one machine can be resumed on another).
SAFE_ON_RESUME = (
    "trainer.epochs",
    "trainer.max_minutes",
    "trainer.num_workers",
    "trainer.eval_batch_size",
    "trainer.val_every",
    "trainer.checkpoint_minutes",
    "trainer.device",
    "trainer.compile",
    "trainer.amp",
    "dataset.root",
)


@dataclass
class RunState:
    """Where a run stands beyond its weights (what a resume restores); saved in ``last.pt`` as the
    plain dict under the key ``"progress"`` (the file format's name, kept).

    Attributes:
        epoch: the epoch to continue (1-based); its first ``epoch_totals["steps"]`` batches are
        done. step: optimizer steps done in the run. epoch_totals: ``engine.RunningTotals`` fields
        of the unfinished epoch ({} at an epoch start). elapsed: seconds of the run so far (the
        ``trainer.max_minutes`` clock). val_reserve: seconds of the last validation, kept free at
        the end of a time budget. best: val scores of the best epoch so far, and ``best_epoch`` its
        number (0: none yet). last_val: val scores of the latest validation. history: the
        metrics.jsonl records so far. stopped_by: None while running; "epochs" or "max_minutes" once
        training ended. resumes: one entry per resume: epoch, step and the config changes it
        applied.
    """

    epoch: int = 1
    step: int = 0
    epoch_totals: dict = field(default_factory=dict)
    elapsed: float = 0.0
    val_reserve: float = 0.0
    best: dict | None = None
    best_epoch: int = 0
    last_val: dict | None = None
    history: list[dict] = field(default_factory=list)
    stopped_by: str | None = None
    resumes: list[dict] = field(default_factory=list)


def capture_rng() -> dict:
    """The random state of python, numpy and torch (CPU and every CUDA device), as tensors and
    plain data so that ``torch.load(weights_only=True)`` reads it back."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [
            kind,
            torch.from_numpy(keys.astype(np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping) -> None:
    """Undo ``capture_rng``."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if (
        "cuda" in state
        and torch.cuda.is_available()
        and len(state["cuda"]) == torch.cuda.device_count()
    ):
        torch.cuda.set_rng_state_all(state["cuda"])


def config_changes(old: Mapping, new: Mapping) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (old value, new value)}`` for every key that differs (missing: None)."""
    a, b = flatten(old), flatten(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def apply_overrides(cfg: dict, overrides: Sequence[str]) -> dict:
    """A copy of the resolved config ``cfg`` with ``key=value`` overrides (values read as YAML).

    Raises:
        SegcliError: an override is not ``key=value``, names a key the config does not have, or
            switches a config group (``model=fpn``): a group cannot change in a resumed run.
    """
    conf = OmegaConf.create(cfg)
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or key.startswith(("+", "~")) or not key:
            raise SegcliError(
                f"{item}: expected key=value when resuming (adding or deleting keys is not "
                "possible)"
            )
        current = OmegaConf.select(conf, key, default=KeyError)
        if current is KeyError:
            raise SegcliError(f"{key}: no such key in the run's config")
        if OmegaConf.is_dict(current):
            raise SegcliError(
                f"{item}: the config group '{key}' cannot change in a resumed run; start a new run"
            )
        conf = OmegaConf.merge(conf, OmegaConf.from_dotlist([item]))
    return OmegaConf.to_container(conf, resolve=True)


def absolute_root(cfg: dict) -> dict:
    """Make ``dataset.root`` absolute (in place), as training stores it; returns ``cfg``."""
    if cfg.get("dataset", {}).get("root") is not None:
        cfg["dataset"]["root"] = str(Path(str(cfg["dataset"]["root"])).expanduser().resolve())
    return cfg


def format_value(value: Any) -> str:
    """Short rendering of a config value for a one-line message."""
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def resume_config(
    run_dir: Path, overrides: Sequence[str], allow_changes: bool
) -> tuple[dict, dict]:
    """The config a resumed run continues with, and the changes applied to its own.

    Returns:
        (resolved config, {key: (old, new)}).

    Raises:
        SegcliError: see ``runs.run_dir.RunDir.saved_config`` and ``apply_overrides``; or the
        overrides change the
            config and either a changed key is not in ``SAFE_ON_RESUME`` or ``allow_changes`` is
            False. The message lists every change.
    """
    if not run_dir.is_dir():
        raise SegcliError(f"{run_dir}: run directory not found")
    old = absolute_root(RunDir.read(run_dir).saved_config())
    new = absolute_root(apply_overrides(old, overrides))
    changes = config_changes(old, new)
    unsafe = [k for k in changes if k not in SAFE_ON_RESUME]
    if unsafe or (changes and not allow_changes):
        listed = "; ".join(
            f"{k}: {format_value(a)} -> {format_value(b)}" for k, (a, b) in changes.items()
        )
        if unsafe:
            hint = (
                f"{', '.join(unsafe)} cannot change in a resumed run (start a new run); "
                f"only {', '.join(SAFE_ON_RESUME)} can, with --allow-changes"
            )
        else:
            hint = "add --allow-changes to apply these"
        raise SegcliError(f"{run_dir}: the config differs from the run's own: {listed}. {hint}")
    return new, changes
