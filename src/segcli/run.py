"""The run directory: what a training run leaves behind, written so that it is never half-written.

    RUN_DIR/
      .hydra/config.yaml, overrides.yaml   composed config and the command-line overrides (Hydra)
      split.json                           the random train/val split, when segcli made one
      metrics.jsonl                        one JSON line per epoch, appended and fsync'ed
      checkpoints/best.pt, last.pt         weights + everything eval and predict need; last.pt
                                           also the optimizer and the state to resume from
      summary.json                         status "done" at the end, "interrupted" after Ctrl-C/SIGTERM

Checkpoints and JSON files are written to a temporary file, fsync'ed and renamed over the old
one, so a kill during a write leaves the previous complete file.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

import torch

from segcli.errors import SegcliError

CHECKPOINT_FORMAT = 1


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(file_object)`` on a temporary file beside ``path``, fsync, rename to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the permissions open() would
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    atomic_write(path, lambda f: f.write((json.dumps(data, indent=2) + "\n").encode()))


class RunDir:
    """Writer for one run directory (see the module docstring)."""

    def __init__(self, path: Path, writer: bool = True) -> None:
        """``writer=False``: a torchrun rank other than 0, which reads the folder but writes nothing."""
        self.path, self.writer = Path(path), bool(writer)
        self.checkpoints = self.path / "checkpoints"
        if self.writer:
            self.checkpoints.mkdir(parents=True, exist_ok=True)

    @property
    def best(self) -> Path:
        """``checkpoints/best.pt``: the weights of the epoch with the highest val mIoU."""
        return self.checkpoints / "best.pt"

    @property
    def last(self) -> Path:
        """``checkpoints/last.pt``: the latest weights, with the optimizer state."""
        return self.checkpoints / "last.pt"

    def log_epoch(self, record: dict) -> None:
        """Append one line to metrics.jsonl and fsync it (one write: never a half line)."""
        if not self.writer:
            return
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def rewrite_metrics(self, records: list[dict]) -> None:
        """Atomically replace metrics.jsonl with ``records`` (on resume: the lines of the epochs
        that last.pt includes, so an epoch that is trained again is never logged twice)."""
        if not self.writer:
            return
        text = "".join(json.dumps(r) + "\n" for r in records)
        atomic_write(self.path / "metrics.jsonl", lambda f: f.write(text.encode()))

    def save_checkpoint(self, path: Path, checkpoint: dict) -> None:
        """Atomically ``torch.save`` a checkpoint dict (tensors and plain Python data only)."""
        if not self.writer:
            return
        atomic_write(path, lambda f: torch.save(checkpoint, f))

    def write_summary(self, summary: dict) -> None:
        """Atomically write summary.json (``status`` "done": the run is complete); the run is no
        longer running (``running.json`` goes)."""
        if not self.writer:
            return
        write_json(self.path / "summary.json", summary)
        (self.path / "running.json").unlink(missing_ok=True)

    def mark_running(self) -> None:
        """Write ``running.json`` (host and pid of this process) while the run trains; ``segcli runs``
        tells a running run from a killed one with it."""
        if not self.writer:
            return
        write_json(self.path / "running.json", {"host": socket.gethostname(), "pid": os.getpid()})


HYDRA_FILES = ("config.yaml", "overrides.yaml", "hydra.yaml")


def keep_hydra_record(path: Path) -> None:
    """Copy a new run's ``.hydra/*.yaml`` to ``.hydra/first/``: Hydra rewrites ``.hydra/`` whenever a job
    starts in the folder, also when segcli then skips, resumes or refuses it (``restore_hydra_record``)."""
    first = Path(path) / ".hydra" / "first"
    first.mkdir(parents=True, exist_ok=True)
    for name in HYDRA_FILES:
        if (Path(path) / ".hydra" / name).is_file():
            shutil.copy2(Path(path) / ".hydra" / name, first / name)


def restore_hydra_record(path: Path) -> None:
    """Put back the ``.hydra/*.yaml`` of the run's first start (see ``keep_hydra_record``), if kept."""
    first = Path(path) / ".hydra" / "first"
    for name in HYDRA_FILES:
        if (first / name).is_file():
            shutil.copy2(first / name, Path(path) / ".hydra" / name)


def remove_unstarted(path: Path) -> None:
    """Remove what a run that failed before its first checkpoint wrote (``.hydra/``, split.json, class_pixels.json,
    an empty ``checkpoints/``), and the folder itself if nothing else is in it. A run that has
    a checkpoint is left alone. Parent folders that end up empty (``outputs/DATE/``) go too."""
    path = Path(path)
    if any(path.glob("checkpoints/*.pt")):
        return
    for name in (".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", "split.json", "class_pixels.json",
                 "running.json",
                 *(f".hydra/first/{n}" for n in HYDRA_FILES)):
        (path / name).unlink(missing_ok=True)
    for folder in (path / ".hydra" / "first", path / ".hydra", path / "checkpoints", path, path.parent,
                   path.parent.parent):
        if folder.resolve() == Path.cwd().resolve():
            break  # Hydra's outputs/DATE/ folders may go when empty, the working directory never
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def load_checkpoint(path: Path) -> dict:
    """Load a segcli checkpoint with ``weights_only=True`` (data, never code).

    Returns:
        dict with ``model`` (state dict), ``config`` (the run's resolved config as plain
        dicts), ``classes`` (num_classes, class_names, colors, ignore_index), ``normalization``
        (mean, std), ``epoch`` and ``val`` (scores at that epoch).

    Raises:
        SegcliError: the file is missing, unreadable, or not a segcli checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise SegcliError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SegcliError(f"{path}: cannot read as a checkpoint ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or "model" not in ckpt:
        raise SegcliError(f"{path}: not a segcli checkpoint (expected checkpoints/best.pt or last.pt of a run)")
    return ckpt


def newest_checkpoint(root: Path) -> Path:
    """``checkpoints/best.pt`` of the most recently modified run under ``root``.

    Raises:
        SegcliError: no run with a best checkpoint is found.
    """
    found = sorted(Path(root).glob("**/checkpoints/best.pt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SegcliError(f"{root}: no run with checkpoints/best.pt found; train one or pass -c CHECKPOINT")
    return found[-1]
