import math

import pytest
import torch

from segcli.metrics.confusion import ConfusionMatrix


def test_matrix_and_scores_match_hand_computation():
    # truth / prediction over 8 pixels, 3 classes, one ignored pixel (value 9)
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 9]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 1]])
    cm = ConfusionMatrix(3, ignore_index=9)
    cm.update(pred[None], target[None])
    assert cm.matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 2]]
    s = cm.compute()
    # class 0: TP 1, FP 1, FN 1 -> IoU 1/3, Dice 2/4; class 1: TP 2 FP 1 FN 0 -> 2/3, 4/5;
    # class 2: TP 2 FP 0 FN 1 -> 2/3, 4/5
    assert s.per_class_iou == pytest.approx([1 / 3, 2 / 3, 2 / 3])
    assert s.per_class_dice == pytest.approx([0.5, 0.8, 0.8])
    assert s.miou == pytest.approx((1 / 3 + 2 / 3 + 2 / 3) / 3)
    assert s.mdice == pytest.approx(0.7)
    assert s.pixel_accuracy == pytest.approx(5 / 7)
    assert s.pixels == 7


def test_accumulates_over_batches_not_averaged_per_batch():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([[0, 0, 0, 0]]), torch.tensor([[0, 0, 0, 0]]))  # batch IoU_0 = 1
    cm.update(torch.tensor([[1]]), torch.tensor([[0]]))  # batch IoU_0 = 0
    s = cm.compute()
    assert s.per_class_iou[0] == pytest.approx(4 / 5)  # a per-batch mean would give 0.5


def test_class_absent_from_truth_and_prediction_is_nan_and_excluded():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([[0, 1]]), torch.tensor([[0, 1]]))
    s = cm.compute()
    assert math.isnan(s.per_class_iou[2]) and math.isnan(s.per_class_dice[2])
    assert s.miou == 1.0 and s.mdice == 1.0
    d = s.as_dict(["a", "b", "c"])
    assert d["per_class_iou"] == {"a": 1.0, "b": 1.0, "c": None}


def test_class_absent_from_truth_but_predicted_scores_zero():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([[0, 2]]), torch.tensor([[0, 0]]))
    s = cm.compute()
    assert s.per_class_iou[2] == 0.0
    assert s.miou == pytest.approx((0.5 + 0.0) / 2)  # class 1 absent from both: excluded


def test_rejects_targets_outside_classes_and_shape_mismatch():
    cm = ConfusionMatrix(2, ignore_index=255)
    with pytest.raises(ValueError, match="outside 0..1"):
        cm.update(torch.tensor([[0, 3]]), torch.tensor([[0, 3]]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 3, dtype=torch.long))
    cm.update(torch.tensor([[0, 1]]), torch.tensor([[0, 255]]))  # ignored pixel: fine
    assert int(cm.matrix.sum()) == 1


def test_merge_sums_matrices():
    a, b = ConfusionMatrix(2), ConfusionMatrix(2)
    a.update(torch.tensor([[0]]), torch.tensor([[0]]))
    b.update(torch.tensor([[1]]), torch.tensor([[0]]))
    a.merge(b)
    assert a.matrix.tolist() == [[1, 1], [0, 0]]


def test_accuracy_and_frequency_weighted_iou_by_hand():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 9]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 1]])
    cm = ConfusionMatrix(3, ignore_index=9)
    cm.update(pred[None], target[None])
    s = cm.compute()
    # recall: class 0 1/2, class 1 2/2, class 2 2/3; true pixel shares 2/7, 2/7, 3/7
    assert s.per_class_accuracy == pytest.approx([0.5, 1.0, 2 / 3])
    assert s.mean_accuracy == pytest.approx((0.5 + 1 + 2 / 3) / 3)
    assert s.fwiou == pytest.approx(2 / 7 * 1 / 3 + 2 / 7 * 2 / 3 + 3 / 7 * 2 / 3)


