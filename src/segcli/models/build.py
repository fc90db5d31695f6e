"""build_model: the ``model`` config group. ``MODELS`` maps ``model.arch`` (any case) to a builder
``(cfg, num_classes, in_channels) -> nn.Module``; every segmentation-models-pytorch architecture is
registered under its class name, torchvision's FCN and LR-ASPP under ``fcn_resnet50``,
``fcn_resnet101``, ``lraspp_mobilenet_v3``, the networks written here (``architectures/``) as
``fcn8s``, ``fastfcn``, ``fcdensenet56/67/103``, and the classical baselines (``models/classical.py``) as
``pixel_forest`` and ``otsu``. Another architecture is one YAML file plus one
``@MODELS.register("name")`` function. ``model_facts`` gives parameters and GFLOPs (``segcli models``).

``encoder_weights`` is ``null`` (random init, the default here), a name SMP knows
(``imagenet``: downloaded, so online only), or a path to a local weights file (``.pth``/``.pt``
state dict or ``.safetensors``) holding the encoder's weights, e.g. torchvision's
``resnet18-f37072fd.pth``; a classifier head (``fc.*``) in it is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from torch import nn

from segcli.errors import SegcliError
from segcli.models.amx_guard import guard_amx_bf16_convs
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


def load_encoder_file(encoder: nn.Module, path: Path, name: str, strip: str = "") -> None:
    """Load a local weights file (``load_weights_file``) into ``encoder`` by tensor name, leaving a
    classifier head (``fc.*``, ``classifier.*``) out and removing the prefix ``strip`` from names
    (``features.`` for torchvision's MobileNet files); ``name`` names the encoder in messages.
    Tensors the file lacks stay random (a warning says how many).

    Raises:
        SegcliError: the file is unreadable, its shapes do not fit, or no tensor name matches.
    """
    state = {
        k[len(strip) :] if strip and k.startswith(strip) else k: v
        for k, v in load_weights_file(path).items()
        if not k.startswith(("fc.", "classifier."))
    }
    # nn.Module's own method: SMP encoders override load_state_dict and return nothing
    try:
        missing, unexpected = nn.Module.load_state_dict(encoder, state, strict=False)
    except RuntimeError as exc:  # same names, other shapes: another depth or width of encoder
        raise SegcliError(
            f"{path}: weights do not fit encoder {name}: {load_error_detail(exc)}"
        ) from None
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
    """``model.encoder_weights`` as a local file path, or None (null, or a name such as ``imagenet``)."""
    weights = cfg.get("encoder_weights")
    if weights is None:
        return None
    path = Path(str(weights))
    return path if path.suffix in {".pth", ".pt", ".bin", ".safetensors"} or path.exists() else None


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
        SegcliError: unknown architecture (``model.arch=X: unknown architecture; expected one of ...``),
            or what the builder raises.
    """
    arch = str(cfg["arch"])
    if arch not in MODELS:
        raise SegcliError(
            f"model.arch={arch}: unknown architecture; expected one of {', '.join(MODELS.names())}"
        )
    model = MODELS.build(cfg, num_classes, in_channels)
    guard_amx_bf16_convs(model)
    return model


def smp_model(cfg: Mapping, num_classes: int, in_channels: int = 3) -> nn.Module:
    """Create an SMP model of ``cfg``: ``arch`` (an SMP class name, any case), ``encoder_name``,
    ``encoder_weights``, ``params`` (extra keyword arguments; null values are dropped so SMP's
    defaults apply).

    Raises:
        SegcliError: unknown encoder, or an unusable weights file.
    """
    arch = str(cfg["arch"])
    weights = cfg.get("encoder_weights")
    local = local_weights(cfg) is not None
    params = model_params(cfg)
    with smp_errors(cfg, arch):
        model = smp.create_model(
            arch,
            encoder_name=str(cfg["encoder_name"]),
            encoder_weights=None if local else weights,
            in_channels=in_channels,
            classes=num_classes,
            **params,
        )
    if local:
        load_encoder_file(model.encoder, Path(str(weights)), str(cfg["encoder_name"]))
    return model


def model_params(cfg: Mapping) -> dict:
    """``model.params`` without its null values (so the library's defaults apply)."""
    return {k: v for k, v in dict(cfg.get("params") or {}).items() if v is not None}


@contextmanager
def smp_errors(cfg: Mapping, arch: str):
    """SMP's errors while building ``arch`` as one-line SegcliErrors naming the key."""
    weights = cfg.get("encoder_weights")
    try:
        yield
    except KeyError as exc:
        message = str(exc.args[0] if exc.args else exc)
        raise SegcliError(f"model.encoder_name={cfg['encoder_name']}: {message[:300]}") from None
    except TypeError as exc:
        raise SegcliError(f"model.params for {arch}: {exc}") from None
    except (
        OSError,
        RuntimeError,
        ValueError,
    ) as exc:  # a download that failed (offline) or bad weights
        if weights is None or local_weights(cfg) is not None:
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise SegcliError(
            f"model.encoder_weights={weights}: cannot load pretrained weights for "
            f"{cfg['encoder_name']} (downloading needs internet; use null or a local file): {first}"
        ) from None


MODELS.add(smp_model, ARCHITECTURES.values())


class MainOutput(nn.Module):
    """A torchvision segmentation model with its ``{"out": logits}`` dict unwrapped:
    ``forward(x: (N, 3, H, W)) -> (N, C, H, W)`` logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


@MODELS.register("fcn_resnet50", "fcn_resnet101", "lraspp_mobilenet_v3")
def torchvision_model(cfg: Mapping, num_classes: int, in_channels: int = 3) -> nn.Module:
    """torchvision's ``fcn_resnet50`` / ``fcn_resnet101`` (Long et al. 2015's FCN head on a ResNet
    with dilated last stages, output stride 8) or ``lraspp_mobilenet_v3_large`` (Howard et al. 2019,
    "Searching for MobileNetV3", Lite R-ASPP), built offline (``weights=None``,
    ``weights_backbone=None``, no auxiliary head). ``encoder_weights``: null, or a local torchvision
    ImageNet file of the backbone (``resnet50-0676ba61.pth``, ``mobilenet_v3_large-8738ca79.pth``);
    ``imagenet`` is refused (torchvision downloads by its own names; download the file and pass its path).

    Raises:
        SegcliError: in_channels is not 3, ``encoder_weights`` is a name, or the file does not fit.
    """
    from torchvision.models import segmentation

    arch = str(cfg["arch"]).lower()
    weights = cfg.get("encoder_weights")
    if in_channels != 3:
        raise SegcliError(
            f"model.arch={arch}: torchvision's model takes 3-channel images, not {in_channels}"
        )
    if weights is not None and local_weights(cfg) is None:
        raise SegcliError(
            f"model.encoder_weights={weights}: {arch} takes null or the path of a local torchvision "
            "backbone weights file (e.g. resnet50-0676ba61.pth)"
        )
    build = {
        "fcn_resnet50": segmentation.fcn_resnet50,
        "fcn_resnet101": segmentation.fcn_resnet101,
        "lraspp_mobilenet_v3": segmentation.lraspp_mobilenet_v3_large,
    }[arch]
    extra = {} if arch.startswith("lraspp") else {"aux_loss": False}
    try:
        model = build(
            weights=None,
            weights_backbone=None,
            num_classes=num_classes,
            **extra,
            **model_params(cfg),
        )
    except TypeError as exc:
        raise SegcliError(f"model.params for {arch}: {exc}") from None
    if weights is not None:
        load_encoder_file(
            model.backbone,
            Path(str(weights)),
            arch,
            strip="features." if arch.startswith("lraspp") else "",
        )
    return MainOutput(model)


@MODELS.register("fcn8s")
def fcn_vgg16(cfg: Mapping, num_classes: int, in_channels: int = 3) -> nn.Module:
    """The VGG16 FCN of Long et al. 2015 (``architectures/fcn.py``): ``params.stride`` 8 (FCN-8s),
    16 or 32, ``params.batch_norm``. ``encoder_weights``: null or a local torchvision VGG16 file
    (``vgg16-397923af.pth``; with ``batch_norm``, ``vgg16_bn-6c64b313.pth``).

    Raises:
        SegcliError: a bad ``params`` value, ``encoder_weights`` a name, or a file that does not fit.
    """
    from segcli.models.architectures.fcn import FCN

    params, weights = model_params(cfg), cfg.get("encoder_weights")
    if weights is not None and local_weights(cfg) is None:
        raise SegcliError(
            f"model.encoder_weights={weights}: fcn8s takes null or the path of a local torchvision "
            "VGG16 weights file (vgg16-397923af.pth)"
        )
    try:
        model = FCN(num_classes, in_channels, **params)
    except (TypeError, ValueError) as exc:
        raise SegcliError(f"model.params for fcn8s: {exc}") from None
    if weights is not None:
        used, _ = model.load_vgg16(load_weights_file(Path(str(weights))))
        if used == 0:
            raise SegcliError(
                f"{weights}: no tensor fits VGG16{'_bn' if params.get('batch_norm') else ''}"
            )
    return model


@MODELS.register("fastfcn")
def fastfcn(cfg: Mapping, num_classes: int, in_channels: int = 3) -> nn.Module:
    """FastFCN (``architectures/fastfcn.py``): JPU + ASPP on the SMP encoder ``encoder_name``
    (``encoder_weights`` as for SMP models); ``params``: ``width``, ``aspp_channels``, ``atrous_rates``.

    Raises:
        SegcliError: unknown encoder, bad params, or unusable weights.
    """
    from segmentation_models_pytorch.encoders import get_encoder

    from segcli.models.architectures.fastfcn import FastFCN

    local = local_weights(cfg)
    with smp_errors(cfg, "fastfcn"):
        encoder = get_encoder(
            str(cfg["encoder_name"]),
            in_channels=in_channels,
            depth=5,
            weights=None if local else cfg.get("encoder_weights"),
        )
        model = FastFCN(encoder, num_classes, **model_params(cfg))
    if local is not None:
        load_encoder_file(model.encoder, local, str(cfg["encoder_name"]))
    return model


@MODELS.register("fcdensenet56", "fcdensenet67", "fcdensenet103")
def fcdensenet(cfg: Mapping, num_classes: int, in_channels: int = 3) -> nn.Module:
    """FC-DenseNet 56/67/103 (``architectures/fcdensenet.py``), trained from scratch as in the
    paper; ``params`` override ``growth``, ``dropout``, ``first_channels``.

    Raises:
        SegcliError: bad params, or ``encoder_weights`` set (the network has no pretrained encoder).
    """
    from segcli.models.architectures.fcdensenet import fcdensenet as build

    if cfg.get("encoder_weights") is not None:
        raise SegcliError(
            f"model.encoder_weights={cfg['encoder_weights']}: FC-DenseNet has no separate encoder; "
            "expected null (fine-tune from a run with trainer.init_from=RUN/checkpoints/best.pt)"
        )
    try:
        return build(str(cfg["arch"]).lower(), num_classes, in_channels, **model_params(cfg))
    except TypeError as exc:
        raise SegcliError(f"model.params for {cfg['arch']}: {exc}") from None


@MODELS.register("pixel_forest", "otsu")
def classical_model(cfg: Mapping, num_classes: int, in_channels: int = 3) -> nn.Module:
    """The classical baselines of ``models/classical.py``: ``pixel_forest`` (``params``: the features'
    and forest's settings of ``classical.PixelForest``) or ``otsu`` (binary tasks).

    Raises:
        SegcliError: bad params, more than 2 classes for otsu, the extra not installed.
    """
    from segcli.models.classical import OtsuThreshold, PixelForest

    arch = str(cfg["arch"]).lower()
    if in_channels != 3:
        raise SegcliError(f"model.arch={arch}: expects 3-channel images, not {in_channels}")
    try:
        return (
            PixelForest(num_classes, **model_params(cfg))
            if arch == "pixel_forest"
            else OtsuThreshold(num_classes)
        )
    except TypeError as exc:
        raise SegcliError(f"model.params for {arch}: {exc}") from None


def is_classical(cfg: Mapping) -> bool:
    """Whether the ``model`` group ``cfg`` names a classical baseline (``models/classical.py``,
    fitted once, not trained by gradient steps), by the builder registered for ``cfg["arch"]``.
    An unknown ``arch`` is not one (``build_model`` refuses it)."""
    arch = str(cfg["arch"])
    return arch in MODELS and MODELS.get(arch) is classical_model


def model_facts(cfg: Mapping, num_classes: int = 21, size: tuple[int, int] = (512, 512)) -> dict:
    """Size and cost of the model ``cfg`` describes, without computing anything: built on torch's
    ``meta`` device (no memory, no weights). Returns ``{"params_m": trainable parameters in millions,
    "gflops": GFLOPs of one forward pass of a (1, 3, H, W) image (torch.utils.flop_counter; a
    multiply-add counts 2), "source": model_source}``; ``params_m`` and ``gflops`` are None for
    the classical baselines (no torch graph).

    Raises:
        SegcliError: the model cannot be built (see ``build_model``).
    """
    from torch.utils.flop_counter import FlopCounterMode

    out = {"source": model_source(str(cfg["arch"])), "params_m": None, "gflops": None}
    if is_classical(cfg):
        return out
    cfg = {**cfg, "encoder_weights": None}
    try:
        with torch.device("meta"):
            model = build_model(cfg, num_classes).eval()
    except (
        RuntimeError,
        NotImplementedError,
    ):  # a constructor that reads tensor values (SegFormer's)
        model = build_model(cfg, num_classes).to("meta").eval()
    out["params_m"] = sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.empty(1, 3, *size, device="meta"))
    out["gflops"] = counter.get_total_flops() / 1e9
    return out


def model_source(arch: str) -> str:
    """Where ``arch`` comes from, by the builder registered for it: ``segmentation-models-pytorch``,
    ``torchvision``, ``segcli (classical)`` or ``segcli`` (written here).

    Raises:
        SegcliError: ``arch`` is not registered."""
    builder = MODELS.get(arch, "model.arch")
    return {
        smp_model: "segmentation-models-pytorch",
        torchvision_model: "torchvision",
        classical_model: "segcli (classical)",
    }.get(builder, "segcli")


def model_from_checkpoint(ckpt: Mapping, device: torch.device) -> torch.nn.Module:
    """Rebuild the checkpoint's architecture (no download) and load its weights, in eval mode on
    ``device``: ``forward(x: (N, 3, H, W) float32) -> (N, C, H, W)`` logits.

    Raises:
        SegcliError: the weights do not fit the architecture named in the checkpoint.
    """
    model_cfg = {**ckpt["config"]["model"], "encoder_weights": None}
    model = build_model(model_cfg, int(ckpt["classes"]["num_classes"]))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise SegcliError(
            f"checkpoint weights do not fit {model_label(model_cfg)} with "
            f"{ckpt['classes']['num_classes']} classes: {load_error_detail(exc)}"
        ) from None
    return model.to(device).eval()
