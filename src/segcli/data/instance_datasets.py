"""Datasets of ``task=instance``: an ``InstanceSource`` (data/instances.py: COCO JSON, labelme,
VOC SegmentationObject, Cityscapes instanceIds; data/synthetic.py's ``SyntheticInstances``) behind
the instance augmentation (data/instance_augment.py), batched by ``instance_collate``.

Each ``dataset.kind`` of instance data is one entry of ``INSTANCE_KINDS``: ``open(group, split,
classes) -> InstanceSource`` (``classes``: the training split's class names, so that every split
of a labelme folder has the same classes). The keys of each kind are documented in its
conf/dataset/<kind>.yaml.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from segcli.data.augment import seed_transform
from segcli.data.instance_augment import build_instance_transforms
from segcli.data.instances import (
    CityscapesInstanceSource,
    CocoSource,
    InstanceSource,
    LabelmeSource,
    VocInstanceSource,
    coco_split_files,
)
from segcli.data.readers import ClassPixels
from segcli.data.settings import SPLITS, DatasetInfo, default_colors
from segcli.data.synthetic import SyntheticInstances
from segcli.errors import SegcliError
from segcli.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from segcli.registry import Registry

INSTANCE_KINDS: Registry[Callable[[Mapping, str, Sequence[str] | None], InstanceSource]] = Registry(
    "dataset", key="kind"
)


class InstanceDataset(Dataset):
    """Samples of an ``InstanceSource`` through an ``InstanceTransform``; indexed by ``i`` or by
    ``(epoch, i)`` (augmentation seeded from (augment_seed, epoch, i), as the semantic datasets).

    Each sample: ``{"image": (3, H, W) float32, "target": {"masks": (K, H, W) uint8, "boxes":
    (K, 4) float32 xyxy pixels, "labels": (K,) int64 1..C-1, "iscrowd": (K,) bool}, "name": str,
    "image_id": int, "file_name": str, "size": (h, w) as read}``; H, W padded to a multiple of 32.
    """

    def __init__(
        self, source: InstanceSource, transform: Callable, augment_seed: int | None = None
    ) -> None:
        self.source, self.transform, self.augment_seed = source, transform, augment_seed

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        image, ann = self.source.load(index)
        if self.augment_seed is not None:
            seed_transform(self.transform, (self.augment_seed, epoch, index))
        out = self.transform(image, ann.masks, ann.labels, ann.iscrowd)
        target = {k: out[k] for k in ("masks", "boxes", "labels", "iscrowd")}
        return {
            "image": out["image"],
            "target": target,
            "name": self.source.name(index),
            "image_id": self.source.image_id(index),
            "file_name": self.source.file_name(index),
            "size": tuple(image.shape[:2]),
        }


def instance_collate(batch: list[dict]) -> dict:
    """Samples -> ``{"image": (N, 3, H, W) float32`` padded bottom/right with 0, ``"targets"``:
    the N target dicts (unpadded), ``"name"``, ``"image_id"``, ``"file_name"``, ``"size"``: lists}.
    """
    h = max(s["image"].shape[-2] for s in batch)
    w = max(s["image"].shape[-1] for s in batch)
    images = torch.zeros(len(batch), batch[0]["image"].shape[0], h, w)
    for i, s in enumerate(batch):
        images[i, :, : s["image"].shape[-2], : s["image"].shape[-1]] = s["image"]
    out = {"image": images, "targets": [s["target"] for s in batch]}
    for key in ("name", "image_id", "file_name", "size"):
        out[key] = [s[key] for s in batch]
    return out


def _root(group: Mapping) -> Path:
    root = group.get("root")
    if not root:
        raise SegcliError(f"dataset.root: not set; expected the {group.get('kind')} data folder")
    path = Path(str(root)).expanduser()
    if not path.is_dir():
        raise SegcliError(f"dataset.root={root}: no such folder")
    return path


def _under(root: Path, value) -> Path:
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else root / path


@INSTANCE_KINDS.register("coco")
def open_coco(group: Mapping, split: str, classes: Sequence[str] | None) -> InstanceSource:
    """``dataset=coco``: ``annotations.SPLIT`` / ``images.SPLIT`` (paths under ``root``), or COCO's
    layout (``annotations/instances_SPLIT2017.json`` + ``SPLIT2017/``) where they are null. The
    classes of val/test are the train split's, matched by category name (a split whose JSON lacks
    one is a one-line error naming the file)."""
    root = _root(group)
    ann = (group.get("annotations") or {}).get(split)
    images = (group.get("images") or {}).get(split)
    if ann is None:
        ann_path, image_dir = coco_split_files(root, split)
    else:
        ann_path = _under(root, ann)
        image_dir = _under(root, images) if images else ann_path.parent
    names = group.get("class_names") or classes  # val/test: the train split's, matched by name
    return CocoSource(ann_path, image_dir, list(names)[1:] if names else None)


@INSTANCE_KINDS.register("labelme")
def open_labelme(group: Mapping, split: str, classes: Sequence[str] | None) -> InstanceSource:
    """``dataset=labelme``: ``root/SPLIT/`` folders of labelme JSON (train, val, test)."""
    root = _root(group)
    folder = root / split
    if not folder.is_dir():
        found = [s for s in SPLITS if (root / s).is_dir()]
        raise SegcliError(
            f"{folder}: no such folder; a labelme dataset has one folder of JSON files per split "
            f"(found: {', '.join(found) or 'none'})"
        )
    names = group.get("class_names") or classes
    return LabelmeSource(folder, list(names) if names else None)


@INSTANCE_KINDS.register("voc_instances")
def open_voc(group: Mapping, split: str, classes: Sequence[str] | None) -> InstanceSource:
    """``dataset=voc_instances``: VOC2012's SegmentationObject + SegmentationClass PNGs."""
    return VocInstanceSource(_root(group), split)


