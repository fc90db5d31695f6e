"""The weak-label annotation files as they are written, parsed into plain records (names, numbers,
in the file's own units); weak/readers.py gives them their meaning (classes, pixels, masks).

Our own code: these are annotation-file conventions (COCO's bbox JSON, PASCAL VOC's XML, YOLO's
txt, point tables, labelme's JSON) and no library reads them all, with errors that name the file
and line. Every problem is a one-line ``SegcliError`` naming the file (and entry or line).
"""

from __future__ import annotations

import csv
import json
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from segcli.errors import SegcliError


@dataclass(frozen=True)
class Record:
    """One label of one image, as written.

    Attributes:
        image: the image's name as the file gives it (a file name, a path or a stem).
        label: a class name or an integer class id, as written.
        coords: the numbers (boxes: ``x1, y1, x2, y2``; YOLO: ``cx, cy, w, h`` normalised;
            points: ``x, y``; labelme shapes: ``(N, 2)`` float64 ``x, y``).
        where: ``FILE``, ``FILE:LINE`` or ``FILE: entry N`` for messages.
        kind: labelme's ``shape_type``, else "".
    """

    image: str
    label: str | int
    coords: tuple[float, ...] | np.ndarray
    where: str
    kind: str = ""


def _short(exc: BaseException) -> str:
    """An exception's message on one line, at most 80 characters."""
    return " ".join(str(exc).split())[:80] or type(exc).__name__


def load_json(path: Path, what: str) -> object:
    """The JSON value of ``path``; ``what`` names the expected format in errors."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SegcliError(f"{path}: cannot read the {what} file ({exc.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SegcliError(f"{path}: not a JSON file ({_short(exc)}; expected {what})") from None


def _number(value, where: str, name: str) -> float:
    """A finite number (not a bool) or a one-line error."""
    try:
        number = float("nan" if isinstance(value, bool) else value)
    except (TypeError, ValueError):
        number = float("nan")
    if math.isnan(number):
        raise SegcliError(f"{where}: {name} {value!r} is not a number")
    if not math.isfinite(number):
        raise SegcliError(f"{where}: {name} {value!r} is not a finite number")
    return number


def _list_of_dicts(path: Path, data: dict, key: str, fields: tuple[str, ...]) -> list[dict]:
    """``data[key]``, a list of objects having ``fields``."""
    entries = data.get(key)
    if not isinstance(entries, list):
        raise SegcliError(
            f'{path}: no "{key}" list (a COCO JSON has images, annotations, categories)'
        )
    for n, entry in enumerate(entries):
        missing = [f for f in fields if not isinstance(entry, dict) or f not in entry]
        if missing:
            raise SegcliError(f'{path}: "{key}"[{n}] has no "{missing[0]}"')
    return entries


def coco_boxes(path: Path) -> tuple[dict[str, tuple[int, int] | None], list[Record]]:
    """A COCO JSON's images and boxes (https://cocodataset.org/#format-data, "Object Detection").

    Returns:
        ``{file_name: (height, width) or None}`` of every listed image (annotated or not) and one
        ``Record`` per annotation: ``image`` its image's file_name, ``label`` its category name,
        ``coords`` ``x1, y1, x2, y2`` = ``x, y, x + w, y + h`` pixel edges of ``bbox [x, y, w, h]``.
        ``iscrowd`` annotations are kept; ``segmentation`` is not read.

    Raises:
        SegcliError: not JSON, no images/annotations/categories lists or keys, an unknown
            image_id or category_id, a bbox that is not 4 numbers with w, h >= 0.
    """
    data = load_json(path, "COCO JSON")
    if not isinstance(data, dict):
        raise SegcliError(
            f"{path}: expected a COCO JSON object with images, annotations, categories"
        )
    images = _list_of_dicts(path, data, "images", ("id", "file_name"))
    anns = _list_of_dicts(path, data, "annotations", ("image_id", "category_id", "bbox"))
    categories = {
        c["id"]: str(c["name"]) for c in _list_of_dicts(path, data, "categories", ("id", "name"))
    }
    file_names, sizes = {}, {}
    for im in images:
        file_names[im["id"]] = str(im["file_name"]).replace("\\", "/")
        h, w = im.get("height"), im.get("width")
        sizes[file_names[im["id"]]] = (int(h), int(w)) if h and w else None
    records = []
    for n, ann in enumerate(anns):
        where = f"{path}: annotation {ann.get('id', f'#{n}')}"
        if ann["image_id"] not in file_names:
            raise SegcliError(f"{where} has image_id {ann['image_id']!r}, not in images")
        if ann["category_id"] not in categories:
            raise SegcliError(f"{where} has category_id {ann['category_id']!r}, not in categories")
        bbox = ann["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise SegcliError(f"{where}: bbox {bbox!r} is not [x, y, width, height]")
        x, y, w, h = (_number(v, where, "bbox value") for v in bbox)
        if w < 0 or h < 0:
            raise SegcliError(f"{where}: bbox {bbox!r} has a negative width or height")
        image = file_names[ann["image_id"]]
        records.append(Record(image, categories[ann["category_id"]], (x, y, x + w, y + h), where))
    return sizes, records


def _voc_text(node: ET.Element, tag: str, path: Path, where: str) -> str:
    """The text of ``node``'s child ``tag`` (VOC XML), or a one-line error."""
    child = node.find(tag)
    if child is None or not (child.text or "").strip():
        raise SegcliError(f"{path}: {where} has no <{tag}>")
    return child.text.strip()


