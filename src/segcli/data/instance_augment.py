"""Instance-aware augmentation: the YAML transforms of ``augment.py`` applied to an image together
with its instance masks and boxes, for detection-style models (torchvision's Mask R-CNN).

The random transforms are those of ``conf/augmentation/<name>.yaml``, instantiated by the same
code as the semantic pipeline (``augment.instantiate_specs``: same classes, same one-line
errors). They are called with albumentations' ``masks=`` (one binary mask per instance) and
``bboxes=`` (``BboxParams(format="pascal_voc", label_fields=["labels", "iscrowd", "index"])``;
``index`` says which input instance a surviving box belongs to). Afterwards:

* instances whose mask is empty (cropped away), or whose box albumentations dropped
  (``min_visibility``), are removed from masks, boxes, labels and iscrowd alike;
* boxes are re-derived as the tight box of the transformed mask. The transformed box is only
  the box of the transformed input box: after a rotation it is the box of a rotated rectangle,
  after an elastic deformation a bound of the deformed one, both looser than the object; the
  mask is the truth.

Instance masks are binary, so every ``fill_mask`` of the YAML transforms is set to 0 here: the
presets fill semantic masks with ``ignore_index`` (e.g. 255), which in an instance mask would
make the filled corners part of the instance. Padding is background for Mask R-CNN.

Tail (as ``augment.fixed_tail`` with mask fill 0): PadIfNeeded to a multiple of 32, top-left
anchored (image filled with 0, masks with 0; boxes unchanged) -> Normalize(mean, std) ->
ToTensorV2.

Random draws: ``augment.seed_transform(t.compose, key)`` or ``augment.seed_transform(t, key)``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence

import albumentations as A
import numpy as np
import torch
from albumentations.core.bbox_utils import bboxes_from_masks
from albumentations.core.type_definitions import Targets

from segcli.data.augment import fixed_tail, instantiate_specs, rescale_transform
from segcli.errors import SegcliError
from segcli.preprocessing import IMAGENET_MEAN, IMAGENET_STD

LABEL_FIELDS = ("labels", "iscrowd", "index")


def _leaves(transform: object) -> Iterator[object]:
    """The transforms inside ``transform``: itself, or those of a Compose/OneOf/... recursively."""
    if isinstance(transform, A.BaseCompose):
        for inner in transform.transforms:
            yield from _leaves(inner)
    else:
        yield transform


def _missing_box_support(transform: object) -> str | None:
    """Why ``transform`` cannot be applied to instances, or None: it changes masks but declares
    no bounding-box target (albumentations ``_targets``; image-only transforms leave masks and
    boxes alike untouched and are fine), or declares no targets at all."""
    for leaf in _leaves(transform):
        targets = getattr(leaf, "_targets", None)
        if targets is None:
            return f"{type(leaf).__name__} declares no albumentations targets (_targets)"
        targets = targets if isinstance(targets, tuple) else (targets,)
        if Targets.MASK in targets and Targets.BBOXES not in targets:
            return (
                f"{type(leaf).__name__} transforms masks but not bounding boxes"
                " (albumentations targets: "
                + ", ".join(t.value for t in targets)
                + "), so it cannot be used for instance segmentation"
            )
    return None


def _zero_mask_fill(transform: object) -> None:
    """Set every ``fill_mask`` inside ``transform`` to 0 (background; see the module docstring).
    A ``fill_mask`` of None (e.g. CoarseDropout: masks left as they are) stays None."""
    for leaf in _leaves(transform):
        if getattr(leaf, "fill_mask", None) is not None:
            leaf.fill_mask = 0


def _empty(height: int, width: int) -> dict:
    """Outputs for no instances, shaped as torchvision's Mask R-CNN expects."""
    return {
        "masks": torch.zeros((0, height, width), dtype=torch.uint8),
        "boxes": torch.zeros((0, 4), dtype=torch.float32),
        "labels": torch.zeros((0,), dtype=torch.int64),
        "iscrowd": torch.zeros((0,), dtype=torch.bool),
    }


