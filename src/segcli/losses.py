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

import segmentation_models_pytorch as smp
import torch
from torch import nn

from segcli.errors import SegcliError


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


def _ce(cfg: Mapping, num_classes: int) -> nn.Module:
    weights = cfg.get("class_weights")
    if weights is not None and len(weights) != num_classes:
        raise SegcliError(f"loss.class_weights has {len(weights)} entries; expected {num_classes}")
    return nn.CrossEntropyLoss(weight=None if weights is None else torch.tensor(list(weights), dtype=torch.float32),
                               ignore_index=int(cfg["ignore_index"]),
                               label_smoothing=float(cfg.get("label_smoothing", 0.0)))


def _dice(cfg: Mapping, num_classes: int) -> nn.Module:
    return smp.losses.DiceLoss(smp.losses.MULTICLASS_MODE, ignore_index=int(cfg["ignore_index"]),
                               smooth=float(cfg.get("smooth", 0.0)), log_loss=bool(cfg.get("log_loss", False)))


def _focal(cfg: Mapping, num_classes: int) -> nn.Module:
    alpha = cfg.get("alpha")
    return smp.losses.FocalLoss(smp.losses.MULTICLASS_MODE, ignore_index=int(cfg["ignore_index"]),
                                gamma=float(cfg.get("gamma", 2.0)), alpha=None if alpha is None else float(alpha))


LOSSES = {"ce": _ce, "dice": _dice, "focal": _focal}


def build_loss(cfg: Mapping, num_classes: int) -> nn.Module:
    """The loss named by ``cfg["name"]`` (``ce``, ``dice``, ``focal`` or ``compound``).

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
            terms.append((term["name"], float(term.get("weight", 1.0)), LOSSES[term["name"]](term, num_classes)))
        if not terms:
            raise SegcliError("loss.terms is empty; expected at least one {name, weight} entry")
        return WeightedSum(terms)
    if name not in LOSSES:
        raise SegcliError(f"loss.name={name}: expected one of {', '.join([*LOSSES, 'compound'])}")
    return LOSSES[name](cfg, num_classes)