def voc_boxes(path: Path) -> tuple[tuple[int, int] | None, list[Record]]:
    """A PASCAL VOC annotation XML (the VOC2012 devkit doc, "Annotation": ``<size>``, ``<object>``
    with ``<name>`` and ``<bndbox>`` ``xmin ymin xmax ymax``).

    The devkit's boxes are 1-based pixel indices of the first and last pixel, inclusive (its
    evaluation takes a box's width as ``xmax - xmin + 1``), so in pixel edges ``x1 = xmin - 1``,
    ``y1 = ymin - 1``, ``x2 = xmax``, ``y2 = ymax``. ``<difficult>1`` objects are kept.

    Returns:
        ``(height, width)`` of ``<size>`` (None when absent or 0, as some tools write) and one
        ``Record`` per object (``image`` the xml's stem, ``label`` its name, ``coords`` edges).

    Raises:
        SegcliError: not XML (e.g. truncated), not ``<annotation>``, an object without a name or
            a bndbox coordinate.
    """
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise SegcliError(
            f"{path}: not a readable XML file ({_short(exc)}; expected a PASCAL VOC annotation)"
        ) from None
    if root.tag != "annotation":
        raise SegcliError(f"{path}: root element <{root.tag}>, expected a VOC <annotation>")
    size = None
    if root.find("size") is not None:
        node = root.find("size")
        h, w = (
            _number(_voc_text(node, t, path, "<size>"), str(path), t) for t in ("height", "width")
        )
        size = (int(h), int(w)) if h > 0 and w > 0 else None
    records = []
    for n, obj in enumerate(root.iter("object")):
        where = f"{path}: object {n + 1}"
        name = _voc_text(obj, "name", path, f"object {n + 1}")
        box = obj.find("bndbox")
        if box is None:
            raise SegcliError(f"{where} ({name}) has no <bndbox>")
        xmin, ymin, xmax, ymax = (
            _number(_voc_text(box, t, path, f"object {n + 1}"), where, t)
            for t in ("xmin", "ymin", "xmax", "ymax")
        )
        records.append(Record(path.stem, name, (xmin - 1, ymin - 1, xmax, ymax), where))
    return size, records


