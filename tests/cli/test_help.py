"""Help reads as paragraphs at any terminal width: the command list of ``segcli --help`` gives
each command's first docstring paragraph as one line (Typer printed its line breaks as they were:
"mIoU, mDice and / per-class IoU"), and ``segcli train --help`` wraps each group's options under
the group, not at the terminal's edge."""

from __future__ import annotations

import inspect
import re

from helpers import segcli


def _commands_panel(text: str) -> list[str]:
    panel = text.split("Commands ")[1].split("╰")[0]
    return [line.strip("│ ").rstrip() for line in panel.splitlines()[1:] if line.strip("│ ")]


def test_the_command_list_gives_each_first_paragraph_on_one_line(tmp_path):
    from segcli.cli import data, inference, models, reports, train

    commands = {
        "eval": inference.evaluate,
        "compare": reports.compare,
        "predict": inference.predict,
        "export": inference.export_command,
        "runs": reports.list_runs,
        "models": models.list_models,
        "plot": reports.plot,
        "bench": train.bench,
        "report": reports.html_report,
    }
    r = segcli("--help", cwd=tmp_path, env={"COLUMNS": "400"})
    assert r.returncode == 0, r.stderr
    rows = _commands_panel(r.stdout)
    for name, fn in commands.items():
        first = " ".join(inspect.getdoc(fn).split("\n\n")[0].split()).replace(
            "\\[", "["
        )  # rich markup
        assert f"{name:<8} {first}" in rows, (name, rows)
    assert f"{'train':<8} {train.SUMMARY}" in rows
    assert "mDice and per-class IoU: the difference" in r.stdout  # the sentence once broken
    r = segcli("data", "--help", cwd=tmp_path, env={"COLUMNS": "400"})
    first = " ".join(inspect.getdoc(data.data_doctor).split("\n\n")[0].split())
    assert f"{'doctor':<7} {first}" in _commands_panel(r.stdout)


def test_train_help_wraps_the_group_options_under_each_group(tmp_path):
    r = segcli("train", "--help", cwd=tmp_path, env={"COLUMNS": "70"})
    assert r.returncode == 0, r.stderr
    groups = r.stdout.split("Config groups")[1].split("Examples:")[0].splitlines()[2:]
    rows = [line for line in groups if line.strip()]
    assert max(len(line) for line in rows) <= 70
    heads = [line for line in rows if re.match(r"^   [a-z]", line)]
    assert [h.split()[0] for h in heads][:4] == ["task", "dataset", "model", "loss"]
    assert "maskrcnn_resnet18_fpn (instance)" in " ".join(r.stdout.split())
    assert all(re.match(r"^   [a-z]+ +\S", line) or line.startswith(" " * 17) for line in rows)
    assert len(rows) > len(heads)  # at 70 columns the model and loss options take several lines
