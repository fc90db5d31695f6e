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
- ``bce``, ``weighted_bce``, ``balanced_ce``: sigmoid (binary) cross-entropy per class channel against
  the one-hot target (``torch.nn.functional.binary_cross_entropy_with_logits``): plain, with a fixed
  weight on positives, or with HED's class-balancing beta (Xie and Tu 2015).
- ``boundary``, ``hausdorff``, ``shape_aware``: distance-map losses, in ``segcli.losses.distance``.
- ``compound``: ``WeightedSum`` of any of the above, each with its own parameters.

Modes (``loss.mode``): ``multiclass`` (softmax over classes, the default) or ``multilabel``
(an independent sigmoid per class channel, one-vs-rest against the one-hot target; the binary form
for a two-class task is ``loss.classes=[1]``, the foreground channel). ``loss.classes`` restricts
the class mean to a subset where the formula has one (all but ce, weighted_ce, focal and lovasz in
multiclass mode). ``MultilabelTarget`` below gives every SMP loss the same ignore_index handling in
multilabel mode (SMP's FocalLoss cannot index a multilabel target with ignore_index).

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

from segcli.data.readers import ClassPixels
from segcli.errors import SegcliError
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


class MultilabelTarget(nn.Module):
    """Run a sigmoid (multilabel) loss on index targets: keeps the pixels whose target is not
    ``ignore_index``, one-hot encodes them and keeps the ``classes`` channels, then calls
    ``loss(logits: (1, K, P, 1) float, target: (1, K, P, 1) float)`` with P valid pixels and K classes.
    Losses that sum over the batch and pixels (Dice, BCE, focal, Lovasz hinge) give the same value as
    on the unflattened batch; without a valid pixel the result is 0 with a zero gradient.

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


class BinaryCE(nn.Module):
    """Sigmoid cross-entropy of every element, averaged (``torch.nn.functional.binary_cross_entropy_with_logits``).

    - ``bce``: ``-mean(y ln p + (1-y) ln(1-p))``.
    - ``weighted_bce`` (Pihur et al. 2007, as in Jadon's survey 2020): ``-mean(beta y ln p + (1-y) ln(1-p))``;
      beta > 1 counts false negatives more.
    - ``balanced_ce`` (Xie and Tu, HED, ICCV 2015): ``-mean(beta y ln p + (1-beta)(1-y) ln(1-p))``
      with ``beta = |Y-| / |Y|`` per class channel (the share of negative pixels, so the rare positives
      weigh more) when ``beta`` is None, or the given number.

    ``forward(logits: (N, K, ...) float, target: (N, K, ...) float in {0, 1}) -> scalar float32``.
    Meant to be wrapped in ``MultilabelTarget`` (which removes ignored pixels).
    """

    KINDS = ("bce", "weighted_bce", "balanced_ce")

    def __init__(self, kind: str, beta: float | None = None) -> None:
        super().__init__()
        if kind not in self.KINDS:
            raise SegcliError(f"loss.name={kind}: expected one of {', '.join(self.KINDS)}")
        self.kind, self.beta = kind, None if beta is None else float(beta)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x, y = logits.float(), target.float()
        if self.kind == "bce":
            return F.binary_cross_entropy_with_logits(x, y)
        if self.kind == "weighted_bce":
            beta = 1.0 if self.beta is None else self.beta
            return F.binary_cross_entropy_with_logits(
                x, y, pos_weight=torch.tensor(beta, device=x.device)
            )
        dims = [d for d in range(y.dim()) if d != 1]
        beta = (
            (1 - y.mean(dims, keepdim=True))
            if self.beta is None
            else torch.tensor(self.beta, device=x.device)
        )
        return F.binary_cross_entropy_with_logits(x, y, weight=beta * y + (1 - beta) * (1 - y))


@LOSSES.register(*BinaryCE.KINDS)
def _bce(cfg: Mapping, num_classes: int, stats: ClassPixels | None = None) -> nn.Module:
    mode, classes = loss_mode(cfg, num_classes)
    if mode != "multilabel":
        raise SegcliError(
            f"loss {cfg['name']} is a sigmoid loss: expected loss.mode=multilabel (for softmax use ce)"
        )
    beta = cfg.get("beta")
    if beta == "auto":
        beta = None
    return MultilabelTarget(BinaryCE(str(cfg["name"]), beta), int(cfg["ignore_index"]), classes)


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


def soft_confusion(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int, mode: str = "multiclass"
):
    """Soft per-class statistics of a batch.

    Args:
        logits: ``(N, C, H, W)`` float; target: ``(N, H, W)`` int64 (values 0..C-1 or ignore_index).
        mode: ``multiclass`` (softmax over C) or ``multilabel`` (sigmoid per channel).

    Returns:
        ``(p, y, valid)``: probabilities ``(N, C, H, W)`` float32 (0 on ignored pixels), one-hot target of
        the same shape (0 on ignored pixels) and the valid-pixel mask ``(N, 1, H, W)`` float32.
    """
    p = logits.float().softmax(1) if mode == "multiclass" else logits.float().sigmoid()
    valid = (target != ignore_index).unsqueeze(1).float()
    y = (
        F.one_hot(torch.where(target == ignore_index, 0, target), logits.shape[1])
        .permute(0, 3, 1, 2)
        .float()
    )
    return p * valid, y * valid, valid


class RegionLoss(nn.Module):
    """The region losses written here. Per class c, over the batch:
    ``tp = sum p*y``, ``fp = sum p*(1-y)``, ``fn = sum (1-p)*y`` on valid pixels (soft counts), with
    ``p`` the softmax (``mode="multiclass"``) or sigmoid (``"multilabel"``) probabilities.
    Class means are taken over the classes present in the batch's target and in ``classes`` (all
    when None).

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

    def __init__(
        self,
        name: str,
        ignore_index: int,
        smooth: float = 1.0,
        alpha: float = 0.7,
        beta: float = 0.3,
        gamma: float = 4 / 3,
        w: float = 0.05,
        w_dice: float = 0.8,
        w_cross: float = 0.2,
        label_weights: list[float] | None = None,
        eps: float = 1e-6,
        mode: str = "multiclass",
        classes: list[int] | None = None,
    ) -> None:
        super().__init__()
        if name not in self.NAMES:
            raise SegcliError(f"loss.name={name}: expected one of {', '.join(self.NAMES)}")
        self.mode, self.classes = mode, classes
        self.name, self.ignore_index, self.smooth, self.eps = (
            name,
            int(ignore_index),
            float(smooth),
            float(eps),
        )
        self.alpha, self.beta, self.gamma, self.w = (
            float(alpha),
            float(beta),
            float(gamma),
            float(w),
        )
        self.w_dice, self.w_cross = float(w_dice), float(w_cross)
        self.register_buffer(
            "label_weights",
            None if label_weights is None else torch.tensor(label_weights, dtype=torch.float32),
            persistent=False,
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p, y, valid = soft_confusion(logits, target, self.ignore_index, self.mode)
        dims, s, eps = (0, 2, 3), self.smooth, self.eps
        tp, fp, fn = (p * y).sum(dims), (p * (1 - y) * valid).sum(dims), ((1 - p) * y).sum(dims)
        present = y.sum(dims) > 0
        chosen = torch.ones_like(present)
        if self.classes is not None:
            chosen = torch.zeros_like(present)
            chosen[self.classes] = True
            present = present & chosen
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
            mbce = bce.sum(dims)[chosen].sum() / (valid.sum() * chosen.sum()).clamp_min(1)
            return self.alpha * mbce - (1 - self.alpha) * dice[present].mean()
        # exp_log
        dice_term = (-dice.clamp_min(eps).log()).clamp_min(eps) ** self.gamma
        true_p = (q * y).sum(1)  # probability of the true class, (N, H, W); 0 on ignored pixels
        weights = (
            self.label_weights
            if self.label_weights is not None
            else torch.ones(logits.shape[1], device=logits.device)
        )
        w_l = (weights.to(logits.device)[:, None, None, None] * y.transpose(0, 1)).sum(0)
        counted = (y * chosen[None, :, None, None]).sum(
            1
        ) > 0  # valid pixels whose true class is in `classes`
        cross = (w_l * (-true_p.clamp_min(eps).log()).clamp_min(eps) ** self.gamma)[counted]
        return self.w_dice * dice_term[present].mean() + self.w_cross * cross.mean()


@LOSSES.register(*RegionLoss.NAMES)
def _region(cfg: Mapping, num_classes: int, stats: ClassPixels | None = None) -> nn.Module:
    name = str(cfg["name"])
    params = {
        k: float(cfg[k])
        for k in ("smooth", "alpha", "beta", "gamma", "w", "w_dice", "w_cross")
        if cfg.get(k) is not None
    }
    label_weights = None
    if name == "exp_log" and stats is not None:
        pixels = np.asarray(stats.pixels, dtype=np.float64)
        label_weights = np.where(
            pixels > 0, (pixels.sum() / np.maximum(pixels, 1)) ** 0.5, 0.0
        ).tolist()
    mode, classes = loss_mode(cfg, num_classes)
    return RegionLoss(
        name,
        int(cfg["ignore_index"]),
        label_weights=label_weights,
        mode=mode,
        classes=classes,
        **params,
    )


@LOSSES.register("boundary", "hausdorff", "shape_aware")
def _distance(cfg: Mapping, num_classes: int, stats: ClassPixels | None = None) -> nn.Module:
    from segcli.losses.distance import build_distance_loss

    name = str(cfg["name"])
    mode, classes = loss_mode(
        cfg, num_classes, multiclass_classes=name != "shape_aware", multilabel=name != "shape_aware"
    )
    return build_distance_loss(cfg, mode, classes)


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
    class pixels) serve ``class_weights: median_frequency``.

    For ``compound``, ``cfg["terms"]`` lists ``{name, weight, ...parameters}``; each term
    inherits ``ignore_index`` from the group.

    Raises:
        SegcliError: unknown loss or term name, or bad parameters.
    """
    return LOSSES.build(cfg, num_classes, stats)
