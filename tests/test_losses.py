import pytest
import segmentation_models_pytorch as smp
import torch

from segcli.errors import SegcliError
from segcli.losses import WeightedSum, build_loss

IGNORE = 255


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, generator=g)
    target = torch.randint(0, 3, (2, 8, 8), generator=g)
    target[:, :2] = IGNORE
    return logits, target


def test_ce_is_torch_cross_entropy_with_weights_and_ignore(batch):
    logits, target = batch
    loss = build_loss({"name": "ce", "ignore_index": IGNORE, "class_weights": [1, 2, 3]}, 3)
    expected = torch.nn.functional.cross_entropy(logits, target, weight=torch.tensor([1.0, 2, 3]),
                                                 ignore_index=IGNORE)
    assert loss(logits, target).item() == pytest.approx(expected.item())


def test_dice_ce_is_the_weighted_sum_of_its_terms(batch):
    logits, target = batch
    cfg = {"name": "compound", "ignore_index": IGNORE,
           "terms": [{"name": "dice", "weight": 0.7}, {"name": "ce", "weight": 0.3}]}
    loss = build_loss(cfg, 3)
    assert isinstance(loss, WeightedSum)
    dice = smp.losses.DiceLoss("multiclass", ignore_index=IGNORE)(logits, target)
    ce = torch.nn.functional.cross_entropy(logits, target, ignore_index=IGNORE)
    assert loss(logits, target).item() == pytest.approx(0.7 * dice.item() + 0.3 * ce.item(), rel=1e-6)


@pytest.mark.parametrize("name", ["ce", "dice", "focal", "dice_ce", "jaccard", "lovasz", "tversky", "focal_tversky",
                                  "log_cosh_dice", "sensitivity_specificity", "combo", "exp_log"])
def test_ignored_pixels_do_not_change_the_loss(batch, name):
    from segcli.config import compose_config, to_plain

    cfg = to_plain(compose_config([f"loss={name}", "dataset.ignore_index=255"]))["loss"]
    loss = build_loss(cfg, 3)
    logits, target = batch
    changed = logits.clone()
    changed[:, :, :2] = 100 * torch.randn_like(changed[:, :, :2])  # only where target is ignored
    assert loss(changed, target).item() == pytest.approx(loss(logits, target).item(), rel=1e-6)


def test_unknown_loss_and_term_names_are_user_errors():
    with pytest.raises(SegcliError, match="loss.name=bogus"):
        build_loss({"name": "bogus", "ignore_index": 0}, 3)
    with pytest.raises(SegcliError, match=r"loss.terms\[0\].name=nope"):
        build_loss({"name": "compound", "ignore_index": 0, "terms": [{"name": "nope"}]}, 3)
    with pytest.raises(SegcliError, match="class_weights has 2"):
        build_loss({"name": "ce", "ignore_index": 0, "class_weights": [1, 2]}, 3)


def test_class_weights_median_and_inverse_frequency_by_hand():
    import numpy as np

    from segcli.data import ClassPixels
    from segcli.losses import class_weights

    stats = ClassPixels(np.array([10, 30, 0, 60]), np.array([100, 100, 0, 60]))
    # frequencies 0.1, 0.3, -, 1.0; median 0.3 -> 3, 1, 0 (absent), 0.3
    assert class_weights("median_frequency", 4, stats) == pytest.approx([3.0, 1.0, 0.0, 0.3])
    # N = 100 pixels, C = 4: N / (C n_c)
    assert class_weights("inverse_frequency", 4, stats) == pytest.approx([2.5, 100 / 120, 0.0, 100 / 240])
    assert class_weights([1, 2, 3, 4], 4, None) == [1.0, 2.0, 3.0, 4.0]
    assert class_weights(None, 4, stats) is None
    with pytest.raises(SegcliError, match="needs the class pixel counts"):
        class_weights("median_frequency", 4, None)
    with pytest.raises(SegcliError, match="loss.class_weights=balanced"):
        class_weights("balanced", 4, stats)


def test_weighted_ce_in_dice_ce_uses_the_training_statistics(batch):
    import numpy as np

    from segcli.data import ClassPixels

    logits, target = batch
    stats = ClassPixels(np.array([10, 30, 60]), np.array([100, 100, 100]))
    cfg = {"name": "compound", "ignore_index": IGNORE,
           "terms": [{"name": "ce", "weight": 1.0, "class_weights": "median_frequency"}]}
    expected = torch.nn.functional.cross_entropy(logits, target, weight=torch.tensor([3.0, 1.0, 0.5]),
                                                 ignore_index=IGNORE)
    assert build_loss(cfg, 3, stats)(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)


# --- the region losses written in losses.py, against their formulas in float64 numpy ---------