@INSTANCE_KINDS.register("cityscapes_instances")
def open_cityscapes(group: Mapping, split: str, classes: Sequence[str] | None) -> InstanceSource:
    """``dataset=cityscapes_instances``: gtFine ``*_instanceIds.png`` beside leftImg8bit."""
    return CityscapesInstanceSource(_root(group), split)


@INSTANCE_KINDS.register("synthetic")
def open_synthetic(group: Mapping, split: str, classes: Sequence[str] | None) -> InstanceSource:
    """The embedded synthetic images as instances (``SyntheticInstances``)."""
    return SyntheticInstances(
        int(group.get(f"num_{split}") or 0), group.get("image_size") or (128, 128), split
    )


def open_sources(group: Mapping, splits: Sequence[str]) -> dict[str, InstanceSource]:
    """The ``InstanceSource`` of each split; labelme's val/test take the train split's classes.

    Raises:
        SegcliError: an unknown kind (naming the instance kinds) or what the reader raises.
    """
    kind = str(group.get("kind"))
    if kind not in INSTANCE_KINDS:
        raise SegcliError(
            f"dataset.kind={kind}: not instance data; task=instance reads "
            f"{', '.join(INSTANCE_KINDS.names())}"
        )
    opener = INSTANCE_KINDS.get(kind)
    order = sorted(splits, key=lambda s: s != "train")
    out: dict[str, InstanceSource] = {}
    for split in order:
        classes = out["train"].class_names if "train" in out else None
        out[split] = opener(group, split, classes)
    return {s: out[s] for s in splits}


def instance_info(group: Mapping, source: InstanceSource) -> DatasetInfo:
    """The classes of instance data: the source's names (background first), the group's colours
    when it gives one per class, else VOC's colour map; ``ignore_index`` the group's (255)."""
    names = list(source.class_names)
    colors = group.get("colors")
    if not colors or len(colors) != len(names):
        colors = [[0, 0, 0], *default_colors(len(names) - 1)]
    return DatasetInfo(
        len(names), names, [list(c) for c in colors], int(group.get("ignore_index", 255))
    )


