"""``segcli data doctor`` for instance annotations: which of segcli's instance formats a folder
holds (``instance_readers.detect_instance_format``, also one level down: ``VOCdevkit/VOC2012``,
labelme's ``train/``, COCO JSONs in split folders), the ``dataset`` choice and overrides that read
it, and a short count: images per split and objects per class in the first ``SAMPLE`` images of
each split, read by the same readers training opens (``instance_datasets.INSTANCE_KINDS``), so
their errors show here. data/doctor.py merges this with the semantic diagnosis.

Formats (conf/dataset/<name>.yaml): ``coco`` (COCO's instances JSON, cocodataset.org/#format-data:
the official layout ``annotations/instances_SPLIT2017.json`` + ``SPLIT2017/``, or any COCO JSON with
its image folder, e.g. an export's ``train/_annotations.coco.json``), ``labelme`` (one folder of
labelme JSON per split), ``voc_instances`` (PASCAL VOC 2012 SegmentationObject),
``cityscapes_instances`` (gtFine ``*_instanceIds.png``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segcli.data.images import IMAGE_EXTENSIONS
from segcli.data.instance_readers.detect import SNIFF_LIMIT, _json_keys
from segcli.data.instances import coco_split_files, detect_instance_format
from segcli.errors import SegcliError

SAMPLE = 3  # images per split whose objects are counted (the doctor stays fast on any dataset)
SHOWN_CLASSES = 8  # classes named in a split's count line
SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "test": "test"}  # folder: split
VOC_NESTS = ("VOCdevkit/VOC2012", "VOC2012")


@dataclass
class InstanceFindings:
    """What ``find_instances`` found: the conf/dataset choice ``dataset`` (coco, labelme,
    voc_instances, cityscapes_instances), the ``root`` it takes as ``dataset.root``, further
    ``overrides`` (``key=value``), the ``findings`` and ``problems`` (one line each)."""

    dataset: str
    root: Path
    overrides: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        """No problem was found with the files the count read."""
        return not self.problems

    @property
    def command(self) -> str:
        """``segcli train task=instance dataset=NAME dataset.root=ROOT [overrides]``."""
        return " ".join(
            ["segcli train task=instance", f"dataset={self.dataset}", f"dataset.root={self.root}"]
            + self.overrides
        )


def find_instances(root: Path) -> InstanceFindings | None:
    """The instance dataset in ``root`` (see the module docstring), counted; None when ``root``
    holds none of segcli's instance formats. Reading errors become ``problems``, never raised."""
    root = Path(root)
    found = detect_instance_format(root)
    if found == "coco" or any(
        detect_instance_format(root / folder) == "coco" for folder in SPLIT_FOLDERS
    ):
        return _coco(root)
    if found in ("voc_instances", "cityscapes_instances"):
        return _index_maps(found, root)
    for nest in VOC_NESTS:
        if detect_instance_format(root / nest) == "voc_instances":
            return _index_maps("voc_instances", root / nest)
    if detect_instance_format(root / "train") == "labelme":
        out = InstanceFindings("labelme", root)
        out.findings.append("labelme JSON folders (train/, val/): polygons, rectangles, circles")
        _count(out, {"kind": "labelme", "root": str(root)}, _splits(root, "test"))
        return out
    if found == "labelme":
        out = InstanceFindings("labelme", root)
        out.findings.append(f"labelme JSON files in {root}/ itself")
        out.problems.append(
            f"{root}: labelme JSON files directly in the folder; dataset=labelme reads one folder "
            "per split: move each JSON with its image into train/ and val/ under it"
        )
        return out
    return None


def _splits(root: Path, optional: str) -> tuple[str, ...]:
    """train and val, and ``optional`` (test) when its folder ``root/optional`` exists."""
    return ("train", "val", *((optional,) if (root / optional).is_dir() else ()))


def _index_maps(name: str, root: Path) -> InstanceFindings:
    """VOC's SegmentationObject or Cityscapes' instanceIds under ``root``, counted."""
    out = InstanceFindings(name, root)
    out.findings.append(
        "PASCAL VOC instances (SegmentationObject/ + SegmentationClass/ PNGs, ImageSets/)"
        if name == "voc_instances"
        else "Cityscapes instances (gtFine/SPLIT/CITY/*_instanceIds.png beside leftImg8bit/)"
    )
    _count(out, {"kind": name, "root": str(root)}, ("train", "val"))
    return out