def _reference_stats(logits, target, ignore=IGNORE):
    import numpy as np

    x = logits.double().numpy()
    p = np.exp(x - x.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    t = target.numpy()
    valid = (t != ignore)[:, None].astype(np.float64)
    y = np.stack([(t == c) for c in range(logits.shape[1])], 1).astype(np.float64) * valid
    p = p * valid
    dims = (0, 2, 3)
    return p, y, valid, (p * y).sum(dims), (p * (1 - y) * valid).sum(dims), ((1 - p) * y).sum(dims), y.sum(dims) > 0


def reference(name, logits, target, label_weights=None):
    import numpy as np

    p, y, valid, tp, fp, fn, present = _reference_stats(logits, target)
    s = 1.0
    dice = (2 * tp + s) / (2 * tp + fp + fn + s)
    if name == "focal_tversky":  # alpha 0.7 on FN, beta 0.3 on FP, gamma 4/3
        ti = (tp + s) / (tp + 0.7 * fn + 0.3 * fp + s)
        return np.mean((1 - ti[present]) ** (3 / 4))
    if name == "log_cosh_dice":
        return np.log(np.cosh(1 - dice[present].mean()))
    if name == "sensitivity_specificity":  # w = 0.05
        err = (y - p) ** 2 * valid
        sens = (err * y).sum((0, 2, 3)) / (y.sum((0, 2, 3)) + s)
        spec = (err * (1 - y) * valid).sum((0, 2, 3)) / (((1 - y) * valid).sum((0, 2, 3)) + s)
        return np.mean((0.05 * sens + 0.95 * spec)[present])
    if name == "combo":  # alpha 0.5, beta 0.5
        m = valid.astype(bool).repeat(p.shape[1], 1)
        pm, ym = p[m], y[m]
        bce = -(0.5 * ym * np.log(pm) + 0.5 * (1 - ym) * np.log(1 - pm))
        return 0.5 * bce.mean() - 0.5 * dice[present].mean()
    if name == "exp_log":  # gamma 0.3, w_dice 0.8, w_cross 0.2
        w = np.ones(p.shape[1]) if label_weights is None else np.asarray(label_weights)
        true_p = (p * y).sum(1)
        w_l = (w[None, :, None, None] * y).sum(1)
        v = valid[:, 0] > 0
        cross = (w_l[v] * (-np.log(true_p[v])) ** 0.3).mean()
        return 0.8 * np.mean((-np.log(dice[present])) ** 0.3) + 0.2 * cross
    raise ValueError(name)


REGION = ["focal_tversky", "log_cosh_dice", "sensitivity_specificity", "combo", "exp_log"]


def _yaml_loss(name, *overrides, stats=None):
    from segcli.config import compose_config, to_plain

    cfg = to_plain(compose_config([f"loss={name}", "dataset.ignore_index=255", *overrides]))["loss"]
    return build_loss(cfg, 3, stats)


@pytest.mark.parametrize("name", REGION)
def test_region_losses_match_their_formulas(batch, name):
    logits, target = batch
    target = target.clone()
    target[target == 2] = 1  # class 2 absent from the truth: left out of the class means
    assert _yaml_loss(name)(logits, target).item() == pytest.approx(reference(name, logits, target), rel=1e-5)


def test_exp_log_weights_classes_by_training_frequency(batch):
    from segcli.data import ClassPixels
    import numpy as np

    logits, target = batch
    stats = ClassPixels(np.array([10, 30, 60]), np.array([100, 100, 100]))
    weights = [(100 / 10) ** 0.5, (100 / 30) ** 0.5, (100 / 60) ** 0.5]
    loss = _yaml_loss("exp_log", stats=stats)
    assert loss(logits, target).item() == pytest.approx(reference("exp_log", logits, target, weights), rel=1e-5)


@pytest.mark.parametrize("name", ["ce", "weighted_ce", "dice", "focal", "dice_ce", "jaccard", "lovasz", "tversky", *REGION])
def test_gradients_are_finite_at_perfect_and_totally_wrong_predictions(name):
    import numpy as np

    from segcli.data import ClassPixels

    target = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1], [IGNORE, 0, 1, 1]]])  # class 2: empty
    perfect = 30 * torch.nn.functional.one_hot(torch.where(target == IGNORE, 0, target), 3).permute(0, 3, 1, 2).float()
    wrong = perfect.roll(1, dims=1)
    loss = _yaml_loss(name, stats=ClassPixels(np.array([5, 6, 0]), np.array([11, 11, 0])))
    for logits in (perfect, wrong):
        logits = logits.clone().requires_grad_(True)
        value = loss(logits, target)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(logits.grad).all(), name
    assert loss(perfect, target).item() < loss(wrong, target).item()


@pytest.mark.parametrize("name", ["jaccard", "lovasz", "tversky"])
def test_wrapped_smp_losses_are_smp_s(batch, name):
    logits, target = batch
    smp_loss = {"jaccard": smp.losses.JaccardLoss("multiclass", ignore_index=IGNORE),
                "lovasz": smp.losses.LovaszLoss("multiclass", ignore_index=IGNORE),
                "tversky": smp.losses.TverskyLoss("multiclass", ignore_index=IGNORE, alpha=0.3, beta=0.7)}[name]
    assert _yaml_loss(name)(logits, target).item() == pytest.approx(smp_loss(logits, target).item(), rel=1e-6)
