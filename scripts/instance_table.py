"""What task=instance runs reached per CPU-minute: a markdown table from their run folders.

    python scripts/instance_table.py outputs/r18-15min outputs/r50-10min outputs/r50v2-10min
    python scripts/instance_table.py RUN... --marks 2 5 10   # val mask AP50 at these minutes too

One row per run: the model, its training budget and what it used (minutes of training and
validation, epochs), training images/s (the median epoch), the best epoch's val mask AP, AP50,
box AP and the pasted masks' mIoU (summary.json), and the val mask AP50 of the first validation
at or after each of ``--marks`` minutes into the run (metrics.jsonl: epoch and validation seconds
summed). The marks come from one run whose learning rate anneals to its whole budget, so they
are not what a run of that shorter budget would reach; they show how fast it climbs. Name the CPU
(``lscpu``) beside the table: figures compare within one machine only.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import yaml


def run_row(run: Path, marks: list[float]) -> dict:
    """The table's values for one run folder (see the module docstring)."""
    summary = json.loads((run / "summary.json").read_text())
    config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())  # the run's config
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    seconds, at = 0.0, {}
    for record in history:
        seconds += record["epoch_seconds"] + (record.get("val_seconds") or 0.0)
        for mark in marks:
            if mark not in at and seconds >= mark * 60 and record.get("val_mask_ap50") is not None:
                at[mark] = record["val_mask_ap50"]
    val = summary.get("val") or {}
    rate = statistics.median(r["train_images_per_second"] for r in history)
    return {
        "model": config.get("model", {}).get("arch") or run.name,
        "budget": config.get("trainer", {}).get("max_minutes"),
        "minutes": seconds / 60,
        "epochs": summary.get("epochs"),
        "images/s": rate,
        **{k: val.get(k) for k in ("mask_ap", "mask_ap50", "box_ap", "miou")},
        **{f"AP50 @{m:g} min": at.get(m) for m in marks},
    }


def markdown(rows: list[dict]) -> str:
    """``rows`` as a markdown table (fractions with 3 decimals, minutes and rates with 1)."""

    def cell(key: str, value) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.1f}" if key in ("minutes", "images/s", "budget") else f"{value:.3f}"
        return str(value)

    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
    lines += ["| " + " | ".join(cell(k, r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="task=instance run folders")
    parser.add_argument("--marks", nargs="*", type=float, default=[2.0, 5.0, 10.0])
    args = parser.parse_args()
    print(markdown([run_row(run, args.marks) for run in args.runs]))


if __name__ == "__main__":
    main()
