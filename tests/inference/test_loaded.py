"""inference.loaded.LoadedModel, the one path from a checkpoint to a runnable model: what it
carries (model in eval mode on the device, the checkpoint's statistics, classes, config, epoch),
that the run's data comes with the checkpoint's statistics, and its one-line refusals."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from segcli.errors import SegcliError
from segcli.inference.loaded import LoadedModel, Preprocessing

OTHER_STATS = {"mean": [0.7, 0.2, 0.6], "std": [0.1, 0.5, 0.15]}


@pytest.fixture
def best(evaluated_runs) -> Path:
    return evaluated_runs["longer"] / "checkpoints" / "best.pt"


def test_loaded_model_carries_the_checkpoints_preprocessing_classes_and_config(
    best, evaluated_runs, tmp_path
):
    ckpt = torch.load(best, weights_only=True)
    ckpt["normalization"] = OTHER_STATS
    torch.save(ckpt, tmp_path / "other.pt")
    loaded = LoadedModel.load(tmp_path / "other.pt", "cpu", "false")
    assert not loaded.model.training
    assert {p.device.type for p in loaded.model.parameters()} == {"cpu"}
    assert loaded.ctx.device.type == "cpu" and loaded.ctx.amp_dtype is None
    assert loaded.preprocessing == Preprocessing(
        (0.7, 0.2, 0.6), (0.1, 0.5, 0.15), 1.0, ckpt["config"]["augmentation"].get("eval")
    )
    assert loaded.preprocessing.in_channels == 3
    assert loaded.classes.class_names == ["a", "b", "c"] and loaded.classes.num_classes == 3
    assert loaded.classes.ignore_index == ckpt["classes"]["ignore_index"]
    assert loaded.config == ckpt["config"] and loaded.epoch == ckpt["epoch"]

    # the run's data, normalised with the checkpoint's statistics, zero-padded to 64x96
    root = evaluated_runs["root"]
    sample = loaded.datasets(("test",), data_root=str(root))["test"][0]
    image = cv2.cvtColor(
        cv2.imread(str(root / "test" / f"{sample['name']}.jpg")), cv2.COLOR_BGR2RGB
    )
    expected = (image / 255.0 - np.array(OTHER_STATS["mean"])) / np.array(OTHER_STATS["std"])
    assert sample["image"].shape == (3, 64, 96)
    assert np.allclose(sample["image"][:, :48, :80].permute(1, 2, 0).numpy(), expected, atol=1e-5)
    assert loaded.config == ckpt["config"]  # data_root changed a copy


def test_loaded_model_refuses_a_bad_file_another_architecture_or_class_count(best, tmp_path):
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    ckpt = torch.load(best, weights_only=True)
    ckpt["config"]["model"]["arch"] = "FPN"
    torch.save(ckpt, tmp_path / "fpn.pt")
    ckpt = torch.load(best, weights_only=True)
    ckpt["classes"]["num_classes"] = 7
    torch.save(ckpt, tmp_path / "seven.pt")
    for name, fragment in [
        ("missing.pt", "missing.pt: checkpoint not found"),
        ("corrupt.pt", "corrupt.pt: cannot read as a checkpoint"),
        ("fpn.pt", "checkpoint weights do not fit FPN-resnet18 with 3 classes: "),
        ("seven.pt", "checkpoint weights do not fit Unet-resnet18 with 7 classes: size mismatch"),
    ]:
        with pytest.raises(SegcliError) as caught:
            LoadedModel.load(tmp_path / name, "cpu")
        assert fragment in str(caught.value) and "\n" not in str(caught.value), name
