"""Which instance annotation format a folder holds, for ``segcli data doctor``."""

from __future__ import annotations

import json
from pathlib import Path

SNIFF_LIMIT = 64 * 2**20  # bytes: larger JSONs are searched for the keys instead of parsed


def _json_keys(path: Path, wanted: tuple[str, ...]) -> bool:
    """Whether a JSON file's top-level object has all ``wanted`` keys (a large file: whether its
    text holds them as ``"key"``, read in chunks)."""
    try:
        if path.stat().st_size <= SNIFF_LIMIT:
            data = json.loads(path.read_text(encoding="utf-8"))
            return isinstance(data, dict) and all(k in data for k in wanted)
        found, tail = set(), b""
        with path.open("rb") as f:
            while len(found) < len(wanted) and (chunk := f.read(2**22)):
                text = tail + chunk
                found |= {k for k in wanted if f'"{k}"'.encode() in text}
                tail = text[-64:]
        return len(found) == len(wanted)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False


def detect_instance_format(root: Path) -> str | None:
    """The instance format of ``root``: ``"coco"`` (an ``annotations/instances_*.json``, or a
    ``*.json`` in ``root`` or ``root/annotations`` with "images" and "annotations"),
    ``"voc_instances"`` (a ``SegmentationObject`` folder), ``"cityscapes_instances"``
    (``gtFine/*/*/*_instanceIds.png``), ``"labelme"`` (``*.json`` files with "shapes"), else None.
    Checked in that order; only the first labelme candidates are opened.
    """
    root = Path(root)
    if not root.is_dir():
        return None
    if any((root / "annotations").glob("instances_*.json")):
        return "coco"
    jsons = sorted(root.glob("*.json"))
    if any(_json_keys(p, ("images", "annotations")) for p in jsons[:20]):
        return "coco"
    if any(
        _json_keys(p, ("images", "annotations"))
        for p in sorted((root / "annotations").glob("*.json"))
    ):
        return "coco"
    if (root / "SegmentationObject").is_dir():
        return "voc_instances"
    if next(root.glob("gtFine/*/*/*_instanceIds.png"), None) is not None:
        return "cityscapes_instances"
    if any(_json_keys(p, ("shapes",)) for p in jsons[:20]):
        return "labelme"
    return None
