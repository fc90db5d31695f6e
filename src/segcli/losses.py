"""build_loss: the ``loss`` config group. Every loss maps
``(logits: (N, C, H, W) float, target: (N, H, W) int64) -> scalar float`` and skips
``ignore_index`` pixels.

- ``ce``: ``torch.nn.CrossEntropyLoss`` (class weights, label smoothing).
- ``dice``: ``segmentation_models_pytorch.losses.DiceLoss`` in multiclass mode (Milletari et al. 2016).
- ``focal``: ``segmentation_models_pytorch.losses.FocalLoss`` in multiclass mode (Lin et al. 2017).
- ``jaccard``, ``lovasz``, ``tversky``: SMP's JaccardLoss (soft IoU), LovaszLoss (Lovasz-softmax,
  Berman et al. 2018) and TverskyLoss (Salehi et al. 2017), multiclass.
- ``focal_tversky``, ``log_cosh_dice``, ``sensitivity_specificity``, ``combo``, ``exp_log``:
  written here (``RegionLoss`` below) because no maintained library has them in a form that
  honours ignore_index; SMP's TverskyLoss applies its gamma to the class *mean* ``(mean(1 -
  TI))**gamma``, not per class as Abraham and Khan's focal Tversky loss does. Each cites its paper.
- ``compound``: ``WeightedSum`` of any of the above, each with its own parameters.

Region statistics (soft TP/FP/FN per class) are summed over the whole batch (the "batch Dice" of
nnU-Net and SMP's default), on softmax probabilities, over pixels whose target is not ignore_index.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from segcli.data import ClassPixels
from segcli.errors import SegcliError


def class_weights(spec, num_classes: int, stats: ClassPixels | None) -> list[float] | None:
    """Per-class loss weights from ``loss.class_weights``.

    ``null``: none. A list: used as given. ``median_frequency`` (Eigen and Fergus 2015, as SegNet
    used on CamVid): ``w_c = median(f) / f_c`` with ``f_c`` = pixels of class c / pixels of the
    training images in which c occurs. ``inverse_frequency``: ``w_c = N / (C * n_c)``. Classes
    absent from the training set get weight 0.

    Raises:
        SegcliError: wrong list length, unknown name, or no class statistics for a named scheme.
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec not in ("median_frequency", "inverse_frequency"):
            raise SegcliError(f"loss.class_weights={spec}: expected null, a list of {num_classes} numbers, "
                              "median_frequency or inverse_frequency")
        if stats is None:
            raise SegcliError(f"loss.class_weights={spec} needs the class pixel counts of a folder dataset's "
                              "training split; give a list of weights instead")
        pixels = np.asarray(stats.pixels, dtype=np.float64)
        seen = pixels > 0
        weights = np.zeros(num_classes)
        if spec == "median_frequency":
            freq = pixels[seen] / np.asarray(stats.present, dtype=np.float64)[seen]
            weights[seen] = np.median(freq) / freq
        else:
            weights[seen] = pixels.sum() / (num_classes * pixels[seen])
        return weights.tolist()
    if len(spec) != num_classes:
        raise SegcliError(f"loss.class_weights has {len(spec)} entries; expected {num_classes}")
    return [float(w) for w in spec]


