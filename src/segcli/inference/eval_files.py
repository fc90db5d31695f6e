"""Where ``segcli eval`` keeps what it writes: the scores (``--json`` and, for a checkpoint inside a
run folder, ``RUN/evals/NAME-SPLIT[-INFERENCE].json``) with the per-image matrices beside them
(``.npz``), the places of ``--worst`` galleries and ``--save-probs`` folders, and reading them
back for ``segcli compare`` and ``segcli report`` (``load_evidence``), which evaluate a run that
has no current eval first (``ensure_eval``).
"""

from __future__ import annotations

import time
from pathlib import Path

from segcli import console
from segcli.errors import SegcliError
from segcli.files import write_json
from segcli.inference.evaluation import PerImage, evaluate_checkpoint
from segcli.runs.run_dir import RunDir


def run_of_checkpoint(checkpoint: Path) -> RunDir | None:
    """The run folder holding ``RUN/checkpoints/NAME.pt`` (a ``RunDir`` reader), or None."""
    checkpoint = Path(checkpoint).resolve()
    run = RunDir.read(checkpoint.parent.parent)
    return run if checkpoint.parent.name == "checkpoints" and run.is_run() else None


def beside_eval(
    checkpoint: Path, split: str, json_path: Path | None, inference: str, suffix: str
) -> Path:
    """Where an eval's extra output goes (``suffix``: ``-worst.png`` for ``--worst``, ``-probs`` for
    ``--save-probs``): beside ``--json`` (NAME-worst.png), else in the run folder
    (RUN/evals/CHECKPOINT-SPLIT[-INFERENCE]-worst.png), else ./SPLIT-worst.png."""
    if json_path is not None:
        return json_path.with_name(f"{json_path.stem}{suffix}")
    run, stem = run_of_checkpoint(checkpoint), Path(checkpoint).stem
    if run is not None:
        return (run.worst_gallery if suffix == "-worst.png" else run.eval_probabilities)(
            stem, split, inference
        )
    return Path(f"{split}{suffix}")


def save_eval(
    checkpoint: Path,
    split: str,
    result: dict,
    evidence: PerImage,
    inference: str = "whole",
    json_path: Path | None = None,
) -> list[Path]:
    """Keep an eval: with ``json_path`` the scores there and the per-image matrices beside it
    (.npz); for a checkpoint inside a run folder (RUN/checkpoints/NAME.pt) also
    RUN/evals/NAME-SPLIT.json and .npz (NAME-SPLIT-INFERENCE.* for other inference modes than
    whole), where ``segcli compare RUN...`` finds them. Returns the (json, npz) pair last
    written ([] when none: a checkpoint elsewhere without ``json_path``, or a run folder that
    cannot be written, which prints a note)."""
    saved = []
    run = run_of_checkpoint(checkpoint)
    if run is not None:
        json_file, npz = run.eval_files(Path(checkpoint).stem, split, inference)
        try:
            evidence.save(npz)
            write_json(json_file, result)
            saved = [json_file, npz]
        except OSError as exc:
            console.out.print(
                f"note: not saved in the run folder ({exc.strerror}: {exc.filename})",
                highlight=False,
            )
    if json_path:
        write_json(json_path, result)
        evidence.save(json_path.with_suffix(".npz"))
        saved = [json_path, json_path.with_suffix(".npz")]
    return saved


class EvalNeeded(SegcliError):
    """A run folder has no current eval of ``checkpoints/best.pt`` on a split: none yet, or one of
    an older best epoch. ``run``: the run folder (``RunDir``); ``split``: the split."""

    def __init__(self, message: str, run: RunDir, split: str) -> None:
        super().__init__(message)
        self.run, self.split = run, split


def load_evidence(item: Path, split: str = "test") -> tuple[str, PerImage]:
    """The per-image matrices ``segcli compare`` reads, and a label for them, from a run folder
    (its ``evals/best-SPLIT.npz``, which ``segcli eval RUN/checkpoints/best.pt --split SPLIT``
    writes), an eval's ``--json`` file (the ``.npz`` beside it) or the ``.npz`` itself.

    Raises:
        EvalNeeded: the run has no eval of best.pt on ``split`` yet, or one of an older best epoch
            (the message gives the eval command).
        SegcliError: nothing there; a file of another split.
    """
    item = Path(item)
    run = RunDir.read(item)
    if item.is_dir():
        if not run.is_run():
            raise SegcliError(
                f"{item}: not a run folder (expected .hydra/config.yaml and checkpoints/)"
            )
        npz = run.eval_files("best", split)[1]
        command = f"segcli eval {run.best} --split {split}"
        if not npz.is_file():
            raise EvalNeeded(
                f"{item}: no eval of checkpoints/best.pt on the {split} split yet; run: {command}",
                run,
                split,
            )
        evidence = PerImage.load(npz)
        best_epoch = run.summary().get("best_epoch")
        if best_epoch is not None and evidence.epoch is not None and evidence.epoch != best_epoch:
            raise EvalNeeded(
                f"{npz}: evaluates epoch {evidence.epoch}, but best.pt is now epoch {best_epoch}; "
                f"run: {command}",
                run,
                split,
            )
        return item.name, evidence
    npz = item.with_suffix(".npz")
    if not npz.is_file():
        raise SegcliError(
            f"{item}: no such run folder or eval file (expected RUN_DIR, EVAL.json or EVAL.npz)"
        )
    evidence = PerImage.load(npz)
    if evidence.split != split:
        raise SegcliError(
            f"{npz}: an eval of the {evidence.split} split, not {split} (--split {evidence.split}?)"
        )
    return item.stem, evidence


def ensure_eval(item: Path, split: str) -> tuple[str, PerImage]:
    """``load_evidence``, after evaluating a run folder that has no current eval on ``split``
    (none, or one of an older best epoch): ``checkpoints/best.pt`` as ``segcli eval
    RUN/checkpoints/best.pt --split SPLIT`` evaluates it (the run's own data, preprocessing,
    device and precision settings), kept in ``RUN/evals/`` (``save_eval``) for the next time, and
    one line printed: what was evaluated, on how many images, in how many seconds.

    Raises:
        SegcliError: as ``load_evidence`` (other than a missing or stale eval) and
            ``evaluate_checkpoint``.
    """
    try:
        return load_evidence(item, split)
    except EvalNeeded as need:
        run = need.run
    start = time.perf_counter()
    result, evidence = evaluate_checkpoint(run.best, split)
    save_eval(run.best, split, result, evidence)
    console.out.print(
        f"{item}: evaluated checkpoints/best.pt (epoch {result.get('epoch')}) on the {split} "
        f"split, {result['images']} images in {time.perf_counter() - start:.1f} s; kept in "
        f"{run.eval_files('best', split)[0].parent}",
        highlight=False,
    )
    return load_evidence(item, split)
