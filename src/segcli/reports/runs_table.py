"""``segcli runs``: find run folders (single runs and sweep jobs), one record per run, the
overrides that differ between them, filtering, sorting, grouping of runs that differ only by
their seed (``--group-seeds``), and table/csv/json output.

A run folder is one with ``.hydra/config.yaml`` and a ``checkpoints/`` folder or ``metrics.jsonl``.
Everything is read through ``runs.run_dir.RunDir`` (status rules: ``RunDir.status``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import operator
import re
from collections.abc import Sequence
from pathlib import Path

from segcli.config import flatten
from segcli.errors import SegcliError
from segcli.runs.run_dir import RunDir

COLUMNS = ("name", "overrides", "miou", "mdice", "best_epoch", "epochs", "minutes", "status")
GROUP_COLUMNS = ("overrides", "n", "seeds", "miou_mean", "miou_std", "mdice_mean", "mdice_std")
SEED_KEYS = ("seed", "trainer.seed")
DESCENDING = {"miou", "mdice"}  # --sort on these puts the best first
_FILTER = re.compile(r"^([\w./-]+)(!=|>=|<=|=|>|<)(.*)$")


def find_runs(dirs: Sequence[Path]) -> list[Path]:
    """Run folders under ``dirs`` (recursively; see ``run.RunDir.is_run``), sorted by path.

    Raises:
        SegcliError: a given folder does not exist.
    """
    found = set()
    for root in dirs:
        root = Path(root)
        if not root.is_dir():
            raise SegcliError(
                f"{root}: no such folder (expected a folder of runs, e.g. outputs/ or multirun/)"
            )
        for config in root.rglob(".hydra/config.yaml"):
            if RunDir.read(config.parent.parent).is_run():
                found.add(config.parent.parent)
    return sorted(found)


def _parse_override(item: str) -> tuple[str, str]:
    key, _, value = item.partition("=")
    return key.lstrip("+~"), value


def run_record(path: Path) -> dict:
    """One run: ``name`` (the folder), ``path``, ``params`` ({key: value} of the overrides and of
    the run's saved config and group choices), ``given`` (the keys its command line set),
    ``miou``/``mdice`` (best validation, fractions), ``best_epoch``, ``epochs`` (validated epochs
    logged), ``minutes`` (training wall-clock), ``status`` (``runs.run_dir.STATUSES``), and
    ``history`` (the metrics.jsonl records)."""
    run = RunDir.read(path)
    overrides = run.overrides()
    params = dict(_parse_override(o) for o in overrides if not o.startswith("hydra"))
    # every config value and group choice of the run, for keys other runs override
    settings = {**flatten(run.hydra_config()), **run.group_choices()}
    history, summary = run.metrics(), run.summary()
    validated = [h for h in history if h.get("val_miou") is not None]
    best = max(validated, key=lambda h: h["val_miou"], default=None)
    if summary.get("val"):
        miou, mdice, best_epoch = (
            summary["val"].get("miou"),
            summary["val"].get("mdice"),
            summary.get("best_epoch"),
        )
    elif best is not None:
        miou, mdice, best_epoch = best["val_miou"], best.get("val_mdice"), best.get("epoch")
    else:
        miou = mdice = best_epoch = None
    seconds = summary.get("train_seconds", sum(h.get("epoch_seconds", 0) for h in history))
    params = {
        **{k: str(v) for k, v in settings.items()},
        **params,
    }  # given overrides win over the saved values
    return {
        "name": str(path),
        "path": str(Path(path).resolve()),
        "params": params,
        "given": sorted(params_given(overrides)),
        "miou": miou,
        "mdice": mdice,
        "best_epoch": best_epoch,
        "epochs": len(history),
        "minutes": round(seconds / 60, 2),
        "status": run.status(),
        "history": history,
    }


def params_given(overrides) -> list[str]:
    """The keys a run's command line set (``hydra.*`` left out)."""
    return [_parse_override(str(o))[0] for o in overrides or [] if not str(o).startswith("hydra")]


def differing_keys(records: Sequence[dict]) -> list[str]:
    """Keys that some run's command line set and whose values are not the same in every run (a run
    that did not set one shows its config's value)."""
    keys = sorted({k for r in records for k in r["given"]})
    return [k for k in keys if len({r["params"].get(k) for r in records}) > 1]


def _value(record: dict, key: str):
    return record[key] if key in record and key != "params" else record["params"].get(key)


def _compare(actual, op: str, wanted: str) -> bool:
    if actual is None:
        return op == "!="
    try:
        a, w = float(actual), float(wanted)
    except (TypeError, ValueError):
        a, w = str(actual), wanted
        if op not in ("=", "!="):
            return False
    ops = {
        "=": operator.eq,
        "!=": operator.ne,
        ">": operator.gt,
        "<": operator.lt,
        ">=": operator.ge,
        "<=": operator.le,
    }
    return ops[op](a, w)


def select(records: list[dict], filters: Sequence[str] = (), sort: str = "miou") -> list[dict]:
    """Keep the records that pass every filter (``KEY=V``, ``KEY!=V``, ``KEY>V``, ``<``, ``>=``,
    ``<=``;
    KEY a column or an override key, numbers compared as numbers), sorted by ``sort`` (miou and
    mdice: best first; other keys ascending; runs without the value last).

    Raises:
        SegcliError: a filter that is not KEY OP VALUE.
    """
    kept = records
    for text in filters:
        match = _FILTER.match(text)
        if not match:
            raise SegcliError(
                f"--filter {text}: expected KEY=VALUE, KEY!=VALUE or KEY>VALUE (also <, >=, <=), "
                "KEY a column (miou, status, ...) or an override (model, loss, optimizer.lr, ...)"
            )
        key, op, wanted = match.groups()
        kept = [r for r in kept if _compare(_value(r, key), op, wanted)]

    def order(r: dict):
        v = _value(r, sort)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return (1, 0, "")
        if isinstance(v, (int, float)):
            return (0, -v if sort in DESCENDING else v, "")
        return (0, 0, str(v))

    return sorted(kept, key=order)


def rows(records: Sequence[dict], keys: Sequence[str]) -> list[dict]:
    """Flat rows: name, the differing overrides as ``k=v`` text, and the other columns."""
    out = []
    for r in records:
        overrides = " ".join(f"{k}={r['params'].get(k, '-')}" for k in keys)
        out.append({"name": r["name"], "overrides": overrides, **{c: r[c] for c in COLUMNS[2:]}})
    return out


def to_csv(table: Sequence[dict]) -> str:
    """``rows`` as CSV text with a header of ``COLUMNS`` (fractions as floats, minutes as
    floats)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    return buffer.getvalue()


def to_json(records: Sequence[dict], keys: Sequence[str]) -> str:
    """JSON list: every column plus ``params`` (all overrides), ``differing`` keys and ``path``."""
    return json.dumps(
        [
            {
                **{c: r[c] for c in COLUMNS if c != "overrides"},
                "path": r["path"],
                "params": r["params"],
                "overrides": {k: r["params"].get(k) for k in keys},
            }
            for r in records
        ],
        indent=2,
    )


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1 in the denominator; None for fewer than 2
    values)."""
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def group_seeds(records: Sequence[dict], keys: Sequence[str]) -> list[dict]:
    """Runs whose whole config differs only by the seed (``seed``, ``trainer.seed``) as one group:
    ``overrides`` (the differing keys but the seed, as ``k=v`` text), ``n``, ``seeds``,
    ``miou_mean``, ``miou_std``, ``mdice_mean``, ``mdice_std`` (best val scores; sample std, None
    for one run; runs without a score left out of the statistics but listed) and ``runs`` (name,
    seed, miou, mdice of each). Best mean mIoU first; the records' order within a group."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        key = tuple(sorted((k, v) for k, v in r["params"].items() if k not in SEED_KEYS))
        groups.setdefault(key, []).append(r)
    shown = [k for k in keys if k not in SEED_KEYS]
    out = []
    for members in groups.values():
        scored = [m for m in members if m["miou"] is not None and not math.isnan(m["miou"])]
        miou_mean, miou_std = _mean_std([m["miou"] for m in scored])
        mdice_mean, mdice_std = _mean_std([m["mdice"] for m in scored if m["mdice"] is not None])
        seeds = [m["params"].get("seed", m["params"].get("trainer.seed")) for m in members]
        out.append(
            {
                "overrides": " ".join(f"{k}={members[0]['params'].get(k, '-')}" for k in shown),
                "n": len(scored),
                "seeds": " ".join(str(x) for x in seeds),
                "miou_mean": miou_mean,
                "miou_std": miou_std,
                "mdice_mean": mdice_mean,
                "mdice_std": mdice_std,
                "runs": [
                    {
                        "name": m["name"],
                        "seed": seed,
                        "miou": m["miou"],
                        "mdice": m["mdice"],
                        "status": m["status"],
                    }
                    for m, seed in zip(members, seeds, strict=True)
                ],
            }
        )
    return sorted(out, key=lambda g: (g["miou_mean"] is None, -(g["miou_mean"] or 0.0)))


def groups_to_csv(groups: Sequence[dict]) -> str:
    """``group_seeds`` as CSV with a header of ``GROUP_COLUMNS``."""
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=GROUP_COLUMNS, lineterminator="\n", extrasaction="ignore"
    )
    writer.writeheader()
    writer.writerows(groups)
    return buffer.getvalue()
