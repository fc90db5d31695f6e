
import pytest
import torch

from segcli.engine import LrSchedule, StepContext, evaluate, forward_at_scale, resolve_amp, train_one_epoch


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
    s = LrSchedule("poly", total_steps=1000, max_seconds=60)
    assert s.progress(step=10, elapsed=30) == pytest.approx(0.5)   # time dominates
    assert s.progress(step=900, elapsed=6) == pytest.approx(0.9)   # steps dominate
    assert s.progress(step=0, elapsed=600) == 1.0


def test_apply_sets_every_group_from_its_initial_lr():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p], "lr": 0.1}, {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 1.0}])
    s = LrSchedule("poly", total_steps=4, power=1.0)
    s.apply(opt, step=2, elapsed=0)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05, 0.5])


def _toy(n=6):
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 2, 1)
    batches = [{"image": torch.randn(2, 3, 4, 4), "mask": torch.randint(0, 2, (2, 4, 4))} for _ in range(n)]
    return model, batches


def test_train_one_epoch_learns_and_stops_when_the_budget_is_spent():
    model, batches = _toy()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ctx = StepContext(torch.device("cpu"))
    res = train_one_epoch(model, batches, torch.nn.CrossEntropyLoss(), opt, ctx, LrSchedule("constant", 6), 0,
                          clock=lambda: 0.0)
    assert res.steps == 6 and res.images == 12 and not res.stopped
    clock = iter([0.0, 0.0, 5.0, 100.0] + [100.0] * 20)
    res = train_one_epoch(model, batches, torch.nn.CrossEntropyLoss(), opt, ctx,
                          LrSchedule("constant", 6, max_seconds=10), 0, clock=lambda: next(clock))
    assert res.stopped and res.steps == 2


def test_nan_loss_raises():
    model, batches = _toy(1)
    ctx = StepContext(torch.device("cpu"))
    nan_loss = lambda logits, target: logits.sum() * float("nan")  # noqa: E731
    with pytest.raises(FloatingPointError, match="step 1"):
        train_one_epoch(model, batches, nan_loss, torch.optim.SGD(model.parameters(), lr=0.1), ctx,
                        LrSchedule("constant", 1), 0, clock=lambda: 0.0)


def test_evaluate_counts_every_pixel_once():
    model, batches = _toy(3)
    res = evaluate(model, batches, 2, 255, StepContext(torch.device("cpu")), torch.nn.CrossEntropyLoss())
    assert res.images == 6 and res.scores.pixels == 6 * 16 and res.loss is not None
    assert int(res.matrix.matrix.sum()) == 96


def test_amp_resolution():
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) is None and resolve_amp(False, cpu) is None
    assert resolve_amp("bf16", cpu) == torch.bfloat16


def test_forward_at_scale_returns_logits_at_the_input_size():
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 4, 1)  # pointwise: a smooth image gives nearly the same logits at any scale
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 96), torch.linspace(0, 1, 128), indexing="ij")
    x = torch.stack([yy, xx, yy * xx])[None].repeat(2, 1, 1, 1)
    assert torch.equal(forward_at_scale(model, x, 1.0), model(x))
    out = forward_at_scale(model, x, 0.5)
    assert out.shape == (2, 4, 96, 128)
    assert torch.allclose(out[..., 2:-2, 2:-2], model(x)[..., 2:-2, 2:-2], atol=0.02)
    assert forward_at_scale(model, x[..., :50, :70], 0.67).shape == (2, 4, 50, 70)
