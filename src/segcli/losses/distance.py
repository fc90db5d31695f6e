"""Distance-map losses: ``boundary`` (Kervadec et al.), ``hausdorff`` (Karimi and Salcudean) and
``shape_aware`` (Hayder et al., in the form of Jadon's survey).

Written here because no maintained library we can depend on has them with ignore_index: SMP has
none; MONAI has a HausdorffDTLoss but no boundary or shape-aware loss and no ignore_index, and would
pull in a large dependency for one class. Distance maps are Euclidean distance transforms
(``scipy.ndimage.distance_transform_edt``) of the target (and, for hausdorff and shape_aware, of the
current prediction), computed on the CPU without gradient in every step; they are constants for the
backward pass, so gradients flow through the probabilities only. Distances are in pixels of the
model's input. Ignored pixels (target == ignore_index) count as "not this class" for the distance
maps and are left out of every sum.

All three map ``(logits: (N, C, H, W) float, target: (N, H, W) int64) -> scalar float32``.
Probabilities are the softmax over classes (``mode="multiclass"``; predicted masks: argmax) or a
sigmoid per class channel (``"multilabel"``; predicted masks: p > 0.5). ``classes`` picks the
channels that enter the class mean (all when None); Kervadec et al. leave the background out.
Distance-map losses alone can be unstable early in training; the papers add them to a region loss
(e.g. ``loss=compound loss.terms=[{name: dice, weight: 1}, {name: boundary, weight: 0.01}]``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import distance_transform_edt
from torch import nn

from segcli.errors import SegcliError


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Kervadec et al.'s signed distance map of a binary mask (``one_hot2dist`` in their code).

    Args:
        mask: ``(H, W)`` bool.

    Returns:
        ``(H, W)`` float64 pixels: outside the mask, the distance to the nearest mask pixel; inside,
        ``-(distance to the nearest outside pixel - 1)`` (0 on the mask's own border). All zeros when
        the mask is empty or full (no boundary).
    """
    if not mask.any() or mask.all():
        return np.zeros(mask.shape)
    outside = ~mask
    return distance_transform_edt(outside) * outside - (distance_transform_edt(mask) - 1) * mask


def boundary_distance(mask: np.ndarray) -> np.ndarray:
    """Unsigned distance of every pixel to the mask's boundary, as in Karimi and Salcudean's
    Hausdorff loss: ``edt(mask) + edt(~mask)``.

    Args:
        mask: ``(H, W)`` bool.

    Returns:
        ``(H, W)`` float64 pixels; all zeros when the mask is empty or full.
    """
    if not mask.any() or mask.all():
        return np.zeros(mask.shape)
    return distance_transform_edt(mask) + distance_transform_edt(~mask)


