"""What every run in a folder does, however its model learns: ``RunPhases`` is the base of the CNN
``trainer.Trainer`` and of ``classical_fit.ClassicalFit``. It builds the data and the model from
the resolved config and holds the phases both share:

    validate()       the val split (inference.loop.evaluate; under torchrun each rank its shard,
                     summed)
    end_epoch()      the record, best tracking, then the writes in their kill-safe order:
                     last.pt, best.pt (+ samples/best.png), metrics.jsonl line, loggers
    interrupt()      SIGINT/SIGTERM: last.pt and summary.json "interrupted", RunInterrupted
    finish()         summary.json "done", the loggers' end, the best epoch's table

``fit()`` runs ``restore()`` (fresh, or the state of a resumed run), then ``run_epochs()`` under
the stop signals and the loggers, then ``finish()``; a subclass gives those two and how it learns
(``train_figures``, ``learning_rate``, ``training_state`` for the epoch record and ``last.pt``).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import asdict
from pathlib import Path

import torch

from segcli import console
from segcli.config import check_config, run_seed
from segcli.data.datasets import build_datasets, input_normalization
from segcli.data.loaders import make_loader
from segcli.data.settings import DatasetSettings
from segcli.errors import RunInterrupted, SegcliError
from segcli.inference.gallery import save_samples
from segcli.inference.loop import EvalResult, evaluate
from segcli.models.build import build_model, is_classical, model_label
from segcli.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from segcli.runs.checkpoints import CHECKPOINT_FORMAT, load_checkpoint
from segcli.runs.run_dir import RunDir
from segcli.runtime import out_of_memory_error, seed_everything, step_context
from segcli.tasks import check_task
from segcli.training import distributed
from segcli.training.engine import Budget, RunningTotals
from segcli.training.interrupts import StopSignals, failure_recorded
from segcli.training.loggers import CsvLogger, build_logger, closed_on_error
from segcli.training.resume import RunState, capture_rng
from segcli.training.settings import TrainerSettings


class RunPhases(ABC):
    """One run in ``run_path`` (see the module docstring); ``fit()`` runs it.

    Args:
        cfg: the resolved root config as plain dicts (``dataset.root`` made absolute in place).
        run_path: the run folder (Hydra's output dir).
        ddp: this process's place under torchrun (rank 0 of 1 for a single process).
        resume: continue from ``last.pt`` when there is one; ``changes`` are the config changes the
            resume applied (recorded in summary.json).

    Raises:
        SegcliError: bad data or config (construction; ``TrainerSettings`` for the ``trainer``
            group), out of memory (``fit``).
        RunInterrupted: SIGINT/SIGTERM arrived; last.pt and summary.json ("interrupted") are saved.
    """

    #: what validation runs and with which loss (None: no val loss); set by ``_build``
    eval_net: torch.nn.Module
    val_loss: torch.nn.Module | None
    #: where the run stands (epoch, step, best, history); set by ``restore``
    state: RunState
    #: the task (checkpoint ``"task"``), the val score that picks the best epoch, the val scores
    #: the epoch record adds (metrics.jsonl ``val_KEY``), samples -> batch (None: pad_collate)
    task, key_metric, record_keys, collate = "semantic", "miou", (), None

    def __init__(
        self,
        cfg: dict,
        run_path: Path,
        ddp: distributed.Distributed | None = None,
        resume: bool = False,
        changes: dict | None = None,
    ) -> None:
        check_config(cfg)
        check_task(cfg)
        self.cfg, self.settings = cfg, TrainerSettings.from_config(cfg["trainer"])
        self.seed, self.ddp = run_seed(cfg), ddp or distributed.Distributed()
        self.resuming, self.changes = resume, changes or {}
        self.dataset = DatasetSettings.from_config(cfg["dataset"]).absolute()
        # the run's config keeps the absolute root: eval and predict may run from another folder
        self.cfg = {**cfg, "dataset": self.dataset.as_group(cfg["dataset"])}
        if self.settings.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        seed_everything(self.seed)
        self.run = RunDir(run_path, writer=self.ddp.main)
        # last.pt when resuming from one: its statistics and stage 1 are the run's (read once)
        resumed = resume and self.run.last.is_file()
        self.resumed = load_checkpoint(self.run.last) if resumed else None
        self.normalization = self._input_normalization()
        self._build_data()
        self.stage1: dict | None = None  # a cascade's stage 1 (_build_net), for the checkpoint
        self.net = self._build_net().to(self.ctx.device)
        self.base = {
            "format": CHECKPOINT_FORMAT,
            "task": self.task,
            "config": self.cfg,
            "classes": asdict(self.info),
            "normalization": self.normalization,
            **({"cascade": self.stage1} if self.stage1 else {}),
        }
        self._build()
        self.totals: RunningTotals | None = None  # the current epoch's, while it trains/validates
        self.signals: StopSignals | None = None

    def _build_data(self) -> None:
        """Datasets, device context and loaders (in this order: the seeds' draws stay the same)."""
        s, ddp = self.settings, self.ddp
        self.info, self.data, self.counts = self._build_datasets()
        rank = ddp.local_rank if ddp.enabled else None
        self.ctx = step_context(asdict(s), self.dataset.scale, rank)
        self.loaders = {
            split: make_loader(
                d,
                s.batch_size if split == "train" else s.eval_batch_size,
                split == "train",
                s.num_workers,
                self.info.ignore_index,
                self.seed,
                self.ctx.device.type == "cuda",
                ddp.rank,
                ddp.world,
                collate=self.collate,
            )
            for split, d in self.data.items()
        }
        if len(self.data["train"]) == 0 or len(self.data["val"]) == 0:
            raise SegcliError(
                f"the dataset has {len(self.data['train'])} training and {len(self.data['val'])} "
                "validation images; expected at least one of each"
            )

    def _input_normalization(self) -> dict:
        """The checkpoint's ``normalization``: ImageNet's for 8-bit RGB, the training split's
        per-channel statistics for stored channels (``data.datasets.input_normalization``); a
        resumed run keeps its ``last.pt``'s (the data may have changed since)."""
        if self.task != "semantic":
            if self.dataset.stored_channels:
                raise SegcliError(
                    f"dataset.channels=stored: task={self.task} reads 8-bit RGB images only"
                )
            return {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
        if self.resumed is not None and self.resumed.get("normalization"):
            return dict(self.resumed["normalization"])
        return input_normalization(self.dataset, self.seed)

    def _build_datasets(self) -> tuple:
        """(class info, {split: Dataset}, {split: class statistics}) of train and val."""
        write = self.run.write_split if self.run.writer else None
        return build_datasets(
            self.cfg, ("train", "val"), self.seed, write, normalization=self.normalization
        )

    def _build_net(self) -> torch.nn.Module:
        """The model of ``cfg["model"]`` for the dataset's classes and input channels (one per
        entry of the normalisation's mean: 3 for RGB, the data's for stored channels); with
        ``model.cascade.from`` the two-stage ``models.cascade.CascadeModel`` (``self.stage1``
        describes stage 1 for the checkpoint)."""
        in_channels = len(self.normalization["mean"])
        if self.dataset.stored_channels and is_classical(self.cfg["model"]):
            raise SegcliError(
                f"model.arch={self.cfg['model']['arch']}: the classical baselines read 8-bit RGB; "
                "dataset.channels=stored is for the networks"
            )
        cascade = self.cfg["model"].get("cascade") or {}
        if not cascade.get("from"):
            return build_model(self.cfg["model"], self.info.num_classes, in_channels)
        from segcli.models.cascade import build_cascade
        from segcli.training.cascade_stage import rebuilt_stage_one, stage_one

        last = self.resumed
        if last is not None and last.get("cascade"):  # stage 1's weights come back with last.pt
            self.stage1 = dict(last["cascade"])
            first = rebuilt_stage_one(self.stage1)
        else:
            path = Path(str(cascade["from"])).expanduser()
            first, self.stage1 = stage_one(path, self.normalization)
        background = self.dataset.background_class or 0
        return build_cascade(
            first, self.stage1, self.cfg["model"], self.info.num_classes, in_channels, background
        )

    def _evaluate_val(self, stop_requested):
        """The val split's ``EvalResult`` (``inference.loop.evaluate``), or None when stopped."""
        return evaluate(
            self.eval_net,
            self.loaders["val"],
            self.info.num_classes,
            self.info.ignore_index,
            self.ctx,
            self.val_loss,
            stop_requested=stop_requested,
        )

    def _save_samples(self) -> None:
        """samples/best.png: the first val images beside their masks and predictions."""
        info, s = self.info, self.settings
        save_samples(
            self.net,
            self.data["val"],
            s.samples,
            self.ctx,
            info.colors,
            info.ignore_index,
            self.normalization,
            self.run.samples,
        )

    # -- what a subclass gives ----------------------------------------------------------------

    @abstractmethod
    def _build(self) -> None:
        """The learning parts for ``self.net``; sets ``eval_net`` and ``val_loss``."""

    @abstractmethod
    def restore(self) -> None:
        """``self.state`` (fresh or resumed), the run folder made to match, the budget started."""

    @abstractmethod
    def run_epochs(self, logger) -> None:
        """Train (or fit), validate and ``end_epoch`` until done; raise ``interrupt()`` on a
        signal."""

    @abstractmethod
    def train_figures(self, totals: RunningTotals) -> tuple[float | None, float]:
        """The epoch record's (mean training loss per image or None, training images/s)."""

    @abstractmethod
    def learning_rate(self) -> float | None:
        """The epoch record's learning rate (of the first parameter group), or None."""

    @abstractmethod
    def training_state(self) -> dict:
        """``last.pt``'s ``"optimizer"`` and ``"scaler"`` state dicts (None where there is none)."""

    # -- phases -------------------------------------------------------------------------------

    def fit(self) -> dict:
        """Restore, then ``run_epochs`` under the stop signals; returns summary.json's dict."""
        self.restore()
        logger = build_logger(self.cfg.get("logger") if self.ddp.main else None, self.run.path)
        if self.resuming and isinstance(logger, CsvLogger):
            logger.rewrite(self.state.history)
        logger.start(self.cfg)
        with StopSignals() as self.signals, failure_recorded(self.run), closed_on_error(logger):
            self.run_epochs(logger)
        return self.finish(logger)

    def _start_budget(self) -> None:
        """The ``trainer.max_minutes`` budget, counting the earlier processes' seconds; a run that
        its budget stopped trains on when resumed with a larger (or no) budget."""
        started, before = time.perf_counter(), self.state.elapsed
        self.budget = Budget(
            self.settings.max_seconds,
            lambda: before + time.perf_counter() - started,
            self.state.val_reserve,
        )
        deadline = self.budget.deadline
        if self.state.stopped_by == "max_minutes" and (
            deadline is None or deadline > self.state.elapsed
        ):
            self.state.stopped_by = None
        self.saved_at = time.perf_counter()

    def _announce(self, action: str, epochs: int | None) -> None:
        """The run's first console lines: ``action`` (``training``, ``fitting``, ``resuming ...``),
        the model, the data, the device, ``epochs`` (None: not said) and the budget."""
        minutes = self.settings.max_minutes
        console.out.print(
            f"segcli: {action} {model_label(self.cfg['model'])} on "
            f"{len(self.data['train'])} train / {len(self.data['val'])} val images, device "
            f"{self.ctx.device}"
            + ("" if epochs is None else f", {epochs} epochs")
            + (f" or {minutes} min" if minutes else ""),
            highlight=False,
        )
        console.out.print(f"segcli: {self.ctx.precision.describe()}", highlight=False)

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
            ev = self._evaluate_val(None if ddp.enabled else self.signals.requested)
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
        """The metrics.jsonl line of the epoch (seconds, images/s; ``train_figures`` says how the
        loss and throughput are counted)."""
        train_loss, train_rate = self.train_figures(totals)
        return {
            "epoch": self.state.epoch,
            "train_loss": train_loss,
            "val_loss": ev.loss if ev else None,
            "val_miou": val["miou"] if val else None,
            "val_mdice": val["mdice"] if val else None,
            **{f"val_{k}": val.get(k) if val else None for k in self.record_keys},
            "lr": self.learning_rate(),
            "epoch_seconds": round(totals.seconds, 3),
            "train_images_per_second": round(train_rate, 3),
            "val_seconds": round(ev.seconds, 3) if ev else None,
        }

    def end_epoch(
        self, totals: RunningTotals, ev: EvalResult | None, out_of_time: bool, logger
    ) -> None:
        """Record the epoch, track the best, then write in the kill-safe order: last.pt first (a
        resume re-creates a missing best.pt from it: ``Trainer._repair_best``), then best.pt, then
        the metrics line (rewritten on resume), then the loggers and the console."""
        p = self.state
        val = ev.scores.as_dict(self.info.class_names) if ev else None
        record = self.epoch_record(totals, ev, val)
        key = self.key_metric
        improved = val and val[key] is not None and (p.best is None or val[key] > p.best[key])
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
            if self.settings.samples > 0 and self.ddp.main:
                self._save_samples()
        self.run.log_epoch(record)
        logger.log(record)
        console.out.print(console.epoch_line(record), highlight=False)

    def interrupt(self) -> RunInterrupted:
        """Save last.pt and summary.json ("interrupted"); returns the error for the CLI to exit
        130/143 with."""
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
        """summary.json ("done"), the loggers' end and the best epoch's table; returns the
        summary."""
        p, run = self.state, self.run
        if p.best is None and not run.best.exists():  # no class was ever present: the last weights
            p.best_epoch = p.epoch - 1
            self.save_best()
        summary = {
            "status": "done",
            "task": self.task,
            "key_metric": self.key_metric,
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
        """``last.pt``: weights, ``training_state()`` (optimizer, scaler), the run state (with the
        current epoch's totals when saved inside an epoch) and random state."""
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
                **self.training_state(),
                "progress": asdict(p),
                "rng": capture_rng(),
            },
        )
        self.saved_at = time.perf_counter()

    def save_best(self) -> None:
        """``best.pt``: the current weights as those of ``state.best_epoch``."""
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
