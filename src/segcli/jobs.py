"""The jobs behind `segcli train` and `segcli eval`: the only place that turns a config into
objects (through the ``build_*`` functions of data, augment, models and losses) and hands
them to the engine. Configs arrive here as plain dicts, resolved.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from segcli import distributed, report
from segcli.augment import IMAGENET_MEAN, IMAGENET_STD, build_transforms
from segcli.data import (SPLITS, DatasetInfo, PairedFolderDataset, check_pairs, find_split_files,
                         ClassPixels, make_loader, mask_table)
from segcli.engine import (EpochResult, LrSchedule, StepContext, evaluate, resolve_amp, resolve_device,
                           train_one_epoch)
from segcli.errors import RunInterrupted, SegcliError
from segcli.interrupts import StopSignals
from segcli.losses import build_loss, class_weights
from segcli.metrics import PROTOCOLS, protocols
from segcli.loggers import CsvLogger, build_logger, closed_on_error
from segcli.models import build_model, load_error_detail
from segcli.plot import save_samples
from segcli.resume import (Progress, absolute_root, capture_rng, config_changes, flatten, format_value, restore_rng,
                           resume_config, saved_config)
from segcli.run import CHECKPOINT_FORMAT, RunDir, load_checkpoint, write_json
from segcli.synthetic import SyntheticDataset


def run_seed(cfg: Mapping) -> int:
    """The run's seed: ``trainer.seed`` (which defaults to the root ``seed``)."""
    return int(cfg["trainer"].get("seed", cfg["seed"]))


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# (dotted key, lowest allowed value, whether null is allowed, whether it must be an integer)
NUMBER_RULES = (("trainer.epochs", 1, False, True), ("trainer.batch_size", 1, False, True),
                ("trainer.eval_batch_size", 1, False, True), ("trainer.num_workers", 0, False, True),
                ("trainer.val_every", 1, False, True), ("trainer.max_minutes", 1e-9, True, False),
                ("trainer.checkpoint_minutes", 1e-9, True, False), ("trainer.grad_clip", 1e-12, True, False),
                ("optimizer.lr", 1e-12, False, False), ("dataset.num_classes", 1, False, True),
                ("dataset.scale", 1e-3, False, False))


def check_config(cfg: Mapping) -> None:
    """Check the numbers of a resolved config before anything is built.

    Raises:
        SegcliError: the first value of ``NUMBER_RULES`` that is not a number, is too small, or
            is not an integer where one is needed; names the key and what was expected.
    """
    for key, low, nullable, integer in NUMBER_RULES:
        section, name = key.split(".")
        if name not in cfg.get(section, {}):
            continue
        value = cfg[section][name]
        if value is None and nullable:
            continue
        kind = "an integer" if integer else "a number"
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= low
        if not ok or (integer and not float(value).is_integer()):
            bound = f">= {low}" if integer or low >= 1 else "> 0"
            raise SegcliError(f"{key}={value}: expected {kind} {bound}" + (" or null" if nullable else ""))


