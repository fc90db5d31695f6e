"""``segcli eval``: a checkpoint scored on a split of the data it was trained on, with the run's own
preprocessing and ``inference.loop.evaluate``, the code path of validation during training, so the
numbers match. Needs the checkpoint alone (runs/checkpoints.py), not the trainer.

Every eval also keeps its evidence, one confusion matrix per image (``PerImage``), so that any
protocol or bootstrap resample (``segcli compare``, metrics/bootstrap.py) is recomputed without running
the model again.
"""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from segcli import console
from segcli.config import run_seed
from segcli.data.datasets import build_datasets
from segcli.data.loaders import make_loader
from segcli.data.settings import DatasetInfo, DatasetSettings
from segcli.errors import SegcliError
from segcli.files import atomic_write, write_json
from segcli.inference.loop import evaluate
from segcli.inference.modes import Inference, InferenceSettings
from segcli.metrics.confusion import PROTOCOLS, protocols
from segcli.metrics.surface import HausdorffAccumulator
from segcli.models.build import model_from_checkpoint
from segcli.runs.checkpoints import load_checkpoint
from segcli.runs.run_dir import RunDir
from segcli.runtime import step_context


@dataclass
class PerImage:
    """One eval's evidence: ``matrices`` ``(N, C, C) int64`` (rows: truth, columns: prediction,
    ignore_index pixels left out), one per image in the order of ``names`` (N sample names), and
    what they came from. Summed over images they are the split's confusion matrix exactly."""

    names: list[str]
    matrices: np.ndarray
    class_names: list[str]
    split: str
    checkpoint: str
    epoch: int | None

    def save(self, path: Path) -> None:
        """Write a compressed ``.npz`` (numpy arrays and strings only: loads without pickle), atomically."""
        arrays = {
            "matrices": self.matrices.astype(np.int64),
            "names": np.array(self.names, dtype=str),
            "class_names": np.array(self.class_names, dtype=str),
            "split": np.array(self.split),
            "checkpoint": np.array(self.checkpoint),
            "epoch": np.array(-1 if self.epoch is None else self.epoch),
        }
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        atomic_write(Path(path), lambda f: f.write(buffer.getvalue()))

    @classmethod
    def load(cls, path: Path) -> PerImage:
        """Read what ``save`` wrote.

        Raises:
            SegcliError: the file is missing or not a segcli per-image file.
        """
        try:
            with np.load(path, allow_pickle=False) as z:
                epoch = int(z["epoch"])
                return cls(
                    [str(x) for x in z["names"]],
                    z["matrices"].astype(np.int64),
                    [str(x) for x in z["class_names"]],
                    str(z["split"]),
                    str(z["checkpoint"]),
                    None if epoch < 0 else epoch,
                )
        except FileNotFoundError:
            raise SegcliError(f"{path}: no such file (segcli eval writes it)") from None
        except (OSError, KeyError, ValueError) as exc:
            raise SegcliError(f"{path}: not a segcli per-image matrix file ({exc})") from None


