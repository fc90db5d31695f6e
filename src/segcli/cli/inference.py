"""``segcli eval``, ``segcli predict`` and ``segcli export``: thin calls into ``inference``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from segcli import console
from segcli.cli.common import (
    AmpOption,
    CheckpointArgument,
    CocoJsonOption,
    DataRootOption,
    DeviceOption,
    ExportFormatOption,
    InferenceOption,
    JsonOption,
    NhwcOption,
    OnnxruntimeWebOption,
    PredictCheckpointOption,
    RasterMarginOption,
    RasterWindowOption,
    ScoreThresholdOption,
    SplitOption,
    split_overrides,
    user_errors,
)
from segcli.errors import SegcliError

if TYPE_CHECKING:  # the command modules stay light: no torch before a command runs
    from segcli.inference.modes import InferenceSettings

EVAL_METRICS = (
    "miou",
    "mdice",
    "pixel_accuracy",
    "mean_accuracy",
    "fwiou",
    "per_image_miou",
    "per_image_mdice",
    "hd95",
)


EvalOverrides = Annotated[
    list[str] | None,
    typer.Argument(
        help="inference.KEY=VALUE changes to the --inference preset, "
        "e.g. inference.stride=[256,256].",
        show_default=False,
    ),
]
BatchSizeOption = Annotated[int | None, typer.Option(help="Images per batch (default: the run's).")]
MetricsOption = Annotated[
    str | None,
    typer.Option(
        help="Also print these, comma-separated: "
        + ", ".join(EVAL_METRICS)
        + " (hd95: pixels, per class; slower)."
    ),
]
ProtocolsOption = Annotated[
    bool,
    typer.Option(
        "--protocols",
        help="Print mIoU and mDice under each named protocol, to match a paper's table.",
    ),
]
WorstOption = Annotated[
    int,
    typer.Option(
        help="Draw the K images of lowest per-image mIoU: "
        "image | truth | prediction | errors (by true class).",
        metavar="K",
    ),
]
EvalProbsOption = Annotated[
    bool,
    typer.Option(
        "--save-probs",
        help="Also write every image's (C, H, W) float16 class probabilities, compressed, to "
        "RUN/evals/CHECKPOINT-SPLIT-probs/NAME.npz (NAME-probs/ beside --json).",
    ),
]


def evaluate(
    checkpoint: CheckpointArgument,
    overrides: EvalOverrides = None,
    split: SplitOption = "val",
    json_path: JsonOption = None,
    data_root: DataRootOption = None,
    batch_size: BatchSizeOption = None,
    device: DeviceOption = "auto",
    metrics: MetricsOption = None,
    show_protocols: ProtocolsOption = False,
    worst: WorstOption = 0,
    amp: AmpOption = None,
    inference: InferenceOption = "whole",
    save_probs: EvalProbsOption = False,
) -> None:
    """Evaluate a checkpoint: per-class IoU, Dice and accuracy, their means and pixel accuracy."""
    from segcli.inference.modes import load_settings

    with user_errors():
        wanted = _eval_metrics(split, metrics, worst)
        _run_eval(
            checkpoint,
            load_settings(inference, overrides or ()),
            split,
            json_path,
            wanted,
            show_protocols,
            worst,
            save_probs,
            data_root=data_root,
            batch_size=batch_size,
            device=device,
            amp=amp,
        )


def _eval_metrics(split: str, metrics: str | None, worst: int) -> list[str]:
    """The ``--metrics`` asked for, after checking them, ``--split`` and ``--worst``.

    Raises:
        SegcliError: an unknown split or metric; a negative ``--worst``.
    """
    if split not in ("train", "val", "test"):
        raise SegcliError(f"--split {split}: expected train, val or test")
    wanted = [m.strip() for m in (metrics or "").split(",") if m.strip()]
    unknown = [m for m in wanted if m not in EVAL_METRICS]
    if unknown:
        raise SegcliError(
            f"--metrics {','.join(unknown)}: expected some of {', '.join(EVAL_METRICS)}"
        )
    if worst < 0:
        raise SegcliError(f"--worst {worst}: expected a number of images >= 0")
    return wanted


def _run_eval(
    checkpoint: Path,
    settings: InferenceSettings,
    split: str,
    json_path: Path | None,
    wanted: list[str],
    show_protocols: bool,
    worst: int,
    save_probs: bool,
    *,
    data_root: str | None,
    batch_size: int | None,
    device: str,
    amp: str | None,
) -> None:
    """``segcli eval`` once its options are checked: the eval (``evaluate_checkpoint``), its table
    (``_print_eval``) and its files kept (``save_eval``), each path printed.

    Raises:
        SegcliError: see ``evaluate_checkpoint``.
    """
    from segcli.inference.eval_files import beside_eval, save_eval
    from segcli.inference.evaluation import evaluate_checkpoint
    from segcli.inference.modes import describe

    console.out.print(describe(settings), highlight=False)
    worst_png = beside_eval(checkpoint, split, json_path, settings.tag, "-worst.png")
    probs_dir = (
        beside_eval(checkpoint, split, json_path, settings.tag, "-probs") if save_probs else None
    )
    result, evidence = evaluate_checkpoint(
        checkpoint,
        split,
        hd95="hd95" in wanted,
        worst=worst,
        worst_png=worst_png,
        inference=settings,
        probs_dir=probs_dir,
        data_root=data_root,
        batch_size=batch_size,
        device=device,
        amp=amp,
    )
    title = f"{split}: {result['images']} images, {checkpoint}"
    detections = result.pop("detections", None)
    _print_eval(result, title, wanted, show_protocols, worst_png)
    saved = save_eval(checkpoint, split, result, evidence, settings.tag, json_path)
    if saved:
        console.out.print(
            f"wrote {saved[0]} and {saved[1]} (per-image confusion matrices)", highlight=False
        )
    if detections is not None:  # task=instance: the split's COCO results, for pycocotools
        from segcli.metrics.coco import results_json

        where = saved[0] if saved else Path(f"{split}.json")
        coco = where.with_name(f"{where.stem}-detections.json")
        results_json(detections, coco)
        console.out.print(f"wrote {coco} (COCO results: RLE masks, boxes, scores)", highlight=False)


def _print_eval(
    result: dict, title: str, wanted: list[str], show_protocols: bool, worst_png: Path
) -> None:
    """The scores table of ``segcli eval``, then the extra metrics asked for, the protocols, the
    precision and the worst images (when ``result`` has them)."""
    from segcli.metrics.confusion import PROTOCOLS

    console.out.print(console.scores_table(title, list(result["per_class_iou"]), result))
    for name in wanted:
        if name == "hd95":
            per_class = ", ".join(
                f"{c} {v:.2f} ({result['hd95_images'][c]} images)"
                for c, v in result["per_class_hd95"].items()
            )
            console.out.print(
                f"hd95 {result['hd95']:.2f} px (95th-percentile Hausdorff distance, medpy's "
                f"definition; per class: {per_class})",
                highlight=False,
            )
            continue
        console.out.print(f"{name} {console.fmt(result[name])}", highlight=False)
    if show_protocols:
        console.out.print(console.protocols_table(result["protocols"], PROTOCOLS))
    console.out.print(f"protocol: {result['protocol']}", highlight=False)
    precision = result["precision"]
    console.out.print(
        f"precision: {precision['amp']} (amp={precision['setting']}: {precision['reason']})",
        highlight=False,
    )
    for item in result.get("worst_images", []):
        console.out.print(
            f"worst: {item['name']} mIoU {item['miou']:.4f} ("
            + ", ".join(f"{c} {v:.2f}" for c, v in item["worst_classes"].items())
            + ")",
            highlight=False,
        )
    if "worst_images" in result:
        console.out.print(
            f"wrote {worst_png} ({len(result['worst_images'])} images: image | truth | "
            "prediction | errors coloured by the true class)",
            highlight=False,
        )
    if "probabilities" in result:
        probs = result["probabilities"]
        console.out.print(
            f"wrote {probs['folder']}/ ({probs['images']} images' class probabilities, "
            "NAME.npz: probs (C, H, W) float16, class_names)",
            highlight=False,
        )


def predict(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Image files, folders or glob patterns; inference.KEY=VALUE arguments change "
            "the --inference preset."
        ),
    ],
    checkpoint: PredictCheckpointOption = None,
    out_dir: Annotated[
        Path, typer.Option("-o", "--out-dir", help="Where NAME.png and NAME_overlay.jpg go.")
    ] = Path("predictions"),
    runs_dir: Annotated[Path, typer.Option(help="Where to look for the newest run.")] = Path(
        "outputs"
    ),
    device: DeviceOption = "auto",
    amp: AmpOption = None,
    inference: InferenceOption = "whole",
    save_probs: Annotated[
        bool,
        typer.Option(
            "--save-probs",
            help="Also write NAME_probs.npz: (C, H, W) float16 class probabilities, compressed.",
        ),
    ] = False,
    score_threshold: ScoreThresholdOption = None,
    coco_json: CocoJsonOption = None,
    window: RasterWindowOption = 1024,
    margin: RasterMarginOption = 128,
) -> None:
    """Segment images: NAME.png (uint8 class indices, the input's size) and NAME_overlay.jpg;
    a GeoTIFF scene (georeferenced .tif) block by block into NAME.tif (a GeoTIFF mask in its
    coordinate system); for a task=instance checkpoint also NAME_instances.png (uint16 object ids)
    and detections.json (COCO results)."""
    from segcli.inference.bundle import is_bundle
    from segcli.inference.modes import load_settings
    from segcli.inference.predict import expand_inputs
    from segcli.inference.tasks import PredictRequest, inference_of
    from segcli.runs.checkpoints import checkpoint_task, newest_checkpoint

    with user_errors():
        inputs, overrides = split_overrides(inputs)
        settings = load_settings(inference, overrides)
        files = expand_inputs(inputs)
        checkpoint = checkpoint or newest_checkpoint(runs_dir)
        task = "semantic" if is_bundle(checkpoint) else checkpoint_task(checkpoint)
        request = PredictRequest(
            checkpoint,
            files,
            out_dir,
            device,
            amp,
            settings,
            save_probs,
            score_threshold,
            coco_json,
            window,
            margin,
        )
        inference_of(task).predict(request)


def export_command(
    checkpoint: CheckpointArgument,
    out_dir: Annotated[
        Path, typer.Option("-o", "--out", help="The bundle folder to write.")
    ] = Path("bundle"),
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 18,
    size: Annotated[
        str | None,
        typer.Option(
            help="Fixed input HxW in pixels (multiples of 32). Default: dynamic (any multiple of "
            "32, any batch)."
        ),
    ] = None,
    dynamic: Annotated[
        bool, typer.Option("--dynamic", help="Any height and width (multiples of 32): the default.")
    ] = False,
    quantize: Annotated[
        bool,
        typer.Option(
            "--quantize",
            help="Also write an int8 model, with its parity and speed: onnxruntime's dynamic "
            "model.int8.onnx (onnx, web), NNCF's model.int8.xml (openvino), pt2e's "
            "model.int8.tflite (litert).",
        ),
    ] = False,
    data_root: DataRootOption = None,
    parity_images: Annotated[
        int, typer.Option(help="Images of the run's val split for the parity check.")
    ] = 8,
    target: ExportFormatOption = "onnx",
    onnxruntime_web: OnnxruntimeWebOption = None,
    nhwc: NhwcOption = False,
) -> None:
    """Export a checkpoint as an ONNX bundle (model.onnx + bundle.json; --format openvino adds
    the OpenVINO IR, --format litert the LiteRT file, --format web an offline web page) and check
    each model against the checkpoint; exit 1 when a float32 model is beyond tolerance."""
    from segcli.inference.export import export_bundle, parse_size

    with user_errors():
        _check_export_options(size, dynamic, target, onnxruntime_web, nhwc, parity_images)
        bundle = export_bundle(
            checkpoint,
            out_dir,
            opset,
            parse_size(size),
            quantize,
            data_root,
            parity_images,
            target=target,
            onnxruntime_web=onnxruntime_web,
            nhwc=nhwc,
        )
    console.out.print(console.parity_table(bundle))
    console.out.print(_written(bundle, out_dir), highlight=False)
    _gate(bundle, out_dir)


def _check_export_options(size, dynamic, target, onnxruntime_web, nhwc, parity_images) -> None:
    """``segcli export``'s options that contradict each other or the target.

    Raises:
        SegcliError: one line naming the option."""
    if size is not None and dynamic:
        raise SegcliError(
            "--size and --dynamic: give one (a fixed input size, or any multiple of 32)"
        )
    if onnxruntime_web is not None and target != "web":
        raise SegcliError(f"--onnxruntime-web: a web page option (--format web), not {target}")
    if nhwc and target != "litert":
        raise SegcliError(f"--nhwc: a LiteRT option (--format litert), not --format {target}")
    if parity_images < 1:
        raise SegcliError(f"--parity-images {parity_images}: expected at least 1")


def _written(bundle: dict, out_dir: Path) -> str:
    """The line saying what the export wrote and which input size its models take."""
    files = ", ".join(sorted(p.name for p in out_dir.iterdir()))
    line = f"wrote {out_dir}/ ({files}); input: {bundle['input']['size']}"
    if "litert" in bundle:
        line += f" (the LiteRT files: fixed {'x'.join(map(str, bundle['litert']['input_size']))})"
    return line


def _gate(bundle: dict, out_dir: Path) -> None:
    """Exit 1 when a float32 model of the bundle is beyond tolerance (int8 ones are reported)."""
    for p in bundle["parity"]:
        if "int8" not in p["model"] and not p["ok"]:
            console.error(
                f"{out_dir}/{p['model']}: beyond tolerance (max |logit diff| "
                f"{p['max_abs']:.2e}, argmax agreement {p['agreement']:.4%}); do not ship it"
            )
            raise SystemExit(1)