def build_datasets(cfg: Mapping, splits: Sequence[str], seed: int, run: RunDir | None = None,
                   augmented: Sequence[str] = ("train",)) -> tuple[DatasetInfo, dict, dict]:
    """Datasets of the given splits; those in ``augmented`` get the ``train`` pipeline, the
    others the ``eval`` one.

    Returns:
        (class info, {split: Dataset}, {split: data.SplitCheck} for folder data).

    Raises:
        SegcliError: any data problem (see data.py), or a split the dataset does not have.
    """
    dcfg, aug = cfg["dataset"], cfg["augmentation"]
    info = DatasetInfo.from_config(dcfg)
    transforms = {s: build_transforms(aug.get("train" if s in augmented else "eval"), info.ignore_index,
                                      scale=float(dcfg.get("scale", 1.0)) if s in augmented else 1.0)
                  for s in splits}
    seeds = {s: seed if s in augmented else None for s in splits}
    if dcfg["kind"] == "synthetic":
        datasets = {s: SyntheticDataset(dcfg[f"num_{s}"], dcfg["image_size"], s, transforms[s], seeds[s])
                    for s in splits}
        return info, datasets, {s: d.class_pixels() for s, d in datasets.items() if s == "train"}
    if dcfg["kind"] != "folder":
        raise SegcliError(f"dataset.kind={dcfg['kind']}: expected folder or synthetic")
    on_bad = str(dcfg.get("on_bad_file") or "error")
    if on_bad not in ("error", "skip"):
        raise SegcliError(f"dataset.on_bad_file={on_bad}: expected error or skip")
    unpaired: list[str] | None = [] if on_bad == "skip" else None
    files = find_split_files(dcfg, seed, unpaired)
    if run is not None and run.writer and files.random_split:
        write_json(run.path / "split.json", files.as_json())
    lut = mask_table(dcfg, info.colors)
    datasets, counts = {}, {}
    for s in splits:
        if s not in files.pairs:
            raise SegcliError(f"{dcfg['root']}: the dataset has no '{s}' split (found {', '.join(files.pairs)})")
        counts[s] = check_pairs(files.pairs[s], lut, info.num_classes, skip_bad=on_bad == "skip")
        datasets[s] = PairedFolderDataset(counts[s].pairs, lut, transforms[s], seeds[s])
        if counts[s].problems:
            report.warning(f"dataset.on_bad_file=skip: left out {len(counts[s].problems)} bad pair(s) of the "
                           f"{s} split; the first: {counts[s].problems[0]}")
    if unpaired:
        report.warning(f"dataset.on_bad_file=skip: left out {len(unpaired)} file(s) without a partner; "
                       f"the first: {unpaired[0]}")
    return info, datasets, counts


def check_dataset(cfg: Mapping) -> dict:
    """Every dataset check of ``build_datasets`` on every split, collecting all problems instead
    of stopping at the first (``segcli data check``). Nothing is trained or written.

    Returns:
        ``{"dataset": root or "synthetic", "class_names": [...], "splits": {split: {"images": int
        (good pairs), "bad": int, "sizes": {"HxW": count}, "class_pixels": [C ints]}},
        "problems": [one line each], "notes": [...]}``.

    Raises:
        SegcliError: problems that stop any check: a missing root or folder, bad class names.
    """
    dcfg = cfg["dataset"]
    info = DatasetInfo.from_config(dcfg)
    out: dict = {"dataset": dcfg.get("root") or dcfg["kind"], "class_names": info.class_names, "splits": {},
                 "problems": [], "notes": []}
    if dcfg["kind"] == "synthetic":
        for split in SPLITS:
            ds = SyntheticDataset(dcfg[f"num_{split}"], dcfg["image_size"], split, None)
            out["splits"][split] = {"images": len(ds), "bad": 0, "sizes": {"x".join(map(str, ds.size)): len(ds)},
                                    "class_pixels": ds.class_pixels().pixels.tolist()}
    else:
        files = find_split_files(dcfg, run_seed(cfg), out["problems"])
        lut = mask_table(dcfg, info.colors)
        for split, pairs in files.pairs.items():
            found = check_pairs(pairs, lut, info.num_classes, skip_bad=True)
            out["problems"] += found.problems
            out["splits"][split] = {"images": len(found.pairs), "bad": len(found.problems),
                                    "sizes": {f"{h}x{w}": n for (h, w), n in sorted(found.sizes.items())},
                                    "class_pixels": found.pixels.tolist()}
        if files.random_split:
            out["notes"].append(f"no split folders: a seeded random split (dataset.val_fraction="
                                f"{dcfg.get('val_fraction')}) is made when training")
    train = out["splits"].get("train")
    if train:
        absent = [n for n, c in zip(info.class_names, train["class_pixels"]) if c == 0]
        if absent:
            out["notes"].append(f"classes with no pixels in the train split: {', '.join(absent)}")
    return out


def step_context(trainer: Mapping, scale: float = 1.0, local_rank: int | None = None) -> StepContext:
    """Device, autocast dtype and memory format from the ``trainer`` group; ``scale`` is
    ``dataset.scale``, the resolution factor at which evaluation runs the model. ``local_rank``
    (torchrun): a CUDA device becomes ``cuda:LOCAL_RANK``."""
    device = resolve_device(str(trainer.get("device", "auto")))
    if local_rank is not None and device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return StepContext(device, resolve_amp(trainer.get("amp", "auto"), device), bool(trainer.get("channels_last")),
                       float(scale))


