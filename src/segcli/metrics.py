"""Segmentation metrics from one confusion matrix accumulated over a whole split.

Policy (the "dataset-level" protocol of Cityscapes, PASCAL VOC and torchvision's references):
one C x C confusion matrix is summed over every pixel of the split (never averaged per
batch); pixels whose target is ``ignore_index`` are dropped; per class

    IoU_c  = TP / (TP + FP + FN)            (Jaccard index)
    Dice_c = 2 TP / (2 TP + FP + FN)        (F1 score)

and a class absent from both truth and prediction (TP + FP + FN = 0) gets NaN and is left
out of the means (mIoU, mDice). Pixel accuracy is trace / total over non-ignored pixels.

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
    """

    miou: float
    mdice: float
    pixel_accuracy: float
    per_class_iou: list[float]
    per_class_dice: list[float]
    pixels: int

    def as_dict(self, class_names: list[str]) -> dict:
        """JSON-ready dict; per-class maps are ``name -> value`` with ``None`` for NaN."""

        def clean(x: float) -> float | None:
            return None if math.isnan(x) else float(x)

        return {
            "miou": clean(self.miou),
            "mdice": clean(self.mdice),
            "pixel_accuracy": clean(self.pixel_accuracy),
            "per_class_iou": {n: clean(v) for n, v in zip(class_names, self.per_class_iou)},
            "per_class_dice": {n: clean(v) for n, v in zip(class_names, self.per_class_dice)},
        }


class ConfusionMatrix:
    """Accumulates a ``(C, C) int64`` confusion matrix (rows: truth, columns: prediction).

    Args:
        num_classes: C, the number of classes (labels 0..C-1).
        ignore_index: target value whose pixels are not counted (e.g. 11 for CamVid void,
            255 for VOC); ``None`` counts every pixel.
        device: where the matrix lives; put it where the predictions are.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None,
                 device: torch.device | str = "cpu") -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def reset(self) -> None:
        """Set every count back to zero."""
        self.matrix.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch.

        Args:
            pred: ``(N, H, W)`` int64 predicted class indices in 0..C-1.
            target: ``(N, H, W)`` int64 true class indices; ``ignore_index`` pixels are skipped.

        Raises:
            ValueError: the shapes differ, or a non-ignored target is outside 0..C-1.
        """
        if pred.shape != target.shape:
            raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
        c = self.num_classes
        pred = pred.reshape(-1).to(self.matrix.device, torch.int64)
        target = target.reshape(-1).to(self.matrix.device, torch.int64)
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            pred, target = pred[keep], target[keep]
        if target.numel() and (int(target.min()) < 0 or int(target.max()) >= c):
            raise ValueError(f"target holds values outside 0..{c - 1} (ignore_index={self.ignore_index})")
        self.matrix += torch.bincount(target * c + pred, minlength=c * c).reshape(c, c)

    def merge(self, other: "ConfusionMatrix") -> None:
        """Add another matrix of the same size (e.g. from another process)."""
        self.matrix += other.matrix.to(self.matrix.device)

    def compute(self) -> SegmentationScores:
        """Scores from the counts so far (see the module docstring for the formulas)."""
        m = self.matrix.double().cpu()
        tp = m.diag()
        fp = m.sum(0) - tp
        fn = m.sum(1) - tp
        iou_den = tp + fp + fn
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        iou = torch.where(iou_den > 0, tp / iou_den.clamp_min(1), nan)
        dice_den = 2 * tp + fp + fn
        dice = torch.where(dice_den > 0, 2 * tp / dice_den.clamp_min(1), nan)
        total = m.sum()
        return SegmentationScores(
            miou=float(iou.nanmean()) if (iou_den > 0).any() else float("nan"),
            mdice=float(dice.nanmean()) if (dice_den > 0).any() else float("nan"),
            pixel_accuracy=float(tp.sum() / total) if total > 0 else float("nan"),
            per_class_iou=iou.tolist(),
            per_class_dice=dice.tolist(),
            pixels=int(total),
        )
