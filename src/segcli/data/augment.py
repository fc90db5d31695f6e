"""Augmentation pipelines: albumentations transforms described in YAML, plus a fixed tail.

``conf/augmentation/<name>.yaml`` lists the random transforms of the ``train`` and ``eval``
pipelines as ``_target_`` entries (any albumentations class, or any importable class with the
same call convention). The tail that train, eval and predict share is added here, once:

    PadIfNeeded to a multiple of 32 (top-left anchored; image filled with 0, mask with
    ignore_index, so padding is never counted as a class) -> Normalize(mean, std) -> ToTensorV2

Padding is anchored top-left so that a prediction is cropped back with ``[:H, :W]``.

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


def fixed_tail(
    ignore_index: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> list[A.BasicTransform]:
    """Pad to a multiple of 32 (mask padded with ``ignore_index``), normalise, to tensor.

    Output of the whole pipeline: ``image (3, H', W') float32`` and ``mask (H', W')``, with
    H', W' the input size rounded up to a multiple of 32.
    """
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
        A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0),
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


def build_transforms(
    specs: Sequence[Mapping] | None,
    ignore_index: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    scale: float = 1.0,
) -> A.Compose:
    """Compose the YAML-listed transforms and the fixed tail.

    Args:
        specs: entries with ``_target_`` (e.g. ``albumentations.HorizontalFlip``) and arguments.
        ignore_index: the mask fill value of every padding step of the tail.
        scale: ``dataset.scale``; other than 1, image and mask are first resized by this factor
            (area / nearest), for training. Evaluation and prediction resize inside the forward
            pass instead (``inference.loop.forward_at_scale``), so that masks keep their resolution.

    Raises:
        SegcliError: an entry cannot be instantiated (``instantiate_specs``).
    """
    transforms: list = [] if scale == 1.0 else [rescale_transform(scale)]
    transforms += instantiate_specs(specs)
    return A.Compose(transforms + fixed_tail(ignore_index, mean, std))
