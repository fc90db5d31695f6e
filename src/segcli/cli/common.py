"""What every command shares: ``user_errors`` (a SegcliError becomes one line on stderr and exit
code 2), the option types declared once (``JsonOption``, ``AmpOption``, ``InferenceOption``, ...)
and ``split_overrides`` for commands that take ``inference.KEY=VALUE`` arguments. Light: no torch.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from segcli import console
from segcli.errors import RunInterrupted, SegcliError

EXIT_USAGE = 2


@contextmanager
def user_errors():
    """Turn a SegcliError into one line on stderr and exit code 2 (a traceback with --debug);
    a RunInterrupted into its message and exit code 130/143."""
    try:
        yield
    except SegcliError as exc:
        if console.debugging():
            raise
        console.error(console.error_line(exc))
        raise SystemExit(EXIT_USAGE) from None
    except RunInterrupted as exc:
        print(f"segcli: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:  # Ctrl-C outside the training loop (which handles it itself)
        if console.debugging():
            raise
        print("segcli: interrupted", file=sys.stderr, flush=True)
        raise SystemExit(130) from None


def split_overrides(args: list[str]) -> tuple[list[str], list[str]]:
    """Positional arguments split into inputs and ``inference.KEY=VALUE`` overrides."""
    overrides = [a for a in args if a.lstrip("+~").startswith("inference.") and "=" in a]
    return [a for a in args if a not in overrides], overrides


def set_debug(debug: bool) -> None:
    """``--debug``: tracebacks of errors (Hydra's own switch, also read in sweep jobs)."""
    if debug:
        os.environ["HYDRA_FULL_ERROR"] = "1"


# Options shared by several commands, declared once.
JsonOption = Annotated[
    Path | None, typer.Option("--json", help="Write the numbers to this JSON file.")
]
AmpOption = Annotated[
    str | None,
    typer.Option(
        help="Autocast: auto, bf16, fp16 or false (default: the run's trainer.amp; auto follows "
        "this machine)."
    ),
]
InferenceOption = Annotated[
    str,
    typer.Option(
        "--inference",
        help="Inference preset of conf/inference/: whole, slide, flip, multiscale, crf, "
        "superpixels; change its keys with trailing inference.KEY=VALUE arguments.",
    ),
]
DeviceOption = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
DataRootOption = Annotated[
    str | None, typer.Option(help="Read the run's dataset from here instead.")
]
SplitOption = Annotated[str, typer.Option(help="Split of the run's dataset: train, val or test.")]
SeedOption = Annotated[
    int, typer.Option(help="Seed of the bootstrap resampling (same seed: same result).")
]
NoEvalOption = Annotated[
    bool,
    typer.Option(
        "--no-eval",
        help="Run no model: refuse a run without a current eval of best.pt on the split (by "
        "default such a run is evaluated first, as segcli eval does, and the eval kept in "
        "RUN/evals/).",
    ),
]
CheckpointArgument = Annotated[
    Path, typer.Argument(help="A checkpoint of a run: RUN_DIR/checkpoints/best.pt.")
]

ScoreThresholdOption = Annotated[
    float | None,
    typer.Option(
        "--score-threshold",
        help="task=instance: keep detections scoring at least this (default: the run's "
        "task.score_threshold, 0.05).",
    ),
]
CocoJsonOption = Annotated[
    Path | None,
    typer.Option(
        "--coco-json",
        help="task=instance: the images' COCO annotation file; detections.json then uses its "
        "image ids.",
    ),
]
PredictCheckpointOption = Annotated[
    Path | None,
    typer.Option(
        "-c",
        "--checkpoint",
        help="A checkpoint, or a bundle of segcli export (its folder, model.onnx, or the "
        "OpenVINO IR model.xml of --format openvino, the LiteRT model.tflite of --format litert). "
        "Default: checkpoints/best.pt of the newest run under outputs/.",
    ),
]

ExportFormatOption = Annotated[
    str,
    typer.Option(
        "--format",
        help="onnx: the ONNX bundle; openvino: the bundle plus its OpenVINO IR (model.xml; "
        "with --quantize NNCF's int8 model.int8.xml, calibrated on training images); litert: "
        "the bundle plus model.tflite at a static size (with --quantize pt2e's int8 "
        "model.int8.tflite); web: the "
        "bundle plus an offline web page (index.html, onnxruntime-web), checked in headless "
        "Chromium.",
    ),
]
RasterWindowOption = Annotated[
    int,
    typer.Option(
        "--window",
        help="GeoTIFF scenes: the side of the blocks segmented one at a time, in pixels "
        "(memory is one block with its margins).",
    ),
]
RasterMarginOption = Annotated[
    int,
    typer.Option(
        "--margin",
        help="GeoTIFF scenes: pixels of context read around each block (each side, at most "
        "window / 2); neighbours' probabilities are blended across them: no seams.",
    ),
]
OnnxruntimeWebOption = Annotated[
    Path | None,
    typer.Option(
        "--onnxruntime-web",
        help="--format web: onnxruntime-web's npm tarball (npm pack onnxruntime-web@1.30.0) "
        "or package folder. Default: npm's 1.30.0 tarball, downloaded once into segcli's "
        "cache and checked against its sha512.",
    ),
]
NhwcOption = Annotated[
    bool,
    typer.Option(
        "--nhwc", help="--format litert: NHWC input (1, H, W, 3) and output (1, H, W, C)."
    ),
]
