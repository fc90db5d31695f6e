"""Optimizers and learning-rate schedules: the ``optimizer`` and ``scheduler`` config groups.

Optimizers are torch's own (``torch.optim.AdamW``, ``Adam``, ``SGD``, ``RMSprop``), one registered
builder per YAML file of conf/optimizer/.

The learning-rate schedule is written here rather than taken from ``torch.optim.lr_scheduler``
because it follows the run's *progress*, the larger of steps/total_steps and
elapsed/max_seconds: a run bounded by ``trainer.max_minutes`` still warms up and anneals to
its end, which no step-counting torch scheduler can do without knowing the step rate. Each
shape is one registered function of conf/scheduler/'s names. ``exponential`` (FC-DenseNet's
lr x gamma^epoch) counts epochs, not progress: ``steps / steps_per_epoch``, so a time-budgeted run
decays per epoch exactly as the paper's recipe does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from segcli.registry import Registry

OPTIMIZERS = Registry("optimizer")
SCHEDULES = Registry("scheduler")


@OPTIMIZERS.register("adamw")
def adamw(cfg: Mapping, params: Iterable) -> torch.optim.Optimizer:
    """torch.optim.AdamW (Loshchilov and Hutter 2019): ``lr``, ``weight_decay``, ``betas``."""
    return torch.optim.AdamW(
        params,
        lr=float(cfg["lr"]),
        weight_decay=float(cfg.get("weight_decay", 0.0)),
        betas=tuple(cfg.get("betas", (0.9, 0.999))),
    )


@OPTIMIZERS.register("adam")
def adam(cfg: Mapping, params: Iterable) -> torch.optim.Optimizer:
    """torch.optim.Adam (Kingma and Ba 2015): ``lr``, ``weight_decay`` (L2), ``betas``."""
    return torch.optim.Adam(
        params,
        lr=float(cfg["lr"]),
        weight_decay=float(cfg.get("weight_decay", 0.0)),
        betas=tuple(cfg.get("betas", (0.9, 0.999))),
    )


@OPTIMIZERS.register("sgd")
def sgd(cfg: Mapping, params: Iterable) -> torch.optim.Optimizer:
    """torch.optim.SGD: ``lr``, ``weight_decay``, ``momentum``, ``nesterov``."""
    return torch.optim.SGD(
        params,
        lr=float(cfg["lr"]),
        weight_decay=float(cfg.get("weight_decay", 0.0)),
        momentum=float(cfg.get("momentum", 0.9)),
        nesterov=bool(cfg.get("nesterov", False)),
    )


@OPTIMIZERS.register("rmsprop")
def rmsprop(cfg: Mapping, params: Iterable) -> torch.optim.Optimizer:
    """torch.optim.RMSprop (Tieleman and Hinton 2012): ``lr``, ``weight_decay``, ``alpha`` (the
    squared-gradient average's decay; Lasagne's ``rho``), ``eps``, ``momentum``."""
    return torch.optim.RMSprop(
        params,
        lr=float(cfg["lr"]),
        weight_decay=float(cfg.get("weight_decay", 0.0)),
        alpha=float(cfg.get("alpha", 0.99)),
        eps=float(cfg.get("eps", 1e-8)),
        momentum=float(cfg.get("momentum", 0.0)),
    )


def build_optimizer(cfg: Mapping, params: Iterable) -> torch.optim.Optimizer:
    """The optimizer ``cfg["name"]`` names, over ``params``.

    Raises:
        SegcliError: ``optimizer.name`` is not registered.
    """
    return OPTIMIZERS.build(cfg, params)


@SCHEDULES.register("poly")
def poly(q: float, s: LrSchedule, epochs: float) -> float:
    """(1 - q)^power (Chen et al., DeepLab)."""
    return (1 - q) ** s.power


@SCHEDULES.register("cosine", "onecycle")
def cosine(q: float, s: LrSchedule, epochs: float) -> float:
    """0.5 (1 + cos(pi q)) (Loshchilov and Hutter 2017; onecycle: Smith 2018, after its warm-up)."""
    return 0.5 * (1 + math.cos(math.pi * q))


@SCHEDULES.register("constant")
def constant(q: float, s: LrSchedule, epochs: float) -> float:
    """1 (no decay)."""
    return 1.0


@SCHEDULES.register("exponential")
def exponential(q: float, s: LrSchedule, epochs: float) -> float:
    """gamma^epochs (fractional within an epoch; torch's ExponentialLR stepped per epoch gives
    gamma^floor(epochs)); FC-DenseNet's 0.995 per epoch (Jégou et al. 2017)."""
    return s.gamma**epochs


