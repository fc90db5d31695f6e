"""Segmentation metrics from one confusion matrix accumulated over a whole split.

Policy (the "dataset-level" protocol of Cityscapes, PASCAL VOC and torchvision's references):
one C x C confusion matrix is summed over every pixel of the split (never averaged per
batch); pixels whose target is ``ignore_index`` are dropped; per class

    IoU_c  = TP / (TP + FP + FN)            (Jaccard index)
    Dice_c = 2 TP / (2 TP + FP + FN)        (F1 score)

and a class absent from both truth and prediction (TP + FP + FN = 0) gets NaN and is left
out of the means (mIoU, mDice). Pixel accuracy is trace / total over non-ignored pixels.
Also from the same matrix: per-class accuracy TP / (TP + FN) (recall) and its mean over the
classes present in the truth (FCN's "mean accuracy", Long et al. 2015), and frequency-weighted
IoU sum_c (TP_c + FN_c) / total * IoU_c (Long et al. 2015). With ``per_image=True`` a matrix per
image is kept too, for the per-image protocol (the mean over images of each image's mIoU and
mDice, classes absent from an image's truth and prediction left out: the medical convention).

``protocols`` names the common definitions of "mIoU" side by side (see PROTOCOLS).

Written here rather than taken from torchmetrics: the matrix is one ``bincount`` per batch on
the model's device, exactly summable across processes, and the absent-class rule above is
ours to state and test (torchmetrics' and SMP's defaults differ on it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SegmentationScores:
    """Scores of one split. Fractions in [0, 1]; NaN marks a class absent from truth and prediction.

    Attributes:
        miou: mean of the non-NaN per-class IoUs.
        mdice: mean of the non-NaN per-class Dice scores.
        pixel_accuracy: correctly labelled pixels / labelled pixels.
        per_class_iou: C floats.
        per_class_dice: C floats.
        pixels: number of non-ignored pixels counted.
        per_class_accuracy: C floats, TP / (TP + FN); NaN for a class absent from the truth.
        mean_accuracy: mean of the non-NaN per-class accuracies.
        fwiou: frequency-weighted IoU.
        per_image_miou, per_image_mdice: means over images (None unless kept per image).
    """

    miou: float
    mdice: float
    pixel_accuracy: float
    per_class_iou: list[float]
    per_class_dice: list[float]
    pixels: int
    per_class_accuracy: list[float] = ()
    mean_accuracy: float = float("nan")
    fwiou: float = float("nan")
    per_image_miou: float | None = None
    per_image_mdice: float | None = None

    def as_dict(self, class_names: list[str]) -> dict:
        """JSON-ready dict; per-class maps are ``name -> value`` with ``None`` for NaN."""

        def clean(x: float) -> float | None:
            return None if math.isnan(x) else float(x)

        out = {
            "miou": clean(self.miou),
            "mdice": clean(self.mdice),
            "pixel_accuracy": clean(self.pixel_accuracy),
            "mean_accuracy": clean(self.mean_accuracy),
            "fwiou": clean(self.fwiou),
            "per_class_iou": {n: clean(v) for n, v in zip(class_names, self.per_class_iou)},
            "per_class_dice": {n: clean(v) for n, v in zip(class_names, self.per_class_dice)},
            "per_class_accuracy": {
                n: clean(v) for n, v in zip(class_names, self.per_class_accuracy)
            },
        }
        if self.per_image_miou is not None:
            out["per_image_miou"] = clean(self.per_image_miou)
            out["per_image_mdice"] = clean(self.per_image_mdice)
        return out


class ConfusionMatrix:
    """Accumulates a ``(C, C) int64`` confusion matrix (rows: truth, columns: prediction).

    Args:
        num_classes: C, the number of classes (labels 0..C-1).
        ignore_index: target value whose pixels are not counted (e.g. 11 for CamVid void,
            255 for VOC); ``None`` counts every pixel.
        device: where the matrix lives; put it where the predictions are.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = None,
        device: torch.device | str = "cpu",
        per_image: bool = False,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        self.per_image = per_image
        self.image_matrices: list[torch.Tensor] = []  # (N, C, C) int64 per update, when per_image

    def reset(self) -> None:
        """Set every count back to zero."""
        self.matrix.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch.

        Args:
            pred: ``(N, H, W)`` int64 predicted class indices in 0..C-1 (``(H, W)``: one image).
            target: ``(N, H, W)`` int64 true class indices; ``ignore_index`` pixels are skipped.

        Raises:
            ValueError: the shapes differ, or a non-ignored target is outside 0..C-1.
        """
        if pred.shape != target.shape:
            raise ValueError(
                f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}"
            )
        c, n = self.num_classes, pred.shape[0] if pred.dim() == 3 else 1
        image = None
        if self.per_image:  # the image index of every pixel, (N*H*W,)
            image = torch.arange(n, device=self.matrix.device).repeat_interleave(
                pred.numel() // max(n, 1)
            )
        pred = pred.reshape(-1).to(self.matrix.device, torch.int64)
        target = target.reshape(-1).to(self.matrix.device, torch.int64)
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            pred, target = pred[keep], target[keep]
            image = image[keep] if image is not None else None
        if target.numel() and (int(target.min()) < 0 or int(target.max()) >= c):
            raise ValueError(
                f"target holds values outside 0..{c - 1} (ignore_index={self.ignore_index})"
            )
        if self.per_image:
            per_image = torch.bincount(
                image * c * c + target * c + pred, minlength=n * c * c
            ).reshape(n, c, c)
            self.image_matrices.append(per_image)
            self.matrix += per_image.sum(0)
        else:
            self.matrix += torch.bincount(target * c + pred, minlength=c * c).reshape(c, c)

    def merge(self, other: ConfusionMatrix) -> None:
        """Add another matrix of the same size (e.g. from another process)."""
        self.matrix += other.matrix.to(self.matrix.device)

    def compute(self) -> SegmentationScores:
        """Scores from the counts so far (see the module docstring for the formulas)."""
        m = self.matrix.double().cpu()
        iou, dice = class_scores(m)
        tp, truth = m.diag(), m.sum(1)
        total = m.sum()
        accuracy = torch.where(truth > 0, tp / truth.clamp_min(1), float("nan"))
        fwiou = float((truth / total * iou.nan_to_num(0.0)).sum()) if total > 0 else float("nan")
        per_image = {}
        if self.per_image:
            images = [class_scores(x) for x in self.image_matrices_cpu()]
            per_image = {
                "per_image_miou": nanmean([nanmean(i.tolist()) for i, _ in images]),
                "per_image_mdice": nanmean([nanmean(d.tolist()) for _, d in images]),
            }
        return SegmentationScores(
            miou=nanmean(iou.tolist()),
            mdice=nanmean(dice.tolist()),
            pixel_accuracy=float(tp.sum() / total) if total > 0 else float("nan"),
            per_class_iou=iou.tolist(),
            per_class_dice=dice.tolist(),
            pixels=int(total),
            per_class_accuracy=accuracy.tolist(),
            mean_accuracy=nanmean(accuracy.tolist()),
            fwiou=fwiou,
            **per_image,
        )

    def image_matrices_cpu(self) -> torch.Tensor:
        """``(images, C, C) float64`` per-image matrices, in update order (per_image=True only)."""
        if not self.image_matrices:
            return torch.zeros(0, self.num_classes, self.num_classes, dtype=torch.float64)
        return torch.cat(self.image_matrices).double().cpu()


def nanmean(values: list[float]) -> float:
    """Mean of the non-NaN values; NaN when there are none."""
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else float("nan")


def class_scores(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class IoU and Dice of a ``(..., C, C)`` float64 confusion matrix (rows: truth), shaped
    ``(..., C)``; NaN where TP+FP+FN = 0."""
    tp = m.diagonal(dim1=-2, dim2=-1)
    fp, fn = m.sum(-2) - tp, m.sum(-1) - tp
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    iou = torch.where(tp + fp + fn > 0, tp / (tp + fp + fn).clamp_min(1), nan)
    dice = torch.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn).clamp_min(1), nan)
    return iou, dice


