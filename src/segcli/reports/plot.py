"""Pictures of runs: ``segcli plot`` (matplotlib, the optional ``plot`` extra). The sample
predictions a run saves and eval's worst-image galleries are ``inference.gallery``'s.

``segcli plot RUN_DIR... --out DIR`` writes:

- ``curves.png``: train and val loss, and val mIoU, per epoch, every run on shared axes;
- ``per_class_iou.png``: the per-class val IoU of each run's best epoch, bars side by side;
- ``confusion_<run>.png``: each run's confusion matrix at its best epoch, rows normalised to the
  true class (so the diagonal is per-class recall), with class names.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segcli.errors import SegcliError
from segcli.runs.run_dir import METRICS, RunDir


def _run(path: Path) -> dict:
    run = RunDir.read(path)
    if not (run.path / METRICS).is_file():
        raise SegcliError(f"{path}: not a segcli run (expected {METRICS})")
    return {"path": run.path, "history": run.metrics(), "val": run.summary().get("val") or {}}


def plot_runs(run_dirs: Sequence[Path], out_dir: Path) -> list[Path]:
    """Write curves.png, per_class_iou.png and confusion_<run>.png (see the module docstring).

    Returns:
        the files written.

    Raises:
        SegcliError: matplotlib is missing, or a folder is not a run.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        raise SegcliError("segcli plot needs matplotlib: pip install 'segcli[plot]'") from None
    runs = [_run(p) for p in run_dirs]
    names = run_labels(run_dirs)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [_curves(plt, runs, names, out_dir / "curves.png")]
    with_classes = [(r, n) for r, n in zip(runs, names) if r["val"].get("per_class_iou")]
    if with_classes:
        written.append(_per_class_bars(plt, with_classes, out_dir / "per_class_iou.png"))
    for run, name in zip(runs, names):
        if run["val"].get("confusion_matrix"):
            written.append(
                _confusion(plt, run["val"], name, out_dir / f"confusion_{_slug(name)}.png")
            )
    return written


def _curves(plt, runs: Sequence[dict], names: Sequence[str], path: Path) -> Path:
    """Train (solid) and val (dashed) loss, and val mIoU, per epoch; one colour per run."""
    import matplotlib.ticker

    fig, (ax_loss, ax_miou) = plt.subplots(1, 2, figsize=(12, 4.5))
    for run, name in zip(runs, names):
        train = [
            (h["epoch"], h["train_loss"]) for h in run["history"] if h.get("train_loss") is not None
        ]
        # a classical baseline has no loss: an empty line still gives the run its colour
        (line,) = ax_loss.plot(
            *(zip(*train) if train else ([], [])), label=f"{name} train" if train else None
        )
        val = [(h["epoch"], h["val_loss"]) for h in run["history"] if h.get("val_loss") is not None]
        if val:
            ax_loss.plot(*zip(*val), linestyle="--", color=line.get_color(), label=f"{name} val")
        miou = [
            (h["epoch"], h["val_miou"]) for h in run["history"] if h.get("val_miou") is not None
        ]
        if miou:
            ax_miou.plot(*zip(*miou), marker="o", color=line.get_color(), label=name)
    ax_loss.set(title="loss (solid: train, dashed: val)", xlabel="epoch", ylabel="loss")
    ax_miou.set(title="val mIoU", xlabel="epoch", ylabel="mIoU", ylim=(0, 1))
    for ax in (ax_loss, ax_miou):
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)


def _per_class_bars(plt, with_classes: Sequence[tuple[dict, str]], path: Path) -> Path:
    """Per-class val IoU of each run's best epoch, bars side by side (at most 16 inches wide)."""
    classes = list(with_classes[0][0]["val"]["per_class_iou"])
    fig, ax = plt.subplots(
        figsize=(min(16.0, max(6.0, 0.3 * len(classes) * len(with_classes) + 2)), 4.5)
    )
    width = 0.8 / len(with_classes)
    for i, (run, name) in enumerate(with_classes):
        values = [run["val"]["per_class_iou"].get(c) for c in classes]
        ax.bar(
            np.arange(len(classes)) + i * width - 0.4 + width / 2,
            [0 if v is None else v for v in values],
            width,
            label=f"{name} (mIoU {run['val']['miou']:.3f})",
        )
    ax.set_xticks(np.arange(len(classes)), classes, rotation=45, ha="right")
    ax.set(title="per-class val IoU at the best epoch", ylabel="IoU", ylim=(0, 1))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def _confusion(plt, val: dict, name: str, path: Path) -> Path:
    """The best epoch's confusion matrix, rows normalised to the true class (recall on the
    diagonal)."""
    m = np.asarray(val["confusion_matrix"], dtype=np.float64)
    normalised = m / np.maximum(m.sum(1, keepdims=True), 1)
    classes = list(val.get("per_class_iou") or range(len(m)))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.5 + 0.55 * len(m)), max(4.0, 1.2 + 0.5 * len(m))))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(m)):
        for j in range(len(m)):
            ax.text(
                j,
                i,
                f"{normalised[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if normalised[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(len(m)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(m)), classes)
    ax.set(xlabel="predicted", ylabel="true")
    ax.set_title(
        f"{name}\nconfusion matrix at the best epoch, rows normalised (recall)", fontsize=9
    )
    fig.colorbar(image, ax=ax, fraction=0.046)
    return _save(fig, path)


def run_labels(run_dirs: Sequence[Path]) -> list[str]:
    """Legend labels: the overrides that differ between the runs (``loss=ce seed=1``), else the
    shortest trailing path parts that tell the runs apart."""
    from segcli.reports.runs_table import differing_keys, run_record

    records = [run_record(p) for p in run_dirs]
    keys = [k for k in differing_keys(records) if k != "run.name"]
    labels = [" ".join(f"{k}={r['params'].get(k, '-')}" for k in keys) for r in records]
    if keys and len(set(labels)) == len(labels):
        return labels
    return _unique_names([str(p) for p in run_dirs])


def _unique_names(paths: Sequence[str]) -> list[str]:
    """The shortest trailing path parts that tell the runs apart."""
    parts = [Path(p).parts for p in paths]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return list(paths)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "run"


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
