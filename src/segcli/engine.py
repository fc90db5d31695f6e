"""The training and evaluation loops. They take built objects (model, loaders, loss, optimizer),
never a config, so they are tested without Hydra. The learning-rate schedule is optim.py's; the
wall-clock budget that ends a run is ``Budget``; what a run does between epochs is trainer.py's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from segcli.metrics import ConfusionMatrix, SegmentationScores
from segcli.optim import LrSchedule
from segcli.runtime import StepContext


def forward_at_scale(model: nn.Module, x: torch.Tensor, scale: float = 1.0, divisor: int = 32) -> torch.Tensor:
    """Logits at the input's resolution from a model that runs at ``scale`` times it.

    ``x: (N, 3, H, W) float`` is resized (bilinear, antialiased) to ``round(scale*H) x
    round(scale*W)``, padded bottom/right to a multiple of ``divisor``, segmented, and the logits
    are cropped and resized (bilinear) back: returns ``(N, C, H, W)``. The same idea as a
    test-time resize in MMSegmentation: the model works at a lower resolution, scores and masks
    stay at the original one.
    """
    if scale == 1.0:
        return model(x)
    h, w = x.shape[-2:]
    sh, sw = max(round(h * scale), 1), max(round(w * scale), 1)
    small = F.interpolate(x, size=(sh, sw), mode="bilinear", align_corners=False, antialias=scale < 1)
    small = F.pad(small, (0, -sw % divisor, 0, -sh % divisor))
    if x.is_contiguous(memory_format=torch.channels_last):
        small = small.contiguous(memory_format=torch.channels_last)
    logits = model(small)[..., :sh, :sw]
    return F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)


@dataclass
class EpochResult:
    """A training epoch so far: summed loss (loss x images), images, optimizer steps, seconds of
    training, and why it stopped early: None (it ran to its end), ``"max_minutes"`` or
    ``"signal"``. A resumed epoch continues from the saved one (``asdict`` round-trips)."""

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
        x = self.ctx.images(batch)
        y = batch["mask"].to(self.ctx.device, non_blocking=True)
        with self.ctx.autocast():
            logits = self.model(x)
        loss = self.loss_fn(logits.float(), y)  # float32 loss: autocast covers the forward pass only
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
        return x.shape[0], value


def train_one_epoch(step: TrainStep, loader, budget: Budget, first_step: int = 0,
                    totals: EpochResult | None = None,
                    on_step: Callable[[EpochResult, float], None] | None = None,
                    should_stop: Callable[[], str | None] | None = None) -> EpochResult:
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
    res = totals if totals is not None else EpochResult()
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


@dataclass
class EvalResult:
    """Scores of one split, the mean loss (None without a loss), image count and seconds; with
    ``per_image`` the sample names in the order of ``matrix.image_matrices_cpu()``."""

    scores: SegmentationScores
    loss: float | None
    images: int
    seconds: float
    matrix: ConfusionMatrix = field(repr=False, default=None)
    names: list[str] = field(repr=False, default_factory=list)


@torch.inference_mode()
def evaluate(model: nn.Module, loader, num_classes: int, ignore_index: int, ctx: StepContext,
             loss_fn: nn.Module | None = None, on_batch: Callable[[int], None] | None = None,
             stop_requested: Callable[[], bool] | None = None, per_image: bool = False,
             on_predictions: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
             infer: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
             on_scores: Callable[[torch.Tensor, dict], None] | None = None) -> EvalResult | None:
    """Predict every batch (argmax over classes) and accumulate one confusion matrix on the device.

    Used both for validation during training and by ``segcli eval``, so both give the same numbers.
    Padded pixels carry ``ignore_index`` in the mask and are not counted. Returns None when
    ``stop_requested()`` became True between two batches. ``per_image`` also keeps a matrix per
    image (for the per-image protocol of ``metrics.protocols``, and ``segcli compare``) and the
    samples' names (batch ``"name"``; ``#INDEX`` where a batch has none). ``on_predictions(pred, target)``
    receives every batch's ``(N, H, W)`` int64 predictions and targets (e.g. for HD95).
    ``infer(model, x) -> (N, C, H, W)`` class scores replaces the plain forward pass
    (``forward_at_scale`` at ``ctx.eval_scale``; see inference.py); with ``loss_fn`` they must be logits.
    ``on_scores(scores, batch)`` receives every batch's ``(N, C, H, W)`` scores (padded) and the batch.
    """
    model.eval()
    matrix = ConfusionMatrix(num_classes, ignore_index, device=ctx.device, per_image=per_image)
    start, total, images, names = time.perf_counter(), 0.0, 0, []
    for batch in loader:
        x = ctx.images(batch)
        y = batch["mask"].to(ctx.device, non_blocking=True)
        with ctx.autocast():
            logits = infer(model, x) if infer is not None else forward_at_scale(model, x, ctx.eval_scale)
        if loss_fn is not None:
            total += loss_fn(logits.float(), y).item() * x.shape[0]
        if on_scores is not None:
            on_scores(logits, batch)
        pred = logits.argmax(1)
        matrix.update(pred, y)
        if on_predictions is not None:
            on_predictions(pred, y)
        images += x.shape[0]
        if per_image:
            names += list(batch.get("name") or [f"#{images - x.shape[0] + i}" for i in range(x.shape[0])])
        if on_batch:
            on_batch(x.shape[0])
        if stop_requested is not None and stop_requested():
            return None
    return EvalResult(matrix.compute(), total / images if loss_fn is not None and images else None,
                      images, time.perf_counter() - start, matrix, names)
