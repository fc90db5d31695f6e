import math

import pytest
import torch

from segcli.metrics import ConfusionMatrix


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
    cm.update(torch.tensor([[1]]), torch.tensor([[0]]))                    # batch IoU_0 = 0
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