def yolo_boxes(path: Path, tolerance: float = 1e-3) -> list[Record]:
    """A YOLO label file (Ultralytics' "YOLO format": one ``class cx cy w h`` line per box, the
    centre and size normalised by the image's width and height; empty lines skipped).

    Returns:
        One ``Record`` per line: ``image`` the file's stem, ``label`` the integer class id,
        ``coords`` ``cx, cy, w, h`` in 0..1.

    Raises:
        SegcliError: ``FILE:LINE`` of a line without 5 fields (a segmentation polygon line, say),
            a non-integer class, a non-number, or a value outside 0..1 (beyond ``tolerance``).
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SegcliError(f"{path}: cannot read as a YOLO label file ({_short(exc)})") from None
    records = []
    for n, line in enumerate(lines, 1):
        fields, where = line.split(), f"{path}:{n}"
        if not fields:
            continue
        if len(fields) != 5:
            raise SegcliError(f"{where}: {len(fields)} fields, expected 'class cx cy w h'")
        if not fields[0].isdigit():
            raise SegcliError(f"{where}: class {fields[0]!r} is not an integer id")
        values = tuple(
            _number(v, where, name) for v, name in zip(fields[1:], ("cx", "cy", "w", "h"))
        )
        if any(v < -tolerance or v > 1 + tolerance for v in values):
            raise SegcliError(
                f"{where}: values {' '.join(fields[1:])} are not all in 0..1"
                " (YOLO boxes are normalised by the image size)"
            )
        records.append(Record(path.stem, int(fields[0]), values, where))
    return records


def yolo_names(folder: Path) -> tuple[Path, list[str]] | None:
    """The class names of a YOLO label folder: ``classes.txt`` (labelImg: one name per line) or
    ``data.yaml``/``dataset.yaml`` ``names`` (Ultralytics: a list, or ``{id: name}``), looked for
    in the folder, its parent and grandparent (``dataset/labels/train``), nearest first.

    Returns:
        (the names file, names indexed by class id; ids a ``{id: name}`` skips are ``""``), or
        None when there is none.
    """
    for where in (folder, folder.parent, folder.parent.parent):
        if (where / "classes.txt").is_file():
            file = where / "classes.txt"
            lines = file.read_text(encoding="utf-8").splitlines()
            return file, [ln.strip() for ln in lines if ln.strip()]
        for file in (where / "data.yaml", where / "dataset.yaml"):
            if file.is_file():
                try:
                    names = (yaml.safe_load(file.read_text(encoding="utf-8")) or {}).get("names")
                except (yaml.YAMLError, AttributeError, UnicodeDecodeError) as exc:
                    raise SegcliError(f"{file}: not a YAML mapping ({_short(exc)})") from None
                if isinstance(names, dict) and all(isinstance(k, int) for k in names):
                    return file, [str(names.get(k, "")) for k in range(max(names, default=-1) + 1)]
                if isinstance(names, list):
                    return file, [str(n) for n in names]
                raise SegcliError(
                    f"{file}: no names list or {{id: name}} mapping (Ultralytics data.yaml)"
                )
    return None


def csv_points(path: Path) -> list[Record]:
    """A point table: a CSV file with a header naming ``image``, ``x``, ``y`` and ``class`` (or
    ``label``) columns, in any order (other columns ignored); one point per row.

    Returns:
        One ``Record`` per row: ``label`` the class as written (a name or an index, a string).

    Raises:
        SegcliError: no such header, ``FILE:LINE`` of a row with a missing value or a non-number.
    """
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            header = {(h or "").strip().lower(): h for h in reader.fieldnames or []}
            column = {c: header.get(c) for c in ("image", "x", "y", "class")}
            column["class"] = column["class"] or header.get("label")
            if None in column.values():
                raise SegcliError(
                    f"{path}: header {list(header)} lacks image, x, y and class (or label) columns"
                )
            records = []
            for row in reader:
                where = f"{path}:{reader.line_num}"
                values = {c: (row.get(h) or "").strip() for c, h in column.items()}
                if "" in values.values():
                    raise SegcliError(f"{where}: empty image, x, y or class")
                x, y = (_number(values[c], where, c) for c in ("x", "y"))
                records.append(Record(values["image"], values["class"], (x, y), where))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SegcliError(f"{path}: cannot read as a CSV file ({_short(exc)})") from None
    return records


def json_points(path: Path) -> list[Record]:
    """A point table as JSON: a list of ``{"image", "x", "y", "class"}`` objects (``label``
    accepted for ``class``), or a mapping ``{image: [[x, y, class], ...]}``.

    Returns:
        One ``Record`` per point: ``label`` the class as written (a name or an integer index).

    Raises:
        SegcliError: another JSON shape, ``FILE: entry`` of an entry without those fields or with
            a non-number coordinate.
    """
    data = load_json(path, "points JSON")
    if isinstance(data, dict) and isinstance(data.get("shapes"), list):
        raise SegcliError(f"{path}: a labelme file; give the folder of the labelme JSON files")
    if isinstance(data, list):
        items = [(f"entry {n}", e) for n, e in enumerate(data)]
        entries = [
            (w, e.get("image"), e.get("x"), e.get("y"), e.get("class", e.get("label")))
            if isinstance(e, dict)
            else (w, None, None, None, None)
            for w, e in items
        ]
    elif isinstance(data, dict):
        entries = [
            (
                f"{image!r}[{n}]",
                image,
                *(p if isinstance(p, list) and len(p) == 3 else (None, None, None)),
            )
            for image, points in data.items()
            if isinstance(points, list)
            for n, p in enumerate(points)
        ]
        if len(data) and not entries:
            raise SegcliError(f"{path}: expected {{image: [[x, y, class], ...]}}")
    else:
        raise SegcliError(
            f"{path}: expected a list of {{image, x, y, class}} objects or a"
            " mapping {image: [[x, y, class], ...]}"
        )
    records = []
    for where, image, x, y, label in entries:
        if image is None or x is None or y is None or label is None:
            raise SegcliError(f"{path}: {where} is not {{image, x, y, class}} / [x, y, class]")
        where = f"{path}: {where}"
        records.append(
            Record(str(image), label, (_number(x, where, "x"), _number(y, where, "y")), where)
        )
    return records


def labelme_shapes(path: Path, kinds: tuple[str, ...]) -> tuple[str, list[Record]]:
    """A labelme JSON file's shapes of the given ``shape_type``s (labelme's ``label_file.py``:
    ``shapes`` with ``label``, ``points`` ``[[x, y], ...]`` in pixels, ``shape_type``;
    ``imagePath``). labelme writes ``point``, ``line``, ``linestrip``, ``polygon``,
    ``rectangle``, ``circle``, ``points`` and ``mask``; other types are skipped.

    Returns:
        (``imagePath``, or the JSON's own name when absent; one ``Record`` per kept shape, with
        ``coords`` ``(N, 2)`` float64 and ``kind`` the shape_type).

    Raises:
        SegcliError: not a labelme JSON (no shapes list), a shape without label or points.
    """
    data = load_json(path, "labelme JSON")
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise SegcliError(f'{path}: no "shapes" list (expected a labelme JSON file)')
    image = str(data.get("imagePath") or path.name).replace("\\", "/")  # Windows labelme
    records = []
    for n, s in enumerate(data["shapes"]):
        where = f'{path}: "shapes"[{n}]'
        if not isinstance(s, dict) or "label" not in s or "points" not in s:
            raise SegcliError(f'{where} has no "label" or "points"')
        kind = s.get("shape_type") or "polygon"  # labelme < 3 wrote no shape_type
        if kind not in kinds:
            continue
        try:
            points = np.asarray(s["points"], np.float64)
        except (TypeError, ValueError):
            points = np.zeros(0)
        if points.ndim != 2 or points.shape[1] != 2 or not len(points):
            raise SegcliError(f"{where}: points are not [[x, y], ...]")
        records.append(Record(image, str(s["label"]), points, where, kind))
    return image, records
