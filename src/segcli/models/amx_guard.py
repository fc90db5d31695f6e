"""A guard against a oneDNN bug on Intel CPUs with AMX: bf16 weight gradients of convolutions with
many input and few output channels corrupt the heap.

torch 2.14.1 (the newest release our pin admits) runs the weight gradient of a bf16 convolution on
an AMX CPU with oneDNN's ``brgconv_bwd_w:avx10_1_512_amx`` kernel; for a 1x1 convolution with 4096
input channels and 1, 2, 4 or 8 output channels (FCN-8s's ``score_fr`` on CamVid's 11 classes, say)
that kernel writes past its buffers: ``free(): invalid next size``, an abort within ten steps. 16
or 21 output channels, or 512 to 2048 input channels, are fine; the forward pass and the input
gradient are fine. ``scripts/amx_conv_map.py`` maps the region on any CPU (README, "Known issues").

No library offers a workaround (the kernel is torch's; ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16`` turns
AMX off for every layer, and bf16 without AMX is slower than float32), so segcli carries this
narrow one: ``guard_amx_bf16_convs`` gives each ``nn.Conv2d`` in the region a ``forward`` that,
only while CPU bf16 autocast is on, runs that one convolution in float32 (input, weight and
output); everything else stays bf16. The region is wider than what was seen to crash (any kernel
size; 4096 input channels or more; fewer than 16 output channels), because the 3x3 case and
8192 input channels were not mapped on an AMX machine when this was written.

The guard is applied where models are built (``models.build.build_model``), so training, validation,
eval, predict and bench see the same arithmetic. It changes nothing on a CPU without AMX (no
module is touched) and nothing outside CPU bf16 autocast (the guarded forward is the plain one).
``SEGCLI_AMX_GUARD=auto`` (default) | ``on`` (guard on any CPU: for tests) | ``off``.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from segcli.errors import SegcliError
from segcli.runtime import cpu_query

# The region guarded: in_channels >= MIN_IN_CHANNELS and out_channels < MAX_OUT_CHANNELS
# (exclusive), ungrouped convolutions of any kernel size. Seen to crash on torch 2.14.1: 1x1, 4096
# -> 1/2/4/8.
MIN_IN_CHANNELS = 4096
MAX_OUT_CHANNELS = 16

GUARD_SETTINGS = ("auto", "on", "off")


def in_crash_region(conv: nn.Module) -> bool:
    """Whether ``conv`` is an ``nn.Conv2d`` whose bf16 weight gradient the guard keeps in float32:
    ungrouped, ``in_channels >= 4096`` and ``out_channels < 16``."""
    return (
        isinstance(conv, nn.Conv2d)
        and conv.groups == 1
        and conv.in_channels >= MIN_IN_CHANNELS
        and conv.out_channels < MAX_OUT_CHANNELS
    )


def cpu_has_amx() -> bool:
    """AMX tiles on this CPU (torch's cpuinfo query), and not switched off by a
    ``ONEDNN_MAX_CPU_ISA`` limit without AMX in its name."""
    limit = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    if limit and limit != "ALL" and "AMX" not in limit:
        return False
    return cpu_query("_is_amx_tile_supported")


def guard_wanted() -> bool:
    """``SEGCLI_AMX_GUARD``: ``auto`` -> ``cpu_has_amx()``, ``on`` -> True, ``off`` -> False.

    Raises:
        SegcliError: any other value (names the variable and the allowed values).
    """
    setting = os.environ.get("SEGCLI_AMX_GUARD", "auto").strip().lower() or "auto"
    if setting not in GUARD_SETTINGS:
        raise SegcliError(
            f"SEGCLI_AMX_GUARD={setting}: expected one of {', '.join(GUARD_SETTINGS)}"
        )
    return cpu_has_amx() if setting == "auto" else setting == "on"


def _cpu_bf16_autocast(x: torch.Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
    )


class Float32UnderCpuBf16Conv2d(nn.Conv2d):
    """An ``nn.Conv2d`` that runs in float32 while CPU bf16 autocast is on (and as ``nn.Conv2d``
    otherwise). ``forward(x: (N, in, H, W)) -> (N, out, H', W')``: float32 under CPU bf16 autocast,
    else the dtype ``nn.Conv2d`` gives. Same parameters and state dict as the convolution it
    replaces (``guard_amx_bf16_convs`` swaps the class of an existing module)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _cpu_bf16_autocast(x):
            return super().forward(x)
        bias = self.bias.float() if self.bias is not None else None
        with torch.autocast("cpu", enabled=False):
            return self._conv_forward(x.float(), self.weight.float(), bias)


def guard_amx_bf16_convs(model: nn.Module, force: bool | None = None) -> list[str]:
    """Give every plain ``nn.Conv2d`` of ``model`` that ``in_crash_region`` names the float32
    forward of ``Float32UnderCpuBf16Conv2d`` (in place: parameters, state dict keys and devices
    stay).

    ``force``: None asks ``guard_wanted()`` (the CPU and ``SEGCLI_AMX_GUARD``); True/False decide.
    Subclasses of ``nn.Conv2d`` with a forward of their own are left alone.

    Returns:
        The names of the guarded modules (empty where nothing was guarded).

    Raises:
        SegcliError: a bad ``SEGCLI_AMX_GUARD`` (see ``guard_wanted``).
    """
    if not (guard_wanted() if force is None else force):
        return []
    guarded = []
    for name, module in model.named_modules():
        if type(module) is nn.Conv2d and in_crash_region(module):
            module.__class__ = Float32UnderCpuBf16Conv2d
            guarded.append(name)
    return guarded
