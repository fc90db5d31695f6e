"""COCO instances JSON (https://cocodataset.org/#format-data) through pycocotools' ``COCO`` api:
``images`` (id, file_name, width, height), ``annotations`` (image_id, category_id, segmentation,
iscrowd, area) and ``categories`` (id, name). ``segmentation`` is a list of polygons
``[x1, y1, x2, y2, ...]`` in pixel coordinates, an uncompressed RLE (``counts`` a list, usually with
``iscrowd=1``) or a compressed RLE (``counts`` a string); ``COCO.annToMask`` rasterises all three.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO

from segcli.data.images import read_image
from segcli.data.instance_readers.base import (
    InstanceAnnotations,
    InstanceSource,
    annotations,
    check_size,
)
from segcli.errors import SegcliError

REQUIRED = {
    "images": ("id", "file_name", "width", "height"),
    "annotations": ("id", "image_id", "category_id", "segmentation"),
    "categories": ("id", "name"),
}


def _read_json(path: Path) -> dict:
    """The JSON file's object, with the three lists and their keys checked (one-line errors)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SegcliError(
            f"{path}: cannot read the COCO annotation file ({exc.strerror})"
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SegcliError(f"{path}: not a JSON file ({str(exc)[:80]})") from None
    if not isinstance(data, dict):
        raise SegcliError(
            f"{path}: expected a COCO JSON object with images, annotations, categories"
        )
    for key, fields in REQUIRED.items():
        if not isinstance(data.get(key), list):
            raise SegcliError(
                f'{path}: no "{key}" list (a COCO instances JSON has {", ".join(REQUIRED)})'
            )
        for n, entry in enumerate(data[key]):
            missing = [f for f in fields if not isinstance(entry, dict) or f not in entry]
            if missing:
                raise SegcliError(f'{path}: "{key}"[{n}] has no "{missing[0]}"')
    return data


def _check_references(path: Path, data: dict) -> None:
    """Unique image ids; every annotation's image_id and category_id defined."""
    counts = Counter(im["id"] for im in data["images"])
    dup = next((i for i, n in counts.items() if n > 1), None)
    if dup is not None:
        raise SegcliError(f"{path}: image id {dup} appears more than once in images")
    images, categories = set(counts), {c["id"] for c in data["categories"]}
    for ann in data["annotations"]:
        if ann["image_id"] not in images:
            raise SegcliError(
                f"{path}: annotation {ann['id']} has image_id {ann['image_id']}, not in images"
            )
        if ann["category_id"] not in categories:
            raise SegcliError(
                f"{path}: annotation {ann['id']} has category_id {ann['category_id']},"
                " not in categories"
            )


def _classes(path: Path, categories: list[dict], class_names) -> tuple[list[str], list[int]]:
    """(class names of classes 1..K, their category ids): all categories by id, or those named."""
    if class_names is None:
        ordered = sorted(categories, key=lambda c: c["id"])
        return [c["name"] for c in ordered], [c["id"] for c in ordered]
    names = list(class_names)
    if names and names[0] == "background" and all(c["name"] != "background" for c in categories):
        names = names[1:]
    by_name = {}
    for c in sorted(categories, key=lambda c: c["id"]):
        by_name.setdefault(c["name"], c["id"])
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SegcliError(
            f"{path}: class {unknown[0]!r} is not a category (categories: {', '.join(by_name)})"
        )
    return names, [by_name[n] for n in names]


def _unique_names(file_names: list[str]) -> list[str]:
    """File stems; where two images share a stem, their path without suffix, '/' -> '_'."""
    stems = [Path(f).stem for f in file_names]
    clashes = {s for s, n in Counter(stems).items() if n > 1}
    return [
        str(Path(f).with_suffix("")).replace("/", "_") if s in clashes else s
        for s, f in zip(stems, file_names, strict=True)
    ]


