"""The evaluation loop of ``task=instance``, shared by validation during training and ``segcli
eval`` (the same numbers either way): every image's detections scored by COCO's protocol
(``metrics.coco.CocoEvaluator``: mask and box AP with pycocotools) and, pasted by score into a
semantic mask (``metrics.coco.paste_semantic``), by the semantic protocol (one confusion matrix,
mIoU and Dice), so that an instance run and a semantic run are compared on the same data with the
same metric. ``InstanceScores.as_dict`` holds both; the run's best epoch is by ``mask_ap``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from segcli.inference.loop import EvalResult
from segcli.metrics.coco import CocoEvaluator, paste_semantic
from segcli.metrics.confusion import ConfusionMatrix, SegmentationScores
from segcli.runtime import StepContext

#: summary keys of COCO's protocol, in the order tables show them (mask, then box)
AP_KEYS = tuple(
    f"{kind}_{key}"
    for kind in ("mask", "box")
    for key in ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large", "ar100")
)


@dataclass
class InstanceScores:
    """Scores of one split: ``coco`` (``CocoEvaluator.compute()``: fractions 0..1 or None) and
    ``semantic`` (the pasted masks' ``SegmentationScores``)."""

    coco: dict
    semantic: SegmentationScores

    def as_dict(self, class_names: list[str]) -> dict:
        """The semantic dict (``miou``, ``mdice``, per class, ...) with COCO's keys added
        (``mask_ap``, ..., ``per_class_mask_ap``: name -> AP)."""
        out = self.semantic.as_dict(class_names)
        out.update({k: self.coco.get(k) for k in AP_KEYS})
        per_class = self.coco.get("per_class", {})
        out["per_class_mask_ap"] = {n: v.get("mask_ap") for n, v in per_class.items()}
        out["per_class_box_ap"] = {n: v.get("box_ap") for n, v in per_class.items()}
        return out


@dataclass
class InstanceEvalResult(EvalResult):
    """``inference.loop.EvalResult`` (``scores``: ``InstanceScores``, ``loss`` None, ``images``,
    ``seconds``, ``matrix``, ``names``) plus the ``evaluator`` (its ``detections()`` are the COCO
    results JSON)."""

    evaluator: CocoEvaluator = field(repr=False, default=None)


def detections_of(output: dict, height: int, width: int, mask_threshold: float) -> dict:
    """One image's torchvision output -> numpy, cropped to the image's ``height`` x ``width``
    (padding removed): ``masks (D, H, W) uint8`` (probability >= ``mask_threshold``),
    ``probabilities (D, H, W) float32``, ``boxes (D, 4) float32``, ``labels (D,) int64``,
    ``scores (D,) float32``."""
    probs = output["masks"][:, 0, :height, :width].float().cpu().numpy()
    boxes = output["boxes"].float().cpu().numpy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    return {
        "probabilities": probs,
        "masks": (probs >= mask_threshold).astype(np.uint8),
        "boxes": boxes,
        "labels": output["labels"].cpu().numpy().astype(np.int64),
        "scores": output["scores"].float().cpu().numpy(),
    }


@torch.inference_mode()
def evaluate_instances(
    model: nn.Module,
    loader,
    class_names: Sequence[str],
    category_ids: Sequence[int] | None,
    ctx: StepContext,
    mask_threshold: float = 0.5,
    stop_requested: Callable[[], bool] | None = None,
    per_image: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> InstanceEvalResult | None:
    """Detect every batch (``{"image": (N, 3, H, W) float32, "targets": [...], ...}``, see
    ``data.instance_datasets.instance_collate``) and score it; None when ``stop_requested()``
    became True between two batches. ``per_image`` keeps a confusion matrix per image (for
    ``segcli compare``) and the names.
    """
    model.eval()
    c = len(class_names)
    matrix = ConfusionMatrix(c, 255, device=torch.device("cpu"), per_image=per_image)
    evaluator = CocoEvaluator(class_names, category_ids)
    names: list[str] = []
    start, images = time.perf_counter(), 0
    for batch in loader:
        x = ctx.images(batch)
        with ctx.autocast():
            outputs = model(list(x))
        for i, (out, target) in enumerate(zip(outputs, batch["targets"])):
            _score_image(out, target, batch, i, evaluator, matrix, mask_threshold)
            names.append(str(batch["name"][i]))
        images += x.shape[0]
        if on_batch:
            on_batch(x.shape[0])
        if stop_requested is not None and stop_requested():
            return None
    scores = InstanceScores(evaluator.compute(), matrix.compute())
    return InstanceEvalResult(
        scores, None, images, time.perf_counter() - start, matrix, names, evaluator
    )


def _score_image(
    out: dict,
    target: dict,
    batch: dict,
    i: int,
    evaluator: CocoEvaluator,
    matrix: ConfusionMatrix,
    mask_threshold: float,
) -> None:
    """Add image ``i`` of ``batch`` (its detections ``out``, its ``target``) to COCO's evaluator
    and, pasted by score, to the semantic confusion matrix; padding cropped off first."""
    h, w = batch["size"][i]
    det = detections_of(out, h, w, mask_threshold)
    gt_masks = target["masks"][:, :h, :w].numpy().astype(np.uint8)
    gt_labels = target["labels"].numpy().astype(np.int64)
    crowd = target["iscrowd"].numpy().astype(bool)
    evaluator.add(
        int(batch["image_id"][i]),
        str(batch["file_name"][i]),
        h,
        w,
        gt_masks,
        gt_labels,
        crowd,
        det["masks"],
        det["boxes"],
        det["labels"],
        det["scores"],
    )
    pred = paste_semantic(det["probabilities"], det["labels"], det["scores"], mask_threshold)
    truth = semantic_truth(gt_masks, gt_labels, crowd, 255)
    matrix.update(torch.from_numpy(pred)[None], torch.from_numpy(truth)[None])


def semantic_truth(
    masks: np.ndarray, labels: np.ndarray, iscrowd: np.ndarray, ignore_index: int
) -> np.ndarray:
    """The semantic mask of an image's objects: ``masks (K, H, W)`` pasted in order (class
    ``labels``), crowd regions ``ignore_index`` (COCO does not score them either), the rest
    background 0. Returns ``(H, W) int64``."""
    h, w = masks.shape[-2:]
    out = np.zeros((h, w), np.int64)
    for m, label, crowd in zip(masks, labels, iscrowd):
        out[m > 0] = ignore_index if crowd else int(label)
    return out


def evaluate_checkpoint_instances(job, settings, hd95: bool, probs_dir) -> tuple:
    """``segcli eval``'s loop for a task=instance checkpoint (``evaluation._EvalJob.run``):
    ``evaluate_instances`` over the job's split with a progress bar, per-image evidence kept;
    extra: ``detections``, the split's COCO results (RLE masks, boxes, scores).

    Raises:
        SegcliError: an inference mode other than ``whole``, ``--hd95`` or ``--save-probs``
            (semantic scores' options).
    """
    from segcli import console
    from segcli.errors import SegcliError

    if not settings.plain or hd95 or probs_dir is not None:
        raise SegcliError(
            "task=instance checkpoint: --inference other than whole, --hd95 and --save-probs "
            "are options of semantic models"
        )
    loaded = job.loaded
    mask_threshold = float(loaded.config.get("task", {}).get("mask_threshold", 0.5))
    with console.EpochProgress(f"eval {job.split}", len(job.dataset)) as bar:
        ev = evaluate_instances(
            loaded.model,
            job.loader,
            loaded.classes.class_names,
            loaded.category_ids,
            loaded.ctx,
            mask_threshold,
            per_image=True,
            on_batch=bar.advance,
        )
    return ev, {"detections": ev.evaluator.detections()}
