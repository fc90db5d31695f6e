"""The losses written here against numbers worked out by hand from each paper's formula, on inputs
small enough to check on paper: no reference code shared with the implementation.

Region losses: one image of three pixels, three classes. Pixel A is class 0 with probabilities
(0.7, 0.2, 0.1), pixel B class 1 with (0.1, 0.6, 0.3), pixel C is ignored. Class 2 is absent from
the truth, so it leaves every class mean. Per class (smooth s = 1):

    class 0: tp = 0.7, fp = 0.1, fn = 0.3   Dice = (1.4 + 1) / (1.4 + 0.1 + 0.3 + 1) = 2.4 / 2.8
    class 1: tp = 0.6, fp = 0.2, fn = 0.4   Dice = (1.2 + 1) / (1.2 + 0.2 + 0.4 + 1) = 2.2 / 2.8

The same probabilities come from softmax logits log(p) (multiclass) and from sigmoid logits
log(p / (1 - p)) (multilabel), so both modes must give the same numbers.
"""

from __future__ import annotations

import math

import pytest
import torch

from segcli.config import compose_config, to_plain
from segcli.losses.build import build_loss

IGNORE = 255
A, B, C = (0.7, 0.2, 0.1), (0.1, 0.6, 0.3), (0.05, 0.05, 0.9)  # C: ignored, so any numbers
DICE = (2.4 / 2.8, 2.2 / 2.8)


def loss_of(name: str, *overrides: str, num_classes: int = 3):
    cfg = to_plain(compose_config([f"loss={name}", "dataset.ignore_index=255", *overrides]))["loss"]
    return build_loss(cfg, num_classes)


