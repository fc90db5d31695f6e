"""Region losses written here, one class per loss: ``FocalTversky``, ``LogCoshDice``,
``SensitivitySpecificity``, ``Combo`` and ``ExpLog``, on the soft per-class counts of
``soft_counts`` (shared through the base class ``RegionLoss``).

Written here because no maintained library has them in a form that honours ignore_index; SMP's
TverskyLoss applies its gamma to the class *mean* ``(mean(1 - TI))**gamma``, not per class as
Abraham and Khan's focal Tversky loss does. Each class cites its paper.

Per class c, over the whole batch (the "batch Dice" of nnU-Net and SMP's default):
``tp = sum p*y``, ``fp = sum p*(1-y)``, ``fn = sum (1-p)*y`` on the valid pixels (target not
ignore_index), with ``p`` the softmax (``mode="multiclass"``) or sigmoid (``"multilabel"``)
probabilities and ``y`` the one-hot target. Class means are taken over the classes present in the
batch's target and in ``classes`` (all when None); with none of them the loss is 0 with a zero
gradient. Every loss maps ``(logits: (N, C, H, W) float, target: (N, H, W) int64) -> scalar
float32``. Probabilities are clamped to [eps, 1-eps] inside logarithms, and ``1 - TI`` to eps
before a fractional power, so gradients stay finite at perfect and at totally wrong predictions.

The builders that read ``conf/loss/*.yaml`` are in ``segcli.losses.build``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SUM_DIMS = (0, 2, 3)  # batch and pixels: the per-class sums of the batch statistics


def soft_confusion(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int, mode: str = "multiclass"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Soft per-pixel inputs of the region statistics.

    Args:
        logits: ``(N, C, H, W)`` float; target: ``(N, H, W)`` int64 (values 0..C-1 or ignore_index).
        mode: ``multiclass`` (softmax over C) or ``multilabel`` (sigmoid per channel).

    Returns:
        ``(p, y, valid)``: probabilities ``(N, C, H, W)`` float32 (0 on ignored pixels), one-hot
        target of the same shape (0 on ignored pixels) and the valid-pixel mask ``(N, 1, H, W)``
        float32.
    """
    p = logits.float().softmax(1) if mode == "multiclass" else logits.float().sigmoid()
    valid = (target != ignore_index).unsqueeze(1).float()
    y = (
        F.one_hot(torch.where(target == ignore_index, 0, target), logits.shape[1])
        .permute(0, 3, 1, 2)
        .float()
    )
    return p * valid, y * valid, valid


@dataclass
class SoftCounts:
    """The soft statistics of a batch that every region loss starts from (``soft_counts``).

    Attributes:
        p: ``(N, C, H, W)`` float32 probabilities, 0 on ignored pixels.
        y: ``(N, C, H, W)`` float32 one-hot target, 0 on ignored pixels.
        valid: ``(N, 1, H, W)`` float32, 1 on pixels whose target is not ignore_index.
        tp, fp, fn: ``(C,)`` float32 soft true positives, false positives and false negatives.
        chosen: ``(C,)`` bool, the classes in ``classes`` (all when None).
        present: ``(C,)`` bool, chosen classes that occur in the batch's target.
    """

    p: torch.Tensor
    y: torch.Tensor
    valid: torch.Tensor
    tp: torch.Tensor
    fp: torch.Tensor
    fn: torch.Tensor
    chosen: torch.Tensor
    present: torch.Tensor

    def dice(self, smooth: float) -> torch.Tensor:
        """``(C,)`` float32 soft Dice ``(2tp + s) / (2tp + fp + fn + s)``, s = ``smooth``
        (Milletari et al. 2016)."""
        return (2 * self.tp + smooth) / (2 * self.tp + self.fp + self.fn + smooth)


def soft_counts(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int,
    mode: str = "multiclass",
    classes: list[int] | None = None,
) -> SoftCounts:
    """Soft TP/FP/FN per class, summed over the batch and the valid pixels.

    Args:
        logits: ``(N, C, H, W)`` float; target: ``(N, H, W)`` int64 (0..C-1 or ignore_index).
        mode: ``multiclass`` (softmax) or ``multilabel`` (sigmoid per channel).
        classes: class indices that enter the class means (all when None).

    Returns:
        The ``SoftCounts`` of the batch.
    """
    p, y, valid = soft_confusion(logits, target, ignore_index, mode)
    tp = (p * y).sum(SUM_DIMS)
    fp = (p * (1 - y) * valid).sum(SUM_DIMS)
    fn = ((1 - p) * y).sum(SUM_DIMS)
    present = y.sum(SUM_DIMS) > 0
    chosen = torch.ones_like(present)
    if classes is not None:
        chosen = torch.zeros_like(present)
        chosen[classes] = True
        present = present & chosen
    return SoftCounts(p, y, valid, tp, fp, fn, chosen, present)


