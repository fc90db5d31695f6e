"""inference.predict.Predictor directly: its masks and probabilities against a forward pass run by
hand (the image padded bottom/right with black pixels to a multiple of 32, normalised, logits
cropped back), from a checkpoint and from an in-process model with other statistics."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from segcli.data.augment import build_transforms
from segcli.inference.predict import Predictor
from segcli.runtime import StepContext


def _image(h: int = 50, w: int = 70) -> np.ndarray:
    """A random RGB image (not a multiple of 32 either way) whose red channel has three bands, as
    the test runs' images encode their classes."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    image[..., 0] = np.repeat([20, 80, 140], -(-h // 3))[:h, None]
    return image


def _logits_by_hand(
    model, image: np.ndarray, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """``(C, H, W)`` float32 logits: black padding to a multiple of 32, then ``(pixel/255 - mean) /
    std``."""
    h, w = image.shape[:2]
    padded = np.zeros((-(-h // 32) * 32, -(-w // 32) * 32, 3), np.uint8)
    padded[:h, :w] = image
    x = torch.from_numpy(((padded / 255.0 - np.array(mean)) / np.array(std)).astype(np.float32))
    with torch.inference_mode():
        return model(x.permute(2, 0, 1)[None])[0, :, :h, :w].float()


def test_predictor_from_checkpoint_is_the_models_argmax_by_hand(evaluated_runs):
    from segcli.models.build import model_from_checkpoint
    from segcli.runs.checkpoints import load_checkpoint

    best = evaluated_runs["longer"] / "checkpoints" / "best.pt"
    predictor = Predictor.from_checkpoint(best, "cpu", "false")
    ckpt = load_checkpoint(best)
    model = model_from_checkpoint(ckpt, torch.device("cpu")).eval()
    image = _image()
    logits = _logits_by_hand(
        model, image, ckpt["normalization"]["mean"], ckpt["normalization"]["std"]
    )

    mask = predictor.predict(image)
    assert mask.shape == (50, 70) and mask.dtype == np.uint8
    assert np.array_equal(mask, logits.argmax(0).numpy())
    assert len(np.unique(mask)) > 1  # not a constant prediction
    probs_mask, probs = predictor.predict_with_probabilities(image)
    assert np.array_equal(probs_mask, mask)
    assert probs.shape == (3, 50, 70) and np.allclose(probs, logits.softmax(0).numpy(), atol=1e-5)
    assert predictor.class_names == ["a", "b", "c"]


def test_predictor_of_an_in_process_model_uses_its_transform_and_crops_top_left():
    torch.manual_seed(0)
    # 5x5 kernels twice: pixels near the bottom/right edges see the padding
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 5, padding=2), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 5, padding=2)
    ).eval()
    mean, std = (0.3, 0.5, 0.7), (0.2, 0.25, 0.3)
    colors = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]]
    predictor = Predictor(
        net,
        build_transforms(None, 255, mean=mean, std=std),
        colors,
        list("abcd"),
        StepContext(torch.device("cpu")),
    )
    image = _image()
    logits = _logits_by_hand(net, image, mean, std)
    assert torch.allclose(predictor.scores(image), logits, atol=1e-5)
    mask = predictor.predict(image)
    assert np.array_equal(mask, logits.argmax(0).numpy())
    assert np.allclose(
        predictor.predict_with_probabilities(image)[1], logits.softmax(0).numpy(), atol=1e-6
    )
    # the overlay: each pixel half image, half its class colour (rounded)
    expected = image * 0.5 + np.array(colors)[mask] * 0.5
    assert np.abs(predictor.overlay(image, mask).astype(float) - expected).max() <= 0.5 + 1e-9
