"""``segcli runs``, ``segcli compare``, ``segcli plot`` and ``segcli report``: runs looked at
together."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from segcli import console
from segcli.cli.common import JsonOption, NoEvalOption, SeedOption, user_errors
from segcli.errors import SegcliError

ResamplesOption = Annotated[int, typer.Option(help="Bootstrap resamples of the images.")]


def list_runs(
    dirs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Folders to search (default: outputs/ and multirun/ where they exist)."
        ),
    ] = None,
    sort: Annotated[
        str, typer.Option(help="Column or override key; miou and mdice: best first.")
    ] = "miou",
    filters: Annotated[
        list[str] | None,
        typer.Option(
            "--filter",
            help="KEY=VALUE, KEY!=VALUE, KEY>VALUE (<, >=, <=); repeatable, all must hold.",
        ),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
    group_seeds: Annotated[
        bool,
        typer.Option(
            "--group-seeds",
            help="One row per config: runs that differ only by seed as mean, std and n.",
        ),
    ] = False,
) -> None:
    """One row per run: the overrides that differ between runs, best val mIoU and mDice, epochs,
    minutes and status (running, done, interrupted, failed, killed). With --group-seeds, one row
    per config over its seeds."""
    from segcli.reports import runs_table as compare

    with user_errors():
        if fmt not in ("table", "csv", "json"):
            raise SegcliError(f"--format {fmt}: expected table, csv or json")
        roots = _search_roots(dirs)
        records = [compare.run_record(p) for p in compare.find_runs(roots)]
        keys = compare.differing_keys(records)
        records = compare.select(records, filters or (), sort)
        where = ", ".join(str(r) for r in roots)
        if group_seeds:
            _print_seed_groups(compare.group_seeds(records, keys), fmt, where)
        else:
            _print_runs(records, keys, fmt, where)


def _search_roots(dirs: list[Path] | None) -> list[Path]:
    """The folders ``segcli runs`` searches: ``dirs``, else outputs/ and multirun/ here."""
    roots = dirs or [p for p in (Path("outputs"), Path("multirun")) if p.is_dir()]
    if not roots:
        raise SegcliError(
            "no outputs/ or multirun/ here; give the folders to search: segcli runs DIR..."
        )
    return roots


def _print_seed_groups(groups: list[dict], fmt: str, where: str) -> None:
    from segcli.reports import runs_table as compare

    if fmt == "csv":
        sys.stdout.write(compare.groups_to_csv(groups))
    elif fmt == "json":
        print(json.dumps(groups, indent=2))
    else:
        console.print_wide(console.seed_groups_table(groups, where))


def _print_runs(records: list[dict], keys: list[str], fmt: str, where: str) -> None:
    from segcli.reports import runs_table as compare

    if fmt == "csv":
        sys.stdout.write(compare.to_csv(compare.rows(records, keys)))
    elif fmt == "json":
        print(compare.to_json(records, keys))
    else:
        console.print_wide(console.runs_table(compare.rows(records, keys), where))


def compare(
    runs: Annotated[
        list[Path],
        typer.Argument(
            help="Run folders (their evals/best-SPLIT.npz, from segcli eval) or eval files "
            "(.json/.npz)."
        ),
    ],
    split: Annotated[str, typer.Option(help="The split both were evaluated on.")] = "test",
    resamples: ResamplesOption = 10000,
    seed: SeedOption = 0,
    json_path: JsonOption = None,
    no_eval: NoEvalOption = False,
) -> None:
    """Is B really better than A? A paired bootstrap over the test images of mIoU, mDice and
    per-class IoU: the difference, its 95% interval and a verdict. Three or more runs: each
    against the best. A run without a current eval is evaluated first (kept in RUN/evals/)."""
    from segcli.files import write_json
    from segcli.inference.eval_files import ensure_eval, load_evidence
    from segcli.metrics import bootstrap

    with user_errors():
        loaded = [(load_evidence if no_eval else ensure_eval)(r, split) for r in runs]
        labels = [label for label, _ in loaded]
        if len(set(labels)) < len(labels):
            labels = [str(r) for r in runs]
        evidence = [e for _, e in loaded]
        bootstrap.check_same_images(
            labels, [e.names for e in evidence], [e.class_names for e in evidence]
        )
        result = bootstrap.compare_runs(
            labels, [e.matrices for e in evidence], resamples, seed, evidence[0].class_names
        )
        if len(runs) == 2:
            console.print_wide(console.bootstrap_table(labels[0], labels[1], split, result))
        else:
            console.print_wide(console.ranking_table(split, result, resamples))
        if json_path:
            out = {
                "split": split,
                "runs": [str(r) for r in runs],
                "labels": labels,
                **bootstrap.as_json(result),
            }
            write_json(json_path, out)
            console.out.print(f"wrote {json_path}", highlight=False)


def plot(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run folders (e.g. the jobs of a sweep).")],
    out_dir: Annotated[
        Path, typer.Option("-o", "--out-dir", help="Where the PNG files go.")
    ] = Path("plots"),
) -> None:
    """PNG plots of runs: loss and mIoU curves on shared axes, per-class IoU bars of each best
    epoch, and each run's normalised confusion matrix (needs matplotlib: pip install
    'segcli\\[plot]')."""
    from segcli.reports.plot import plot_runs

    with user_errors():
        for path in plot_runs(run_dirs, out_dir):
            print(path)


def html_report(
    runs: Annotated[list[Path], typer.Argument(help="Run folders.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="The HTML file to write.")] = Path(
        "report.html"
    ),
    split: Annotated[
        str, typer.Option(help="Split of the evals compared and of the worst-image galleries.")
    ] = "test",
    resamples: ResamplesOption = 10000,
    seed: SeedOption = 0,
    no_eval: NoEvalOption = False,
) -> None:
    """One self-contained HTML file (no script, no network): configs side by side (the keys that
    differ), curves, per-class IoU, confusion matrices, samples, worst images, and the paired
    bootstrap comparison of the runs' evals of best.pt on --split (a run without a current one is
    evaluated first and the eval kept in RUN/evals/, unless --no-eval)."""
    from segcli.reports.html import write_report

    with user_errors():
        if not no_eval:
            from segcli.inference.eval_files import ensure_eval

            for run in runs:
                ensure_eval(run, split)
        path = write_report(runs, out, split, resamples, seed)
        console.out.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)", highlight=False)