def _coco(root: Path) -> InstanceFindings:
    """COCO's official layout, else the COCO JSONs of ``root`` (and its annotations/ and split
    folders) with the image folder each one's first ``file_name`` is found in; counted."""
    out = InstanceFindings("coco", root)
    if any((root / "annotations").glob("instances_*.json")):
        files = {}
        for split in ("train", "val", "test"):
            try:
                files[split] = coco_split_files(root, split)
            except SegcliError as exc:
                if split != "test":
                    out.problems.append(str(exc))
        out.findings.append(
            "COCO layout: "
            + ", ".join(f"{a.relative_to(root)} + {d.name}/" for a, d in files.values())
        )
        group = {"kind": "coco", "root": str(root)}
    else:
        files = _coco_files(out)
        group = {"kind": "coco", "root": str(root), "annotations": {}, "images": {}}
        for split, (ann, images) in files.items():
            group["annotations"][split] = str(ann.relative_to(root))
            out.overrides.append(f"dataset.annotations.{split}={ann.relative_to(root)}")
            if images != ann.parent:
                group["images"][split] = str(images.relative_to(root))
                out.overrides.append(f"dataset.images.{split}={images.relative_to(root)}")
    large = {s: a for s, (a, _) in files.items() if a.stat().st_size > SNIFF_LIMIT}
    for split, ann in large.items():
        images = sum(1 for e in os.scandir(files[split][1]) if _is_image(e.name))
        out.findings.append(
            f"{split}: {images} image files; {ann.name} ({ann.stat().st_size / 2**20:.0f} MiB)"
            " not opened here (large)"
        )
    _count(out, group, tuple(s for s in files if s not in large))
    return out


def _is_image(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def _coco_files(out: InstanceFindings) -> dict[str, tuple[Path, Path]]:
    """``{split: (COCO JSON, image folder)}`` of a folder of COCO JSONs: a JSON in a split folder
    (``valid/`` is val) is that split's, else the split its name contains (train, val, test);
    unnamed ones fill train then val; a lone JSON is train and val (said in a finding)."""
    root = out.root
    places = [root, root / "annotations", *(root / folder for folder in SPLIT_FOLDERS)]
    jsons = [
        p
        for d in places
        for p in sorted(d.glob("*.json"))
        if _json_keys(p, ("images", "annotations"))
    ]
    files: dict[str, Path] = {}
    unnamed = []
    for path in jsons:
        folder = path.parent.name.lower() if path.parent.parent == root else ""
        split = SPLIT_FOLDERS.get(folder) or next(
            (s for f, s in SPLIT_FOLDERS.items() if f in path.stem.lower()), None
        )
        if split is None or split in files:
            unnamed.append(path)
        else:
            files[split] = path
    for split in ("train", "val"):
        if split not in files and unnamed:
            files[split] = unnamed.pop(0)
    if "val" not in files and "train" in files:
        files["val"] = files["train"]
        out.findings.append(
            f"note: one annotation file, {files['train'].name}: val is the training images "
            "(no held-out score); split it into two files for one"
        )
    found = {}
    for split, path in files.items():
        images = _image_folder(path, root)
        if images is None:
            out.problems.append(
                f"{path}: the images it names are not in {path.parent}, {root} or a folder of "
                f"{root}; set dataset.images.{split}=FOLDER"
            )
        else:
            found[split] = (path, images)
    out.findings.append(
        "COCO JSON: "
        + ", ".join(
            f"{s}: {a.relative_to(root)} + {d.relative_to(root)}/" for s, (a, d) in found.items()
        )
    )
    return found


def _image_folder(path: Path, root: Path) -> Path | None:
    """The folder that holds the first image a COCO JSON names: its own folder, ``root``, an
    ``images/`` beside either, or another folder of ``root`` (the JSON's folder when it names
    none); None when the JSON cannot be read (its reader says why later) or no folder has it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        first = data["images"][0]["file_name"] if data["images"] else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, IndexError):
        return path.parent
    if first is None:
        return path.parent
    subfolders = sorted(d for d in root.iterdir() if d.is_dir())
    for folder in (path.parent, path.parent / "images", root, root / "images", *subfolders):
        if (folder / str(first)).is_file():
            return folder
    return None


def _count(out: InstanceFindings, group: dict, splits: tuple[str, ...]) -> None:
    """For each split, one finding: images, classes and the objects of each class in its first
    ``SAMPLE`` images (crowd regions counted apart), read as training reads them; a reader's
    error is a problem."""
    from segcli.data.instance_datasets import INSTANCE_KINDS

    opener, classes = INSTANCE_KINDS.get(group["kind"]), None
    for split in splits:
        try:
            source = opener(group, split, classes)
            classes = classes or source.class_names
            objects, crowd = np.zeros(len(source.class_names), np.int64), 0
            seen = min(SAMPLE, len(source))
            for i in range(seen):
                _, ann = source.load(i)
                objects += np.bincount(ann.labels[~ann.iscrowd], minlength=len(objects))
                crowd += int(ann.iscrowd.sum())
        except SegcliError as exc:
            out.problems.append(str(exc))
            continue
        named = [f"{n} {int(c)}" for n, c in zip(source.class_names, objects) if c > 0]
        more = f", +{len(named) - SHOWN_CLASSES} classes" if len(named) > SHOWN_CLASSES else ""
        scope = "objects" if seen == len(source) else f"objects in the first {seen}"
        out.findings.append(
            f"{split}: {_plural(len(source), 'image')}, "
            f"{_plural(len(source.class_names) - 1, 'class')}; {scope}: "
            f"{', '.join(named[:SHOWN_CLASSES]) or 'none'}{more}"
            + (f" (+{_plural(crowd, 'crowd region')})" if crowd else "")
        )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}{'es' if word.endswith('s') else 's'}"
