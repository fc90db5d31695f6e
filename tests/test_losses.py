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


@pytest.mark.parametrize("name", ["ce", "dice", "focal", "dice_ce"])
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
