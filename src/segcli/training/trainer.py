"""The training run: a ``Trainer`` builds the parts from the resolved config and runs the phases
of a run in its folder. Each phase is one method, so where an epoch ends or why a run stopped is
found by name:

    restore()        fresh start, or the state of last.pt (training/resume.py): weights, optimizer, scaler,
                     random state, progress; metrics.jsonl rewritten to what last.pt includes
    train_epoch()    the epoch's optimizer steps (engine.train_one_epoch), last.pt every
                     ``trainer.checkpoint_minutes``; stops early on a signal or the time budget
    validate()       the val split (inference.loop.evaluate; under torchrun each rank its shard, summed)
    end_epoch()      the record, best tracking, then the writes in their kill-safe order:
                     last.pt, best.pt (+ samples/best.png), metrics.jsonl line, loggers
    interrupt()      SIGINT/SIGTERM: last.pt and summary.json "interrupted", RunInterrupted
    finish()         summary.json "done", the loggers' end, the best epoch's table

The wall-clock budget is ``engine.Budget``: training steps stop one validation's duration before
``trainer.max_minutes`` so that the final validation ends within it, and the LR schedule anneals
to that point; ``summary.json``'s ``stopped_by`` says which limit ended the run.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from segcli import console
from segcli.config import check_config, run_seed
from segcli.data.datasets import build_datasets
from segcli.data.readers import ClassPixels, make_loader
from segcli.errors import RunInterrupted, SegcliError
from segcli.inference.gallery import save_samples
from segcli.inference.loop import EvalResult, evaluate
from segcli.losses.build import build_loss, class_weights
from segcli.models.build import build_model, load_error_detail, model_label
from segcli.models.classical import ClassicalModel
from segcli.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from segcli.runs.checkpoints import CHECKPOINT_FORMAT, load_checkpoint
from segcli.runs.run_dir import RunDir
from segcli.runtime import out_of_memory_error, seed_everything, step_context
from segcli.training import distributed
from segcli.training.engine import Budget, RunningTotals, TrainStep, train_one_epoch
from segcli.training.interrupts import StopSignals
from segcli.training.loggers import CsvLogger, build_logger, closed_on_error
from segcli.training.optim import build_optimizer, build_schedule
from segcli.training.resume import RunState, absolute_root, capture_rng, restore_rng


def cached_class_pixels(
    run: RunDir, found: ClassPixels | None, num_classes: int, resume: bool = False
) -> ClassPixels | None:
    """The training split's class statistics of a run, computed once: ``class_pixels.json`` in the run
    dir keeps the pixel counts (and the class weights both balancing schemes give) the run started
    with, so a resumed run weights its loss the same even if the data changed. ``found``: this
    start's counts (None for data without counts); ``resume``: read the saved file if there is one.
    """
    saved = run.class_pixels() if resume else None
    if saved:
        return ClassPixels(
            np.asarray(saved["pixels"], dtype=np.int64),
            np.asarray(saved["present"], dtype=np.int64),
        )
    if found is not None:
        run.write_class_pixels(
            {
                "pixels": np.asarray(found.pixels).tolist(),
                "present": np.asarray(found.present).tolist(),
                "class_weights": {
                    s: class_weights(s, num_classes, found)
                    for s in ("median_frequency", "inverse_frequency")
                },
            }
        )
    return found


def restore_training(
    path: Path,
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
) -> RunState:
    """Load ``last.pt`` into the model, optimizer and scaler, restore the random state, and
    return the saved ``RunState``.

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
        raise SegcliError(
            f"{path}: does not fit the configured model/optimizer: {load_error_detail(exc)}"
        ) from None
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    restore_rng(ckpt["rng"])
    return RunState(**ckpt["progress"])


