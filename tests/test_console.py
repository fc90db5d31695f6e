"""console (terminal.py, tables.py): the one-line error and warning on stderr, and the tables."""

from __future__ import annotations

import io
import re

from rich.console import Console

from segcli import console
from segcli.metrics.bootstrap import Difference

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_error_is_one_line_on_stderr_however_long_and_whatever_it_holds(capsys):
    message = "dataset.root=/data/[train]: " + "a long explanation " * 20 + "[bold]end[/bold]"
    console.error(message)
    out, err = capsys.readouterr()
    assert (
        out == "" and ANSI.sub("", err) == f"segcli: error: {message}\n"
    )  # no wrap at 80 columns, no markup
    console.warning("left out 2 bad pairs")
    out, err = capsys.readouterr()
    assert out == "" and ANSI.sub("", err) == "segcli: warning: left out 2 bad pairs\n"


def render(table) -> list[list[str]]:
    """A rich table as rows of cell texts (header first)."""
    buffer = Console(file=io.StringIO(), width=300, color_system=None)
    buffer.print(table)
    rows = []
    for line in buffer.file.getvalue().splitlines():
        if line.startswith(("┃", "│")):
            rows.append([cell.strip() for cell in re.split(r"[┃│]", line)[1:-1]])
    return rows


def test_data_tables_give_images_sizes_and_each_splits_class_shares():
    result = {
        "dataset": "/d",
        "class_names": ["road", "car"],
        "splits": {
            "train": {
                "images": 3,
                "bad": 1,
                "sizes": {"64x64": 2, "32x48": 1},
                "class_pixels": [1, 3],
            },
            "val": {
                "images": 4,
                "bad": 0,
                "sizes": {"1x1": 1, "2x2": 1, "3x3": 1, "4x4": 1},
                "class_pixels": [6, 2],
            },
            "test": {"images": 0, "bad": 2, "sizes": {}, "class_pixels": [0, 0]},
        },
    }
    files, classes = console.data_tables(result)
    assert render(files) == [
        ["split", "images", "bad", "sizes (HxW: images)"],
        ["train", "3", "1", "64x64: 2, 32x48: 1"],
        ["val", "4", "0", "1x1: 1, 2x2: 1, 3x3: 1, ... (4 sizes)"],
        ["test", "0", "2", ""],
    ]
    # road: 1 of train's 4 pixels, 6 of val's 8; an empty split shows zeros, not a division by zero
    assert render(classes) == [
        ["class", "train", "val", "test"],
        ["road", "25.00", "75.00", "0.00"],
        ["car", "75.00", "25.00", "0.00"],
    ]


def test_bootstrap_table_rows_show_each_score_its_interval_share_and_verdict():
    nan = float("nan")
    result = {
        "images": 5,
        "resamples": 300,
        "seed": 4,
        "miou": Difference(0.5, 0.75, 0.1, 0.4, 0.975),
        "mdice": Difference(0.6, 0.55, -0.2, 0.1, 0.3),
        "per_class_iou": {
            "sky": Difference(0.9, 0.2, -0.8, -0.6, 0.0),
            "car": Difference(nan, nan, nan, nan, nan),
        },
    }
    assert render(console.bootstrap_table("run1", "run2", "test", result)) == [
        ["score", "A", "B", "B - A", "95% interval", "B higher in", "verdict"],
        ["mIoU", "0.5000", "0.7500", "+0.2500", "[+0.1000, +0.4000]", "97.5%", "B better"],
        [
            "mDice",
            "0.6000",
            "0.5500",
            "-0.0500",
            "[-0.2000, +0.1000]",
            "30.0%",
            "no difference detected at 95%",
        ],
        ["IoU sky", "0.9000", "0.2000", "-0.7000", "[-0.8000, -0.6000]", "0.0%", "A better"],
        ["IoU car", "-", "-", "-", "-", "-", "no difference detected at 95%"],
    ]
