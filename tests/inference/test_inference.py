"""Inference modes (inference/modes.py, sliding.py, refine.py): sliding windows against whole
images and hand-computed merge weights, flip TTA, the dense CRF on a synthetic edge, the presets
and their errors, and eval / predict through the CLI."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import segcli

from segcli.errors import SegcliError
from segcli.inference.modes import Inference, InferenceSettings, load_settings
from segcli.inference.refine import dense_crf
from segcli.inference.sliding import slide


def conv_net(symmetric: bool = False, classes: int = 4) -> torch.nn.Module:
    """A small random conv net (eval mode); ``symmetric``: every kernel mirror-symmetric left-right,
    so the net commutes with a horizontal flip."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 5, padding=2),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, classes, 5, padding=2),
    ).eval()
    if symmetric:
        with torch.no_grad():
            for layer in (net[0], net[2]):
                layer.weight.copy_((layer.weight + layer.weight.flip(-1)) / 2)
    return net


def test_slide_with_a_tile_covering_the_image_equals_whole_exactly():
    net, x = conv_net(), torch.randn(2, 3, 96, 160)
    with torch.inference_mode():
        whole = Inference(InferenceSettings())(net, x)
        for crop in ((96, 160), (512, 512), (128, 160)):
            out = Inference(InferenceSettings(mode="slide", crop=crop))(net, x)
            assert torch.equal(out, whole.softmax(1)), crop
        # real tiling differs at tile borders (zero padding inside each tile), but not everywhere
        tiled = Inference(InferenceSettings(mode="slide", crop=(64, 64), merge="mean"))(net, x)
    assert tiled.shape == whole.shape
    assert 0 < (tiled - whole.softmax(1)).abs().max() < 1


def column_model(t: torch.Tensor) -> torch.Tensor:
    """One class whose score, over a whole tile, is the tile's top-left input value."""
    return t[:, :1, :1, :1].expand(t.shape[0], 1, t.shape[2], t.shape[3]).clone()


def test_slide_merge_weights_against_a_hand_computed_one_dimensional_case():
    # A 32x96 image whose value is its column index; 32x64 tiles every 32 columns start at columns
    # 0 and 32, so each tile reports 0 or 32 and the merge decides what the overlap (32..63) gets.
    x = torch.arange(96.0).expand(1, 3, 32, 96).contiguous()
    mean = slide(
        column_model,
        x,
        InferenceSettings(mode="slide", crop=(32, 64), stride=(32, 32), merge="mean"),
    )
    expected = torch.tensor([0.0] * 32 + [16.0] * 32 + [32.0] * 32)
    assert torch.allclose(mean[0, 0], expected.expand(32, 96))

    gauss = slide(
        column_model,
        x,
        InferenceSettings(mode="slide", crop=(32, 64), stride=(32, 32), sigma=0.125),
    )[0, 0, 16]

    # nnU-Net's weighting: w(d) = exp(-d^2 / (2 sigma^2)), d = distance from the tile's centre
    # (31.5 within a 64-wide tile), sigma = 64 / 8 = 8 pixels. Row 16 is the tiles' middle row: its
    # vertical factor is the same for both tiles and cancels (near the top and bottom edges MONAI
    # clamps the 2-D weights at 1e-3, which makes both tiles equal there).
    def w(d: float) -> float:
        return math.exp(-(d**2) / (2 * 8.0**2))

    for col in (36, 40, 47, 48, 56):
        a, b = w(col - 31.5), w(col - 63.5)
        assert gauss[col].item() == pytest.approx(32 * b / (a + b), rel=1e-4, abs=2e-3), col
    assert gauss[47].item() + gauss[48].item() == pytest.approx(
        32, abs=1e-3
    )  # symmetric about 47.5
    assert gauss[:32].abs().max() == 0 and torch.all(gauss[64:] == 32)


