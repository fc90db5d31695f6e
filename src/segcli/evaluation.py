"""``segcli eval``: a checkpoint scored on a split of the data it was trained on, with the run's own
preprocessing and ``engine.evaluate``, the code path of validation during training, so the
numbers match. Needs the checkpoint alone (checkpoints.py), not the trainer.
"""

from __future__ import annotations

from pathlib import Path

import torch

from segcli import report
from segcli.checkpoints import load_checkpoint, model_from_checkpoint
from segcli.config import run_seed
from segcli.data import make_loader
from segcli.datasets import build_datasets
from segcli.engine import evaluate
from segcli.metrics import PROTOCOLS, protocols
from segcli.runtime import step_context
from segcli.surface_metrics import HausdorffAccumulator


def evaluate_checkpoint(path: Path, split: str = "val", data_root: str | None = None,
                        batch_size: int | None = None, device: str = "auto", hd95: bool = False,
                        amp: str | None = None) -> dict:
    """Evaluate a checkpoint on a split of the data it was trained on, with the run's own
    preprocessing and ``engine.evaluate`` (the code path of validation during training).
    ``amp``: autocast setting (``auto``, ``bf16``, ``fp16``, ``false``; see ``runtime.resolve_amp``),
    default the run's ``trainer.amp``, so ``auto`` follows the machine that evaluates.

    Returns:
        summary.json's ``val`` keys (plus ``per_image_miou``, ``per_image_mdice``) and ``split``,
        ``images``, ``seconds``, ``images_per_second``, ``checkpoint``, ``epoch``, ``precision``
        (``runtime.Precision.as_dict``), ``protocol`` (the
        default's description) and ``protocols`` (``{name: {miou, mdice}}``, see metrics.PROTOCOLS);
        with ``hd95`` also ``hd95``, ``per_class_hd95`` (pixels) and ``hd95_images`` (see surface_metrics).

    Raises:
        SegcliError: the checkpoint is missing or not segcli's, its data cannot be read, the split is
            missing, or ``amp`` is not a known setting.
    """
    ckpt = load_checkpoint(path)
    cfg = ckpt["config"]
    if data_root is not None:
        cfg["dataset"]["root"] = data_root
    info, data, _ = build_datasets(cfg, (split,), run_seed(cfg), augmented=())
    trainer = {**cfg["trainer"], "device": device, **({"amp": amp} if amp is not None else {})}
    ctx = step_context(trainer, cfg["dataset"].get("scale", 1.0))
    model = model_from_checkpoint(ckpt, ctx.device)
    if ctx.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loader = make_loader(data[split], batch_size or int(cfg["trainer"]["eval_batch_size"]), False,
                         int(cfg["trainer"]["num_workers"]), info.ignore_index, run_seed(cfg))
    distances = HausdorffAccumulator(info.num_classes, info.ignore_index) if hd95 else None
    with report.EpochProgress(f"eval {split}", len(data[split])) as bar:
        ev = evaluate(model, loader, info.num_classes, info.ignore_index, ctx, on_batch=bar.advance, per_image=True,
                      on_predictions=distances.update if distances else None)
    extra = distances.compute(info.class_names) if distances else {}
    return {**ev.scores.as_dict(info.class_names), **extra, "split": split, "images": ev.images,
            "seconds": round(ev.seconds, 3), "images_per_second": round(ev.images / max(ev.seconds, 1e-9), 3),
            "checkpoint": str(Path(path).resolve()), "epoch": ckpt.get("epoch"), "precision": ctx.precision.as_dict(),
            "protocol": "dataset: " + PROTOCOLS["dataset"], "protocols": protocols(ev.matrix, ev.scores)}
