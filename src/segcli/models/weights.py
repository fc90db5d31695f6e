"""Weights into a model, each failure one line (a ``SegcliError``): ``load_weights`` (a state
dict into a module: another architecture, depth or class count named by the first mismatching
tensor), ``load_weights_file`` (``.safetensors`` or a torch file, data only) and
``load_encoder_file`` (a local file of ``model.encoder_weights`` into an encoder, by tensor name).
A checkpoint's whole model is ``build.model_from_checkpoint``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from segcli.errors import SegcliError


def load_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file (``weights_only=True``: data, no
    code); from a segcli checkpoint, the weights of its encoder.

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
            raise SegcliError(
                f"{path}: cannot read as a torch state dict ({type(exc).__name__})"
            ) from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if isinstance(state, dict) and "format" in state and isinstance(state.get("model"), dict):
        # a segcli checkpoint: its encoder's weights (fine-tuning from an earlier run)
        state = {
            k[len("encoder.") :]: v for k, v in state["model"].items() if k.startswith("encoder.")
        }
    if not isinstance(state, dict):
        raise SegcliError(f"{path}: expected a state dict (name -> tensor)")
    return state


def load_error_detail(exc: RuntimeError) -> str:
    """The informative line of torch's multi-line ``load_state_dict`` error (the first size
    mismatch, missing or unexpected key), shortened."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = next(
        (x for x in lines if x.startswith(("size mismatch", "Missing key", "Unexpected key"))),
        lines[-1] if lines else type(exc).__name__,
    )
    return detail if len(detail) <= 240 else detail[:237] + "..."


def load_weights(
    module: nn.Module, state: Mapping[str, torch.Tensor], what: str, strict: bool = True
) -> tuple[list[str], list[str]]:
    """Load the state dict ``state`` (tensor name -> tensor) into ``module``, turning torch's
    multi-line error into one line: ``WHAT: DETAIL`` (``load_error_detail``). ``strict=False``
    (part of a model, e.g. an encoder's file) loads by name with nn.Module's own method (SMP's
    encoders override ``load_state_dict`` and return nothing) and still refuses other shapes.

    Returns:
        torch's ``(missing_keys, unexpected_keys)`` (both empty with ``strict``).

    Raises:
        SegcliError: a tensor of another shape; with ``strict``, also a missing or unexpected key.
    """
    try:
        if strict:
            return module.load_state_dict(state)
        return nn.Module.load_state_dict(module, state, strict=False)
    except RuntimeError as exc:
        raise SegcliError(f"{what}: {load_error_detail(exc)}") from None


def adapt_input_channels(encoder: nn.Module, state: dict) -> dict:
    """A 3-channel (RGB) file's first convolution fitted to an encoder of another number of input
    channels N, by SMP's rule for its own pretrained weights (``encoders._utils.patch_first_conv``):
    N = 1: the sum over R, G, B; N = 2 or N > 3: channel i takes RGB channel i mod 3, all scaled by
    3 / N (so a constant input gives the same activations). Other tensors are left as they are.

    ``state``: name -> tensor; a conv weight ``(out, 3, kh, kw)`` whose encoder tensor is ``(out,
    N, kh, kw)`` is the one adapted. The rule is applied to the file's tensor here because SMP's
    function patches a module already holding the RGB weights, and the model is built for N
    channels before the file is read (tests/models/test_models.py compares the two)."""
    own = encoder.state_dict()
    out = dict(state)
    for name, tensor in state.items():
        target = own.get(name)
        if target is None or tensor.ndim != 4 or target.ndim != 4 or tensor.shape[1] != 3:
            continue
        n = target.shape[1]
        if n == 3 or tensor.shape[0] != target.shape[0] or tensor.shape[2:] != target.shape[2:]:
            continue
        if n == 1:
            out[name] = tensor.sum(1, keepdim=True)
        else:
            out[name] = tensor[:, [i % 3 for i in range(n)]] * (3 / n)
    return out


def load_encoder_file(encoder: nn.Module, path: Path, name: str, strip: str = "") -> None:
    """Load a local weights file (``load_weights_file``) into ``encoder`` by tensor name, leaving a
    classifier head (``fc.*``, ``classifier.*``) out and removing the prefix ``strip`` from names
    (``features.`` for torchvision's MobileNet files); ``name`` names the encoder in messages.
    Tensors the file lacks stay random (a warning says how many); an RGB file's first convolution
    is fitted to other input channels as SMP fits its own (``adapt_input_channels``).

    Raises:
        SegcliError: the file is unreadable, its shapes do not fit, or no tensor name matches.
    """
    state = {
        k[len(strip) :] if strip and k.startswith(strip) else k: v
        for k, v in load_weights_file(path).items()
        if not k.startswith(("fc.", "classifier."))
    }
    state = adapt_input_channels(encoder, state)
    # same names, other shapes (another depth or width of encoder): an error
    missing, unexpected = load_weights(
        encoder, state, f"{path}: weights do not fit encoder {name}", strict=False
    )
    if len(unexpected) == len(state):
        raise SegcliError(
            f"{path}: no tensor matches encoder {name} (first key {next(iter(state), None)!r})"
        )
    if missing:
        from segcli import console

        console.warning(
            f"{path}: {len(missing)} of the {len(missing) + len(state) - len(unexpected)} tensors "
            f"of encoder {name} are not in the file and stay random "
            f"(first: {missing[0]}); is it another encoder?"
        )


def local_weights(cfg: Mapping) -> Path | None:
    """``model.encoder_weights`` as a local file path, or None (null, or a name such as
    ``imagenet``)."""
    weights = cfg.get("encoder_weights")
    if weights is None:
        return None
    path = Path(str(weights))
    return path if path.suffix in {".pth", ".pt", ".bin", ".safetensors"} or path.exists() else None