def three_pixels(mode: str, c: tuple = C) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (1, 3, 1, 3) whose probabilities are A, B, c; target (1, 1, 3) = [0, 1, ignore]."""
    p = torch.tensor([A, B, c], dtype=torch.float64).T.reshape(1, 3, 1, 3)
    logits = p.log() if mode == "multiclass" else (p / (1 - p)).log()
    return logits.float(), torch.tensor([[[0, 1, IGNORE]]])


HAND = {
    # Abraham and Khan: mean over present classes of (1 - TI)^(1/gamma), TI = (tp+s)/(tp + .7 fn +
    # .3 fp + s)
    "focal_tversky": (
        (1 - 1.7 / (0.7 + 0.7 * 0.3 + 0.3 * 0.1 + 1)) ** 0.75
        + (1 - 1.6 / (0.6 + 0.7 * 0.4 + 0.3 * 0.2 + 1)) ** 0.75
    )
    / 2,
    # Jadon: log(cosh(1 - mean Dice))
    "log_cosh_dice": math.log(math.cosh(1 - (DICE[0] + DICE[1]) / 2)),
    # Brosch et al., w = 0.05: class 0 squared errors (0.09 on its pixel, 0.01 on the other), class
    # 1 (0.16, 0.04); each sum over (pixels + s) = 2: sensitivity 0.045, 0.08; specificity 0.005,
    # 0.02
    "sensitivity_specificity": ((0.05 * 0.045 + 0.95 * 0.005) + (0.05 * 0.08 + 0.95 * 0.02)) / 2,
    # Wong et al., gamma 0.3, weights 0.8 / 0.2, label weights 1: Dice term over present classes,
    # cross term over the two valid pixels (true-class probabilities 0.7 and 0.6)
    "exp_log": 0.8 * ((-math.log(DICE[0])) ** 0.3 + (-math.log(DICE[1])) ** 0.3) / 2
    + 0.2 * ((-math.log(0.7)) ** 0.3 + (-math.log(0.6)) ** 0.3) / 2,
}


@pytest.mark.parametrize("mode", ["multiclass", "multilabel"])
@pytest.mark.parametrize("name", sorted(HAND))
def test_region_losses_equal_the_hand_computed_values(name, mode):
    logits, target = three_pixels(mode)
    got = loss_of(name, f"loss.mode={mode}")(logits, target).item()
    assert got == pytest.approx(HAND[name], rel=1e-5)
    other, _ = three_pixels(mode, c=(0.3, 0.3, 0.4))  # the ignored pixel changes nothing
    assert loss_of(name, f"loss.mode={mode}")(other, target).item() == pytest.approx(got, rel=1e-6)


def combo_by_hand(alpha: float, beta: float) -> float:
    """Taghanaki et al. (2019): alpha * L_mbce - (1 - alpha) * mean Dice, with
    L_mbce = -(1/N) sum_i [beta t_i ln p_i + (1 - beta)(1 - t_i) ln(1 - p_i)] over the N = 6
    (pixel, class) entries of the two valid pixels."""
    positives = math.log(0.7) + math.log(0.6)  # t = 1: class 0 at A, class 1 at B
    negatives = math.log(1 - 0.2) + math.log(1 - 0.1) + math.log(1 - 0.1) + math.log(1 - 0.3)
    mbce = -(beta * positives + (1 - beta) * negatives) / 6
    return alpha * mbce - (1 - alpha) * (DICE[0] + DICE[1]) / 2


@pytest.mark.parametrize("mode", ["multiclass", "multilabel"])
def test_combo_at_an_asymmetric_setting(mode):
    logits, target = three_pixels(mode)
    got = loss_of("combo", "loss.alpha=0.3", "loss.beta=0.8", f"loss.mode={mode}")(
        logits, target
    ).item()
    assert got == pytest.approx(combo_by_hand(0.3, 0.8), rel=1e-5)
    # swapping alpha or beta for 1 - itself gives another number: the test tells them apart
    assert abs(combo_by_hand(0.7, 0.8) - got) > 0.1 and abs(combo_by_hand(0.3, 0.2) - got) > 1e-3


# --- distance-map losses: two 1x4 images, two classes --------------------------------------------
# image 1: target [0, 0, 1, 1], p(class 1) = [0.2, 0.4, 0.7, 0.9]
# image 2: target [1, 1, 1, ignore], p(class 1) = [0.6, 0.8, 0.55, q] (q: any, the pixel is ignored)
# valid pixels |V| = 7, classes |K| = 2.


def two_images(q: float = 0.99) -> tuple[torch.Tensor, torch.Tensor]:
    p1 = torch.tensor([[0.2, 0.4, 0.7, 0.9], [0.6, 0.8, 0.55, q]], dtype=torch.float64)
    logits = torch.stack([torch.zeros_like(p1), (p1 / (1 - p1)).log()], 1)[
        :, :, None
    ]  # (2, 2, 1, 4)
    return logits.float(), torch.tensor([[[0, 0, 1, 1]], [[1, 1, 1, IGNORE]]])


def test_boundary_loss_by_hand_over_two_images_and_only_valid_pixels():
    # signed distances (Kervadec): image 1 class 0 [-1, 0, 1, 2], class 1 [2, 1, 0, -1];
    # image 2 class 0 empty (0), class 1 mask [T, T, T, F] (ignored = not the class): [-2, -1, 0, 1]
    s1 = 0.8 * -1 + 0.6 * 0 + 0.3 * 1 + 0.1 * 2 + (0.2 * 2 + 0.4 * 1 + 0.7 * 0 + 0.9 * -1)
    s2 = 0.6 * -2 + 0.8 * -1 + 0.55 * 0
    expected = (s1 + s2) / (7 * 2)
    for q in (0.99, 0.01):
        logits, target = two_images(q)
        assert loss_of("boundary", num_classes=2)(logits, target).item() == pytest.approx(
            expected, rel=1e-5
        )
    assert expected != pytest.approx((s1 + s2) / (8 * 2))  # an ignored pixel in |V| would be caught


def test_hausdorff_loss_by_hand_over_two_images_and_only_valid_pixels():
    # alpha 2; predictions (argmax) equal the truth on valid pixels, so dG = dS. Image 1, both
    # classes: boundary distances edt(mask) + edt(~mask) = [2, 1, 1, 2], weight dG^2 + dS^2 = [8, 2,
    # 2, 8], squared errors [0.04, 0.16, 0.09, 0.01] per class. Image 2: class 0 has no mask (weight
    # 0); class 1 distances [3, 2, 1] on the valid pixels, weights [18, 8, 2], errors (1 - p)^2.
    s1 = 2 * (0.04 * 8 + 0.16 * 2 + 0.09 * 2 + 0.01 * 8)
    s2 = 0.4**2 * 18 + 0.2**2 * 8 + 0.45**2 * 2
    for q in (0.99, 0.01):
        logits, target = two_images(q)
        got = loss_of("hausdorff", num_classes=2)(logits, target).item()
        assert got == pytest.approx((s1 + s2) / (7 * 2), rel=1e-5)


def test_shape_aware_loss_by_hand_including_a_boundary_only_in_the_prediction():
    # image 1: the truth is all class 1 (no boundary) but the prediction [0, 0, 1, 1] has one:
    # E = the diagonal, so (normalised) 1 + E = 2. Image 2: truth [0, 0, 1, ignore], prediction
    # [0, 0, 1, *]: the boundaries coincide, E = 0, factor 1. Loss = sum_n factor_n CE_n / |V|.
    p1 = torch.tensor([[0.2, 0.4, 0.7, 0.9], [0.3, 0.1, 0.8, 0.6]], dtype=torch.float64)
    logits = torch.stack([torch.zeros_like(p1), (p1 / (1 - p1)).log()], 1)[:, :, None].float()
    target = torch.tensor([[[1, 1, 1, 1]], [[0, 0, 1, IGNORE]]])
    ce1 = -(math.log(0.2) + math.log(0.4) + math.log(0.7) + math.log(0.9))
    ce2 = -(math.log(0.7) + math.log(0.9) + math.log(0.8))
    got = loss_of("shape_aware", num_classes=2)(logits, target).item()
    assert got == pytest.approx((2 * ce1 + 1 * ce2) / 7, rel=1e-5)
    # no predicted boundary at all: factor 1 for both images
    flat = torch.stack([torch.zeros_like(p1), torch.full_like(p1, 3.0)], 1)[:, :, None].float()
    p = 1 / (1 + math.exp(-3.0))
    ce = -(4 * math.log(p) + 2 * math.log(1 - p) + math.log(p))
    assert loss_of("shape_aware", num_classes=2)(flat, target).item() == pytest.approx(
        ce / 7, rel=1e-5
    )
