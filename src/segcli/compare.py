"""``segcli runs``: find run folders (single runs and sweep jobs), one record per run, the
overrides that differ between them, filtering, sorting, and table/csv/json output.

A run folder is one with ``.hydra/config.yaml`` and a ``checkpoints/`` folder or ``metrics.jsonl``.
Its status: summary.json's (done, interrupted, failed); without one, ``running`` while
``running.json`` names a live process on this host (``running?`` for another host), else ``killed``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import operator
import os
import re
import socket
from collections.abc import Sequence
from pathlib import Path

import yaml

from segcli.errors import SegcliError
from segcli.resume import flatten

COLUMNS = ("name", "overrides", "miou", "mdice", "best_epoch", "epochs", "minutes", "status")
DESCENDING = {"miou", "mdice"}  # --sort on these puts the best first
_FILTER = re.compile(r"^([\w./-]+)(!=|>=|<=|=|>|<)(.*)$")


def find_runs(dirs: Sequence[Path]) -> list[Path]:
    """Run folders under ``dirs`` (recursively), sorted by path.

    Raises:
        SegcliError: a given folder does not exist.
    """
    found = set()
    for root in dirs:
        root = Path(root)
        if not root.is_dir():
            raise SegcliError(f"{root}: no such folder (expected a folder of runs, e.g. outputs/ or multirun/)")
        for config in root.rglob(".hydra/config.yaml"):
            run = config.parent.parent
            if (run / "checkpoints").is_dir() or (run / "metrics.jsonl").is_file():
                found.add(run)
    return sorted(found)


def _alive(info: dict) -> str:
    if info.get("host") != socket.gethostname():
        return "running?"
    try:
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return "killed"
    return "running"


def _parse_override(item: str) -> tuple[str, str]:
    key, _, value = item.partition("=")
    return key.lstrip("+~"), value


def run_record(path: Path) -> dict:
    """One run: ``name`` (the folder), ``path``, ``params`` ({key: value} of the overrides and of the run's
    saved config and group choices), ``given`` (the keys its command line set), ``miou``/``mdice``
    (best validation, fractions), ``best_epoch``, ``epochs`` (validated epochs logged), ``minutes``
    (training wall-clock), ``status``, and ``history`` (the metrics.jsonl records)."""
    path = Path(path)
    overrides_file = path / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
    params = dict(_parse_override(str(o)) for o in overrides or [] if not str(o).startswith("hydra"))
    settings = {}  # every config value and group choice of the run, for keys other runs override
    if (path / ".hydra" / "config.yaml").is_file():
        settings.update(flatten(yaml.safe_load((path / ".hydra" / "config.yaml").read_text()) or {}))
    if (path / ".hydra" / "hydra.yaml").is_file():
        hydra_cfg = yaml.safe_load((path / ".hydra" / "hydra.yaml").read_text()) or {}
        choices = hydra_cfg.get("hydra", {}).get("runtime", {}).get("choices", {}) or {}
        settings.update({k: v for k, v in choices.items() if not k.startswith("hydra/")})
    metrics = path / "metrics.jsonl"
    history = []
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            try:
                history.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a line cut by a kill
    summary_file = path / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    validated = [h for h in history if h.get("val_miou") is not None]
    best = max(validated, key=lambda h: h["val_miou"], default=None)
    if summary.get("val"):
        miou, mdice, best_epoch = summary["val"].get("miou"), summary["val"].get("mdice"), summary.get("best_epoch")
    elif best is not None:
        miou, mdice, best_epoch = best["val_miou"], best.get("val_mdice"), best.get("epoch")
    else:
        miou = mdice = best_epoch = None
    seconds = summary.get("train_seconds", sum(h.get("epoch_seconds", 0) for h in history))
    if summary.get("status"):
        status = summary["status"]
    elif (path / "running.json").is_file():
        status = _alive(json.loads((path / "running.json").read_text()))
    else:
        status = "killed"
    params = {**{k: str(v) for k, v in settings.items()}, **params}  # given overrides win over the saved values
    return {"name": str(path), "path": str(path.resolve()), "params": params, "given": sorted(params_given(overrides)),
            "miou": miou, "mdice": mdice,
            "best_epoch": best_epoch, "epochs": len(history), "minutes": round(seconds / 60, 2), "status": status,
            "history": history}


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
    ops = {"=": operator.eq, "!=": operator.ne, ">": operator.gt, "<": operator.lt, ">=": operator.ge, "<=": operator.le}
    return ops[op](a, w)


def select(records: list[dict], filters: Sequence[str] = (), sort: str = "miou") -> list[dict]:
    """Keep the records that pass every filter (``KEY=V``, ``KEY!=V``, ``KEY>V``, ``<``, ``>=``, ``<=``;
    KEY a column or an override key, numbers compared as numbers), sorted by ``sort`` (miou and mdice:
    best first; other keys ascending; runs without the value last).

    Raises:
        SegcliError: a filter that is not KEY OP VALUE.
    """
    kept = records
    for text in filters:
        match = _FILTER.match(text)
        if not match:
            raise SegcliError(f"--filter {text}: expected KEY=VALUE, KEY!=VALUE or KEY>VALUE (also <, >=, <=), "
                              "KEY a column (miou, status, ...) or an override (model, loss, optimizer.lr, ...)")
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
    """``rows`` as CSV text with a header of ``COLUMNS`` (fractions as floats, minutes as floats)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    return buffer.getvalue()


def to_json(records: Sequence[dict], keys: Sequence[str]) -> str:
    """JSON list: every column plus ``params`` (all overrides), ``differing`` keys and ``path``."""
    return json.dumps([{**{c: r[c] for c in COLUMNS if c != "overrides"}, "path": r["path"], "params": r["params"],
                        "overrides": {k: r["params"].get(k) for k in keys}} for r in records], indent=2)
