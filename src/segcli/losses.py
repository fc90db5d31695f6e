"""build_loss: the ``loss`` config group. Every loss maps
``(logits: (N, C, H, W) float, target: (N, H, W) int64) -> scalar float`` and skips
``ignore_index`` pixels.

- ``ce``: ``torch.nn.CrossEntropyLoss`` (class weights, label smoothing).
- ``dice``: ``segmentation_models_pytorch.losses.DiceLoss`` in multiclass mode (Milletari et al. 2016).
- ``focal``: ``segmentation_models_pytorch.losses.FocalLoss`` in multiclass mode (Lin et al. 2017).
- ``compound``: ``WeightedSum`` of any of the above, each with its own parameters.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import segmentation_models_pytorch as smp
import torch
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


LOSSES = {"ce": _ce, "dice": _dice, "focal": _focal}


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
