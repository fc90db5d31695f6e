"""The architectures written here or taken from torchvision (FCN-8s, FastFCN, FC-DenseNet,
torchvision's FCN and LR-ASPP) and the classical baselines (pixel_forest, otsu): shapes, a train
step, their papers' facts (parameter counts, bilinear upsampling, Otsu's threshold), and each
through training, eval and predict in one process (``Trainer`` and the Typer app)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import TINY_RUN, segcli
from isolation import run_isolated
from typer.testing import CliRunner

from segcli.config import compose_config, to_plain
from segcli.errors import SegcliError
from segcli.models.amx_guard import Float32UnderCpuBf16Conv2d
from segcli.models.build import build_model
from segcli.preprocessing import IMAGENET_MEAN, IMAGENET_STD

NEW_CNNS = [
    "fcn_resnet50",
    "lraspp_mobilenet_v3",
    "fcn8s",
    "fastfcn",
    "fcdensenet56",
    "fcdensenet103",
]
# small stand-ins where the choice's default is slow to build or run on 2 cores (same code path)
LIGHTER = {
    "fastfcn": [
        "model.encoder_name=resnet18",
        "model.params.width=64",
        "model.params.aspp_channels=32",
    ]
}


def model_cfg(option: str, *overrides: str) -> dict:
    return to_plain(compose_config([f"model={option}", *LIGHTER.get(option, []), *overrides]))[
        "model"
    ]


def normalise(rgb: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float normalised as the loaders do."""
    x = torch.from_numpy(rgb).float().permute(0, 3, 1, 2) / 255
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(
        1, 3, 1, 1
    )


