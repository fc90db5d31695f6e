import pytest
import segmentation_models_pytorch as smp
import torch

from segcli.errors import SegcliError
from segcli.losses.build import WeightedSum, build_loss

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
    expected = torch.nn.functional.cross_entropy(
        logits, target, weight=torch.tensor([1.0, 2, 3]), ignore_index=IGNORE
    )
    assert loss(logits, target).item() == pytest.approx(expected.item())


def test_dice_ce_is_the_weighted_sum_of_its_terms(batch):
    logits, target = batch
    cfg = {
        "name": "compound",
        "ignore_index": IGNORE,
        "terms": [{"name": "dice", "weight": 0.7}, {"name": "ce", "weight": 0.3}],
    }
    loss = build_loss(cfg, 3)
    assert isinstance(loss, WeightedSum)
    dice = smp.losses.DiceLoss("multiclass", ignore_index=IGNORE)(logits, target)
    ce = torch.nn.functional.cross_entropy(logits, target, ignore_index=IGNORE)
    assert loss(logits, target).item() == pytest.approx(
        0.7 * dice.item() + 0.3 * ce.item(), rel=1e-6
    )


@pytest.mark.parametrize(
    "name",
    [
        "ce",
        "dice",
        "focal",
        "dice_ce",
        "jaccard",
        "lovasz",
        "tversky",
        "focal_tversky",
        "log_cosh_dice",
        "sensitivity_specificity",
        "combo",
        "exp_log",
        "bce",
        "weighted_bce",
        "balanced_ce",
        "boundary",
        "hausdorff",
        "shape_aware",
    ],
)
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

    from segcli.data.readers import ClassPixels
    from segcli.losses.build import class_weights

    stats = ClassPixels(np.array([10, 30, 0, 60]), np.array([100, 100, 0, 60]))
    # frequencies 0.1, 0.3, -, 1.0; median 0.3 -> 3, 1, 0 (absent), 0.3
    assert class_weights("median_frequency", 4, stats) == pytest.approx([3.0, 1.0, 0.0, 0.3])
    # N = 100 pixels, C = 4: N / (C n_c)
    assert class_weights("inverse_frequency", 4, stats) == pytest.approx(
        [2.5, 100 / 120, 0.0, 100 / 240]
    )
    assert class_weights([1, 2, 3, 4], 4, None) == [1.0, 2.0, 3.0, 4.0]
    assert class_weights(None, 4, stats) is None
    with pytest.raises(SegcliError, match="needs the class pixel counts"):
        class_weights("median_frequency", 4, None)
    with pytest.raises(SegcliError, match="loss.class_weights=balanced"):
        class_weights("balanced", 4, stats)


def test_weighted_ce_in_dice_ce_uses_the_training_statistics(batch):
    import numpy as np

    from segcli.data.readers import ClassPixels

    logits, target = batch
    stats = ClassPixels(np.array([10, 30, 60]), np.array([100, 100, 100]))
    cfg = {
        "name": "compound",
        "ignore_index": IGNORE,
        "terms": [{"name": "ce", "weight": 1.0, "class_weights": "median_frequency"}],
    }
    expected = torch.nn.functional.cross_entropy(
        logits, target, weight=torch.tensor([3.0, 1.0, 0.5]), ignore_index=IGNORE
    )
    assert build_loss(cfg, 3, stats)(logits, target).item() == pytest.approx(
        expected.item(), rel=1e-6
    )


# --- the region losses written in losses/region.py, against their formulas in float64 numpy -------


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
    return (
        p,
        y,
        valid,
        (p * y).sum(dims),
        (p * (1 - y) * valid).sum(dims),
        ((1 - p) * y).sum(dims),
        y.sum(dims) > 0,
    )


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
    assert _yaml_loss(name)(logits, target).item() == pytest.approx(
        reference(name, logits, target), rel=1e-5
    )


