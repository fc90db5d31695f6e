"""Map where torch's bf16 convolution weight gradient crashes on this CPU (the AMX heap corruption).

    python scripts/amx_conv_map.py # 1x1 and 3x3, in 256..8192 x out 1..32: a markdown table python
    scripts/amx_conv_map.py --json map.json --kernels 1 --steps 10 python scripts/amx_conv_map.py
    --guarded # the same through segcli's guard (amx_guard): all "ok"

Each shape runs ``--steps`` forward/backward steps of ``Conv2d(IN, OUT, K).to(bfloat16)`` on
``(4, IN, 3, 3)`` bf16 input (the issue's repro), in a worker subprocess: a native abort ends only
that worker, the shape is recorded with its signal, and a new worker takes the next shape. With
``--guarded`` the convolution keeps float32 weights under CPU bf16 autocast, as segcli trains, and
passes through ``amx_guard.guard_amx_bf16_convs`` (forced on), so the table shows what segcli runs.

Cells: ``ok``, ``SIGABRT``/``SIGSEGV``/... (the worker died), ``error`` (a Python exception). The
header names torch, the CPU model and whether it has AMX (``amx_bf16`` in /proc/cpuinfo).
``AMX_MAP_SIMULATE_CRASH="K IN OUT"`` makes the worker abort on that shape (to test the script on
any CPU).
"""

from __future__ import annotations

import argparse
import json
import platform
import signal
import subprocess
import sys
from pathlib import Path

IN_CHANNELS = (256, 512, 1024, 2048, 4096, 8192)
OUT_CHANNELS = (1, 2, 4, 8, 12, 15, 16, 21, 32)

WORKER = r"""
import os, sys, torch
guarded = sys.argv[1] == "1"; steps = int(sys.argv[2])
# "K IN OUT": abort there (tests the restarts)
simulated = os.environ.get("AMX_MAP_SIMULATE_CRASH", "")
if guarded:
    from segcli.models.amx_guard import guard_amx_bf16_convs
for line in sys.stdin:
    k, cin, cout = map(int, line.split())
    if line.strip() == simulated:
        os.abort()
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(cin, cout, k, padding=k // 2)
    if guarded:
        guard_amx_bf16_convs(conv, force=True)
    else:
        conv = conv.to(torch.bfloat16)
    try:
        for _ in range(steps):
            x = torch.randn(4, cin, 3, 3, dtype=torch.float32 if guarded else torch.bfloat16)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=guarded):
                y = conv(x)
            y.float().sum().backward()
        print("ok", flush=True)
    except Exception as exc:  # noqa: BLE001 - recorded in the table
        print("error", type(exc).__name__, flush=True)
"""


def cpu_facts() -> dict:
    """CPU model name, AMX flag (``amx_bf16``) and torch's CPU capability."""
    import torch

    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next(
        (ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")),
        platform.processor(),
    )
    return {
        "torch": torch.__version__,
        "cpu": model,
        "amx_bf16": " amx_bf16" in text,
        "capability": torch.backends.cpu.get_cpu_capability(),
    }


def run_shapes(shapes: list[tuple[int, int, int]], guarded: bool, steps: int) -> dict:
    """``{(k, in, out): outcome}``; a worker that dies marks its current shape and is replaced."""
    results, pending = {}, list(shapes)
    while pending:
        worker = subprocess.Popen(
            [sys.executable, "-c", WORKER, "1" if guarded else "0", str(steps)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        while pending:
            shape = pending[0]
            try:
                worker.stdin.write(" ".join(map(str, shape)) + "\n")
                worker.stdin.flush()
            except BrokenPipeError:
                break
            line = worker.stdout.readline().strip()
            if not line:  # died on this shape
                break
            results[shape] = "ok" if line == "ok" else line
            pending.pop(0)
        worker.stdin.close()
        code = worker.wait()
        if pending and pending[0] not in results:
            results[pending.pop(0)] = signal.Signals(-code).name if code < 0 else f"exit {code}"
    return results


def table(results: dict, kernels: list[int]) -> str:
    """A markdown table per kernel size: rows input channels, columns output channels."""
    lines = []
    for k in kernels:
        lines += [
            f"{k}x{k} | " + " | ".join(f"out {c}" for c in OUT_CHANNELS),
            "--- | " + " | ".join("---" for _ in OUT_CHANNELS),
        ]
        lines += [
            f"in {cin} | " + " | ".join(results[(k, cin, c)] for c in OUT_CHANNELS)
            for cin in IN_CHANNELS
        ]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument(
        "--guarded", action="store_true", help="through segcli's guard under bf16 autocast"
    )
    parser.add_argument("--json", type=Path, help="also write the facts and every cell here")
    args = parser.parse_args()
    shapes = [(k, cin, cout) for k in args.kernels for cin in IN_CHANNELS for cout in OUT_CHANNELS]
    facts = cpu_facts()
    results = run_shapes(shapes, args.guarded, args.steps)
    print(
        f"torch {facts['torch']}, {facts['cpu']}, AMX: {facts['amx_bf16']}, capability "
        f"{facts['capability']}, "
        f"{'guarded (segcli)' if args.guarded else 'raw bf16'}, {args.steps} steps, input (4, IN, "
        "3, 3)\n"
    )
    print(table(results, args.kernels))
    if args.json:
        cells = [
            {"kernel": k, "in": i, "out": o, "outcome": r}
            for (k, i, o), r in sorted(results.items())
        ]
        args.json.write_text(
            json.dumps(
                {**facts, "guarded": args.guarded, "steps": args.steps, "cells": cells}, indent=1
            )
        )


if __name__ == "__main__":
    main()