def test_stride_default_is_two_thirds_of_the_crop_and_every_pixel_is_covered():
    s = InferenceSettings(mode="slide", crop=(96, 480))
    assert s.stride_or_default() == (64, 320)
    ones = slide(
        lambda t: torch.ones(t.shape[0], 1, *t.shape[-2:]), torch.zeros(1, 3, 200, 1000), s
    )
    assert torch.allclose(
        ones, torch.ones_like(ones)
    )  # no pixel without a tile, weights normalised


def test_overlap_fraction_sets_the_stride_and_tiles_where_that_stride_says():
    # crop 96x480, a quarter shared: stride 72x360 (96 * 0.75, 480 * 0.75)
    s = load_settings("slide", ["inference.crop=[96,480]", "inference.overlap=0.25"])
    assert s.stride_or_default() == (72, 360) and s.as_dict()["stride"] == [72, 360]
    assert s.as_dict()["overlap"] == 0.25
    # 32x96 image of column indices, 32x64 tiles with overlap 0.75: stride 16, tiles start at 0, 16,
    # 32; with the mean merge, column c gets the mean of the starts of the tiles covering it.
    x = torch.arange(96.0).expand(1, 3, 32, 96).contiguous()
    out = slide(
        column_model, x, InferenceSettings(mode="slide", crop=(32, 64), overlap=0.75, merge="mean")
    )[0, 0, 0]
    expected = [0.0] * 16 + [8.0] * 16 + [16.0] * 32 + [24.0] * 16 + [32.0] * 16
    assert out.tolist() == pytest.approx(expected)


def test_flip_tta_of_a_flip_symmetric_model_equals_its_plain_probabilities():
    net, x = conv_net(symmetric=True), torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        plain = Inference(InferenceSettings())(net, x).softmax(1)
        flipped = Inference(InferenceSettings(flip=True))(net, x)
        asym = conv_net()
        differs = (
            (Inference(InferenceSettings(flip=True))(asym, x) - asym(x).softmax(1)).abs().max()
        )
    assert torch.allclose(flipped, plain, atol=1e-6)
    assert (
        differs > 1e-3
    )  # the check above is not vacuous: an asymmetric net changes under flip TTA


def test_multiscale_probabilities_are_a_distribution_at_the_input_size():
    net, x = conv_net(), torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        probs = Inference(load_settings("multiscale"))(net, x)
    assert probs.shape == (1, 4, 64, 96)
    assert torch.allclose(probs.sum(1), torch.ones(1, 64, 96), atol=1e-5)


