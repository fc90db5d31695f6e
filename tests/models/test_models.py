from pathlib import Path

import pytest
import torch

from segcli.config import compose_config, group_options, to_plain
from segcli.errors import SegcliError
from segcli.models.build import ARCHITECTURES, build_model


@pytest.mark.parametrize("option", [o for o in group_options()["model"] if o not in ("pixel_forest", "otsu")])
def test_every_model_option_builds_and_keeps_the_input_size(option):  # the fitted baselines: test_architectures.py
    cfg = to_plain(compose_config([f"model={option}"]))["model"]
    model = build_model(cfg, num_classes=5).eval()
    with torch.inference_mode():
        out = model(torch.randn(2, 3, 128, 160))
    assert out.shape == (2, 5, 128, 160) and out.dtype == torch.float32


def test_every_smp_architecture_has_a_config_file():
    names = {to_plain(compose_config([f"model={o}"]))["model"]["arch"].lower() for o in group_options()["model"]}
    assert names >= set(ARCHITECTURES)


def test_local_encoder_weights_file_is_loaded(tmp_path: Path):
    cfg = {"arch": "FPN", "encoder_name": "resnet18", "encoder_weights": None, "params": {}}
    donor = build_model(cfg, 2)
    path = tmp_path / "resnet18.pth"
    state = dict(donor.encoder.state_dict())
    state["fc.weight"] = torch.zeros(1000, 512)  # a classifier head, as torchvision files have
    torch.save(state, path)
    model = build_model({**cfg, "encoder_weights": str(path)}, 2)
    for k, v in donor.encoder.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[k], v)


def test_model_errors_name_the_key(tmp_path: Path):
    base = {"arch": "Unet", "encoder_name": "resnet18", "encoder_weights": None, "params": {}}
    with pytest.raises(SegcliError, match="model.arch=Nope: unknown architecture; expected one of Unet"):
        build_model({**base, "arch": "Nope"}, 2)
    with pytest.raises(SegcliError, match="model.encoder_name=resnet999"):
        build_model({**base, "encoder_name": "resnet999"}, 2)
    with pytest.raises(SegcliError, match="missing.pth: model.encoder_weights file not found"):
        build_model({**base, "encoder_weights": str(tmp_path / "missing.pth")}, 2)


def test_failed_weight_download_is_a_user_error(monkeypatch):
    import segmentation_models_pytorch as smp

    def offline(*args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(smp, "create_model", offline)
    cfg = {"arch": "Unet", "encoder_name": "resnet18", "encoder_weights": "imagenet", "params": {}}
    with pytest.raises(SegcliError, match="model.encoder_weights=imagenet: cannot load pretrained weights.*name resolution"):
        build_model(cfg, 2)
