"""The `segcli` command: thin Typer commands that hand off to training/jobs.py (train), inference/evaluation.py,
inference/predict.py, reports/runs_table.py (runs), reports/plot.py, training/bench.py and data/datasets.py (data check).

Trailing arguments of `segcli train` go to Hydra unchanged (see config.py).
"""

from __future__ import annotations

import json
import math
import os
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import typer

from segcli import console
from segcli.config import (
    check_train_args,
    compose_config,
    config_dir,
    distributed_args,
    group_options,
    run_hydra,
    sweep_args,
    to_plain,
)
from segcli.errors import RunInterrupted, SegcliError
from segcli.training import distributed

EXIT_USAGE = 2

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, evaluate and apply 2-D semantic segmentation models from the shell.\n\n"
                       "Config groups of `segcli train`: " + ", ".join(group_options()) +
                       " (`segcli train --help` lists their options).")


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False) -> None:
    if debug:
        os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra's own switch; also read by debugging() in sweep jobs


def debugging() -> bool:
    """``--debug`` was given (or HYDRA_FULL_ERROR=1 set): errors show their tracebacks."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def error_line(exc: BaseException) -> str:
    """The message of a SegcliError; for one raised in a DataLoader worker (which torch re-raises
    with the worker's whole traceback in the message), the original message only."""
    text = str(exc)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split("SegcliError: ", 1)[-1]
    return text


@contextmanager
def user_errors():
    """Turn a SegcliError into one line on stderr and exit code 2 (a traceback with --debug);
    a RunInterrupted into its message and exit code 130/143."""
    try:
        yield
    except SegcliError as exc:
        if debugging():
            raise
        console.error(error_line(exc))
        raise SystemExit(EXIT_USAGE) from None
    except RunInterrupted as exc:
        print(f"segcli: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:  # Ctrl-C outside the training loop (which handles it itself)
        if debugging():
            raise
        print("segcli: interrupted", file=sys.stderr, flush=True)
        raise SystemExit(130) from None


def _train_help() -> str:
    lines = ["Train a model. OVERRIDES use Hydra's syntax: group=option, key=value, +new_key=value.",
             "", "Config groups (files of conf/; add your own with --config-dir DIR):", ""]
    for group, options in group_options().items():
        lines.append(f"  {group:<13} {', '.join(options)}")
    lines += ["", "Examples:", "",
              "  segcli train model=fpn model.encoder_name=resnet34 trainer.epochs=30 optimizer.lr=3e-4",
              "  segcli train dataset=camvid dataset.root=data/camvid trainer.max_minutes=20",
              "  segcli train --cfg job          print the composed config (--resolve to resolve it)",
              "  segcli train -m loss=ce,dice    a Hydra multirun sweep",
              "  segcli train --resume RUN_DIR   continue a stopped run from checkpoints/last.pt",
              "  segcli train --resume RUN_DIR --allow-changes trainer.epochs=100",
              "", f"Configs: {config_dir()}. Hydra's own flags (--cfg, -m, --config-dir, --hydra-help) pass through."]
    return "\b\n" + "\n".join(lines)  # \b: click keeps the line breaks


def _train_task(cfg) -> float:
    """Hydra's task function: returns the best val mIoU (NaN for a failed job of a sweep), the
    objective of Hydra's optuna sweeper. In a sweep a job's error is printed (with its traceback under
    --debug), recorded in the sweep's failures.jsonl, and the next job runs; Ctrl-C still stops the
    whole sweep. Under torchrun every rank runs the job in rank 0's run folder."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from segcli.training import jobs, sweeps

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if distributed.launched_by_torchrun():
        return _train_distributed(cfg, run_dir)
    if hydra_cfg.mode != RunMode.MULTIRUN:
        with user_errors():
            return _report_best(jobs.run_job(to_plain(cfg), run_dir), run_dir)
    try:
        summary = jobs.run_job(to_plain(cfg), run_dir)
    except (RunInterrupted, KeyboardInterrupt):
        with user_errors():
            raise
    except Exception as exc:  # noqa: BLE001 - any job failure is reported and the sweep goes on
        line = error_line(exc) if isinstance(exc, SegcliError) else f"{type(exc).__name__}: {exc}"
        if debugging():
            traceback.print_exc()
        console.error(f"job {hydra_cfg.job.num}: {line}")
        sweeps.record_failure(Path(hydra_cfg.sweep.dir), {"job": hydra_cfg.job.num, "dir": str(run_dir),
                                                          "overrides": list(hydra_cfg.overrides.task),
                                                          "error": line})
        return math.nan
    return _report_best(summary, run_dir)


def _report_best(summary: dict, run_dir: Path, processes: int = 1) -> float:
    """Print the best val mIoU and, as the last line, the run folder (``run=$(segcli train ... | tail -1)``);
    returns the mIoU (NaN when none)."""
    best = summary.get("val") and summary["val"]["miou"]
    where = f" ({processes} processes)" if processes > 1 else ""
    console.out.print(f"best val mIoU {console.fmt(best)} at epoch {summary.get('best_epoch')}{where}; "
                         "run directory:", highlight=False)
    print(run_dir, flush=True)
    return math.nan if best is None else float(best)


def _train_distributed(cfg, run_dir: Path) -> float:
    """One rank of ``torchrun -m segcli train``: join the group, take rank 0's run folder (the other
    ranks' Hydra folders are throw-away temporary ones), run the job; only rank 0 prints and writes."""
    import shutil

    from segcli.training import jobs

    ddp = distributed.init_from_env()
    own = run_dir
    run_dir = Path(ddp.broadcast(str(run_dir.resolve())))
    if not ddp.main:
        console.out.quiet = True
        shutil.rmtree(own, ignore_errors=True)
    try:
        with user_errors():
            summary = jobs.run_job(to_plain(cfg), run_dir, ddp)
    finally:
        distributed.shutdown()
    if not ddp.main:
        return math.nan
    return _report_best(summary, run_dir, ddp.world)


def _resume(run_dir: Path, overrides: list[str], allow_changes: bool) -> None:
    from segcli.training import jobs

    with user_errors():
        summary = jobs.resume(run_dir, overrides, allow_changes)
    console.out.print(f"best val mIoU {console.fmt(summary.get('val') and summary['val']['miou'])} "
                         f"at epoch {summary.get('best_epoch')}; run directory:", highlight=False)
    print(run_dir.resolve(), flush=True)


@app.command(help=_train_help(), options_metavar="[HYDRA FLAGS] [OVERRIDES]...",
             context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    resume: Annotated[Path | None, typer.Option(
        "--resume", help="Continue RUN_DIR from checkpoints/last.pt (also: resume=RUN_DIR). "
                         "OVERRIDES must then match the run's config, or be safe changes with --allow-changes.")] = None,
    allow_changes: Annotated[bool, typer.Option(
        "--allow-changes", help="With --resume: apply safe changes (more epochs, max_minutes, num_workers, ...).")] = False,
) -> None:
    """Compose the config from the trailing arguments and run the training job under Hydra."""
    args = list(ctx.args)
    for arg in list(args):
        if arg.startswith("resume="):
            args.remove(arg)
            resume = Path(arg.split("=", 1)[1])
    if resume is not None:
        if distributed.launched_by_torchrun():
            with user_errors():
                raise SegcliError(f"--resume under torchrun: start the same command with hydra.run.dir={resume}; "
                                  "the ranks resume it together")
        _resume(resume, args, allow_changes)
        return
    with user_errors():
        if allow_changes:
            raise SegcliError("--allow-changes only applies with --resume RUN_DIR")
        check_train_args(args)
    args = sweep_args(args)
    if distributed.launched_by_torchrun():
        with user_errors():
            args = distributed_args(args)
    run_hydra(_train_task, args)  # a sweep with failed jobs exits 1 (sweeps.SweepReport)


InferenceOption = Annotated[str, typer.Option(
    "--inference", help="Inference preset of conf/inference/: whole, slide, flip, multiscale, crf; "
                        "change its keys with trailing inference.KEY=VALUE arguments.")]


def _split_overrides(args: list[str]) -> tuple[list[str], list[str]]:
    """Positional arguments split into inputs and ``inference.KEY=VALUE`` overrides."""
    overrides = [a for a in args if a.lstrip("+~").startswith("inference.") and "=" in a]
    return [a for a in args if a not in overrides], overrides


EVAL_METRICS = ("miou", "mdice", "pixel_accuracy", "mean_accuracy", "fwiou", "per_image_miou", "per_image_mdice",
                "hd95")


@app.command("eval")
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint of a run: RUN_DIR/checkpoints/best.pt.")],
    overrides: Annotated[list[str] | None, typer.Argument(
        help="inference.KEY=VALUE changes to the --inference preset, e.g. inference.stride=[256,256].",
        show_default=False)] = None,
    split: Annotated[str, typer.Option(help="Split of the run's dataset: train, val or test.")] = "val",
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the numbers to this JSON file.")] = None,
    data_root: Annotated[str | None, typer.Option(help="Read the dataset from here instead.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per batch (default: the run's).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    metrics: Annotated[str | None, typer.Option(
        help="Also print these, comma-separated: " + ", ".join(EVAL_METRICS)
        + " (hd95: pixels, per class; slower).")] = None,
    show_protocols: Annotated[bool, typer.Option(
        "--protocols", help="Print mIoU and mDice under each named protocol, to match a paper's table.")] = False,
    worst: Annotated[int, typer.Option(
        help="Draw the K images of lowest per-image mIoU: image | truth | prediction | errors (by true class).",
        metavar="K")] = 0,
    amp: Annotated[str | None, typer.Option(
        help="Autocast: auto, bf16, fp16 or false (default: the run's trainer.amp; auto follows this machine).")] = None,
    inference: InferenceOption = "whole",
    save_probs: Annotated[bool, typer.Option(
        "--save-probs", help="Also write every image's (C, H, W) float16 class probabilities, compressed, to "
        "RUN/evals/CHECKPOINT-SPLIT-probs/NAME.npz (NAME-probs/ beside --json).")] = False,
) -> None:
    """Evaluate a checkpoint: per-class IoU, Dice and accuracy, their means and pixel accuracy."""
    from segcli.files import write_json
    from segcli.inference.evaluation import evaluate_checkpoint
    from segcli.inference.modes import describe, load_settings

    with user_errors():
        if split not in ("train", "val", "test"):
            raise SegcliError(f"--split {split}: expected train, val or test")
        wanted = [m.strip() for m in (metrics or "").split(",") if m.strip()]
        unknown = [m for m in wanted if m not in EVAL_METRICS]
        if unknown:
            raise SegcliError(f"--metrics {','.join(unknown)}: expected some of {', '.join(EVAL_METRICS)}")
        if worst < 0:
            raise SegcliError(f"--worst {worst}: expected a number of images >= 0")
        settings = load_settings(inference, overrides or ())
        console.out.print(describe(settings), highlight=False)
        worst_png = _beside_eval(checkpoint, split, json_path, settings.tag, "-worst.png")
        probs_dir = _beside_eval(checkpoint, split, json_path, settings.tag, "-probs") if save_probs else None
        result, evidence = evaluate_checkpoint(checkpoint, split, data_root, batch_size, device,
                                               hd95="hd95" in wanted, amp=amp, worst=worst, worst_png=worst_png,
                                               inference=settings, probs_dir=probs_dir)
        _print_eval(result, f"{split}: {result['images']} images, {checkpoint}", wanted, show_protocols, worst_png)
        saved = _save_eval(checkpoint, split, result, evidence, settings.tag)
        if json_path:
            write_json(json_path, result)
            evidence.save(json_path.with_suffix(".npz"))
            saved = [json_path, json_path.with_suffix(".npz")]
        if saved:
            console.out.print(f"wrote {saved[0]} and {saved[1]} (per-image confusion matrices)", highlight=False)


def _print_eval(result: dict, title: str, wanted: list[str], show_protocols: bool, worst_png: Path) -> None:
    """The scores table of ``segcli eval``, then the extra metrics asked for, the protocols, the
    precision and the worst images (when ``result`` has them)."""
    from segcli.metrics.confusion import PROTOCOLS

    console.out.print(console.scores_table(title, list(result["per_class_iou"]), result))
    for name in wanted:
        if name == "hd95":
            per_class = ", ".join(f"{c} {v:.2f} ({result['hd95_images'][c]} images)"
                                  for c, v in result["per_class_hd95"].items())
            console.out.print(f"hd95 {result['hd95']:.2f} px (95th-percentile Hausdorff distance, medpy's "
                                 f"definition; per class: {per_class})", highlight=False)
            continue
        console.out.print(f"{name} {console.fmt(result[name])}", highlight=False)
    if show_protocols:
        console.out.print(console.protocols_table(result["protocols"], PROTOCOLS))
    console.out.print(f"protocol: {result['protocol']}", highlight=False)
    precision = result["precision"]
    console.out.print(f"precision: {precision['amp']} (amp={precision['setting']}: {precision['reason']})",
                         highlight=False)
    for item in result.get("worst_images", []):
        console.out.print(f"worst: {item['name']} mIoU {item['miou']:.4f} ("
                             + ", ".join(f"{c} {v:.2f}" for c, v in item["worst_classes"].items()) + ")",
                             highlight=False)
    if "worst_images" in result:
        console.out.print(f"wrote {worst_png} ({len(result['worst_images'])} images: image | truth | "
                             "prediction | errors coloured by the true class)", highlight=False)
    if "probabilities" in result:
        probs = result["probabilities"]
        console.out.print(f"wrote {probs['folder']}/ ({probs['images']} images' class probabilities, "
                             "NAME.npz: probs (C, H, W) float16, class_names)", highlight=False)


def _run_of(checkpoint: Path):
    """The run folder holding ``RUN/checkpoints/NAME.pt`` (a ``RunDir`` reader), or None."""
    from segcli.runs.run_dir import RunDir

    checkpoint = Path(checkpoint).resolve()
    run = RunDir.read(checkpoint.parent.parent)
    return run if checkpoint.parent.name == "checkpoints" and run.is_run() else None


def _beside_eval(checkpoint: Path, split: str, json_path: Path | None, inference: str, suffix: str) -> Path:
    """Where an eval's extra output goes (``suffix``: ``-worst.png`` for ``--worst``, ``-probs`` for
    ``--save-probs``): beside ``--json`` (NAME-worst.png), else in the run folder
    (RUN/evals/CHECKPOINT-SPLIT[-INFERENCE]-worst.png), else ./SPLIT-worst.png."""
    if json_path is not None:
        return json_path.with_name(f"{json_path.stem}{suffix}")
    run, stem = _run_of(checkpoint), Path(checkpoint).stem
    if run is not None:
        return (run.worst_gallery if suffix == "-worst.png" else run.eval_probabilities)(stem, split, inference)
    return Path(f"{split}{suffix}")


def _save_eval(checkpoint: Path, split: str, result: dict, evidence, inference: str = "whole") -> list[Path]:
    """A checkpoint inside a run folder (RUN/checkpoints/NAME.pt): its scores and per-image matrices
    go to RUN/evals/NAME-SPLIT.json and .npz (NAME-SPLIT-INFERENCE.* for other inference modes than
    whole), where ``segcli compare RUN...`` (or ``compare FILE.json``) finds them. Returns
    the paths written ([] for a checkpoint elsewhere, or a folder that cannot be written: a note)."""
    from segcli.files import write_json

    run = _run_of(checkpoint)
    if run is None:
        return []
    json_file, npz = run.eval_files(Path(checkpoint).stem, split, inference)
    try:
        evidence.save(npz)
        write_json(json_file, result)
    except OSError as exc:
        console.out.print(f"note: not saved in the run folder ({exc.strerror}: {exc.filename})", highlight=False)
        return []
    return [json_file, npz]


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(
        help="Run folders (their evals/best-SPLIT.npz, from segcli eval) or eval files (.json/.npz).")],
    split: Annotated[str, typer.Option(help="The split both were evaluated on.")] = "test",
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples of the images.")] = 10000,
    seed: Annotated[int, typer.Option(help="Seed of the resampling (same seed: same result).")] = 0,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the numbers to this JSON file.")] = None,
) -> None:
    """Is B really better than A? A paired bootstrap over the test images of mIoU, mDice and
    per-class IoU: the difference, its 95% interval and a verdict. Three or more runs: each
    against the best."""
    from segcli.files import write_json
    from segcli.inference.evaluation import load_evidence
    from segcli.metrics import bootstrap

    with user_errors():
        if len(runs) < 2:
            raise SegcliError("compare needs at least two runs or eval files")
        loaded = [load_evidence(r, split) for r in runs]
        labels = [label for label, _ in loaded]
        if len(set(labels)) < len(labels):
            labels = [str(r) for r in runs]
        evidence = [e for _, e in loaded]
        bootstrap.check_same_images(labels, [e.names for e in evidence], [e.class_names for e in evidence])
        names = evidence[0].class_names
        if len(runs) == 2:
            result = bootstrap.paired_bootstrap(evidence[0].matrices, evidence[1].matrices, resamples, seed, names)
            console.print_wide(console.bootstrap_table(labels[0], labels[1], split, result))
        else:
            result = bootstrap.rank_against_best(labels, [e.matrices for e in evidence], resamples, seed, names)
            console.print_wide(console.ranking_table(split, result, resamples))
        if json_path:
            out = {"split": split, "runs": [str(r) for r in runs], "labels": labels, **bootstrap.as_json(result)}
            write_json(json_path, out)
            console.out.print(f"wrote {json_path}", highlight=False)


