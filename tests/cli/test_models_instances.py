"""``segcli models`` with the instance models (models/build.py ``model_facts``): their task,
parameters and GFLOPs, measured by one CPU inference of a random-init Mask R-CNN, against
torchvision's documented parameter count and the ResNet-50 backbone's own FLOPs."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import segcli.cli.models as cli
from segcli.cli.app import app
from segcli.config import compose_config, group_options, to_plain
from segcli.models.build import model_facts

INSTANCE = ["maskrcnn_resnet18_fpn", "maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2"]
# torchvision's model docs (MaskRCNN_ResNet50_FPN_Weights.COCO_V1.meta["num_params"]): 44,401,393
# parameters with COCO's 91 classes and frozen BatchNorm; without weights torchvision trains the
# BatchNorm layers, whose affine parameters count too (about 0.1 M)
R50_DOCUMENTED = 44_401_393 / 1e6


def test_segcli_models_lists_the_instance_models_with_task_params_and_gflops(monkeypatch):
    assert set(group_options()["model"]) >= set(INSTANCE)  # the command lists every choice
    # one semantic model beside them (the others are test_architectures.py's)
    monkeypatch.setattr(cli, "group_options", lambda *a: {"model": ["unet", *INSTANCE]})
    r = CliRunner().invoke(app, ["models", "--json", "--classes", "91"])
    assert r.exit_code == 0, r.output
    rows = {row["model"]: row for row in json.loads(r.output)}
    assert rows["unet"]["task"] == "semantic"
    for name in INSTANCE:
        assert (rows[name]["task"], rows[name]["arch"]) == ("instance", name)
        assert rows[name]["params_m"] > 0 and rows[name]["gflops"] > 0, rows[name]
    assert [rows[n]["source"] for n in INSTANCE] == ["segcli", "torchvision", "torchvision"]
    light, r50 = rows["maskrcnn_resnet18_fpn"], rows["maskrcnn_resnet50_fpn"]
    assert light["params_m"] < r50["params_m"] and light["gflops"] < r50["gflops"]
    assert r50["params_m"] == pytest.approx(R50_DOCUMENTED, rel=0.10)
    # the detector's FLOPs include its ResNet-50 body's at 512x512 (FPN, RPN and heads on top)
    from torch.utils.flop_counter import FlopCounterMode
    from torchvision.models import resnet50

    with torch.device("meta"):
        body = torch.nn.Sequential(*list(resnet50().children())[:-2])
    with FlopCounterMode(display=False) as counter:
        body(torch.empty(1, 3, 512, 512, device="meta"))
    assert r50["gflops"] > counter.get_total_flops() / 1e9 > 40  # 4.1 GMACs at 224x224, x5.2


def test_instance_facts_are_seeded_and_leave_the_global_rng_alone():
    cfg = to_plain(compose_config(["model=maskrcnn_resnet18_fpn"]))["model"]
    state = torch.random.get_rng_state()
    first = model_facts(cfg, 21, (256, 256))
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(1234)  # another global state: the same weights, image and detections
    assert model_facts(cfg, 21, (256, 256)) == first
    # per class: the box predictor's score and 4 deltas on its 512 features (5 * 512 + 5) and the
    # mask predictor's 1x1 conv on 128 channels (128 + 1); nothing else depends on the classes
    fewer = model_facts(cfg, 5, (256, 256))["params_m"]
    assert first["params_m"] - fewer == pytest.approx((21 - 5) * (5 * 512 + 5 + 128 + 1) / 1e6)


def test_the_table_has_a_task_column_and_says_how_instance_flops_are_measured(monkeypatch):
    monkeypatch.setattr(cli, "group_options", lambda *a: {"model": ["maskrcnn_resnet18_fpn"]})
    r = CliRunner().invoke(app, ["models", "--size", "256x256"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    row = next(line for line in r.output.splitlines() if "maskrcnn_resnet18_fpn" in line)
    assert row.split("│")[1:4] == [
        " maskrcnn_resnet18_fpn ",
        " instance ",
        " maskrcnn_resnet18_fpn ",
    ], row
    assert "instance GFLOPs: one inference of a random-init model" in " ".join(r.output.split())
