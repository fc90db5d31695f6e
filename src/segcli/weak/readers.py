"""Weak-label annotation files -> ``ImageLabels`` per training image (``read_labels``).

Reads boxes (a COCO JSON, a folder of PASCAL VOC XML or of YOLO txt files), points (a CSV or JSON
point table, a folder of labelme JSON files) and scribbles (a folder of labelme JSON files with
lines, or of sparse mask PNGs). Our own code: these are annotation-file conventions and no library
reads them all into boxes and sparse masks in our pixel conventions (weak/labels.py), with one-line
errors naming the file and entry. weak/label_files.py parses the files; this module gives the
records their classes, pixels and images, and checks them against the training images.

Every bad input is a one-line ``SegcliError`` naming the file (and its line or entry).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from segcli.errors import SegcliError
from segcli.weak.label_files import (
    Record,
    coco_boxes,
    csv_points,
    json_points,
    labelme_shapes,
    voc_boxes,
    yolo_boxes,
    yolo_names,
)
from segcli.weak.labels import ImageLabels

EXPECTED = {
    "boxes": "a COCO .json file, a folder of PASCAL VOC *.xml or a folder of YOLO *.txt files",
    "points": "a .csv or .json point table or a folder of labelme *.json files",
    "scribbles": "a folder of labelme *.json files or of sparse mask *.png files",
}


@dataclass(frozen=True)
class LabelSpec:
    """What a reader needs to know about the dataset."""

    class_names: Sequence[str]  # C names, index = class
    ignore_index: int
    image_sizes: Mapping[str, tuple[int, int]]  # training image stem -> (H, W) pixels
    background_class: int | None = 0  # class of "no object"; None when the dataset has none
    scribble_width: int = 3  # pixels: labelme lines are drawn this wide
    decode_mask: Callable[[Path], np.ndarray] | None = None  # PNG -> (H, W) int64 classes/ignore


class _Classes:
    """Class names (matched case-insensitively) and indices of a ``LabelSpec``."""

    def __init__(self, spec: LabelSpec) -> None:
        self.names = [str(n) for n in spec.class_names]
        self._index: dict[str, int] = {}
        for k, name in enumerate(self.names):
            self._index.setdefault(name.strip().lower(), k)

    def named(self, name: str, where: str, what: str = "label") -> int:
        """The class index of a name, or an error naming it and the classes."""
        k = self._index.get(str(name).strip().lower())
        if k is None:
            raise SegcliError(f"{where}: {what} {name!r} is not a class ({', '.join(self.names)})")
        return k

    def value(self, value: str | int, where: str) -> int:
        """A class name or an integer index 0..C-1 (a digit string is an index unless a name)."""
        if isinstance(value, str) and value.strip().lower() in self._index:
            return self._index[value.strip().lower()]
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(self.names):
            return value
        raise SegcliError(
            f"{where}: class {value!r} is neither a class name nor an index"
            f" 0..{len(self.names) - 1} ({', '.join(self.names)})"
        )


def _key(image: str, spec: LabelSpec) -> str:
    """The training image stem an annotation's image name refers to (a stem, file name or path)."""
    return image if image in spec.image_sizes else Path(image).stem


def _check_known(keys: Mapping[str, Path], spec: LabelSpec) -> None:
    """Every labelled image (key -> the file labelling it) is a training image, or one error."""
    missing = [k for k in keys if k not in spec.image_sizes]
    if missing:
        raise SegcliError(
            f"{keys[missing[0]]}: image {missing[0]!r} is not a training image ({len(missing)} of"
            f" the {len(keys)} labelled images are not among the {len(spec.image_sizes)} training"
            " images: labels of another split or folder?)"
        )


def _add_key(keys: dict[str, Path], key: str, file: Path) -> None:
    """Record that ``file`` labels image ``key``; two annotations of one image are an error."""
    if key in keys:
        raise SegcliError(f"{file}: labels image {key!r}, as {keys[key]} does already")
    keys[key] = file


