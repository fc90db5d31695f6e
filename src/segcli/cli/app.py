"""The ``segcli`` command: the Typer app and its commands, one module per family, each command a
thin call into the package that owns the work:

    train, bench                 cli/train.py      -> training.jobs, training.bench
    eval, predict, export        cli/inference.py  -> inference.evaluation, .predict, .export
    runs, compare, plot, report cli/reports.py -> reports.runs_table, metrics.bootstrap,
    reports.plot, reports.html models cli/models.py -> models.build data check, data doctor
    cli/data.py -> data.datasets, data.doctor

Trailing arguments of ``segcli train`` (and data check, bench) go to Hydra unchanged (see
config.py). Options that several commands share are declared once in ``cli/common.py``.
"""

from __future__ import annotations

import inspect
import os
from typing import Annotated

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import typer

from segcli.cli import data, inference, models, reports, train
from segcli.cli.common import set_debug
from segcli.config import group_options

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train, evaluate and apply 2-D semantic segmentation models from the shell.\n\n"
    "Config groups of `segcli train`: "
    + ", ".join(group_options())
    + " (`segcli train --help` lists their options).",
)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
) -> None:
    set_debug(debug)


def short_help(fn) -> str:
    """The first paragraph of ``fn``'s docstring as one line: the row of ``segcli --help``'s command
    list (Typer prints a short help's line breaks as they are; the full ``--help`` reflows them)."""
    first = inspect.getdoc(fn).split("\n\n", 1)[0]
    return " ".join(first.split())


def command(group: typer.Typer, fn, name: str | None = None, **settings) -> None:
    """Register ``fn`` as a command of ``group`` with its one-line ``short_help``."""
    group.command(name, short_help=short_help(fn), **settings)(fn)


OVERRIDES = {"options_metavar": "[OPTIONS] [OVERRIDES]...", "context_settings": train.HYDRA_ARGS}
app.command(
    help=train.train_help(),
    short_help=train.SUMMARY,
    options_metavar="[HYDRA FLAGS] [OVERRIDES]...",
    context_settings=train.HYDRA_ARGS,
)(train.train)
command(app, inference.evaluate, "eval")
command(app, reports.compare)
command(app, inference.predict)
command(app, inference.export_command, "export")
command(app, reports.list_runs, "runs")
command(app, models.list_models, "models")
command(app, reports.plot)
command(app, train.bench, **OVERRIDES)
command(app, reports.html_report, "report")

data_app = typer.Typer(help="Inspect a dataset without training.", no_args_is_help=True)
app.add_typer(data_app, name="data")
command(data_app, data.data_check, "check", **OVERRIDES)
command(data_app, data.data_doctor, "doctor")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
