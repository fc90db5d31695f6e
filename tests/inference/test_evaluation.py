"""segcli eval (inference/evaluation.py) against computations done here: the per-image confusion
matrices of an eval under sliding windows and flip TTA equal the checkpoint's model run by hand
with those settings (and differ from the whole-image pass), predict's masks give the matrices eval
gives, and the precision asked for is the dtype the model computes in."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import segcli
from PIL import Image

from segcli.inference.evaluation import evaluate_checkpoint
from segcli.inference.modes import Inference, InferenceSettings, load_settings
from segcli.models.build import model_from_checkpoint
from segcli.runs.checkpoints import load_checkpoint

# the slide preset with 32x32 tiles: the test images (48x80, padded to 64x96) take 2 x 4 tiles
SLIDE = InferenceSettings(name="slide", mode="slide", crop=(32, 32), stride=None, merge="gaussian")


@pytest.fixture(scope="module")
def checkpoint(evaluated_runs, module_tmp) -> Path:
    """The longer run's best.pt copied out of its run folder (evals of it write nothing into the
    session's shared run)."""
    path = module_tmp("ckpt") / "best.pt"
    shutil.copy(evaluated_runs["longer"] / "checkpoints" / "best.pt", path)
    return path


@pytest.fixture(scope="module")
def slide_eval(checkpoint, module_tmp) -> Path:
    """``segcli eval --inference slide inference.crop=[32,32] --amp false`` of the test split: its
    ``--json`` file (the per-image matrices are the ``.npz`` beside it)."""
    out = module_tmp("slide-eval")
    r = segcli(
        "eval",
        str(checkpoint),
        "--split",
        "test",
        "--inference",
        "slide",
        "inference.crop=[32,32]",
        "--amp",
        "false",
        "--json",
        str(out / "slide.json"),
        cwd=out,
    )
    assert r.returncode == 0, r.stderr
    return out / "slide.json"


def _by_hand(
    checkpoint: Path, root: Path, names: list[str], settings: InferenceSettings
) -> np.ndarray:
    """``(N, 3, 3)`` confusion matrices (rows truth, columns prediction) of the test images
    ``names``: RGB, zero-padded bottom/right to a multiple of 32, normalised with the checkpoint's
    statistics, one float32 batch through ``Inference(settings)``, argmax cropped back to 48x80."""
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt, torch.device("cpu")).eval()
    mean, std = np.array(ckpt["normalization"]["mean"]), np.array(ckpt["normalization"]["std"])
    images, truths = [], []
    for name in names:
        image = cv2.cvtColor(cv2.imread(str(root / "test" / f"{name}.jpg")), cv2.COLOR_BGR2RGB)
        padded = np.zeros((64, 96, 3), np.uint8)
        padded[:48, :80] = image
        images.append(
            torch.from_numpy(((padded / 255.0 - mean) / std).astype(np.float32)).permute(2, 0, 1)
        )
        truths.append(
            cv2.imread(str(root / "testannot" / f"{name}.png"), cv2.IMREAD_UNCHANGED).astype(
                np.int64
            )
        )
    with torch.inference_mode():
        pred = (
            Inference(settings, mean, std)(model, torch.stack(images))
            .argmax(1)[:, :48, :80]
            .numpy()
        )
    return np.stack(
        [
            np.bincount(t.ravel() * 3 + p.ravel(), minlength=9).reshape(3, 3)
            for t, p in zip(truths, pred, strict=True)
        ]
    )


def _evidence(npz: Path) -> tuple[list[str], np.ndarray]:
    with np.load(npz) as z:
        return [str(n) for n in z["names"]], z["matrices"]


def test_eval_slide_matrices_are_the_tiled_model_run_by_hand(
    slide_eval, checkpoint, evaluated_runs
):
    assert load_settings("slide", ["inference.crop=[32,32]"]) == SLIDE  # what the CLI asked for
    record = json.loads(slide_eval.read_text())
    assert record["inference"]["crop"] == [32, 32] and record["precision"]["amp"] == "float32"
    names, matrices = _evidence(slide_eval.with_suffix(".npz"))
    assert sorted(names) == ["test0", "test1"] and matrices.sum() == 2 * 48 * 80
    root = evaluated_runs["root"]
    assert np.array_equal(matrices, _by_hand(checkpoint, root, names, SLIDE))
    # ... and tiling really happened: 32x32 tiles see less context than the whole image
    whole = _by_hand(checkpoint, root, names, InferenceSettings())
    assert np.abs(matrices - whole).sum() > 100