@pytest.mark.parametrize("option", NEW_CNNS)
def test_new_cnns_keep_any_input_size_and_take_a_train_step(option):
    torch.manual_seed(0)
    model = build_model(model_cfg(option), num_classes=3)
    model.eval()
    with torch.inference_mode():
        for h, w in ((64, 64), (70, 90), (96, 33)):  # multiples of 32 and not
            out = model(torch.randn(1, 3, h, w))
            assert out.shape == (1, 3, h, w) and out.dtype == torch.float32
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    x, y = torch.randn(2, 3, 64, 64), torch.randint(0, 3, (2, 64, 64))
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert torch.isfinite(loss)
    no_grad = [k for k, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters outside the graph: {no_grad[:3]}"
    opt.step()
    assert any(not torch.equal(before[k], p) for k, p in model.named_parameters())


def test_fcdensenet_parameter_counts_match_the_papers_table():
    """Table 2 of Jégou et al. 2017 counts like Lasagne's count_params: batch-norm statistics too.
    FC-DenseNet56's 1.5M is 7% above the 1.40M that its stated layout gives (and that the reference
    PyTorch port, bfortuner/pytorch_tiramisu, builds too): checked at 7% there, 1% for the
    others."""
    paper = {
        "fcdensenet56": (1.5e6, 0.07),
        "fcdensenet67": (3.5e6, 0.01),
        "fcdensenet103": (9.4e6, 0.01),
    }
    for option, (count, tolerance) in paper.items():
        model = build_model(model_cfg(option), num_classes=11)
        params = sum(p.numel() for p in model.parameters())
        stats = sum(
            b.numel()
            for k, b in model.named_buffers()
            if k.endswith(("running_mean", "running_var"))
        )
        assert abs(params + stats - count) / count <= tolerance, (option, params + stats)
    dense = build_model(model_cfg("fcdensenet103"), num_classes=11)
    assert [len(b.layers) for b in dense.down] == [4, 5, 7, 10, 12] and len(
        dense.bottleneck.layers
    ) == 15
    assert [len(b.layers) for b in dense.up] == [12, 10, 7, 5, 4] and dense.first.out_channels == 48
    assert dense.down[0].layers[0][2].out_channels == 16  # growth rate


def test_fcn8s_upsampling_starts_as_bilinear_interpolation():
    from segcli.models.architectures.fcn import bilinear_kernel

    # 1-D filters by hand: 1 - |i - c| / f, f = ceil(k / 2), c = f - 0.5 for even k
    four = np.array([0.25, 0.75, 0.75, 0.25])
    sixteen = np.array([1, 3, 5, 7, 9, 11, 13, 15, 15, 13, 11, 9, 7, 5, 3, 1]) / 16
    k4, k16 = bilinear_kernel(2, 4), bilinear_kernel(2, 16)
    assert np.allclose(k4[0, 0].numpy(), np.outer(four, four)) and np.allclose(
        k4[1, 1].numpy(), np.outer(four, four)
    )
    assert (
        torch.count_nonzero(k4[0, 1]) == 0 and torch.count_nonzero(k4[1, 0]) == 0
    )  # channels stay apart
    assert np.allclose(k16[1, 1].numpy(), np.outer(sixteen, sixteen))
    model = build_model(model_cfg("fcn8s"), num_classes=2)
    assert torch.equal(model.upscore2.weight, bilinear_kernel(2, 4))
    assert torch.equal(model.upscore_pool4.weight, bilinear_kernel(2, 4))
    assert torch.equal(model.upscore.weight, bilinear_kernel(2, 16))
    # what that does: a ramp upsampled 2x stays a ramp of half the slope away from the borders
    ramp = torch.arange(8.0).view(1, 1, 1, 8).expand(1, 2, 8, 8).contiguous()
    up = model.upscore2(ramp)[0, 0, 4]
    assert torch.allclose(up[4:14].diff(), torch.full((9,), 0.5))
    assert model.score_fr.weight.abs().sum() == 0  # class scoring starts at zero (the paper's)


def test_fcn_stride_variants_and_a_vgg16_file_convolutionalised():
    fcn32 = build_model(model_cfg("fcn8s", "model.params.stride=32"), num_classes=2)
    assert not hasattr(fcn32, "score_pool4") and fcn32.upscore.kernel_size == (64, 64)
    fcn16 = build_model(model_cfg("fcn8s", "model.params.stride=16"), num_classes=2)
    assert hasattr(fcn16, "score_pool4") and not hasattr(fcn16, "score_pool3")
    with pytest.raises(SegcliError, match="model.params for fcn8s: stride=4: expected 8, 16 or 32"):
        build_model(model_cfg("fcn8s", "model.params.stride=4"), num_classes=2)
    fc6 = torch.randn(4096, 512 * 7 * 7)
    conv1 = torch.randn(64, 3, 3, 3)
    used, unused = fcn16.load_vgg16(
        {
            "features.0.weight": conv1,
            "classifier.0.weight": fc6,
            "classifier.6.weight": torch.zeros(1000, 4096),
        }
    )
    assert (used, unused) == (2, 1)
    assert torch.equal(fcn16.features[0].weight, conv1) and torch.equal(
        fcn16.fc[0].weight, fc6.view(4096, 512, 7, 7)
    )


def test_fastfcn_jpu_joins_three_strides_with_four_dilations():
    from segcli.models.architectures.fastfcn import JPU

    jpu = JPU([8, 16, 32], width=4)
    out = jpu(torch.randn(2, 8, 12, 16), torch.randn(2, 16, 6, 8), torch.randn(2, 32, 3, 4))
    assert out.shape == (2, 16, 12, 16)
    assert [branch[0][0].dilation for branch in jpu.dilated] == [(1, 1), (2, 2), (4, 4), (8, 8)]
    assert all(
        branch[0][0].groups == 12 for branch in jpu.dilated
    )  # depthwise over the 3 x 4 joined maps


def test_torchvision_backbone_weights_from_a_local_file(tmp_path: Path):
    cfg = model_cfg("lraspp_mobilenet_v3")
    donor = build_model(cfg, 2)
    # torchvision's ImageNet file names the layers features.N...; the classifier is not the
    # backbone's
    state = {f"features.{k}": v for k, v in donor.model.backbone.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(1280, 960)
    torch.save(state, tmp_path / "mobilenet_v3_large.pth")
    model = build_model({**cfg, "encoder_weights": str(tmp_path / "mobilenet_v3_large.pth")}, 2)
    for k, v in donor.model.backbone.state_dict().items():
        assert torch.equal(model.model.backbone.state_dict()[k], v)
    with pytest.raises(
        SegcliError,
        match="model.encoder_weights=imagenet: lraspp_mobilenet_v3 takes null or the path",
    ):
        build_model({**cfg, "encoder_weights": "imagenet"}, 2)


# -- classical baselines -------------------------------------------------------------------------

COLOURS = np.array([[200, 30, 30], [30, 160, 40], [40, 60, 210]], dtype=np.uint8)


def colour_coded(seed: int, n: int = 4, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Images of random rectangles whose class is their colour (plus noise); masks of the
    classes."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), dtype=np.int64)
    for m in masks:
        for _ in range(6):
            y, x = rng.integers(0, size - 8, 2)
            h, w = rng.integers(6, 20, 2)
            m[y : y + h, x : x + w] = rng.integers(0, 3)
    noise = rng.normal(0, 12, (n, size, size, 3))
    images = np.clip(COLOURS[masks].astype(float) + noise, 0, 255).astype(np.uint8)
    return images, masks


def miou(pred: np.ndarray, truth: np.ndarray, classes: int) -> float:
    ious = [
        ((pred == c) & (truth == c)).sum() / max(((pred == c) | (truth == c)).sum(), 1)
        for c in range(classes)
    ]
    return float(np.mean(ious))


def test_pixel_forest_learns_colour_coded_regions_and_survives_a_checkpoint(tmp_path: Path):
    from segcli.models.classical import FitStopped, PixelForest

    images, masks = colour_coded(seed=0)
    masks[0, :4] = 255  # ignored pixels are never sampled
    batches = [
        {"image": normalise(images[i : i + 2]), "mask": torch.from_numpy(masks[i : i + 2])}
        for i in (0, 2)
    ]
    forest = PixelForest(3, n_estimators=20, max_depth=10, pixels_per_image=100, sigma_max=4)
    assert forest.fit(batches, seed=0, ignore_index=255) == 4
    test_images, test_masks = colour_coded(seed=1)
    stopped = PixelForest(3, n_estimators=2)
    with pytest.raises(FitStopped):  # Ctrl-C / SIGTERM between batches: nothing is fitted
        stopped.fit(batches, seed=0, ignore_index=255, should_stop=lambda: True)
    assert stopped.forest_bytes.numel() == 0
    pred = forest(normalise(test_images)).argmax(1).numpy()
    assert miou(pred, test_masks, 3) >= 0.95  # stated in the README: colour alone separates these
    torch.save({"model": forest.state_dict()}, tmp_path / "forest.pt")
    again = PixelForest(3, n_estimators=20, max_depth=10, sigma_max=4)
    again.load_state_dict(torch.load(tmp_path / "forest.pt", weights_only=True)["model"])
    assert torch.equal(again(normalise(test_images)), forest(normalise(test_images)))


def test_a_forest_payload_with_other_types_is_refused():
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    from segcli.models.classical import load_forest

    with pytest.raises(SegcliError, match="holds types segcli does not load: builtins.eval"):
        load_forest(sio.dumps(FunctionTransformer(func=eval)))
    with pytest.raises(SegcliError, match="holds a FunctionTransformer, not a random forest"):
        load_forest(sio.dumps(FunctionTransformer(func=np.exp)))


def test_otsu_threshold_is_skimages_and_learns_which_side_is_foreground():
    from skimage.filters import threshold_otsu

    from segcli.models.classical import OtsuThreshold

    rng = np.random.default_rng(3)
    gray = (
        np.where(
            rng.random((4, 40, 40)) < 0.3,
            rng.normal(60, 10, (4, 40, 40)),
            rng.normal(170, 20, (4, 40, 40)),
        )
        .clip(0, 255)
        .astype(np.uint8)
    )
    masks = (gray < 110).astype(np.int64)  # the dark side is the foreground
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    otsu = OtsuThreshold(2)
    otsu.fit([{"image": normalise(rgb), "mask": torch.from_numpy(masks)}], seed=0, ignore_index=255)
    assert float(otsu.threshold) == pytest.approx(threshold_otsu(gray), abs=1e-6)
    assert float(otsu.bright_is_foreground) == 0.0
    pred = otsu(normalise(rgb)).argmax(1).numpy()
    assert np.array_equal(pred, (gray <= otsu.threshold.item()).astype(int))
    with pytest.raises(
        SegcliError, match="model=otsu: a threshold separates 2 classes; this dataset has 3"
    ):
        OtsuThreshold(3)


def test_a_classical_baseline_gets_a_run_of_its_own(tmp_path: Path):
    from segcli.models.build import is_classical
    from segcli.models.classical import ClassicalModel
    from segcli.training import trainer
    from segcli.training.classical_fit import ClassicalFit

    assert is_classical(model_cfg("pixel_forest")) and is_classical(model_cfg("otsu"))
    assert not is_classical(model_cfg("unet")) and not is_classical({"arch": "no_such_model"})
    assert isinstance(build_model(model_cfg("pixel_forest"), 3), ClassicalModel)
    assert not isinstance(
        build_model(model_cfg("unet", "model.encoder_name=resnet18"), 3), ClassicalModel
    )
    cfg = to_plain(
        compose_config(
            ["model=pixel_forest", *TINY_RUN, "dataset.num_train=2", "dataset.num_val=1"]
        )
    )
    run = trainer.build_run(cfg, tmp_path / "run")  # built, not fitted
    assert isinstance(run, ClassicalFit) and not isinstance(run, trainer.Trainer)
    with pytest.raises(ValueError, match="model.arch=pixel_forest is a classical baseline"):
        trainer.Trainer(cfg, tmp_path / "other")


def test_superpixel_vote_takes_each_segments_majority():
    from segcli.inference.refine import SuperpixelSettings, superpixel_vote

    image = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    image[:, :, 16:] = 255  # two flat halves: Felzenszwalb gives two segments
    probs = torch.zeros(1, 2, 32, 32)
    probs[:, 0] = 1.0
    probs[0, :, 4:10, 20:26] = torch.tensor([0.0, 1.0]).view(
        2, 1, 1
    )  # a 6x6 island of class 1 on the right
    probs[0, :, :, :16] = torch.tensor([0.2, 0.8]).view(2, 1, 1)  # the left half predicted class 1
    out = superpixel_vote(
        probs, image, SuperpixelSettings(method="felzenszwalb", scale=100, sigma=0, min_size=20)
    )
    assert out.shape == (1, 2, 32, 32)
    assert (out[0].argmax(0)[:, :16] == 1).all() and (out[0].argmax(0)[:, 16:] == 0).all()
    assert out[0, 1, 0, 31].item() == pytest.approx(
        36 / (32 * 16)
    )  # vote share of class 1 on the right


# -- the harness: train, eval, predict ------------------------------------------------------------

HARNESS = [
    "fcn_resnet50",
    "lraspp_mobilenet_v3",
    "fcn8s",
    "fastfcn",
    "fcdensenet56",
    "pixel_forest",
    "otsu",
]


@pytest.mark.parametrize("option", HARNESS)
def test_every_new_model_trains_evals_and_predicts_through_the_harness(
    option, tmp_path: Path, request
):
    # each architecture in a child process of its own: a native crash (as torch's bf16 AMX weight
    # gradient once gave FCN-8s) fails this one test, not the whole suite
    root = request.getfixturevalue("flat_binary_root") if option == "otsu" else None
    run_isolated(train_eval_predict, option, tmp_path, root, label=f"harness[{option}]")


def train_eval_predict(option: str, tmp_path: Path, binary_root: Path | None) -> None:
    """Train ``option`` one epoch, eval its best.pt (= validation) and predict an image, asserting
    each."""
    from segcli.cli.app import app
    from segcli.training import trainer

    if option == "otsu":  # a binary folder: 0/255 masks, the red channel brighter on the foreground
        data = [
            "dataset=folder",
            f"dataset.root={binary_root}",
            "dataset.num_classes=2",
            "dataset.mask_values={0:0,255:1}",
            "dataset.ignore_index=254",
            "dataset.crop_size=[32,32]",
        ]
    else:
        data = [
            "dataset.num_train=8",
            "dataset.num_val=4",
            "dataset.image_size=[64,64]",
            "dataset.crop_size=[64,64]",
        ]
    overrides = [
        f"model={option}",
        *LIGHTER.get(option, []),
        *TINY_RUN,
        *data,
        "trainer.epochs=1",
        "trainer.samples=0",
    ]
    cfg, run = to_plain(compose_config(overrides)), tmp_path / "run"
    if option in ("pixel_forest", "otsu"):  # their own trainer path: through the real command
        r = segcli("train", *overrides, f"hydra.run.dir={run}", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        summary = json.loads((run / "summary.json").read_text())
    elif (
        option == "fcn8s"
    ):  # score_fr (4096 -> 3) is in the AMX crash region: bf16 with the guard, on any CPU
        os.environ["SEGCLI_AMX_GUARD"] = "on"  # this child process only
        cfg["trainer"]["amp"] = "bf16"
        fcn = trainer.Trainer(cfg, run)
        summary = fcn.fit()
        assert (
            type(fcn.net.score_fr) is Float32UnderCpuBf16Conv2d
            and summary["precision"]["amp"] == "bfloat16"
        )
    # the CNNs share the trainer's one path: in this (child) process, no second Python start-up
    else:
        summary = trainer.Trainer(cfg, run).fit()
    assert summary["status"] == "done" and summary["epochs"] == 1
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    runner = CliRunner()
    if option in (
        "pixel_forest",
        "otsu",
    ):  # fitted, not trained: no loss, no learning rate; runs and plot as any run
        assert record["train_loss"] is None and record["lr"] is None and record["val_loss"] is None
        r = runner.invoke(app, ["runs", str(tmp_path), "--format", "json"])
        assert r.exit_code == 0 and json.loads(r.output)[0]["miou"] == pytest.approx(
            summary["val"]["miou"]
        )
        r = runner.invoke(app, ["plot", str(run), "-o", str(tmp_path / "plots")])
        assert r.exit_code == 0, r.output
        assert all(png.stat().st_size > 1000 for png in (tmp_path / "plots").glob("*.png"))
    r = runner.invoke(
        app,
        [
            "eval",
            str(run / "checkpoints" / "best.pt"),
            "--split",
            "val",
            "--json",
            str(tmp_path / "val.json"),
        ],
    )
    assert r.exit_code == 0, r.output
    evaluated = json.loads((tmp_path / "val.json").read_text())
    assert evaluated["miou"] == pytest.approx(summary["val"]["miou"], abs=1e-6)  # eval = validation
    # which proves little if the output ignores the input: the trained model's logits differ between
    # images
    from segcli.models.build import model_from_checkpoint
    from segcli.runs.checkpoints import load_checkpoint

    model = model_from_checkpoint(
        load_checkpoint(run / "checkpoints" / "best.pt"), torch.device("cpu")
    )
    pictures = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    with torch.inference_mode():
        logits = model(normalise(pictures)).float()
    assert (
        logits.shape == (2, cfg["dataset"]["num_classes"], 64, 64) and torch.isfinite(logits).all()
    )
    assert (logits[0] - logits[1]).abs().max() > 1e-3 * max(1.0, float(logits.abs().max())), (
        "the same logits for two different images"
    )
    image = np.full((50, 70, 3), 40, dtype=np.uint8)
    image[10:40, 20:60] = (230, 25, 75)
    cv2.imwrite(str(tmp_path / "street.png"), image[..., ::-1])
    r = runner.invoke(
        app,
        [
            "predict",
            str(tmp_path / "street.png"),
            "-c",
            str(run / "checkpoints" / "best.pt"),
            "-o",
            str(tmp_path / "pred"),
        ],
    )
    assert r.exit_code == 0, r.output
    mask = cv2.imread(str(tmp_path / "pred" / "street.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (50, 70) and mask.max() < cfg["dataset"]["num_classes"]


# -- paper recipes
# ------------------------------------------------------------------------------------


def test_exponential_schedule_decays_per_epoch_and_rmsprop_takes_lasagnes_settings():
    from segcli.training.optim import LrSchedule, build_optimizer

    s = LrSchedule("exponential", total_steps=100, gamma=0.9, steps_per_epoch=10)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    assert s.apply(opt, step=25, elapsed=0.0) == pytest.approx(
        0.5 * 0.76843, rel=1e-4
    )  # 0.9 ** 2.5 = 0.76843
    assert s.apply(opt, step=25, elapsed=999.0, max_seconds=10.0) == pytest.approx(
        0.5 * 0.76843, rel=1e-4
    )  # not time
    cfg = to_plain(compose_config(["optimizer=rmsprop"]))["optimizer"]
    rms = build_optimizer(cfg, [torch.nn.Parameter(torch.zeros(1))])
    assert isinstance(rms, torch.optim.RMSprop)
    assert (
        rms.defaults["alpha"] == 0.9
        and rms.defaults["eps"] == 1e-6
        and rms.defaults["weight_decay"] == 1e-4
    )


def test_the_fcdensenet_recipe_trains_then_fine_tunes_from_its_best_weights(
    segnet_root: Path, tmp_path: Path
):
    from helpers import segnet_overrides

    from segcli.runs.checkpoints import load_checkpoint
    from segcli.training import trainer

    small = [
        *segnet_overrides(segnet_root),
        "model=fcdensenet56",
        "trainer.num_workers=0",
        "trainer.samples=0",
        "dataset.crop_size=[32,32]",
    ]
    cfg = to_plain(compose_config(["experiment=camvid_fcdensenet103", *small, "trainer.epochs=1"]))
    assert cfg["optimizer"]["name"] == "rmsprop" and cfg["trainer"]["batch_size"] == 3
    trainer.Trainer(cfg, tmp_path / "phase1").fit()
    record = json.loads((tmp_path / "phase1" / "metrics.jsonl").read_text())
    steps = 8 // 3  # 8 training images, batches of 3, the incomplete one dropped
    assert record["lr"] == pytest.approx(
        1e-3 * 0.995 ** ((steps - 1) / steps)
    )  # set before the last step
    assert "square_avg" in next(
        iter(
            load_checkpoint(tmp_path / "phase1/checkpoints/last.pt")["optimizer"]["state"].values()
        )
    )
    best = tmp_path / "phase1" / "checkpoints" / "best.pt"
    ft = to_plain(
        compose_config(
            ["experiment=camvid_fcdensenet103_finetune", *small, f"trainer.init_from={best}"]
        )
    )
    assert (
        ft["optimizer"]["lr"] == 1e-4
        and ft["trainer"]["batch_size"] == 1
        and ft["dataset"]["crop_size"] == [32, 32]
    )
    phase2 = trainer.Trainer(ft, tmp_path / "phase2")
    for k, v in load_checkpoint(best)["model"].items():
        assert torch.equal(phase2.net.state_dict()[k].cpu(), v), k
    with pytest.raises(
        SegcliError, match="trainer.init_from=.*: its weights do not fit the configured model"
    ):
        trainer.Trainer({**ft, "model": model_cfg("fcdensenet67")}, tmp_path / "phase2b")


def test_segcli_models_lists_every_choice_with_its_source_size_and_cost():
    from segcli.cli.app import app

    r = CliRunner().invoke(app, ["models", "--json", "--classes", "11", "--size", "256x256"])
    assert r.exit_code == 0, r.output
    rows = {row["model"]: row for row in json.loads(r.output)}
    assert set(rows) >= {"unet", "segformer", *NEW_CNNS, "fcn_resnet101", "pixel_forest", "otsu"}
    assert (
        rows["unet"]["source"] == "segmentation-models-pytorch"
        and rows["fcn_resnet50"]["source"] == "torchvision"
    )
    assert rows["fcn8s"]["source"] == "segcli" and rows["otsu"]["source"] == "segcli (classical)"
    dense = build_model(model_cfg("fcdensenet103"), num_classes=11)
    assert rows["fcdensenet103"]["params_m"] == pytest.approx(
        sum(p.numel() for p in dense.parameters()) / 1e6
    )
    assert rows["pixel_forest"]["params_m"] is None and rows["pixel_forest"]["gflops"] is None
    # FLOPs scale with the pixels: 256x256 is a quarter of the README's 512x512 (fcdensenet103 209.7
    # GFLOPs)
    assert rows["fcdensenet103"]["gflops"] == pytest.approx(209.7 / 4, rel=0.01)
    r = CliRunner().invoke(app, ["models", "--size", "big"])
    assert r.exit_code == 2 and "--size big: expected HxW in pixels" in r.output
