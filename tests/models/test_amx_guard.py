"""The AMX bf16 weight-gradient guard (``amx_guard``), the crash-map script and the suite's crash
isolation (``isolation.run_isolated``). The crash itself needs an Intel CPU with AMX: the repro test
runs only where /proc/cpuinfo has ``amx_bf16``; everything else runs on any CPU with the guard
forced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO
from torch import nn

from segcli.errors import SegcliError
from segcli.models.amx_guard import (
    Float32UnderCpuBf16Conv2d,
    guard_amx_bf16_convs,
    guard_wanted,
    in_crash_region,
)

HAS_AMX = Path("/proc/cpuinfo").exists() and " amx_bf16" in Path("/proc/cpuinfo").read_text()


@pytest.mark.parametrize(
    ("cin", "cout", "k", "groups", "guarded"),
    [
        (4096, 4, 1, 1, True),
        (4096, 1, 1, 1, True),
        (4096, 15, 3, 1, True),
        (8192, 8, 1, 1, True),
        (4096, 16, 1, 1, False),
        (4096, 21, 1, 1, False),
        (2048, 4, 1, 1, False),
        (4096, 8, 1, 8, False),
    ],
)
def test_the_region_is_4096_or_more_inputs_to_fewer_than_16_outputs_ungrouped(
    cin, cout, k, groups, guarded
):
    assert in_crash_region(nn.Conv2d(cin, cout, k, groups=groups)) is guarded


def test_a_guarded_conv_runs_float32_under_cpu_bf16_autocast_and_nothing_else_changes():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(4096, 4, 1), nn.Conv2d(4, 4, 3, padding=1))
    reference = nn.Sequential(nn.Conv2d(4096, 4, 1), nn.Conv2d(4, 4, 3, padding=1))
    reference.load_state_dict(net.state_dict())
    keys = list(net.state_dict())
    assert guard_amx_bf16_convs(net, force=True) == ["0"]
    assert type(net[0]) is Float32UnderCpuBf16Conv2d and type(net[1]) is nn.Conv2d
    assert list(net.state_dict()) == keys
    x = torch.randn(2, 4096, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        guarded_out, bf16_out = net[0](x), reference[0](x)
        assert net[1](guarded_out).dtype == torch.bfloat16  # the next layer is bf16 as before
    assert guarded_out.dtype == torch.float32 and bf16_out.dtype == torch.bfloat16
    assert torch.equal(guarded_out, reference[0](x))  # exactly the float32 convolution
    assert not torch.equal(guarded_out, bf16_out.float())
    # the weight gradient is the float32 one, not bf16's
    with torch.autocast("cpu", dtype=torch.bfloat16):
        net[0](x).float().square().sum().backward()
    reference[0](x).square().sum().backward()
    assert torch.equal(net[0].weight.grad, reference[0].weight.grad)
    # outside autocast the guarded module is the plain convolution
    assert torch.equal(net[0](x), reference[0](x))


def test_the_guard_follows_the_setting_and_build_model_applies_it(monkeypatch):
    from segcli.config import compose_config, to_plain
    from segcli.models.build import build_model

    assert guard_amx_bf16_convs(nn.Conv2d(4096, 4, 1), force=False) == []
    cfg = to_plain(compose_config(["model=fcn8s"]))["model"]
    monkeypatch.setenv("SEGCLI_AMX_GUARD", "on")
    assert guard_wanted() and type(build_model(cfg, 11).score_fr) is Float32UnderCpuBf16Conv2d
    assert type(build_model(cfg, 21).score_fr) is nn.Conv2d  # VOC's 21 classes: outside the region
    monkeypatch.setenv("SEGCLI_AMX_GUARD", "off")
    assert type(build_model(cfg, 11).score_fr) is nn.Conv2d
    monkeypatch.setenv("SEGCLI_AMX_GUARD", "auto")
    monkeypatch.setenv(
        "ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16"
    )  # AMX switched off: nothing to guard
    assert not guard_wanted()
    monkeypatch.setenv("SEGCLI_AMX_GUARD", "maybe")
    with pytest.raises(
        SegcliError, match=r"^SEGCLI_AMX_GUARD=maybe: expected one of auto, on, off$"
    ):
        guard_wanted()


REPRO = """
import torch
from segcli.models.amx_guard import guard_amx_bf16_convs
conv = torch.nn.Conv2d(4096, 4, 1)
assert guard_amx_bf16_convs(conv) == [""], "auto must guard on an AMX CPU"
for _ in range(10):
    x = torch.randn(4, 4096, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    y.float().sum().backward()
print("ok")
"""


@pytest.mark.skipif(not HAS_AMX, reason="needs an Intel CPU with AMX (amx_bf16 in /proc/cpuinfo)")
def test_the_issues_repro_runs_clean_through_the_guard_on_an_amx_cpu():
    env = {
        k: v for k, v in os.environ.items() if k not in ("SEGCLI_AMX_GUARD", "ONEDNN_MAX_CPU_ISA")
    }
    r = subprocess.run(
        [sys.executable, "-c", REPRO],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stderr[-2000:])


def test_the_crash_map_records_a_dead_worker_and_goes_on(tmp_path):
    env = {**os.environ, "AMX_MAP_SIMULATE_CRASH": "1 4096 4"}
    r = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "amx_conv_map.py"),
            "--kernels",
            "1",
            "--steps",
            "1",
            "--json",
            str(tmp_path / "map.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    cells = {
        (c["in"], c["out"]): c["outcome"]
        for c in json.loads((tmp_path / "map.json").read_text())["cells"]
    }
    assert len(cells) == 6 * 9 and cells.pop((4096, 4)) == "SIGABRT"
    assert set(cells.values()) == {"ok"}  # the shapes after the crash ran in a new worker
    assert "in 4096 | ok | ok | SIGABRT | ok" in r.stdout


ISOLATED_TESTS = """
import os
import pytest
from isolation import run_isolated

def add(a, b):
    return a + b

@pytest.mark.parametrize("what", ["abort", "fine", "assert"])
def test_arch(what):
    if what == "abort":
        run_isolated(os.abort, label="arch[abort]")
    elif what == "assert":
        run_isolated(divmod, 1, 0, label="arch[assert]")
    else:
        assert run_isolated(add, 2, 3, label="arch[fine]") == 5
"""


def test_a_native_abort_in_one_isolated_test_is_one_failed_test(pytester):
    pytester.makeconftest(f"import sys\nsys.path.insert(0, {str(REPO / 'tests')!r})\n")
    pytester.makepyfile(test_battery=ISOLATED_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=1, failed=2)
    out = result.stdout.str()
    assert "arch[abort]: the child process died of a native crash (signal SIGABRT)" in out
    assert "arch[assert]: failed in its child process: ZeroDivisionError" in out
