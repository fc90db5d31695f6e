"""labelme JSON files (https://github.com/wkentaro/labelme, ``labelme/label_file.py``): ``shapes``
(``label``, ``points`` ``[[x, y], ...]`` in pixels, ``shape_type``, ``group_id``), ``imagePath``
(relative to the JSON), ``imageData`` (the base64 image file, optional), ``imageHeight`` and
``imageWidth``. Shapes are rasterised as labelme's ``shape_to_mask`` does (polygon, rectangle from
two corners, circle from centre and a point on it), with OpenCV; images are read with their EXIF
orientation applied, as labelme shows them (its points are in that frame).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from segcli.data.instance_readers.base import (
    InstanceAnnotations,
    InstanceSource,
    annotations,
    check_size,
)
from segcli.errors import SegcliError

SHAPE_TYPES = ("polygon", "rectangle", "circle")  # the area shapes; points and lines are skipped


@dataclass
class _Shape:
    label: str
    group_id: int | None
    shape_type: str
    points: np.ndarray  # (N, 2) float64 x, y


@dataclass
class _File:
    path: Path
    image_path: str
    size: tuple[int, int] | None  # (imageHeight, imageWidth) when given
    shapes: list[_Shape]


def _parse(path: Path) -> _File:
    """A labelme JSON's image reference and area shapes (one-line errors naming the file)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SegcliError(f"{path}: not a readable JSON file ({str(exc)[:80]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise SegcliError(f'{path}: no "shapes" list (expected a labelme JSON file)')
    shapes = []
    for n, s in enumerate(data["shapes"]):
        if not isinstance(s, dict) or "label" not in s or "points" not in s:
            raise SegcliError(f'{path}: "shapes"[{n}] has no "label" or "points"')
        kind = s.get("shape_type") or "polygon"  # labelme < 3 wrote no shape_type
        if kind not in SHAPE_TYPES:
            continue
        points = np.asarray(s["points"], np.float64)
        if points.ndim != 2 or points.shape[1] != 2:
            raise SegcliError(f'{path}: "shapes"[{n}] points are not [[x, y], ...]')
        shapes.append(_Shape(str(s["label"]), s.get("group_id"), kind, points))
    h, w = data.get("imageHeight"), data.get("imageWidth")
    size = (int(h), int(w)) if h is not None and w is not None else None
    image_path = str(data.get("imagePath") or "").replace("\\", "/")  # Windows labelme
    return _File(path, image_path, size, shapes)


def _rasterise(shape: _Shape, size: tuple[int, int]) -> np.ndarray:
    """``(H, W) uint8`` 0/1 mask of a shape; points rounded to the nearest pixel."""
    mask = np.zeros(size, np.uint8)
    pts = np.round(shape.points).astype(np.int32)
    if shape.shape_type == "circle":
        if len(pts) >= 2:
            radius = float(np.hypot(*(shape.points[1] - shape.points[0])))
            cv2.circle(mask, tuple(int(v) for v in pts[0]), round(radius), 1, thickness=-1)
    elif shape.shape_type == "rectangle":
        if len(pts) >= 2:
            (x1, y1), (x2, y2) = pts[:2].min(0), pts[:2].max(0)
            cv2.fillPoly(mask, [np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.int32)], 1)
    elif len(pts) >= 3:
        cv2.fillPoly(mask, [pts], 1)
    return mask


def _read_image(file: _File) -> np.ndarray:
    """The image file beside the JSON or, when missing, its ``imageData``: ``(H, W, 3) uint8``."""
    image_file = file.path.parent / file.image_path if file.image_path else None
    if image_file is not None and image_file.is_file():
        source, what = image_file, image_file
    else:
        data = json.loads(file.path.read_text(encoding="utf-8")).get("imageData")
        if not data:
            raise SegcliError(
                f"{file.path}: image {image_file} is missing and there is no imageData"
            )
        try:
            source, what = (
                io.BytesIO(base64.b64decode(data, validate=False)),
                f"{file.path} imageData",
            )
        except (binascii.Error, ValueError):
            raise SegcliError(f"{file.path}: imageData is not base64") from None
    try:
        with Image.open(source) as im:
            return np.array(ImageOps.exif_transpose(im).convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise SegcliError(f"{what}: cannot read as an image") from None


class LabelmeSource(InstanceSource):
    """The labelme JSON files of a folder (``*.json``, sorted; all parsed up front).

    Classes: ``class_names`` (background first; a shape labelled as the first name is ignored)
    or, when None, ``background`` + the sorted unique labels of all files' area shapes. Shapes with
    the same non-null ``group_id`` and label are one object; other shapes are one object each.
    ``point``/``line``/``linestrip`` (and ``mask``) shapes are skipped; empty masks are dropped.
    ``category_ids`` are the class indices 1..C-1.

    Raises:
        SegcliError: (one line naming the file) the folder has no JSON files, a file is not a
            labelme JSON, a label is not in ``class_names``, an image is missing with no
            ``imageData``, or its size differs from imageHeight/imageWidth (on ``load``).
    """

    def __init__(self, folder: Path, class_names: Sequence[str] | None = None) -> None:
        self.folder = Path(folder)
        self._files = [_parse(p) for p in sorted(self.folder.glob("*.json"))]
        if not self._files:
            raise SegcliError(f"{self.folder}: no labelme *.json files")
        if class_names is None:
            labels = {s.label for f in self._files for s in f.shapes} - {"background"}
            class_names = ["background", *sorted(labels)]
        self.class_names = list(class_names)
        if not self.class_names:
            raise SegcliError(f"{self.folder}: class_names is empty (background first)")
        self._class_of = {n: k for k, n in enumerate(self.class_names) if k > 0}
        for f in self._files:
            for s in f.shapes:
                if s.label not in self._class_of and s.label != self.class_names[0]:
                    raise SegcliError(
                        f"{f.path}: label {s.label!r} is not a class ({', '.join(class_names)})"
                    )
        self.category_ids = list(range(1, len(self.class_names)))

    def __len__(self) -> int:
        return len(self._files)

    def name(self, i: int) -> str:
        return self._files[i].path.stem

    def file_name(self, i: int) -> str:
        f = self._files[i]
        return Path(f.image_path).name if f.image_path else f"{f.path.stem}.png"

    def load(self, i: int) -> tuple[np.ndarray, InstanceAnnotations]:
        f = self._files[i]
        image = _read_image(f)
        size = image.shape[:2]
        if f.size is not None:
            check_size(f.path, image, f.size, "imageHeight/imageWidth")
        objects: dict[object, tuple[int, np.ndarray]] = {}
        for n, s in enumerate(f.shapes):
            if s.label not in self._class_of:
                continue
            key = (s.label, s.group_id) if s.group_id is not None else n
            label, mask = objects.get(key, (self._class_of[s.label], np.zeros(size, np.uint8)))
            objects[key] = (label, mask | _rasterise(s, size))
        kept = [(label, mask) for label, mask in objects.values() if mask.any()]
        return image, annotations([m for _, m in kept], [c for c, _ in kept], size)
