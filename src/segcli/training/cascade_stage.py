"""Stage 1 of a cascade (``model.cascade.from``, models/cascade.py) as a training run gets it:
read from its checkpoint file and checked against this run's inputs (``stage_one``), or rebuilt
from the description a resumed run's ``last.pt`` holds (``rebuilt_stage_one``; its weights come
back with last.pt's state dict).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from segcli.errors import SegcliError
from segcli.models.build import build_model, model_from_checkpoint
from segcli.models.cascade import describe_stage1
from segcli.runs.checkpoints import load_checkpoint


def _same_numbers(a, b) -> bool:
    """Whether two optional nested lists of numbers are equal (to float rounding)."""
    if a is None or b is None:
        return a is None and b is None
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and bool(np.allclose(a, b))


def stage_one(path: Path, normalization: Mapping) -> tuple[torch.nn.Module, dict]:
    """Stage 1's model (its weights loaded, eval mode, CPU) and ``cascade.describe_stage1`` (with
    the file's SHA-256) for a run whose inputs are normalised by ``normalization``.

    Raises:
        SegcliError: the file is not a one-stage semantic checkpoint (see ``load_checkpoint``), or
            it normalises its input otherwise than this run (mean, std or clip: other channels)."""
    ckpt = load_checkpoint(path)
    if ckpt.get("task", "semantic") != "semantic" or ckpt.get("cascade"):
        raise SegcliError(f"model.cascade.from={path}: expected a one-stage semantic checkpoint")
    theirs = {k: ckpt["normalization"].get(k) for k in ("mean", "std", "clip")}
    ours = {k: normalization.get(k) for k in ("mean", "std", "clip")}
    differ = [k for k in theirs if not _same_numbers(theirs[k], ours[k])]
    if differ:
        k = differ[0]
        raise SegcliError(
            f"model.cascade.from={path}: stage 1 normalises its input with {k} {theirs[k]}, "
            f"this run with {ours[k]}; train both stages on the same channels"
        )
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    model = model_from_checkpoint(ckpt, torch.device("cpu"), len(ckpt["normalization"]["mean"]))
    return model, describe_stage1(ckpt, str(path.resolve()), sha)


def rebuilt_stage_one(description: Mapping) -> torch.nn.Module:
    """Stage 1's architecture from a checkpoint's ``"cascade"`` entry (random weights, to be
    overwritten by that checkpoint's state dict)."""
    return build_model(
        description["model"], int(description["num_classes"]), int(description["in_channels"])
    )