def build_optimizer(cfg: Mapping, params) -> torch.optim.Optimizer:
    """torch.optim.AdamW / Adam / SGD from the ``optimizer`` group."""
    name, lr, wd = cfg["name"], float(cfg["lr"]), float(cfg.get("weight_decay", 0.0))
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, betas=tuple(cfg.get("betas", (0.9, 0.999))))
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, betas=tuple(cfg.get("betas", (0.9, 0.999))))
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd, momentum=float(cfg.get("momentum", 0.9)),
                               nesterov=bool(cfg.get("nesterov", False)))
    raise SegcliError(f"optimizer.name={name}: expected adamw, adam or sgd")


def out_of_memory_error(exc: BaseException, cfg: Mapping, where: str) -> SegcliError | None:
    """A one-line SegcliError for a CUDA or CPU out-of-memory ``exc``, else None."""
    text = str(exc)
    if not (isinstance(exc, torch.OutOfMemoryError) or "can't allocate memory" in text
            or "out of memory" in text.lower()):
        return None
    trainer = cfg["trainer"]
    crop = cfg["dataset"].get("crop_size")
    return SegcliError(f"out of memory during {where} (trainer.batch_size={trainer['batch_size']}, "
                       f"trainer.eval_batch_size={trainer['eval_batch_size']}, dataset.crop_size={crop}): "
                       "try a smaller batch_size or crop_size, dataset.scale=0.5, or trainer.amp=bf16")


@contextmanager
def failure_recorded(run: RunDir):
    """On a SegcliError after the first checkpoint, write summary.json with status "failed" and
    the message (a run that failed before it is removed by the CLI)."""
    try:
        yield
    except SegcliError as exc:
        if run.last.exists():
            run.write_summary({"status": "failed", "error": str(exc)})
        raise


def cached_class_pixels(run: RunDir, found: ClassPixels | None, num_classes: int,
                        resume: bool = False) -> ClassPixels | None:
    """The training split's class statistics of a run, computed once: ``class_pixels.json`` in the run
    dir keeps the pixel counts (and the class weights both balancing schemes give) the run started
    with, so a resumed run weights its loss the same even if the data changed. ``found``: this
    start's counts (None for data without counts); ``resume``: read the saved file if there is one.
    """
    path = run.path / "class_pixels.json"
    if resume and path.is_file():
        saved = json.loads(path.read_text())
        return ClassPixels(np.asarray(saved["pixels"], dtype=np.int64), np.asarray(saved["present"], dtype=np.int64))
    if found is not None and run.writer:
        write_json(path, {"pixels": np.asarray(found.pixels).tolist(), "present": np.asarray(found.present).tolist(),
                          "class_weights": {s: class_weights(s, num_classes, found)
                                            for s in ("median_frequency", "inverse_frequency")}})
    return found


