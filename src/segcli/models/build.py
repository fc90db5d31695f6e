"""build_model: the ``model`` config group. ``model.arch`` (any case) names a builder of
``MODELS`` (``models/builders.py``: SMP's architectures, torchvision's, ours, the classical
baselines); ``build_model`` checks the name and guards the AMX bf16 convolutions,
``model_from_checkpoint`` rebuilds a run's model, ``model_facts`` gives parameters and GFLOPs
(``segcli models``) and ``model_label`` the ``ARCH-ENCODER`` name.

``encoder_weights`` is ``null`` (random init, the default here), a name SMP knows
(``imagenet``: downloaded, so online only), or a path to a local weights file (``.pth``/``.pt``
state dict or ``.safetensors``) holding the encoder's weights, e.g. torchvision's
``resnet18-f37072fd.pth``; a classifier head (``fc.*``) in it is dropped (``models/weights.py``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from segcli.errors import SegcliError
from segcli.models.amx_guard import guard_amx_bf16_convs
from segcli.models.builders import MODELS, classical_model, model_source
from segcli.models.weights import load_weights


def model_label(cfg: Mapping) -> str:
    """``ARCH-ENCODER`` (``Unet-resnet18``), or ``ARCH`` alone for models without an encoder."""
    encoder = cfg.get("encoder_name")
    return f"{cfg['arch']}-{encoder}" if encoder not in (None, "", "none") else str(cfg["arch"])


def build_model(cfg: Mapping, num_classes: int, in_channels: int = 3) -> nn.Module:
    """The model ``cfg["arch"]`` names: ``forward(x: (N, in_channels, H, W) float32) ->
    (N, num_classes, H, W) float logits``, with H and W multiples of 32. On a CPU with AMX the
    convolutions that crash torch's bf16 weight gradient there run in float32 under CPU bf16
    autocast (``amx_guard``).

    Raises:
        SegcliError: unknown architecture (``model.arch=X: unknown architecture; expected one
            of ...``), or what the builder raises.
    """
    arch = str(cfg["arch"])
    if arch not in MODELS:
        raise SegcliError(
            f"model.arch={arch}: unknown architecture; expected one of {', '.join(MODELS.names())}"
        )
    model = MODELS.build(cfg, num_classes, in_channels)
    guard_amx_bf16_convs(model)
    return model


def is_classical(cfg: Mapping) -> bool:
    """Whether the ``model`` group ``cfg`` names a classical baseline (``models/classical.py``,
    fitted once, not trained by gradient steps), by the builder registered for ``cfg["arch"]``.
    An unknown ``arch`` is not one (``build_model`` refuses it)."""
    arch = str(cfg["arch"])
    return arch in MODELS and MODELS.get(arch) is classical_model


def model_facts(cfg: Mapping, num_classes: int = 21, size: tuple[int, int] = (512, 512)) -> dict:
    """Size and cost of the model ``cfg`` describes. Returns ``{"params_m": trainable parameters
    in millions, "gflops": GFLOPs of one forward pass of a (1, 3, H, W) image
    (torch.utils.flop_counter; a multiply-add counts 2), "source": where the model comes from}``;
    ``params_m`` and ``gflops`` are None for the classical baselines (no torch graph).

    Semantic models are built on torch's ``meta`` device and run there: no memory, no weights,
    nothing computed. The instance models (``models.instance.INSTANCE_MODELS``, torchvision's Mask
    R-CNN, whose NMS and roi_align do not run on ``meta``) are built on the CPU with random
    weights (seeded, the global RNG left as it was) and measured by one real eval-mode forward
    pass of a seeded random (1, 3, H, W) image in [0, 1) under the same counter: detection FLOPs
    depend on how many proposals and detections the RPN and box head keep (and roi_align and NMS
    are not counted), so the figure is a random-init model's inference at H x W, not a trained
    model's. ``source`` is torchvision for its R-50 presets, segcli for the R-18 model built from
    torchvision's parts. Nothing is cached.

    Raises:
        SegcliError: the model cannot be built (see ``build_model``, ``build_instance_model``).
    """
    from torch.utils.flop_counter import FlopCounterMode

    from segcli.models.instance import INSTANCE_MODELS, build_instance_model, maskrcnn_resnet50

    cfg = {**cfg, "encoder_weights": None}
    arch = str(cfg["arch"])
    if arch in INSTANCE_MODELS:
        torchvision_preset = INSTANCE_MODELS.get(arch) is maskrcnn_resnet50
        out = {"source": "torchvision" if torchvision_preset else "segcli"}
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(0)
            model = build_instance_model(cfg, num_classes).eval()
            image = torch.rand(3, *size)
            with FlopCounterMode(display=False) as counter:
                model([image])
    else:
        out = {"source": model_source(arch), "params_m": None, "gflops": None}
        if is_classical(cfg):
            return out
        try:
            with torch.device("meta"):
                model = build_model(cfg, num_classes).eval()
        except (RuntimeError, NotImplementedError):  # a constructor that reads tensor values
            model = build_model(cfg, num_classes).to("meta").eval()  # (SegFormer's)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.empty(1, 3, *size, device="meta"))
    out["params_m"] = sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6
    out["gflops"] = counter.get_total_flops() / 1e9
    return out


def model_from_checkpoint(
    ckpt: Mapping, device: torch.device, in_channels: int = 3
) -> torch.nn.Module:
    """The model of a checkpoint of any task (its ``"task"``, semantic when absent), rebuilt with
    its weights in eval mode on ``device``: ``semantic_model_from_checkpoint`` or, for
    ``task=instance``, ``models.instance.instance_model_from_checkpoint`` (torchvision's Mask
    R-CNN interface).

    Raises:
        SegcliError: an unknown task, or the weights do not fit (one line).
    """
    task = str(ckpt.get("task", "semantic"))
    if task not in CHECKPOINT_MODELS:
        raise SegcliError(f"checkpoint task={task}: expected one of {', '.join(CHECKPOINT_MODELS)}")
    return CHECKPOINT_MODELS[task](ckpt, device, in_channels)


def semantic_model_from_checkpoint(
    ckpt: Mapping, device: torch.device, in_channels: int = 3
) -> torch.nn.Module:
    """Rebuild the checkpoint's architecture (no download) and load its weights, in eval mode on
    ``device``: ``forward(x: (N, in_channels, H, W) float32) -> (N, C, H, W)`` logits. Eval,
    predict and export reach it through ``inference.loaded.LoadedModel``.

    Raises:
        SegcliError: the weights do not fit the architecture or class count named in the
            checkpoint (one line, see ``load_weights``).
    """
    model_cfg = {**ckpt["config"]["model"], "encoder_weights": None}
    num_classes = int(ckpt["classes"]["num_classes"])
    if ckpt.get("cascade"):  # two stages, both in this checkpoint (models/cascade.py)
        from segcli.models.cascade import build_cascade

        stage1 = ckpt["cascade"]
        first = build_model(stage1["model"], int(stage1["num_classes"]), int(stage1["in_channels"]))
        background = ckpt["config"]["dataset"].get("background_class") or 0
        model = build_cascade(first, stage1, model_cfg, num_classes, in_channels, background)
    else:
        model = build_model(model_cfg, num_classes, in_channels)
    load_weights(
        model,
        ckpt["model"],
        f"checkpoint weights do not fit {model_label(model_cfg)} with {num_classes} classes",
    )
    return model.to(device).eval()


def _instance_from_checkpoint(ckpt: Mapping, device: torch.device, in_channels: int = 3):
    from segcli.models.instance import instance_model_from_checkpoint

    return instance_model_from_checkpoint(ckpt, device)


#: task -> how its checkpoints' models are rebuilt
CHECKPOINT_MODELS = {
    "semantic": semantic_model_from_checkpoint,
    "instance": _instance_from_checkpoint,
}
