"""Autocast precision: the CPU bf16 detection, what ``trainer.amp=auto`` resolves to, and a bf16
run end to end (float32 checkpoints, eval in float32 against bf16, resume across the switch)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import FAST, LEARNS, segcli, segnet_overrides

from segcli import runtime
from segcli.errors import SegcliError
from segcli.runtime import cpu_native_bf16, resolve_amp

CPU = torch.device("cpu")


@pytest.fixture
def x86(monkeypatch):
    """An x86 machine whose CPU capabilities the test sets: ``x86(amx=..., avx512_bf16=...)``."""
    monkeypatch.setattr(runtime.platform, "machine", lambda: "x86_64")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)

    def set_caps(amx: bool, avx512_bf16: bool) -> None:
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)

    return set_caps


def test_native_bf16_is_avx512_bf16_or_amx(x86):
    x86(amx=False, avx512_bf16=True)
    assert cpu_native_bf16() == (True, "AVX512_BF16")
    x86(amx=True, avx512_bf16=True)
    assert cpu_native_bf16() == (True, "AMX")
    x86(amx=False, avx512_bf16=False)
    native, why = cpu_native_bf16()
    assert not native and why.startswith("no AVX512_BF16 or AMX (CPU capability ")


def test_a_onednn_isa_limit_below_bf16_counts_as_no_native_bf16(x86, monkeypatch):
    x86(amx=True, avx512_bf16=True)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core")
    assert cpu_native_bf16() == (False, "ONEDNN_MAX_CPU_ISA=AVX512_CORE excludes bf16 instructions")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert cpu_native_bf16() == (True, "AMX")


def test_arm_asks_onednn(monkeypatch):
    monkeypatch.setattr(runtime.platform, "machine", lambda: "aarch64")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(
        torch.cpu, "_is_avx512_bf16_supported", lambda: True
    )  # must not be asked on Arm
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert cpu_native_bf16() == (True, "Arm BF16")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert cpu_native_bf16() == (False, "no Arm BF16 extension")


def test_auto_is_bf16_on_a_native_cpu_and_float32_elsewhere(x86):
    x86(amx=False, avx512_bf16=True)
    native = resolve_amp("auto", CPU)
    assert native.dtype == torch.bfloat16 and native.name == "bfloat16"
    assert native.as_dict() == {
        "amp": "bfloat16",
        "setting": "auto",
        "reason": "CPU has native bf16: AVX512_BF16",
    }
    x86(amx=False, avx512_bf16=False)
    plain = resolve_amp("auto", CPU)
    assert plain.dtype is None and plain.name == "float32"
    assert plain.reason.startswith("CPU has no native bf16: no AVX512_BF16 or AMX")
    assert plain.describe().startswith("float32 (amp=auto: CPU has no native bf16")


def test_forced_settings_win_over_the_hardware(x86):
    x86(amx=False, avx512_bf16=False)
    forced = resolve_amp("bf16", CPU)
    assert forced.dtype == torch.bfloat16 and "emulated on this CPU" in forced.reason
    assert resolve_amp("fp16", CPU).dtype == torch.float16
    x86(amx=True, avx512_bf16=True)
    for off in (False, None, "false", "off"):
        assert resolve_amp(off, CPU).dtype is None
    assert resolve_amp("bf16", CPU).reason == "bf16 asked for"
    with pytest.raises(
        SegcliError, match=r"trainer.amp=fp8: expected one of auto, bf16, fp16, false"
    ):
        resolve_amp("fp8", CPU)


def test_autocast_covers_the_forward_pass_and_the_loss_is_float32(x86):
    """TrainStep's loss sees float32 logits although the convolution ran in bf16."""
    from segcli.runtime import StepContext
    from segcli.training.engine import Budget, TrainStep
    from segcli.training.optim import LrSchedule

    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, logits, target):
            seen.append(logits.dtype)
            return torch.nn.functional.cross_entropy(logits, target)

    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 2, 3, padding=1)
    ctx = StepContext(CPU, torch.bfloat16)
    step = TrainStep(
        model,
        Recorder(),
        torch.optim.SGD(model.parameters(), lr=0.1),
        LrSchedule("constant", 10),
        ctx,
    )
    batch = {"image": torch.randn(2, 3, 8, 8), "mask": torch.randint(0, 2, (2, 8, 8))}
    with ctx.autocast():
        assert model(batch["image"]).dtype == torch.bfloat16  # the forward pass does run in bf16
    step(batch, 0, Budget(None))
    assert seen == [torch.float32]
    assert model.weight.dtype == torch.float32 and torch.isfinite(model.weight).all()


