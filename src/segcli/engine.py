"""The training and evaluation loops. They take built objects (model, loaders, loss, optimizer),
never a config, so they are tested without Hydra.

The learning-rate schedule is written here rather than taken from ``torch.optim.lr_scheduler``
because it follows the run's *progress*, the larger of steps/total_steps and
elapsed/max_seconds: a run bounded by ``trainer.max_minutes`` still warms up and anneals to
its end, which no step-counting torch scheduler can do without knowing the step rate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from segcli.metrics import ConfusionMatrix, SegmentationScores


def resolve_device(name: str) -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; anything else as torch reads it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_amp(setting: str | bool | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: ``auto`` -> bf16 on CUDA where supported, fp16 on older CUDA, none on CPU."""
    if setting in (False, None, "false", "off", "none"):
        return None
    if setting == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[str(setting)]


@dataclass
class LrSchedule:
    """Learning-rate factor over the run's progress p in [0, 1] (see the module docstring).

    Shapes (after a linear warm-up over ``warmup_fraction``): ``poly`` lr*(1-p)^power
    (Chen et al., DeepLab), ``cosine`` (Loshchilov and Hutter 2017), ``onecycle`` (Smith 2018:
    warm-up from lr/25, then cosine), ``constant``. Never below ``min_lr_ratio`` * lr after warm-up.

    Args:
        total_steps: optimizer steps the run would take without a time budget.
        max_seconds: the time budget in seconds, or None.
    """

    name: str
    total_steps: int
    max_seconds: float | None = None
    warmup_fraction: float = 0.0
    power: float = 0.9
    min_lr_ratio: float = 0.0

    def progress(self, step: int, elapsed: float) -> float:
        """Fraction of the run done after ``step`` steps and ``elapsed`` seconds, in [0, 1]."""
        p = step / max(self.total_steps, 1)
        if self.max_seconds:
            p = max(p, elapsed / self.max_seconds)
        return min(max(p, 0.0), 1.0)

    def factor(self, p: float) -> float:
        """Multiplier of the base learning rate at progress ``p``."""
        start = 1 / 25 if self.name == "onecycle" else 0.0
        if self.warmup_fraction > 0 and p < self.warmup_fraction:
            return start + (1 - start) * p / self.warmup_fraction
        q = (p - self.warmup_fraction) / max(1 - self.warmup_fraction, 1e-8)
        if self.name == "poly":
            f = (1 - q) ** self.power
        elif self.name in ("cosine", "onecycle"):
            f = 0.5 * (1 + math.cos(math.pi * q))
        elif self.name == "constant":
            return 1.0
        else:
            raise ValueError(f"unknown schedule {self.name!r}")
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * f

    def apply(self, optimizer: torch.optim.Optimizer, step: int, elapsed: float) -> float:
        """Set every param group's lr to ``initial_lr * factor``; returns the first group's lr."""
        f = self.factor(self.progress(step, elapsed))
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = group["initial_lr"] * f
        return optimizer.param_groups[0]["lr"]


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
class StepContext:
    """How a batch is moved and run: device, autocast dtype (None: float32), memory format, and
    the scale at which evaluation runs the model (see ``forward_at_scale``)."""

    device: torch.device
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    eval_scale: float = 1.0

    def images(self, batch: dict) -> torch.Tensor:
        """``(N, 3, H, W) float32`` on the device, channels_last if asked."""
        x = batch["image"].to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def autocast(self):
        """An autocast context for the forward pass (a no-op without AMP)."""
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)


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


