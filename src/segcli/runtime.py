"""Where and how a job computes: the device, autocast dtype and memory format (``trainer`` group),
the seeds, and the one-line message for running out of memory. Light (torch only): eval and
predict use it without the trainer.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

import numpy as np
import torch

from segcli.engine import StepContext
from segcli.errors import SegcliError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; anything else as torch reads it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_amp(setting: str | bool | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: ``auto`` -> bf16 on CUDA where supported, fp16 on older CUDA, none on CPU;
    ``bf16``/``fp16`` force one; ``false``/None: float32 (None)."""
    if setting in (False, None, "false", "off", "none"):
        return None
    if setting == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[str(setting)]


def step_context(trainer: Mapping, scale: float = 1.0, local_rank: int | None = None) -> StepContext:
    """Device, autocast dtype and memory format from the ``trainer`` group; ``scale`` is
    ``dataset.scale``, the resolution factor at which evaluation runs the model. ``local_rank``
    (torchrun): a CUDA device becomes ``cuda:LOCAL_RANK``. Turns on cudnn.benchmark on CUDA."""
    device = resolve_device(str(trainer.get("device", "auto")))
    if local_rank is not None and device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return StepContext(device, resolve_amp(trainer.get("amp", "auto"), device), bool(trainer.get("channels_last")),
                       float(scale))


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def out_of_memory_error(exc: BaseException, cfg: Mapping, where: str) -> SegcliError | None:
    """A one-line SegcliError for a CUDA or CPU out-of-memory ``exc`` (naming the batch and crop
    sizes to lower), else None."""
    text = str(exc)
    if not (isinstance(exc, torch.OutOfMemoryError) or "can't allocate memory" in text
            or "out of memory" in text.lower()):
        return None
    trainer = cfg["trainer"]
    crop = cfg["dataset"].get("crop_size")
    return SegcliError(f"out of memory during {where} (trainer.batch_size={trainer['batch_size']}, "
                       f"trainer.eval_batch_size={trainer['eval_batch_size']}, dataset.crop_size={crop}): "
                       "try a smaller batch_size or crop_size, dataset.scale=0.5, or trainer.amp=bf16")
