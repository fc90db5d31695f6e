"""``segcli eval``: a checkpoint scored on a split of the data it was trained on, with the
checkpoint's own preprocessing and ``inference.loop.evaluate``, the code path of validation during
training, so the numbers match. Needs the checkpoint alone (``inference.loaded.LoadedModel``), not
the trainer; where the results are kept is eval_files.py's.

Every eval also keeps its evidence, one confusion matrix per image (``PerImage``), so that any
protocol or bootstrap resample (``segcli compare``, metrics/bootstrap.py) is recomputed without
running the model again.
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
from segcli.data.loaders import make_loader
from segcli.errors import SegcliError
from segcli.files import atomic_write
from segcli.inference.loaded import LoadedModel
from segcli.inference.loop import EvalResult, evaluate
from segcli.inference.modes import InferenceSettings
from segcli.inference.tasks import inference_of
from segcli.metrics.confusion import PROTOCOLS, protocols
from segcli.metrics.surface import HausdorffAccumulator


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
        """Write a compressed ``.npz`` (numpy arrays and strings only: loads without pickle),
        atomically."""
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
        """``scores: (N, C, H, W)`` logits (``logits``) or probabilities of a padded batch;
        ``batch`` with ``name`` and ``size`` (see ``data.loaders.pad_collate``)."""
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
    """Evaluate a checkpoint on a split of the data it was trained on, with the checkpoint's own
    preprocessing (``inference.loaded.LoadedModel``) and ``inference.loop.evaluate`` (the code path
    of validation during training). ``amp``: autocast setting (``auto``, ``bf16``, ``fp16``,
    ``false``; see ``runtime.resolve_amp``), default the run's ``trainer.amp``, so ``auto``
    follows the machine that evaluates. ``worst``: also draw the ``worst`` images of lowest
    per-image mIoU into ``worst_png`` (``worst_images``). ``inference``: how images become scores
    (inference/modes.py; default ``whole``, validation's pass). ``probs_dir``: also write every
    image's class probabilities there (``ProbabilityWriter``).

    Returns:
        (scores, per-image matrices); the scores are ``_EvalJob.record``'s.

    Raises:
        SegcliError: the checkpoint is missing or not segcli's, or does not fit its architecture;
            its data cannot be read, the split is missing, or ``amp`` is not a known setting; a
            CRF without pydensecrf2.
    """
    settings = inference or InferenceSettings()
    job = _EvalJob.load(path, split, data_root, batch_size, device, amp)
    if worst > 0 and not inference_of(job.loaded.task).draws_worst:
        raise SegcliError(f"{path}: --worst draws semantic models' worst images only")
    ev, extra = job.run(settings, hd95, probs_dir)
    evidence = job.evidence(ev)
    if worst > 0:
        extra["worst_images"] = worst_images(evidence, worst)
        job.draw_worst(extra["worst_images"], ev.names, worst_png or Path(f"{split}-worst.png"))
    return job.record(ev, extra, settings), evidence


@dataclass
class _EvalJob:
    """What an eval of a checkpoint works on: the loaded checkpoint (model on its device, its
    preprocessing and classes), the split's name, dataset and loader (the run's eval pipeline with
    the checkpoint's statistics)."""

    loaded: LoadedModel
    split: str
    dataset: object
    loader: object

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
        """Load the checkpoint and build the split's loader from its config (see
        ``evaluate_checkpoint``).

        Raises:
            SegcliError: as ``evaluate_checkpoint``.
        """
        loaded = LoadedModel.load(path, device, amp)
        dataset = loaded.datasets((split,), data_root)[split]
        cfg = loaded.config
        collate = inference_of(loaded.task).collate
        loader = make_loader(
            dataset,
            batch_size or int(cfg["trainer"]["eval_batch_size"]),
            False,
            int(cfg["trainer"]["num_workers"]),
            loaded.classes.ignore_index,
            run_seed(cfg),
            collate=collate,
        )
        return cls(loaded, split, dataset, loader)

    def run(
        self, settings: InferenceSettings, hd95: bool, probs_dir: Path | None
    ) -> tuple[EvalResult, dict]:
        """The evaluation loop of the checkpoint's task over the split (``inference.tasks``):
        ``run_semantic``, or for task=instance ``instance_loop.evaluate_checkpoint_instances``."""
        return inference_of(self.loaded.task).evaluate(self, settings, hd95, probs_dir)

    def run_semantic(
        self, settings: InferenceSettings, hd95: bool, probs_dir: Path | None
    ) -> tuple[EvalResult, dict]:
        """The evaluation loop over the split (per-image matrices kept), with a progress bar;
        returns its result and the extra scores: HD95 (``hd95``; see ``metrics.surface``) and,
        with ``probs_dir``, ``probabilities``: ``{folder, images}`` (``ProbabilityWriter``)."""
        info, ctx = self.loaded.classes, self.loaded.ctx
        distances = HausdorffAccumulator(info.num_classes, info.ignore_index) if hd95 else None
        infer = self.loaded.inference(settings)
        writer = (
            ProbabilityWriter(probs_dir, info.class_names, settings.plain) if probs_dir else None
        )
        with console.EpochProgress(f"eval {self.split}", len(self.dataset)) as bar:
            ev = evaluate(
                self.loaded.model,
                self.loader,
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
            extra["probabilities"] = {
                "folder": str(writer.finish().resolve()),
                "images": writer.count,
            }
        return ev, extra

    def evidence(self, ev: EvalResult) -> PerImage:
        """The per-image matrices of ``ev`` (see ``PerImage``)."""
        return PerImage(
            ev.names,
            ev.matrix.image_matrices_cpu().numpy().astype(np.int64),
            self.loaded.classes.class_names,
            self.split,
            str(self.loaded.path.resolve()),
            self.loaded.epoch,
        )

    def record(self, ev: EvalResult, extra: dict, settings: InferenceSettings) -> dict:
        """An eval's scores: summary.json's ``val`` keys (plus ``per_image_miou``,
        ``per_image_mdice``), ``extra`` (``hd95``, ``per_class_hd95`` (pixels) and ``hd95_images``,
        see surface_metrics; ``probabilities``: ``{folder, images}``; ``worst_images``: ``[{name,
        miou, worst_classes: {class: IoU}}]``, lowest first, when there), then ``split``,
        ``images``, ``seconds``, ``images_per_second``, ``checkpoint``, ``epoch``, ``precision``
        (``runtime.Precision.as_dict``), ``inference`` (``InferenceSettings.as_dict``),
        ``protocol`` (the default's description) and ``protocols`` (``{name: {miou, mdice}}``, see
        metrics.confusion.PROTOCOLS)."""
        return {
            **ev.scores.as_dict(self.loaded.classes.class_names),
            **extra,
            "split": self.split,
            "images": ev.images,
            "seconds": round(ev.seconds, 3),
            "images_per_second": round(ev.images / max(ev.seconds, 1e-9), 3),
            "checkpoint": str(self.loaded.path.resolve()),
            "epoch": self.loaded.epoch,
            "precision": self.loaded.ctx.precision.as_dict(),
            "inference": settings.as_dict(),
            "protocol": "dataset: " + PROTOCOLS["dataset"],
            "protocols": protocols(ev.matrix, getattr(ev.scores, "semantic", ev.scores)),
        }

    def draw_worst(self, worst: list[dict], names: list[str], png: Path) -> None:
        """``worst_images``' pictures: image | truth | prediction | errors, captioned, into
        ``png``."""
        from segcli.inference.gallery import (
            save_gallery,  # only here: eval stays light (tests/test_imports.py)
        )

        loaded, pre = self.loaded, self.loaded.preprocessing
        picks = [(names.index(w["name"]), _worst_caption(w)) for w in worst]
        save_gallery(
            loaded.model,
            self.dataset,
            picks,
            loaded.ctx,
            loaded.classes.colors,
            loaded.classes.ignore_index,
            pre.normalization,
            png,
        )


def worst_images(evidence: PerImage, count: int, classes_shown: int = 3) -> list[dict]:
    """The ``count`` images of lowest per-image mIoU (mean IoU over the classes present in the
    image's truth or prediction; images with no labelled pixel left out), lowest first, each with
    its ``classes_shown`` lowest-IoU classes: ``[{"name", "miou", "worst_classes": {class:
    IoU}}]``."""
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