@app.command()
def predict(
    inputs: Annotated[list[str], typer.Argument(
        help="Image files, folders or glob patterns; inference.KEY=VALUE arguments change the --inference preset.")],
    checkpoint: Annotated[Path | None, typer.Option(
        "-c", "--checkpoint", help="A checkpoint, or an ONNX bundle of segcli export (its folder or model.onnx). "
                                   "Default: checkpoints/best.pt of the newest run under outputs/.")] = None,
    out_dir: Annotated[Path, typer.Option("-o", "--out-dir", help="Where NAME.png and NAME_overlay.jpg go.")] = Path("predictions"),
    runs_dir: Annotated[Path, typer.Option(help="Where to look for the newest run.")] = Path("outputs"),
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    amp: Annotated[str | None, typer.Option(
        help="Autocast: auto, bf16, fp16 or false (default: the run's trainer.amp; auto follows this machine).")] = None,
    inference: InferenceOption = "whole",
    save_probs: Annotated[bool, typer.Option(
        "--save-probs", help="Also write NAME_probs.npz: (C, H, W) float16 class probabilities, compressed.")] = False,
) -> None:
    """Segment images: NAME.png (uint8 class indices, the input's size) and NAME_overlay.jpg."""
    from segcli.inference.export import is_bundle, predictor_from_bundle
    from segcli.inference.modes import describe, load_settings
    from segcli.inference.predict import Predictor, expand_inputs, predict_files
    from segcli.runs.checkpoints import newest_checkpoint

    with user_errors():
        inputs, overrides = _split_overrides(inputs)
        settings = load_settings(inference, overrides)
        files = expand_inputs(inputs)
        checkpoint = checkpoint or newest_checkpoint(runs_dir)
        if is_bundle(checkpoint):
            predictor = predictor_from_bundle(checkpoint, settings)
            how = "onnxruntime (CPU)"
        else:
            predictor = Predictor.from_checkpoint(checkpoint, device, amp, settings)
            how = predictor.ctx.precision.describe()
        console.out.print(f"checkpoint {checkpoint}: {len(files)} image(s) -> {out_dir}/, {how}; "
                             f"{describe(settings)}", highlight=False)
        masks = predict_files(predictor, files, out_dir, save_probs=save_probs)
        console.out.print(f"wrote {len(masks)} masks and overlays to {out_dir}", highlight=False)


