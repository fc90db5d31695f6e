"""The run directory: the one owner of every file a run leaves behind, which writes them so that
none is ever half-written and reads them back for resume, re-run detection, ``segcli runs`` and
``segcli plot``. No other module spells these file names.

    RUN_DIR/
      .hydra/config.yaml, overrides.yaml,  composed config, command-line overrides, group choices
        hydra.yaml                         (Hydra); .hydra/first/ keeps the first start's copies
      split.json                           the random train/val split, when segcli made one
      class_pixels.json                    the training split's class pixel counts and weights
      metrics.jsonl                        one JSON line per epoch, appended and fsync'ed
      checkpoints/best.pt, last.pt         see runs/checkpoints.py; last.pt also resumes the run
      running.json                         host and pid while the run trains
      summary.json status "done" at the end, "interrupted" after Ctrl-C/SIGTERM,
                                           "failed" after an error past the first checkpoint
      samples/best.png                     image | truth | prediction at the best epoch
      evals/best-test.json, best-test.npz  ``segcli eval`` of checkpoints/best.pt on the test split:
                                           scores, and one confusion matrix per image (for
                                           ``compare``)
      weak/round1/, round2/, ...           weak labels: each round's training masks and their
                                           scores (weak/pseudo.py); a round before the last is a
                                           run folder of its own (its checkpoints, metrics.jsonl)

Checkpoints and JSON files are written to a temporary file, fsync'ed and renamed over the old
one, so a kill during a write leaves the previous complete file.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

from segcli.errors import SegcliError
from segcli.files import atomic_write, write_json

SUMMARY, METRICS, RUNNING = "summary.json", "metrics.jsonl", "running.json"
SPLIT, CLASS_PIXELS = "split.json", "class_pixels.json"
WEAK = "weak"
HYDRA_FILES = ("config.yaml", "overrides.yaml", "hydra.yaml")
STATUSES = ("done", "interrupted", "failed", "running", "running?", "killed")


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _process_status(info: dict) -> str:
    """``running`` while the pid of ``running.json`` lives on this host, ``running?`` on another
    host, else ``killed``."""
    if info.get("host") != socket.gethostname():
        return "running?"
    try:
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return "killed"
    return "running"


class RunDir:
    """One run directory (see the module docstring): every write, every read, every file name."""

    def __init__(self, path: Path, writer: bool = True) -> None:
        """``writer=False``: a reader, or a torchrun rank other than 0; it writes nothing."""
        self.path, self.writer = Path(path), bool(writer)
        self.checkpoints = self.path / "checkpoints"
        if self.writer:
            self.checkpoints.mkdir(parents=True, exist_ok=True)

    @classmethod
    def read(cls, path: Path) -> RunDir:
        """A reader of an existing folder (creates nothing)."""
        return cls(path, writer=False)

    @property
    def best(self) -> Path:
        """``checkpoints/best.pt``: the weights of the epoch with the highest val mIoU."""
        return self.checkpoints / "best.pt"

    @property
    def last(self) -> Path:
        """``checkpoints/last.pt``: the latest weights, with the optimizer state."""
        return self.checkpoints / "last.pt"

    def weak_round(self, index: int) -> Path:
        """``weak/round{index}``: round ``index``'s (from 1) training masks and scores."""
        return self.path / WEAK / f"round{index}"

    def started(self) -> bool:
        """Whether the run has a checkpoint of its own or of a weak-label round (work to keep)."""
        return any(self.path.glob("checkpoints/*.pt")) or any(
            self.path.glob(f"{WEAK}/round*/checkpoints/*.pt")
        )

    @property
    def samples(self) -> Path:
        """``samples/best.png``: sample predictions at the best epoch."""
        return self.path / "samples" / "best.png"

    def eval_files(
        self, checkpoint: str, split: str, inference: str = "whole"
    ) -> tuple[Path, Path]:
        """``evals/CHECKPOINT-SPLIT.json`` and ``.npz``: ``segcli eval`` of
        ``checkpoints/CHECKPOINT.pt`` on ``split`` (scores; per-image confusion matrices, see
        ``evaluation.PerImage``); with an ``inference`` other than ``whole`` (its
        ``InferenceSettings.tag``), ``CHECKPOINT-SPLIT-TAG``."""
        stem = self.path / "evals" / _eval_stem(checkpoint, split, inference)
        return stem.with_suffix(".json"), stem.with_suffix(".npz")

    def worst_gallery(self, checkpoint: str, split: str, inference: str = "whole") -> Path:
        """``evals/CHECKPOINT-SPLIT[-TAG]-worst.png``: ``segcli eval --worst K``'s picture of the
        worst images."""
        return self.path / "evals" / f"{_eval_stem(checkpoint, split, inference)}-worst.png"

    def eval_probabilities(self, checkpoint: str, split: str, inference: str = "whole") -> Path:
        """``evals/CHECKPOINT-SPLIT[-TAG]-probs/``: ``segcli eval --save-probs``' per-image
        probabilities."""
        return self.path / "evals" / f"{_eval_stem(checkpoint, split, inference)}-probs"

    # -- reading ------------------------------------------------------------------------------

    def is_run(self) -> bool:
        """A segcli run folder: ``.hydra/config.yaml`` and a ``checkpoints/`` folder or
        metrics.jsonl."""
        return (self.path / ".hydra" / "config.yaml").is_file() and (
            self.checkpoints.is_dir() or (self.path / METRICS).is_file()
        )

    def summary(self) -> dict:
        """summary.json's content, {} when there is none (a run that has not ended)."""
        return _read_json(self.path / SUMMARY)

    def metrics(self) -> list[dict]:
        """The metrics.jsonl records, oldest first; a line cut by a kill is left out; [] without the
        file."""
        path, records = self.path / METRICS, []
        for line in path.read_text().splitlines() if path.is_file() else []:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                pass
        return records

    def status(self) -> str:
        """One of ``STATUSES``: summary.json's status (done, interrupted, failed); without one,
        ``running`` while running.json names a live process on this host (``running?`` for another
        host), else ``killed``."""
        status = self.summary().get("status")
        if status:
            return status
        running = self.path / RUNNING
        return _process_status(json.loads(running.read_text())) if running.is_file() else "killed"

    def done(self) -> bool:
        """summary.json says the run finished."""
        return self.summary().get("status") == "done"

    def hydra_config(self) -> dict:
        """``.hydra/config.yaml`` as written (unresolved interpolations stay text); {} without
        it."""
        import yaml

        path = self.path / ".hydra" / "config.yaml"
        return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}

    def overrides(self) -> list[str]:
        """The command-line overrides of ``.hydra/overrides.yaml`` ([] without it)."""
        import yaml

        path = self.path / ".hydra" / "overrides.yaml"
        return [str(o) for o in (yaml.safe_load(path.read_text()) or [])] if path.is_file() else []

    def group_choices(self) -> dict[str, str]:
        """``{group: option}`` of the run's config groups (Hydra's runtime choices, ``hydra/*`` left
        out)."""
        import yaml

        path = self.path / ".hydra" / "hydra.yaml"
        hydra_cfg = (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
        choices = hydra_cfg.get("hydra", {}).get("runtime", {}).get("choices", {}) or {}
        return {k: v for k, v in choices.items() if not k.startswith("hydra/")}

    def saved_config(self) -> dict:
        """The run's own resolved config: from ``last.pt``, or from ``.hydra/config.yaml`` when it
        was stopped before its first checkpoint. ``dataset.root`` is as saved (see
        ``resume.absolute_root``).

        Raises:
            SegcliError: the folder is not a segcli run, or last.pt is unreadable.
        """
        if self.last.is_file():
            from segcli.runs.checkpoints import load_checkpoint

            return load_checkpoint(self.last)["config"]
        hydra_cfg = self.path / ".hydra" / "config.yaml"
        if hydra_cfg.is_file():
            from omegaconf import OmegaConf

            return OmegaConf.to_container(OmegaConf.load(hydra_cfg), resolve=True)
        raise SegcliError(
            f"{self.path}: not a segcli run directory (expected checkpoints/last.pt or "
            ".hydra/config.yaml)"
        )

    def class_pixels(self) -> dict | None:
        """class_pixels.json's content (``pixels``, ``present``, ``class_weights``), or None."""
        return _read_json(self.path / CLASS_PIXELS) or None

    # -- writing ------------------------------------------------------------------------------

    def log_epoch(self, record: dict) -> None:
        """Append one line to metrics.jsonl and fsync it (one write: never a half line)."""
        if not self.writer:
            return
        with open(self.path / METRICS, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def rewrite_metrics(self, records: list[dict]) -> None:
        """Atomically replace metrics.jsonl with ``records`` (on resume: the lines of the epochs
        that last.pt includes, so an epoch that is trained again is never logged twice)."""
        if not self.writer:
            return
        text = "".join(json.dumps(r) + "\n" for r in records)
        atomic_write(self.path / METRICS, lambda f: f.write(text.encode()))

    def save_checkpoint(self, path: Path, checkpoint: dict) -> None:
        """Atomically ``torch.save`` a checkpoint dict (tensors and plain Python data only)."""
        import torch  # here only: reading a run folder (segcli runs, report) needs no torch

        if not self.writer:
            return
        atomic_write(path, lambda f: torch.save(checkpoint, f))

    def write_summary(self, summary: dict) -> None:
        """Atomically write summary.json (``status`` "done": the run is complete); the run is no
        longer running (``running.json`` goes)."""
        if not self.writer:
            return
        write_json(self.path / SUMMARY, summary)
        (self.path / RUNNING).unlink(missing_ok=True)

    def clear_summary(self) -> None:
        """Remove summary.json (a resumed run is no longer "interrupted"; it is written again at the
        end)."""
        if self.writer:
            (self.path / SUMMARY).unlink(missing_ok=True)

    def mark_running(self) -> None:
        """Write ``running.json`` (host and pid of this process) while the run trains; ``status``
        tells a running run from a killed one with it."""
        if not self.writer:
            return
        write_json(self.path / RUNNING, {"host": socket.gethostname(), "pid": os.getpid()})

    def write_split(self, split: dict) -> None:
        """Write split.json: the random train/val split segcli made
        (``data.layouts.SplitFiles.as_json``)."""
        if self.writer:
            write_json(self.path / SPLIT, split)

    def write_class_pixels(self, content: dict) -> None:
        """Write class_pixels.json (see ``training.class_pixels.cached_class_pixels``)."""
        if self.writer:
            write_json(self.path / CLASS_PIXELS, content)

    # -- Hydra's record and unstarted runs -------------------------------------------------------

    def keep_hydra_record(self) -> None:
        """Copy a new run's ``.hydra/*.yaml`` to ``.hydra/first/``: Hydra rewrites ``.hydra/``
        whenever a job starts in the folder, also when segcli then skips, resumes or refuses it
        (``restore_hydra_record``)."""
        first = self.path / ".hydra" / "first"
        first.mkdir(parents=True, exist_ok=True)
        for name in HYDRA_FILES:
            if (self.path / ".hydra" / name).is_file():
                shutil.copy2(self.path / ".hydra" / name, first / name)

    def restore_hydra_record(self) -> None:
        """Put back the ``.hydra/*.yaml`` of the run's first start (see ``keep_hydra_record``), if
        kept."""
        first = self.path / ".hydra" / "first"
        for name in HYDRA_FILES:
            if (first / name).is_file():
                shutil.copy2(first / name, self.path / ".hydra" / name)

    def remove_unstarted(self) -> None:
        """Remove what a run that failed before its first checkpoint wrote (``.hydra/``,
        split.json, class_pixels.json, running.json, an empty ``checkpoints/``, weak-label
        training masks), and the folder itself if nothing else is in it. A run that has a
        checkpoint (``started``) is left alone. Parent folders that end up empty
        (``outputs/DATE/``) go too, the working directory never."""
        path = self.path
        if self.started():
            return
        shutil.rmtree(path / WEAK, ignore_errors=True)  # training masks made before the failure
        for name in (
            *(f".hydra/{n}" for n in HYDRA_FILES),
            SPLIT,
            CLASS_PIXELS,
            RUNNING,
            *(f".hydra/first/{n}" for n in HYDRA_FILES),
        ):
            (path / name).unlink(missing_ok=True)
        for folder in (
            path / ".hydra" / "first",
            path / ".hydra",
            path / "checkpoints",
            path,
            path.parent,
            path.parent.parent,
        ):
            if folder.resolve() == Path.cwd().resolve():
                break
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def _eval_stem(checkpoint: str, split: str, inference: str) -> str:
    return f"{checkpoint}-{split}" if inference == "whole" else f"{checkpoint}-{split}-{inference}"
