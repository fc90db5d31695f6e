"""build_model: the ``model`` config group. ``MODELS`` maps ``model.arch`` (any case) to a builder
``(cfg, num_classes, in_channels) -> nn.Module``; every segmentation-models-pytorch architecture is
registered under its class name. Another architecture is one YAML file plus one
``@MODELS.register("name")`` function.

``encoder_weights`` is ``null`` (random init, the default here), a name SMP knows
(``imagenet``: downloaded, so online only), or a path to a local weights file (``.pth``/``.pt``
state dict or ``.safetensors``) holding the encoder's weights, e.g. torchvision's
``resnet18-f37072fd.pth``; a classifier head (``fc.*``) in it is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from torch import nn

from segcli.errors import SegcliError
from segcli.registry import Registry

MODELS = Registry("model", key="arch", fold_case=True)
ARCHITECTURES = {a.__name__.lower(): a.__name__ for a in smp._MODEL_ARCHITECTURES}


def load_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file (``weights_only=True``: data, no code);
    from a segcli checkpoint, the weights of its encoder.

    Raises:
        SegcliError: the file is missing or holds no state dict.
    """
    if not path.is_file():
        raise SegcliError(f"{path}: model.encoder_weights file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
            raise SegcliError(f"{path}: cannot read as a torch state dict ({type(exc).__name__})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if isinstance(state, dict) and "format" in state and isinstance(state.get("model"), dict):
        # a segcli checkpoint: its encoder's weights (fine-tuning from an earlier run)
        state = {k[len("encoder."):]: v for k, v in state["model"].items() if k.startswith("encoder.")}
    if not isinstance(state, dict):
        raise SegcliError(f"{path}: expected a state dict (name -> tensor)")
    return state


def load_error_detail(exc: RuntimeError) -> str:
    """The informative line of torch's multi-line ``load_state_dict`` error (the first size
    mismatch, missing or unexpected key), shortened."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = next((x for x in lines if x.startswith(("size mismatch", "Missing key", "Unexpected key"))),
                  lines[-1] if lines else type(exc).__name__)
    return detail if len(detail) <= 240 else detail[:237] + "..."


def build_model(cfg: Mapping, num_classes: int, in_channels: int = 3) -> nn.Module:
    """The model ``cfg["arch"]`` names: ``forward(x: (N, in_channels, H, W) float32) ->
    (N, num_classes, H, W) float logits``, with H and W multiples of 32.

    Raises:
        SegcliError: unknown architecture (``model.arch=X: unknown architecture; expected one of ...``),
            or what the builder raises.
    """
    arch = str(cfg["arch"])
    if arch not in MODELS:
        raise SegcliError(f"model.arch={arch}: unknown architecture; expected one of {', '.join(MODELS.names())}")
    return MODELS.build(cfg, num_classes, in_channels)


def smp_model(cfg: Mapping, num_classes: int, in_channels: int = 3) -> nn.Module:
    """Create an SMP model of ``cfg``: ``arch`` (an SMP class name, any case), ``encoder_name``,
    ``encoder_weights``, ``params`` (extra keyword arguments; null values are dropped so SMP's
    defaults apply).

    Raises:
        SegcliError: unknown encoder, or an unusable weights file.
    """
    arch = str(cfg["arch"])
    weights = cfg.get("encoder_weights")
    local = weights is not None and (Path(str(weights)).suffix in {".pth", ".pt", ".bin", ".safetensors"}
                                     or Path(str(weights)).exists())
    params = {k: v for k, v in dict(cfg.get("params") or {}).items() if v is not None}
    try:
        model = smp.create_model(arch, encoder_name=str(cfg["encoder_name"]),
                                 encoder_weights=None if local else weights,
                                 in_channels=in_channels, classes=num_classes, **params)
    except KeyError as exc:
        message = str(exc.args[0] if exc.args else exc)
        raise SegcliError(f"model.encoder_name={cfg['encoder_name']}: {message[:300]}") from None
    except TypeError as exc:
        raise SegcliError(f"model.params for {arch}: {exc}") from None
    except (OSError, RuntimeError, ValueError) as exc:  # a download that failed (offline) or bad weights
        if weights is None or local:
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise SegcliError(f"model.encoder_weights={weights}: cannot load pretrained weights for "
                          f"{cfg['encoder_name']} (downloading needs internet; use null or a local file): {first}") from None
    if local:
        state = {k: v for k, v in load_weights_file(Path(str(weights))).items() if not k.startswith("fc.")}
        # nn.Module's own method: SMP encoders override load_state_dict and return nothing
        try:
            missing, unexpected = nn.Module.load_state_dict(model.encoder, state, strict=False)
        except RuntimeError as exc:  # same names, other shapes: another depth or width of encoder
            raise SegcliError(f"{weights}: weights do not fit encoder {cfg['encoder_name']}: "
                              f"{load_error_detail(exc)}") from None
        if len(unexpected) == len(state):
            raise SegcliError(f"{weights}: no tensor matches encoder {cfg['encoder_name']} "
                              f"(first key {next(iter(state), None)!r})")
        if missing:
            from segcli import report

            report.warning(f"{weights}: {len(missing)} of the {len(missing) + len(state) - len(unexpected)} tensors "
                           f"of encoder {cfg['encoder_name']} are not in the file and stay random "
                           f"(first: {missing[0]}); is it another encoder?")
    return model


MODELS.add(smp_model, ARCHITECTURES.values())