@app.command("export")
def export_command(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint of a run: RUN_DIR/checkpoints/best.pt.")],
    out_dir: Annotated[Path, typer.Option("-o", "--out", help="The bundle folder to write.")] = Path("bundle"),
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 18,
    size: Annotated[str | None, typer.Option(
        help="Fixed input HxW in pixels (multiples of 32). Default: dynamic (any multiple of 32, any batch).")] = None,
    dynamic: Annotated[bool, typer.Option("--dynamic", help="Any height and width (multiples of 32): the default.")] = False,
    quantize: Annotated[bool, typer.Option(
        "--quantize", help="Also write model.int8.onnx (onnxruntime dynamic int8), with its parity and speed.")] = False,
    data_root: Annotated[str | None, typer.Option(help="Read the run's dataset (parity images) from here.")] = None,
    parity_images: Annotated[int, typer.Option(help="Images of the run's val split for the parity check.")] = 8,
) -> None:
    """Export a checkpoint as an ONNX bundle (model.onnx + bundle.json) and check it against the
    checkpoint with onnxruntime; exit 1 when the float32 model is beyond tolerance."""
    from segcli.inference.export import export_bundle, parse_size

    with user_errors():
        if size is not None and dynamic:
            raise SegcliError("--size and --dynamic: give one (a fixed input size, or any multiple of 32)")
        if parity_images < 1:
            raise SegcliError(f"--parity-images {parity_images}: expected at least 1")
        bundle = export_bundle(checkpoint, out_dir, opset, parse_size(size), quantize, data_root, parity_images)
    console.out.print(console.parity_table(bundle))
    console.out.print(f"wrote {out_dir}/ ({', '.join(sorted(p.name for p in out_dir.iterdir()))}); "
                         f"input: {bundle['input']['size']}", highlight=False)
    if not bundle["parity"][0]["ok"]:
        console.error(f"{out_dir}/model.onnx: beyond tolerance (max |logit diff| {bundle['parity'][0]['max_abs']:.2e}, "
                     f"argmax agreement {bundle['parity'][0]['agreement']:.4%}); do not ship it")
        raise SystemExit(1)


