"""The pixel contract (preprocessing.py): ``denormalize`` is the exact inverse of the data
pipeline's normalisation (data.augment's fixed tail), with ImageNet's statistics and with others."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segcli.data.augment import build_transforms
from segcli.preprocessing import IMAGENET_MEAN, IMAGENET_STD, denormalize


@pytest.mark.parametrize(
    ("mean", "std"), [(IMAGENET_MEAN, IMAGENET_STD), ((0.3, 0.5, 0.7), (0.2, 0.25, 0.3))]
)
def test_denormalize_gives_back_the_image_the_pipeline_normalised(mean, std):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    image[0, 0], image[0, 1] = (0, 0, 0), (255, 255, 255)  # both ends of the 8-bit range
    mask = np.zeros((40, 56), np.uint8)
    x = build_transforms(None, 255, mean=mean, std=std)(image=image, mask=mask)["image"]
    assert (
        x.shape == (3, 64, 64) and x.dtype == torch.float32
    )  # padded bottom/right to a multiple of 32
    # the pipeline's rule, by hand: (pixel / 255 - mean) / std per channel
    by_hand = (image / 255.0 - np.array(mean)) / np.array(std)
    assert np.allclose(x[:, :40, :56].permute(1, 2, 0).numpy(), by_hand, atol=1e-5)

    back = denormalize(x[None], mean, std)
    assert back.shape == (1, 64, 64, 3) and back.dtype == np.uint8
    assert np.array_equal(back[0, :40, :56], image)
    assert not back[0, 40:].any() and not back[0, :, 56:].any()  # the padding is black pixels


def test_denormalize_rounds_and_clamps_to_8_bits():
    # channel values (v / 255 - mean) / std for v = 100, then 100.4 and 99.6 (round to 100), and
    # values beyond the range (clamped to 0 and 255)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)

    def normalised(v: float) -> float:
        return (v / 255 - 0.5) / 0.25

    x = torch.tensor(
        [normalised(100), normalised(100.4), normalised(99.6), normalised(-30), normalised(300)]
    )
    x = x.view(1, 1, 1, 5).expand(1, 3, 1, 5)
    assert denormalize(x, mean, std)[0, 0].tolist() == [
        [100] * 3,
        [100] * 3,
        [100] * 3,
        [0] * 3,
        [255] * 3,
    ]
    # the default statistics are ImageNet's, per channel (R, G, B): a zero input is the mean colour
    assert denormalize(torch.zeros(1, 3, 1, 1))[0, 0, 0].tolist() == [
        round(m * 255) for m in IMAGENET_MEAN
    ]
