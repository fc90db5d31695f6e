"""Checkpoint -> runnable model with its preprocessing, once: ``LoadedModel.load(path)`` is how
``segcli eval``, ``segcli predict`` and ``segcli export`` (and eval's worst-image gallery) get a
checkpoint's model, on its device in eval mode, with the statistics it was trained with, its
classes and its run's config. The file is read by ``runs.checkpoints.load_checkpoint`` and the
weights loaded by ``models.build.model_from_checkpoint``; each refuses a bad file, another
architecture or another class count with one line (a ``SegcliError``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from segcli.data.augment import build_transforms
from segcli.data.settings import DatasetInfo, DatasetSettings
from segcli.errors import SegcliError
from segcli.inference.modes import Inference, InferenceSettings
from segcli.models.build import model_from_checkpoint
from segcli.runs.checkpoints import load_checkpoint
from segcli.runtime import StepContext, step_context

if TYPE_CHECKING:
    import albumentations as A


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the model's input, as the run validated it.

    Attributes:
        mean, std: per channel: ``x = (pixel / 255 - mean) / std`` for 8-bit RGB (0..1 units, the
            checkpoint's ``normalization``); for stored channels ``x = (clip(value) - mean) /
            std`` in the files' units (data/channels.py).
        scale: ``dataset.scale``: the model runs at ``scale`` times the image's resolution, scores
            come back at the image's (``inference.loop.forward_at_scale``).
        eval_augmentation: the run's ``augmentation.eval`` entries (before the fixed tail that
            pads to a multiple of 32 and normalises), or None.
        stored: for ``dataset.channels: stored`` the rest of the checkpoint's normalization
            (``max_pixel_value`` 1, ``clip``, ``channels``, ``min``, ``max``), else None.
        extra_inputs: the run's ``dataset.extra_inputs`` as ``((dir, suffix), ...)``.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float
    eval_augmentation: list | None
    stored: dict | None = None
    extra_inputs: tuple[tuple[str, str], ...] = ()

    @property
    def in_channels(self) -> int:
        """Input channels of the model: one per ``mean`` entry (3 for RGB)."""
        return len(self.mean)

    @property
    def normalization(self) -> dict:
        """``{"mean": [...], "std": [...], ...stored}``, the checkpoint's format."""
        return {"mean": list(self.mean), "std": list(self.std), **(self.stored or {})}

    def describe_channels(self) -> str:
        """E.g. ``3 x uint8 RGB`` or ``image: 3 x uint8, depth: 1 x uint16``."""
        from segcli.data.channels import describe_layout

        if self.stored is None:
            return "3 x uint8 RGB"
        return describe_layout(self.stored.get("channels") or [])

    def reader(self) -> Callable[[Path], np.ndarray]:
        """``read(path) -> (H, W, C)`` image as the run read its data: ``images.read_image`` (8-bit
        RGB), else a ``channels.StoredReader`` (extra inputs found beside the image)."""
        if self.stored is None:
            from segcli.data.images import read_image

            return read_image
        from segcli.data.channels import StoredReader

        return StoredReader(self.extra_inputs, self.in_channels, self.describe_channels())

    @classmethod
    def of_checkpoint(cls, ckpt: dict) -> Preprocessing:
        """From a checkpoint dict (see runs/checkpoints.py)."""
        norm, cfg = ckpt["normalization"], ckpt["config"]
        settings = DatasetSettings.from_config(cfg["dataset"])
        rest = {k: v for k, v in norm.items() if k not in ("mean", "std")}
        return cls(
            tuple(float(v) for v in norm["mean"]),
            tuple(float(v) for v in norm["std"]),
            settings.scale,
            cfg["augmentation"].get("eval"),
            rest if float(rest.get("max_pixel_value") or 255.0) == 1.0 else None,
            tuple(settings.extra_inputs or ()),
        )


