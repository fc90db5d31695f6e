"""The builders of the ``model`` config group, registered in ``MODELS`` by ``model.arch`` (any
case): every segmentation-models-pytorch architecture under its class name (``smp_model``),
torchvision's FCN and LR-ASPP under ``fcn_resnet50``, ``fcn_resnet101``, ``lraspp_mobilenet_v3``,
the networks written here (``architectures/``) as ``fcn8s``, ``fastfcn``, ``fcdensenet56/67/103``,
and the classical baselines (``models/classical.py``) as ``pixel_forest`` and ``otsu``. Each
builder is ``(cfg, num_classes, in_channels) -> nn.Module``; another architecture is one YAML file
plus one ``@MODELS.register("name")`` function here. ``model_source`` says which library a name
comes from.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from torch import nn

from segcli.errors import SegcliError
from segcli.models.weights import load_encoder_file, load_weights_file, local_weights
from segcli.registry import Registry

MODELS = Registry("model", key="arch", fold_case=True)
ARCHITECTURES = {a.__name__.lower(): a.__name__ for a in smp._MODEL_ARCHITECTURES}


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
    ``imagenet`` is refused (torchvision downloads by its own names; download the file and pass its
    path).

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
            f"model.encoder_weights={weights}: {arch} takes null or the path of a local "
            "torchvision backbone weights file (e.g. resnet50-0676ba61.pth)"
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
        SegcliError: a bad ``params`` value, ``encoder_weights`` a name, or a file that does not
            fit.
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
    (``encoder_weights`` as for SMP models); ``params``: ``width``, ``aspp_channels``,
    ``atrous_rates``.

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
    """The classical baselines of ``models/classical.py``: ``pixel_forest`` (``params``: the
    features' and forest's settings of ``classical.PixelForest``) or ``otsu`` (binary tasks).

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
