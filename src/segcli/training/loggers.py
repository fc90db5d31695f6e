"""Experiment loggers (config group ``logger``): the same per-epoch record that goes to
metrics.jsonl, and the run's config, sent to one more place.

- ``csv`` (default): ``metrics.csv`` in the run folder, one row per epoch (spreadsheets, pandas).
- ``tensorboard``: ``torch.utils.tensorboard.SummaryWriter`` event files in ``RUN/tensorboard``
  (``tensorboard --logdir outputs``); scalars per epoch, the config as text (needs ``tensorboard``).
- ``mlflow``: an MLflow run in a local file store (``logger.tracking_uri``, default ``mlruns`` in
  the working folder; ``mlflow ui --backend-store-uri mlruns``): the flattened config as params, the
  record as metrics per epoch, summary.json as an artifact at the end (needs ``mlflow`` or
  ``mlflow-skinny``).
- ``none``: nothing beyond metrics.jsonl.

Only the library calls are ours; a missing package is a one-line error naming the pip package.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path

from segcli.config import flatten
from segcli.errors import SegcliError
from segcli.registry import Registry
from segcli.runs.run_dir import SUMMARY

LOGGERS = Registry("logger")


@LOGGERS.register("none")
class Logger:
    """No-op base (``logger=none``): ``start(cfg)``, ``log(record)`` once per epoch,
    ``finish(summary)``. Every logger is built as ``Logger(cfg, run_dir)`` from the ``logger``
    group's config."""

    def __init__(self, cfg: Mapping | None = None, run_dir: Path | None = None) -> None:
        """Nothing to set up."""

    def start(self, cfg: Mapping) -> None:
        """Called once when training starts (also on a resume)."""

    def log(self, record: Mapping) -> None:
        """One metrics.jsonl record: ``epoch`` and floats (None where not measured)."""

    def finish(self, summary: Mapping | None) -> None:
        """Called once when the run ends: summary.json's content when done, None when it stopped
        (interrupted or failed; it may be resumed)."""


@LOGGERS.register("csv")
class CsvLogger(Logger):
    """``metrics.csv`` beside metrics.jsonl; a resume rewrites it from the history it continues."""

    def __init__(self, cfg: Mapping, run_dir: Path) -> None:
        self.path = Path(run_dir) / "metrics.csv"

    def rewrite(self, history: list[Mapping]) -> None:
        self.path.unlink(missing_ok=True)
        for record in history:
            self.log(record)

    def log(self, record: Mapping) -> None:
        new = not self.path.is_file()
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(record))
            if new:
                writer.writeheader()
            writer.writerow({k: "" if v is None else v for k, v in record.items()})


@LOGGERS.register("tensorboard")
class TensorBoardLogger(Logger):
    """Scalars ``train/loss``, ``val/loss``, ``val/miou``, ... per epoch in ``RUN/tensorboard``."""

    def __init__(self, cfg: Mapping, run_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise SegcliError(
                "logger=tensorboard needs the tensorboard package: pip install tensorboard"
            ) from None
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def start(self, cfg: Mapping) -> None:
        self.writer.add_text("config", "```\n" + json.dumps(cfg, indent=2, default=str) + "\n```")

    def log(self, record: Mapping) -> None:
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self.writer.add_scalar(
                    key.replace("_", "/", 1) if key.startswith(("train_", "val_")) else key,
                    value,
                    record["epoch"],
                )
        self.writer.flush()

    def finish(self, summary: Mapping | None) -> None:
        self.writer.close()


@LOGGERS.register("mlflow")
class MlflowLogger(Logger):
    """One MLflow run per segcli run, in a file store (``logger.tracking_uri``,
    ``logger.experiment``)."""

    def __init__(self, cfg: Mapping, run_dir: Path) -> None:
        tracking_uri = str(cfg.get("tracking_uri") or "mlruns")
        experiment = str(cfg.get("experiment") or "segcli")
        try:
            import mlflow
        except ImportError:
            raise SegcliError("logger=mlflow needs MLflow: pip install mlflow-skinny") from None
        self.mlflow, self.run_dir = mlflow, Path(run_dir)
        uri = (
            tracking_uri
            if "://" in tracking_uri or tracking_uri.startswith("file:")
            else Path(tracking_uri).expanduser().resolve().as_uri()
        )
        if uri.startswith("file:"):
            # MLflow 3 keeps its file store only on request; a folder of files is what we promise
            # here
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(experiment)

    def start(self, cfg: Mapping) -> None:
        self.mlflow.start_run(run_name=str(self.run_dir))
        params = {k: str(v)[:500] for k, v in flatten(cfg).items()}
        self.mlflow.log_params(params)

    def log(self, record: Mapping) -> None:
        self.mlflow.log_metrics(
            {
                k: float(v)
                for k, v in record.items()
                if k != "epoch" and isinstance(v, (int, float))
            },
            step=int(record["epoch"]),
        )

    def finish(self, summary: Mapping | None) -> None:
        summary_file = self.run_dir / SUMMARY
        if summary_file.is_file():
            self.mlflow.log_artifact(str(summary_file))
        self.mlflow.end_run(status="FINISHED" if summary is not None else "KILLED")


@contextmanager
def closed_on_error(logger: Logger):
    """``logger.finish(None)`` when the block raises (interrupt, failure), then re-raise."""
    try:
        yield logger
    except BaseException:
        logger.finish(None)
        raise


def build_logger(cfg: Mapping | None, run_dir: Path) -> Logger:
    """The logger the ``logger`` config names (``LOGGERS``; None: ``none``, as on torchrun ranks >
    0).

    Raises:
        SegcliError: unknown name, or the logger's package is not installed.
    """
    return LOGGERS.build(cfg or {"name": "none"}, Path(run_dir))