@dataclass
class LrSchedule:
    """Learning-rate factor over the run's progress p in [0, 1] (see the module docstring).

    Shapes (after a linear warm-up over ``warmup_fraction``): ``poly`` lr*(1-p)^power,
    ``cosine``, ``onecycle`` (warm-up from lr/25, then cosine), ``constant`` (1 after the warm-up),
    ``exponential`` lr*gamma^epochs (epochs = steps / ``steps_per_epoch``, not progress).
    Never below ``min_lr_ratio`` * lr after warm-up.

    Args:
        total_steps: optimizer steps the run would take without a time budget.

    Raises:
        SegcliError: (construction) ``name`` is not a registered shape.
    """

    name: str
    total_steps: int
    warmup_fraction: float = 0.0
    power: float = 0.9
    min_lr_ratio: float = 0.0
    gamma: float = 1.0
    steps_per_epoch: int = 1

    def __post_init__(self) -> None:
        self.shape = SCHEDULES.get(self.name)

    def progress(self, step: int, elapsed: float, max_seconds: float | None = None) -> float:
        """Fraction of the run done after ``step`` steps and ``elapsed`` seconds, in [0, 1];
        ``max_seconds``: the seconds training may take (``training.engine.Budget.deadline``), or
        None."""
        p = step / max(self.total_steps, 1)
        if max_seconds:
            p = max(p, elapsed / max_seconds)
        return min(max(p, 0.0), 1.0)

    def factor(self, p: float, epochs: float = 0.0) -> float:
        """Multiplier of the base learning rate at progress ``p``, after ``epochs`` epochs (steps /
        ``steps_per_epoch``; only ``exponential`` counts them)."""
        start = 1 / 25 if self.name == "onecycle" else 0.0
        if self.warmup_fraction > 0 and p < self.warmup_fraction:
            return start + (1 - start) * p / self.warmup_fraction
        q = (p - self.warmup_fraction) / max(1 - self.warmup_fraction, 1e-8)
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * self.shape(q, self, epochs)

    def apply(
        self,
        optimizer: torch.optim.Optimizer,
        step: int,
        elapsed: float,
        max_seconds: float | None = None,
    ) -> float:
        """Set every param group's lr to ``initial_lr * factor``; returns the first group's lr."""
        f = self.factor(
            self.progress(step, elapsed, max_seconds), step / max(self.steps_per_epoch, 1)
        )
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = group["initial_lr"] * f
        return optimizer.param_groups[0]["lr"]


def build_schedule(cfg: Mapping, total_steps: int, steps_per_epoch: int = 1) -> LrSchedule:
    """The ``scheduler`` group's schedule over ``total_steps`` optimizer steps of
    ``steps_per_epoch`` each.

    Raises:
        SegcliError: ``scheduler.name`` is not registered.
    """
    return LrSchedule(
        str(cfg["name"]),
        total_steps,
        float(cfg.get("warmup_fraction", 0)),
        float(cfg.get("power", 0.9)),
        float(cfg.get("min_lr_ratio", 0.0)),
        float(cfg.get("gamma", 1.0)),
        steps_per_epoch,
    )