def _random_batches(seed: int, classes: int = 4):
    g = torch.Generator().manual_seed(seed)
    for _ in range(3):
        target = torch.randint(0, classes, (2, 6, 7), generator=g)
        target[target == 3] = 0 if seed % 2 else 3  # class 3 sometimes absent from the truth
        pred = torch.where(
            torch.rand(2, 6, 7, generator=g) < 0.6,
            target,
            torch.randint(0, classes - 1, (2, 6, 7), generator=g),
        )
        target[torch.rand(2, 6, 7, generator=g) < 0.1] = 255
        yield pred, target


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_protocols_agree_with_smp_metrics_on_random_inputs_with_ignore(seed):
    import segmentation_models_pytorch as smp

    from segcli.metrics.confusion import protocols

    cm = ConfusionMatrix(4, ignore_index=255, per_image=True)
    stats = []
    for pred, target in _random_batches(seed):
        cm.update(pred, target)
        stats.append(
            smp.metrics.get_stats(pred, target, mode="multiclass", num_classes=4, ignore_index=255)
        )
    tp, fp, fn, tn = (torch.cat(x) for x in zip(*stats))
    table = protocols(cm)
    # SMP "macro": stats summed over images, per-class score, mean over classes (absent ->
    # zero_division)
    assert table["dataset_absent_as_1"]["miou"] == pytest.approx(
        smp.metrics.iou_score(tp, fp, fn, tn, "macro").item()
    )
    assert table["dataset_absent_as_1"]["mdice"] == pytest.approx(
        smp.metrics.f1_score(tp, fp, fn, tn, "macro").item()
    )
    assert table["micro"]["miou"] == pytest.approx(
        smp.metrics.iou_score(tp, fp, fn, tn, "micro").item()
    )
    assert table["micro"]["mdice"] == pytest.approx(
        smp.metrics.f1_score(tp, fp, fn, tn, "micro").item()
    )
    # per image: SMP's per-image per-class scores with absent classes as NaN, then our nan-aware
    # means
    iou = smp.metrics.iou_score(tp, fp, fn, tn, None, zero_division=float("nan"))
    dice = smp.metrics.f1_score(tp, fp, fn, tn, None, zero_division=float("nan"))
    assert table["per_image"]["miou"] == pytest.approx(iou.nanmean(1).nanmean().item())
    assert table["per_image"]["mdice"] == pytest.approx(dice.nanmean(1).nanmean().item())
    present = (tp + fp + fn).sum(0) > 0
    macro = smp.metrics.iou_score(tp.sum(0), fp.sum(0), fn.sum(0), tn.sum(0), None)
    assert table["dataset"]["miou"] == pytest.approx(macro[present].mean().item())
    assert table["dataset_no_background"]["miou"] == pytest.approx(
        macro[1:][present[1:]].mean().item()
    )
    macro_dice = smp.metrics.f1_score(tp.sum(0), fp.sum(0), fn.sum(0), tn.sum(0), None)
    assert table["dataset"]["mdice"] == pytest.approx(macro_dice[present].mean().item())
    assert table["dataset_no_background"]["mdice"] == pytest.approx(
        macro_dice[1:][present[1:]].mean().item()
    )
    freq = (tp + fn).sum(0).double() / (tp + fn).sum()
    assert table["frequency_weighted"]["miou"] == pytest.approx(
        (freq * macro.double())[present].sum().item()
    )
    assert table["frequency_weighted"]["mdice"] == pytest.approx(
        (freq * macro_dice.double())[present].sum().item()
    )
    recall = smp.metrics.recall(tp.sum(0), fp.sum(0), fn.sum(0), tn.sum(0), None)
    truth = (tp + fn).sum(0) > 0
    assert cm.compute().mean_accuracy == pytest.approx(recall[truth].mean().item())