@app.command("runs")
def list_runs(
    dirs: Annotated[list[Path] | None, typer.Argument(
        help="Folders to search (default: outputs/ and multirun/ where they exist).")] = None,
    sort: Annotated[str, typer.Option(help="Column or override key; miou and mdice: best first.")] = "miou",
    filters: Annotated[list[str] | None, typer.Option(
        "--filter", help="KEY=VALUE, KEY!=VALUE, KEY>VALUE (<, >=, <=); repeatable, all must hold.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
    group_seeds: Annotated[bool, typer.Option(
        "--group-seeds", help="One row per config: runs that differ only by seed as mean, std and n.")] = False,
) -> None:
    """One row per run: the overrides that differ between runs, best val mIoU and mDice, epochs,
    minutes and status (running, done, interrupted, failed, killed). With --group-seeds, one row
    per config over its seeds."""
    from segcli.reports import runs_table as compare

    with user_errors():
        if fmt not in ("table", "csv", "json"):
            raise SegcliError(f"--format {fmt}: expected table, csv or json")
        roots = dirs or [p for p in (Path("outputs"), Path("multirun")) if p.is_dir()]
        if not roots:
            raise SegcliError("no outputs/ or multirun/ here; give the folders to search: segcli runs DIR...")
        records = [compare.run_record(p) for p in compare.find_runs(roots)]
        keys = compare.differing_keys(records)
        records = compare.select(records, filters or (), sort)
        if group_seeds:
            groups = compare.group_seeds(records, keys)
            if fmt == "csv":
                sys.stdout.write(compare.groups_to_csv(groups))
            elif fmt == "json":
                print(json.dumps(groups, indent=2))
            else:
                console.print_wide(console.seed_groups_table(groups, ", ".join(str(r) for r in roots)))
            return
        if fmt == "csv":
            sys.stdout.write(compare.to_csv(compare.rows(records, keys)))
        elif fmt == "json":
            print(compare.to_json(records, keys))
        else:
            table = console.runs_table(compare.rows(records, keys), ", ".join(str(r) for r in roots))
            console.print_wide(table)


@app.command("models")
def list_models(
    size: Annotated[str, typer.Option(help="Input HxW in pixels for the GFLOPs.")] = "512x512",
    classes: Annotated[int, typer.Option(help="Output classes the models are built with.")] = 21,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Every choice of the model config group (model=NAME): architecture, encoder, where it comes from
    (segmentation-models-pytorch, torchvision, or written here), parameters in millions and GFLOPs of
    one image at --size (torch's flop counter on the meta device: nothing is computed)."""
    from segcli.models.build import model_facts

    with user_errors():
        try:
            h, w = (int(v) for v in size.lower().split("x"))
        except ValueError:
            raise SegcliError(f"--size {size}: expected HxW in pixels, e.g. 512x512") from None
        rows = []
        for option in group_options()["model"]:
            cfg = to_plain(compose_config([f"model={option}"]))["model"]
            rows.append({"model": option, "arch": cfg["arch"], "encoder": cfg.get("encoder_name"),
                         **model_facts(cfg, classes, (h, w))})
        if as_json:
            print(json.dumps(rows, indent=2))
        else:
            console.print_wide(console.models_table(rows, f"{h}x{w}", classes))


@app.command()
def plot(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run folders (e.g. the jobs of a sweep).")],
    out_dir: Annotated[Path, typer.Option("-o", "--out-dir", help="Where the PNG files go.")] = Path("plots"),
) -> None:
    """PNG plots of runs: loss and mIoU curves on shared axes, per-class IoU bars of each best epoch,
    and each run's normalised confusion matrix (needs matplotlib: pip install 'segcli\\[plot]')."""
    from segcli.reports.plot import plot_runs

    with user_errors():
        for path in plot_runs(run_dirs, out_dir):
            print(path)


@app.command(options_metavar="[OPTIONS] [OVERRIDES]...",
             context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(
    ctx: typer.Context,
    seconds: Annotated[float, typer.Option(help="Seconds per timed phase (after one warm-up step).")] = 20.0,
    repeats: Annotated[int, typer.Option(help="Alternating repeats of engine/reference/naive; the median is shown.")] = 2,
    crop: Annotated[int, typer.Option(help="Training crop size in pixels (square).")] = 256,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the numbers to this JSON file.")] = None,
    amp: Annotated[str | None, typer.Option(
        help="Autocast: auto, bf16, fp16 or false (default: trainer.amp of the config; auto follows this machine).")] = None,
) -> None:
    """Images/s of segcli's train and eval loops against a hand-written PyTorch loop with the same
    settings and a plain eager float32 one, the data loader alone, and metric updates/s against
    torchmetrics, for the config composed from OVERRIDES (as segcli train)."""
    from segcli.config import compose_config
    from segcli.files import write_json
    from segcli.training.bench import benchmark

    with user_errors():
        amp_override = [f"trainer.amp={amp}"] if amp is not None else []
        cfg = to_plain(compose_config([*ctx.args, f"dataset.crop_size=[{crop},{crop}]", *amp_override]))
        result = benchmark(cfg, seconds, repeats, crop)
        console.print_wide(console.bench_table(result))
        if json_path:
            write_json(json_path, result)
            console.out.print(f"wrote {json_path}", highlight=False)


@app.command("report")
def html_report(
    runs: Annotated[list[Path], typer.Argument(help="Run folders.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="The HTML file to write.")] = Path("report.html"),
    split: Annotated[str, typer.Option(help="Split of the evals compared and of the worst-image galleries.")] = "test",
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples of the comparison.")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of the resampling.")] = 0,
) -> None:
    """One self-contained HTML file (no script, no network): configs side by side (the keys that
    differ), curves, per-class IoU, confusion matrices, samples, worst images, and the paired
    bootstrap comparison of the runs' evals (segcli eval RUN/checkpoints/best.pt --split test)."""
    from segcli.reports.html import write_report

    with user_errors():
        path = write_report(runs, out, split, resamples, seed)
        console.out.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)", highlight=False)


data_app = typer.Typer(help="Inspect a dataset without training.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("check", options_metavar="[OPTIONS] [OVERRIDES]...",
                  context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def data_check(
    ctx: typer.Context,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the findings to this JSON file.")] = None,
) -> None:
    """Run every dataset check on every split (pairing, decoding, sizes, mask values) and print
    images per split, image sizes, class pixel frequencies and all problems found. OVERRIDES as
    for `segcli train` (e.g. dataset=camvid dataset.root=PATH). Exit code 1 when problems are found.

    Example: segcli data check dataset=folder dataset.root=data/mine dataset.num_classes=3
    """
    from segcli.config import compose_config
    from segcli.data.datasets import check_dataset
    from segcli.files import write_json

    with user_errors():
        result = check_dataset(to_plain(compose_config(ctx.args)))
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


@data_app.command("doctor")
def data_doctor(
    root: Annotated[Path, typer.Argument(help="A dataset folder segcli has not seen.")],
    write: Annotated[Path | None, typer.Option(
        "--write", help="Save the proposed dataset config here, e.g. myconf/dataset/mine.yaml; then "
        "segcli train --config-dir myconf dataset=mine.", metavar="FILE.yaml")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the findings to this JSON file.")] = None,
) -> None:
    """Find the layout, pairing rule, splits and mask encoding of a folder, propose a dataset config,
    check every file with it, and say how to train. Exit code 0 when a usable configuration was
    found, 1 when not (with the reasons).
    """
    import yaml

    from segcli.data.doctor import diagnose, write_config
    from segcli.files import write_json

    with user_errors():
        found = diagnose(root)
        for line in found.findings:
            console.out.print(f"- {line}", highlight=False, markup=False)
        if found.config:
            console.out.print("proposed dataset config:", highlight=False)
            console.out.print(yaml.safe_dump(found.config, sort_keys=False, width=100).rstrip(), highlight=False,
                                 markup=False)
        for problem in found.problems:
            console.error(problem)
        command = found.command
        if found.usable and write and found.config:
            console.out.print(f"wrote {write_config(found, write)}", highlight=False)
            if write.parent.name == "dataset":
                command = f"segcli train --config-dir {write.parent.parent} dataset={write.stem}"
        elif found.usable and write:
            console.out.print(f"nothing written: the built-in dataset={found.builtin} reads this layout",
                                 highlight=False)
        if json_path:
            write_json(json_path, {"root": str(found.root), "builtin": found.builtin, "config": found.config,
                                   "findings": found.findings, "problems": found.problems, "usable": found.usable,
                                   "command": found.command})
    if not found.usable:
        console.out.print(f"no usable configuration ({len(found.problems)} problem(s))", highlight=False)
        raise SystemExit(1)
    console.out.print(f"usable; train with: {command}", highlight=False, markup=False)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