class RegionLoss(nn.Module):
    """Base of the region losses: computes the batch's ``SoftCounts`` and hands them to
    ``reduce``, which each loss implements with its own formula. Returns 0 with a zero gradient
    when no chosen class occurs in the batch's (valid) target.

    Args:
        ignore_index: target value of pixels left out of every sum.
        mode: ``multiclass`` (softmax) or ``multilabel`` (sigmoid per class channel).
        classes: class indices in the class means (all when None).

    ``forward(logits: (N, C, H, W) float, target: (N, H, W) int64) -> scalar float32``.
    """

    def __init__(
        self, ignore_index: int, *, mode: str = "multiclass", classes: list[int] | None = None
    ) -> None:
        super().__init__()
        self.ignore_index, self.mode, self.classes = int(ignore_index), mode, classes

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        counts = soft_counts(logits, target, self.ignore_index, self.mode, self.classes)
        if not counts.present.any():
            return logits.sum() * 0.0  # nothing labelled in the batch: no signal, zero gradient
        return self.reduce(counts, logits)

    def reduce(self, counts: SoftCounts, logits: torch.Tensor) -> torch.Tensor:
        """The loss (a float32 scalar) from the batch's counts; ``logits`` as given to forward."""
        raise NotImplementedError


class FocalTversky(RegionLoss):
    """Focal Tversky loss (Abraham and Khan, "A novel focal Tversky loss function with improved
    attention U-Net for lesion segmentation", ISBI 2019): ``mean_c (1 - TI_c)^(1/gamma)`` with
    ``TI_c = (tp + s) / (tp + alpha*fn + beta*fp + s)`` (alpha weighs false negatives, as in the
    paper; its best setting is alpha 0.7, beta 0.3, gamma 4/3).

    ``forward(logits: (N, C, H, W) float, target: (N, H, W) int64) -> scalar float32``.
    """

    def __init__(
        self,
        ignore_index: int,
        alpha: float = 0.7,
        beta: float = 0.3,
        gamma: float = 4 / 3,
        smooth: float = 1.0,
        eps: float = 1e-6,
        *,
        mode: str = "multiclass",
        classes: list[int] | None = None,
    ) -> None:
        super().__init__(ignore_index, mode=mode, classes=classes)
        self.alpha, self.beta, self.gamma = float(alpha), float(beta), float(gamma)
        self.smooth, self.eps = float(smooth), float(eps)

    def reduce(self, counts: SoftCounts, logits: torch.Tensor) -> torch.Tensor:
        tp, fp, fn, s = counts.tp, counts.fp, counts.fn, self.smooth
        ti = (tp + s) / (tp + self.alpha * fn + self.beta * fp + s)
        return ((1 - ti).clamp_min(self.eps) ** (1 / self.gamma))[counts.present].mean()


class LogCoshDice(RegionLoss):
    """Log-cosh Dice loss (Jadon, "A survey of loss functions for semantic segmentation", CIBCB
    2020): ``log(cosh(1 - mean_c Dice_c))``, ``Dice_c = (2tp + s) / (2tp + fp + fn + s)``.

    ``forward(logits: (N, C, H, W) float, target: (N, H, W) int64) -> scalar float32``.
    """

    def __init__(
        self,
        ignore_index: int,
        smooth: float = 1.0,
        *,
        mode: str = "multiclass",
        classes: list[int] | None = None,
    ) -> None:
        super().__init__(ignore_index, mode=mode, classes=classes)
        self.smooth = float(smooth)

    def reduce(self, counts: SoftCounts, logits: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.cosh(1 - counts.dice(self.smooth)[counts.present].mean()))


class SensitivitySpecificity(RegionLoss):
    """Sensitivity-specificity loss (Brosch et al., "Deep convolutional encoder networks for
    multiple sclerosis lesion segmentation", MICCAI 2015): per class
    ``w * sum((y-p)^2 y) / (sum y + s) + (1-w) * sum((y-p)^2 (1-y)) / (sum (1-y) + s)`` over the
    valid pixels, then the class mean; ``w`` is the paper's r, the weight of sensitivity.

    ``forward(logits: (N, C, H, W) float, target: (N, H, W) int64) -> scalar float32``.
    """

    def __init__(
        self,
        ignore_index: int,
        w: float = 0.05,
        smooth: float = 1.0,
        *,
        mode: str = "multiclass",
        classes: list[int] | None = None,
    ) -> None:
        super().__init__(ignore_index, mode=mode, classes=classes)
        self.w, self.smooth = float(w), float(smooth)

    def reduce(self, counts: SoftCounts, logits: torch.Tensor) -> torch.Tensor:
        p, y, valid, s = counts.p, counts.y, counts.valid, self.smooth
        err = (y - p) ** 2 * valid
        sens = (err * y).sum(SUM_DIMS) / (y.sum(SUM_DIMS) + s)
        spec = (err * (1 - y) * valid).sum(SUM_DIMS) / (((1 - y) * valid).sum(SUM_DIMS) + s)
        return (self.w * sens + (1 - self.w) * spec)[counts.present].mean()


