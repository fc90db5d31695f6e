"""The evaluation loop validation and ``segcli eval`` share, and ``forward_at_scale``."""

import pytest
import torch
from helpers import toy_model_and_batches

from segcli.inference.loop import evaluate, forward_at_scale
from segcli.runtime import StepContext


def test_evaluate_counts_every_pixel_once_and_averages_the_loss_per_image():
    model, batches = toy_model_and_batches(3)
    batches[1] = {
        "image": batches[1]["image"][:1],
        "mask": batches[1]["mask"][:1],
    }  # batches of 2, 1, 2
    res = evaluate(
        model, batches, 2, 255, StepContext(torch.device("cpu")), torch.nn.CrossEntropyLoss()
    )
    assert res.images == 5 and res.scores.pixels == 5 * 16 and int(res.matrix.matrix.sum()) == 80
    with torch.no_grad():
        per_image = [
            torch.nn.functional.cross_entropy(
                model(b["image"][i : i + 1]), b["mask"][i : i + 1]
            ).item()
            for b in batches
            for i in range(len(b["image"]))
        ]
        pred = torch.cat([model(b["image"]).argmax(1).flatten() for b in batches])
    truth = torch.cat([b["mask"].flatten() for b in batches])
    assert res.loss == pytest.approx(sum(per_image) / 5, rel=1e-6)
    assert res.scores.pixel_accuracy == pytest.approx((pred == truth).float().mean().item())


def test_forward_at_scale_returns_logits_at_the_input_size():
    torch.manual_seed(0)
    model = torch.nn.Conv2d(
        3, 4, 1
    )  # pointwise: a smooth image gives nearly the same logits at any scale
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 96), torch.linspace(0, 1, 128), indexing="ij")
    x = torch.stack([yy, xx, yy * xx])[None].repeat(2, 1, 1, 1)
    assert torch.equal(forward_at_scale(model, x, 1.0), model(x))
    out = forward_at_scale(model, x, 0.5)
    assert out.shape == (2, 4, 96, 128)
    assert torch.allclose(out[..., 2:-2, 2:-2], model(x)[..., 2:-2, 2:-2], atol=0.02)
    assert forward_at_scale(model, x[..., :50, :70], 0.67).shape == (2, 4, 50, 70)
