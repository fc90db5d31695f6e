"""The training run of a network: a ``Trainer`` builds the parts from the resolved config and runs
the phases of a run in its folder. Each phase is one method, so where an epoch ends or why a run
stopped is found by name; those a classical baseline's fit shares are ``phases.RunPhases``':

    restore()        fresh start, or the state of last.pt (training/resume.py): weights, optimizer,
                     scaler, random state, run state; metrics.jsonl rewritten to what last.pt
                     includes
    train_epoch()    the epoch's optimizer steps (engine.train_one_epoch), last.pt every
                     ``trainer.checkpoint_minutes``; stops early on a signal or the time budget
    validate()       the val split (phases.RunPhases)
    end_epoch()      the record, best tracking and the kill-safe writes (phases.RunPhases)
    interrupt()      SIGINT/SIGTERM: last.pt and summary.json "interrupted" (phases.RunPhases)
    finish()         summary.json "done", the loggers' end, the best table (phases.RunPhases)

``build_run`` picks the run for a config: a ``Trainer``, or for a classical baseline
(``model=pixel_forest``, ``otsu``) a ``classical_fit.ClassicalFit``, which fits once instead.

The wall-clock budget is ``engine.Budget``: training steps stop one validation's duration before
``trainer.max_minutes`` so that the final validation ends within it, and the LR schedule anneals
to that point; ``summary.json``'s ``stopped_by`` says which limit ended the run.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from segcli import console
from segcli.errors import SegcliError
from segcli.losses.build import build_loss
from segcli.models.build import is_classical
from segcli.models.weights import load_error_detail, load_weights
from segcli.runs.checkpoints import load_checkpoint
from segcli.runtime import out_of_memory_error
from segcli.training import distributed
from segcli.training.class_pixels import cached_class_pixels
from segcli.training.classical_fit import ClassicalFit
from segcli.training.engine import RunningTotals, TrainStep, train_one_epoch
from segcli.training.optim import build_optimizer, build_schedule
from segcli.training.phases import RunPhases
from segcli.training.resume import RunState, restore_rng


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
    what = f"{path}: does not fit the configured model/optimizer"
    load_weights(net, ckpt["model"], what)
    try:  # torch's optimizer state has no one-line form of its own
        optimizer.load_state_dict(ckpt["optimizer"])
    except (ValueError, KeyError) as exc:
        raise SegcliError(f"{what}: {load_error_detail(exc)}") from None
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    restore_rng(ckpt["rng"])
    return RunState(**ckpt["progress"])


def init_weights(net: torch.nn.Module, path: Path) -> None:
    """``trainer.init_from``: start from every weight of a segcli checkpoint (``best.pt`` of an
    earlier run: a fine-tuning phase), not only an encoder's.

    Raises:
        SegcliError: the file is not a segcli checkpoint or its weights do not fit the model.
    """
    ckpt = load_checkpoint(path)
    load_weights(
        net, ckpt["model"], f"trainer.init_from={path}: its weights do not fit the configured model"
    )


def build_run(
    cfg: dict,
    run_path: Path,
    ddp: distributed.Distributed | None = None,
    resume: bool = False,
    changes: dict | None = None,
) -> RunPhases:
    """The run of ``cfg`` in ``run_path`` (arguments as ``Trainer``'s): a ``ClassicalFit`` for a
    classical baseline (``models.build.is_classical``), else a ``Trainer``; ``.fit()`` runs it.

    Raises:
        SegcliError, RunInterrupted: see ``Trainer`` and ``classical_fit.ClassicalFit``.
    """
    run = ClassicalFit if is_classical(cfg["model"]) else Trainer
    return run(cfg, run_path, ddp, resume, changes)


class Trainer(RunPhases):
    """One training run of a network in ``run_path`` (see the module docstring and ``RunPhases``
    for the arguments); ``Trainer(...).fit()`` runs it and returns summary.json's dict.

    Raises:
        SegcliError: bad data or config (construction), a NaN/inf loss, out of memory (``fit``).
        RunInterrupted: SIGINT/SIGTERM arrived; last.pt and summary.json ("interrupted") are saved.
        ValueError: ``cfg`` names a classical baseline (``build_run`` gives its run).
    """

    def __init__(
        self,
        cfg: dict,
        run_path: Path,
        ddp: distributed.Distributed | None = None,
        resume: bool = False,
        changes: dict | None = None,
    ) -> None:
        if is_classical(cfg["model"]):
            raise ValueError(
                f"model.arch={cfg['model']['arch']} is a classical baseline, fitted by a "
                "classical_fit.ClassicalFit (build_run picks the run of a config)"
            )
        super().__init__(cfg, run_path, ddp, resume, changes)

    def _build(self) -> None:
        """Model (DDP- and compile-wrapped as configured), loss, optimizer, scaler and schedule."""
        cfg, ctx, ddp, s = self.cfg, self.ctx, self.ddp, self.settings
        if s.init_from and not (self.resuming and self.run.last.is_file()):
            init_weights(self.net, Path(s.init_from))
        if ctx.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        model = self.net
        if ddp.enabled:
            model = torch.nn.parallel.DistributedDataParallel(
                self.net, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
            )
        model = torch.compile(model) if s.compile else model
        loss_fn = self._build_loss()
        params = [p for p in self.net.parameters() if p.requires_grad]
        optimizer = build_optimizer(cfg["optimizer"], params)
        scaler = torch.amp.GradScaler("cuda") if ctx.amp_dtype == torch.float16 else None
        self.epochs, self.batches = s.epochs, len(self.loaders["train"])
        schedule = build_schedule(cfg["scheduler"], self.epochs * self.batches, self.batches)
        self.step = self.step_kind(model, loss_fn, optimizer, schedule, ctx, scaler, s.grad_clip)
        self.eval_net, self.val_loss = self.net if ddp.enabled else model, loss_fn

    #: the optimizer step (``engine.TrainStep``'s arguments)
    step_kind = TrainStep

    def _build_loss(self) -> torch.nn.Module | None:
        """The ``loss`` group's loss on the device, class weights from the cached class pixels."""
        stats = cached_class_pixels(
            self.run, self.counts.get("train"), self.info.num_classes, self.resuming
        )
        return build_loss(self.cfg["loss"], self.info.num_classes, stats).to(self.ctx.device)

    # -- phases -------------------------------------------------------------------------------

    def run_epochs(self, logger) -> None:
        """Train, validate (every ``trainer.val_every`` epochs, the last and a budget's end) and
        end epochs until the epochs or the budget run out."""
        while self.state.epoch <= self.epochs and self.state.stopped_by is None:
            totals = self.train_epoch()
            if totals.stopped == "signal":
                raise self.interrupt()
            out_of_time = totals.stopped == "max_minutes" or self.budget.spent()
            if self.ddp.enabled:
                (out_of_time,) = self.ddp.any(out_of_time)  # every rank validates (or not) alike
            ev = None
            if (
                self.state.epoch % self.settings.val_every == 0
                or self.state.epoch == self.epochs
                or out_of_time
            ):
                ev = self.validate()
            self.end_epoch(totals, ev, out_of_time, logger)
            if self.ddp.any(self.signals.requested())[0]:
                raise self.interrupt()

    def restore(self) -> None:
        """Fresh state, or last.pt's (resume); metrics.jsonl and summary.json made to match; the
        budget's clock started."""
        run, self.state = self.run, RunState()
        if self.resuming and run.last.is_file():
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
            run.rewrite_metrics([])  # stopped before its first checkpoint: start over in the folder
        if self.resuming:
            run.clear_summary()
            self._repair_best()
        run.mark_running()
        self._start_budget()
        self.every = self.settings.checkpoint_seconds
        p = self.state
        self._announce(
            f"resuming at epoch {p.epoch}, step {p.step}:" if p.step else "training", self.epochs
        )

    def _repair_best(self) -> None:
        """A run killed between last.pt and best.pt of its best epoch: best.pt gets last.pt's
        weights."""
        p = self.state
        if p.best_epoch and p.best_epoch == p.epoch - 1 and not p.epoch_totals:
            saved = load_checkpoint(self.run.best).get("epoch") if self.run.best.is_file() else None
            if saved != p.best_epoch:
                self.save_best()

    def train_epoch(self) -> RunningTotals:
        """The remaining steps of epoch ``state.epoch`` (all of them unless it is a resumed one);
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

    def stop_reason(self) -> str | None:
        """Asked after every step: ``"signal"`` (SIGINT/SIGTERM), ``"max_minutes"`` (the budget's
        deadline) or None; under torchrun what any rank says, so that all stop after the same
        step."""
        signal, late = self.signals.requested(), self.budget.spent()
        if self.ddp.enabled:
            signal, late = self.ddp.any(signal, late)
        return "signal" if signal else "max_minutes" if late else None

    # -- what the epoch record and last.pt hold -----------------------------------------------

    def train_figures(self, totals: RunningTotals) -> tuple[float, float]:
        """Mean training loss per image and images/s; under torchrun over every rank's images
        (the loss) and of all ranks together (images/s)."""
        if not self.ddp.enabled:
            return totals.loss, totals.images_per_second
        summed = self.ddp.all_sum(
            torch.tensor([totals.loss_sum, float(totals.images)], dtype=torch.float64)
        )
        return (
            float(summed[0]) / max(float(summed[1]), 1.0),
            float(summed[1]) / max(totals.seconds, 1e-9),
        )

    def learning_rate(self) -> float:
        """The optimizer's current learning rate (first parameter group)."""
        return self.step.optimizer.param_groups[0]["lr"]

    def training_state(self) -> dict:
        """The optimizer's and the fp16 scaler's state dicts (scaler: None without one)."""
        scaler = self.step.scaler
        return {
            "optimizer": self.step.optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler else None,
        }