def read_labels(kind: str, path: Path, spec: LabelSpec) -> dict[str, ImageLabels]:
    """kind: 'boxes' | 'points' | 'scribbles'. Returns {image stem: ImageLabels} for every image
    the file(s) label.

    The format is told from ``path`` (see ``EXPECTED``); boxes are ``(K, 4) float32`` pixel edges
    clipped to the image, points and scribbles an ``(H, W) int64`` sparse mask (ignore_index where
    unlabelled, the later label winning on a pixel) of the ``spec.image_sizes`` size.

    Raises:
        SegcliError: (one line naming the file) ``kind`` is tags or masks or unknown; ``path``
            matches no format of the kind; a file is malformed; a class is unknown; an image is
            not in ``spec.image_sizes`` (the first one and their count); a size disagrees; a point
            is outside its image; a box is empty after clipping.
    """
    if kind == "tags":
        raise SegcliError(
            f"{path}: image-level tags are not supported (class activation maps are"
            " not done; see docs/weak-labels.md)"
        )
    if kind == "masks":
        raise SegcliError(f"{path}: full masks need no weak-label reader (dataset.labels=masks)")
    if kind not in EXPECTED:
        raise SegcliError(f"{path}: unknown label kind {kind!r} (boxes, points or scribbles)")
    path = Path(path)
    if not path.exists():
        raise SegcliError(f"{path}: no such file or folder (expected {EXPECTED[kind]})")
    reader = {"boxes": _read_boxes, "points": _read_points, "scribbles": _read_scribbles}[kind]
    return reader(path, spec)


# boxes ----------------------------------------------------------------------------------------


def _read_boxes(path: Path, spec: LabelSpec) -> dict[str, ImageLabels]:
    """COCO JSON (a file), VOC XML or YOLO txt (a folder; not both)."""
    if path.is_file() and path.suffix.lower() == ".json":
        return _boxes_of(*_coco(path, spec), spec)
    xml = sorted(path.glob("*.xml")) if path.is_dir() else []
    txt = sorted(p for p in path.glob("*.txt") if p.name != "classes.txt") if path.is_dir() else []
    if xml and txt:
        raise SegcliError(f"{path}: has both *.xml (VOC) and *.txt (YOLO) files; expected one kind")
    if xml:
        return _boxes_of(*_voc(xml, spec), spec)
    if txt:
        return _boxes_of(*_yolo(path, txt, spec), spec)
    raise SegcliError(f"{path}: not box labels (expected {EXPECTED['boxes']})")


_Box = tuple[str, tuple[float, float, float, float], int, str]  # key, x1 y1 x2 y2, class, where


def _boxes_of(keys: dict[str, Path], boxes: list[_Box], spec: LabelSpec) -> dict[str, ImageLabels]:
    """Boxes clipped to their image, grouped by image (every key, boxes or not)."""
    per_image: dict[str, tuple[list, list]] = {k: ([], []) for k in keys}
    for key, (x1, y1, x2, y2), cls, where in boxes:
        h, w = spec.image_sizes[key]
        clipped = (min(max(x1, 0), w), min(max(y1, 0), h), min(max(x2, 0), w), min(max(y2, 0), h))
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            raise SegcliError(
                f"{where}: box x1, y1, x2, y2 = {x1:g}, {y1:g}, {x2:g}, {y2:g} is"
                f" empty once clipped to image {key!r} ({w}x{h} pixels)"
            )
        per_image[key][0].append(clipped)
        per_image[key][1].append(cls)
    return {k: ImageLabels.of_boxes(b, c) for k, (b, c) in per_image.items()}


def _check_size(file: Path, key: str, size: tuple[int, int] | None, spec: LabelSpec) -> None:
    """An annotation's (height, width), when given, is the image's as read."""
    if size is not None and tuple(size) != tuple(spec.image_sizes[key]):
        h, w = spec.image_sizes[key]
        raise SegcliError(
            f"{file}: image {key!r} is {size[1]}x{size[0]} (width x height) here"
            f" but {w}x{h} pixels as read"
        )