class CocoSource(InstanceSource):
    """Images and objects of a COCO instances JSON.

    Category ids (any, e.g. COCO's non-contiguous 1..90) are sorted and become classes 1..K with
    their names; ``class_names`` (a leading "background" is allowed) keeps only the named
    categories, in that order, and drops the other categories' annotations. Images without
    annotations are kept (K = 0). Crowd regions (``iscrowd=1``) are kept with ``iscrowd`` True.
    Degenerate annotations (``area`` 0, polygons of < 3 points, an empty mask) are dropped.
    Images are read as RGB (grayscale and RGBA converted).

    Raises:
        SegcliError: (one line naming the file) the annotation file is not JSON, lacks
            images/annotations/categories or their keys, an annotation's image_id or category_id is
            unknown, a class name is not a category, an image file is missing in ``image_dir``
            (up front), an image's size differs from its width/height (on ``load``).
    """

    def __init__(
        self,
        annotation_file: Path,
        image_dir: Path,
        class_names: Sequence[str] | None = None,
    ) -> None:
        self.annotation_file, self.image_dir = Path(annotation_file), Path(image_dir)
        data = _read_json(self.annotation_file)
        _check_references(self.annotation_file, data)
        names, self.category_ids = _classes(self.annotation_file, data["categories"], class_names)
        self.class_names = ["background", *names]
        self._class_of = {cid: k + 1 for k, cid in enumerate(self.category_ids)}
        self._images = data["images"]
        for im in self._images:
            if not (self.image_dir / im["file_name"]).is_file():
                raise SegcliError(
                    f"{self.image_dir / im['file_name']}: image of {self.annotation_file.name}"
                    f" (image id {im['id']}) is missing"
                )
        self._names = _unique_names([im["file_name"] for im in self._images])
        self._coco = COCO()
        self._coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints its progress
            self._coco.createIndex()

    def __len__(self) -> int:
        return len(self._images)

    def name(self, i: int) -> str:
        return self._names[i]

    def file_name(self, i: int) -> str:
        return self._images[i]["file_name"]

    def image_id(self, i: int) -> int:
        return int(self._images[i]["id"])

    def load(self, i: int) -> tuple[np.ndarray, InstanceAnnotations]:
        im = self._images[i]
        path = self.image_dir / im["file_name"]
        image = read_image(path)
        size = (int(im["height"]), int(im["width"]))
        check_size(path, image, size, f"{self.annotation_file.name} (image id {im['id']})")
        masks, labels, crowd = [], [], []
        for ann in self._coco.imgToAnns.get(im["id"], []):
            label = self._class_of.get(ann["category_id"])
            mask = None if label is None else self._mask(ann, size)
            if mask is not None:
                masks.append(mask)
                labels.append(label)
                crowd.append(bool(ann.get("iscrowd", 0)))
        return image, annotations(masks, labels, size, crowd)

    def _mask(self, ann: dict, size: tuple[int, int]) -> np.ndarray | None:
        """``(H, W) uint8`` 0/1 mask of an annotation, None when degenerate."""
        if ann.get("area", 1) == 0:
            return None
        segm = ann["segmentation"]
        if isinstance(segm, list):  # polygons: pycocotools reads a 4-number polygon as a box
            segm = [p for p in segm if isinstance(p, list) and len(p) >= 6]
            if not segm:
                return None
            ann = {**ann, "segmentation": segm}
        elif not (isinstance(segm, dict) and isinstance(segm.get("counts"), list | str)):
            raise SegcliError(
                f"{self.annotation_file}: annotation {ann['id']}'s segmentation is neither"
                " polygons nor an RLE {counts, size}"
            )
        try:
            mask = self._coco.annToMask(ann)
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            raise SegcliError(
                f"{self.annotation_file}: annotation {ann['id']} has an unreadable segmentation"
                f" ({str(exc)[:60] or type(exc).__name__})"
            ) from None
        if mask.shape != size:
            raise SegcliError(
                f"{self.annotation_file}: annotation {ann['id']}'s RLE size {list(mask.shape)}"
                f" is not its image's (height, width) {list(size)}"
            )
        return mask.astype(np.uint8) if mask.any() else None


def coco_split_files(root: Path, split: str) -> tuple[Path, Path]:
    """(annotation file, image folder) of a split in COCO's official layout: ``split`` "train" ->
    ``annotations/instances_train2017.json`` + ``train2017/`` ("val" -> val2017); other years
    (``instances_{split}*.json`` with the image folder of the same suffix, e.g. ``val2014/``) are
    accepted, the newest first.

    Raises:
        SegcliError: no such annotation file with its image folder under ``root``.
    """
    root = Path(root)
    candidates = [root / "annotations" / f"instances_{split}2017.json"]
    candidates += sorted((root / "annotations").glob(f"instances_{split}*.json"), reverse=True)
    for ann in candidates:
        images = root / ann.stem.removeprefix("instances_")
        if ann.is_file() and images.is_dir():
            return ann, images
    found = [a for a in candidates if a.is_file()]
    if found:
        raise SegcliError(
            f"{root / found[0].stem.removeprefix('instances_')}: image folder of {found[0].name}"
            " is missing"
        )
    raise SegcliError(
        f"{root / 'annotations'}: no instances_{split}*.json (COCO layout: "
        f"annotations/instances_{split}2017.json and {split}2017/)"
    )
