import pytest
import torch
from helpers import toy_model_and_batches

from segcli.runtime import StepContext
from segcli.training.engine import Budget, TrainStep, train_one_epoch
from segcli.training.optim import LrSchedule


def test_poly_schedule_follows_its_formula_after_warmup():
    s = LrSchedule("poly", total_steps=100, warmup_fraction=0.1, power=0.9)
    assert s.factor(0.0) == 0.0 and s.factor(0.05) == pytest.approx(0.5)
    q = (0.55 - 0.1) / 0.9
    assert s.factor(0.55) == pytest.approx((1 - q) ** 0.9)
    assert s.factor(1.0) == pytest.approx(0.0)


def test_cosine_and_onecycle_and_min_lr():
    s = LrSchedule("cosine", total_steps=10, min_lr_ratio=0.1)
    assert s.factor(0.5) == pytest.approx(0.1 + 0.9 * 0.5)
    assert s.factor(1.0) == pytest.approx(0.1)
    one = LrSchedule("onecycle", total_steps=10, warmup_fraction=0.3)
    assert one.factor(0.0) == pytest.approx(1 / 25) and one.factor(0.3) == pytest.approx(1.0)


def test_progress_is_the_larger_of_steps_and_time():
    s = LrSchedule("poly", total_steps=1000)
    assert s.progress(step=10, elapsed=30, max_seconds=60) == pytest.approx(0.5)  # time dominates
    assert s.progress(step=900, elapsed=6, max_seconds=60) == pytest.approx(0.9)  # steps dominate
    assert s.progress(step=0, elapsed=600, max_seconds=60) == 1.0
    assert s.progress(step=10, elapsed=600) == pytest.approx(0.01)  # no budget: steps alone


def test_apply_sets_every_group_from_its_initial_lr():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD(
        [{"params": [p], "lr": 0.1}, {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 1.0}]
    )
    s = LrSchedule("poly", total_steps=4, power=1.0)
    s.apply(opt, step=2, elapsed=0)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05, 0.5])


def test_train_one_epoch_equals_a_plain_torch_loop_and_stops_when_the_budget_is_spent():
    import copy

    model, batches = toy_model_and_batches()
    twin = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ctx = StepContext(torch.device("cpu"))
    step = TrainStep(model, torch.nn.CrossEntropyLoss(), opt, LrSchedule("constant", 6), ctx)
    seen = []
    res = train_one_epoch(step, batches, Budget(None), on_step=lambda r, loss: seen.append(loss))
    # the same six SGD steps written out by hand
    twin_opt, losses = torch.optim.SGD(twin.parameters(), lr=0.1), []
    for b in batches:
        loss = torch.nn.functional.cross_entropy(twin(b["image"]), b["mask"])
        twin_opt.zero_grad()
        loss.backward()
        twin_opt.step()
        losses.append(loss.item())
    assert seen == pytest.approx(losses, rel=1e-6) and losses[-1] < losses[0]  # it learns
    assert res.steps == 6 and res.images == 12 and not res.stopped
    assert res.loss == pytest.approx(sum(losses) / 6, rel=1e-6)
    assert all(torch.allclose(a, b) for a, b in zip(model.parameters(), twin.parameters()))
    clock = iter([0.0, 0.0, 5.0, 100.0] + [100.0] * 20)
    res = train_one_epoch(step, batches, Budget(10.0, clock=lambda: next(clock)))
    assert res.stopped == "max_minutes" and res.steps == 2


def test_the_schedule_sets_the_lr_of_each_step():
    model, batches = toy_model_and_batches(4)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    lrs = []
    step = TrainStep(
        model,
        torch.nn.CrossEntropyLoss(),
        opt,
        LrSchedule("poly", 4, power=1.0),
        StepContext(torch.device("cpu")),
    )
    train_one_epoch(
        step, batches, Budget(None), on_step=lambda r, loss: lrs.append(opt.param_groups[0]["lr"])
    )
    assert lrs == pytest.approx([1.0, 0.75, 0.5, 0.25])  # (1 - step/4) before steps 0..3


def test_nan_loss_raises():
    model, batches = toy_model_and_batches(1)
    ctx = StepContext(torch.device("cpu"))
    nan_loss = lambda logits, target: logits.sum() * float("nan")
    with pytest.raises(FloatingPointError, match="step 1"):
        train_one_epoch(
            TrainStep(
                model,
                nan_loss,
                torch.optim.SGD(model.parameters(), lr=0.1),
                LrSchedule("constant", 1),
                ctx,
            ),
            batches,
            Budget(None),
        )