def train(cfg: dict, run_path: Path, resume: bool = False, changes: Mapping | None = None) -> dict:
    """Train, validating each epoch; write the run directory (see run.py). Returns summary.json's dict.

    ``cfg`` is the resolved root config as plain dicts. Stops after ``trainer.epochs`` or when
    ``trainer.max_minutes`` (wall clock, validation included) runs out, whichever comes first.
    Training steps stop one validation's duration (the last one measured) before the budget, so
    that the final validation ends within it; the learning rate anneals to that point.
    ``checkpoints/last.pt`` is written after every epoch and every ``trainer.checkpoint_minutes``.

    With ``resume``, continue from the run's ``last.pt`` (see resume.py); ``changes`` are the
    config changes the resume applied, recorded in summary.json.

    Raises:
        SegcliError: bad data or config, a NaN/inf loss, out of memory.
        RunInterrupted: SIGINT/SIGTERM arrived; last.pt and summary.json ("interrupted") are saved.
    """
    check_config(cfg)
    trainer, seed = cfg["trainer"], run_seed(cfg)
    absolute_root(cfg)  # eval and predict may run from another folder
    if trainer.get("deterministic"):
        torch.use_deterministic_algorithms(True, warn_only=True)
    seed_everything(seed)
    ddp = distributed.CURRENT  # rank 0 of 1 unless torchrun started several processes
    run = RunDir(run_path, writer=ddp.main)
    info, data, counts = build_datasets(cfg, ("train", "val"), seed, run)
    ctx = step_context(trainer, cfg["dataset"].get("scale", 1.0), ddp.local_rank if ddp.enabled else None)
    loaders = {s: make_loader(d, int(trainer["batch_size" if s == "train" else "eval_batch_size"]), s == "train",
                              int(trainer["num_workers"]), info.ignore_index, seed, ctx.device.type == "cuda",
                              ddp.rank, ddp.world)
               for s, d in data.items()}
    if len(data["train"]) == 0 or len(data["val"]) == 0:
        raise SegcliError(f"the dataset has {len(data['train'])} training and {len(data['val'])} validation "
                          "images; expected at least one of each")
    net = build_model(cfg["model"], info.num_classes).to(ctx.device)
    if ctx.channels_last:
        net = net.to(memory_format=torch.channels_last)
    model = net
    if ddp.enabled:
        model = torch.nn.parallel.DistributedDataParallel(net, device_ids=[ctx.device.index] if ctx.device.type == "cuda"
                                                          else None)
    model = torch.compile(model) if trainer.get("compile") else model
    stats = cached_class_pixels(run, counts.get("train"), info.num_classes, resume)
    loss_fn = build_loss(cfg["loss"], info.num_classes, stats).to(ctx.device)
    optimizer = build_optimizer(cfg["optimizer"], net.parameters())
    scaler = torch.amp.GradScaler("cuda") if ctx.amp_dtype == torch.float16 else None
    epochs, batches = int(trainer["epochs"]), len(loaders["train"])
    budget = float(trainer["max_minutes"]) * 60 if trainer.get("max_minutes") else None
    sched = cfg["scheduler"]
    schedule = LrSchedule(sched["name"], epochs * batches, budget, float(sched.get("warmup_fraction", 0)),
                          float(sched.get("power", 0.9)), float(sched.get("min_lr_ratio", 0.0)))
    base = {"format": CHECKPOINT_FORMAT, "config": cfg, "classes": asdict(info),
            "normalization": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}}
    progress = Progress()
    if resume and run.last.is_file():
        progress = restore_training(run.last, net, optimizer, scaler)
        progress.resumes.append({"epoch": progress.epoch, "step": progress.step,
                                 "changes": {k: list(v) for k, v in (changes or {}).items()}})
        run.rewrite_metrics(progress.history)
    elif resume:
        run.rewrite_metrics([])  # stopped before its first checkpoint: start over in the same folder
    if resume:
        (run.path / "summary.json").unlink(missing_ok=True)  # "interrupted" no longer; written again at the end
    run.mark_running()
    if budget is not None:
        schedule.max_seconds = max(budget - progress.val_reserve, 1e-3)
    if progress.stopped_by == "max_minutes" and (budget is None or schedule.max_seconds > progress.elapsed):
        progress.stopped_by = None  # resumed with a larger (or no) time budget: train on
    action = f"resuming at epoch {progress.epoch}, step {progress.step}:" if progress.step else "training"
    report.console.print(f"segcli: {action} {cfg['model']['arch']}-{cfg['model']['encoder_name']} on "
                         f"{len(data['train'])} train / {len(data['val'])} val images, device {ctx.device}, "
                         f"{epochs} epochs" + (f" or {trainer['max_minutes']} min" if budget else ""), highlight=False)
    started, elapsed_before = time.perf_counter(), progress.elapsed
    clock = lambda: elapsed_before + time.perf_counter() - started  # noqa: E731
    every = float(trainer.get("checkpoint_minutes") or 0) * 60
    saved_at = [time.perf_counter()]

    def save_last() -> None:
        progress.elapsed = clock()
        run.save_checkpoint(run.last, {**base, "epoch": progress.epoch - 1, "step": progress.step,
                                       "model": net.state_dict(), "val": progress.last_val,
                                       "optimizer": optimizer.state_dict(),
                                       "scaler": scaler.state_dict() if scaler else None,
                                       "progress": asdict(progress), "rng": capture_rng()})
        saved_at[0] = time.perf_counter()

    def best_checkpoint() -> dict:
        return {**base, "epoch": progress.best_epoch, "step": progress.step, "model": net.state_dict(),
                "val": progress.best}

    if resume and progress.best_epoch and progress.best_epoch == progress.epoch - 1 and not progress.epoch_totals:
        saved = load_checkpoint(run.best).get("epoch") if run.best.is_file() else None
        if saved != progress.best_epoch:  # killed between last.pt and best.pt: the weights are last.pt's
            run.save_checkpoint(run.best, best_checkpoint())

    def interrupted(signals: StopSignals) -> RunInterrupted:
        save_last()
        run.write_summary({"status": "interrupted", "epoch": progress.epoch, "step": progress.step,
                           "resume": f"segcli train --resume {run.path}"})
        return RunInterrupted(signals.exit_code, f"stopped in epoch {progress.epoch} after step {progress.step}; "
                                                 f"checkpoints/last.pt saved. Resume with: segcli train --resume {run.path}")

    logger = build_logger(cfg.get("logger") if ddp.main else None, run.path)
    if resume and isinstance(logger, CsvLogger):
        logger.rewrite(progress.history)
    logger.start(cfg)
    with StopSignals() as signals, failure_recorded(run), closed_on_error(logger):
        while progress.epoch <= epochs and progress.stopped_by is None:
            epoch = progress.epoch
            totals = EpochResult(**{**progress.epoch_totals, "stopped": None})
            progress.epoch_totals = totals.__dict__  # the same object: a mid-epoch save sees the latest totals

            def on_step(res: EpochResult, loss: float) -> None:
                progress.step += 1
                bar.advance(1, f"loss {loss:.4f}")
                if every and time.perf_counter() - saved_at[0] >= every:
                    save_last()

            if totals.steps < batches:
                loaders["train"].sampler.set_epoch(epoch, skip=totals.steps * loaders["train"].batch_size)
                with report.EpochProgress(f"epoch {epoch}/{epochs}", batches, done=totals.steps) as bar:
                    try:
                        train_one_epoch(model, loaders["train"], loss_fn, optimizer, ctx, schedule, progress.step,
                                        clock, scaler, trainer.get("grad_clip"), on_step, totals, signals.requested,
                                        ddp.any if ddp.enabled else None)
                    except FloatingPointError as exc:
                        last = f"; the last good checkpoint is {run.last}" if run.last.exists() else ""
                        raise SegcliError(f"training diverged in epoch {epoch}: {exc} (try a lower optimizer.lr "
                                          f"or trainer.grad_clip=1.0){last}") from None
                    except RuntimeError as exc:
                        raise out_of_memory_error(exc, cfg, f"training epoch {epoch}") or exc from None
            if totals.stopped == "signal":
                raise interrupted(signals)
            out_of_time = totals.stopped == "max_minutes" or (budget is not None and clock() >= schedule.max_seconds)
            if ddp.enabled:
                (out_of_time,) = ddp.any(out_of_time)  # every rank validates (or not) alike
            ev = None
            if epoch % int(trainer.get("val_every", 1)) == 0 or epoch == epochs or out_of_time:
                try:
                    # under torchrun the unwrapped model: DDP's forward would broadcast buffers, a
                    # collective that hangs when the ranks' shards have different batch counts
                    ddp.sync_buffers(net)
                    ev = evaluate(net if ddp.enabled else model, loaders["val"], info.num_classes, info.ignore_index,
                                  ctx, loss_fn, stop_requested=None if ddp.enabled else signals.requested)
                    ev = distributed.reduce_eval(ev, ddp)  # the whole split's scores on every rank
                except RuntimeError as exc:
                    raise out_of_memory_error(exc, cfg, f"validation after epoch {epoch}") or exc from None
                if ev is None:
                    raise interrupted(signals)
                progress.val_reserve = ev.seconds
                if budget is not None:  # keep time for the final validation inside the budget
                    schedule.max_seconds = max(budget - ev.seconds, 1e-3)
            val = ev.scores.as_dict(info.class_names) if ev else None
            train_loss, train_rate = totals.loss, totals.images_per_second
            if ddp.enabled:  # the mean over every rank's images; images/s of all ranks together
                summed = ddp.all_sum(torch.tensor([totals.loss_sum, float(totals.images)], dtype=torch.float64))
                train_loss = float(summed[0]) / max(float(summed[1]), 1.0)
                train_rate = float(summed[1]) / max(totals.seconds, 1e-9)
            record = {"epoch": epoch, "train_loss": train_loss, "val_loss": ev.loss if ev else None,
                      "val_miou": val["miou"] if val else None, "val_mdice": val["mdice"] if val else None,
                      "lr": optimizer.param_groups[0]["lr"], "epoch_seconds": round(totals.seconds, 3),
                      "train_images_per_second": round(train_rate, 3),
                      "val_seconds": round(ev.seconds, 3) if ev else None}
            improved = val and val["miou"] is not None and (progress.best is None or val["miou"] > progress.best["miou"])
            if improved:
                progress.best = {**val, "confusion_matrix": ev.matrix.matrix.cpu().tolist()}  # rows: truth
                progress.best_epoch = epoch
            progress.history.append(record)
            progress.last_val = val or progress.last_val
            progress.epoch, progress.epoch_totals = epoch + 1, {}
            if out_of_time:
                progress.stopped_by = "max_minutes"
            # Order for kills between writes: last.pt first (a resume re-creates a missing best.pt
            # from it: see best_checkpoint's use above), then best.pt, then the metrics line (rewritten on resume).
            save_last()
            if improved:
                run.save_checkpoint(run.best, best_checkpoint())
                if int(trainer.get("samples") or 0) > 0 and ddp.main:
                    save_samples(net, data["val"], int(trainer["samples"]), ctx, info.colors, info.ignore_index,
                                 IMAGENET_MEAN, IMAGENET_STD, run.path / "samples" / "best.png")
            run.log_epoch(record)
            logger.log(record)
            report.console.print(report.epoch_line(record), highlight=False)
            if ddp.any(signals.requested())[0]:
                raise interrupted(signals)
    if progress.best is None and not run.best.exists():  # no class was ever present: keep the last weights
        progress.best_epoch = progress.epoch - 1
        run.save_checkpoint(run.best, best_checkpoint())
    summary = {"status": "done", "best_epoch": progress.best_epoch, "epochs": progress.epoch - 1,
               "stopped_by": progress.stopped_by or "epochs", "train_seconds": round(clock(), 3),
               "checkpoint": str(run.best.resolve()), "val": progress.best,
               "class_pixel_counts": {s: c.pixels.tolist() for s, c in counts.items()}}
    if progress.resumes:
        summary["resumes"] = progress.resumes
    run.write_summary(summary)
    logger.finish(summary)
    if progress.best:
        report.console.print(report.scores_table(f"best epoch {progress.best_epoch}: val", info.class_names,
                                                 progress.best))
    return summary