def test_exp_log_weights_classes_by_training_frequency(batch):
    import numpy as np

    from segcli.data.readers import ClassPixels

    logits, target = batch
    stats = ClassPixels(np.array([10, 30, 60]), np.array([100, 100, 100]))
    weights = [(100 / 10) ** 0.5, (100 / 30) ** 0.5, (100 / 60) ** 0.5]
    loss = _yaml_loss("exp_log", stats=stats)
    assert loss(logits, target).item() == pytest.approx(
        reference("exp_log", logits, target, weights), rel=1e-5
    )


@pytest.mark.parametrize(
    "name",
    [
        "ce",
        "weighted_ce",
        "dice",
        "focal",
        "dice_ce",
        "jaccard",
        "lovasz",
        "tversky",
        *REGION,
        "bce",
        "weighted_bce",
        "balanced_ce",
        "boundary",
        "hausdorff",
        "shape_aware",
    ],
)
def test_gradients_are_finite_at_perfect_and_totally_wrong_predictions(name):
    import numpy as np

    from segcli.data.readers import ClassPixels

    target = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1], [IGNORE, 0, 1, 1]]])  # class 2: empty
    perfect = (
        30
        * torch.nn.functional.one_hot(torch.where(target == IGNORE, 0, target), 3)
        .permute(0, 3, 1, 2)
        .float()
    )
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
    smp_loss = {
        "jaccard": smp.losses.JaccardLoss("multiclass", ignore_index=IGNORE),
        "lovasz": smp.losses.LovaszLoss("multiclass", ignore_index=IGNORE),
        "tversky": smp.losses.TverskyLoss("multiclass", ignore_index=IGNORE, alpha=0.3, beta=0.7),
    }[name]
    assert _yaml_loss(name)(logits, target).item() == pytest.approx(
        smp_loss(logits, target).item(), rel=1e-6
    )


# --- sigmoid (multilabel) forms and class subsets ------------------------------------------------


def _numpy_sigmoid_onehot(logits, target, classes=None):
    import numpy as np

    x = logits.double().numpy()
    t = target.numpy()
    valid = t != IGNORE
    keep = list(range(x.shape[1])) if classes is None else classes
    xs = np.stack([x[:, c][valid] for c in keep])  # (K, P)
    ys = np.stack([(t[valid] == c) for c in keep]).astype(np.float64)
    return 1 / (1 + np.exp(-xs)), ys


@pytest.mark.parametrize("classes", [None, [1], [0, 2]])
def test_bce_family_matches_its_formulas(batch, classes):
    import numpy as np

    logits, target = batch
    p, y = _numpy_sigmoid_onehot(logits, target, classes)
    overrides = [] if classes is None else [f"loss.classes=[{','.join(map(str, classes))}]"]
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert _yaml_loss("bce", *overrides)(logits, target).item() == pytest.approx(
        bce.mean(), rel=1e-5
    )
    weighted = -(2.0 * y * np.log(p) + (1 - y) * np.log(1 - p))  # beta 2 on positives
    assert _yaml_loss("weighted_bce", *overrides)(logits, target).item() == pytest.approx(
        weighted.mean(), rel=1e-5
    )
    beta = 1 - y.mean(1, keepdims=True)  # HED: share of negatives per class
    balanced = -(beta * y * np.log(p) + (1 - beta) * (1 - y) * np.log(1 - p))
    assert _yaml_loss("balanced_ce", *overrides)(logits, target).item() == pytest.approx(
        balanced.mean(), rel=1e-5
    )
    fixed = -(0.8 * y * np.log(p) + 0.2 * (1 - y) * np.log(1 - p))
    assert _yaml_loss("balanced_ce", *overrides, "loss.beta=0.8")(
        logits, target
    ).item() == pytest.approx(fixed.mean(), rel=1e-5)


def test_binary_form_is_bce_on_the_foreground_channel():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 2, 5, 5, generator=g)
    target = torch.randint(0, 2, (2, 5, 5), generator=g)
    target[0, 0] = IGNORE
    valid = target != IGNORE
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        logits[:, 1][valid], (target[valid] == 1).float()
    )
    assert _yaml_loss("bce", "loss.classes=[1]")(logits, target).item() == pytest.approx(
        expected.item(), rel=1e-6
    )