def _coco(path: Path, spec: LabelSpec) -> tuple[dict[str, Path], list[_Box]]:
    """A COCO JSON's images (annotated or not) and boxes; category -> class by name."""
    sizes, records = coco_boxes(path)
    keys: dict[str, Path] = {}
    for file_name in sizes:
        _add_key(keys, _key(file_name, spec), path)
    _check_known(keys, spec)
    for file_name, size in sizes.items():
        _check_size(path, _key(file_name, spec), size, spec)
    classes = _Classes(spec)
    return keys, [
        (_key(r.image, spec), r.coords, classes.named(r.label, r.where, "category"), r.where)
        for r in records
    ]


def _voc(files: list[Path], spec: LabelSpec) -> tuple[dict[str, Path], list[_Box]]:
    """VOC XML files: key the file's stem, <size> checked, object name -> class."""
    parsed = [(f, *voc_boxes(f)) for f in files]
    keys = {f.stem: f for f in files}
    _check_known(keys, spec)
    classes, boxes = _Classes(spec), []
    for file, size, records in parsed:
        _check_size(file, file.stem, size, spec)
        boxes += [
            (file.stem, r.coords, classes.named(r.label, r.where, "object name"), r.where)
            for r in records
        ]
    return keys, boxes


def _yolo_class_of(folder: Path, spec: LabelSpec) -> Callable[[int, str], int]:
    """YOLO class id -> class index: by the names of classes.txt/data.yaml when there is one,
    else id k = the k-th class of ``class_names`` not counting ``background_class``."""
    classes, found = _Classes(spec), yolo_names(folder)
    if found is None:
        ids = [k for k in range(len(classes.names)) if k != spec.background_class]

        def by_order(cid: int, where: str) -> int:
            if cid >= len(ids):
                raise SegcliError(
                    f"{where}: class id {cid} >= {len(ids)}, the number of classes"
                    " other than background (no classes.txt or data.yaml names)"
                )
            return ids[cid]

        return by_order
    file, names = found

    def by_name(cid: int, where: str) -> int:
        if cid >= len(names) or not names[cid]:
            raise SegcliError(f"{where}: class id {cid} has no name in {file}")
        return classes.named(names[cid], f"{where} (names of {file})", "class")

    return by_name


