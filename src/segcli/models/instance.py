"""The instance-segmentation models of ``task=instance``: torchvision's Mask R-CNN (He et al. 2017,
"Mask R-CNN"), registered in ``INSTANCE_MODELS`` by ``model.arch``:

    maskrcnn_resnet18_fpn      a ResNet-18 FPN backbone from torchvision's parts: the one a CPU
                               trains (segcli's choice; not a torchvision preset)
    maskrcnn_resnet50_fpn      torchvision's ``maskrcnn_resnet50_fpn`` (the paper's R-50-FPN)
    maskrcnn_resnet50_fpn_v2   torchvision's ``maskrcnn_resnet50_fpn_v2`` (Li et al. 2021,
                               "Benchmarking detection transfer learning with vision transformers")

Built offline by default (no weights). ``model.encoder_weights``: null (random init; the backbone
then uses trainable BatchNorm, as torchvision does without pretrained weights), ``imagenet``
(torchvision's ImageNet backbone, downloaded: online only), ``coco`` (the whole detector's COCO
weights, downloaded, box and mask predictors replaced for the dataset's classes; R-50 only), or a
local file: a backbone state dict (torchvision's ``resnet18-f37072fd.pth``) or a whole Mask R-CNN
state dict (e.g. the COCO file ``maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth``).

segcli's pipeline sizes and normalises images itself (data/augment.py, the same for eval and
predict), so torchvision's internal transform is told not to: ``SizedTransform`` keeps the size and
the mean/std are 0/1. ``forward`` is torchvision's: in train mode ``model(images, targets)`` returns
the loss dict (``loss_classifier``, ``loss_box_reg``, ``loss_mask``, ``loss_objectness``,
``loss_rpn_box_reg``), in eval mode ``model(images)`` a list of ``{"boxes": (D, 4) float xyxy
pixels, "labels": (D,) int64, "scores": (D,) float, "masks": (D, 1, H, W) float 0..1}``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from segcli.errors import SegcliError
from segcli.models.amx_guard import guard_amx_bf16_convs
from segcli.models.weights import load_weights, load_weights_file, local_weights
from segcli.registry import Registry

INSTANCE_MODELS = Registry("model", key="arch", fold_case=True)


class SizedTransform(nn.Module):
    """torchvision's ``GeneralizedRCNNTransform`` without its resize and normalisation: images
    arrive sized (a multiple of 32) and normalised by segcli's pipeline; batching pads them to a
    common size (``size_divisible`` 32) and ``postprocess`` maps nothing back (sizes unchanged)."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models.detection.transform import GeneralizedRCNNTransform

        inner = GeneralizedRCNNTransform(1, 1, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
        inner.resize = lambda image, target=None: (image, target)  # segcli sized it
        inner.normalize = lambda image: image  # segcli normalised it
        self.inner = inner

    def forward(self, images, targets=None):
        return self.inner(images, targets)

    def postprocess(self, result, image_shapes, original_image_sizes):
        return self.inner.postprocess(result, image_shapes, original_image_sizes)


def _check_params(cfg: Mapping, extra: tuple[str, ...] = ()) -> dict:
    """``model.params`` without null values: keyword arguments of torchvision's ``MaskRCNN`` /
    ``FasterRCNN`` (``rpn_post_nms_top_n_train``, ``box_detections_per_img``, ...) or ``extra``
    (the light model's own). torchvision passes unknown keywords on to its transform, which drops
    them silently, so they are checked here.

    Raises:
        SegcliError: a key neither takes (one line, naming the key and the accepted ones).
    """
    import inspect

    from torchvision.models.detection import FasterRCNN, MaskRCNN

    params = {k: v for k, v in dict(cfg.get("params") or {}).items() if v is not None}
    known = {*extra}
    for cls in (MaskRCNN, FasterRCNN):
        known |= set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs", "backbone"}
    known -= {"num_classes"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise SegcliError(
            f"model.params.{unknown[0]}: not a keyword of torchvision's MaskRCNN for "
            f"{cfg['arch']}; expected one of {', '.join(sorted(known))}"
        )
    return params


def _finish(model: nn.Module, cfg: Mapping, whole: bool) -> nn.Module:
    """Swap in ``SizedTransform``; load a local whole-model file when ``whole``."""
    model.transform = SizedTransform()
    path = local_weights(cfg)
    if whole and path is not None:
        load_weights(model, load_weights_file(path), f"model.encoder_weights={path}")
    return model


#: the light model's defaults (``model.params`` overrides each): FPN and mask-head width, mask-head
#: depth, and fewer sampled RoIs/proposals than torchvision's R-50 presets (512 / 2000), which
#: cost most of a CPU step on small images (segcli's measurement; README "Instances")
LIGHT_DEFAULTS = {
    "fpn_channels": 128,
    "mask_convs": 2,
    "box_batch_size_per_image": 128,
    "rpn_pre_nms_top_n_train": 1000,
    "rpn_post_nms_top_n_train": 500,
    "rpn_pre_nms_top_n_test": 500,
    "rpn_post_nms_top_n_test": 300,
}


@INSTANCE_MODELS.register("maskrcnn_resnet18_fpn")
def maskrcnn_resnet18_fpn(cfg: Mapping, num_classes: int, in_channels: int = 3) -> nn.Module:
    """Mask R-CNN on a ResNet-18 FPN backbone from torchvision's parts (``resnet18``,
    ``BackboneWithFPN`` over C2-C5 plus a max-pool level, a 512-wide box head, ``MaskRCNNHeads``),
    with the lighter
    settings of ``LIGHT_DEFAULTS``; with pretrained weights conv1 and layer1 are frozen (as
    torchvision's ``trainable_backbone_layers=3``).

    Raises:
        SegcliError: in_channels is not 3, ``encoder_weights=coco`` (no COCO weights for R-18),
            a bad weights file, or a ``model.params`` key MaskRCNN does not take.
    """
    from torchvision.models import ResNet18_Weights, resnet18
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import misc
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    _three_channels(cfg, in_channels)
    weights = cfg.get("encoder_weights")
    if weights == "coco":
        raise SegcliError(
            "model.encoder_weights=coco: torchvision has COCO weights for the ResNet-50 models "
            "only (model=maskrcnn_resnet50_fpn); use null, imagenet or a local file"
        )
    local, pretrained = local_weights(cfg), weights is not None
    backbone = resnet18(
        weights=ResNet18_Weights.IMAGENET1K_V1 if weights == "imagenet" else None,
        norm_layer=misc.FrozenBatchNorm2d if pretrained else nn.BatchNorm2d,
    )
    whole = False
    if local is not None:
        state = load_weights_file(local)
        whole = any(k.startswith("roi_heads.") for k in state)
        if not whole:
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            load_weights(backbone, state, f"model.encoder_weights={local}", strict=False)
    if pretrained:
        for name, p in backbone.named_parameters():
            p.requires_grad_(not name.startswith(("conv1", "bn1", "layer1")))
    params = {**LIGHT_DEFAULTS, **_check_params(cfg, ("fpn_channels", "mask_convs"))}
    channels, convs = int(params.pop("fpn_channels")), int(params.pop("mask_convs"))
    layers = {f"layer{i}": str(i - 1) for i in range(1, 5)}
    fpn = BackboneWithFPN(backbone, layers, [64, 128, 256, 512], channels, LastLevelMaxPool())
    try:
        model = MaskRCNN(
            fpn,
            box_head=TwoMLPHead(channels * 7 * 7, 512),
            box_predictor=FastRCNNPredictor(512, num_classes),
            mask_head=MaskRCNNHeads(channels, [channels] * convs, 1),
            mask_predictor=MaskRCNNPredictor(channels, channels, num_classes),
            **params,
        )
    except TypeError as exc:
        raise SegcliError(f"model.params for maskrcnn_resnet18_fpn: {exc}") from None
    return _finish(model, cfg, whole)


@INSTANCE_MODELS.register("maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2")
def maskrcnn_resnet50(cfg: Mapping, num_classes: int, in_channels: int = 3) -> nn.Module:
    """torchvision's ``maskrcnn_resnet50_fpn`` / ``maskrcnn_resnet50_fpn_v2`` with ``num_classes``
    outputs; ``coco`` weights replace the box and mask predictors for the dataset's classes
    (torchvision's fine-tuning tutorial).

    Raises:
        SegcliError: in_channels is not 3, a failed download (offline), a bad weights file, or a
            ``model.params`` key MaskRCNN does not take.
    """
    from torchvision.models import ResNet50_Weights
    from torchvision.models.detection import mask_rcnn

    _three_channels(cfg, in_channels)
    arch = str(cfg["arch"]).lower()
    v2 = arch.endswith("_v2")
    build = mask_rcnn.maskrcnn_resnet50_fpn_v2 if v2 else mask_rcnn.maskrcnn_resnet50_fpn
    coco = (
        mask_rcnn.MaskRCNN_ResNet50_FPN_V2_Weights
        if v2
        else mask_rcnn.MaskRCNN_ResNet50_FPN_Weights
    ).COCO_V1
    weights = cfg.get("encoder_weights")
    local = local_weights(cfg)
    params = _check_params(cfg)
    try:
        if weights == "coco":
            model = build(weights=coco, **params)
            _replace_predictors(model, num_classes)
        else:
            backbone = ResNet50_Weights.IMAGENET1K_V1 if weights == "imagenet" else None
            model = build(
                weights=None, weights_backbone=backbone, num_classes=num_classes, **params
            )
    except TypeError as exc:
        raise SegcliError(f"model.params for {arch}: {exc}") from None
    except (OSError, RuntimeError, ValueError) as exc:  # a download that failed (offline)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise SegcliError(
            f"model.encoder_weights={weights}: cannot load pretrained weights for {arch} "
            f"(offline? download the file and pass its path): {first}"
        ) from None
    if local is not None:
        state = load_weights_file(local)
        if not any(k.startswith("roi_heads.") for k in state):  # a backbone file
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            load_weights(model.backbone.body, state, f"model.encoder_weights={local}", strict=False)
            return _finish(model, cfg, False)
    return _finish(model, cfg, local is not None)


def _replace_predictors(model: nn.Module, num_classes: int) -> None:
    """New box and mask predictors for ``num_classes`` (background included) on a COCO model."""
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
    from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor

    box = model.roi_heads.box_predictor
    model.roi_heads.box_predictor = FastRCNNPredictor(box.cls_score.in_features, num_classes)
    mask = model.roi_heads.mask_predictor
    model.roi_heads.mask_predictor = MaskRCNNPredictor(
        mask.conv5_mask.in_channels, 256, num_classes
    )


def _three_channels(cfg: Mapping, in_channels: int) -> None:
    if in_channels != 3:
        raise SegcliError(
            f"model.arch={cfg['arch']}: torchvision's Mask R-CNN takes 3-channel images, "
            f"not {in_channels}"
        )


def is_instance_model(cfg: Mapping) -> bool:
    """Whether ``cfg["arch"]`` names a model of ``INSTANCE_MODELS``."""
    return str(cfg.get("arch")) in INSTANCE_MODELS


def build_instance_model(cfg: Mapping, num_classes: int) -> nn.Module:
    """The Mask R-CNN ``cfg["arch"]`` names, for ``num_classes`` classes (background included);
    on a CPU with AMX its convolutions in torch's bf16 crash region run in float32 (``amx_guard``,
    as ``build_model`` does).

    Raises:
        SegcliError: unknown architecture (naming the instance models), or what the builder
            raises.
    """
    arch = str(cfg["arch"])
    if arch not in INSTANCE_MODELS:
        raise SegcliError(
            f"model.arch={arch}: not an instance model; expected one of "
            f"{', '.join(INSTANCE_MODELS.names())}"
        )
    model = INSTANCE_MODELS.build(cfg, num_classes, 3)
    guard_amx_bf16_convs(model)  # as build_model: the convolutions AMX's bf16 backward crashes on
    return model


def instance_model_from_checkpoint(ckpt: Mapping, device: torch.device) -> nn.Module:
    """Rebuild a ``task=instance`` checkpoint's Mask R-CNN (no download) with its weights, in eval
    mode on ``device``.

    Raises:
        SegcliError: the weights do not fit (one line, see ``load_weights``).
    """
    cfg = {**ckpt["config"]["model"], "encoder_weights": None}
    num_classes = int(ckpt["classes"]["num_classes"])
    model = build_instance_model(cfg, num_classes)
    load_weights(
        model,
        ckpt["model"],
        f"checkpoint weights do not fit {cfg['arch']} with {num_classes} classes",
    )
    return model.to(device).eval()