class WeightedSum(nn.Module):
    """``loss = sum_i weight_i * term_i(logits, target)``.

    Args:
        terms: ``(name, weight, module)`` triples; the names label the parts in logs.
    """

    def __init__(self, terms: list[tuple[str, float, nn.Module]]) -> None:
        super().__init__()
        self.names = [n for n, _, _ in terms]
        self.weights = [float(w) for _, w, _ in terms]
        self.terms = nn.ModuleList([m for _, _, m in terms])

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits: (N, C, H, W) float; target: (N, H, W) int64. Returns a scalar."""
        return sum(w * term(logits, target) for w, term in zip(self.weights, self.terms))


def _ce(cfg: Mapping, num_classes: int, stats: ClassPixels | None = None) -> nn.Module:
    weights = class_weights(cfg.get("class_weights"), num_classes, stats)
    return nn.CrossEntropyLoss(weight=None if weights is None else torch.tensor(weights, dtype=torch.float32),
                               ignore_index=int(cfg["ignore_index"]),
                               label_smoothing=float(cfg.get("label_smoothing", 0.0)))


def _dice(cfg: Mapping, num_classes: int, stats: ClassPixels | None = None) -> nn.Module:
    return smp.losses.DiceLoss(smp.losses.MULTICLASS_MODE, ignore_index=int(cfg["ignore_index"]),
                               smooth=float(cfg.get("smooth", 0.0)), log_loss=bool(cfg.get("log_loss", False)))


def _focal(cfg: Mapping, num_classes: int, stats: ClassPixels | None = None) -> nn.Module:
    alpha = cfg.get("alpha")
    return smp.losses.FocalLoss(smp.losses.MULTICLASS_MODE, ignore_index=int(cfg["ignore_index"]),
                                gamma=float(cfg.get("gamma", 2.0)), alpha=None if alpha is None else float(alpha))


def _jaccard(cfg: Mapping, num_classes: int, stats: ClassPixels | None = None) -> nn.Module:
    return smp.losses.JaccardLoss(smp.losses.MULTICLASS_MODE, smooth=float(cfg.get("smooth", 0.0)),
                                  ignore_index=int(cfg["ignore_index"]))


def _lovasz(cfg: Mapping, num_classes: int, stats: ClassPixels | None = None) -> nn.Module:
    return smp.losses.LovaszLoss(smp.losses.MULTICLASS_MODE, per_image=bool(cfg.get("per_image", False)),
                                 ignore_index=int(cfg["ignore_index"]))


def _tversky(cfg: Mapping, num_classes: int, stats: ClassPixels | None = None) -> nn.Module:
    return smp.losses.TverskyLoss(smp.losses.MULTICLASS_MODE, ignore_index=int(cfg["ignore_index"]),
                                  smooth=float(cfg.get("smooth", 0.0)), alpha=float(cfg.get("alpha", 0.5)),
                                  beta=float(cfg.get("beta", 0.5)))


def soft_confusion(logits: torch.Tensor, target: torch.Tensor, ignore_index: int):
    """Soft per-class statistics of a batch.

    Args:
        logits: ``(N, C, H, W)`` float; target: ``(N, H, W)`` int64 (values 0..C-1 or ignore_index).

    Returns:
        ``(p, y, valid)``: softmax probabilities ``(N, C, H, W)`` float32, one-hot target of the
        same shape (0 on ignored pixels) and the valid-pixel mask ``(N, 1, H, W)`` float32.
    """
    p = logits.float().softmax(1)
    valid = (target != ignore_index).unsqueeze(1).float()
    y = F.one_hot(torch.where(target == ignore_index, 0, target), logits.shape[1]).permute(0, 3, 1, 2).float()
    return p * valid, y * valid, valid


class RegionLoss(nn.Module):
    """The region losses written here (multiclass, softmax). Per class c, over the batch:
    ``tp = sum p*y``, ``fp = sum p*(1-y)``, ``fn = sum (1-p)*y`` on valid pixels (soft counts).
    Class means are taken over the classes present in the batch's target.

    - ``focal_tversky`` (Abraham and Khan, ISBI 2019): ``mean_c (1 - TI_c)^(1/gamma)`` with
      ``TI_c = (tp + s) / (tp + alpha*fn + beta*fp + s)`` (alpha weighs false negatives, as in the paper).
    - ``log_cosh_dice`` (Jadon, CIBCB 2020): ``log(cosh(1 - mean_c Dice_c))``, ``Dice_c = (2tp + s) / (2tp + fp + fn + s)``.
    - ``sensitivity_specificity`` (Brosch et al., MICCAI 2015): per class
      ``w * sum((y-p)^2 y) / (sum y + s) + (1-w) * sum((y-p)^2 (1-y)) / (sum (1-y) + s)``, class mean.
    - ``combo`` (Taghanaki et al., CMIG 2019): ``alpha * L_mbce - (1-alpha) * mean_c Dice_c`` with
      ``L_mbce = -mean(beta * y ln p + (1-beta)(1-y) ln(1-p))`` over valid pixels and classes
      (beta > 0.5 penalises false negatives more). It is negative by construction.
    - ``exp_log`` (Wong et al., MICCAI 2018): ``w_dice * mean_c (-ln Dice_c)^gamma +
      w_cross * mean_pixels w_l (-ln p_l)^gamma``, ``w_l = ((sum_k f_k) / f_l)^0.5`` from the class
      pixel counts of the training split (1 without them), l the pixel's true class.

    ``forward(logits: (N, C, H, W) float, target: (N, H, W) int64) -> scalar float32``.
    Probabilities are clamped to [eps, 1-eps] inside logarithms, and ``1 - TI`` to eps before a
    fractional power, so gradients stay finite at perfect and at totally wrong predictions.
    """

    NAMES = ("focal_tversky", "log_cosh_dice", "sensitivity_specificity", "combo", "exp_log")

    def __init__(self, name: str, ignore_index: int, smooth: float = 1.0, alpha: float = 0.7, beta: float = 0.3,
                 gamma: float = 4 / 3, w: float = 0.05, w_dice: float = 0.8, w_cross: float = 0.2,
                 label_weights: list[float] | None = None, eps: float = 1e-6) -> None:
        super().__init__()
        if name not in self.NAMES:
            raise SegcliError(f"loss.name={name}: expected one of {', '.join(self.NAMES)}")
        self.name, self.ignore_index, self.smooth, self.eps = name, int(ignore_index), float(smooth), float(eps)
        self.alpha, self.beta, self.gamma, self.w = float(alpha), float(beta), float(gamma), float(w)
        self.w_dice, self.w_cross = float(w_dice), float(w_cross)
        self.register_buffer("label_weights", None if label_weights is None
                             else torch.tensor(label_weights, dtype=torch.float32), persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p, y, valid = soft_confusion(logits, target, self.ignore_index)
        dims, s, eps = (0, 2, 3), self.smooth, self.eps
        tp, fp, fn = (p * y).sum(dims), (p * (1 - y) * valid).sum(dims), ((1 - p) * y).sum(dims)
        present = y.sum(dims) > 0
        if not present.any():
            return logits.sum() * 0.0  # nothing labelled in the batch: no signal, zero gradient
        dice = (2 * tp + s) / (2 * tp + fp + fn + s)
        if self.name == "focal_tversky":
            ti = (tp + s) / (tp + self.alpha * fn + self.beta * fp + s)
            return ((1 - ti).clamp_min(eps) ** (1 / self.gamma))[present].mean()
        if self.name == "log_cosh_dice":
            return torch.log(torch.cosh(1 - dice[present].mean()))
        if self.name == "sensitivity_specificity":
            err = (y - p) ** 2 * valid
            sens = (err * y).sum(dims) / (y.sum(dims) + s)
            spec = (err * (1 - y) * valid).sum(dims) / (((1 - y) * valid).sum(dims) + s)
            return (self.w * sens + (1 - self.w) * spec)[present].mean()
        q = p.clamp(eps, 1 - eps)
        if self.name == "combo":
            bce = -(self.beta * y * q.log() + (1 - self.beta) * (1 - y) * valid * (1 - q).log())
            mbce = bce.sum() / (valid.sum() * logits.shape[1]).clamp_min(1)
            return self.alpha * mbce - (1 - self.alpha) * dice[present].mean()
        # exp_log
        dice_term = (-dice.clamp_min(eps).log()).clamp_min(eps) ** self.gamma
        true_p = (q * y).sum(1)  # probability of the true class, (N, H, W); 0 on ignored pixels
        weights = self.label_weights if self.label_weights is not None else torch.ones(logits.shape[1], device=logits.device)
        w_l = (weights.to(logits.device)[:, None, None, None] * y.transpose(0, 1)).sum(0)
        cross = (w_l * (-true_p.clamp_min(eps).log()).clamp_min(eps) ** self.gamma)[valid[:, 0] > 0]
        return self.w_dice * dice_term[present].mean() + self.w_cross * cross.mean()


def _region(cfg: Mapping, num_classes: int, stats: ClassPixels | None = None) -> nn.Module:
    name = str(cfg["name"])
    params = {k: float(cfg[k]) for k in ("smooth", "alpha", "beta", "gamma", "w", "w_dice", "w_cross") if cfg.get(k) is not None}
    label_weights = None
    if name == "exp_log" and stats is not None:
        pixels = np.asarray(stats.pixels, dtype=np.float64)
        label_weights = np.where(pixels > 0, (pixels.sum() / np.maximum(pixels, 1)) ** 0.5, 0.0).tolist()
    return RegionLoss(name, int(cfg["ignore_index"]), label_weights=label_weights, **params)


LOSSES = {"ce": _ce, "dice": _dice, "focal": _focal, "jaccard": _jaccard, "lovasz": _lovasz, "tversky": _tversky,
          **{name: _region for name in RegionLoss.NAMES}}


def build_loss(cfg: Mapping, num_classes: int, stats: ClassPixels | None = None) -> nn.Module:
    """The loss named by ``cfg["name"]`` (``ce``, ``dice``, ``focal`` or ``compound``).
    ``stats`` (the training split's class pixels) serve ``class_weights: median_frequency``.

    For ``compound``, ``cfg["terms"]`` lists ``{name, weight, ...parameters}``; each term
    inherits ``ignore_index`` from the group.

    Raises:
        SegcliError: unknown loss or term name, or bad parameters.
    """
    name = str(cfg["name"])
    if name == "compound":
        terms = []
        for i, term in enumerate(cfg.get("terms") or []):
            term = dict(term)
            term.setdefault("ignore_index", cfg["ignore_index"])
            if term.get("name") not in LOSSES:
                raise SegcliError(f"loss.terms[{i}].name={term.get('name')}: expected one of {', '.join(LOSSES)}")
            terms.append((term["name"], float(term.get("weight", 1.0)), LOSSES[term["name"]](term, num_classes, stats)))
        if not terms:
            raise SegcliError("loss.terms is empty; expected at least one {name, weight} entry")
        return WeightedSum(terms)
    if name not in LOSSES:
        raise SegcliError(f"loss.name={name}: expected one of {', '.join([*LOSSES, 'compound'])}")
    return LOSSES[name](cfg, num_classes, stats)
