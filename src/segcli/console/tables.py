"""The rich tables of the commands: scores, protocols, a dataset's splits and classes, runs and
seed groups, the paired bootstrap and the ranking of ``segcli compare``, ``segcli bench``,
``segcli export``'s parity and ``segcli models``. Each takes the result its package returns and
builds a ``rich.table.Table``; printing is the caller's (``console.print_wide``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.table import Table

from segcli.console.terminal import fmt


def scores_table(title: str, class_names: Sequence[str], scores: dict) -> Table:
    """A per-class IoU/Dice table with the means and pixel accuracy as the last rows; for instance
    scores (``mask_ap`` in ``scores``) also per-class mask and box AP columns and COCO's summary
    rows (AP@[.5:.95], AP50, AP75, AP small/medium/large)."""
    coco = "mask_ap" in scores
    table = Table(title=title)
    columns = ("class", "IoU", "Dice", *(("mask AP", "box AP") if coco else ()))
    for column in columns:
        table.add_column(column, justify="left" if column == "class" else "right")
    for name in class_names:
        row = [name, fmt(scores["per_class_iou"][name]), fmt(scores["per_class_dice"][name])]
        if coco:
            row += [
                fmt(scores["per_class_mask_ap"].get(name)),
                fmt(scores["per_class_box_ap"].get(name)),
            ]
        table.add_row(*row)
    table.add_section()
    pad = ("", "") if coco else ()
    means = (fmt(scores["mask_ap"]), fmt(scores["box_ap"])) if coco else ()
    table.add_row("mean", fmt(scores["miou"]), fmt(scores["mdice"]), *means)
    table.add_row("pixel accuracy", fmt(scores["pixel_accuracy"]), "", *pad)
    if "mean_accuracy" in scores:
        table.add_row("mean accuracy", fmt(scores["mean_accuracy"]), "", *pad)
        table.add_row("frequency-weighted IoU", fmt(scores["fwiou"]), "", *pad)
    if coco:
        table.add_section()
        for label, key in (
            ("AP50", "ap50"),
            ("AP75", "ap75"),
            ("AP small", "ap_small"),
            ("AP medium", "ap_medium"),
            ("AP large", "ap_large"),
        ):
            table.add_row(
                label, "", "", fmt(scores.get(f"mask_{key}")), fmt(scores.get(f"box_{key}"))
            )
    return table


def protocols_table(values: dict, descriptions: dict) -> Table:
    """mIoU and mDice under each protocol (``metrics.confusion.protocols``), with what each one
    means."""
    table = Table(title="the same predictions under each protocol")
    for column in ("protocol", "mIoU", "mDice", "definition"):
        table.add_column(column, justify="right" if column.startswith("m") else "left")
    for name, v in values.items():
        table.add_row(name, fmt(v["miou"]), fmt(v["mdice"]), descriptions.get(name, ""))
    return table


def data_tables(result: dict) -> list[Table]:
    """Tables of ``datasets.check_dataset``'s result: images and sizes per split, then the share of
    labelled pixels of each class per split (in %)."""
    splits = result["splits"]
    table = Table(title=f"dataset {result['dataset']}")
    for column in ("split", "images", "bad", "sizes (HxW: images)"):
        table.add_column(
            column, justify="left" if column.startswith(("split", "sizes")) else "right"
        )
    for split, s in splits.items():
        sizes = s["sizes"]
        shown = ", ".join(f"{k}: {v}" for k, v in list(sizes.items())[:3]) + (
            f", ... ({len(sizes)} sizes)" if len(sizes) > 3 else ""
        )
        table.add_row(split, str(s["images"]), str(s["bad"]), shown)
    classes = Table(title="labelled pixels per class (%)")
    classes.add_column("class")
    for split in splits:
        classes.add_column(split, justify="right")
    totals = {split: max(sum(s["class_pixels"]), 1) for split, s in splits.items()}
    for i, name in enumerate(result["class_names"]):
        classes.add_row(
            name,
            *(f"{100 * s['class_pixels'][i] / totals[split]:.2f}" for split, s in splits.items()),
        )
    tables = [table, classes]
    if all("objects" in s for s in splits.values()):  # task=instance data
        objects = Table(title="objects per class (crowd regions apart)")
        objects.add_column("class")
        for split in splits:
            objects.add_column(split, justify="right")
        for i, name in enumerate(result["class_names"][1:], 1):
            objects.add_row(name, *(str(s["objects"][i]) for s in splits.values()))
        objects.add_row("crowd regions", *(str(s["crowd"]) for s in splits.values()))
        tables.append(objects)
    return tables


def runs_table(rows: list[dict], where: str) -> Table:
    """``segcli runs``: one row per run (see reports.runs_table.rows)."""
    table = Table(title=f"{len(rows)} run(s) under {where}", title_justify="left")
    for name, justify in (
        ("run", "left"),
        ("overrides", "left"),
        ("val mIoU", "right"),
        ("val mDice", "right"),
        ("best epoch", "right"),
        ("epochs", "right"),
        ("minutes", "right"),
        ("status", "left"),
    ):
        table.add_column(name, justify=justify)
    for r in rows:
        table.add_row(
            r["name"],
            r["overrides"],
            fmt(r["miou"]),
            fmt(r["mdice"]),
            str(r["best_epoch"] or "-"),
            str(r["epochs"]),
            f"{r['minutes']:.1f}",
            r["status"],
        )
    return table


def _signed(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:+.4f}"


def _interval(d) -> str:
    return "-" if math.isnan(d.low) else f"[{d.low:+.4f}, {d.high:+.4f}]"


def bootstrap_table(a: str, b: str, split: str, result: dict) -> Table:
    """``segcli compare A B``: mIoU, mDice and per-class IoU of A and B, B - A, its 95% interval,
    the share of resamples where B is higher, and the verdict
    (metrics.bootstrap.paired_bootstrap's result)."""
    table = Table(
        title=f"A = {a}, B = {b}: {split} split, {result['images']} images, paired bootstrap "
        f"over images ({result['resamples']} resamples, seed {result['seed']})",
        title_justify="left",
        caption=f"mIoU: {result['miou'].verdict}",
        caption_justify="left",
    )
    for name, justify in (
        ("score", "left"),
        ("A", "right"),
        ("B", "right"),
        ("B - A", "right"),
        ("95% interval", "right"),
        ("B higher in", "right"),
        ("verdict", "left"),
    ):
        table.add_column(name, justify=justify)

    def row(label: str, d) -> None:
        share = "-" if math.isnan(d.b_better_share) else f"{100 * d.b_better_share:.1f}%"
        table.add_row(
            label, fmt(d.a), fmt(d.b), _signed(d.difference), _interval(d), share, d.verdict
        )

    row("mIoU", result["miou"])
    row("mDice", result["mdice"])
    table.add_section()
    for name, d in result["per_class_iou"].items():
        row(f"IoU {name}", d)
    return table


def ranking_table(split: str, result: dict, resamples: int) -> Table:
    """``segcli compare RUN...`` with three or more runs: best observed mIoU first, each other run's
    difference to the best with its 95% interval (metrics.bootstrap.rank_against_best's result)."""
    table = Table(
        title=f"{split} split: runs against the best ({result['best']}), paired bootstrap over "
        f"images ({resamples} resamples)",
        title_justify="left",
    )
    for name, justify in (
        ("run", "left"),
        ("mIoU", "right"),
        ("mDice", "right"),
        ("mIoU - best", "right"),
        ("95% interval", "right"),
        ("higher than best in", "right"),
        ("verdict", "left"),
    ):
        table.add_column(name, justify=justify)
    for r in result["ranking"]:
        d = r["vs_best"]
        if d is None:
            table.add_row(r["run"], fmt(r["miou"]), fmt(r["mdice"]), "", "", "", "best")
            continue
        m = d["miou"]
        verdict = (
            "worse than the best" if m.high < 0 else "no difference from the best detected at 95%"
        )
        table.add_row(
            r["run"],
            fmt(r["miou"]),
            fmt(r["mdice"]),
            _signed(m.difference),
            _interval(m),
            f"{100 * m.b_better_share:.1f}%",
            verdict,
        )
    return table


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return fmt(mean) + (f" ± {std:.4f}" if std is not None else "")


def seed_groups_table(groups: list[dict], where: str) -> Table:
    """``segcli runs --group-seeds``: one row per config, best val mIoU and mDice as mean ± sample
    std over its seeds (reports.runs_table.group_seeds)."""
    table = Table(
        title=f"{len(groups)} config(s) under {where}, runs that differ only by seed grouped",
        title_justify="left",
        caption="mean ± sample standard deviation of each run's best val score",
        caption_justify="left",
    )
    for name, justify in (
        ("config", "left"),
        ("n", "right"),
        ("seeds", "left"),
        ("val mIoU", "right"),
        ("val mDice", "right"),
    ):
        table.add_column(name, justify=justify)
    for g in groups:
        table.add_row(
            g["overrides"] or "(all the same)",
            str(g["n"]),
            g["seeds"],
            _pm(g["miou_mean"], g["miou_std"]),
            _pm(g["mdice_mean"], g["mdice_std"]),
        )
    return table


def bench_table(r: dict) -> Table:
    """``segcli bench``: images/s of segcli, the same-settings reference loop and the naive loop."""
    st = r["settings"]
    amp = f"{st['amp']} ({st['amp_reason']})" if st.get("amp_reason") else st["amp"]
    table = Table(
        title=f"{st['model']}, {st['device']}, {amp}, channels_last={st['channels_last']}, "
        f"batch {st['batch_size']} ({st['crop'][0]}x{st['crop'][1]} crops), eval batch "
        f"{st['eval_batch_size']} at {st['eval_size'][0]}x{st['eval_size'][1]}, "
        f"{st['repeats']} x {st['seconds']:g} s each",
        title_justify="left",
    )
    for name in (
        "measurement",
        "segcli",
        "reference (same settings)",
        "ratio",
        "naive (eager fp32)",
        "ratio",
        "segcli spread",
    ):
        table.add_column(name, justify="left" if name == "measurement" else "right")
    for key, unit in (("train", "images/s"), ("eval", "images/s")):
        lo, hi = r["spread"][key]
        table.add_row(
            f"{key} ({unit})",
            f"{r[f'{key}_images_per_s']:.2f}",
            f"{r[f'reference_{key}_images_per_s']:.2f}",
            f"{r[f'{key}_vs_reference']:.3f}",
            f"{r[f'naive_{key}_images_per_s']:.2f}",
            f"{r[f'{key}_vs_naive']:.3f}",
            f"{lo:.2f}..{hi:.2f}",
        )
    table.add_row(
        "loader alone (images/s)",
        f"{r['loader_images_per_s']:.1f}",
        "",
        "",
        "",
        f"{r['loader_vs_train']:.1f}x train",
        f"{st['num_workers']} workers",
    )
    tm = r["torchmetrics_updates_per_s"]
    table.add_row(
        "metric updates/s",
        f"{r['metric_updates_per_s']:.1f}",
        "-" if tm is None else f"{tm:.1f}",
        "-" if tm is None else f"{r['metric_updates_per_s'] / tm:.2f}",
        "",
        "",
        "vs torchmetrics Jaccard",
    )
    return table


def parity_table(bundle: dict) -> Table:
    """``segcli export``'s check: one row per exported model (max |logit difference|, allclose at
    the stated rtol/atol, argmax agreement, its mIoU on the parity images beside the checkpoint's
    when they have masks, verdict) and its speed beside torch's (images/s)."""
    parity = bundle["parity"]
    table = Table(
        title=f"Parity against the checkpoint: {parity[0]['images']} images, {parity[0]['source']}"
    )
    scored = parity[0].get("miou") is not None
    for col in (
        "model",
        "max |logit diff|",
        f"allclose (rtol {parity[0]['rtol']:g}, atol {parity[0]['atol']:g})",
        "argmax agreement",
        *(["mIoU (checkpoint's)"] if scored else []),
        "verdict",
    ):
        table.add_column(col, justify="left" if col == "model" else "right", no_wrap=col == "model")
    for p in parity:  # float32 models are gated; int8 ones are reported only
        verdict = (
            "ok"
            if p["ok"]
            else "[red]beyond tolerance[/red]"
            if "int8" not in p["model"]
            else "below the float32 bar (reported)"
        )
        table.add_row(
            p["model"],
            f"{p['max_abs']:.2e}",
            "yes" if p["allclose"] else "no",
            f"{p['agreement']:.4%}",
            *([f"{p['miou']:.4f} ({p['checkpoint_miou']:.4f})"] if scored else []),
            verdict,
        )
    speeds = bundle.get("speed_images_per_second") or {}
    if speeds:
        table.caption = "images/s on the same inputs (this CPU, batch 1): " + ", ".join(
            f"{k} {v:.2f}" for k, v in speeds.items()
        )
    return table


def models_table(rows: list[dict], size: str, classes: int) -> Table:
    """``segcli models``: one row per model choice (``models.build.model_facts`` plus names and
    ``task``, semantic when a row has none); a caption says how instance GFLOPs are measured."""
    table = Table(
        title=f"models (model=NAME): parameters and GFLOPs of one {size} image, {classes} classes"
    )
    for column in ("model", "task", "arch", "encoder", "source"):
        table.add_column(column)
    table.add_column("params (M)", justify="right")
    table.add_column("GFLOPs", justify="right")
    if any(r.get("task") == "instance" for r in rows):
        table.caption = (
            "instance GFLOPs: one inference of a random-init model; they depend on the proposals "
            "and detections kept"
        )
    for r in rows:
        table.add_row(
            r["model"],
            r.get("task", "semantic"),
            str(r["arch"]),
            str(r["encoder"] or "-"),
            r["source"],
            "-" if r["params_m"] is None else f"{r['params_m']:.2f}",
            "-" if r["gflops"] is None else f"{r['gflops']:.1f}",
        )
    return table