def test_multilabel_dice_matches_the_sigmoid_formula(batch):
    import numpy as np

    logits, target = batch
    p, y = _numpy_sigmoid_onehot(logits, target)
    dice = 2 * (p * y).sum(1) / (p.sum(1) + y.sum(1))
    assert _yaml_loss("dice", "loss.mode=multilabel")(logits, target).item() == pytest.approx(
        np.mean(1 - dice), rel=1e-5
    )
    p, y = _numpy_sigmoid_onehot(logits, target, [2])
    dice = 2 * (p * y).sum() / (p.sum() + y.sum())
    got = _yaml_loss("dice", "loss.mode=multilabel", "loss.classes=[2]")(logits, target).item()
    assert got == pytest.approx(1 - dice, rel=1e-5)


def test_multilabel_wrapper_handles_ignore_like_smp(batch):
    logits, target = batch
    onehot = (
        torch.nn.functional.one_hot(torch.where(target == IGNORE, 0, target), 3)
        .permute(0, 3, 1, 2)
        .float()
    )
    onehot[(target == IGNORE).unsqueeze(1).expand_as(onehot)] = IGNORE
    dice = smp.losses.DiceLoss("multilabel", ignore_index=IGNORE)(logits, onehot)
    assert _yaml_loss("dice", "loss.mode=multilabel")(logits, target).item() == pytest.approx(
        dice.item(), rel=1e-6
    )
    # SMP's "multiclass" focal is one-vs-rest sigmoid focal: the same numbers as multilabel mode
    focal = smp.losses.FocalLoss("multiclass", ignore_index=IGNORE)(logits, target)
    assert _yaml_loss("focal", "loss.mode=multilabel")(logits, target).item() == pytest.approx(
        focal.item(), rel=1e-6
    )


def test_multiclass_class_subsets(batch):
    logits, target = batch
    dice = smp.losses.DiceLoss("multiclass", ignore_index=IGNORE, classes=[1, 2])(logits, target)
    assert _yaml_loss("dice", "loss.classes=[1,2]")(logits, target).item() == pytest.approx(
        dice.item(), rel=1e-6
    )
    import numpy as np

    _, _, _, tp, fp, fn, _ = _reference_stats(logits, target)
    ti = (tp + 1) / (tp + 0.7 * fn + 0.3 * fp + 1)
    got = _yaml_loss("focal_tversky", "loss.classes=[0]")(logits, target).item()
    assert got == pytest.approx((1 - ti[0]) ** 0.75, rel=1e-5)
    assert np.isfinite(got)


def test_mode_and_class_errors():
    with pytest.raises(
        SegcliError, match=r"loss.classes=\[5\]: expected a list of class indices in 0..2"
    ):
        _yaml_loss("dice", "loss.classes=[5]")
    with pytest.raises(SegcliError, match="loss focal in multiclass mode"):
        _yaml_loss("focal", "loss.classes=[1]")
    with pytest.raises(SegcliError, match="loss.mode=softmax: expected multiclass or multilabel"):
        _yaml_loss("dice", "loss.mode=softmax")
    with pytest.raises(SegcliError, match="loss ce has no multilabel form"):
        _yaml_loss("ce", "+loss.mode=multilabel")
    with pytest.raises(SegcliError, match="loss bce is a sigmoid loss"):
        _yaml_loss("bce", "loss.mode=multiclass")


# --- distance-map losses, against hand-computed distance maps -------------------------------------


def test_distance_maps_by_hand():
    import numpy as np

    from segcli.losses.distance import boundary_distance, label_boundary, signed_distance

    row = np.array([[False, False, True, True, True]])
    # outside: distance to the nearest True pixel; inside: -(distance to the nearest False - 1)
    assert signed_distance(row).tolist() == [[2, 1, 0, -1, -2]]
    assert signed_distance(~row).tolist() == [[-1, 0, 1, 2, 3]]
    assert boundary_distance(row).tolist() == [[2, 1, 1, 2, 3]]  # edt(mask) + edt(~mask)
    assert (
        not signed_distance(np.zeros((2, 2), bool)).any()
        and not boundary_distance(np.ones((2, 2), bool)).any()
    )
    labels = np.array([[0, 0, 1], [0, 0, 1]])
    valid = np.array([[True, True, True], [True, False, True]])
    # (1, 2) touches label 0 only through the invalid (1, 1): not a boundary pixel
    assert label_boundary(labels, valid).tolist() == [[False, True, True], [False, False, False]]


