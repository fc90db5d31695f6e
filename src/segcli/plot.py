"""Pictures of runs: ``segcli plot`` (matplotlib, the optional ``plot`` extra) and the sample
predictions a run saves at its best epoch (``samples/best.png``, OpenCV only).

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

import cv2
import numpy as np
import torch

from segcli.errors import SegcliError
from segcli.run import METRICS, RunDir


def colorize(mask: np.ndarray, colors: Sequence[Sequence[int]], ignore_index: int) -> np.ndarray:
    """``mask: (H, W) int`` -> ``(H, W, 3) uint8`` RGB; ignore_index (and any value outside the
    palette) black."""
    palette = np.zeros((256, 3), np.uint8)
    palette[: len(colors)] = np.asarray(colors, dtype=np.uint8)
    out = palette[np.clip(mask, 0, 255).astype(np.int64)]
    out[(mask == ignore_index) | (mask >= len(colors))] = 0
    return out


@torch.inference_mode()
def predict_sample(model: torch.nn.Module, sample: dict, ctx, mean: Sequence[float],
                   std: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One eval-transformed sample (``image (3, H, W) float32`` normalised, ``mask (H, W) int64``)
    through ``model`` as validation runs it: ``(image (H, W, 3) uint8 RGB, truth (H, W) int64,
    prediction (H, W) int64)``."""
    from segcli.engine import forward_at_scale

    x = sample["image"].unsqueeze(0).to(ctx.device)
    if ctx.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with ctx.autocast():
        pred = forward_at_scale(model, x, ctx.eval_scale).float().argmax(1)[0].cpu().numpy()
    image = sample["image"].permute(1, 2, 0).cpu().numpy() * np.asarray(std) + np.asarray(mean)
    image = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    return image, sample["mask"].cpu().numpy(), pred


def error_map(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, colors, ignore_index: int) -> np.ndarray:
    """``(H, W, 3) uint8``: wrong pixels in the colour of their true class, right ones as the image
    in dim gray, ignore_index pixels black."""
    gray = (image.mean(2, keepdims=True) * 0.35).astype(np.uint8).repeat(3, 2)
    out = np.where((pred != truth)[..., None], colorize(truth, colors, ignore_index), gray)
    out[truth == ignore_index] = 0
    return out