def label_boundary(labels: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Pixels of a label map that touch another label.

    Args:
        labels: ``(H, W)`` int; valid: ``(H, W)`` bool, pixels that take part.

    Returns:
        ``(H, W)`` bool: valid pixels with a valid 4-neighbour of a different label.
    """
    edge = np.zeros(labels.shape, bool)
    down = (labels[1:] != labels[:-1]) & valid[1:] & valid[:-1]
    edge[1:] |= down
    edge[:-1] |= down
    right = (labels[:, 1:] != labels[:, :-1]) & valid[:, 1:] & valid[:, :-1]
    edge[:, 1:] |= right
    edge[:, :-1] |= right
    return edge


def _maps(masks: np.ndarray, fn) -> np.ndarray:
    """``fn`` on every ``(H, W)`` mask of ``masks: (N, K, H, W) bool``; ``(N, K, H, W)`` float32."""
    out = np.zeros(masks.shape, np.float32)
    for n in range(masks.shape[0]):
        for k in range(masks.shape[1]):
            out[n, k] = fn(masks[n, k])
    return out


class DistanceLoss(nn.Module):
    """One of the three distance-map losses. With ``p`` the probabilities, ``y`` the one-hot target,
    ``V`` the valid pixels and ``K`` the chosen classes:

    - ``boundary`` (Kervadec et al., "Boundary loss for highly unbalanced segmentation", MIDL 2019):
      ``sum_{V,K} p_k * phi_k / (|V| |K|)``, ``phi_k`` the signed distance map of class k's true mask
      (negative inside). It falls as probability mass moves inside the true regions.
    - ``hausdorff`` (Karimi and Salcudean, "Reducing the Hausdorff distance in medical image
      segmentation with convolutional neural networks", IEEE TMI 2020, the distance-transform form):
      ``sum_{V,K} (p_k - y_k)^2 (dG_k^alpha + dS_k^alpha) / (|V| |K|)``, dG and dS the distances to the
      boundary of the true and of the predicted mask of class k.
    - ``shape_aware`` (Hayder et al., "Boundary-aware instance segmentation", CVPR 2017; the form of
      Jadon, "A survey of loss functions for semantic segmentation", CIBCB 2020):
      ``sum_n (1 + E_n) * CE_n / |V|``, CE_n the summed pixel-wise softmax cross-entropy of image n and
      E_n the mean distance from the predicted label boundary to the true one in image n (divided by
      the image diagonal when ``normalize``; 0 without a predicted boundary; the diagonal when only the
      prediction has one).

    ``forward(logits: (N, C, H, W) float, target: (N, H, W) int64) -> scalar float32``; 0 with a zero
    gradient when no pixel is valid.

    Raises:
        SegcliError: unknown name (at construction).
    """

    NAMES = ("boundary", "hausdorff", "shape_aware")

    def __init__(
        self,
        name: str,
        ignore_index: int,
        mode: str = "multiclass",
        classes: list[int] | None = None,
        alpha: float = 2.0,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        if name not in self.NAMES:
            raise SegcliError(f"loss.name={name}: expected one of {', '.join(self.NAMES)}")
        self.name, self.ignore_index, self.mode, self.classes = (
            name,
            int(ignore_index),
            mode,
            classes,
        )
        self.alpha, self.normalize = float(alpha), bool(normalize)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = target != self.ignore_index
        if not valid.any():
            return logits.sum() * 0.0
        if self.name == "shape_aware":
            return self._shape_aware(logits, target, valid)
        num_classes = logits.shape[1]
        x = logits.float()
        p = x.softmax(1) if self.mode == "multiclass" else x.sigmoid()
        y = (
            F.one_hot(torch.where(valid, target, 0), num_classes).permute(0, 3, 1, 2).bool()
            & valid[:, None]
        )
        keep = list(range(num_classes)) if self.classes is None else self.classes
        p, y = p[:, keep], y[:, keep]
        v = valid[:, None].float()
        truth = y.cpu().numpy()
        if self.name == "boundary":
            phi = torch.from_numpy(_maps(truth, signed_distance)).to(p.device)
            return (p * phi * v).sum() / (v.sum() * len(keep))
        with torch.no_grad():
            if self.mode == "multiclass":
                pred = F.one_hot(x.argmax(1), num_classes).permute(0, 3, 1, 2)[:, keep].bool()
            else:
                pred = p > 0.5
            pred = (pred & valid[:, None]).cpu().numpy()
        dist = (
            torch.from_numpy(_maps(truth, boundary_distance)) ** self.alpha
            + torch.from_numpy(_maps(pred, boundary_distance)) ** self.alpha
        ).to(p.device)
        return ((p - y.float()) ** 2 * dist * v).sum() / (v.sum() * len(keep))

    def _shape_aware(
        self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        ce = F.cross_entropy(
            logits.float(), target, ignore_index=self.ignore_index, reduction="none"
        )  # (N, H, W)
        labels, pred, ok = target.cpu().numpy(), logits.argmax(1).cpu().numpy(), valid.cpu().numpy()
        height, width = labels.shape[1:]
        diagonal = float(np.hypot(height, width))
        coefficients = []
        for n in range(labels.shape[0]):
            predicted = label_boundary(pred[n], ok[n])
            true = label_boundary(labels[n], ok[n])
            if not predicted.any():
                e = 0.0
            elif not true.any():
                e = diagonal
            else:
                e = float(distance_transform_edt(~true)[predicted].mean())
            coefficients.append(1.0 + (e / diagonal if self.normalize else e))
        weights = torch.tensor(coefficients, dtype=ce.dtype, device=ce.device)
        return (ce.sum((1, 2)) * weights).sum() / valid.sum()


def build_distance_loss(cfg: Mapping, mode: str, classes: list[int] | None) -> DistanceLoss:
    """The ``boundary``, ``hausdorff`` or ``shape_aware`` loss of a ``loss`` config (mode and classes
    already checked by ``losses.build.loss_mode``)."""
    return DistanceLoss(
        str(cfg["name"]),
        int(cfg["ignore_index"]),
        mode,
        classes,
        alpha=float(cfg.get("alpha", 2.0)),
        normalize=bool(cfg.get("normalize", True)),
    )
