"""Instance index maps: PASCAL VOC 2012's ``SegmentationObject`` PNGs (Everingham et al., the
VOC2012 devkit doc, section on segmentation) and Cityscapes' ``*_gtFine_instanceIds.png``
(cityscapesScripts ``preparation/json2instanceImg.py``: id = labelId * 1000 + instance index, the
index counting from 0; a region of several objects, e.g. a group of cars, keeps the plain labelId).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from segcli.data.images import read_image, read_raw_mask
from segcli.data.instance_readers.base import (
    InstanceAnnotations,
    InstanceSource,
    annotations,
    check_size,
)
from segcli.errors import SegcliError

VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
]  # fmt: skip
VOC_VOID = 255
# cityscapesScripts helpers/labels.py: the labels with hasInstances=True (and not ignoreInEval)
CITYSCAPES_INSTANCE_CLASSES = {
    24: "person", 25: "rider", 26: "car", 27: "truck", 28: "bus", 31: "train", 32: "motorcycle",
    33: "bicycle",
}  # fmt: skip


def _index_png(path: Path) -> np.ndarray:
    """A palette/gray PNG's ``(H, W)`` indices (never its palette's colours)."""
    raw = read_raw_mask(path)
    if raw.pixels.ndim != 2:
        raise SegcliError(f"{path}: {raw.describe()}, expected a palette PNG of indices")
    return raw.pixels


class VocInstanceSource(InstanceSource):
    """PASCAL VOC 2012 instances: ``JPEGImages/NAME.jpg``, ``SegmentationObject/NAME.png`` (palette
    PNG: instance indices 1..N, 0 background, 255 void) and ``SegmentationClass/NAME.png`` (class
    indices 0..20, 255 void), NAMEs from ``ImageSets/Segmentation/{split}.txt``.

    An object's class is the most frequent class of its pixels in SegmentationClass (void pixels
    not counted); an object with only void or background there is dropped. Void pixels belong to
    no object. ``class_names`` are VOC's 21, ``category_ids`` 1..20.

    Raises:
        SegcliError: (one line naming the file) the list file is missing, an image or PNG is
            missing or unreadable, a PNG is not indices, its size differs from the image's, or a
            class index is above 20 (on ``load``).
    """

    def __init__(self, root: Path, split: str) -> None:
        self.root = Path(root)
        listing = self.root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not listing.is_file():
            raise SegcliError(f"{listing}: missing (the VOC list of the {split!r} split)")
        self._names = [n.strip() for n in listing.read_text().splitlines() if n.strip()]
        self.class_names = list(VOC_CLASSES)
        self.category_ids = list(range(1, len(VOC_CLASSES)))

    def __len__(self) -> int:
        return len(self._names)

    def name(self, i: int) -> str:
        return self._names[i]

    def file_name(self, i: int) -> str:
        return f"{self._names[i]}.jpg"

    def load(self, i: int) -> tuple[np.ndarray, InstanceAnnotations]:
        name = self._names[i]
        image = read_image(self.root / "JPEGImages" / f"{name}.jpg")
        maps = {}
        for folder in ("SegmentationObject", "SegmentationClass"):
            path = self.root / folder / f"{name}.png"
            maps[folder] = _index_png(path)
            check_size(
                self.root / "JPEGImages" / f"{name}.jpg", image, maps[folder].shape, path.name
            )
        objects, classes = maps["SegmentationObject"], maps["SegmentationClass"]
        if (bad := (classes > 20) & (classes != VOC_VOID)).any():
            raise SegcliError(
                f"{self.root / 'SegmentationClass' / f'{name}.png'}: class index"
                f" {int(classes[bad][0])} (VOC has 0..20 and 255 void)"
            )
        masks, labels = [], []
        for index in np.unique(objects):
            if index in (0, VOC_VOID):
                continue
            mask = objects == index
            counts = np.bincount(classes[mask & (classes != VOC_VOID)], minlength=21)
            if counts.any() and (label := int(counts.argmax())) > 0:
                masks.append(mask)
                labels.append(label)
        return image, annotations(masks, labels, image.shape[:2])


class CityscapesInstanceSource(InstanceSource):
    """Cityscapes fine instances: ``leftImg8bit/{split}/CITY/NAME_leftImg8bit.png`` with
    ``gtFine/{split}/CITY/NAME_gtFine_instanceIds.png`` (16-bit PNG, read at full depth).

    Ids >= 1000 of the 8 instance classes (person 24, rider 25, car 26, truck 27, bus 28, train 31,
    motorcycle 32, bicycle 33) are one object each, of class 1..8 in that order (26000 is a car,
    the first); ids < 1000 (stuff, and groups of objects) are no object. ``category_ids`` are the
    label ids.

    Raises:
        SegcliError: (one line naming the file) no instanceIds PNGs in the split, an image missing
            or unreadable, an id map that is not one channel or not the image's size (on ``load``).
    """

    def __init__(self, root: Path, split: str) -> None:
        self.root = Path(root)
        self._maps = sorted((self.root / "gtFine" / split).glob("*/*_gtFine_instanceIds.png"))
        if not self._maps:
            raise SegcliError(
                f"{self.root / 'gtFine' / split}: no CITY/*_gtFine_instanceIds.png files"
            )
        self.split = split
        self.category_ids = list(CITYSCAPES_INSTANCE_CLASSES)
        self.class_names = ["background", *CITYSCAPES_INSTANCE_CLASSES.values()]

    def __len__(self) -> int:
        return len(self._maps)

    def name(self, i: int) -> str:
        return self._maps[i].name.removesuffix("_gtFine_instanceIds.png")

    def file_name(self, i: int) -> str:
        return f"{self.name(i)}_leftImg8bit.png"

    def load(self, i: int) -> tuple[np.ndarray, InstanceAnnotations]:
        ids_path = self._maps[i]
        city = ids_path.parent.name
        image_path = self.root / "leftImg8bit" / self.split / city / self.file_name(i)
        image = read_image(image_path)
        ids = cv2.imread(str(ids_path), cv2.IMREAD_UNCHANGED)
        if ids is None or ids.ndim != 2:
            raise SegcliError(f"{ids_path}: not a one-channel instance id PNG")
        check_size(image_path, image, ids.shape, ids_path.name)
        masks, labels = [], []
        for value in np.unique(ids):
            label_id = int(value) // 1000
            if value >= 1000 and label_id in CITYSCAPES_INSTANCE_CLASSES:
                masks.append(ids == value)
                labels.append(self.category_ids.index(label_id) + 1)
        return image, annotations(masks, labels, image.shape[:2])
