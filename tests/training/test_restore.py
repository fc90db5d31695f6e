"""Weights into a training run from a file (resume's last.pt, trainer.init_from) fail in one line
naming the file and the first mismatching tensor (models.weights.load_weights)."""

from __future__ import annotations

import pytest
import torch

from segcli.errors import SegcliError
from segcli.models.build import build_model
from segcli.runs.checkpoints import CHECKPOINT_FORMAT
from segcli.training.trainer import init_weights, restore_training

MODEL = {"arch": "Unet", "encoder_name": "resnet18", "encoder_weights": None, "params": {}}


def _checkpoint(path, num_classes: int) -> None:
    net = build_model(MODEL, num_classes)
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "config": {"model": MODEL},
            "classes": {"num_classes": num_classes, "ignore_index": 255},
            "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3},
            "model": net.state_dict(),
            "optimizer": torch.optim.AdamW(net.parameters()).state_dict(),
            "progress": {},
        },
        path,
    )


def test_weights_of_another_class_count_are_refused_in_one_line(tmp_path):
    path = tmp_path / "last.pt"
    _checkpoint(path, num_classes=5)
    net = build_model(MODEL, 3)
    optimizer = torch.optim.AdamW(net.parameters())
    with pytest.raises(SegcliError) as err:
        restore_training(path, net, optimizer, None)
    message = str(err.value)
    assert message.startswith(f"{path}: does not fit the configured model/optimizer: size mismatch")
    assert "segmentation_head" in message and "\n" not in message
    with pytest.raises(SegcliError) as err:
        init_weights(net, path)
    assert str(err.value).startswith(
        f"trainer.init_from={path}: its weights do not fit the configured model: size mismatch"
    )
    assert "\n" not in str(err.value)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    _checkpoint(path, num_classes=3)
    init_weights(net, path)  # the same shapes load
    assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items())