def init_weights(net: torch.nn.Module, path: Path) -> None:
    """``trainer.init_from``: start from every weight of a segcli checkpoint (``best.pt`` of an earlier
    run: a fine-tuning phase), not only an encoder's.

    Raises:
        SegcliError: the file is not a segcli checkpoint or its weights do not fit the model.
    """
    ckpt = load_checkpoint(path)
    try:
        net.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise SegcliError(
            f"trainer.init_from={path}: its weights do not fit the configured model: "
            f"{load_error_detail(exc)}"
        ) from None


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


class Trainer:
    """One training run in ``run_path`` (see the module docstring); ``Trainer(...).fit()`` runs it.

    Args:
        cfg: the resolved root config as plain dicts (``dataset.root`` made absolute in place).
        run_path: the run folder (Hydra's output dir).
        ddp: this process's place under torchrun (rank 0 of 1 for a single process).
        resume: continue from ``last.pt`` when there is one; ``changes`` are the config changes the
            resume applied (recorded in summary.json).

    Raises:
        SegcliError: bad data or config (construction), a NaN/inf loss, out of memory (``fit``).
        RunInterrupted: SIGINT/SIGTERM arrived; last.pt and summary.json ("interrupted") are saved.
    """

    def __init__(
        self,
        cfg: dict,
        run_path: Path,
        ddp: distributed.Distributed | None = None,
        resume: bool = False,
        changes: dict | None = None,
    ) -> None:
        check_config(cfg)
        self.cfg, self.trainer_cfg, self.seed = cfg, cfg["trainer"], run_seed(cfg)
        self.ddp, self.resuming, self.changes = (
            ddp or distributed.Distributed(),
            resume,
            changes or {},
        )
        absolute_root(cfg)  # eval and predict may run from another folder
        if self.trainer_cfg.get("deterministic"):
            torch.use_deterministic_algorithms(True, warn_only=True)
        seed_everything(self.seed)
        self.run = RunDir(run_path, writer=self.ddp.main)
        self._build_data()
        self._build_model()
        self.totals: RunningTotals | None = (
            None  # the current epoch's, while it trains and validates
        )
        self.signals: StopSignals | None = None

    def _build_data(self) -> None:
        """Datasets, device context and loaders (in this order: the seeds' draws stay the same)."""
        trainer, ddp = self.trainer_cfg, self.ddp
        self.info, self.data, self.counts = build_datasets(
            self.cfg, ("train", "val"), self.seed, self.run.write_split if self.run.writer else None
        )
        self.ctx = step_context(
            trainer, self.cfg["dataset"].get("scale", 1.0), ddp.local_rank if ddp.enabled else None
        )
        self.loaders = {
            s: make_loader(
                d,
                int(trainer["batch_size" if s == "train" else "eval_batch_size"]),
                s == "train",
                int(trainer["num_workers"]),
                self.info.ignore_index,
                self.seed,
                self.ctx.device.type == "cuda",
                ddp.rank,
                ddp.world,
            )
            for s, d in self.data.items()
        }
        if len(self.data["train"]) == 0 or len(self.data["val"]) == 0:
            raise SegcliError(
                f"the dataset has {len(self.data['train'])} training and {len(self.data['val'])} "
                "validation images; expected at least one of each"
            )

    def _build_model(self) -> None:
        """Model (DDP- and compile-wrapped as configured), loss, optimizer, scaler and schedule."""
        cfg, ctx, ddp = self.cfg, self.ctx, self.ddp
        self.net = build_model(cfg["model"], self.info.num_classes).to(ctx.device)
        self.base = {
            "format": CHECKPOINT_FORMAT,
            "config": cfg,
            "classes": asdict(self.info),
            "normalization": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        }
        self.fitted = isinstance(self.net, ClassicalModel)
        if self.fitted:
            return self._build_fitted()
        if self.trainer_cfg.get("init_from") and not (self.resuming and self.run.last.is_file()):
            init_weights(self.net, Path(str(self.trainer_cfg["init_from"])))
        if ctx.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        model = self.net
        if ddp.enabled:
            model = torch.nn.parallel.DistributedDataParallel(
                self.net, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
            )
        model = torch.compile(model) if self.trainer_cfg.get("compile") else model
        stats = cached_class_pixels(
            self.run, self.counts.get("train"), self.info.num_classes, self.resuming
        )
        loss_fn = build_loss(cfg["loss"], self.info.num_classes, stats).to(ctx.device)
        optimizer = build_optimizer(cfg["optimizer"], self.net.parameters())
        scaler = torch.amp.GradScaler("cuda") if ctx.amp_dtype == torch.float16 else None
        self.epochs, self.batches = int(self.trainer_cfg["epochs"]), len(self.loaders["train"])
        self.step = TrainStep(
            model,
            loss_fn,
            optimizer,
            build_schedule(cfg["scheduler"], self.epochs * self.batches, self.batches),
            ctx,
            scaler,
            self.trainer_cfg.get("grad_clip"),
        )

    def _build_fitted(self) -> None:
        """A classical baseline (models/classical.py): fitted once on the training split, as the run's one
        "epoch"; no loss, optimizer or schedule (their config groups are not used)."""
        if self.ddp.enabled:
            raise SegcliError(
                f"model.arch={self.cfg['model']['arch']}: a classical baseline fits in one process; "
                "run it without torchrun"
            )
        cached_class_pixels(
            self.run, self.counts.get("train"), self.info.num_classes, self.resuming
        )
        self.epochs, self.batches = 1, len(self.loaders["train"])
        self.step = TrainStep(self.net, None, None, None, self.ctx)

    # -- phases -------------------------------------------------------------------------------

    def fit(self) -> dict:
        """Restore, then train, validate and end epochs until the epochs or the budget run out;
        returns summary.json's dict."""
        self.restore()
        logger = build_logger(self.cfg.get("logger") if self.ddp.main else None, self.run.path)
        if self.resuming and isinstance(logger, CsvLogger):
            logger.rewrite(self.state.history)
        logger.start(self.cfg)
        with StopSignals() as self.signals, failure_recorded(self.run), closed_on_error(logger):
            while self.state.epoch <= self.epochs and self.state.stopped_by is None:
                totals = self.train_epoch()
                if totals.stopped == "signal":
                    raise self.interrupt()
                out_of_time = totals.stopped == "max_minutes" or self.budget.spent()
                if self.ddp.enabled:
                    (out_of_time,) = self.ddp.any(
                        out_of_time
                    )  # every rank validates (or not) alike
                ev = None
                if (
                    self.state.epoch % int(self.trainer_cfg.get("val_every", 1)) == 0
                    or self.state.epoch == self.epochs
                    or out_of_time
                ):
                    ev = self.validate()
                self.end_epoch(totals, ev, out_of_time, logger)
                if self.ddp.any(self.signals.requested())[0]:
                    raise self.interrupt()
        return self.finish(logger)

    def restore(self) -> None:
        """Fresh progress, or last.pt's (resume); metrics.jsonl and summary.json made to match; the
        budget's clock started."""
        run, self.state = self.run, RunState()
        if self.resuming and run.last.is_file() and not self.fitted:  # a baseline's fit starts over
            self.state = restore_training(run.last, self.net, self.step.optimizer, self.step.scaler)
            self.state.resumes.append(
                {
                    "epoch": self.state.epoch,
                    "step": self.state.step,
                    "changes": {k: list(v) for k, v in self.changes.items()},
                    "amp": self.ctx.precision.name,
                }
            )
            run.rewrite_metrics(self.state.history)
        elif self.resuming:
            run.rewrite_metrics(
                []
            )  # stopped before its first checkpoint: start over in the same folder
        if self.resuming:
            run.clear_summary()
            self._repair_best()
        run.mark_running()
        self._start_budget()
        self._announce()

    def _repair_best(self) -> None:
        """A run killed between last.pt and best.pt of its best epoch: best.pt gets last.pt's weights."""
        p = self.state
        if p.best_epoch and p.best_epoch == p.epoch - 1 and not p.epoch_totals:
            saved = load_checkpoint(self.run.best).get("epoch") if self.run.best.is_file() else None
            if saved != p.best_epoch:
                self.save_best()

    def _start_budget(self) -> None:
        """The ``trainer.max_minutes`` budget, counting the earlier processes' seconds; a run that its
        budget stopped trains on when resumed with a larger (or no) budget."""
        minutes = self.trainer_cfg.get("max_minutes")
        started, before = time.perf_counter(), self.state.elapsed
        self.budget = Budget(
            float(minutes) * 60 if minutes else None,
            lambda: before + time.perf_counter() - started,
            self.state.val_reserve,
        )
        deadline = self.budget.deadline
        if self.state.stopped_by == "max_minutes" and (
            deadline is None or deadline > self.state.elapsed
        ):
            self.state.stopped_by = None
        self.every = float(self.trainer_cfg.get("checkpoint_minutes") or 0) * 60
        self.saved_at = time.perf_counter()

    def _announce(self) -> None:
        p, cfg = self.state, self.cfg
        action = (
            f"resuming at epoch {p.epoch}, step {p.step}:"
            if p.step
            else "fitting"
            if self.fitted
            else "training"
        )
        minutes = self.trainer_cfg.get("max_minutes")
        console.out.print(
            f"segcli: {action} {model_label(cfg['model'])} on "
            f"{len(self.data['train'])} train / {len(self.data['val'])} val images, device "
            f"{self.ctx.device}"
            + ("" if self.fitted else f", {self.epochs} epochs")
            + (f" or {minutes} min" if minutes else ""),
            highlight=False,
        )
        console.out.print(f"segcli: {self.ctx.precision.describe()}", highlight=False)

    def train_epoch(self) -> RunningTotals:
        """The remaining steps of epoch ``progress.epoch`` (all of them unless it is a resumed one);
        ``stopped`` says why it ended early (``"signal"``, ``"max_minutes"``) or is None.

        Raises:
            SegcliError: the loss diverged (NaN/inf) or memory ran out.
        """
        epoch, p = self.state.epoch, self.state
        self.totals = totals = RunningTotals(**{**p.epoch_totals, "stopped": None})
        if totals.steps >= self.batches:
            return totals  # trained before an interruption during its validation
        loader = self.loaders["train"]
        loader.sampler.set_epoch(epoch, skip=totals.steps * loader.batch_size)
        if self.fitted:
            return self.fit_baseline(totals)
        with console.EpochProgress(
            f"epoch {epoch}/{self.epochs}", self.batches, done=totals.steps
        ) as bar:

            def on_step(res: RunningTotals, loss: float) -> None:
                p.step += 1
                bar.advance(1, f"loss {loss:.4f}")
                if self.every and time.perf_counter() - self.saved_at >= self.every:
                    self.save_last()

            try:
                return train_one_epoch(
                    self.step, loader, self.budget, p.step, totals, on_step, self.stop_reason
                )
            except FloatingPointError as exc:
                last = (
                    f"; the last good checkpoint is {self.run.last}"
                    if self.run.last.exists()
                    else ""
                )
                raise SegcliError(
                    f"training diverged in epoch {epoch}: {exc} (try a lower optimizer.lr "
                    f"or trainer.grad_clip=1.0){last}"
                ) from None
            except RuntimeError as exc:
                raise out_of_memory_error(exc, self.cfg, f"training epoch {epoch}") or exc from None

    def fit_baseline(self, totals: RunningTotals) -> RunningTotals:
        """A classical baseline's fit over the training split's batches (its one epoch)."""
        from segcli.models.classical import FitStopped

        start = time.perf_counter()
        try:
            with console.EpochProgress("fitting", len(self.data["train"])) as bar:
                totals.images = self.net.fit(
                    self.loaders["train"],
                    self.seed,
                    self.info.ignore_index,
                    self.budget,
                    on_image=lambda: bar.advance(1),
                    should_stop=self.signals.requested,
                )
        except (
            FitStopped
        ):  # nothing fitted: interrupt() saves the unfitted model; a resume fits anew
            totals.stopped = "signal"
            return totals
        totals.steps, totals.seconds = self.batches, time.perf_counter() - start
        totals.stopped = "max_minutes" if self.budget.spent() else None
        return totals

    def stop_reason(self) -> str | None:
        """Asked after every step: ``"signal"`` (SIGINT/SIGTERM), ``"max_minutes"`` (the budget's
        deadline) or None; under torchrun what any rank says, so that all stop after the same step."""
        signal, late = self.signals.requested(), self.budget.spent()
        if self.ddp.enabled:
            signal, late = self.ddp.any(signal, late)
        return "signal" if signal else "max_minutes" if late else None

    def validate(self) -> EvalResult:
        """Scores of the whole val split (under torchrun: each rank its shard, summed); the budget
        keeps this validation's seconds free at its end.

        Raises:
            RunInterrupted: a signal arrived during validation (single process).
            SegcliError: out of memory.
        """
        ddp, epoch = self.ddp, self.state.epoch
        try:
            # under torchrun the unwrapped model: DDP's forward would broadcast buffers, a
            # collective that hangs when the ranks' shards have different batch counts
            ddp.sync_buffers(self.net)
            ev = evaluate(
                self.net if ddp.enabled else self.step.model,
                self.loaders["val"],
                self.info.num_classes,
                self.info.ignore_index,
                self.ctx,
                self.step.loss_fn,
                stop_requested=None if ddp.enabled else self.signals.requested,
            )
            ev = distributed.reduce_eval(ev, ddp)  # the whole split's scores on every rank
        except RuntimeError as exc:
            raise (
                out_of_memory_error(exc, self.cfg, f"validation after epoch {epoch}") or exc
            ) from None
        if ev is None:
            raise self.interrupt()
        self.state.val_reserve = self.budget.reserve = ev.seconds
        return ev

    def epoch_record(self, totals: RunningTotals, ev: EvalResult | None, val: dict | None) -> dict:
        """The metrics.jsonl line of the epoch (under torchrun: loss over every rank's images,
        images/s of all ranks together)."""
        train_loss, train_rate = totals.loss, totals.images_per_second
        if self.ddp.enabled:
            summed = self.ddp.all_sum(
                torch.tensor([totals.loss_sum, float(totals.images)], dtype=torch.float64)
            )
            train_loss = float(summed[0]) / max(float(summed[1]), 1.0)
            train_rate = float(summed[1]) / max(totals.seconds, 1e-9)
        optimizer = self.step.optimizer
        return {
            "epoch": self.state.epoch,
            "train_loss": None if self.fitted else train_loss,
            "val_loss": ev.loss if ev else None,
            "val_miou": val["miou"] if val else None,
            "val_mdice": val["mdice"] if val else None,
            "lr": optimizer.param_groups[0]["lr"] if optimizer else None,
            "epoch_seconds": round(totals.seconds, 3),
            "train_images_per_second": round(train_rate, 3),
            "val_seconds": round(ev.seconds, 3) if ev else None,
        }

    def end_epoch(
        self, totals: RunningTotals, ev: EvalResult | None, out_of_time: bool, logger
    ) -> None:
        """Record the epoch, track the best, then write in the kill-safe order: last.pt first (a
        resume re-creates a missing best.pt from it: ``_repair_best``), then best.pt, then the
        metrics line (rewritten on resume), then the loggers and the console."""
        p = self.state
        val = ev.scores.as_dict(self.info.class_names) if ev else None
        record = self.epoch_record(totals, ev, val)
        improved = (
            val and val["miou"] is not None and (p.best is None or val["miou"] > p.best["miou"])
        )
        if improved:
            p.best = {**val, "confusion_matrix": ev.matrix.matrix.cpu().tolist()}  # rows: truth
            p.best_epoch = p.epoch
        p.history.append(record)
        p.last_val = val or p.last_val
        p.epoch, self.totals = p.epoch + 1, None
        if out_of_time:
            p.stopped_by = "max_minutes"
        self.save_last()
        if improved:
            self.save_best()
            if int(self.trainer_cfg.get("samples") or 0) > 0 and self.ddp.main:
                save_samples(
                    self.net,
                    self.data["val"],
                    int(self.trainer_cfg["samples"]),
                    self.ctx,
                    self.info.colors,
                    self.info.ignore_index,
                    IMAGENET_MEAN,
                    IMAGENET_STD,
                    self.run.samples,
                )
        self.run.log_epoch(record)
        logger.log(record)
        console.out.print(console.epoch_line(record), highlight=False)

    def interrupt(self) -> RunInterrupted:
        """Save last.pt and summary.json ("interrupted"); the error for the CLI to exit 130/143 with."""
        self.save_last()
        p, run = self.state, self.run
        run.write_summary(
            {
                "status": "interrupted",
                "epoch": p.epoch,
                "step": p.step,
                "precision": self.ctx.precision.as_dict(),
                "resume": f"segcli train --resume {run.path}",
            }
        )
        return RunInterrupted(
            self.signals.exit_code,
            f"stopped in epoch {p.epoch} after step {p.step}; "
            f"checkpoints/last.pt saved. Resume with: segcli train --resume "
            f"{run.path}",
        )

    def finish(self, logger) -> dict:
        """summary.json ("done"), the loggers' end and the best epoch's table; returns the summary."""
        p, run = self.state, self.run
        if (
            p.best is None and not run.best.exists()
        ):  # no class was ever present: keep the last weights
            p.best_epoch = p.epoch - 1
            self.save_best()
        summary = {
            "status": "done",
            "best_epoch": p.best_epoch,
            "epochs": p.epoch - 1,
            "stopped_by": p.stopped_by or "epochs",
            "train_seconds": round(self.budget.clock(), 3),
            "checkpoint": str(run.best.resolve()),
            "val": p.best,
            "precision": self.ctx.precision.as_dict(),
            "class_pixel_counts": {s: c.pixels.tolist() for s, c in self.counts.items()},
        }
        if p.resumes:
            summary["resumes"] = p.resumes
        run.write_summary(summary)
        logger.finish(summary)
        if p.best:
            console.out.print(
                console.scores_table(
                    f"best epoch {p.best_epoch}: val", self.info.class_names, p.best
                )
            )
        return summary

    # -- checkpoints --------------------------------------------------------------------------

    def save_last(self) -> None:
        """``last.pt``: weights, optimizer, scaler, progress (with the current epoch's totals when
        saved inside an epoch) and random state."""
        p = self.state
        p.elapsed = self.budget.clock()
        p.epoch_totals = asdict(self.totals) if self.totals is not None else {}
        self.run.save_checkpoint(
            self.run.last,
            {
                **self.base,
                "epoch": p.epoch - 1,
                "step": p.step,
                "model": self.net.state_dict(),
                "val": p.last_val,
                "optimizer": self.step.optimizer.state_dict() if self.step.optimizer else None,
                "scaler": self.step.scaler.state_dict() if self.step.scaler else None,
                "progress": asdict(p),
                "rng": capture_rng(),
            },
        )
        self.saved_at = time.perf_counter()

    def save_best(self) -> None:
        """``best.pt``: the current weights as those of ``progress.best_epoch``."""
        p = self.state
        self.run.save_checkpoint(
            self.run.best,
            {
                **self.base,
                "epoch": p.best_epoch,
                "step": p.step,
                "model": self.net.state_dict(),
                "val": p.best,
            },
        )
