"""Where and how a job computes: the device, autocast dtype and memory format (``trainer`` group),
the seeds, and the one-line message for running out of memory. Light (torch only): eval and
predict use it without the trainer.

``trainer.amp=auto`` follows the hardware (``resolve_amp``): bf16 on CUDA devices that support
it, fp16 on older ones, and on the CPU bf16 only where the processor computes it natively
(AVX512_BF16 or AMX on x86, the BF16 extension on Arm; ``cpu_native_bf16`` asks torch, which
asks cpuinfo). Elsewhere the CPU would emulate bf16 with float32 instructions plus conversions,
slower than float32, so ``auto`` stays at float32 there.
"""

from __future__ import annotations

import os
import platform
import random
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch

from segcli.errors import SegcliError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; anything else as torch reads it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# oneDNN ISA limits (ONEDNN_MAX_CPU_ISA) below AVX512_CORE_BF16: bf16 is emulated under them.
_ONEDNN_ISAS_WITHOUT_BF16 = (
    "SSE41",
    "AVX",
    "AVX2",
    "AVX2_VNNI",
    "AVX2_VNNI_2",
    "AVX512_CORE",
    "AVX512_CORE_VNNI",
)


def cpu_native_bf16() -> tuple[bool, str]:
    """Whether this CPU computes bf16 convolutions and matrix products natively, and what says so.

    Asks torch: on x86 ``torch.cpu._is_amx_tile_supported()`` (AMX) and
    ``torch.cpu._is_avx512_bf16_supported()`` (AVX512_BF16), on Arm
    ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` (true only with the BF16 extension there); a
    ``ONEDNN_MAX_CPU_ISA`` limit below AVX512_CORE_BF16 (a oneDNN setting) counts as no. torch
    without oneDNN: no.

    Returns:
        (native, reason): ``reason`` names the instruction set found or missing, e.g.
        ``"AVX512_BF16"`` or ``"no AVX512_BF16 or AMX (CPU capability AVX2)"``.
    """
    if not torch.backends.mkldnn.is_available():
        return False, "torch built without oneDNN"
    limit = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    if limit in _ONEDNN_ISAS_WITHOUT_BF16:
        return False, f"ONEDNN_MAX_CPU_ISA={limit} excludes bf16 instructions"
    if platform.machine().lower() in ("aarch64", "arm64"):
        if torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return True, "Arm BF16"
        return False, "no Arm BF16 extension"
    if cpu_query("_is_amx_tile_supported"):
        return True, "AMX"
    if cpu_query("_is_avx512_bf16_supported"):
        return True, "AVX512_BF16"
    return (
        False,
        f"no AVX512_BF16 or AMX (CPU capability {torch.backends.cpu.get_cpu_capability()})",
    )


def cpu_query(name: str) -> bool:
    """``torch.cpu.NAME()``, False where this torch lacks it."""
    query = getattr(torch.cpu, name, None)
    return bool(query()) if query is not None else False


@dataclass(frozen=True)
class Precision:
    """The autocast choice of a job: ``dtype`` (None: float32, no autocast), the ``setting`` it came
    from (``trainer.amp`` or ``--amp``) and the ``reason`` in words."""

    dtype: torch.dtype | None
    setting: str
    reason: str

    @property
    def name(self) -> str:
        """``"bfloat16"``, ``"float16"`` or ``"float32"``."""
        return str(self.dtype).replace("torch.", "") if self.dtype is not None else "float32"

    def as_dict(self) -> dict:
        """``{"amp": name, "setting": ..., "reason": ...}`` as summary.json and eval's JSON keep
        it."""
        return {"amp": self.name, "setting": self.setting, "reason": self.reason}

    def describe(self) -> str:
        """One line for the console, e.g. ``"bfloat16 autocast (amp=auto: CPU has native bf16:
        AVX512_BF16)"``."""
        what = f"{self.name} autocast" if self.dtype is not None else "float32"
        return f"{what} (amp={self.setting}: {self.reason})"


