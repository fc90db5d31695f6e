"""``segcli bench``: throughput of segcli's engine against the hand-written PyTorch loop it replaces.

For the composed config (model, loss, batch size, precision, memory format), in one process:

- ``train``: images/s of ``engine.train_one_epoch`` and of a minimal hand-written loop with the
  same settings (``reference``), and of the plain eager float32 channels-first loop a user would
  write (``naive``), on random crops of ``--crop`` pixels;
- ``eval``: images/s of ``engine.evaluate`` (inference_mode, confusion matrix on the device) and
  of the same two hand-written loops (no_grad, argmax, one bincount per batch), on whole images;
- ``loader``: images/s of the training DataLoader alone (decoding and augmentation in workers);
- ``metrics``: confusion-matrix updates/s of ``metrics.ConfusionMatrix`` and of torchmetrics'
  ``MulticlassJaccardIndex`` on the same random (N, H, W) predictions (when torchmetrics is installed).

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

import torch

from segcli.errors import SegcliError


class TimedBatches:
    """Cycles ``batches``: ``warmup`` batches first, then more until ``seconds`` have passed since the
    first timed one was asked for (``start``, ``time.perf_counter`` seconds)."""

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
    """images/s of ``run(batches)``; ``run`` returns the images it processed after the warm-up batch."""
    timed = TimedBatches(batches, seconds)
    images = run(iter(timed))
    sync()
    return images / (time.perf_counter() - timed.start)


def benchmark(cfg: Mapping, seconds: float = 20.0, repeats: int = 2, crop: int = 256) -> dict:
    """Measure (see the module docstring). Returns images/s (floats) under the keys
    ``train_images_per_s``, ``reference_train_images_per_s``, ``naive_train_images_per_s``, the same
    for ``eval``, ``loader_images_per_s``, ``metric_updates_per_s``, ``torchmetrics_updates_per_s``
    (None without torchmetrics), the ratios, ``spread`` (min, max per measurement) and ``settings``.

    Raises:
        SegcliError: bad config or data (as ``segcli train``).
    """
    from segcli.data import make_loader
    from segcli.engine import LrSchedule, evaluate, train_one_epoch
    from segcli.jobs import build_datasets, build_optimizer, run_seed, seed_everything, step_context
    from segcli.losses import build_loss
    from segcli.metrics import ConfusionMatrix
    from segcli.models import build_model

    if seconds <= 0 or repeats < 1 or crop < 32:
        raise SegcliError("expected --seconds > 0, --repeats >= 1 and --crop >= 32")
    trainer, seed = cfg["trainer"], run_seed(cfg)
    seed_everything(seed)
    info, data, counts = build_datasets(cfg, ("train", "val"), seed)
    ctx = step_context(trainer, cfg["dataset"].get("scale", 1.0))
    batch_size, workers = int(trainer["batch_size"]), int(trainer["num_workers"])
    loader = make_loader(data["train"], batch_size, True, workers, info.ignore_index, seed, ctx.device.type == "cuda")
    eval_loader = make_loader(data["val"], int(trainer["eval_batch_size"]), False, 0, info.ignore_index, seed)
    sync = torch.cuda.synchronize if ctx.device.type == "cuda" else (lambda: None)

    # the data pipeline alone: images/s after the first batch (worker start-up excluded)
    loader.sampler.set_epoch(1)
    it = iter(loader)
    train_batches = [next(it) for _ in range(min(4, len(loader)))]
    start, images = time.perf_counter(), 0
    for epoch in itertools.count(2):
        for batch in it:
            images += batch["image"].shape[0]
            if time.perf_counter() - start >= seconds:
                break
        if time.perf_counter() - start >= seconds:
            break
        loader.sampler.set_epoch(epoch)
        it = iter(loader)
    loader_rate = images / (time.perf_counter() - start)
    eval_batches = list(itertools.islice(iter(eval_loader), 2))

    model = build_model(cfg["model"], info.num_classes).to(ctx.device)
    loss_fn = build_loss(cfg["loss"], info.num_classes, counts.get("train")).to(ctx.device)
    optimizer = build_optimizer(cfg["optimizer"], model.parameters())
    schedule = LrSchedule("constant", 10**9)

    def memory_format(channels_last: bool) -> None:
        model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)

    def engine_train(batches: Iterator[dict]) -> int:
        memory_format(ctx.channels_last)
        res = train_one_epoch(model, batches, loss_fn, optimizer, ctx, schedule, 0, lambda: 0.0)
        return res.images - batch_size  # the warm-up step is not counted

    def hand_train(channels_last: bool, autocast: bool) -> Callable[[Iterator[dict]], int]:
        def run(batches: Iterator[dict]) -> int:
            memory_format(channels_last)
            model.train()
            images = 0
            for i, batch in enumerate(batches):
                x = batch["image"].to(ctx.device, non_blocking=True)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = batch["mask"].to(ctx.device, non_blocking=True)
                with torch.autocast(ctx.device.type, dtype=ctx.amp_dtype, enabled=autocast and ctx.amp_dtype is not None):
                    loss = loss_fn(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                images += x.shape[0] if i else 0
            return images
        return run

    def engine_eval(batches: Iterator[dict]) -> int:
        memory_format(ctx.channels_last)
        ev = evaluate(model, batches, info.num_classes, info.ignore_index, ctx)
        return ev.images - eval_batches[0]["image"].shape[0]

    def hand_eval(channels_last: bool, autocast: bool) -> Callable[[Iterator[dict]], int]:
        def run(batches: Iterator[dict]) -> int:
            memory_format(channels_last)
            model.eval()
            matrix = torch.zeros(info.num_classes ** 2, dtype=torch.int64, device=ctx.device)
            images = 0
            with torch.no_grad():
                for i, batch in enumerate(batches):
                    x = batch["image"].to(ctx.device, non_blocking=True)
                    if channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    y = batch["mask"].to(ctx.device, non_blocking=True)
                    with torch.autocast(ctx.device.type, dtype=ctx.amp_dtype,
                                        enabled=autocast and ctx.amp_dtype is not None):
                        pred = model(x).argmax(1)
                    keep = y != info.ignore_index
                    matrix += torch.bincount(y[keep] * info.num_classes + pred[keep], minlength=info.num_classes ** 2)
                    images += x.shape[0] if i else 0
            return images
        return run

    measured: dict[str, list[float]] = {k: [] for k in ("train", "reference_train", "naive_train",
                                                         "eval", "reference_eval", "naive_eval")}
    for _ in range(repeats):  # alternate, so a slow minute of the machine hits all of them
        measured["train"].append(_rate(engine_train, train_batches, seconds, sync))
        measured["reference_train"].append(_rate(hand_train(ctx.channels_last, True), train_batches, seconds, sync))
        measured["naive_train"].append(_rate(hand_train(False, False), train_batches, seconds, sync))
        measured["eval"].append(_rate(engine_eval, eval_batches, seconds, sync))
        measured["reference_eval"].append(_rate(hand_eval(ctx.channels_last, True), eval_batches, seconds, sync))
        measured["naive_eval"].append(_rate(hand_eval(False, False), eval_batches, seconds, sync))

    metric_rate, torchmetrics_rate = _metric_rates(info.num_classes, info.ignore_index, eval_batches, ctx.device,
                                                   min(seconds, 5.0), ConfusionMatrix, sync)
    med = {k: statistics.median(v) for k, v in measured.items()}
    shape = tuple(eval_batches[0]["image"].shape[-2:])
    return {
        "train_images_per_s": med["train"], "reference_train_images_per_s": med["reference_train"],
        "naive_train_images_per_s": med["naive_train"], "eval_images_per_s": med["eval"],
        "reference_eval_images_per_s": med["reference_eval"], "naive_eval_images_per_s": med["naive_eval"],
        "loader_images_per_s": loader_rate, "metric_updates_per_s": metric_rate,
        "torchmetrics_updates_per_s": torchmetrics_rate,
        "train_vs_reference": med["train"] / med["reference_train"], "eval_vs_reference": med["eval"] / med["reference_eval"],
        "train_vs_naive": med["train"] / med["naive_train"], "eval_vs_naive": med["eval"] / med["naive_eval"],
        "loader_vs_train": loader_rate / med["train"],
        "spread": {k: [min(v), max(v)] for k, v in measured.items()},
        "settings": {"model": f"{cfg['model']['arch']}-{cfg['model']['encoder_name']}", "device": str(ctx.device),
                     "amp": str(ctx.amp_dtype).replace("torch.", "") if ctx.amp_dtype else "float32",
                     "channels_last": ctx.channels_last, "batch_size": batch_size,
                     "eval_batch_size": int(trainer["eval_batch_size"]), "crop": list(train_batches[0]["image"].shape[-2:]),
                     "eval_size": list(shape), "num_workers": workers, "seconds": seconds, "repeats": repeats,
                     "threads": torch.get_num_threads()},
    }


def _metric_rates(num_classes: int, ignore_index: int, batches: list[dict], device, seconds: float,
                  matrix_cls, sync) -> tuple[float, float | None]:
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