def restore_training(path: Path, net: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler | None) -> Progress:
    """Load ``last.pt`` into the model, optimizer and scaler, restore the random state, and
    return the saved ``Progress``.

    Raises:
        SegcliError: the file is not a resumable segcli checkpoint or does not fit the model.
    """
    ckpt = load_checkpoint(path)
    if "progress" not in ckpt or "optimizer" not in ckpt:
        raise SegcliError(f"{path}: this checkpoint has no training state to resume from")
    try:
        net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise SegcliError(f"{path}: does not fit the configured model/optimizer: {load_error_detail(exc)}") from None
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    restore_rng(ckpt["rng"])
    return Progress(**ckpt["progress"])


# Keys that may differ between a run and a re-run of the same job (machine settings, names).
RERUN_IGNORES = ("trainer.skip_if_done", "trainer.num_workers", "trainer.eval_batch_size", "trainer.device",
                 "trainer.checkpoint_minutes", "run.name")


def existing_run(run_dir: Path, cfg: Mapping) -> str:
    """What a new job should do with its run folder (a re-run of a sweep or of a shell loop).

    Returns:
        ``"new"``: no run there (or one stopped before its first checkpoint: start over);
        ``"done"``: a finished run (summary.json status done) of this config (keys the saved config
        lacks, options added by a newer segcli, do not count);
        ``"resume"``: an unfinished run of this config (interrupted, failed or killed) with last.pt.

    Raises:
        SegcliError: the folder holds a run of another config (every differing key listed).
    """
    run_dir = Path(run_dir)
    last, summary = run_dir / "checkpoints" / "last.pt", run_dir / "summary.json"
    if not last.is_file():
        return "new"
    old = absolute_root(saved_config(run_dir))
    known = flatten(old)  # keys a newer segcli added are not differences of the run's own config
    changes = {k: v for k, v in config_changes(old, absolute_root(json.loads(json.dumps(cfg)))).items()
               if k not in RERUN_IGNORES and k in known}
    if changes:
        listed = "; ".join(f"{k}: {format_value(a)} -> {format_value(b)}" for k, (a, b) in changes.items())
        raise SegcliError(f"{run_dir} holds a run of another config ({listed}); choose another run.name, "
                          f"hydra.run.dir or hydra.sweep.dir, or continue it with segcli train --resume {run_dir} "
                          "--allow-changes")
    if summary.is_file() and json.loads(summary.read_text()).get("status") == "done":
        return "done"
    return "resume"