class InstanceTransform:
    """The YAML transforms and the fixed tail, applied to an image, its instance masks and boxes.

    See the module docstring for what happens to masks, boxes and dropped instances.
    ``compose`` is the albumentations ``Compose`` (with ``bbox_params``) that does the work.
    """

    def __init__(self, compose: A.Compose, min_area: int = 1) -> None:
        self.compose = compose
        self.min_area = max(int(min_area), 1)  # an empty mask is never an instance

    def set_random_state(self, random_generator: np.random.Generator, py_random: random.Random):
        """Seed all transforms (the signature of albumentations' ``set_random_state``, so that
        ``augment.seed_transform(self, key)`` works)."""
        self.compose.set_random_state(random_generator, py_random)

    def __call__(
        self, image: np.ndarray, masks: np.ndarray, labels: np.ndarray, iscrowd: np.ndarray
    ) -> dict:
        """Transform one sample.

        Args:
            image: (H, W, 3) uint8.
            masks: (K, H, W) uint8 (or bool), nonzero = the instance; K may be 0. Instances with
                an empty mask are dropped before the transform (they have no box).
            labels: (K,) int64 class ids.
            iscrowd: (K,) bool, COCO's ``iscrowd``.

        Returns:
            ``{"image": (3, H', W') float32 tensor (normalised), "masks": (K', H', W') uint8
            tensor of 0/1, "boxes": (K', 4) float32 tensor, xyxy pixels with x2 = last column + 1
            (pascal_voc), "labels": (K',) int64 tensor, "iscrowd": (K',) bool tensor}``, with
            H', W' multiples of 32 and K' <= K the instances whose transformed mask has at least
            ``min_area`` pixels, in input order. K' = 0 gives masks (0, H', W'), boxes (0, 4).

        Raises:
            SegcliError: masks, labels or iscrowd do not match the image or each other.
        """
        masks, labels, iscrowd = _checked(image, masks, labels, iscrowd)
        keep = masks.any(axis=(1, 2))
        masks, labels, iscrowd = masks[keep], labels[keep], iscrowd[keep]
        data = {
            "image": image,
            "bboxes": bboxes_from_masks(masks).astype(np.float32).reshape(-1, 4),
            "labels": labels,
            "iscrowd": iscrowd,
            "index": np.arange(len(masks), dtype=np.int64),
        }
        if len(masks):  # albumentations 2.0.8 cannot stack an empty (0, H, W) masks array
            data["masks"] = masks
        out = self.compose(**data)
        return {"image": out["image"], **self._instances(out)}

    def _instances(self, out: dict) -> dict:
        """Masks of the surviving boxes, minus those under ``min_area`` pixels; tight boxes."""
        height, width = out["image"].shape[1:]
        index = np.asarray(out["index"], dtype=np.int64).reshape(-1)
        if "masks" not in out or len(index) == 0:
            return _empty(height, width)
        masks = np.asarray(out["masks"])[index] == 1
        keep = masks.sum(axis=(1, 2)) >= self.min_area
        if not keep.any():
            return _empty(height, width)
        masks = masks[keep].astype(np.uint8)
        return {
            "masks": torch.from_numpy(masks),
            "boxes": torch.from_numpy(bboxes_from_masks(masks).astype(np.float32)),
            "labels": torch.from_numpy(np.asarray(out["labels"], dtype=np.int64)[keep]),
            "iscrowd": torch.from_numpy(np.asarray(out["iscrowd"], dtype=bool)[keep]),
        }


def _checked(image: np.ndarray, masks, labels, iscrowd) -> tuple[np.ndarray, ...]:
    """masks as (K, H, W) uint8 0/1, labels (K,) int64, iscrowd (K,) bool; SegcliError when the
    shapes disagree with the (H, W, 3) image or with each other."""
    masks = np.asarray(masks)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    iscrowd = np.asarray(iscrowd, dtype=bool).reshape(-1)
    if image.ndim != 3 or masks.ndim != 3 or masks.shape[1:] != image.shape[:2]:
        raise SegcliError(
            f"instance masks: expected (K, H, W) masks for an (H, W, 3) image, got masks "
            f"{tuple(masks.shape)} and image {tuple(image.shape)}"
        )
    if not len(masks) == len(labels) == len(iscrowd):
        raise SegcliError(
            f"instance masks: {len(masks)} masks but {len(labels)} labels and "
            f"{len(iscrowd)} iscrowd flags (expected one each per instance)"
        )
    return (masks != 0).astype(np.uint8), labels, iscrowd


def build_instance_transforms(
    specs: Sequence[Mapping] | None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    scale: float = 1.0,
    min_visibility: float = 0.0,
    min_area: int = 1,
) -> InstanceTransform:
    """The instance pipeline of ``specs`` (``conf/augmentation/<name>.yaml``'s ``train``/``eval``).

    Args:
        specs: entries with ``_target_`` and arguments, as for ``augment.build_transforms``.
        scale: ``dataset.scale``; other than 1, everything is first resized by this factor.
        min_visibility: albumentations ``BboxParams.min_visibility``: an instance whose
            transformed box keeps less than this fraction of its input box area is dropped.
        min_area: an instance whose transformed mask has fewer pixels is dropped (at least 1:
            empty masks are always dropped).

    Raises:
        SegcliError: an entry cannot be instantiated (the messages of
            ``augment.instantiate_specs``), or it changes masks but not boxes:
            ``augmentation entry <i> (<target>): <class> transforms masks but not bounding
            boxes ...``.
    """
    transforms = instantiate_specs(specs)
    for i, (spec, transform) in enumerate(zip(specs or [], transforms)):
        reason = _missing_box_support(transform)
        if reason:
            raise SegcliError(f"augmentation entry {i} ({spec.get('_target_')}): {reason}")
        _zero_mask_fill(transform)
    if scale != 1.0:
        transforms.insert(0, rescale_transform(scale))
    bbox_params = A.BboxParams(
        format="pascal_voc", label_fields=list(LABEL_FIELDS), min_visibility=min_visibility
    )
    compose = A.Compose(transforms + fixed_tail(0, mean, std), bbox_params=bbox_params)
    return InstanceTransform(compose, min_area=min_area)
