"""``segcli data check`` and ``segcli data doctor``: a dataset inspected without training."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from segcli import console
from segcli.cli.common import JsonOption, user_errors
from segcli.config import to_plain

if TYPE_CHECKING:
    from segcli.data.doctor import Diagnosis


def data_check(
    ctx: typer.Context,
    json_path: JsonOption = None,
) -> None:
    """Run every dataset check on every split (pairing, decoding, sizes, mask values) and print
    images per split, image sizes, class pixel frequencies and all problems found. OVERRIDES and
    Hydra's --config-dir/-cd, --config-name, --cfg job as for `segcli train` (e.g. dataset=camvid
    dataset.root=PATH). Exit code 1 when problems are found.

    Example: segcli data check dataset=folder dataset.root=data/mine dataset.num_classes=3
    """
    from segcli.config import compose_command
    from segcli.data.datasets import check_dataset
    from segcli.files import write_json

    with user_errors():
        composed = compose_command(ctx.args, "segcli data check")
        if composed.show is not None:
            console.out.print(composed.show, end="", highlight=False, markup=False)
            return
        result = check_dataset(to_plain(composed.cfg))
        for table in console.data_tables(result):
            console.out.print(table)
        for note in result["notes"]:
            console.out.print(f"note: {note}", highlight=False)
        for problem in result["problems"]:
            console.error(problem)
        if json_path:
            write_json(json_path, result)
    n = len(result["problems"])
    console.out.print(f"{n} problem(s) found" if n else "no problems found", highlight=False)
    if n:
        raise SystemExit(1)


def data_doctor(
    root: Annotated[Path, typer.Argument(help="A dataset folder segcli has not seen.")],
    write: Annotated[
        Path | None,
        typer.Option(
            "--write",
            help="Save the proposed dataset config here, e.g. myconf/dataset/mine.yaml; then "
            "segcli train --config-dir myconf dataset=mine.",
            metavar="FILE.yaml",
        ),
    ] = None,
    json_path: JsonOption = None,
) -> None:
    """Find the layout, pairing rule, splits and mask encoding of a folder, propose a dataset
    config, check every file with it, and say how to train. Exit code 0 when a usable configuration
    was found, 1 when not (with the reasons).
    """
    from segcli.data.doctor import diagnose
    from segcli.files import write_json

    with user_errors():
        found = diagnose(root)
        _print_diagnosis(found)
        command = _write_proposal(found, write)
        if json_path:
            write_json(json_path, _diagnosis_json(found))
    if not found.usable:
        console.out.print(
            f"no usable configuration ({len(found.problems)} problem(s))", highlight=False
        )
        raise SystemExit(1)
    console.out.print(f"usable; train with: {command}", highlight=False, markup=False)


def _print_diagnosis(found: Diagnosis) -> None:
    """The findings, the proposed config (YAML) and the problems of a ``doctor.Diagnosis``."""
    import yaml

    for line in found.findings:
        console.out.print(f"- {line}", highlight=False, markup=False)
    if found.config:
        console.out.print("proposed dataset config:", highlight=False)
        console.out.print(
            yaml.safe_dump(found.config, sort_keys=False, width=100).rstrip(),
            highlight=False,
            markup=False,
        )
    for problem in found.problems:
        console.error(problem)


def _write_proposal(found: Diagnosis, write: Path | None) -> str:
    """Write the proposed config to ``write`` when usable (and not a built-in layout); returns
    the command to train with it."""
    from segcli.data.doctor import write_config

    command = found.command
    if found.usable and write and found.config:
        console.out.print(f"wrote {write_config(found, write)}", highlight=False)
        if write.parent.name == "dataset":
            command = f"segcli train --config-dir {write.parent.parent} dataset={write.stem}"
    elif found.usable and write:
        console.out.print(
            f"nothing written: the built-in dataset={found.builtin} reads this layout",
            highlight=False,
        )
    return command


def _diagnosis_json(found: Diagnosis) -> dict:
    """``--json``'s content: what ``doctor.diagnose`` found."""
    return {
        "root": str(found.root),
        "builtin": found.builtin,
        "config": found.config,
        "findings": found.findings,
        "problems": found.problems,
        "usable": found.usable,
        "command": found.command,
    }