@dataclass
class LoadedModel:
    """A checkpoint ready to run.

    Attributes:
        path: the checkpoint file.
        model: ``forward(x: (N, in_channels, H, W) float32) -> (N, C, H, W)`` logits; eval mode,
            on ``ctx.device``, channels_last when ``ctx.channels_last``. For ``task=instance``
            torchvision's Mask R-CNN: ``model(list of (3, H, W)) -> [{"boxes", "labels",
            "scores", "masks"}]`` (models/instance.py).
        ctx: device, autocast precision, memory format and eval scale (``runtime.StepContext``).
        preprocessing: mean/std, input channels, scale, eval pipeline (``Preprocessing``).
        classes: C, class names, colours, ignore_index (``data.readers.DatasetInfo``).
        config: the run's resolved config (plain dicts; read it, change a copy).
        epoch: the epoch the checkpoint was saved at (None when it does not say).
        task: the checkpoint's task (``semantic`` for checkpoints that do not say).
        category_ids: ``task=instance``: the dataset's own ids of classes 1..C-1 (COCO's).
    """

    path: Path
    model: torch.nn.Module
    ctx: StepContext
    preprocessing: Preprocessing
    classes: DatasetInfo
    config: dict
    epoch: int | None
    task: str = "semantic"
    category_ids: list[int] | None = None

    @classmethod
    def load(
        cls,
        path: Path,
        device: str = "auto",
        amp: str | None = None,
        channels_last: bool | None = None,
    ) -> LoadedModel:
        """Read a checkpoint written by ``segcli train`` (nothing else of the run is needed).

        Args:
            device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``... (``runtime.resolve_device``).
            amp: autocast setting (``auto``, ``bf16``, ``fp16``, ``false``; see
                ``runtime.resolve_amp``), default the run's ``trainer.amp``.
            channels_last: memory format, default the run's ``trainer.channels_last``.

        Raises:
            SegcliError: the file is missing, unreadable or not a segcli checkpoint; its weights do
                not fit the architecture or class count it names; an unknown ``amp``.
        """
        ckpt = load_checkpoint(path)
        cfg = ckpt["config"]
        pre = Preprocessing.of_checkpoint(ckpt)
        trainer = {**cfg["trainer"], "device": device}
        if amp is not None:
            trainer["amp"] = amp
        if channels_last is not None:
            trainer["channels_last"] = channels_last
        ctx = step_context(trainer, pre.scale)
        model = model_from_checkpoint(ckpt, ctx.device, pre.in_channels)
        if ctx.channels_last:
            model = model.to(memory_format=torch.channels_last)
        c = ckpt["classes"]
        classes = DatasetInfo(
            int(c["num_classes"]),
            [str(n) for n in c["class_names"]],
            [[int(v) for v in rgb] for rgb in c["colors"]],
            int(c["ignore_index"]),
        )
        task = str(ckpt.get("task", "semantic"))
        ids = ckpt.get("category_ids")
        return cls(Path(path), model, ctx, pre, classes, cfg, ckpt.get("epoch"), task, ids)

    def transform(self) -> A.Compose:
        """The run's eval pipeline with this checkpoint's statistics (``data.augment``): ``f(image=
        (H, W, 3) uint8 RGB or (H, W, C) float32 stored channels[, mask=(H, W) int64]) ->
        {"image": (C, H', W') float32, ...}``, padded bottom/right to a multiple of 32 (masks with
        ignore_index)."""
        pre = self.preprocessing
        return build_transforms(
            pre.eval_augmentation, self.classes.ignore_index, normalization=pre.normalization
        )

    def inference(self, settings: InferenceSettings | None = None) -> Inference:
        """``settings`` (default ``whole``) with this checkpoint's statistics (see modes.py)."""
        pre = self.preprocessing
        settings = settings or InferenceSettings()
        if settings.crf is not None and pre.stored is not None:
            raise SegcliError(
                f"{self.path}: the dense CRF compares 8-bit RGB colours; this model takes "
                f"{pre.describe_channels()}"
            )
        return Inference(settings, pre.mean, pre.std)

    def datasets(self, splits: Sequence[str], data_root: str | None = None) -> dict:
        """``{split: Dataset}`` of the run's data with its eval pipeline and this checkpoint's
        statistics, read as the checkpoint's task reads it (``inference.tasks``):
        ``semantic_datasets``, or for task=instance ``data.instance_datasets`` (samples with
        ``image``, ``target``, ``name``, ``image_id``, ``file_name``, ``size``). ``data_root``
        replaces ``dataset.root``.

        Raises:
            SegcliError: the data cannot be read, or a split is missing.
        """
        from segcli.inference.tasks import inference_of

        return inference_of(self.task).datasets(self, splits, data_root)

    def semantic_datasets(self, splits: Sequence[str], data_root: str | None = None) -> dict:
        """``datasets`` of a semantic checkpoint (``data.datasets.build_datasets``): samples hold
        ``image (3, H, W) float32``, ``mask (H, W) int64``, ``name`` and ``size``.

        Raises:
            SegcliError: the data cannot be read, or a split is missing (see build_datasets).
        """
        from segcli.config import run_seed
        from segcli.data.datasets import build_datasets  # here: predict never reads datasets
        from segcli.data.settings import DatasetSettings

        settings = DatasetSettings.from_config(self.config["dataset"])
        if data_root is not None:
            settings = settings.with_root(data_root)
        _, data, _ = build_datasets(
            self.config,
            tuple(splits),
            run_seed(self.config),
            augmented=(),
            settings=settings,
            normalization=self.preprocessing.normalization,
        )
        return data
