"""Two-stage cascades (``model.cascade``): a trained stage-1 model whose class probabilities feed
the model being trained (stage 2), as one ``nn.Module`` so that training, eval, predict and export
run both stages from stage 2's checkpoint alone (stage 1's weights are in its state dict; the
checkpoint's ``"cascade"`` entry describes stage 1's architecture and the file it came from, with
its SHA-256).

Two forms:
- ``cascade.from=STAGE1.pt``: nnU-Net's cascade (Isensee et al. 2021): stage 2 sees the image's
  channels and stage 1's C1 class probabilities, ``C_in + C1`` input channels.
- ``cascade.roi_class=K`` (or a list of classes): the hierarchical pattern (find the vessel, then
  segment inside it): stage 2 sees the image and stage 1's probability of the region (the sum over
  the listed classes), and predicts only inside the region (stage 1's argmax among the listed
  classes); outside it every pixel is ``dataset.background_class``, with constant logits, so the
  loss trains stage 2 on the region only.

Stage 1 stays frozen (no gradients, eval mode: its BatchNorm statistics do not move) and computes
its probabilities on the fly on the same (augmented) input; during training these are its
predictions on images it was trained on, cleaner than on new images (the leakage nnU-Net avoids
with 5-fold cross-validated stage-1 predictions; docs/channels.md says what it means here).

Written here: nnU-Net's cascade lives inside its own trainer and data format, and neither SMP nor
MONAI wraps two models this way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from segcli.errors import SegcliError

OUTSIDE_LOGIT = 20.0  # the background class's logit outside the region (others 0): p > 0.999


class CascadeModel(nn.Module):
    """``forward(x: (N, C_in, H, W) float) -> (N, C, H, W) float`` logits of stage 2, fed by the
    frozen ``stage1`` (see the module docstring).

    Args:
        stage1: ``(N, C_in, H, W) -> (N, C1, H, W)`` logits.
        stage2: ``(N, C_in + C1, H, W)`` (or ``C_in + 1`` with ``roi_classes``) -> ``(N, C, H, W)``.
        roi_classes: stage-1 classes whose region stage 2 segments; None: everywhere.
        background: the class outside the region (``dataset.background_class``).
    """

    def __init__(
        self,
        stage1: nn.Module,
        stage2: nn.Module,
        roi_classes: Sequence[int] | None = None,
        background: int = 0,
    ) -> None:
        super().__init__()
        self.stage1, self.stage2 = stage1, stage2
        self.roi_classes = None if roi_classes is None else [int(k) for k in roi_classes]
        self.background = int(background)
        for p in self.stage1.parameters():
            p.requires_grad_(False)
        self.stage1.eval()

    def train(self, mode: bool = True) -> CascadeModel:
        super().train(mode)
        self.stage1.eval()  # frozen: BatchNorm and dropout in inference mode, always
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            p1 = self.stage1(x).float().softmax(1)
        if self.roi_classes is None:
            return self.stage2(torch.cat([x, p1.to(x.dtype)], 1))
        region_p = p1[:, self.roi_classes].sum(1, keepdim=True)
        logits = self.stage2(torch.cat([x, region_p.to(x.dtype)], 1))
        best = p1.argmax(1, keepdim=True)
        inside = best == self.roi_classes[0]  # a chain of ==, not isin: ONNX has no isin
        for k in self.roi_classes[1:]:
            inside = inside | (best == k)
        outside = torch.zeros_like(logits)
        outside[:, self.background] = OUTSIDE_LOGIT
        return torch.where(inside, logits, outside)


def roi_classes(cascade: Mapping) -> list[int] | None:
    """``cascade.roi_class`` as a list of classes (an int or a list), or None.

    Raises:
        SegcliError: not a class index or a list of them."""
    value = cascade.get("roi_class")
    if value is None:
        return None
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values
    ):
        raise SegcliError(
            f"model.cascade.roi_class={value}: expected a stage-1 class index or a list of them"
        )
    return [int(v) for v in values]


def describe_stage1(ckpt: Mapping, path: str, sha256: str) -> dict:
    """The checkpoint entry ``"cascade"`` of a stage-2 run: stage 1's ``model`` group, classes,
    input channels and normalisation, and the file it was read from with its SHA-256."""
    return {
        "from": str(path),
        "sha256": sha256,
        "model": {**ckpt["config"]["model"], "encoder_weights": None},
        "num_classes": int(ckpt["classes"]["num_classes"]),
        "class_names": list(ckpt["classes"]["class_names"]),
        "in_channels": len(ckpt["normalization"]["mean"]),
        "normalization": dict(ckpt["normalization"]),
    }


def stage2_channels(in_channels: int, stage1: Mapping, roi: Sequence[int] | None) -> int:
    """Stage 2's input channels: the image's, plus stage 1's classes (or 1 with a region)."""
    return in_channels + (1 if roi is not None else int(stage1["num_classes"]))


def build_cascade(
    stage1_model: nn.Module,
    stage1: Mapping,
    stage2_cfg: Mapping,
    num_classes: int,
    in_channels: int,
    background: int,
) -> CascadeModel:
    """``CascadeModel`` of a built ``stage1_model`` (described by ``stage1``,
    ``describe_stage1``) and a new stage 2 of ``stage2_cfg`` (the ``model`` group, its
    ``cascade`` entry read for ``roi_class``).

    Raises:
        SegcliError: a bad ``roi_class`` (not a class of stage 1), or the builder's errors."""
    from segcli.models.build import build_model

    roi = roi_classes(stage2_cfg.get("cascade") or {})
    if roi is not None and max(roi) >= int(stage1["num_classes"]):
        raise SegcliError(
            f"model.cascade.roi_class={roi}: stage 1 has {stage1['num_classes']} classes "
            f"({', '.join(stage1['class_names'])})"
        )
    plain = {k: v for k, v in stage2_cfg.items() if k != "cascade"}
    stage2 = build_model(plain, num_classes, stage2_channels(in_channels, stage1, roi))
    return CascadeModel(stage1_model, stage2, roi, background)
