"""Checkpoints: the file format of ``checkpoints/best.pt`` and ``last.pt``, reading one back,
and finding the newest. Eval and predict use this module without the trainer; the model a
checkpoint holds is rebuilt by ``models.build.model_from_checkpoint``, through
``inference.loaded.LoadedModel`` (model, preprocessing, classes and config in one).

A checkpoint is a dict of tensors and plain data (``torch.load(weights_only=True)`` reads it):
``format`` (``CHECKPOINT_FORMAT``), ``model`` (state dict), ``config`` (the run's resolved config
as plain dicts), ``classes`` (num_classes, class_names, colors, ignore_index), ``normalization``
(mean, std), ``epoch``, ``step`` and ``val`` (scores at that epoch); ``last.pt`` also
``optimizer``, ``scaler``, ``progress`` and ``rng`` (see training/resume.py).
"""

from __future__ import annotations

from pathlib import Path

import torch

from segcli.errors import SegcliError

CHECKPOINT_FORMAT = 1


def load_checkpoint(path: Path) -> dict:
    """Load a segcli checkpoint with ``weights_only=True`` (data, never code), on the CPU.

    Raises:
        SegcliError: the file is missing, unreadable, or not a segcli checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise SegcliError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise SegcliError(f"{path}: cannot read as a checkpoint ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or "model" not in ckpt:
        raise SegcliError(
            f"{path}: not a segcli checkpoint (expected checkpoints/best.pt or last.pt of a run)"
        )
    return ckpt


def newest_checkpoint(root: Path) -> Path:
    """``checkpoints/best.pt`` of the most recently modified run under ``root``.

    Raises:
        SegcliError: no run with a best checkpoint is found.
    """
    found = sorted(Path(root).glob("**/checkpoints/best.pt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SegcliError(
            f"{root}: no run with checkpoints/best.pt found; train one or pass -c CHECKPOINT"
        )
    return found[-1]


def checkpoint_task(path: Path) -> str:
    """The task of a segcli checkpoint (``"task"``; ``semantic`` for checkpoints that do not say).

    Raises:
        SegcliError: as ``load_checkpoint``.
    """
    return str(load_checkpoint(path).get("task", "semantic"))
