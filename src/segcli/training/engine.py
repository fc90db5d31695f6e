"""The training loop. It takes built objects (model, loader, loss, optimizer), never a config, so it
is tested without Hydra. The learning-rate schedule is training/optim.py's; the wall-clock budget
that ends a run is ``Budget``; what a run does between epochs is training/trainer.py's (and
phases.py's); the evaluation loop that validation shares with ``segcli eval`` is
``inference.loop.evaluate``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from segcli.runtime import StepContext
from segcli.training.optim import LrSchedule


@dataclass
class RunningTotals:
    """The running totals of a training epoch so far, updated in place after every step: summed
    loss (float, loss x images), images, optimizer steps, seconds of training, and why the epoch
    stopped early: None (it ran to its end), ``"max_minutes"`` or ``"signal"``. A resumed epoch
    continues from the saved totals (``asdict`` round-trips; ``RunState.epoch_totals``)."""

    loss_sum: float = 0.0
    images: int = 0
    steps: int = 0
    seconds: float = 0.0
    stopped: str | None = None

    @property
    def loss(self) -> float:
        """Mean training loss per image."""
        return self.loss_sum / max(self.images, 1)

    @property
    def images_per_second(self) -> float:
        """Training throughput in images/s (data loading included)."""
        return self.images / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Budget:
    """A run's wall-clock budget (``trainer.max_minutes``) as training sees it.

    Args:
        seconds: the whole budget in seconds (validation included), or None for no budget.
        clock: seconds of the run so far (earlier processes of a resumed run included).
        reserve: seconds kept free at the end for the final validation (the last one measured).
    """

    seconds: float | None
    clock: Callable[[], float] = field(default=lambda: 0.0, repr=False)
    reserve: float = 0.0

    @property
    def deadline(self) -> float | None:
        """Seconds of the run after which no training step starts (budget minus the validation
        reserve, at least 1 ms), or None without a budget. The LR schedule anneals to it."""
        return None if self.seconds is None else max(self.seconds - self.reserve, 1e-3)

    def spent(self) -> bool:
        """True once the clock has reached the deadline (never without a budget)."""
        return self.deadline is not None and self.clock() >= self.deadline


@dataclass
class TrainStep:
    """What an optimizer step needs: the model (possibly DDP- or compile-wrapped), the loss
    ``loss_fn(logits (N, C, H, W) float, target (N, H, W) int64) -> scalar``, the optimizer, the
    LR schedule, the device context, the fp16 gradient scaler (None otherwise) and the max
    gradient norm (None: no clipping)."""

    model: nn.Module
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: LrSchedule
    ctx: StepContext
    scaler: torch.amp.GradScaler | None = None
    grad_clip: float | None = None

    def __call__(self, batch: dict, step: int, budget: Budget) -> tuple[int, float]:
        """One step on ``batch`` (image (N, 3, H, W) float32, mask (N, H, W) int64) as the run's
        ``step``-th (0-based, for the schedule); returns (N, the loss as a float).

        Raises:
            FloatingPointError: the loss is NaN or infinite (the message names the step, 1-based).
        """
        self.schedule.apply(self.optimizer, step, budget.clock(), budget.deadline)
        images, loss = self.loss_of(batch)
        value = loss.item()  # the step's one host-device sync, shared by the check and the logs
        if not math.isfinite(value):
            raise FloatingPointError(f"loss is {value} at step {step + 1}")
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        return images, value

    def loss_of(self, batch: dict) -> tuple[int, torch.Tensor]:
        """(N, the batch's scalar loss): ``loss_fn(model(image), mask)``, the forward pass under
        autocast, the loss in float32."""
        x = self.ctx.images(batch)
        y = batch["mask"].to(self.ctx.device, non_blocking=True)
        with self.ctx.autocast():
            logits = self.model(x)
        return x.shape[0], self.loss_fn(logits.float(), y)


def train_one_epoch(
    step: TrainStep,
    loader,
    budget: Budget,
    first_step: int = 0,
    totals: RunningTotals | None = None,
    on_step: Callable[[RunningTotals, float], None] | None = None,
    should_stop: Callable[[], str | None] | None = None,
) -> RunningTotals:
    """One pass over ``loader`` (batches of image (N, 3, H, W) float32, mask (N, H, W) int64).

    Args:
        first_step: optimizer steps of the run before this call (for the schedule).
        totals: the epoch's totals before this call, when it continues a resumed epoch
            (``loader`` then yields the remaining batches only); updated in place.
        on_step: called with (totals so far, the step's loss) after every step.
        should_stop: asked after every step; a reason (``"signal"``, ``"max_minutes"``) ends the
            epoch with ``stopped`` set to it. Default: ``"max_minutes"`` once ``budget.spent()``.

    Raises:
        FloatingPointError: see ``TrainStep``.
    """
    step.model.train()
    res = totals if totals is not None else RunningTotals()
    res.stopped = None
    should_stop = should_stop or (lambda: "max_minutes" if budget.spent() else None)
    steps_before, start, seconds = res.steps, time.perf_counter(), res.seconds
    for batch in loader:
        images, value = step(batch, first_step + res.steps - steps_before, budget)
        res.steps += 1
        res.images += images
        res.loss_sum += value * images
        res.seconds = seconds + time.perf_counter() - start
        if on_step:
            on_step(res, value)
        res.stopped = should_stop()
        if res.stopped:
            break
    res.seconds = seconds + time.perf_counter() - start
    return res