def test_eval_flip_matrices_are_the_flip_tta_run_by_hand(checkpoint, evaluated_runs):
    result, evidence = evaluate_checkpoint(
        checkpoint, "test", device="cpu", amp="false", inference=load_settings("flip")
    )
    assert result["inference"]["flip"] is True and result["precision"]["amp"] == "float32"
    root = evaluated_runs["root"]
    assert np.array_equal(
        evidence.matrices, _by_hand(checkpoint, root, evidence.names, InferenceSettings(flip=True))
    )
    whole = _by_hand(checkpoint, root, evidence.names, InferenceSettings())
    assert np.abs(evidence.matrices - whole).sum() > 20  # the mirrored pass changes some pixels


def test_predict_masks_give_the_matrices_eval_gives_under_the_same_inference(
    slide_eval, checkpoint, evaluated_runs, tmp_path
):
    root = evaluated_runs["root"]
    r = segcli(
        "predict",
        str(root / "test"),
        "-c",
        str(checkpoint),
        "-o",
        str(tmp_path / "p"),
        "--inference",
        "slide",
        "inference.crop=[32,32]",
        "--amp",
        "false",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    names, matrices = _evidence(slide_eval.with_suffix(".npz"))
    for name, matrix in zip(names, matrices, strict=True):
        mask = np.array(Image.open(tmp_path / "p" / f"{name}.png")).astype(np.int64)
        truth = cv2.imread(str(root / "testannot" / f"{name}.png"), cv2.IMREAD_UNCHANGED).astype(
            np.int64
        )
        assert mask.shape == truth.shape == (48, 80)
        assert np.array_equal(
            np.bincount(truth.ravel() * 3 + mask.ravel(), minlength=9).reshape(3, 3), matrix
        ), name


def _recording_logits_dtype(monkeypatch) -> list[torch.dtype]:
    """Patch the model building of ``inference.loaded.LoadedModel`` (eval's and predict's one
    path) so that every model it builds records the dtype of its output (the logits) at each
    forward pass; returns the list it records into."""
    from segcli.inference import loaded as module

    seen: list[torch.dtype] = []
    build = module.model_from_checkpoint

    def recording(*args, **kwargs):
        model = build(*args, **kwargs)
        model.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
        return model

    monkeypatch.setattr(module, "model_from_checkpoint", recording)
    return seen


@pytest.mark.parametrize(
    ("amp", "dtype", "name"),
    [("false", torch.float32, "float32"), ("bf16", torch.bfloat16, "bfloat16")],
)
def test_eval_and_predict_compute_in_the_precision_asked_for(
    amp, dtype, name, checkpoint, evaluated_runs, monkeypatch
):
    from segcli.inference import predict

    seen = _recording_logits_dtype(monkeypatch)
    result, _ = evaluate_checkpoint(checkpoint, "test", device="cpu", amp=amp)
    assert result["precision"]["amp"] == name and result["precision"]["setting"] == amp
    assert seen and set(seen) == {dtype}, seen  # every forward pass of the eval

    seen.clear()
    predictor = predict.Predictor.from_checkpoint(checkpoint, "cpu", amp)
    image = cv2.cvtColor(
        cv2.imread(str(evaluated_runs["root"] / "test" / "test0.jpg")), cv2.COLOR_BGR2RGB
    )
    assert predictor.predict(image).shape == (48, 80)
    assert seen == [dtype] and predictor.ctx.precision.name == name


def test_eval_normalises_with_the_checkpoints_statistics(checkpoint, evaluated_runs, tmp_path):
    """A checkpoint whose stored mean/std are not ImageNet's: eval's matrices are the model run by
    hand with those statistics (as predict normalises), not with ImageNet's."""
    ckpt = torch.load(checkpoint, weights_only=True)
    ckpt["normalization"] = {"mean": [0.7, 0.2, 0.6], "std": [0.1, 0.5, 0.15]}
    other = tmp_path / "other-stats.pt"
    torch.save(ckpt, other)
    result, evidence = evaluate_checkpoint(other, "test", device="cpu", amp="false")
    root = evaluated_runs["root"]
    by_hand = _by_hand(other, root, evidence.names, InferenceSettings())
    imagenet = _by_hand(checkpoint, root, evidence.names, InferenceSettings())
    assert not np.array_equal(by_hand, imagenet)  # the statistics change the predictions
    assert np.array_equal(evidence.matrices, by_hand)
    tp, total = np.diagonal(by_hand.sum(0)), by_hand.sum(0)
    iou = tp / (total.sum(0) + total.sum(1) - tp)
    assert result["miou"] == pytest.approx(float(np.nanmean(iou)))