def _softmax_at(net, x: torch.Tensor, factor: float) -> torch.Tensor:
    """The model's softmax at ``factor`` times the input's resolution, by hand: resize (bilinear,
    antialiased when shrinking), zero-pad bottom/right to a multiple of 32, run, crop, resize
    back."""
    h, w = x.shape[-2:]
    sh, sw = round(h * factor), round(w * factor)
    small = torch.nn.functional.interpolate(
        x, size=(sh, sw), mode="bilinear", align_corners=False, antialias=factor < 1
    )
    padded = torch.zeros(*x.shape[:2], -(-sh // 32) * 32, -(-sw // 32) * 32)
    padded[..., :sh, :sw] = small
    logits = net(padded)[..., :sh, :sw]
    return torch.nn.functional.interpolate(
        logits, size=(h, w), mode="bilinear", align_corners=False
    ).softmax(1)


@pytest.mark.parametrize("dataset_scale", [1.0, 0.75])
def test_multiscale_is_the_mean_of_the_softmaxes_at_each_scale(dataset_scale):
    # each factor multiplies dataset.scale: 0.5, 1.0, 1.5 (x 0.75: 0.375, 0.75, 1.125) of 64x96
    conv, x = conv_net(), torch.randn(1, 3, 64, 96)

    def net(t: torch.Tensor) -> torch.Tensor:
        return 10 * conv(t)  # sharper class scores than the random net's near-uniform ones

    scales = (0.5, 1.0, 1.5)
    with torch.inference_mode():
        probs = Inference(InferenceSettings(scales=scales))(net, x, dataset_scale)
        expected = sum(_softmax_at(net, x, f * dataset_scale) for f in scales) / len(scales)
        single = _softmax_at(net, x, dataset_scale)
    assert probs.shape == (1, 4, 64, 96)
    assert torch.allclose(probs, expected, atol=1e-5)
    assert (single - expected).abs().max() > 0.1  # the scales matter: one of them alone is far off


def test_dense_crf_through_inference_sees_the_image_behind_the_normalised_input():
    pytest.importorskip("pydensecrf.densecrf")
    # two flat regions with an edge at column 40; the model's probabilities blurred across it and
    # centred at column 30, so columns 30..39 start wrong. The bilateral kernel of the image that
    # Inference recovers from the normalised input (ImageNet statistics) moves the label edge to
    # the image edge; a CRF that saw a blank image would only smooth the probabilities.
    h, w, edge = 48, 64, 40
    image = np.zeros((h, w, 3), np.uint8)
    image[:, :edge], image[:, edge:] = (70, 90, 60), (210, 190, 230)
    truth = np.zeros((h, w), np.int64)
    truth[:, edge:] = 1
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    x = (
        torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        - torch.tensor(mean).view(1, 3, 1, 1)
    ) / torch.tensor(std).view(1, 3, 1, 1)
    p1 = torch.sigmoid((torch.arange(w, dtype=torch.float32) - 30) / 5).expand(1, 1, h, w)
    logits = torch.cat([1 - p1, p1], 1).log()

    def blurred(t: torch.Tensor) -> torch.Tensor:
        return logits.expand(t.shape[0], -1, -1, -1)

    probs = Inference(load_settings("crf"), mean, std)(blurred, x)
    before = (logits.argmax(1)[0].numpy() == truth).mean()
    after = (probs.argmax(1)[0].numpy() == truth).mean()
    assert before < 0.87
    assert after > 0.99
    assert torch.allclose(probs.sum(1), torch.ones(1, h, w), atol=1e-4)


def test_dense_crf_makes_noisy_probabilities_follow_a_sharp_edge():
    pytest.importorskip("pydensecrf.densecrf")
    h, w = 48, 64
    image = np.zeros((1, h, w, 3), np.uint8)
    image[:, :, w // 2 :] = 255  # black left, white right
    truth = np.zeros((h, w), np.int64)
    truth[:, w // 2 :] = 1
    rng = np.random.default_rng(0)
    p1 = np.where(truth == 1, 0.7, 0.3) + rng.normal(0, 0.25, (h, w))  # noisy: ~20% of pixels wrong
    p1 = np.clip(p1, 0.02, 0.98)
    probs = torch.from_numpy(np.stack([1 - p1, p1])[None].astype(np.float32))
    before = (probs.argmax(1)[0].numpy() == truth).mean()
    settings = load_settings("crf").crf
    after_probs = dense_crf(probs, image, settings)
    after = (after_probs.argmax(1)[0].numpy() == truth).mean()
    assert before < 0.9
    assert after > 0.99
    assert torch.allclose(after_probs.sum(1), torch.ones(1, h, w), atol=1e-4)


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        (
            "slide",
            ["inference.crop=[100,100]"],
            "inference.crop=[100, 100]: expected multiples of 32",
        ),
        (
            "slide",
            ["inference.stride=[600,600]"],
            "inference.stride=[600, 600]: expected at most the crop",
        ),
        (
            "slide",
            ["inference.overlap=1"],
            "inference.overlap=1.0: expected a fraction of the tile in [0, 1)",
        ),
        (
            "slide",
            ["inference.overlap=0.5", "inference.stride=[64,64]"],
            "inference.overlap and inference.stride are both",
        ),
        ("whole", ["inference.mode=tiles"], "inference.mode=tiles: expected one of whole, slide"),
        ("whole", ["inference.scales=[1.0,0]"], "inference.scales=[1.0, 0.0]: expected positive"),
        ("crf", ["inference.crf.iterations=0"], "inference.crf: expected iterations >= 1"),
        (
            "whole",
            ["trainer.epochs=3"],
            "trainer.epochs=3: eval and predict take inference.KEY=VALUE overrides only",
        ),
        ("nope", [], "Could not find 'inference/nope'"),
    ],
)
def test_bad_inference_settings_are_one_line_errors(name, overrides, message):
    with pytest.raises(SegcliError, match=None) as err:
        load_settings(name, overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_presets_load_and_describe_their_source():
    assert load_settings("whole").plain
    s = load_settings("slide", ["inference.stride=[256,256]"])
    assert (s.mode, s.crop, s.stride_or_default(), s.merge) == (
        "slide",
        (512, 512),
        (256, 256),
        "gaussian",
    )
    assert s.tag.startswith("slide-") and s.tag != load_settings("slide").tag
    assert load_settings("multiscale").scales == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    crf = load_settings("crf").crf
    assert (crf.bi_w, crf.bi_xy_std, crf.bi_rgb_std, crf.pos_w, crf.pos_xy_std) == (4, 67, 3, 3, 3)


def _matrices(npz: Path) -> np.ndarray:
    with np.load(npz) as z:
        return z["matrices"]


def test_eval_inference_modes_through_the_cli(evaluated_runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(
        evaluated_runs["longer"], run
    )  # the eval writes evals/best-test-slide-*: not into the shared fixture
    best = str(run / "checkpoints" / "best.pt")
    r = segcli(
        "eval",
        best,
        "--split",
        "test",
        "--inference",
        "slide",
        "inference.crop=[512,512]",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "inference slide: slide 512x512" in r.stdout
    cover = sorted((run / "evals").glob("best-test-slide-*.json"))
    assert len(cover) == 1
    record = json.loads(cover[0].read_text())
    assert record["inference"]["mode"] == "slide" and record["inference"]["crop"] == [512, 512]
    assert record["inference"]["overrides"] == ["inference.crop=[512,512]"]
    # a tile covering the image is the whole-image pass: the same confusion matrix of every image
    assert np.array_equal(
        _matrices(cover[0].with_suffix(".npz")), _matrices(run / "evals" / "best-test.npz")
    )

    r = segcli(
        "eval",
        best,
        "--split",
        "test",
        "--inference",
        "flip",
        "--json",
        str(tmp_path / "flip.json"),
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    flip = json.loads((tmp_path / "flip.json").read_text())
    assert flip["inference"]["flip"] is True and flip["images"] == 2
    assert (
        _matrices(tmp_path / "flip.npz").sum() == _matrices(run / "evals" / "best-test.npz").sum()
    )

    r = segcli("eval", best, "inference.crop=[100,100]", "--inference", "slide", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "inference.crop" in r.stderr


def _probs_agree_with_the_eval(folder: Path, root: Path, npz: Path) -> None:
    """Each image's saved probabilities: (3, 48, 80) float16 distributions whose argmax, scored
    against the truth mask, gives the per-image confusion matrix the eval saved."""
    with np.load(npz) as z:
        names, matrices = list(z["names"]), z["matrices"]
    assert sorted(p.stem for p in folder.glob("*.npz")) == sorted(names) == ["test0", "test1"]
    for name, matrix in zip(names, matrices, strict=True):
        with np.load(folder / f"{name}.npz") as z:
            probs, classes = z["probs"], list(z["class_names"])
        assert (
            probs.shape == (3, 48, 80) and probs.dtype == np.float16 and classes == ["a", "b", "c"]
        )
        assert np.allclose(probs.astype(np.float32).sum(0), 1, atol=5e-3)
        truth = cv2.imread(str(root / "testannot" / f"{name}.png"), cv2.IMREAD_UNCHANGED).astype(
            np.int64
        )
        pred = probs.astype(np.float32).argmax(0)
        mine = np.bincount(truth.ravel() * 3 + pred.ravel(), minlength=9).reshape(3, 3)
        # float16 may break a near-tie the other way: at most a few of the 3840 pixels
        assert np.abs(mine - matrix).sum() <= 8 and mine.sum() == matrix.sum() == 48 * 80


def test_eval_save_probs_writes_each_image_at_its_own_size(evaluated_runs, tmp_path):
    root = evaluated_runs["root"]
    run = tmp_path / "run"
    shutil.copytree(evaluated_runs["longer"], run)
    r = segcli(
        "eval",
        str(run / "checkpoints" / "best.pt"),
        "--split",
        "test",
        "--save-probs",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    folder = run / "evals" / "best-test-probs"
    assert f"wrote {folder}/ (2 images' class probabilities" in r.stdout.replace("\n", "")
    assert (
        json.loads((run / "evals" / "best-test.json").read_text())["probabilities"]["images"] == 2
    )
    assert not list((run / "evals").glob("*.partial"))
    _probs_agree_with_the_eval(folder, root, run / "evals" / "best-test.npz")

    # another mode (probabilities, not logits, come out of the inference) beside --json
    r = segcli(
        "eval",
        str(run / "checkpoints" / "best.pt"),
        "--split",
        "test",
        "--inference",
        "flip",
        "--save-probs",
        "--json",
        str(tmp_path / "flip.json"),
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    _probs_agree_with_the_eval(tmp_path / "flip-probs", root, tmp_path / "flip.npz")


def test_predict_save_probs_and_crf_without_the_extra(evaluated_runs, tmp_path):
    run, root = evaluated_runs["longer"], evaluated_runs["root"]
    best = str(run / "checkpoints" / "best.pt")
    r = segcli(
        "predict",
        str(root / "test"),
        "-c",
        best,
        "-o",
        str(tmp_path / "p"),
        "--inference",
        "slide",
        "inference.crop=[32,32]",
        "--save-probs",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    mask = np.array(__import__("PIL.Image", fromlist=["Image"]).open(tmp_path / "p" / "test0.png"))
    with np.load(tmp_path / "p" / "test0_probs.npz") as z:
        probs, names = z["probs"], list(z["class_names"])
    assert probs.shape == (3, 48, 80) and probs.dtype == np.float16 and names == ["a", "b", "c"]
    assert np.allclose(probs.astype(np.float32).sum(0), 1, atol=5e-3)
    # the mask is the argmax of the full-precision scores: the same file as without --save-probs ...
    r = segcli(
        "predict",
        str(root / "test" / "test0.jpg"),
        "-c",
        best,
        "-o",
        str(tmp_path / "p0"),
        "--inference",
        "slide",
        "inference.crop=[32,32]",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert np.array_equal(
        np.array(__import__("PIL.Image", fromlist=["Image"]).open(tmp_path / "p0" / "test0.png")),
        mask,
    )
    # ... and the stored float16 probabilities agree with it wherever float16 can tell the top two
    # apart
    top2 = np.sort(probs.astype(np.float32), axis=0)[-2:]
    clear = top2[1] - top2[0] > 2.0**-10  # float16 rounds each value by at most 2**-12 below 1
    assert clear.mean() > 0.5, clear.mean()
    assert np.array_equal(probs.astype(np.float32).argmax(0)[clear], mask[clear])

    blocker = tmp_path / "blocked"
    (blocker / "pydensecrf").mkdir(parents=True)
    (blocker / "pydensecrf" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'pydensecrf'\", name='pydensecrf')\n"
    )
    r = segcli(
        "predict",
        str(root / "test"),
        "-c",
        best,
        "-o",
        str(tmp_path / "q"),
        "--inference",
        "crf",
        cwd=tmp_path,
        env={"PYTHONPATH": str(blocker)},
    )
    assert r.returncode == 2
    assert (
        r.stderr.strip()
        == "segcli: error: inference.crf needs pydensecrf2: pip install 'segcli[crf]' "
        "(builds from source; needs a C++ compiler)"
    )
    assert not (tmp_path / "q").exists()