def resume(run_dir: Path, overrides: Sequence[str] = (), allow_changes: bool = False) -> dict:
    """Continue the run in ``run_dir`` (``segcli train --resume``); see ``train`` and resume.py.

    A finished run (summary.json status "done") is left alone unless the overrides change it
    (e.g. more ``trainer.epochs`` with ``allow_changes``); its summary is returned.

    Raises:
        SegcliError: see ``resume.resume_config`` and ``train``.
    """
    run_dir = Path(run_dir)
    cfg, changes = resume_config(run_dir, overrides, allow_changes)
    summary_path = run_dir / "summary.json"
    if not changes and summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if summary.get("status") == "done":
            report.console.print(f"segcli: {run_dir} is already done; nothing to resume", highlight=False)
            return summary
    return train(cfg, run_dir, resume=True, changes=changes)


def model_from_checkpoint(ckpt: Mapping, device: torch.device) -> torch.nn.Module:
    """Rebuild the checkpoint's architecture (no download) and load its weights.

    Raises:
        SegcliError: the weights do not fit the architecture named in the checkpoint.
    """
    model_cfg = {**ckpt["config"]["model"], "encoder_weights": None}
    model = build_model(model_cfg, int(ckpt["classes"]["num_classes"]))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise SegcliError(f"checkpoint weights do not fit {model_cfg['arch']}-{model_cfg['encoder_name']} with "
                          f"{ckpt['classes']['num_classes']} classes: {load_error_detail(exc)}") from None
    return model.to(device).eval()