@dataclass
class StepContext:
    """How a batch is moved and run: device, autocast dtype (None: float32), memory format, the
    scale at which evaluation runs the model (see ``inference.loop.forward_at_scale``) and the
    ``Precision`` the dtype came from (for the console and the run's records)."""

    device: torch.device
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    eval_scale: float = 1.0
    precision: Precision | None = field(default=None, compare=False)

    def images(self, batch: dict) -> torch.Tensor:
        """``(N, 3, H, W) float32`` on the device, channels_last if asked."""
        x = batch["image"].to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def autocast(self):
        """An autocast context for the forward pass only (a no-op without AMP): losses and metrics
        take ``logits.float()`` outside it."""
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)


AMP_SETTINGS = ("auto", "bf16", "fp16", "false")


def resolve_amp(setting: str | bool | None, device: torch.device) -> Precision:
    """The autocast choice for ``setting`` on ``device``.

    ``auto``: bf16 on CUDA where supported, else fp16; on the CPU bf16 where ``cpu_native_bf16()``
    says the processor has it, else float32 (emulated bf16 is slower than float32). ``bf16`` or
    ``fp16`` force one (fp16 autocast on the CPU is slow and meant for tests); ``false``/None:
    float32.

    Raises:
        SegcliError: an unknown setting (names ``trainer.amp`` and the allowed values).
    """
    text = "false" if setting in (False, None) else str(setting).strip().lower()
    if text in ("false", "off", "none", "no", "fp32", "float32"):
        return Precision(None, text, "float32 asked for")
    if text in ("bf16", "bfloat16"):
        native, why = cpu_native_bf16() if device.type == "cpu" else (True, "")
        return Precision(
            torch.bfloat16,
            text,
            "bf16 asked for"
            if native
            else f"bf16 asked for; emulated on this CPU ({why}), usually slower than float32",
        )
    if text in ("fp16", "float16"):
        return Precision(torch.float16, text, "fp16 asked for")
    if text != "auto":
        raise SegcliError(f"trainer.amp={setting}: expected one of {', '.join(AMP_SETTINGS)}")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision(
                torch.bfloat16, text, f"{torch.cuda.get_device_name(device)} supports bf16"
            )
        return Precision(
            torch.float16,
            text,
            f"{torch.cuda.get_device_name(device)} has no bf16; fp16 with a gradient scaler",
        )
    if device.type != "cpu":
        return Precision(None, text, f"no autocast rule for {device.type}")
    native, why = cpu_native_bf16()
    if native:
        return Precision(torch.bfloat16, text, f"CPU has native bf16: {why}")
    return Precision(None, text, f"CPU has no native bf16: {why}")


def step_context(
    trainer: Mapping, scale: float = 1.0, local_rank: int | None = None
) -> StepContext:
    """Device, autocast dtype and memory format from the ``trainer`` group; ``scale`` is
    ``dataset.scale``, the resolution factor at which evaluation runs the model. ``local_rank``
    (torchrun): a CUDA device becomes ``cuda:LOCAL_RANK``. Turns on cudnn.benchmark on CUDA.

    Raises:
        SegcliError: an unknown ``amp`` setting (see ``resolve_amp``)."""
    device = resolve_device(str(trainer.get("device", "auto")))
    if local_rank is not None and device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    precision = resolve_amp(trainer.get("amp", "auto"), device)
    return StepContext(
        device, precision.dtype, bool(trainer.get("channels_last")), float(scale), precision
    )


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def out_of_memory_error(exc: BaseException, cfg: Mapping, where: str) -> SegcliError | None:
    """A one-line SegcliError for a CUDA or CPU out-of-memory ``exc`` (naming the batch and crop
    sizes to lower), else None."""
    text = str(exc)
    if not (
        isinstance(exc, torch.OutOfMemoryError)
        or "can't allocate memory" in text
        or "out of memory" in text.lower()
    ):
        return None
    trainer = cfg["trainer"]
    crop = cfg["dataset"].get("crop_size")
    return SegcliError(
        f"out of memory during {where} (trainer.batch_size={trainer['batch_size']}, "
        f"trainer.eval_batch_size={trainer['eval_batch_size']}, dataset.crop_size={crop}): "
        "try a smaller batch_size or crop_size, dataset.scale=0.5, or trainer.amp=bf16"
    )
