"""The run of a classical baseline (``model=pixel_forest``, ``otsu``; models/classical.py): fitted
once from the training split's batches, then validated, as the run's one "epoch". There is no
loss, optimizer or schedule (their config groups are not used), no gradient step and no resume
point inside the fit: a resumed baseline fits anew in its folder.

The run folder is a network's (``phases.RunPhases`` writes it): ``metrics.jsonl`` (one line,
``train_loss`` and ``lr`` null), ``checkpoints/last.pt`` (optimizer and scaler null) and
``best.pt``, ``class_pixels.json``, ``summary.json``, ``samples/best.png``; eval, predict and
``segcli runs`` read it unchanged. ``trainer.build_run`` gives this run for such a config.
"""

from __future__ import annotations

import time

from segcli import console
from segcli.errors import SegcliError
from segcli.models.classical import ClassicalModel, FitStopped
from segcli.training.class_pixels import cached_class_pixels
from segcli.training.engine import RunningTotals
from segcli.training.phases import RunPhases
from segcli.training.resume import RunState


class ClassicalFit(RunPhases):
    """One fit of a classical baseline in ``run_path`` (arguments as ``RunPhases``');
    ``ClassicalFit(...).fit()`` fits, validates and returns summary.json's dict.

    Raises:
        SegcliError: bad data or config, under torchrun (a baseline fits in one process), no
            labelled pixel to fit on, out of memory in validation.
        RunInterrupted: SIGINT/SIGTERM arrived; last.pt (the unfitted model) and summary.json
            ("interrupted") are saved.
    """

    net: ClassicalModel

    def _build(self) -> None:
        """Refuse torchrun; keep the class statistics (``class_pixels.json``) as a network's run."""
        if self.ddp.enabled:
            raise SegcliError(
                f"model.arch={self.cfg['model']['arch']}: a classical baseline fits in one "
                "process; run it without torchrun"
            )
        cached_class_pixels(
            self.run, self.counts.get("train"), self.info.num_classes, self.resuming
        )
        self.batches = len(self.loaders["train"])
        self.eval_net, self.val_loss = self.net, None

    def restore(self) -> None:
        """Fresh state, resumed or not (a fit starts over; a resumed run's metrics.jsonl and
        summary.json are emptied); the budget's clock started."""
        self.state = RunState()
        if self.resuming:
            self.run.rewrite_metrics([])
            self.run.clear_summary()
        self.run.mark_running()
        self._start_budget()
        self._announce("fitting", None)

    def run_epochs(self, logger) -> None:
        """The fit, then the validation and end of its one epoch."""
        totals = self.fit_once()
        if totals.stopped == "signal":
            raise self.interrupt()
        out_of_time = totals.stopped == "max_minutes" or self.budget.spent()
        self.end_epoch(totals, self.validate(), out_of_time, logger)
        if self.signals.requested():
            raise self.interrupt()

    def fit_once(self) -> RunningTotals:
        """The model's ``fit`` over the training split's batches (epoch 1's data order); the
        totals count the images it used and its seconds; ``stopped`` is ``"signal"`` (nothing
        fitted), ``"max_minutes"`` (the budget ended the fit) or None.

        Raises:
            SegcliError: no labelled pixel in the training split (the model's).
        """
        self.totals = totals = RunningTotals()
        loader = self.loaders["train"]
        loader.sampler.set_epoch(self.state.epoch, skip=0)
        start = time.perf_counter()
        try:
            with console.EpochProgress("fitting", len(self.data["train"])) as bar:
                totals.images = self.net.fit(
                    loader,
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

    # -- what the epoch record and last.pt hold -----------------------------------------------

    def train_figures(self, totals: RunningTotals) -> tuple[None, float]:
        """No training loss; images/s of the fit (feature extraction included)."""
        return None, totals.images_per_second

    def learning_rate(self) -> None:
        """No learning rate (the record's ``lr`` is null)."""

    def training_state(self) -> dict:
        """No optimizer, no scaler (``last.pt`` keeps the keys, null)."""
        return {"optimizer": None, "scaler": None}
