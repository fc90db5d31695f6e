"""Is run B really better than run A on the same images? A paired bootstrap over images.

Each side's score is recomputed from its per-image confusion matrices (``segcli eval`` saves
them), so any resample gets the dataset protocol's mIoU and mDice exactly as ``segcli eval``
computes them (``metrics.confusion.class_scores``: classes absent from truth and prediction left out
of the mean) without running a model again.

The method: resample the N image indices with replacement R times (the same indices for both
sides: the pairing), sum each side's matrices over the resample, score both, and take the
difference B - A. The 95% interval is the 2.5th..97.5th percentile of the R differences
(Efron and Tibshirani 1993, "An Introduction to the Bootstrap", ch. 13, percentile interval);
resampling test images to judge a ranking's robustness is Maier-Hein et al. 2018, "Why rankings
of biomedical image analysis competitions should be interpreted with care" (Nat. Commun. 9:5217).

Written here because no maintained library does it on summed confusion matrices: scipy's
``stats.bootstrap`` resamples a statistic of per-sample values (it supports paired samples,
but mIoU over a resample is not a function of per-image scores) and would call Python once
per resample; here one matrix product gives all R resamples' summed matrices at once.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from segcli.errors import SegcliError
from segcli.metrics.confusion import class_scores

METRICS = ("miou", "mdice")


def scores_of_matrices(matrices: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class IoU and Dice and their means (dataset protocol) of a stack of confusion matrices.

    Args:
        matrices: ``(R, C, C)`` counts (rows: truth, columns: prediction), any real dtype.

    Returns:
        ``{"iou": (R, C), "dice": (R, C), "miou": (R,), "mdice": (R,)}`` float64; per class as
        ``metrics.confusion.class_scores`` (NaN for a class absent from truth and prediction, left
        out of the means; a resample without any class present has mean NaN).
    """
    iou, dice = (
        x.numpy() for x in class_scores(torch.as_tensor(np.asarray(matrices), dtype=torch.float64))
    )
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: mean NaN
        return {"iou": iou, "dice": dice, "miou": np.nanmean(iou, 1), "mdice": np.nanmean(dice, 1)}


def resample_weights(images: int, resamples: int, seed: int) -> np.ndarray:
    """How often each image is drawn in each resample: ``(resamples, images)`` int64, rows summing
    to ``images``: N draws with replacement counted per image, i.e. a multinomial (numpy's PCG64
    seeded with ``seed``: the same seed gives the same resamples).

    Raises:
        SegcliError: no images, or fewer than one resample.
    """
    if images < 1 or resamples < 1:
        raise SegcliError(
            f"bootstrap needs at least one image and one resample (got {images} images, "
            f"{resamples} resamples)"
        )
    return np.random.default_rng(seed).multinomial(
        images, np.full(images, 1 / images), size=resamples
    )


@dataclass
class Difference:
    """B - A of one score: the observed values, the 95% percentile interval of the bootstrap
    differences, and the share of resamples in which B scored higher than A (ties count half)."""

    a: float
    b: float
    low: float
    high: float
    b_better_share: float

    @property
    def difference(self) -> float:
        """The observed B - A."""
        return self.b - self.a

    @property
    def verdict(self) -> str:
        """``"B better"`` when the interval lies above 0, ``"A better"`` below, else
        ``"no difference detected at 95%"``."""
        if self.low > 0:
            return "B better"
        if self.high < 0:
            return "A better"
        return "no difference detected at 95%"

    def as_dict(self) -> dict:
        """JSON-ready fields (``ci95``: [low, high])."""
        return {
            "a": self.a,
            "b": self.b,
            "difference": self.difference,
            "ci95": [self.low, self.high],
            "b_better_share": self.b_better_share,
            "verdict": self.verdict,
        }


def _difference(a: np.ndarray, b: np.ndarray, observed_a: float, observed_b: float) -> Difference:
    """From the per-resample values of both sides (NaN resamples, where a class is absent from
    both truth and prediction of the resample, are left out)."""
    diff = b - a
    keep = ~np.isnan(diff)
    if not keep.any():
        return Difference(observed_a, observed_b, float("nan"), float("nan"), float("nan"))
    low, high = np.percentile(diff[keep], [2.5, 97.5])
    share = float(((diff[keep] > 0).sum() + 0.5 * (diff[keep] == 0).sum()) / keep.sum())
    return Difference(observed_a, observed_b, float(low), float(high), share)


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    resamples: int = 10000,
    seed: int = 0,
    class_names: list[str] | None = None,
    chunk: int = 2000,
) -> dict:
    """Paired bootstrap of B - A over images.

    Args:
        a, b: ``(N, C, C)`` per-image confusion matrices of the same N images in the same order.
        resamples: R, the number of bootstrap resamples.
        seed: seeds the resampling (reproducible).
        class_names: C names for the per-class results (default ``class0``...).
        chunk: resamples computed at once (memory: about ``chunk * C * C * 8`` bytes per side).

    Returns:
        ``{"images": N, "resamples": R, "seed": seed, "miou": Difference, "mdice": Difference,
        "per_class_iou": {name: Difference}}``.

    Raises:
        SegcliError: the stacks differ in shape or are not ``(N, C, C)``.
    """
    a, b = _matrix_stacks(a, b)
    n, c, _ = a.shape
    names = class_names or [f"class{i}" for i in range(c)]
    sides = (("a", a), ("b", b))
    observed = {side: scores_of_matrices(x.sum(0, keepdims=True)) for side, x in sides}
    weights = resample_weights(n, resamples, seed)
    boot = {side: _resampled_scores(x, weights, chunk) for side, x in sides}
    out: dict = {"images": n, "resamples": resamples, "seed": seed}
    for metric in METRICS:
        out[metric] = _difference(
            boot["a"][metric],
            boot["b"][metric],
            float(observed["a"][metric][0]),
            float(observed["b"][metric][0]),
        )
    out["per_class_iou"] = {
        name: _difference(
            boot["a"]["iou"][:, k],
            boot["b"]["iou"][:, k],
            float(observed["a"]["iou"][0, k]),
            float(observed["b"]["iou"][0, k]),
        )
        for k, name in enumerate(names)
    }
    return out


