"""``segcli bench``: throughput of segcli's engine against the hand-written PyTorch loop it
replaces.

For the composed config (model, loss, batch size, precision, memory format), in one process:

- ``train``: images/s of ``engine.train_one_epoch`` and of a minimal hand-written loop with the
  same settings (``reference``), and of the plain eager float32 channels-first loop a user would
  write (``naive``), on random crops of ``--crop`` pixels;
- ``eval``: images/s of ``inference.loop.evaluate`` (inference_mode, confusion matrix on the device)
  and of the same two hand-written loops (no_grad, argmax, one bincount per batch), on whole images;
- ``loader``: images/s of the training DataLoader alone (decoding and augmentation in workers);
- ``metrics``: confusion-matrix updates/s of ``metrics.confusion.ConfusionMatrix`` and of
  torchmetrics' ``MulticlassJaccardIndex`` on the same random (N, H, W) predictions (when
  torchmetrics is installed).

Model steps run on batches taken from the loader beforehand and cycled, so the three loops see the
same tensors and the data pipeline is measured on its own. Each timed phase runs for ``seconds``
after one warm-up step; engine, reference and naive loops alternate ``repeats`` times, and the
median and the min..max spread are reported (identical CPU runs differ by up to 15% here).
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass

import torch

from segcli.config import run_seed
from segcli.data.datasets import build_datasets, input_normalization
from segcli.data.loaders import make_loader
from segcli.data.settings import DatasetSettings
from segcli.errors import SegcliError
from segcli.inference.loop import evaluate
from segcli.losses.build import build_loss
from segcli.metrics.confusion import ConfusionMatrix
from segcli.models.build import build_model, model_label
from segcli.models.classical import ClassicalModel
from segcli.runtime import StepContext, seed_everything, step_context
from segcli.training.engine import Budget, TrainStep, train_one_epoch
from segcli.training.optim import LrSchedule, build_optimizer
from segcli.training.settings import TrainerSettings


class TimedBatches:
    """Cycles ``batches``: ``warmup`` batches first, then more until ``seconds`` have passed since
    the first timed one was asked for (``start``, ``time.perf_counter`` seconds)."""

    def __init__(self, batches: list[dict], seconds: float, warmup: int = 1) -> None:
        self.batches, self.seconds, self.warmup, self.start = batches, seconds, warmup, None

    def __iter__(self) -> Iterator[dict]:
        it = itertools.cycle(self.batches)
        for _ in range(self.warmup):
            yield next(it)
        self.start = time.perf_counter()
        while time.perf_counter() - self.start < self.seconds:
            yield next(it)


def _rate(run: Callable[[Iterator[dict]], int], batches: list[dict], seconds: float, sync) -> float:
    """images/s of ``run(batches)``; ``run`` returns the images it processed after the warm-up
    batch."""
    timed = TimedBatches(batches, seconds)
    images = run(iter(timed))
    sync()
    return images / (time.perf_counter() - timed.start)


@dataclass
class Parts:
    """What the timed loops share: the model, loss, optimizer and device context of the config, the
    cycled train and eval batches, and the class count and ignore index."""

    model: torch.nn.Module
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    ctx: StepContext
    train_batches: list[dict]
    eval_batches: list[dict]
    num_classes: int
    ignore_index: int

    def memory_format(self, channels_last: bool) -> None:
        self.model.to(
            memory_format=torch.channels_last if channels_last else torch.contiguous_format
        )

    def engine_train(self, batches: Iterator[dict]) -> int:
        """images trained by ``engine.train_one_epoch`` after the warm-up batch."""
        self.memory_format(self.ctx.channels_last)
        step = TrainStep(
            self.model, self.loss_fn, self.optimizer, LrSchedule("constant", 10**9), self.ctx
        )
        return (
            train_one_epoch(step, batches, Budget(None)).images
            - self.train_batches[0]["image"].shape[0]
        )

    def engine_eval(self, batches: Iterator[dict]) -> int:
        """images scored by ``inference.loop.evaluate`` after the warm-up batch."""
        self.memory_format(self.ctx.channels_last)
        ev = evaluate(self.model, batches, self.num_classes, self.ignore_index, self.ctx)
        return ev.images - self.eval_batches[0]["image"].shape[0]

    def hand_loop(
        self, train: bool, channels_last: bool, autocast: bool
    ) -> Callable[[Iterator[dict]], int]:
        """The loop a user writes by hand: train (forward, loss, backward, step) or eval (no_grad,
        argmax, one bincount per batch), with or without channels_last and autocast; it returns
        the images after the warm-up batch."""

        def run(batches: Iterator[dict]) -> int:
            self.memory_format(channels_last)
            self.model.train(train)
            n = self.num_classes
            matrix, images = torch.zeros(n * n, dtype=torch.int64, device=self.ctx.device), 0
            with torch.set_grad_enabled(train):
                for i, batch in enumerate(batches):
                    x = batch["image"].to(self.ctx.device, non_blocking=True)
                    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
                    y = batch["mask"].to(self.ctx.device, non_blocking=True)
                    with torch.autocast(
                        self.ctx.device.type,
                        dtype=self.ctx.amp_dtype,
                        enabled=autocast and self.ctx.amp_dtype is not None,
                    ):
                        logits = self.model(x)
                    loss = self.loss_fn(logits.float(), y) if train else None
                    if train:
                        self.optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                        self.optimizer.step()
                    else:
                        keep = y != self.ignore_index
                        matrix += torch.bincount(
                            y[keep] * n + logits.argmax(1)[keep], minlength=n * n
                        )
                    images += x.shape[0] if i else 0
            return images

        return run


def _loader_rate(loader, seconds: float) -> tuple[float, list[dict]]:
    """images/s of the training loader alone after its first batch (worker start-up excluded), and
    up to 4 of its batches for the model loops."""
    loader.sampler.set_epoch(1)
    it = iter(loader)
    batches = [next(it) for _ in range(min(4, len(loader)))]
    start, images = time.perf_counter(), 0
    for epoch in itertools.count(2):
        for batch in it:
            images += batch["image"].shape[0]
            if time.perf_counter() - start >= seconds:
                return images / (time.perf_counter() - start), batches
        loader.sampler.set_epoch(epoch)
        it = iter(loader)


def _prepare(cfg: Mapping, seconds: float) -> tuple[Parts, float, dict]:
    """The parts of the composed config, the loader's images/s and the settings to report."""
    trainer, seed = TrainerSettings.from_config(cfg["trainer"]), run_seed(cfg)
    seed_everything(seed)
    settings = DatasetSettings.from_config(cfg["dataset"])
    norm = input_normalization(settings, seed)
    info, data, counts = build_datasets(cfg, ("train", "val"), seed, normalization=norm)
    ctx = step_context(asdict(trainer), DatasetSettings.from_config(cfg["dataset"]).scale)
    batch_size, workers = trainer.batch_size, trainer.num_workers
    loader = make_loader(
        data["train"], batch_size, True, workers, info.ignore_index, seed, ctx.device.type == "cuda"
    )
    eval_loader = make_loader(
        data["val"], trainer.eval_batch_size, False, 0, info.ignore_index, seed
    )
    loader_rate, train_batches = _loader_rate(loader, seconds)
    eval_batches = list(itertools.islice(iter(eval_loader), 2))
    if (cfg["model"].get("cascade") or {}).get("from"):
        raise SegcliError("model.cascade.from: segcli bench times one model; bench stage 2 alone")
    model = build_model(cfg["model"], info.num_classes, len(norm["mean"])).to(ctx.device)
    if isinstance(model, ClassicalModel):
        raise SegcliError(
            f"model.arch={cfg['model']['arch']}: segcli bench times optimizer steps; this baseline "
            "has none (its train and eval images/s are in the run's metrics.jsonl)"
        )
    loss_fn = build_loss(cfg["loss"], info.num_classes, counts.get("train")).to(ctx.device)
    parts = Parts(
        model,
        loss_fn,
        build_optimizer(cfg["optimizer"], model.parameters()),
        ctx,
        train_batches,
        eval_batches,
        info.num_classes,
        info.ignore_index,
    )
    settings = {
        "model": model_label(cfg["model"]),
        "device": str(ctx.device),
        "amp": ctx.precision.name,
        "amp_reason": ctx.precision.reason,
        "channels_last": ctx.channels_last,
        "batch_size": batch_size,
        "eval_batch_size": trainer.eval_batch_size,
        "crop": list(train_batches[0]["image"].shape[-2:]),
        "eval_size": list(eval_batches[0]["image"].shape[-2:]),
        "num_workers": workers,
    }
    return parts, loader_rate, settings


