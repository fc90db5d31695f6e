"""Does the ONNX graph compute what the checkpoint does? ``check_parity`` compares the two on the
same inputs (``Parity``: max |logit difference|, allclose at ``RTOL``/``ATOL``, argmax agreement),
``parity_samples`` picks those inputs and their masks (the run's own images, else generated ones),
and ``images_per_second`` times either model.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from segcli.errors import SegcliError

if TYPE_CHECKING:
    from segcli.inference.onnx_graph import OnnxModel

# SMP's export notebook checks rtol 1e-3 / atol 1e-5; we keep its rtol, allow 1e-4 absolute
# (float32 logits near 0 of ViT encoders differ by up to ~8e-5 between torch and onnxruntime: DPT
# measured) and ask that at least 99.9% of the pixels keep their argmax.
RTOL, ATOL, AGREEMENT = 1e-3, 1e-4, 0.999


@dataclass
class Parity:
    """onnxruntime against the torch model (float32, no autocast) on the same inputs.

    ``max_abs``: largest absolute logit difference; ``allclose``: every logit within
    ``atol + rtol * |torch|``; ``agreement``: fraction of pixels whose argmax agrees (0..1);
    ``images``: how many; ``source``: where they came from; ``miou`` / ``checkpoint_miou``: the
    exported model's and the checkpoint's mIoU against those images' masks (None without
    masks)."""

    model: str
    images: int
    source: str
    max_abs: float
    allclose: bool
    agreement: float
    miou: float | None = None
    checkpoint_miou: float | None = None

    @property
    def ok(self) -> bool:
        """Within tolerance: allclose and argmax agreement >= ``AGREEMENT``."""
        return self.allclose and self.agreement >= AGREEMENT


def parity_samples(
    loaded,
    data_root: str | None,
    size: tuple[int, int] | None,
    count: int,
    seed: int = 0,
    splits: Sequence[str] = ("val", "test", "train"),
) -> tuple[list[torch.Tensor], list[torch.Tensor] | None, str]:
    """Up to ``count`` preprocessed ``(1, C_in, H, W)`` inputs and their ``(1, H, W) int64`` masks
    (padding ignore_index) from the first of the run's ``splits`` that can be read (the parity
    check: val, else test, train; int8 calibration: train first) with the checkpoint's
    preprocessing (``loaded``: an ``inference.loaded.LoadedModel``), each cut/padded to ``size``
    when fixed; generated images (masks None) when the data is not reachable."""
    dcfg = loaded.config["dataset"]
    ignore = loaded.classes.ignore_index
    for split in splits:
        try:
            dataset = loaded.datasets((split,), data_root)[split]
            if len(dataset) == 0:
                continue
        except SegcliError:  # data missing, moved or unreadable: fall back to generated images
            continue
        picks = np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int)
        samples = [dataset[int(i)] for i in dict.fromkeys(picks)]
        where = (data_root if data_root is not None else dcfg.get("root")) or dcfg["kind"]
        inputs = [_fit(x["image"].unsqueeze(0), size) for x in samples]
        masks = [_fit(x["mask"].unsqueeze(0).unsqueeze(0), size, ignore)[0] for x in samples]
        return inputs, masks, f"{split} split of {where}"
    rng = np.random.default_rng(seed)
    h, w = size or (256, 256)
    pre = loaded.preprocessing
    c = pre.in_channels
    if pre.stored is None:
        mean = torch.tensor(pre.mean).view(1, c, 1, 1)
        std = torch.tensor(pre.std).view(1, c, 1, 1)
        inputs = [
            (torch.from_numpy(rng.integers(0, 256, (1, c, h, w)).astype(np.float32)) / 255 - mean)
            / std
            for _ in range(count)
        ]
    else:  # stored channels: values of the training data's spread, already normalised
        inputs = [
            torch.from_numpy(rng.standard_normal((1, c, h, w), np.float32)) for _ in range(count)
        ]
    return inputs, None, f"generated {h}x{w} images (the run's data was not found)"


def _fit(x: torch.Tensor, size: tuple[int, int] | None, value: float = 0.0) -> torch.Tensor:
    if size is None:
        return x
    x = x[..., : size[0], : size[1]]
    pad = (0, size[1] - x.shape[-1], 0, size[0] - x.shape[-2])
    return torch.nn.functional.pad(x, pad, value=value)


def check_parity(
    model: torch.nn.Module,
    onnx_model: OnnxModel,
    inputs: Sequence[torch.Tensor],
    source: str,
    masks: Sequence[torch.Tensor] | None = None,
    classes=None,
) -> Parity:
    """Compare ``model`` (torch, float32) with ``onnx_model`` on ``inputs`` (see ``Parity``):
    an ``OnnxModel``, an ``openvino_graph.OpenVinoModel`` or anything with ``path`` and the same
    call. With ``masks`` (``(1, H, W) int64``) and ``classes`` (``data.settings.DatasetInfo``)
    also the mIoU of each model against the masks (``Parity.miou``, ``checkpoint_miou``; segcli's
    dataset-level protocol, metrics/confusion.py)."""
    from segcli.metrics.confusion import ConfusionMatrix

    max_abs, close, agree, pixels = 0.0, True, 0, 0
    scored = masks is not None and classes is not None
    if scored:
        c, ignore = classes.num_classes, classes.ignore_index
        matrices = [ConfusionMatrix(c, ignore), ConfusionMatrix(c, ignore)]
    with torch.inference_mode():
        for k, x in enumerate(inputs):
            ref = model(x).float()
            out = onnx_model(x)
            if scored:
                matrices[0].update(ref.argmax(1), masks[k])
                matrices[1].update(out.argmax(1), masks[k])
            diff = (out - ref).abs()
            max_abs = max(max_abs, float(diff.max()))
            close = close and bool((diff <= ATOL + RTOL * ref.abs()).all())
            agree += int((out.argmax(1) == ref.argmax(1)).sum())
            pixels += ref.shape[0] * ref.shape[-2] * ref.shape[-1]
    parity = Parity(
        onnx_model.path.name, len(inputs), source, max_abs, close, agree / max(pixels, 1)
    )
    if scored:
        parity.checkpoint_miou, parity.miou = (m.compute().miou for m in matrices)
    return parity


def images_per_second(model, inputs: Sequence[torch.Tensor], repeats: int = 2) -> float:
    """Throughput in images/s of ``model`` over ``inputs`` (one warm-up pass, then the best of
    ``repeats`` timed passes)."""
    with torch.inference_mode():
        model(inputs[0])
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            for x in inputs:
                model(x)
            best = min(best, time.perf_counter() - start)
    return sum(x.shape[0] for x in inputs) / best