def _float_tensors(tree, path=""):
    """(path, tensor) of every floating-point tensor in a nested checkpoint dict/list."""
    if isinstance(tree, torch.Tensor):
        if tree.is_floating_point():
            yield path, tree
    elif isinstance(tree, dict):
        for key, value in tree.items():
            yield from _float_tensors(value, f"{path}.{key}")
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            yield from _float_tensors(value, f"{path}[{i}]")


def test_bf16_run_saves_float32_checkpoints_evals_alike_in_float32_and_resumes_in_float32(
    segnet_root, tmp_path
):
    run = tmp_path / "run"
    common = [*segnet_overrides(segnet_root), *FAST, *LEARNS]
    r = segcli(
        "train",
        *common,
        "trainer.epochs=10",
        "trainer.amp=bf16",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "segcli: bfloat16 autocast (amp=bf16: bf16 asked for" in r.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["precision"]["amp"] == "bfloat16" and summary["precision"]["setting"] == "bf16"
    assert (
        summary["val"]["miou"] >= 0.6
    )  # it learned the task: predictions depend on the input (constant: <= 0.12)
    for name in ("best.pt", "last.pt"):
        ckpt = torch.load(run / "checkpoints" / name, map_location="cpu", weights_only=True)
        tensors = dict(_float_tensors({"model": ckpt["model"], "optimizer": ckpt.get("optimizer")}))
        assert len(tensors) > 100  # weights (and Adam's moments in last.pt)
        assert {t.dtype for t in tensors.values()} == {torch.float32}
        assert all(torch.isfinite(t).all() for t in tensors.values())

    scores = {}
    for amp in ("bf16", "false"):
        r = segcli(
            "eval",
            str(run / "checkpoints" / "best.pt"),
            "--amp",
            amp,
            "--json",
            f"{amp}.json",
            cwd=tmp_path,
        )
        assert r.returncode == 0, r.stderr
        scores[amp] = json.loads((tmp_path / f"{amp}.json").read_text())
    assert (
        scores["bf16"]["precision"]["amp"] == "bfloat16"
        and scores["false"]["precision"]["amp"] == "float32"
    )
    assert "precision: float32 (amp=false: float32 asked for)" in r.stdout
    assert scores["bf16"]["miou"] == pytest.approx(
        summary["val"]["miou"], abs=1e-9
    )  # validation's own path
    assert scores["false"]["miou"] == pytest.approx(scores["bf16"]["miou"], abs=0.01)

    # ONEDNN_MAX_CPU_ISA=AVX2 makes any x86 CPU one without native bf16 (oneDNN itself obeys it):
    # auto computes in float32 there and says why; predict follows --amp; a bad setting is one line,
    # exit 2
    r = segcli(
        "eval",
        str(run / "checkpoints" / "best.pt"),
        "--amp",
        "auto",
        "--json",
        "limited.json",
        cwd=tmp_path,
        env={"ONEDNN_MAX_CPU_ISA": "AVX2"},
    )
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "limited.json").read_text())["precision"] == {
        "amp": "float32",
        "setting": "auto",
        "reason": "CPU has no native bf16: ONEDNN_MAX_CPU_ISA=AVX2 excludes bf16 instructions",
    }
    r = segcli(
        "predict",
        str(segnet_root / "test"),
        "-c",
        str(run / "checkpoints" / "best.pt"),
        "--amp",
        "bf16",
        "-o",
        "out",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert (
        "bfloat16 autocast (amp=bf16" in r.stdout
        and len(list((tmp_path / "out").glob("test?.png"))) == 2
    )
    r = segcli("eval", str(run / "checkpoints" / "best.pt"), "--amp", "fp8", cwd=tmp_path)
    assert (
        r.returncode == 2
        and r.stderr.strip()
        == "segcli: error: trainer.amp=fp8: expected one of auto, bf16, fp16, false"
    )

    # the same run continues in float32 (another machine, or amp switched off): allowed, recorded
    r = segcli(
        "train",
        "--resume",
        str(run),
        "--allow-changes",
        "trainer.epochs=11",
        "trainer.amp=false",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "segcli: float32 (amp=false: float32 asked for)" in r.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 11 and summary["precision"]["amp"] == "float32"
    assert summary["resumes"] == [
        {
            "epoch": 11,
            "step": 20,
            "changes": {"trainer.epochs": [10, 11], "trainer.amp": ["bf16", False]},
            "amp": "float32",
        }
    ]
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == list(range(1, 12)) and lines[-1]["train_loss"] > 0