def test_edge_cases_absent_from_truth_from_prediction_and_from_both():
    cm = ConfusionMatrix(4, per_image=True)
    # class 1: only predicted (absent from truth); class 2: only in truth (never predicted); class
    # 3: absent
    cm.update(torch.tensor([[0, 1, 0, 0]]), torch.tensor([[0, 0, 2, 0]]))
    s = cm.compute()
    assert (
        s.per_class_iou[1] == 0.0 and s.per_class_iou[2] == 0.0 and math.isnan(s.per_class_iou[3])
    )
    assert math.isnan(s.per_class_accuracy[1]) and s.per_class_accuracy[2] == 0.0
    assert s.miou == pytest.approx((2 / 4 + 0 + 0) / 3) and s.per_image_miou == pytest.approx(
        s.miou
    )


# --- HD95 against a brute-force reference
# ----------------------------------------------------------


def _brute_hd95(pred, truth):
    """medpy's hd95 by brute force: surface = pixels with a 4-neighbour outside (image edge counts),
    all pairwise distances, nearest per point, both directions pooled, 95th percentile."""
    import numpy as np

    def border(m):
        padded = np.pad(m, 1)
        inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
        return np.argwhere(m & ~inner)

    a, b = border(pred).astype(float), border(truth).astype(float)
    d = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    return np.percentile(np.hstack([d.min(1), d.min(0)]), 95)


@pytest.mark.parametrize("seed", range(5))
def test_hd95_matches_brute_force_on_random_masks(seed):
    import numpy as np

    from segcli.metrics.surface import hd95

    rng = np.random.default_rng(seed)
    compared = 0
    for _ in range(10):
        h, w = rng.integers(3, 20, size=2)
        pred, truth = (
            rng.random((h, w)) < rng.uniform(0.2, 0.8),
            rng.random((h, w)) < rng.uniform(0.2, 0.8),
        )
        if pred.any() and truth.any():  # on 9+ pixels at p >= 0.2 nearly always
            assert hd95(pred, truth) == pytest.approx(_brute_hd95(pred, truth))
            compared += 1
    assert compared >= 8


def test_hd95_by_hand_and_edge_cases():
    import math

    import numpy as np

    from segcli.metrics.surface import HausdorffAccumulator, hd95

    truth = np.zeros((5, 9), bool)
    truth[1:4, 1:4] = True
    shifted = np.roll(truth, 3, axis=1)  # the same square, 3 pixels to the right
    assert hd95(truth, truth) == 0.0
    assert hd95(shifted, truth) == pytest.approx(_brute_hd95(shifted, truth))
    assert (
        2.0 <= hd95(shifted, truth) <= 3.0
    )  # surface pixels move by 3; the nearest other surface is 0..3 away
    assert math.isnan(hd95(np.zeros((5, 9), bool), truth)) and math.isnan(
        hd95(truth, np.zeros((5, 9), bool))
    )

    # accumulator: binary task -> class 1; ignored pixels drop predictions there; absent images left
    # out
    acc = HausdorffAccumulator(2, ignore_index=255)
    target = torch.zeros(3, 5, 9, dtype=torch.long)
    target[0][torch.from_numpy(truth)] = 1
    target[1][torch.from_numpy(truth)] = 1
    pred = target.clone()
    pred[1] = 0
    pred[1][torch.from_numpy(shifted)] = 1
    target[1][:, 7:] = 255  # part of the shifted prediction falls on ignored pixels
    pred[2, 0, 0] = 1  # class 1 absent from image 2's truth: no HD95
    acc.update(pred, target)
    out = acc.compute(["bg", "fg"])
    cut = shifted.copy()
    cut[:, 7:] = False
    assert out["hd95_images"] == {"fg": 2}
    assert out["per_class_hd95"]["fg"] == pytest.approx((0.0 + _brute_hd95(cut, truth)) / 2)
    assert out["hd95"] == out["per_class_hd95"]["fg"]
    assert HausdorffAccumulator(4, 255).classes == [0, 1, 2, 3]