def _write_png(rows: list[np.ndarray], path: Path) -> None:
    """Stack RGB rows (padded to one width, 4 black pixels between) into one PNG, atomically."""
    width = max(r.shape[1] for r in rows)
    grid = np.concatenate([np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0))) for r in rows], axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    cv2.imwrite(str(tmp), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    tmp.replace(path)


def _caption(text: str, width: int) -> np.ndarray:
    """A ``(22, width, 3) uint8`` white strip with ``text`` in black (OpenCV's Hershey font)."""
    strip = np.full((22, width, 3), 255, np.uint8)
    cv2.putText(strip, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


@torch.inference_mode()
def save_samples(model: torch.nn.Module, dataset, count: int, ctx, colors, ignore_index: int,
                 mean: Sequence[float], std: Sequence[float], path: Path) -> None:
    """One PNG of ``count`` rows (image | truth | prediction) for images spread evenly over
    ``dataset`` (its eval transform: whole images, normalised, padded), predicted by ``model`` in eval
    mode. The prediction is drawn where the truth is labelled (black on ignore_index and padding, as
    the metrics skip them). The model is put back into the mode it was in; no random state is used.
    """
    was_training = model.training
    model.eval()
    rows = []
    picks = sorted({int(i) for i in np.linspace(0, len(dataset) - 1, min(count, len(dataset)))}) if len(dataset) else []
    for index in picks:
        image, truth, pred = predict_sample(model, dataset[index], ctx, mean, std)
        pred = np.where(truth == ignore_index, ignore_index, pred)
        rows.append(np.concatenate([image, colorize(truth, colors, ignore_index),
                                    colorize(pred, colors, ignore_index)], axis=1))
    model.train(was_training)
    if rows:
        _write_png(rows, path)


@torch.inference_mode()
def save_gallery(model: torch.nn.Module, dataset, picks: Sequence[tuple[int, str]], ctx, colors, ignore_index: int,
                 mean: Sequence[float], std: Sequence[float], path: Path) -> None:
    """One PNG with a captioned row per ``(dataset index, caption)``: image | truth | prediction |
    error map (``error_map``), as ``save_samples`` predicts them (``segcli eval --worst K``)."""
    model.eval()
    rows = []
    for index, caption in picks:
        image, truth, pred = predict_sample(model, dataset[index], ctx, mean, std)
        pred = np.where(truth == ignore_index, ignore_index, pred)
        row = np.concatenate([image, colorize(truth, colors, ignore_index), colorize(pred, colors, ignore_index),
                              error_map(image, truth, pred, colors, ignore_index)], axis=1)
        rows.append(np.concatenate([_caption(caption, row.shape[1]), row], axis=0))
    if rows:
        _write_png(rows, path)


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
            written.append(_confusion(plt, run["val"], name, out_dir / f"confusion_{_slug(name)}.png"))
    return written


def _curves(plt, runs: Sequence[dict], names: Sequence[str], path: Path) -> Path:
    """Train (solid) and val (dashed) loss, and val mIoU, per epoch; one colour per run."""
    import matplotlib.ticker

    fig, (ax_loss, ax_miou) = plt.subplots(1, 2, figsize=(12, 4.5))
    for run, name in zip(runs, names):
        train = [(h["epoch"], h["train_loss"]) for h in run["history"] if h.get("train_loss") is not None]
        # a classical baseline has no loss: an empty line still gives the run its colour
        line, = ax_loss.plot(*(zip(*train) if train else ([], [])), label=f"{name} train" if train else None)
        val = [(h["epoch"], h["val_loss"]) for h in run["history"] if h.get("val_loss") is not None]
        if val:
            ax_loss.plot(*zip(*val), linestyle="--", color=line.get_color(), label=f"{name} val")
        miou = [(h["epoch"], h["val_miou"]) for h in run["history"] if h.get("val_miou") is not None]
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
    fig, ax = plt.subplots(figsize=(min(16.0, max(6.0, 0.3 * len(classes) * len(with_classes) + 2)), 4.5))
    width = 0.8 / len(with_classes)
    for i, (run, name) in enumerate(with_classes):
        values = [run["val"]["per_class_iou"].get(c) for c in classes]
        ax.bar(np.arange(len(classes)) + i * width - 0.4 + width / 2,
               [0 if v is None else v for v in values], width, label=f"{name} (mIoU {run['val']['miou']:.3f})")
    ax.set_xticks(np.arange(len(classes)), classes, rotation=45, ha="right")
    ax.set(title="per-class val IoU at the best epoch", ylabel="IoU", ylim=(0, 1))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def _confusion(plt, val: dict, name: str, path: Path) -> Path:
    """The best epoch's confusion matrix, rows normalised to the true class (recall on the diagonal)."""
    m = np.asarray(val["confusion_matrix"], dtype=np.float64)
    normalised = m / np.maximum(m.sum(1, keepdims=True), 1)
    classes = list(val.get("per_class_iou") or range(len(m)))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.5 + 0.55 * len(m)), max(4.0, 1.2 + 0.5 * len(m))))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(m)):
        for j in range(len(m)):
            ax.text(j, i, f"{normalised[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if normalised[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(m)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(m)), classes)
    ax.set(xlabel="predicted", ylabel="true")
    ax.set_title(f"{name}\nconfusion matrix at the best epoch, rows normalised (recall)", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046)
    return _save(fig, path)


def run_labels(run_dirs: Sequence[Path]) -> list[str]:
    """Legend labels: the overrides that differ between the runs (``loss=ce seed=1``), else the
    shortest trailing path parts that tell the runs apart."""
    from segcli.compare import differing_keys, run_record

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