class ProbabilityWriter:
    """``segcli eval --save-probs``: one ``NAME.npz`` per image in a folder (key ``probs``: ``(C, h,
    w) float16`` class probabilities at the evaluated image's own size, padding cut off; key
    ``class_names``), the format of ``segcli predict --save-probs``, for fusing models later.

    Written into ``FOLDER.partial`` and renamed to ``FOLDER`` by ``finish()`` (replacing an older
    one), so an interrupted eval never leaves a folder that looks complete.
    """

    def __init__(self, folder: Path, class_names: list[str], logits: bool) -> None:
        self.folder, self.class_names, self.logits = Path(folder), class_names, logits
        self.partial = self.folder.with_name(self.folder.name + ".partial")
        shutil.rmtree(self.partial, ignore_errors=True)
        self.partial.mkdir(parents=True)
        self.count = 0

    def __call__(self, scores: torch.Tensor, batch: dict) -> None:
        """``scores: (N, C, H, W)`` logits (``logits``) or probabilities of a padded batch; ``batch``
        with ``name`` and ``size`` (see ``data.loaders.pad_collate``)."""
        probs = scores.float().softmax(1) if self.logits else scores.float()
        probs = probs.to(torch.float16).cpu().numpy()
        for i, (name, (h, w)) in enumerate(zip(batch["name"], batch["size"], strict=True)):
            np.savez_compressed(
                self.partial / f"{str(name).replace('/', '__')}.npz",
                probs=probs[i, :, :h, :w],
                class_names=np.array(self.class_names, dtype=str),
            )
            self.count += 1

    def finish(self) -> Path:
        """Move the complete folder into place; returns it."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self.partial.rename(self.folder)
        return self.folder


def evaluate_checkpoint(
    path: Path,
    split: str = "val",
    data_root: str | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    hd95: bool = False,
    amp: str | None = None,
    worst: int = 0,
    worst_png: Path | None = None,
    inference: InferenceSettings | None = None,
    probs_dir: Path | None = None,
) -> tuple[dict, PerImage]:
    """Evaluate a checkpoint on a split of the data it was trained on, with the run's own
    preprocessing and ``inference.loop.evaluate`` (the code path of validation during training).
    ``amp``: autocast setting (``auto``, ``bf16``, ``fp16``, ``false``; see ``runtime.resolve_amp``),
    default the run's ``trainer.amp``, so ``auto`` follows the machine that evaluates. ``worst``:
    also draw the ``worst`` images of lowest per-image mIoU into ``worst_png`` (``worst_images``).
    ``inference``: how images become scores (inference/modes.py; default ``whole``, validation's pass).
    ``probs_dir``: also write every image's class probabilities there (``ProbabilityWriter``).

    Returns:
        (scores, per-image matrices). Scores: summary.json's ``val`` keys (plus ``per_image_miou``, ``per_image_mdice``) and ``split``,
        ``images``, ``seconds``, ``images_per_second``, ``checkpoint``, ``epoch``, ``precision``
        (``runtime.Precision.as_dict``), ``inference`` (``InferenceSettings.as_dict``), ``protocol`` (the
        default's description) and ``protocols`` (``{name: {miou, mdice}}``, see metrics.confusion.PROTOCOLS);
        with ``hd95`` also ``hd95``, ``per_class_hd95`` (pixels) and ``hd95_images`` (see surface_metrics);
        with ``worst`` also ``worst_images``: ``[{name, miou, worst_classes: {class: IoU}}]``, lowest first;
        with ``probs_dir`` also ``probabilities``: ``{folder, images}``.

    Raises:
        SegcliError: the checkpoint is missing or not segcli's, its data cannot be read, the split is
            missing, or ``amp`` is not a known setting; a CRF without pydensecrf2.
    """
    inference = inference or InferenceSettings()
    job = _EvalJob.load(path, split, data_root, batch_size, device, amp)
    info, ctx, norm = job.info, job.ctx, job.ckpt["normalization"]
    distances = HausdorffAccumulator(info.num_classes, info.ignore_index) if hd95 else None
    infer = Inference(inference, norm["mean"], norm["std"])
    writer = ProbabilityWriter(probs_dir, info.class_names, inference.plain) if probs_dir else None
    with console.EpochProgress(f"eval {split}", len(job.dataset)) as bar:
        ev = evaluate(
            job.model,
            job.loader,
            info.num_classes,
            info.ignore_index,
            ctx,
            on_batch=bar.advance,
            per_image=True,
            on_predictions=distances.update if distances else None,
            infer=lambda net, x: infer(net, x, ctx.eval_scale),
            on_scores=writer,
        )
    extra = distances.compute(info.class_names) if distances else {}
    if writer is not None:
        extra["probabilities"] = {"folder": str(writer.finish().resolve()), "images": writer.count}
    evidence = PerImage(
        ev.names,
        ev.matrix.image_matrices_cpu().numpy().astype(np.int64),
        info.class_names,
        split,
        str(Path(path).resolve()),
        job.ckpt.get("epoch"),
    )
    if worst > 0:
        extra["worst_images"] = worst_images(evidence, worst)
        job.draw_worst(extra["worst_images"], ev.names, worst_png or Path(f"{split}-worst.png"))
    return {
        **ev.scores.as_dict(info.class_names),
        **extra,
        "split": split,
        "images": ev.images,
        "seconds": round(ev.seconds, 3),
        "images_per_second": round(ev.images / max(ev.seconds, 1e-9), 3),
        "checkpoint": str(Path(path).resolve()),
        "epoch": job.ckpt.get("epoch"),
        "precision": ctx.precision.as_dict(),
        "inference": inference.as_dict(),
        "protocol": "dataset: " + PROTOCOLS["dataset"],
        "protocols": protocols(ev.matrix, ev.scores),
    }, evidence


@dataclass
class _EvalJob:
    """What an eval of a checkpoint works on: the checkpoint, its classes, the split's dataset and
    loader (the run's eval preprocessing), the step context and the model on its device."""

    ckpt: dict
    info: DatasetInfo
    dataset: object
    loader: object
    ctx: object
    model: torch.nn.Module

    @classmethod
    def load(
        cls,
        path: Path,
        split: str,
        data_root: str | None,
        batch_size: int | None,
        device: str,
        amp: str | None,
    ) -> _EvalJob:
        """Load the checkpoint and build the rest from its config (see ``evaluate_checkpoint``).

        Raises:
            SegcliError: as ``evaluate_checkpoint``.
        """
        ckpt = load_checkpoint(path)
        cfg = ckpt["config"]
        dataset = DatasetSettings.from_config(cfg["dataset"])
        if data_root is not None:
            dataset = dataset.with_root(data_root)
        info, data, _ = build_datasets(cfg, (split,), run_seed(cfg), augmented=(), settings=dataset)
        trainer = {**cfg["trainer"], "device": device, **({"amp": amp} if amp is not None else {})}
        ctx = step_context(trainer, dataset.scale)
        model = model_from_checkpoint(ckpt, ctx.device)
        if ctx.channels_last:
            model = model.to(memory_format=torch.channels_last)
        loader = make_loader(
            data[split],
            batch_size or int(cfg["trainer"]["eval_batch_size"]),
            False,
            int(cfg["trainer"]["num_workers"]),
            info.ignore_index,
            run_seed(cfg),
        )
        return cls(ckpt, info, data[split], loader, ctx, model)

    def draw_worst(self, worst: list[dict], names: list[str], png: Path) -> None:
        """``worst_images``' pictures: image | truth | prediction | errors, captioned, into ``png``."""
        from segcli.inference.gallery import (
            save_gallery,  # only here: eval stays light (tests/test_imports.py)
        )

        norm = self.ckpt["normalization"]
        picks = [(names.index(w["name"]), _worst_caption(w)) for w in worst]
        save_gallery(
            self.model,
            self.dataset,
            picks,
            self.ctx,
            self.info.colors,
            self.info.ignore_index,
            norm["mean"],
            norm["std"],
            png,
        )


def worst_images(evidence: PerImage, count: int, classes_shown: int = 3) -> list[dict]:
    """The ``count`` images of lowest per-image mIoU (mean IoU over the classes present in the
    image's truth or prediction; images with no labelled pixel left out), lowest first, each with its
    ``classes_shown`` lowest-IoU classes: ``[{"name", "miou", "worst_classes": {class: IoU}}]``."""
    from segcli.metrics.bootstrap import scores_of_matrices

    scores = scores_of_matrices(evidence.matrices)
    order = [
        i
        for i in np.argsort(np.nan_to_num(scores["miou"], nan=np.inf), kind="stable")
        if not np.isnan(scores["miou"][i])
    ][:count]
    out = []
    for i in order:
        iou = scores["iou"][i]
        classes = [
            k
            for k in np.argsort(np.nan_to_num(iou, nan=np.inf), kind="stable")
            if not np.isnan(iou[k])
        ]
        out.append(
            {
                "name": evidence.names[i],
                "miou": float(scores["miou"][i]),
                "worst_classes": {
                    evidence.class_names[k]: float(iou[k]) for k in classes[:classes_shown]
                },
            }
        )
    return out


def _worst_caption(item: dict) -> str:
    classes = ", ".join(f"{c} {v:.2f}" for c, v in item["worst_classes"].items())
    return f"{item['name']}: mIoU {item['miou']:.3f}; worst classes: {classes}"


def load_evidence(item: Path, split: str = "test") -> tuple[str, PerImage]:
    """The per-image matrices ``segcli compare`` reads, and a label for them, from a run folder
    (its ``evals/best-SPLIT.npz``, which ``segcli eval RUN/checkpoints/best.pt --split SPLIT``
    writes), an eval's ``--json`` file (the ``.npz`` beside it) or the ``.npz`` itself.

    Raises:
        SegcliError: nothing there; the run has no eval of best.pt on ``split`` yet, or one of an
            older best epoch (the message gives the eval command); a file of another split.
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
            raise SegcliError(
                f"{item}: no eval of checkpoints/best.pt on the {split} split yet; run: {command}"
            )
        evidence = PerImage.load(npz)
        best_epoch = run.summary().get("best_epoch")
        if best_epoch is not None and evidence.epoch is not None and evidence.epoch != best_epoch:
            raise SegcliError(
                f"{npz}: evaluates epoch {evidence.epoch}, but best.pt is now epoch {best_epoch}; "
                f"run: {command}"
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
    """Keep an eval: with ``json_path`` the scores there and the per-image matrices beside it (.npz);
    for a checkpoint inside a run folder (RUN/checkpoints/NAME.pt) also RUN/evals/NAME-SPLIT.json and
    .npz (NAME-SPLIT-INFERENCE.* for other inference modes than whole), where ``segcli compare RUN...``
    finds them. Returns the (json, npz) pair last written ([] when none: a checkpoint elsewhere
    without ``json_path``, or a run folder that cannot be written, which prints a note)."""
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