def _row_case():
    target = torch.tensor([[[0, 0, 1, 1, 1]]])  # (1, 1, 5)
    logits = torch.tensor(
        [[[[2.0, 1.0, 0.5, -1.0, 0.0]], [[0.0, 0.0, 1.0, 1.0, -2.0]]]]
    )  # (1, 2, 1, 5)
    return logits, target


def test_boundary_loss_by_hand():
    logits, target = _row_case()
    p = logits.double().softmax(1)[0, :, 0]
    phi = torch.tensor([[-1, 0, 1, 2, 3], [2, 1, 0, -1, -2]], dtype=torch.float64)
    cfg = {"name": "boundary", "ignore_index": IGNORE}
    assert build_loss(cfg, 2)(logits, target).item() == pytest.approx(
        ((p * phi).sum() / 10).item(), rel=1e-6
    )
    only1 = build_loss({**cfg, "classes": [1]}, 2)(logits, target).item()
    assert only1 == pytest.approx(((p[1] * phi[1]).sum() / 5).item(), rel=1e-6)


def test_hausdorff_loss_by_hand():
    logits, target = _row_case()
    p = logits.double().softmax(1)[0, :, 0]
    y = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 1, 1, 1]], dtype=torch.float64)
    # argmax per pixel: 0, 0, 1, 1, 0 -> class 1 predicted at [2, 3], class 0 at [0, 1, 4]
    d_true = torch.tensor([[2, 1, 1, 2, 3], [2, 1, 1, 2, 3]], dtype=torch.float64)
    d_pred = torch.tensor(
        [[2, 1, 1, 1, 1], [2, 1, 1, 1, 1]], dtype=torch.float64
    )  # [T,T,F,F,T] and its complement
    expected = ((p - y) ** 2 * (d_true**2 + d_pred**2)).sum() / 10
    assert build_loss({"name": "hausdorff", "ignore_index": IGNORE}, 2)(
        logits, target
    ).item() == pytest.approx(expected.item(), rel=1e-6)


def test_shape_aware_loss_by_hand():
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[:, :, 2:] = 1  # true boundary: columns 1 and 2
    logits = torch.zeros(1, 2, 4, 4)
    logits[:, 1, :, 3] = (
        2.0  # predicted boundary: columns 2 and 3; distances 0 and 1 -> E = 0.5 pixels
    )
    ce = torch.nn.functional.cross_entropy(logits, target, reduction="sum") / 16
    loss = build_loss({"name": "shape_aware", "ignore_index": IGNORE, "normalize": False}, 2)
    assert loss(logits, target).item() == pytest.approx(1.5 * ce.item(), rel=1e-6)
    normalized = build_loss({"name": "shape_aware", "ignore_index": IGNORE}, 2)
    assert normalized(logits, target).item() == pytest.approx(
        (1 + 0.5 / (32**0.5)) * ce.item(), rel=1e-6
    )


def test_class_statistics_are_cached_in_the_run_dir_for_resumes(tmp_path):
    import numpy as np

    from segcli.data.readers import ClassPixels
    from segcli.runs.run_dir import RunDir
    from segcli.training.class_pixels import cached_class_pixels

    run = RunDir(tmp_path / "run")
    first = ClassPixels(np.array([10, 30, 60]), np.array([100, 100, 100]))
    changed = ClassPixels(np.array([50, 50, 0]), np.array([100, 100, 0]))
    assert cached_class_pixels(run, first, 3) is first
    saved = cached_class_pixels(run, changed, 3, resume=True)  # the data changed before the resume
    assert saved.pixels.tolist() == [10, 30, 60] and saved.present.tolist() == [100, 100, 100]
    assert cached_class_pixels(run, changed, 3) is changed  # a new run counts again