def benchmark(cfg: Mapping, seconds: float = 20.0, repeats: int = 2, crop: int = 256) -> dict:
    """Measure (see the module docstring). Returns images/s (floats) under the keys
    ``train_images_per_s``, ``reference_train_images_per_s``, ``naive_train_images_per_s``, the same
    for ``eval``, ``loader_images_per_s``, ``metric_updates_per_s``, ``torchmetrics_updates_per_s``
    (None without torchmetrics), the ratios, ``spread`` (min, max per measurement) and ``settings``.

    Raises:
        SegcliError: bad arguments, or bad config or data (as ``segcli train``).
    """
    if seconds <= 0 or repeats < 1 or crop < 32:
        raise SegcliError("expected --seconds > 0, --repeats >= 1 and --crop >= 32")
    parts, loader_rate, settings = _prepare(cfg, seconds)
    ctx = parts.ctx
    sync = torch.cuda.synchronize if ctx.device.type == "cuda" else (lambda: None)
    loops = {
        "train": (parts.engine_train, parts.train_batches),
        "reference_train": (parts.hand_loop(True, ctx.channels_last, True), parts.train_batches),
        "naive_train": (parts.hand_loop(True, False, False), parts.train_batches),
        "eval": (parts.engine_eval, parts.eval_batches),
        "reference_eval": (parts.hand_loop(False, ctx.channels_last, True), parts.eval_batches),
        "naive_eval": (parts.hand_loop(False, False, False), parts.eval_batches),
    }
    measured: dict[str, list[float]] = {k: [] for k in loops}
    for _ in range(repeats):  # alternate, so a slow minute of the machine hits all of them
        for name, (run, batches) in loops.items():
            measured[name].append(_rate(run, batches, seconds, sync))
    metric_rate, torchmetrics_rate = _metric_rates(
        parts.num_classes,
        parts.ignore_index,
        parts.eval_batches,
        ctx.device,
        min(seconds, 5.0),
        ConfusionMatrix,
        sync,
    )
    med = {k: statistics.median(v) for k, v in measured.items()}
    return {
        **{f"{k}_images_per_s": v for k, v in med.items()},
        "loader_images_per_s": loader_rate,
        "metric_updates_per_s": metric_rate,
        "torchmetrics_updates_per_s": torchmetrics_rate,
        "train_vs_reference": med["train"] / med["reference_train"],
        "eval_vs_reference": med["eval"] / med["reference_eval"],
        "train_vs_naive": med["train"] / med["naive_train"],
        "eval_vs_naive": med["eval"] / med["naive_eval"],
        "loader_vs_train": loader_rate / med["train"],
        "spread": {k: [min(v), max(v)] for k, v in measured.items()},
        "settings": {
            **settings,
            "seconds": seconds,
            "repeats": repeats,
            "threads": torch.get_num_threads(),
        },
    }


def _metric_rates(
    num_classes: int,
    ignore_index: int,
    batches: list[dict],
    device,
    seconds: float,
    matrix_cls,
    sync,
) -> tuple[float, float | None]:
    """Updates/s of segcli's confusion matrix and of torchmetrics' multiclass Jaccard index on the
    eval batches' masks and random predictions (same tensors for both)."""
    target = batches[0]["mask"].to(device)
    pred = torch.randint(0, num_classes, target.shape, device=device)

    def rate(update) -> float:
        update()
        sync()
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            update()
            n += 1
        sync()
        return n / (time.perf_counter() - start)

    matrix = matrix_cls(num_classes, ignore_index, device=device)
    ours = rate(lambda: matrix.update(pred, target))
    try:
        from torchmetrics.classification import MulticlassJaccardIndex
    except ImportError:
        return ours, None
    metric = MulticlassJaccardIndex(num_classes, ignore_index=ignore_index).to(device)
    return ours, rate(lambda: metric.update(pred, target))
