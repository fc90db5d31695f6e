"""``segcli models``: every choice of the model group with its source, parameters and GFLOPs."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from segcli import console
from segcli.cli.common import user_errors
from segcli.config import compose_config, group_options, to_plain
from segcli.errors import SegcliError


def list_models(
    size: Annotated[str, typer.Option(help="Input HxW in pixels for the GFLOPs.")] = "512x512",
    classes: Annotated[int, typer.Option(help="Output classes the models are built with.")] = 21,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Every choice of the model config group (model=NAME): task (semantic or instance),
    architecture, encoder, source (segmentation-models-pytorch, torchvision, or written here),
    parameters in millions and GFLOPs of one image at --size.

    GFLOPs are torch's flop counter's: on the meta device for the semantic models (nothing is
    computed); for the instance models (Mask R-CNN, task=instance) one CPU inference of a
    random-init model, whose FLOPs depend on the proposals and detections it keeps."""
    from segcli.models.build import model_facts

    with user_errors():
        try:
            h, w = (int(v) for v in size.lower().split("x"))
        except ValueError:
            raise SegcliError(f"--size {size}: expected HxW in pixels, e.g. 512x512") from None
        rows = []
        for option in group_options()["model"]:
            cfg = to_plain(compose_config([f"model={option}"]))["model"]
            rows.append(
                {
                    "model": option,
                    "task": str(cfg.get("task") or "semantic"),
                    "arch": cfg["arch"],
                    "encoder": cfg.get("encoder_name"),
                    **model_facts(cfg, classes, (h, w)),
                }
            )
        if as_json:
            print(json.dumps(rows, indent=2))
        else:
            console.print_wide(console.models_table(rows, f"{h}x{w}", classes))