PROTOCOLS = {
    "dataset": "dataset-level confusion matrix, per-class mean, ignore_index excluded, classes "
    "absent from truth and prediction excluded (PASCAL VOC, Cityscapes; segcli's default)",
    "dataset_absent_as_1": "as dataset, but a class absent from truth and prediction scores 1 "
    "(SMP's metrics with zero_division=1)",
    "dataset_no_background": "as dataset, class 0 left out of the mean (common in medical imaging)",
    "per_image": "mean over images of each image's per-class mean; classes absent from an image "
    "excluded (nnU-Net, medical Dice tables)",
    "micro": "all pixels pooled over classes: sum TP / sum (TP + FP + FN) (SMP's 'micro' "
    "reduction)",
    "frequency_weighted": "IoU weighted by each class's share of the true pixels (FCN's fwIoU)",
}


def protocols(
    matrix: ConfusionMatrix, scores: SegmentationScores | None = None
) -> dict[str, dict[str, float]]:
    """The headline mIoU and mDice under each protocol of ``PROTOCOLS`` (``per_image`` only when
    the matrix kept images). ``scores``: ``matrix.compute()`` when the caller has it already.
    Returns ``{protocol: {"miou": float, "mdice": float}}`` (NaN: undefined)."""
    m = matrix.matrix.double().cpu()
    iou, dice = class_scores(m)
    tp = m.diag()
    fp, fn = m.sum(0) - tp, m.sum(1) - tp
    scores = scores or matrix.compute()
    out = {
        "dataset": {"miou": scores.miou, "mdice": scores.mdice},
        "dataset_absent_as_1": {
            "miou": float(iou.nan_to_num(1.0).mean()),
            "mdice": float(dice.nan_to_num(1.0).mean()),
        },
        "dataset_no_background": {
            "miou": nanmean(iou[1:].tolist()),
            "mdice": nanmean(dice[1:].tolist()),
        },
    }
    if matrix.per_image:
        out["per_image"] = {"miou": scores.per_image_miou, "mdice": scores.per_image_mdice}
    pooled = float((tp + fp + fn).sum())
    out["micro"] = {
        "miou": float(tp.sum()) / pooled if pooled else float("nan"),
        "mdice": 2 * float(tp.sum()) / (pooled + float(tp.sum())) if pooled else float("nan"),
    }
    truth = m.sum(1)
    share = truth / truth.sum() if truth.sum() > 0 else truth
    out["frequency_weighted"] = {
        "miou": scores.fwiou,
        "mdice": float((share * dice.nan_to_num(0.0)).sum()),
    }
    return out