def train_one_epoch(model: nn.Module, loader, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
                    ctx: StepContext, schedule: LrSchedule, step: int, clock: Callable[[], float],
                    scaler: torch.amp.GradScaler | None = None, grad_clip: float | None = None,
                    on_step: Callable[[EpochResult, float], None] | None = None,
                    totals: EpochResult | None = None,
                    stop_requested: Callable[[], bool] | None = None,
                    agree: Callable[[bool, bool], tuple[bool, bool]] | None = None) -> EpochResult:
    """One pass over ``loader`` (batches of image (N, 3, H, W) float32, mask (N, H, W) int64).

    Args:
        step: optimizer steps of the run before this call (for the schedule).
        clock: seconds of the run so far; when ``schedule.progress`` reaches 1 through the time
            budget, the epoch stops after the current step (``stopped="max_minutes"``).
        on_step: called with (totals so far, the step's loss) after every step.
        totals: the epoch's totals before this call, when it continues a resumed epoch
            (``loader`` then yields the remaining batches only); updated in place.
        stop_requested: checked after every step; True stops the epoch (``stopped="signal"``).
        agree: ``(signal, out_of_time) -> (signal, out_of_time)`` as all processes see them
            (``distributed.Distributed.any``), so that every rank stops after the same step.

    Raises:
        FloatingPointError: the loss is NaN or infinite (the message names the step).
    """
    model.train()
    res = totals if totals is not None else EpochResult()
    res.stopped = None
    first_step, start, seconds = res.steps, time.perf_counter(), res.seconds
    for batch in loader:
        schedule.apply(optimizer, step + res.steps - first_step, clock())
        x = ctx.images(batch)
        y = batch["mask"].to(ctx.device, non_blocking=True)
        with ctx.autocast():
            loss = loss_fn(model(x), y)
        value = loss.item()  # the step's one host-device sync, shared by the check and the logs
        if not math.isfinite(value):
            raise FloatingPointError(f"loss is {value} at step {step + res.steps - first_step + 1}")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        res.steps += 1
        res.images += x.shape[0]
        res.loss_sum += value * x.shape[0]
        res.seconds = seconds + time.perf_counter() - start
        if on_step:
            on_step(res, value)
        signal = stop_requested is not None and stop_requested()
        late = bool(schedule.max_seconds) and clock() >= schedule.max_seconds
        if agree is not None:  # several processes: all stop after the same step
            signal, late = agree(signal, late)
        if signal:
            res.stopped = "signal"
            break
        if late:
            res.stopped = "max_minutes"
            break
    res.seconds = seconds + time.perf_counter() - start
    return res


@dataclass
class EvalResult:
    """Scores of one split, the mean loss (None without a loss), image count and seconds."""

    scores: SegmentationScores
    loss: float | None
    images: int
    seconds: float
    matrix: ConfusionMatrix = field(repr=False, default=None)


@torch.inference_mode()
def evaluate(model: nn.Module, loader, num_classes: int, ignore_index: int, ctx: StepContext,
             loss_fn: nn.Module | None = None, on_batch: Callable[[int], None] | None = None,
             stop_requested: Callable[[], bool] | None = None, per_image: bool = False,
             on_predictions: Callable[[torch.Tensor, torch.Tensor], None] | None = None) -> EvalResult | None:
    """Predict every batch (argmax over classes) and accumulate one confusion matrix on the device.

    Used both for validation during training and by ``segcli eval``, so both give the same numbers.
    Padded pixels carry ``ignore_index`` in the mask and are not counted. Returns None when
    ``stop_requested()`` became True between two batches. ``per_image`` also keeps a matrix per
    image (for the per-image protocol of ``metrics.protocols``). ``on_predictions(pred, target)``
    receives every batch's ``(N, H, W)`` int64 predictions and targets (e.g. for HD95).
    """
    model.eval()
    matrix = ConfusionMatrix(num_classes, ignore_index, device=ctx.device, per_image=per_image)
    start, total, images = time.perf_counter(), 0.0, 0
    for batch in loader:
        x = ctx.images(batch)
        y = batch["mask"].to(ctx.device, non_blocking=True)
        with ctx.autocast():
            logits = forward_at_scale(model, x, ctx.eval_scale)
        if loss_fn is not None:
            total += loss_fn(logits.float(), y).item() * x.shape[0]
        pred = logits.argmax(1)
        matrix.update(pred, y)
        if on_predictions is not None:
            on_predictions(pred, y)
        images += x.shape[0]
        if on_batch:
            on_batch(x.shape[0])
        if stop_requested is not None and stop_requested():
            return None
    return EvalResult(matrix.compute(), total / images if loss_fn is not None and images else None,
                      images, time.perf_counter() - start, matrix)
