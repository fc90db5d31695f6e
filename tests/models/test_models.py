from pathlib import Path

import pytest
import torch

from segcli.config import compose_config, group_options, to_plain
from segcli.errors import SegcliError
from segcli.models.build import build_model
from segcli.models.builders import ARCHITECTURES
from segcli.tasks import options_for


@pytest.mark.parametrize(  # task=instance's models: test_instance_models.py
    "option", [o for o in options_for("model", "semantic") if o not in ("pixel_forest", "otsu")]
)
def test_every_model_option_builds_and_keeps_the_input_size(
    option,
):  # the fitted baselines: test_architectures.py
    cfg = to_plain(compose_config([f"model={option}"]))["model"]
    model = build_model(cfg, num_classes=5).eval()
    with torch.inference_mode():
        out = model(torch.randn(2, 3, 128, 160))
    assert out.shape == (2, 5, 128, 160) and out.dtype == torch.float32


def test_every_smp_architecture_has_a_config_file():
    names = {
        to_plain(compose_config([f"model={o}"]))["model"]["arch"].lower()
        for o in group_options()["model"]
    }
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
    with pytest.raises(
        SegcliError, match="model.arch=Nope: unknown architecture; expected one of Unet"
    ):
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
    with pytest.raises(
        SegcliError,
        match="model.encoder_weights=imagenet: cannot load pretrained weights.*name resolution",
    ):
        build_model(cfg, 2)


class OneConvolution(torch.nn.Module):
    """One 1x3 convolution without padding (an H x W image gives H x (W - 2) outputs) and a frozen
    vector."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, num_classes, kernel_size=(1, 3))
        self.frozen = torch.nn.Parameter(torch.zeros(7), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_segcli_models_counts_a_one_convolution_model_by_hand(monkeypatch):
    """``segcli models`` of a model whose size and cost follow from its shape: 5 classes, 3 inputs,
    a 1x3 kernel: 5 * 3 * 3 weights + 5 biases = 50 trainable parameters (the frozen 7 are not
    counted); on a 64x96 image 64 x 94 outputs of 5 * 3 * 3 multiply-adds each, a multiply-add
    counting 2 (torch's flop counter leaves the bias additions out)."""
    import json

    from omegaconf import OmegaConf
    from typer.testing import CliRunner

    import segcli.cli.models as cli
    from segcli.cli.app import app
    from segcli.models.build import model_facts
    from segcli.models.builders import MODELS

    monkeypatch.setitem(
        MODELS._builders,
        "one_conv_probe",
        lambda cfg, num_classes, in_channels=3: OneConvolution(num_classes),
    )
    monkeypatch.setitem(MODELS._display, "one_conv_probe", "one_conv_probe")
    cfg = {"arch": "one_conv_probe", "encoder_name": None, "encoder_weights": None, "params": {}}
    params, flops = 5 * 3 * 1 * 3 + 5, 2 * (5 * 3 * 1 * 3) * (64 * 94)
    facts = model_facts(cfg, num_classes=5, size=(64, 96))
    assert facts == {
        "source": "segcli",
        "params_m": pytest.approx(params / 1e6, rel=1e-12),
        "gflops": pytest.approx(flops / 1e9, rel=1e-12),
    }
    assert model_facts(cfg, num_classes=5, size=(96, 64))["gflops"] == pytest.approx(
        2 * 45 * 96 * 62 / 1e9, rel=1e-12
    )

    # through the command: its one model choice is this one
    real_compose = cli.compose_config
    monkeypatch.setattr(cli, "group_options", lambda *a: {"model": ["probe"]})
    monkeypatch.setattr(
        cli,
        "compose_config",
        lambda overrides, *a, **k: (
            OmegaConf.create({"model": cfg})
            if list(overrides) == ["model=probe"]
            else real_compose(overrides, *a, **k)
        ),
    )
    r = CliRunner().invoke(app, ["models", "--json", "--classes", "5", "--size", "64x96"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == [
        {
            "model": "probe",
            "task": "semantic",
            "arch": "one_conv_probe",
            "encoder": None,
            "source": "segcli",
            "params_m": pytest.approx(params / 1e6, rel=1e-12),
            "gflops": pytest.approx(flops / 1e9, rel=1e-12),
        }
    ]


@pytest.mark.parametrize("channels", [1, 4, 13])
def test_a_local_rgb_weights_file_fits_other_input_channels_as_smp_fits_its_own(
    channels, tmp_path: Path
):
    import copy

    from segmentation_models_pytorch.encoders._utils import patch_first_conv

    rgb = build_model({"arch": "Unet", "encoder_name": "resnet18", "encoder_weights": None}, 2)
    torch.save(rgb.encoder.state_dict(), tmp_path / "rgb.pth")
    cfg = {"arch": "Unet", "encoder_name": "resnet18", "encoder_weights": str(tmp_path / "rgb.pth")}
    model = build_model(cfg, 2, in_channels=channels)
    reference = copy.deepcopy(rgb.encoder)  # SMP's own rule on the same RGB weights
    patch_first_conv(reference, channels, pretrained=True)
    torch.testing.assert_close(model.encoder.conv1.weight, reference.conv1.weight)
    torch.testing.assert_close(
        model.encoder.layer1[0].conv1.weight, rgb.encoder.layer1[0].conv1.weight
    )
