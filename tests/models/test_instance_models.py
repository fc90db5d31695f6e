"""models/instance.py: torchvision's Mask R-CNN as task=instance builds it: segcli's sizes and
normalisation kept (no internal resize to 800 pixels, no second normalisation), the loss dict in
train mode and full-size masks in eval mode, weights from local files, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from segcli.errors import SegcliError
from segcli.models.build import model_from_checkpoint
from segcli.models.instance import build_instance_model

LIGHT = {"arch": "maskrcnn_resnet18_fpn", "encoder_weights": None, "params": {}}
LOSSES = {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}


def test_the_model_keeps_segcli_sizes_and_normalisation():
    torch.manual_seed(0)
    model = build_instance_model(LIGHT, 4).eval()
    x = torch.randn(3, 96, 128)
    batch, _ = model.transform([x])
    assert batch.image_sizes == [(96, 128)]  # torchvision would resize the short side to 800
    assert torch.equal(batch.tensors[0], x)  # and normalise a second time
    with torch.inference_mode():
        out = model([x])[0]
    assert set(out) == {"boxes", "labels", "scores", "masks"}
    assert out["masks"].shape[1:] == (1, 96, 128)


def test_train_mode_returns_the_five_losses_and_learns_from_them():
    torch.manual_seed(0)
    model = build_instance_model(LIGHT, 3).train()
    x = torch.rand(3, 64, 64)
    mask = torch.zeros(1, 64, 64, dtype=torch.uint8)
    mask[0, 10:40, 20:50] = 1
    target = {"boxes": torch.tensor([[20.0, 10.0, 50.0, 40.0]]), "labels": torch.tensor([2]),
              "masks": mask}  # fmt: skip
    empty = {  # an image without objects (COCO keeps them): a negative example, no crash
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "masks": torch.zeros(0, 64, 64, dtype=torch.uint8),
    }
    assert all(torch.isfinite(v) for v in model([x, x], [empty, empty]).values())
    losses = model([x, x], [target, empty])
    assert set(losses) == LOSSES and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grads = [p.grad for p in model.roi_heads.mask_predictor.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_local_backbone_and_whole_model_files_are_loaded(tmp_path: Path):
    from torchvision.models import resnet18

    torch.manual_seed(1)
    donor = resnet18()  # torchvision's ImageNet file layout, classifier head included
    torch.save(donor.state_dict(), tmp_path / "resnet18.pth")
    model = build_instance_model({**LIGHT, "encoder_weights": str(tmp_path / "resnet18.pth")}, 4)
    body = model.backbone.body.state_dict()
    assert torch.equal(body["layer3.0.conv1.weight"], donor.layer3[0].conv1.weight)
    assert not model.backbone.body.conv1.weight.requires_grad  # pretrained: stem frozen

    whole = build_instance_model(LIGHT, 4)
    torch.save(whole.state_dict(), tmp_path / "maskrcnn.pth")
    again = build_instance_model({**LIGHT, "encoder_weights": str(tmp_path / "maskrcnn.pth")}, 4)
    loaded = again.state_dict()  # pretrained: FrozenBatchNorm, which keeps no batch counter
    assert len(loaded) >= len(whole.state_dict()) - 20
    for key, value in loaded.items():
        assert torch.equal(value, whole.state_dict()[key]), key


def test_a_checkpoint_of_task_instance_rebuilds_its_model():
    torch.manual_seed(2)
    model = build_instance_model(LIGHT, 4)
    ckpt = {
        "task": "instance",
        "config": {"model": LIGHT},
        "classes": {"num_classes": 4},
        "model": model.state_dict(),
    }
    rebuilt = model_from_checkpoint(ckpt, torch.device("cpu"))
    assert not rebuilt.training
    for key, value in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value), key
    with pytest.raises(SegcliError, match=r"^checkpoint task=panoptic: expected one of semantic"):
        model_from_checkpoint({**ckpt, "task": "panoptic"}, torch.device("cpu"))


@pytest.mark.parametrize(
    "cfg,channels,message",
    [
        ({**LIGHT, "encoder_weights": "coco"}, 3, r"^model.encoder_weights=coco: torchvision has"),
        (LIGHT, 4, r"^model.arch=maskrcnn_resnet18_fpn: .* 3-channel images, not 4$"),
        ({**LIGHT, "params": {"box_nms": 0.5}}, 3, r"^model.params.box_nms: not a keyword of"),
        ({**LIGHT, "arch": "unet"}, 3, r"^model.arch=unet: not an instance model; expected one"),
    ],
)
def test_bad_model_choices_are_one_line_errors(cfg, channels, message):
    from segcli.models.instance import INSTANCE_MODELS

    with pytest.raises(SegcliError, match=message) as info:
        if channels == 3:
            build_instance_model(cfg, 4)
        else:
            INSTANCE_MODELS.build(cfg, 4, channels)
    assert "\n" not in str(info.value)
