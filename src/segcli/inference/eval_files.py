"""Where ``segcli eval`` keeps what it writes: the scores (``--json`` and, for a checkpoint inside a
run folder, ``RUN/evals/NAME-SPLIT[-INFERENCE].json``) with the per-image matrices beside them
(``.npz``, read back by ``evaluation.load_evidence``), and the places of ``--worst`` galleries and
``--save-probs`` folders.
"""

from __future__ import annotations

from pathlib import Path

from segcli import console
from segcli.files import write_json
from segcli.inference.evaluation import PerImage
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
