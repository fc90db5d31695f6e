"""``segcli report RUN... -o report.html``: one self-contained HTML file to look at runs side by
side.

What it holds, per run and across runs: the status and best scores; the config keys whose values
differ between the runs; the curves, per-class IoU bars and confusion matrices of ``segcli plot``
(reports/plot.py, matplotlib); each run's sample predictions (``samples/best.png``) and worst-image
gallery (``evals/best-SPLIT-worst.png`` from ``segcli eval --worst K``); per-class IoU as a table;
and, for two or more runs evaluated on the same split, the paired bootstrap of ``segcli compare``
(metrics/bootstrap.py). Images are embedded as base64 PNG data URIs; the page has no script and
loads nothing from a network, so it opens from a file, offline, in any browser.

The page is assembled with the standard library's ``html.escape`` and f-strings: a template
engine (Jinja2) would add a dependency for a page this small.
"""

from __future__ import annotations

import base64
import html
import math
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from segcli.errors import SegcliError
from segcli.files import atomic_write
from segcli.runs.run_dir import RunDir

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5rem auto;
       max-width: 1200px; padding: 0 1rem; color: #1d1d1f; line-height: 1.4; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
h3 { font-size: 1rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.5rem; text-align: right; }
th { background: #f2f2f2; } td.l, th.l { text-align: left; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
.note { color: #666; font-size: 0.85rem; } .better { color: #0a7d28; font-weight: 600; }
.worse { color: #b00020; font-weight: 600; } code { background: #f5f5f5; padding: 0 0.2rem; }
"""


def _esc(value) -> str:
    return html.escape(str(value))


def _num(x, digits: int = 4) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _png(path: Path, alt: str) -> str:
    """An ``<img>`` with the PNG embedded (a data URI)."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def _table(header: Sequence[str], rows: Sequence[Sequence], left: int = 1) -> str:
    """An HTML table; the first ``left`` columns left-aligned."""
    head = "".join(
        f'<th class="{"l" if i < left else ""}">{_esc(h)}</th>' for i, h in enumerate(header)
    )
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{"l" if i < left else ""}">{c}</td>' for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _differing_config(records: list[dict]) -> str:
    """Keys (all config values and overrides) whose values are not the same in every run."""
    if len(records) == 1:
        given = records[0]["given"]
        rows = [[_esc(k), _esc(records[0]["params"].get(k))] for k in given]
        return _table(["key", "value"], rows or [["(no overrides)", ""]], left=2)
    keys = sorted({k for r in records for k in r["params"]})
    differ = [
        k
        for k in keys
        if len({str(r["params"].get(k)) for r in records}) > 1 and not k.startswith("hydra")
    ]
    rows = [[_esc(k), *(_esc(r["params"].get(k, "-")) for r in records)] for k in differ]
    return _table(
        ["key", *(r["label"] for r in records)],
        rows or [["(identical configs)"] + [""] * len(records)],
        left=len(records) + 1,
    )


def _comparison(
    runs: Sequence[Path], labels: list[str], split: str, resamples: int, seed: int
) -> str:
    """The paired bootstrap of ``segcli compare`` as HTML, or a note on which evals are missing."""
    from segcli.inference.eval_files import load_evidence
    from segcli.metrics import bootstrap

    try:
        evidence = [load_evidence(r, split)[1] for r in runs]
        bootstrap.check_same_images(
            labels, [e.names for e in evidence], [e.class_names for e in evidence]
        )
    except SegcliError as exc:
        return f'<p class="note">No comparison: {_esc(exc)}</p>'
    result = bootstrap.compare_runs(
        labels, [e.matrices for e in evidence], resamples, seed, evidence[0].class_names
    )
    if len(runs) == 2:
        head = (
            f"<p>A = <b>{_esc(labels[0])}</b>, B = <b>{_esc(labels[1])}</b>: {result['images']} "
            f"{split} images, "
            f"{resamples} paired resamples (seed {seed}). <b>mIoU: "
            f"{_esc(result['miou'].verdict)}</b>.</p>"
        )
        return head + _pair_table(result)
    return (
        f"<p>{len(runs)} runs on {evidence[0].matrices.shape[0]} {split} images, each against "
        f"the best by a paired bootstrap ({resamples} resamples).</p>" + _ranking_table(result)
    )


def _pair_table(result: dict) -> str:
    """``paired_bootstrap``'s result: one row per score (mIoU, mDice, each class's IoU)."""
    rows = []
    for label, d in [
        ("mIoU", result["miou"]),
        ("mDice", result["mdice"]),
        *((f"IoU {c}", d) for c, d in result["per_class_iou"].items()),
    ]:
        css = "better" if d.verdict == "B better" else "worse" if d.verdict == "A better" else ""
        rows.append(
            [
                _esc(label),
                _num(d.a),
                _num(d.b),
                f"{d.difference:+.4f}",
                f"[{d.low:+.4f}, {d.high:+.4f}]" if not math.isnan(d.low) else "-",
                f"{100 * d.b_better_share:.1f}%" if not math.isnan(d.b_better_share) else "-",
                f'<span class="{css}">{_esc(d.verdict)}</span>',
            ]
        )
    return _table(["score", "A", "B", "B - A", "95% interval", "B higher in", "verdict"], rows)


def _ranking_table(result: dict) -> str:
    """``rank_against_best``'s result: one row per run, best first."""
    rows = []
    for r in result["ranking"]:
        d = r["vs_best"]["miou"] if r["vs_best"] else None
        rows.append(
            [
                _esc(r["run"]),
                _num(r["miou"]),
                _num(r["mdice"]),
                "" if d is None else f"{d.difference:+.4f}",
                "" if d is None else f"[{d.low:+.4f}, {d.high:+.4f}]",
                "best"
                if d is None
                else (
                    '<span class="worse">worse than the best</span>'
                    if d.high < 0
                    else "no difference from the best detected at 95%"
                ),
            ]
        )
    return _table(["run", "mIoU", "mDice", "mIoU - best", "95% interval", "verdict"], rows)


def _pictures(run_dirs: Sequence[Path], records: list[dict]) -> list[str]:
    """The curves, per-class IoU (bars and table) and confusion matrices of ``segcli plot``."""
    from segcli.reports.plot import plot_runs

    parts: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        pictures = plot_runs(run_dirs, Path(tmp))
        by_name = {p.name: p for p in pictures}
        parts += ["<h2>Curves</h2>", _png(by_name["curves.png"], "loss and val mIoU per epoch")]
        if "per_class_iou.png" in by_name:
            parts += [
                "<h2>Per-class IoU (best epoch, val)</h2>",
                _png(by_name["per_class_iou.png"], "per-class IoU"),
            ]
        per_class = [(run_val(r) or {}).get("per_class_iou") or {} for r in records]
        classes = list(dict.fromkeys(c for values in per_class for c in values))
        if classes:
            parts.append(
                _table(
                    ["class", *(r["label"] for r in records)],
                    [[_esc(c), *(_num(values.get(c)) for values in per_class)] for c in classes],
                )
            )
        confusions = [p for p in pictures if p.name.startswith("confusion_")]
        if confusions:
            parts.append(
                "<h2>Confusion matrices (best epoch, val; rows: true class, normalised)</h2>"
            )
            parts += [_png(p, p.stem) for p in confusions]
    return parts


def _run_section(label: str, run: RunDir, split: str) -> list[str]:
    """One run's pictures: its samples at the best epoch and its worst-image gallery of
    ``split``."""
    parts = [f"<h2>{_esc(label)}</h2>"]
    if run.samples.is_file():
        parts += [
            "<h3>Samples at the best epoch: image | truth | prediction</h3>",
            _png(run.samples, "samples"),
        ]
    worst = run.worst_gallery("best", split)
    if worst.is_file():
        parts += [
            (
                f"<h3>Worst {split} images: image | truth | prediction | errors (coloured by the "
                "true class)</h3>"
            ),
            _png(worst, "worst images"),
        ]
    else:
        parts.append(
            f'<p class="note">No worst-image gallery: <code>segcli eval {_esc(run.best)} --split '
            f"{_esc(split)} --worst 8</code> draws one.</p>"
        )
    return parts


def build_report(
    run_dirs: Sequence[Path], split: str = "test", resamples: int = 2000, seed: int = 0
) -> str:
    """The report's HTML text (see the module docstring).

    Raises:
        SegcliError: a folder is not a run, or matplotlib (the ``plot`` extra) is missing.
    """
    from segcli.reports.plot import run_labels
    from segcli.reports.runs_table import run_record

    for path in run_dirs:
        if not RunDir.read(Path(path)).is_run():
            raise SegcliError(
                f"{path}: not a run folder (expected .hydra/config.yaml and checkpoints/)"
            )
    labels = run_labels(run_dirs)
    records = [{**run_record(Path(p)), "label": label} for p, label in zip(run_dirs, labels)]
    runs = [RunDir.read(Path(p)) for p in run_dirs]
    parts = [
        f"<h1>segcli report: {len(runs)} run(s)</h1>",
        f'<p class="note">generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from '
        + ", ".join(f"<code>{_esc(Path(p).resolve())}</code>" for p in run_dirs)
        + "</p>",
        "<h2>Runs</h2>",
        _runs_table(records, runs),
        "<h2>Config</h2>",
        '<p class="note">Only the keys whose values differ between the runs.</p>',
        _differing_config(records),
    ]
    if len(runs) >= 2:
        parts += [
            f"<h2>Comparison on the {_esc(split)} split</h2>",
            _comparison(run_dirs, [r["label"] for r in records], split, resamples, seed),
        ]
    parts += _pictures(run_dirs, records)
    for record, run in zip(records, runs):
        parts += _run_section(record["label"], run, split)
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>segcli report</title><style>{STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )


def _runs_table(records: list[dict], runs: list[RunDir]) -> str:
    """One row per run: status, best val scores, epochs, minutes and precision."""
    rows = []
    for record, run in zip(records, runs):
        precision = (run.summary().get("precision") or {}).get("amp", "-")
        rows.append(
            [
                _esc(record["label"]),
                _esc(record["status"]),
                _num(record["miou"]),
                _num(record["mdice"]),
                _esc(record["best_epoch"] or "-"),
                _esc(record["epochs"]),
                f"{record['minutes']:.1f}",
                _esc(precision),
            ]
        )
    header = [
        "run",
        "status",
        "best val mIoU",
        "best val mDice",
        "best epoch",
        "epochs",
        "minutes",
        "precision",
    ]
    return _table(header, rows)


def run_val(record: dict) -> dict | None:
    """The best epoch's val scores of a ``reports.runs_table.run_record`` (summary.json's
    ``val``)."""
    return RunDir.read(Path(record["path"])).summary().get("val")


def write_report(
    run_dirs: Sequence[Path], out: Path, split: str = "test", resamples: int = 2000, seed: int = 0
) -> Path:
    """Write ``build_report``'s page to ``out`` atomically; returns ``out``.

    Raises:
        SegcliError: see ``build_report``.
    """
    text = build_report(run_dirs, split, resamples, seed)
    atomic_write(Path(out), lambda f: f.write(text.encode("utf-8")))
    return Path(out)
