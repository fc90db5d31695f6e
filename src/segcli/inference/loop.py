"""The evaluation loop that validation during training and ``segcli eval`` share (so the same
checkpoint gives the same numbers either way), and ``forward_at_scale``, the plain forward pass at
``dataset.scale``. It takes built objects (model, loader, loss), never a config.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from segcli.metrics.confusion import ConfusionMatrix, SegmentationScores
from segcli.runtime import StepContext


def forward_at_scale(
    model: nn.Module, x: torch.Tensor, scale: float = 1.0, divisor: int = 32
) -> torch.Tensor:
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
    small = F.interpolate(
        x, size=(sh, sw), mode="bilinear", align_corners=False, antialias=scale < 1
    )
    small = F.pad(small, (0, -sw % divisor, 0, -sh % divisor))
    if x.is_contiguous(memory_format=torch.channels_last):
        small = small.contiguous(memory_format=torch.channels_last)
    logits = model(small)[..., :sh, :sw]
    return F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)


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


@dataclass
class _Tally:
    """What ``evaluate`` adds up batch by batch: the confusion matrix, the loss summed over images,
    the image count and (per image) the sample names."""

    matrix: ConfusionMatrix
    per_image: bool
    loss_total: float = 0.0
    images: int = 0
    names: list[str] = field(default_factory=list)

    def add(self, pred: torch.Tensor, y: torch.Tensor, batch: dict) -> None:
        """``pred``, ``y``: ``(N, H, W)`` int64 predictions and targets of ``batch``."""
        self.matrix.update(pred, y)
        n = pred.shape[0]
        self.images += n
        if self.per_image:
            self.names += list(batch.get("name") or [f"#{self.images - n + i}" for i in range(n)])

    def result(self, with_loss: bool, seconds: float) -> EvalResult:
        """The ``EvalResult``: the mean loss when ``with_loss`` (over at least one image)."""
        loss = self.loss_total / self.images if with_loss and self.images else None
        return EvalResult(
            self.matrix.compute(), loss, self.images, seconds, self.matrix, self.names
        )


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader,
    num_classes: int,
    ignore_index: int,
    ctx: StepContext,
    loss_fn: nn.Module | None = None,
    on_batch: Callable[[int], None] | None = None,
    stop_requested: Callable[[], bool] | None = None,
    per_image: bool = False,
    on_predictions: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
    infer: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
    on_scores: Callable[[torch.Tensor, dict], None] | None = None,
) -> EvalResult | None:
    """Predict every batch (argmax over classes) and accumulate one confusion matrix on the device.

    Used both for validation during training and by ``segcli eval``, so both give the same numbers.
    Padded pixels carry ``ignore_index`` in the mask and are not counted. Returns None when
    ``stop_requested()`` became True between two batches. ``per_image`` also keeps a matrix per
    image (for the per-image protocol of ``metrics.confusion.protocols``, and ``segcli compare``)
    and the samples' names (batch ``"name"``; ``#INDEX`` where a batch has none).
    ``on_predictions(pred, target)`` receives every batch's ``(N, H, W)`` int64 predictions and
    targets (e.g. for HD95). ``infer(model, x) -> (N, C, H, W)`` class scores replaces the plain
    forward pass (``forward_at_scale`` at ``ctx.eval_scale``; see inference.modes); with ``loss_fn``
    they must be logits. ``on_scores(scores, batch)`` receives every batch's ``(N, C, H, W)`` scores
    (padded) and the batch.
    """
    model.eval()
    matrix = ConfusionMatrix(num_classes, ignore_index, device=ctx.device, per_image=per_image)
    tally, start = _Tally(matrix, per_image), time.perf_counter()
    for batch in loader:
        x = ctx.images(batch)
        y = batch["mask"].to(ctx.device, non_blocking=True)
        with ctx.autocast():
            logits = (
                infer(model, x) if infer is not None else forward_at_scale(model, x, ctx.eval_scale)
            )
        if loss_fn is not None:
            tally.loss_total += loss_fn(logits.float(), y).item() * x.shape[0]
        if on_scores is not None:
            on_scores(logits, batch)
        pred = logits.argmax(1)
        tally.add(pred, y, batch)
        if on_predictions is not None:
            on_predictions(pred, y)
        if on_batch:
            on_batch(x.shape[0])
        if stop_requested is not None and stop_requested():
            return None
    return tally.result(loss_fn is not None, time.perf_counter() - start)
