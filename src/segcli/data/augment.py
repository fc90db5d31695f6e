"""Augmentation pipelines: albumentations transforms described in YAML, plus a fixed tail.

``conf/augmentation/<name>.yaml`` lists the random transforms of the ``train`` and ``eval``
pipelines as ``_target_`` entries (any albumentations class, or any importable class with the
same call convention). The tail that train, eval and predict share is added here, once:

    PadIfNeeded to a multiple of 32 (top-left anchored; image filled with 0, mask with
    ignore_index, so padding is never counted as a class) -> Normalize(mean, std) -> ToTensorV2

Padding is anchored top-left so that a prediction is cropped back with ``[:H, :W]``.

Images of any number of channels (``dataset.channels: stored``, data/channels.py) arrive as
``(H, W, C) float32`` in their files' units: the tail clips them to the training data's
percentiles when ``dataset.clip_percentiles`` is set, then normalises with the training data's
per-channel statistics (``max_pixel_value`` 1). Geometric transforms apply to every channel.
Photometric ones (albumentations' ``ImageOnlyTransform``s: colour, brightness, blur, noise) are
applied to channels 0-2 only when those are an 8-bit RGB image file's (RGB + extra inputs such as
depth: ``OnRGB``), and refused otherwise with a one-line error naming the transform: never
silently dropped and never run on channels they do not understand.

Random draws are a pure function of (seed, epoch, sample index) (``seed_transform``): the same
on any number of loader workers and after a resume. albumentations' own
``Compose.set_random_seed`` is not used for this: it gives every transform a generator with the
*same* seed, so that, for example, HorizontalFlip and VerticalFlip at p=0.5 always flip together.
"""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Mapping, Sequence

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A
import cv2
import numpy as np
from albumentations.pytorch import ToTensorV2
from hydra.utils import instantiate
from omegaconf import OmegaConf

from segcli.errors import SegcliError
from segcli.preprocessing import IMAGENET_MEAN, IMAGENET_STD

SIZE_DIVISOR = 32  # the output stride of 5-stage encoders


class ClipChannels(A.ImageOnlyTransform):
    """Clip each channel of ``(H, W, C)`` images to ``[low[c], high[c]]`` (percentile clipping,
    ``dataset.clip_percentiles``)."""

    def __init__(self, low: Sequence[float], high: Sequence[float]) -> None:
        super().__init__(p=1.0)
        self.low = np.asarray(low, dtype=np.float32)
        self.high = np.asarray(high, dtype=np.float32)

    def apply(self, img: np.ndarray, **params) -> np.ndarray:
        return np.clip(img, self.low, self.high).astype(np.float32, copy=False)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("low", "high")


class OnRGB(A.ImageOnlyTransform):
    """Apply a photometric ``transform`` to channels 0-2 of an ``(H, W, C) float32`` image whose
    first three channels are 8-bit RGB values (rounded to uint8 for it and back); the other
    channels are left as they are. Shares the pipeline's random stream."""

    def __init__(self, transform: A.ImageOnlyTransform) -> None:
        super().__init__(p=1.0)
        self.transform = transform

    def set_random_state(self, random_generator, py_random) -> None:
        super().set_random_state(random_generator, py_random)
        self.transform.set_random_state(random_generator, py_random)

    def apply(self, img: np.ndarray, **params) -> np.ndarray:
        rgb = np.clip(np.rint(img[..., :3]), 0, 255).astype(np.uint8)
        out = img.copy()
        out[..., :3] = self.transform(image=rgb)["image"]
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("transform",)


def fixed_tail(
    ignore_index: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    max_pixel_value: float = 255.0,
    clip: Sequence[Sequence[float]] | None = None,
) -> list[A.BasicTransform]:
    """Pad to a multiple of 32 (mask padded with ``ignore_index``), [clip,] normalise, to tensor:
    ``x = (clip(pixel) / max_pixel_value - mean) / std`` per channel.

    Args:
        max_pixel_value: 255 for 8-bit RGB (mean and std in 0..1 units); 1 for stored channels
            (mean and std in the files' units, data/channels.py).
        clip: ``[low per channel, high per channel]`` or None.

    Output of the whole pipeline: ``image (C, H', W') float32`` (C = len(mean)) and ``mask
    (H', W')``, with H', W' the input size rounded up to a multiple of 32.
    """
    clipping = [] if clip is None else [ClipChannels(clip[0], clip[1])]
    return [
        A.PadIfNeeded(
            min_height=None,
            min_width=None,
            pad_height_divisor=SIZE_DIVISOR,
            pad_width_divisor=SIZE_DIVISOR,
            position="top_left",
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=ignore_index,
        ),
        *clipping,
        A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=max_pixel_value),
        ToTensorV2(),
    ]


def seed_transform(transform: A.BaseCompose, key: Sequence[int]) -> None:
    """Give the pipeline one fresh random stream derived from ``key`` (e.g. (seed, epoch, index)),
    shared by all its transforms in order (numpy ``SeedSequence`` hashing; see the module
    docstring)."""
    rng = np.random.default_rng([int(k) for k in key])
    transform.set_random_state(rng, random.Random(int(rng.integers(2**63))))