def evaluate_checkpoint(path: Path, split: str = "val", data_root: str | None = None,
                        batch_size: int | None = None, device: str = "auto", hd95: bool = False) -> dict:
    """Evaluate a checkpoint on a split of the data it was trained on, with the run's own
    preprocessing and ``engine.evaluate`` (the code path of validation during training).

    Returns:
        summary.json's ``val`` keys (plus ``per_image_miou``, ``per_image_mdice``) and ``split``,
        ``images``, ``seconds``, ``images_per_second``, ``checkpoint``, ``epoch``, ``protocol`` (the
        default's description) and ``protocols`` (``{name: {miou, mdice}}``, see metrics.PROTOCOLS);
        with ``hd95`` also ``hd95``, ``per_class_hd95`` (pixels) and ``hd95_images`` (see surface_metrics).
    """
    from segcli.surface_metrics import HausdorffAccumulator

    ckpt = load_checkpoint(path)
    cfg = ckpt["config"]
    if data_root is not None:
        cfg["dataset"]["root"] = data_root
    info, data, _ = build_datasets(cfg, (split,), run_seed(cfg), augmented=())
    ctx = step_context({**cfg["trainer"], "device": device}, cfg["dataset"].get("scale", 1.0))
    model = model_from_checkpoint(ckpt, ctx.device)
    if ctx.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loader = make_loader(data[split], batch_size or int(cfg["trainer"]["eval_batch_size"]), False,
                         int(cfg["trainer"]["num_workers"]), info.ignore_index, run_seed(cfg))
    distances = HausdorffAccumulator(info.num_classes, info.ignore_index) if hd95 else None
    with report.EpochProgress(f"eval {split}", len(data[split])) as bar:
        ev = evaluate(model, loader, info.num_classes, info.ignore_index, ctx, on_batch=bar.advance, per_image=True,
                      on_predictions=distances.update if distances else None)
    extra = distances.compute(info.class_names) if distances else {}
    return {**ev.scores.as_dict(info.class_names), **extra, "split": split, "images": ev.images,
            "seconds": round(ev.seconds, 3), "images_per_second": round(ev.images / max(ev.seconds, 1e-9), 3),
            "checkpoint": str(Path(path).resolve()), "epoch": ckpt.get("epoch"),
            "protocol": "dataset: " + PROTOCOLS["dataset"], "protocols": protocols(ev.matrix, ev.scores)}
