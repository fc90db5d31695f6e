"""The ``segcli`` command: the Typer app and its commands, one module per family, each command a
thin call into the package that owns the work:

    train, bench                 cli/train.py      -> training.jobs, training.bench
    eval, predict, export        cli/inference.py  -> inference.evaluation, .predict, .export
    runs, compare, plot, report  cli/reports.py    -> reports.runs_table, metrics.bootstrap, reports.plot, reports.html
    models                       cli/models.py     -> models.build
    data check, data doctor      cli/data.py       -> data.datasets, data.doctor

Trailing arguments of ``segcli train`` (and data check, bench) go to Hydra unchanged (see config.py).
Options that several commands share are declared once in ``cli/common.py``.
"""

from __future__ import annotations

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


app.command(
    help=train.train_help(),
    options_metavar="[HYDRA FLAGS] [OVERRIDES]...",
    context_settings=train.HYDRA_ARGS,
)(train.train)
app.command("eval")(inference.evaluate)
app.command()(reports.compare)
app.command()(inference.predict)
app.command("export")(inference.export_command)
app.command("runs")(reports.list_runs)
app.command("models")(models.list_models)
app.command()(reports.plot)
app.command(options_metavar="[OPTIONS] [OVERRIDES]...", context_settings=train.HYDRA_ARGS)(
    train.bench
)
app.command("report")(reports.html_report)

data_app = typer.Typer(help="Inspect a dataset without training.", no_args_is_help=True)
app.add_typer(data_app, name="data")
data_app.command(
    "check", options_metavar="[OPTIONS] [OVERRIDES]...", context_settings=train.HYDRA_ARGS
)(data.data_check)
data_app.command("doctor")(data.data_doctor)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
