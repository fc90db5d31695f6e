"""Distance-map losses, one class each on the base ``DistanceLoss``: ``Boundary`` (``boundary``,
Kervadec et al.), ``Hausdorff`` (``hausdorff``, Karimi and Salcudean) and ``ShapeAware``
(``shape_aware``, Hayder et al., in the form of Jadon's survey); the distance maps they use
(``signed_distance``, ``boundary_distance``, ``label_boundary``, ``boundary_gap``) and the shared
per-class inputs of the first two (``class_masks``). The builders that read ``conf/loss/*.yaml``
are in ``segcli.losses.build``.

Written here because no maintained library we can depend on has them with ignore_index: SMP has
none; MONAI has a HausdorffDTLoss but no boundary or shape-aware loss and no ignore_index, and would
pull in a large dependency for one class. Distance maps are Euclidean distance transforms
(``scipy.ndimage.distance_transform_edt``) of the target (and, for hausdorff and shape_aware, of the
current prediction), computed on the CPU without gradient in every step; they are constants for the
backward pass, so gradients flow through the probabilities only. Distances are in pixels of the
model's input. Ignored pixels (target == ignore_index) count as "not this class" for the distance
maps and are left out of every sum.

All three map ``(logits: (N, C, H, W) float, target: (N, H, W) int64) -> scalar float32``, 0 with
a zero gradient when no pixel is valid. For Boundary and Hausdorff, probabilities are the softmax
over classes (``mode="multiclass"``; predicted masks: argmax) or a sigmoid per class channel
(``"multilabel"``; predicted masks: p > 0.5), and ``classes`` picks the channels that enter the
class mean (all when None); Kervadec et al. leave the background out. ShapeAware is softmax
cross-entropy over all classes.
Distance-map losses alone can be unstable early in training; the papers add them to a region loss
(e.g. ``loss=compound loss.terms=[{name: dice, weight: 1}, {name: boundary, weight: 0.01}]``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import distance_transform_edt
from torch import nn


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Kervadec et al.'s signed distance map of a binary mask (``one_hot2dist`` in their code).

    Args:
        mask: ``(H, W)`` bool.

    Returns:
        ``(H, W)`` float64 pixels: outside the mask, the distance to the nearest mask pixel;
        inside, ``-(distance to the nearest outside pixel - 1)`` (0 on the mask's own border). All
        zeros when the mask is empty or full (no boundary).
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


class ClassMasks(NamedTuple):
    """The per-class inputs of ``Boundary`` and ``Hausdorff`` (``class_masks``).

    Attributes:
        logits: ``(N, C, H, W)`` float32.
        p: ``(N, K, H, W)`` float32 probabilities of the K chosen classes.
        y: ``(N, K, H, W)`` bool true masks of the chosen classes (False on ignored pixels).
        v: ``(N, 1, H, W)`` float32, 1 on valid pixels.
        keep: the K chosen class indices.
    """

    logits: torch.Tensor
    p: torch.Tensor
    y: torch.Tensor
    v: torch.Tensor
    keep: list[int]


def class_masks(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor,
    mode: str = "multiclass",
    classes: list[int] | None = None,
) -> ClassMasks:
    """Probabilities and true masks of the chosen classes.

    Args:
        logits: ``(N, C, H, W)`` float; target: ``(N, H, W)`` int64; valid: ``(N, H, W)`` bool,
            pixels whose target is not ignore_index.
        mode: ``multiclass`` (softmax) or ``multilabel`` (sigmoid per channel).
        classes: class indices kept (all when None).
    """
    num_classes = logits.shape[1]
    x = logits.float()
    p = x.softmax(1) if mode == "multiclass" else x.sigmoid()
    y = (
        F.one_hot(torch.where(valid, target, 0), num_classes).permute(0, 3, 1, 2).bool()
        & valid[:, None]
    )
    keep = list(range(num_classes)) if classes is None else classes
    return ClassMasks(x, p[:, keep], y[:, keep], valid[:, None].float(), keep)


class DistanceLoss(nn.Module):
    """Base of the distance-map losses: 0 with a zero gradient when no pixel is valid, otherwise
    ``reduce`` of the loss.

    Args:
        ignore_index: target value of pixels left out of every sum.

    ``forward(logits: (N, C, H, W) float, target: (N, H, W) int64) -> scalar float32``.
    """

    def __init__(self, ignore_index: int) -> None:
        super().__init__()
        self.ignore_index = int(ignore_index)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = target != self.ignore_index
        if not valid.any():
            return logits.sum() * 0.0
        return self.reduce(logits, target, valid)

    def reduce(
        self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        """The loss (a float32 scalar); ``valid``: ``(N, H, W)`` bool, with at least one True."""
        raise NotImplementedError


class Boundary(DistanceLoss):
    """Boundary loss (Kervadec et al., "Boundary loss for highly unbalanced segmentation", MIDL
    2019): ``sum_{V,K} p_k * phi_k / (|V| |K|)``, with ``p`` the probabilities, ``V`` the valid
    pixels, ``K`` the chosen classes and ``phi_k`` the signed distance map of class k's true mask
    (negative inside). It falls as probability mass moves inside the true regions.

    Args:
        ignore_index: target value of pixels left out.
        mode: ``multiclass`` (softmax) or ``multilabel`` (sigmoid per class).
        classes: classes in the mean (all when None; the paper leaves the background out).

    ``forward(logits: (N, C, H, W) float, target: (N, H, W) int64) -> scalar float32``.
    """

    def __init__(
        self, ignore_index: int, *, mode: str = "multiclass", classes: list[int] | None = None
    ) -> None:
        super().__init__(ignore_index)
        self.mode, self.classes = mode, classes

    def reduce(
        self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        m = class_masks(logits, target, valid, self.mode, self.classes)
        phi = torch.from_numpy(_maps(m.y.cpu().numpy(), signed_distance)).to(m.p.device)
        return (m.p * phi * m.v).sum() / (m.v.sum() * len(m.keep))


class Hausdorff(DistanceLoss):
    """Hausdorff distance-transform loss (Karimi and Salcudean, "Reducing the Hausdorff distance
    in medical image segmentation with convolutional neural networks", IEEE TMI 2020):
    ``sum_{V,K} (p_k - y_k)^2 (dG_k^alpha + dS_k^alpha) / (|V| |K|)``, dG and dS the distances to
    the boundary of the true and of the predicted mask of class k (predicted masks: argmax in
    multiclass mode, p > 0.5 in multilabel mode).

    Args:
        ignore_index: target value of pixels left out.
        alpha: exponent of the distances.
        mode: ``multiclass`` (softmax) or ``multilabel`` (sigmoid per class).
        classes: classes in the mean (all when None).

    ``forward(logits: (N, C, H, W) float, target: (N, H, W) int64) -> scalar float32``.
    """

    def __init__(
        self,
        ignore_index: int,
        alpha: float = 2.0,
        *,
        mode: str = "multiclass",
        classes: list[int] | None = None,
    ) -> None:
        super().__init__(ignore_index)
        self.alpha, self.mode, self.classes = float(alpha), mode, classes

    def reduce(
        self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        m = class_masks(logits, target, valid, self.mode, self.classes)
        with torch.no_grad():
            if self.mode == "multiclass":
                num_classes = logits.shape[1]
                pred = F.one_hot(m.logits.argmax(1), num_classes).permute(0, 3, 1, 2)
                pred = pred[:, m.keep].bool()
            else:
                pred = m.p > 0.5
            pred = (pred & valid[:, None]).cpu().numpy()
        dist = (
            torch.from_numpy(_maps(m.y.cpu().numpy(), boundary_distance)) ** self.alpha
            + torch.from_numpy(_maps(pred, boundary_distance)) ** self.alpha
        ).to(m.p.device)
        return ((m.p - m.y.float()) ** 2 * dist * m.v).sum() / (m.v.sum() * len(m.keep))


class ShapeAware(DistanceLoss):
    """Shape-aware loss (Hayder et al., "Boundary-aware instance segmentation", CVPR 2017; the
    form of Jadon, "A survey of loss functions for semantic segmentation", CIBCB 2020):
    ``sum_n (1 + E_n) * CE_n / |V|``, CE_n the summed pixel-wise softmax cross-entropy of image n
    and E_n the mean distance from the predicted (argmax) label boundary to the true one in image
    n (divided by the image diagonal when ``normalize``; 0 without a predicted boundary; the
    diagonal when only the prediction has one). Softmax only, over all classes.

    Args:
        ignore_index: target value of pixels left out.
        normalize: E in units of the image diagonal (False: pixels).

    ``forward(logits: (N, C, H, W) float, target: (N, H, W) int64) -> scalar float32``.
    """

    def __init__(self, ignore_index: int, normalize: bool = True) -> None:
        super().__init__(ignore_index)
        self.normalize = bool(normalize)

    def reduce(
        self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        ce = F.cross_entropy(
            logits.float(), target, ignore_index=self.ignore_index, reduction="none"
        )  # (N, H, W)
        labels, pred, ok = target.cpu().numpy(), logits.argmax(1).cpu().numpy(), valid.cpu().numpy()
        diagonal = float(np.hypot(*labels.shape[1:]))
        coefficients = []
        for n in range(labels.shape[0]):
            e = boundary_gap(label_boundary(pred[n], ok[n]), label_boundary(labels[n], ok[n]))
            e = diagonal if e is None else e
            coefficients.append(1.0 + (e / diagonal if self.normalize else e))
        weights = torch.tensor(coefficients, dtype=ce.dtype, device=ce.device)
        return (ce.sum((1, 2)) * weights).sum() / valid.sum()


def boundary_gap(predicted: np.ndarray, true: np.ndarray) -> float | None:
    """Mean distance (pixels) from the predicted boundary pixels to the nearest true one.

    Args:
        predicted, true: ``(H, W)`` bool boundary masks (``label_boundary``).

    Returns:
        0.0 without a predicted boundary; None when only the prediction has one (no distance is
        defined; ``ShapeAware`` counts it as the image diagonal).
    """
    if not predicted.any():
        return 0.0
    if not true.any():
        return None
    return float(distance_transform_edt(~true)[predicted].mean())