def _matrix_stacks(a, b) -> tuple[np.ndarray, np.ndarray]:
    """Both sides as float64 ``(N, C, C)`` stacks of one shape; else a SegcliError."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 3 or a.shape[1] != a.shape[2] or a.shape != b.shape:
        raise SegcliError(
            f"per-image matrices must both be (N, C, C) of one shape; got {a.shape} and {b.shape}"
        )
    return a, b


def _resampled_scores(matrices: np.ndarray, weights: np.ndarray, chunk: int) -> dict:
    """``scores_of_matrices``' ``iou`` ``(R, C)``, ``miou`` and ``mdice`` ``(R,)`` of each
    resample's summed matrix: ``weights`` ``(R, N)`` draws per image times the ``(N, C, C)``
    stack, ``chunk`` resamples at a time."""
    n, c, _ = matrices.shape
    flat = matrices.reshape(n, c * c)
    parts = []
    for start in range(0, len(weights), chunk):
        w = weights[start : start + chunk].astype(np.float64)
        parts.append(scores_of_matrices((w @ flat).reshape(-1, c, c)))
    return {k: np.concatenate([s[k] for s in parts]) for k in ("iou", "miou", "mdice")}


def check_same_images(labels: list[str], names: list[list[str]], classes: list[list[str]]) -> None:
    """Refuse runs that were not scored on the same images in the same order, or with other classes.

    Raises:
        SegcliError: names the first run that differs from the first one and the first differing
        image.
    """
    for label, these, cls in zip(labels[1:], names[1:], classes[1:], strict=True):
        if cls != classes[0]:
            raise SegcliError(
                f"{labels[0]} and {label} have different classes ({len(classes[0])}: "
                f"{', '.join(classes[0][:4])}... vs {len(cls)}: {', '.join(cls[:4])}...)"
            )
        for i, (x, y) in enumerate(zip(names[0], these)):
            if x != y:
                raise SegcliError(
                    f"{labels[0]} and {label} were not scored on the same images: image {i + 1} "
                    f"is {x} in {labels[0]} and {y} in {label}"
                )
        if len(these) != len(names[0]):
            raise SegcliError(
                f"{labels[0]} and {label} were not scored on the same images: {len(names[0])} "
                f"vs {len(these)} images"
            )


def rank_against_best(
    labels: list[str],
    stacks: list[np.ndarray],
    resamples: int = 10000,
    seed: int = 0,
    class_names: list[str] | None = None,
) -> dict:
    """Several runs on the same images: the best by observed mIoU, and each other run's paired
    bootstrap against it (``paired_bootstrap`` with A = the best, B = the run).

    Args:
        labels: a name per run.
        stacks: ``(N, C, C)`` per-image matrices per run, same images in the same order.

    Returns:
        ``{"best": label, "ranking": [{"run": label, "miou", "mdice", "vs_best": paired_bootstrap's
        dict or None for the best}, ...]}``, best observed mIoU first.
    """
    observed = [
        float(scores_of_matrices(np.asarray(x).sum(0, keepdims=True))["miou"][0]) for x in stacks
    ]
    order = sorted(range(len(stacks)), key=lambda i: -np.nan_to_num(observed[i], nan=-1.0))
    best = order[0]
    ranking = []
    for i in order:
        row = {
            "run": labels[i],
            "miou": observed[i],
            "mdice": float(
                scores_of_matrices(np.asarray(stacks[i]).sum(0, keepdims=True))["mdice"][0]
            ),
            "vs_best": None,
        }
        if i != best:
            row["vs_best"] = paired_bootstrap(stacks[best], stacks[i], resamples, seed, class_names)
        ranking.append(row)
    return {"best": labels[best], "ranking": ranking}


def as_json(result: dict) -> dict:
    """``paired_bootstrap``'s or ``rank_against_best``'s result with every ``Difference`` as a
    dict."""
    if isinstance(result, Difference):
        return result.as_dict()
    if isinstance(result, dict):
        return {k: as_json(v) for k, v in result.items()}
    if isinstance(result, list):
        return [as_json(v) for v in result]
    return result


def compare_runs(
    labels: list[str],
    stacks: list[np.ndarray],
    resamples: int = 10000,
    seed: int = 0,
    class_names: list[str] | None = None,
) -> dict:
    """``segcli compare``'s choice: two runs -> ``paired_bootstrap`` (B = the second against A);
    three or more -> ``rank_against_best``. ``stacks``: each run's ``(images, C, C)`` int64
    per-image confusion matrices, in ``labels``' order.

    Raises:
        SegcliError: fewer than two runs.
    """
    if len(stacks) < 2:
        raise SegcliError("compare needs at least two runs or eval files")
    if len(stacks) == 2:
        return paired_bootstrap(stacks[0], stacks[1], resamples, seed, class_names)
    return rank_against_best(labels, stacks, resamples, seed, class_names)