def rescale_transform(scale: float) -> A.RandomScale:
    """Resize image and targets by ``scale`` (``dataset.scale``; area interpolation when
    shrinking, linear when enlarging; masks always nearest, albumentations' default)."""
    return A.RandomScale(
        scale_limit=(scale - 1, scale - 1),
        p=1.0,
        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
    )


def instantiate_specs(specs: Sequence[Mapping] | None) -> list:
    """Instantiate the YAML-listed transforms, one per entry, in order.

    Args:
        specs: entries with ``_target_`` (e.g. ``albumentations.HorizontalFlip``) and arguments.

    Raises:
        SegcliError: ``augmentation entry <i> (<target>): <reason>``, when an entry cannot be
            instantiated: unknown class, or an argument that the class does not take.
            albumentations 2.x only warns about the latter (an old name such as ``mask_value``
            for ``fill_mask`` is dropped, and masks get padded with class 0); here that warning
            is an error.
    """
    transforms: list = []
    for i, spec in enumerate(specs or []):
        spec = (
            OmegaConf.to_container(spec, resolve=True) if OmegaConf.is_config(spec) else dict(spec)
        )
        where = f"augmentation entry {i} ({spec.get('_target_')})"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                transforms.append(instantiate(spec))
            except (
                Exception
            ) as exc:  # hydra wraps import and argument errors in InstantiationException
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise SegcliError(f"{where}: {first}") from exc
        for w in caught:
            if "not valid for transform" in str(w.message):
                raise SegcliError(f"{where}: {w.message}")
    return transforms


def photometric_for_channels(
    transforms: list, specs: Sequence[Mapping] | None, channels: Sequence[Mapping] | None
) -> list:
    """The transforms fit for images of these ``channels`` (``ChannelStack.layout``; None: 8-bit
    RGB): photometric ones wrapped in ``OnRGB`` when the first file is 8-bit RGB.

    Raises:
        SegcliError: a photometric transform and channels that are not 8-bit RGB first.
    """
    if channels is None:
        return transforms
    first = channels[0]
    rgb_first = first["channels"] == 3 and first["dtype"] == "uint8"
    from segcli.data.channels import describe_layout

    described = describe_layout(channels)
    out = []
    for i, transform in enumerate(transforms):
        target = (list(specs or [{}])[i] or {}).get("_target_", type(transform).__name__)
        if isinstance(transform, A.BaseCompose) and _has_photometric(transform):
            raise SegcliError(
                f"augmentation entry {i} ({target}): holds a photometric transform; with stored "
                "channels list photometric transforms at the top level (applied to RGB only)"
            )
        if isinstance(transform, A.ImageOnlyTransform):
            if not rgb_first:
                raise SegcliError(
                    f"augmentation entry {i} ({target}): a photometric transform needs 8-bit RGB "
                    f"channels; these images have {described}; remove it or use a geometric "
                    "pipeline (augmentation=light)"
                )
            transform = OnRGB(transform)
        out.append(transform)
    return out


def _has_photometric(compose: A.BaseCompose) -> bool:
    """Whether a OneOf/Sequential/SomeOf (at any depth) holds an ``ImageOnlyTransform``."""
    return any(
        isinstance(t, A.ImageOnlyTransform)
        or (isinstance(t, A.BaseCompose) and _has_photometric(t))
        for t in compose.transforms
    )


def build_transforms(
    specs: Sequence[Mapping] | None,
    ignore_index: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    scale: float = 1.0,
    normalization: Mapping | None = None,
) -> A.Compose:
    """Compose the YAML-listed transforms and the fixed tail.

    Args:
        specs: entries with ``_target_`` (e.g. ``albumentations.HorizontalFlip``) and arguments.
        ignore_index: the mask fill value of every padding step of the tail.
        normalization: a checkpoint's ``normalization`` (``mean``, ``std``, and for stored
            channels ``max_pixel_value``, ``clip``, ``channels``); replaces ``mean`` and ``std``.
        scale: ``dataset.scale``; other than 1, image and mask are first resized by this factor
            (area / nearest), for training. Evaluation and prediction resize inside the forward
            pass instead (``inference.loop.forward_at_scale``), so that masks keep their resolution.

    Raises:
        SegcliError: an entry cannot be instantiated (``instantiate_specs``), or is photometric
            and the channels are not 8-bit RGB first (``photometric_for_channels``).
    """
    norm = dict(normalization or {"mean": mean, "std": std})
    transforms: list = [] if scale == 1.0 else [rescale_transform(scale)]
    transforms += photometric_for_channels(instantiate_specs(specs), specs, norm.get("channels"))
    tail = fixed_tail(
        ignore_index,
        norm["mean"],
        norm["std"],
        float(norm.get("max_pixel_value") or 255.0),
        norm.get("clip"),
    )
    return A.Compose(transforms + tail)