def _yolo(folder: Path, files: list[Path], spec: LabelSpec):
    """YOLO txt files: key the file's stem, normalised centre/size -> pixel edges."""
    parsed = [yolo_boxes(f) for f in files]
    keys = {f.stem: f for f in files}
    _check_known(keys, spec)
    class_of, boxes = _yolo_class_of(folder, spec), []
    for file, records in zip(files, parsed, strict=True):
        h, w = spec.image_sizes[file.stem]
        for r in records:
            cx, cy, bw, bh = r.coords
            xyxy = ((cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h)
            boxes.append((file.stem, xyxy, class_of(r.label, r.where), r.where))
    return keys, boxes


# points and scribbles -------------------------------------------------------------------------


def _labelme(folder: Path, kinds: tuple[str, ...], spec: LabelSpec):
    """The labelme files of a folder: ({key: file}, [(key, record)]), keys from imagePath."""
    keys: dict[str, Path] = {}
    shapes: list[tuple[str, Record]] = []
    for file in sorted(folder.glob("*.json")):
        image, records = labelme_shapes(file, kinds)
        key = _key(image, spec) if image != file.name else file.stem
        _add_key(keys, key, file)
        shapes += [(key, r) for r in records]
    _check_known(keys, spec)
    return keys, shapes


def _read_points(path: Path, spec: LabelSpec) -> dict[str, ImageLabels]:
    """A point table (CSV or JSON, class by name or index) or labelme ``point`` shapes."""
    classes = _Classes(spec)
    if path.is_file() and path.suffix.lower() in (".csv", ".json"):
        records = (csv_points if path.suffix.lower() == ".csv" else json_points)(path)
        keys = {_key(r.image, spec): path for r in records}
        _check_known(keys, spec)
        points = [
            (_key(r.image, spec), r.coords, classes.value(r.label, r.where), r.where)
            for r in records
        ]
    elif path.is_dir() and any(path.glob("*.json")):
        keys, shapes = _labelme(path, ("point",), spec)
        points = [
            (key, tuple(xy), classes.named(r.label, r.where), r.where)
            for key, r in shapes
            for xy in r.coords
        ]
    else:
        raise SegcliError(f"{path}: not point labels (expected {EXPECTED['points']})")
    masks = {k: np.full(spec.image_sizes[k], spec.ignore_index, np.int64) for k in keys}
    for key, (x, y), cls, where in points:
        row, col = _pixel(key, x, y, where, spec)
        masks[key][row, col] = cls
    return {k: ImageLabels.of_sparse(m) for k, m in masks.items()}


def _pixel(key: str, x: float, y: float, where: str, spec: LabelSpec) -> tuple[int, int]:
    """(row, column) of the pixel containing point (x, y): (floor(y), floor(x)), or an error."""
    h, w = spec.image_sizes[key]
    if not (0 <= x < w and 0 <= y < h):
        raise SegcliError(
            f"{where}: point x={x:g}, y={y:g} is outside image {key!r} ({w}x{h}"
            " pixels; x is the column, y the row)"
        )
    return int(np.floor(y)), int(np.floor(x))


def _read_scribbles(path: Path, spec: LabelSpec) -> dict[str, ImageLabels]:
    """A folder of labelme JSON files or, when it has none, of sparse mask PNGs. labelme saves its
    JSON beside the image, so a folder with both is labelme's (its PNGs are the images)."""
    if path.is_dir() and any(path.glob("*.json")):
        return _labelme_scribbles(path, spec)
    pngs = sorted(path.glob("*.png")) if path.is_dir() else []
    if not pngs:
        raise SegcliError(f"{path}: not scribble labels (expected {EXPECTED['scribbles']})")
    if spec.decode_mask is None:
        raise SegcliError(f"{path}: scribble PNGs need the dataset's mask decoding (decode_mask)")
    keys = {p.stem: p for p in pngs}
    _check_known(keys, spec)
    labels = {}
    for key, png in keys.items():
        mask = np.asarray(spec.decode_mask(png))
        if mask.shape != tuple(spec.image_sizes[key]):
            h, w = spec.image_sizes[key]
            raise SegcliError(
                f"{png}: scribble mask is {mask.shape[1::-1]} (width, height), its"
                f" image {key!r} is {w}x{h} pixels"
            )
        labels[key] = ImageLabels.of_sparse(mask.astype(np.int64))
    return labels


def _labelme_scribbles(folder: Path, spec: LabelSpec) -> dict[str, ImageLabels]:
    """labelme ``line``/``linestrip`` shapes as open polylines and ``point`` shapes as filled
    circles, both ``2 * (scribble_width // 2) + 1`` pixels wide (scribble_width when odd: OpenCV
    draws a line of ``thickness`` t as ``2 * ceil(t / 2) + 1`` pixels, so it gets t = width - 1),
    with ``cv2.LINE_8``, in the shapes' order (the later wins). Coordinates are floored to the
    pixel containing them; lines are clipped to the image, points outside it are an error.
    labelme writes no ``polyline`` type."""
    classes, half = _Classes(spec), max(int(spec.scribble_width), 1) // 2
    keys, shapes = _labelme(folder, ("line", "linestrip", "point"), spec)
    masks = {k: np.full(spec.image_sizes[k], spec.ignore_index, np.int32) for k in keys}
    for key, r in shapes:
        cls = classes.named(r.label, r.where)
        if r.kind == "point":
            for x, y in r.coords:
                row, col = _pixel(key, x, y, r.where, spec)
                cv2.circle(masks[key], (col, row), half, cls, thickness=-1, lineType=cv2.LINE_8)
        else:
            pts = np.floor(r.coords).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(
                masks[key], [pts], False, cls, thickness=max(2 * half, 1), lineType=cv2.LINE_8
            )
    return {k: ImageLabels.of_sparse(m) for k, m in masks.items()}
