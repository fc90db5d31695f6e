"""build_loss: the ``loss`` config group. ``LOSSES`` maps every ``conf/loss/*.yaml`` ``name:`` to
a builder that reads that loss's own keys and returns one module
``(logits: (N, C, H, W) float, target: (N, H, W) int64) -> scalar float`` that skips
``ignore_index`` pixels. Also here: ``class_weights``, ``loss_mode`` (``loss.mode`` and
``loss.classes``, checked) and ``WeightedSum`` (``compound``).

- ``ce``: ``torch.nn.CrossEntropyLoss`` (class weights, label smoothing).
- ``dice``: ``segmentation_models_pytorch.losses.DiceLoss`` (Milletari et al. 2016).
- ``focal``: ``segmentation_models_pytorch.losses.FocalLoss`` (Lin et al. 2017).
- ``jaccard``, ``lovasz``, ``tversky``: SMP's JaccardLoss (soft IoU), LovaszLoss (Lovasz-softmax,
  Berman et al. 2018) and TverskyLoss (Salehi et al. 2017).
- ``focal_tversky``, ``log_cosh_dice``, ``sensitivity_specificity``, ``combo``, ``exp_log``:
  written here, one class each in ``segcli.losses.region`` (``FocalTversky``, ``LogCoshDice``,
  ``SensitivitySpecificity``, ``Combo``, ``ExpLog``), with their papers.
- ``bce``, ``weighted_bce``, ``balanced_ce``: sigmoid (binary) cross-entropy per class channel
  against the one-hot target, in ``segcli.losses.binary`` (``BCE``, ``WeightedBCE``,
  ``BalancedCE``): plain, with a fixed weight on positives, or with HED's class-balancing beta
  (Xie and Tu 2015).
- ``boundary``, ``hausdorff``, ``shape_aware``: distance-map losses in ``segcli.losses.distance``
  (``Boundary``, ``Hausdorff``, ``ShapeAware``; imported when one is built).
- ``compound``: ``WeightedSum`` of any of the above, each with its own parameters.

Modes (``loss.mode``): ``multiclass`` (softmax over classes, the default) or ``multilabel``
(an independent sigmoid per class channel, one-vs-rest against the one-hot target; the binary form
for a two-class task is ``loss.classes=[1]``, the foreground channel). ``loss.classes`` restricts
the class mean to a subset where the formula has one (all but ce, weighted_ce, focal, lovasz and
shape_aware in multiclass mode). ``binary.MultilabelTarget`` gives every SMP loss the same
ignore_index handling in multilabel mode (SMP's FocalLoss cannot index a multilabel target with
ignore_index).

Region statistics (soft TP/FP/FN per class) are summed over the whole batch (the "batch Dice" of
nnU-Net and SMP's default), on the probabilities, over pixels whose target is not ignore_index.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import segmentation_models_pytorch as smp
import torch
from torch import nn

from segcli.data.readers import ClassPixels
from segcli.errors import SegcliError
from segcli.losses.binary import BCE, BalancedCE, MultilabelTarget, WeightedBCE
from segcli.losses.region import (
    Combo,
    ExpLog,
    FocalTversky,
    LogCoshDice,
    RegionLoss,
    SensitivitySpecificity,
    wong_label_weights,
)
from segcli.registry import Registry

# name (conf/loss/NAME.yaml's ``name:``) -> builder(cfg, num_classes, stats) -> nn.Module
LOSSES = Registry("loss")


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
            raise SegcliError(
                f"loss.class_weights={spec}: expected null, a list of {num_classes} numbers, "
                "median_frequency or inverse_frequency"
            )
        if stats is None:
            raise SegcliError(
                f"loss.class_weights={spec} needs the class pixel counts of a folder dataset's "
                "training split; give a list of weights instead"
            )
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


MODES = ("multiclass", "multilabel")


def loss_mode(
    cfg: Mapping, num_classes: int, multiclass_classes: bool = True, multilabel: bool = True
) -> tuple[str, list[int] | None]:
    """``(mode, classes)`` of a loss config, checked.

    Args:
        multiclass_classes: the loss supports ``classes`` in multiclass mode.
        multilabel: the loss has a multilabel (sigmoid) form.

    Raises:
        SegcliError: unknown mode, a class index outside 0..C-1, or a combination the loss lacks.
    """
    name, mode, classes = cfg.get("name"), str(cfg.get("mode") or "multiclass"), cfg.get("classes")
    if mode not in MODES:
        raise SegcliError(f"loss.mode={mode}: expected multiclass or multilabel")
    if mode == "multilabel" and not multilabel:
        raise SegcliError(
            f"loss {name} has no multilabel form (for sigmoid cross-entropy use loss=bce)"
        )
    if classes is None:
        return mode, None
    if (
        isinstance(classes, (int, str))
        or not all(isinstance(c, int) and 0 <= c < num_classes for c in classes)
        or not classes
    ):
        raise SegcliError(
            f"loss.classes={classes}: expected a list of class indices in 0..{num_classes - 1}"
        )
    if mode == "multiclass" and not multiclass_classes:
        raise SegcliError(
            f"loss {name} in multiclass mode averages over all classes; loss.classes needs "
            "loss.mode=multilabel"
        )
    return mode, [int(c) for c in classes]


def _sigmoid_classes(cfg: Mapping, num_classes: int) -> list[int] | None:
    """``loss.classes`` of a sigmoid-only loss (the bce family).

    Raises:
        SegcliError: ``loss.mode`` is not multilabel, or bad classes.
    """
    mode, classes = loss_mode(cfg, num_classes)
    if mode != "multilabel":
        raise SegcliError(
            f"loss {cfg['name']} is a sigmoid loss: expected loss.mode=multilabel "
            "(for softmax use ce)"
        )
    return classes


def _beta(cfg: Mapping) -> float | None:
    """``loss.beta`` of the bce family: None for ``auto`` or null."""
    beta = cfg.get("beta")
    return None if beta is None or beta == "auto" else float(beta)


@LOSSES.register("bce")
def _bce(cfg: Mapping, num_classes: int, stats: ClassPixels | None = None) -> nn.Module:
    classes = _sigmoid_classes(cfg, num_classes)
    return MultilabelTarget(BCE(), int(cfg["ignore_index"]), classes)


@LOSSES.register("weighted_bce")
def _weighted_bce(cfg: Mapping, num_classes: int, stats: ClassPixels | None = None) -> nn.Module:
    classes, beta = _sigmoid_classes(cfg, num_classes), _beta(cfg)
    loss = WeightedBCE(1.0 if beta is None else beta)
    return MultilabelTarget(loss, int(cfg["ignore_index"]), classes)


@LOSSES.register("balanced_ce")
def _balanced_ce(cfg: Mapping, num_classes: int, stats: ClassPixels | None = None) -> nn.Module:
    classes = _sigmoid_classes(cfg, num_classes)
    return MultilabelTarget(BalancedCE(_beta(cfg)), int(cfg["ignore_index"]), classes)


@LOSSES.register("ce")
def _ce(cfg: Mapping, num_classes: int, stats: ClassPixels | None = None) -> nn.Module:
    loss_mode(cfg, num_classes, multiclass_classes=False, multilabel=False)
    weights = class_weights(cfg.get("class_weights"), num_classes, stats)
    return nn.CrossEntropyLoss(
        weight=None if weights is None else torch.tensor(weights, dtype=torch.float32),
        ignore_index=int(cfg["ignore_index"]),
        label_smoothing=float(cfg.get("label_smoothing", 0.0)),
    )


def _smp(make, cfg: Mapping, num_classes: int, multiclass_classes: bool) -> nn.Module:
    """An SMP loss in the config's mode: multiclass with SMP's own ignore_index (and ``classes``
    where SMP has them), or multilabel through ``MultilabelTarget``."""
    mode, classes = loss_mode(cfg, num_classes, multiclass_classes)
    ignore = int(cfg["ignore_index"])
    if mode == "multilabel":
        return MultilabelTarget(make(smp.losses.MULTILABEL_MODE, {}), ignore, classes)
    return make(
        smp.losses.MULTICLASS_MODE,
        {"ignore_index": ignore, **({"classes": classes} if classes else {})},
    )


@LOSSES.register("dice")
def _dice(cfg: Mapping, num_classes: int, stats: ClassPixels | None = None) -> nn.Module:
    return _smp(
        lambda mode, kw: smp.losses.DiceLoss(
            mode,
            smooth=float(cfg.get("smooth", 0.0)),
            log_loss=bool(cfg.get("log_loss", False)),
            **kw,
        ),
        cfg,
        num_classes,
        True,
    )


@LOSSES.register("focal")
def _focal(cfg: Mapping, num_classes: int, stats: ClassPixels | None = None) -> nn.Module:
    alpha = cfg.get("alpha")
    return _smp(
        lambda mode, kw: smp.losses.FocalLoss(
            mode,
            gamma=float(cfg.get("gamma", 2.0)),
            alpha=None if alpha is None else float(alpha),
            **kw,
        ),
        cfg,
        num_classes,
        False,
    )


@LOSSES.register("jaccard")
def _jaccard(cfg: Mapping, num_classes: int, stats: ClassPixels | None = None) -> nn.Module:
    return _smp(
        lambda mode, kw: smp.losses.JaccardLoss(mode, smooth=float(cfg.get("smooth", 0.0)), **kw),
        cfg,
        num_classes,
        True,
    )


@LOSSES.register("lovasz")
def _lovasz(cfg: Mapping, num_classes: int, stats: ClassPixels | None = None) -> nn.Module:
    if cfg.get("per_image") and cfg.get("mode") == "multilabel":
        raise SegcliError("loss.per_image=true needs loss.mode=multiclass for lovasz")
    return _smp(
        lambda mode, kw: smp.losses.LovaszLoss(
            mode, per_image=bool(cfg.get("per_image", False)), **kw
        ),
        cfg,
        num_classes,
        False,
    )


@LOSSES.register("tversky")
def _tversky(cfg: Mapping, num_classes: int, stats: ClassPixels | None = None) -> nn.Module:
    return _smp(
        lambda mode, kw: smp.losses.TverskyLoss(
            mode,
            smooth=float(cfg.get("smooth", 0.0)),
            alpha=float(cfg.get("alpha", 0.5)),
            beta=float(cfg.get("beta", 0.5)),
            **kw,
        ),
        cfg,
        num_classes,
        True,
    )


def _region(
    cls: type[RegionLoss], cfg: Mapping, num_classes: int, keys: tuple[str, ...], **extra
) -> RegionLoss:
    """A region loss of ``segcli.losses.region`` with the config's mode and classes and the float
    parameters ``keys`` that the config sets (the class defaults for the others)."""
    mode, classes = loss_mode(cfg, num_classes)
    params = {k: float(cfg[k]) for k in keys if cfg.get(k) is not None}
    return cls(int(cfg["ignore_index"]), mode=mode, classes=classes, **params, **extra)


@LOSSES.register("focal_tversky")
def _focal_tversky(cfg: Mapping, num_classes: int, stats: ClassPixels | None = None) -> nn.Module:
    return _region(FocalTversky, cfg, num_classes, ("alpha", "beta", "gamma", "smooth"))


@LOSSES.register("log_cosh_dice")
def _log_cosh_dice(cfg: Mapping, num_classes: int, stats: ClassPixels | None = None) -> nn.Module:
    return _region(LogCoshDice, cfg, num_classes, ("smooth",))


@LOSSES.register("sensitivity_specificity")
def _sensitivity_specificity(
    cfg: Mapping, num_classes: int, stats: ClassPixels | None = None
) -> nn.Module:
    return _region(SensitivitySpecificity, cfg, num_classes, ("w", "smooth"))


@LOSSES.register("combo")
def _combo(cfg: Mapping, num_classes: int, stats: ClassPixels | None = None) -> nn.Module:
    return _region(Combo, cfg, num_classes, ("alpha", "beta", "smooth"))


@LOSSES.register("exp_log")
def _exp_log(cfg: Mapping, num_classes: int, stats: ClassPixels | None = None) -> nn.Module:
    label_weights = None if stats is None else wong_label_weights(stats.pixels)
    keys = ("gamma", "w_dice", "w_cross", "smooth")
    return _region(ExpLog, cfg, num_classes, keys, label_weights=label_weights)


@LOSSES.register("boundary")
def _boundary(cfg: Mapping, num_classes: int, stats: ClassPixels | None = None) -> nn.Module:
    from segcli.losses.distance import Boundary

    mode, classes = loss_mode(cfg, num_classes)
    return Boundary(int(cfg["ignore_index"]), mode=mode, classes=classes)


@LOSSES.register("hausdorff")
def _hausdorff(cfg: Mapping, num_classes: int, stats: ClassPixels | None = None) -> nn.Module:
    from segcli.losses.distance import Hausdorff

    mode, classes = loss_mode(cfg, num_classes)
    alpha = float(cfg.get("alpha", 2.0))
    return Hausdorff(int(cfg["ignore_index"]), alpha, mode=mode, classes=classes)


@LOSSES.register("shape_aware")
def _shape_aware(cfg: Mapping, num_classes: int, stats: ClassPixels | None = None) -> nn.Module:
    from segcli.losses.distance import ShapeAware

    loss_mode(cfg, num_classes, multiclass_classes=False, multilabel=False)
    return ShapeAware(int(cfg["ignore_index"]), normalize=bool(cfg.get("normalize", True)))


@LOSSES.register("compound")
def _compound(cfg: Mapping, num_classes: int, stats: ClassPixels | None = None) -> nn.Module:
    terms = []
    for i, term in enumerate(cfg.get("terms") or []):
        term = dict(term)
        term.setdefault("ignore_index", cfg["ignore_index"])
        where = f"loss.terms[{i}].name"
        if term.get("name") == "compound":
            raise SegcliError(f"{where}=compound: a term cannot be compound itself")
        builder = LOSSES.get(str(term.get("name")), where)
        terms.append(
            (term["name"], float(term.get("weight", 1.0)), builder(term, num_classes, stats))
        )
    if not terms:
        raise SegcliError("loss.terms is empty; expected at least one {name, weight} entry")
    return WeightedSum(terms)


def build_loss(cfg: Mapping, num_classes: int, stats: ClassPixels | None = None) -> nn.Module:
    """The loss named by ``cfg["name"]`` (a name of ``LOSSES``), in ``cfg["mode"]`` (multiclass, the
    default, or multilabel) over ``cfg["classes"]`` (all when null). ``stats`` (the training split's
    class pixels) serve ``class_weights: median_frequency`` / ``inverse_frequency`` and
    ``exp_log``'s label weights.

    For ``compound``, ``cfg["terms"]`` lists ``{name, weight, ...parameters}``; each term
    inherits ``ignore_index`` from the group.

    Returns:
        A module ``(logits: (N, C, H, W) float, target: (N, H, W) int64) -> scalar float``.

    Raises:
        SegcliError: unknown loss or term name, or bad parameters.
    """
    return LOSSES.build(cfg, num_classes, stats)