class Combo(RegionLoss):
    """Combo loss (Taghanaki et al., "Combo loss: handling input and output imbalance in
    multi-organ segmentation", CMIG 2019): ``alpha * L_mbce - (1-alpha) * mean_c Dice_c`` with
    ``L_mbce = -mean(beta * y ln p + (1-beta)(1-y) ln(1-p))`` over the valid pixels and the chosen
    classes (beta > 0.5 penalises false negatives more). It is negative by construction.

    ``forward(logits: (N, C, H, W) float, target: (N, H, W) int64) -> scalar float32``.
    """

    def __init__(
        self,
        ignore_index: int,
        alpha: float = 0.7,
        beta: float = 0.3,
        smooth: float = 1.0,
        eps: float = 1e-6,
        *,
        mode: str = "multiclass",
        classes: list[int] | None = None,
    ) -> None:
        super().__init__(ignore_index, mode=mode, classes=classes)
        self.alpha, self.beta = float(alpha), float(beta)
        self.smooth, self.eps = float(smooth), float(eps)

    def reduce(self, counts: SoftCounts, logits: torch.Tensor) -> torch.Tensor:
        y, valid, chosen = counts.y, counts.valid, counts.chosen
        q = counts.p.clamp(self.eps, 1 - self.eps)
        bce = -(self.beta * y * q.log() + (1 - self.beta) * (1 - y) * valid * (1 - q).log())
        mbce = bce.sum(SUM_DIMS)[chosen].sum() / (valid.sum() * chosen.sum()).clamp_min(1)
        return (
            self.alpha * mbce - (1 - self.alpha) * counts.dice(self.smooth)[counts.present].mean()
        )


def wong_label_weights(pixels: np.ndarray) -> list[float]:
    """Wong et al.'s label weights ``w_l = ((sum_k f_k) / f_l)^0.5`` for ``ExpLog``.

    Args:
        pixels: ``(C,)`` int, labelled pixels of each class in the training split.

    Returns:
        C floats; 0 for a class without pixels.
    """
    pixels = np.asarray(pixels, dtype=np.float64)
    return np.where(pixels > 0, (pixels.sum() / np.maximum(pixels, 1)) ** 0.5, 0.0).tolist()


class ExpLog(RegionLoss):
    """Exponential logarithmic loss (Wong et al., "3D segmentation with exponential logarithmic
    loss for highly unbalanced object sizes", MICCAI 2018):
    ``w_dice * mean_c (-ln Dice_c)^gamma + w_cross * mean_pixels w_l (-ln p_l)^gamma`` with ``l``
    the pixel's true class, over the valid pixels whose class is chosen.

    Args:
        label_weights: ``w_l`` per class (``wong_label_weights`` of the training split's pixel
            counts); 1 for every class when None.

    ``forward(logits: (N, C, H, W) float, target: (N, H, W) int64) -> scalar float32``.
    """

    def __init__(
        self,
        ignore_index: int,
        gamma: float = 4 / 3,
        w_dice: float = 0.8,
        w_cross: float = 0.2,
        smooth: float = 1.0,
        eps: float = 1e-6,
        label_weights: list[float] | None = None,
        *,
        mode: str = "multiclass",
        classes: list[int] | None = None,
    ) -> None:
        super().__init__(ignore_index, mode=mode, classes=classes)
        self.gamma, self.w_dice, self.w_cross = float(gamma), float(w_dice), float(w_cross)
        self.smooth, self.eps = float(smooth), float(eps)
        self.register_buffer(
            "label_weights",
            None if label_weights is None else torch.tensor(label_weights, dtype=torch.float32),
            persistent=False,
        )

    def reduce(self, counts: SoftCounts, logits: torch.Tensor) -> torch.Tensor:
        y, eps, gamma = counts.y, self.eps, self.gamma
        dice = counts.dice(self.smooth)
        dice_term = (-dice.clamp_min(eps).log()).clamp_min(eps) ** gamma
        q = counts.p.clamp(eps, 1 - eps)
        true_p = (q * y).sum(1)  # probability of the true class, (N, H, W); 0 on ignored pixels
        weights = (
            self.label_weights
            if self.label_weights is not None
            else torch.ones(logits.shape[1], device=logits.device)
        )
        w_l = (weights.to(logits.device)[:, None, None, None] * y.transpose(0, 1)).sum(0)
        # valid pixels whose true class is in `classes`
        counted = (y * counts.chosen[None, :, None, None]).sum(1) > 0
        cross = (w_l * (-true_p.clamp_min(eps).log()).clamp_min(eps) ** gamma)[counted]
        return self.w_dice * dice_term[counts.present].mean() + self.w_cross * cross.mean()