def build_instance_datasets(
    cfg: Mapping,
    splits: Sequence[str],
    seed: int,
    augmented: Sequence[str] = ("train",),
    normalization: Mapping[str, Sequence[float]] | None = None,
) -> tuple[DatasetInfo, dict, dict]:
    """The instance datasets of ``splits`` (those in ``augmented`` get the ``train`` pipeline of
    the augmentation group, seeded; the others its ``eval`` one), their class info and the
    training split's instance counts (``{"train": ClassPixels}``: objects per class, for the
    summary). ``normalization``: a checkpoint's ``{"mean", "std"}``; None: ImageNet's.

    Raises:
        SegcliError: bad data (see the readers) or an augmentation that cannot move boxes.
    """
    group, aug = cfg["dataset"], cfg["augmentation"]
    norm = normalization or {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    sources = open_sources(group, splits)
    info = instance_info(group, next(iter(sources.values())))
    datasets = {}
    for split, source in sources.items():
        on = split in augmented
        transform = build_instance_transforms(
            aug.get("train" if on else "eval"),
            mean=norm["mean"],
            std=norm["std"],
            scale=float(group.get("scale") or 1.0) if on else 1.0,
        )
        datasets[split] = InstanceDataset(source, transform, seed if on else None)
    counts = {}
    if "train" in sources and isinstance(sources["train"], SyntheticInstances):
        counts["train"] = _object_counts(sources["train"], info.num_classes)
    return info, datasets, counts


def _object_counts(source: InstanceSource, num_classes: int) -> ClassPixels:
    """Objects of each class in ``source`` (``pixels``) and their pixels (``present``)."""
    objects, pixels = np.zeros(num_classes, np.int64), np.zeros(num_classes, np.int64)
    for i in range(len(source)):
        _, ann = source.load(i)
        objects += np.bincount(ann.labels, minlength=num_classes)
        for m, label in zip(ann.masks, ann.labels):
            pixels[label] += int(m.sum())
    return ClassPixels(objects, pixels)


def check_instance_dataset(cfg: Mapping) -> dict:
    """``segcli data check`` for task=instance data: every image of every split the data has
    read with its objects, problems collected instead of stopping at the first.

    Returns:
        ``check_dataset``'s dict (``splits``: images, bad, sizes, ``class_pixels``: the objects'
        pixels per class, background the rest) plus ``objects`` per split (objects per class,
        background 0) and ``crowd`` (crowd regions).

    Raises:
        SegcliError: problems that stop any check: a missing root, a bad annotation file.
    """
    group = cfg["dataset"]
    splits = [s for s in SPLITS if _has_split(group, s)]
    sources = open_sources(group, splits)
    first = next(iter(sources.values()))
    out: dict = {
        "dataset": group.get("root") or group.get("kind"),
        "class_names": list(first.class_names),
        "splits": {},
        "problems": [],
        "notes": [],
    }
    for split, source in sources.items():
        out["splits"][split] = _check_split(source, out["problems"])
    return out


def _has_split(group: Mapping, split: str) -> bool:
    """Whether ``split`` opens (train and val must; test is optional)."""
    if split != "test":
        return True
    try:
        open_sources(group, ["test"])
    except SegcliError:
        return False
    return True


def _check_split(source: InstanceSource, problems: list[str]) -> dict:
    """One split's images read with their objects; a failing image is one problem line."""
    c = len(source.class_names)
    pixels, objects, sizes = np.zeros(c, np.int64), np.zeros(c, np.int64), {}
    bad = crowd = 0
    for i in range(len(source)):
        try:
            image, ann = source.load(i)
        except SegcliError as exc:
            problems.append(str(exc))
            bad += 1
            continue
        h, w = image.shape[:2]
        sizes[f"{h}x{w}"] = sizes.get(f"{h}x{w}", 0) + 1
        crowd += int(ann.iscrowd.sum())
        keep = ~ann.iscrowd.astype(bool)
        objects += np.bincount(ann.labels[keep], minlength=c)
        for m, label in zip(ann.masks[keep], ann.labels[keep]):
            pixels[label] += int(m.sum())
        pixels[0] += h * w - int(ann.masks.max(0).sum() if len(ann.masks) else 0)
    return {
        "images": len(source) - bad,
        "bad": bad,
        "sizes": dict(sorted(sizes.items())),
        "class_pixels": pixels.tolist(),
        "objects": objects.tolist(),
        "crowd": crowd,
    }
