"""Terminal output: the two rich consoles (``out``, ``err``), rich progress bars on a terminal and
one plain line per epoch otherwise (shell sweeps, CI, log files), the one-line errors and
warnings on stderr, and tables printed as wide as they need off a terminal. Uses rich's own
terminal detection."""

from __future__ import annotations

import math
import os
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

out = Console(soft_wrap=True)  # plain lines are never wrapped: logs stay one line per epoch
err = Console(stderr=True, soft_wrap=True)


def interactive() -> bool:
    """True when stdout is a terminal (rich's detection; FORCE_COLOR / TTY_COMPATIBLE apply)."""
    return out.is_terminal


def fmt(x: float | None, digits: int = 4) -> str:
    """A score for a table: ``-`` for None or NaN (a class absent from truth and prediction)."""
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


class EpochProgress:
    """A progress bar over the steps of an epoch on a terminal; nothing otherwise."""

    def __init__(self, description: str, total: int, done: int = 0) -> None:
        self.progress = None
        if interactive():
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[info]}"),
                console=out,
                transient=True,
            )
            self.task = self.progress.add_task(description, total=total, completed=done, info="")

    def __enter__(self) -> EpochProgress:  # noqa: PYI034 - Self needs Python 3.11
        if self.progress:
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress:
            self.progress.stop()

    def advance(self, n: int = 1, info: str = "") -> None:
        """Move the bar ``n`` steps on and show ``info`` (e.g. the last loss) beside it."""
        if self.progress:
            self.progress.update(self.task, advance=n, info=info)


#: the instance scores an epoch line shows when the record has them (task=instance)
INSTANCE_KEYS = ("mask_ap", "mask_ap50", "box_ap")


def epoch_line(record: dict) -> str:
    """One line per epoch, the same on a terminal and in a log."""
    lr = "-" if record["lr"] is None else format(record["lr"], ".2e")
    return (
        f"epoch {record['epoch']:>3}  train_loss {fmt(record['train_loss'])}"
        f"  val_loss {fmt(record['val_loss'])}  val_miou {fmt(record['val_miou'])}"
        f"  val_mdice {fmt(record['val_mdice'])}"
        + "".join(
            f"  val_{k} {fmt(record[f'val_{k}'])}" for k in INSTANCE_KEYS if f"val_{k}" in record
        )
        + f"  lr {lr}"
        f"  {record['epoch_seconds']:.1f}s  {record['train_images_per_second']:.1f} img/s"
    )


def debugging() -> bool:
    """``segcli --debug`` was given (or HYDRA_FULL_ERROR=1 set): errors show their tracebacks."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def error_line(exc: BaseException) -> str:
    """The message of a SegcliError; for one raised in a DataLoader worker (which torch re-raises
    with the worker's whole traceback in the message), the original message only."""
    text = str(exc)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split("SegcliError: ", 1)[-1]
    return text


def error(message: str) -> None:
    """One line on stderr: ``segcli: error: MESSAGE``."""
    err.print(
        f"segcli: error: {message}", style="red", highlight=False, markup=False, soft_wrap=True
    )
    sys.stderr.flush()


def warning(message: str) -> None:
    """One line on stderr: ``segcli: warning: MESSAGE``."""
    err.print(
        f"segcli: warning: {message}", style="yellow", highlight=False, markup=False, soft_wrap=True
    )
    sys.stderr.flush()


def print_wide(table: Table) -> None:
    """Print a table; off a terminal (files, pipes) as wide as its cells need instead of 80
    columns."""
    if out.is_terminal:
        out.print(table)
        return
    from rich.measure import Measurement

    wide = Console(width=100_000)
    needed = Measurement.get(wide, wide.options, table).maximum
    width = out.width
    out.width = max(width, needed)
    try:
        out.print(table)
    finally:
        out.width = width
