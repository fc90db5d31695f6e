"""Sigmoid (multilabel, one-vs-rest) losses: ``MultilabelTarget``, the wrapper that runs a
sigmoid loss on index targets with ignore_index (for SMP's losses in ``loss.mode=multilabel`` and
for the three below), and one class per sigmoid cross-entropy: ``BCE`` (``bce``), ``WeightedBCE``
(``weighted_bce``) and ``BalancedCE`` (``balanced_ce``), all on
``torch.nn.functional.binary_cross_entropy_with_logits``.

The builders that read ``conf/loss/*.yaml`` are in ``segcli.losses.build``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MultilabelTarget(nn.Module):
    """Run a sigmoid (multilabel) loss on index targets: keeps the pixels whose target is not
    ``ignore_index``, one-hot encodes them and keeps the ``classes`` channels, then calls
    ``loss(logits: (1, K, P, 1) float32, target: (1, K, P, 1) float32)`` with P valid pixels and
    K classes. Losses that sum over the batch and pixels (Dice, BCE, focal, Lovasz hinge) give the
    same value as on the unflattened batch; without a valid pixel the result is 0 with a zero
    gradient. (SMP's FocalLoss cannot index a multilabel target with ignore_index; this gives
    every SMP loss the same ignore handling.)

    Args:
        loss: the sigmoid loss, ``(logits, target) -> scalar``.
        ignore_index: target value of pixels left out.
        classes: class channels passed on (all when None).

    ``forward(logits: (N, C, H, W) float, target: (N, H, W) int64) -> scalar``.
    """

    def __init__(
        self, loss: nn.Module, ignore_index: int, classes: list[int] | None = None
    ) -> None:
        super().__init__()
        self.loss, self.ignore_index, self.classes = loss, int(ignore_index), classes

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = target != self.ignore_index
        if not valid.any():
            return logits.sum() * 0.0
        x = logits.float().permute(1, 0, 2, 3)[:, valid]  # (C, P)
        y = F.one_hot(target[valid], logits.shape[1]).T.float()
        if self.classes is not None:
            x, y = x[self.classes], y[self.classes]
        return self.loss(x[None, ..., None], y[None, ..., None])


class BCE(nn.Module):
    """Sigmoid cross-entropy of every element, averaged: ``-mean(y ln p + (1-y) ln(1-p))``.

    ``forward(logits: (N, K, ...) float, target: (N, K, ...) float in {0, 1}) -> scalar float32``.
    Meant to be wrapped in ``MultilabelTarget`` (which removes ignored pixels).
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), target.float())


class WeightedBCE(nn.Module):
    """Weighted BCE (Pihur et al. 2007, as in Jadon's survey, CIBCB 2020):
    ``-mean(beta y ln p + (1-y) ln(1-p))``; beta > 1 counts false negatives more.

    Args:
        beta: weight of the positives.

    ``forward(logits: (N, K, ...) float, target: (N, K, ...) float in {0, 1}) -> scalar float32``.
    Meant to be wrapped in ``MultilabelTarget`` (which removes ignored pixels).
    """

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        self.beta = float(beta)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x, y = logits.float(), target.float()
        return F.binary_cross_entropy_with_logits(
            x, y, pos_weight=torch.tensor(self.beta, device=x.device)
        )


class BalancedCE(nn.Module):
    """Balanced cross-entropy (Xie and Tu, "Holistically-nested edge detection", ICCV 2015):
    ``-mean(beta y ln p + (1-beta)(1-y) ln(1-p))`` with ``beta = |Y-| / |Y|`` per class channel
    (the share of negative pixels, so the rare positives weigh more) when ``beta`` is None, or the
    given number.

    Args:
        beta: the fixed weight of the positives in 0..1, or None for HED's per-batch share.

    ``forward(logits: (N, K, ...) float, target: (N, K, ...) float in {0, 1}) -> scalar float32``.
    Meant to be wrapped in ``MultilabelTarget`` (which removes ignored pixels).
    """

    def __init__(self, beta: float | None = None) -> None:
        super().__init__()
        self.beta = None if beta is None else float(beta)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x, y = logits.float(), target.float()
        dims = [d for d in range(y.dim()) if d != 1]
        beta = (
            (1 - y.mean(dims, keepdim=True))
            if self.beta is None
            else torch.tensor(self.beta, device=x.device)
        )
        return F.binary_cross_entropy_with_logits(x, y, weight=beta * y + (1 - beta) * (1 - y))
