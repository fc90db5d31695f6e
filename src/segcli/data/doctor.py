"""``segcli data doctor ROOT``: look at a folder segcli has never seen and say how to train on it.

It finds, in this order: a known benchmark layout (VOC, Cityscapes, ADE20K, CamVid/SegNet: then
it names the built-in dataset); else the image and mask folders (by name, else by content), the
pairing rule (identical names or suffixes on either side), the splits (folders, list files, or
none), and the mask encoding from a sample of masks (data/masks.py's reader: palette indices, gray
values, colours, 0/255, lossy JPEG), with each value's or colour's pixel share. From that it
proposes a ``dataset`` config (all keys of conf/dataset/folder.yaml), runs segcli's own checks on
every file with it (``datasets.check_dataset``: pairing, decoding, sizes, values) and reports.

Written here: no library infers a segmentation dataset's conventions; the rules are the formats'
own (see layouts.py and data/masks.py), the guesses are stated in the report.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segcli.data.layouts import list_images
from segcli.data.masks import read_raw_mask
from segcli.data.readers import IMAGE_EXTENSIONS, SPLITS, default_colors
from segcli.errors import SegcliError

MASK_WORDS = (
    "masks",
    "mask",
    "labels",
    "label",
    "annotations",
    "annotation",
    "annot",
    "gt",
    "groundtruth",
    "ground_truth",
    "segmentation",
    "seg",
    "lbl",
    "targets",
    "target",
    "y",
)
IMAGE_WORDS = (
    "images",
    "image",
    "imgs",
    "img",
    "jpegimages",
    "rgb",
    "inputs",
    "input",
    "x",
    "photos",
)
SAMPLE = 64  # masks read to find the encoding
MAX_CLASSES = 256  # more distinct values or colours than this: not class labels (or lossy noise)
MASK_DEFAULTS = {
    "mask_values": None,
    "reduce_zero_label": False,
    "mask_threshold": None,
    "color_tolerance": None,
    "ignore_index": 255,
}  # the mask keys a proposal sets, before what the sample says
SNAP = 48  # lossy colour masks: colours within this many levels per channel are one class colour


@dataclass
class Diagnosis:
    """What ``diagnose`` found: ``builtin`` (a dataset of conf/dataset that reads this layout) or
    ``config`` (a proposed ``dataset`` group, plain dict), the ``findings`` (one line each, for the
    user), the ``problems`` that stop training (empty when usable) and ``command`` to train."""

    root: Path
    builtin: str | None = None
    config: dict = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    command: str = ""

    @property
    def usable(self) -> bool:
        """A configuration was found and segcli's checks found no problem with it."""
        return bool(self.builtin or self.config) and not self.problems


def diagnose(root: Path) -> Diagnosis:
    """Diagnose the dataset folder ``root`` (see the module docstring).

    Raises:
        SegcliError: ``root`` is not a folder.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise SegcliError(f"{root}: not a folder")
    out = Diagnosis(root)
    builtin = _known_layout(root)
    if builtin:
        out.builtin, note = builtin
        out.findings.append(note)
        out.command = f"segcli train dataset={out.builtin} dataset.root={root}"
        _check(out, {"dataset": {**_builtin_config(out.builtin), "root": str(root)}})
        return out
    folders = _image_and_mask_folders(root)
    if folders is None:
        out.problems.append(
            f"{root}: no pair of image and mask folders found (expected e.g. images/ and masks/, "
            "each flat or with train/ val/ subfolders)"
        )
        return out
    images, masks, split_dirs = folders
    out.findings.append(
        f"images in {images.relative_to(root)}/, masks in {masks.relative_to(root)}/"
        + (f", split folders {', '.join(split_dirs)}" if split_dirs else "")
    )
    first = split_dirs[0] if split_dirs else ""
    image_suffix, mask_suffix, paired, image_count, mask_count = _pairing(
        images / first, masks / first
    )
    rule = (
        "identical names"
        if not (image_suffix or mask_suffix)
        else f"NAME{image_suffix}.* <-> NAME{mask_suffix}.*"
    )
    out.findings.append(
        f"pairing: {rule}: {paired} pairs of {image_count} images and {mask_count} masks"
        + (f" in {first}/" if first else "")
    )
    cfg = {
        "kind": "folder",
        "root": str(root),
        "layout": "image_mask_dirs",
        "image_dir": str(images.relative_to(root)),
        "mask_dir": str(masks.relative_to(root)),
        "image_suffix": image_suffix,
        "mask_suffix": mask_suffix,
        "recursive": False,
        "split_lists": None,
        "val_fraction": 0.2,
    }
    if not split_dirs:
        lists = _split_lists(root)
        if lists:
            cfg["split_lists"] = lists
            out.findings.append(
                "splits: list files " + ", ".join(f"{s}: {p}" for s, p in lists.items())
            )
        else:
            out.findings.append(
                "splits: none; training makes a seeded random 80/20 train/val split (split.json)"
            )
    mask_files = sorted(
        p
        for d in ([masks / s for s in split_dirs] or [masks])
        for p in d.iterdir()
        if p.suffix.lower() in IMAGE_EXTENSIONS
    )
    encoding = _encoding(mask_files, out)
    if encoding is None:
        return out
    cfg.update(encoding)
    out.config = cfg
    _check(out, {"dataset": _complete(cfg)})
    return out


def _known_layout(root: Path) -> tuple[str, str] | None:
    """A built-in dataset that reads ``root`` as it is, and a line saying why."""
    for base in (root, root / "VOCdevkit" / "VOC2012", root / "VOC2012"):
        if (base / "JPEGImages").is_dir() and (base / "SegmentationClass").is_dir():
            where = base.relative_to(root) if base != root else "."
            return (
                "voc",
                f"PASCAL VOC layout ({where}: JPEGImages/, SegmentationClass/ palette PNGs, ImageSets/)",
            )
    if (root / "leftImg8bit").is_dir() and (root / "gtFine").is_dir():
        return (
            "cityscapes",
            "Cityscapes layout (leftImg8bit/, gtFine/ with labelIds or labelTrainIds)",
        )
    for base in (root, root / "ADEChallengeData2016"):
        if (base / "images" / "training").is_dir() and (base / "annotations" / "training").is_dir():
            return (
                "ade20k",
                "ADE20K layout (images/training, annotations/training; 0 = other, ignored)",
            )
    if (root / "train").is_dir() and (root / "trainannot").is_dir():
        return (
            "camvid",
            "CamVid's SegNet layout (train/ + trainannot/, val/ + valannot/, test/ + testannot/)",
        )
    return None


def _builtin_config(name: str) -> dict:
    from segcli.config import compose_config, to_plain

    return to_plain(compose_config([f"dataset={name}", "dataset.root=."]))["dataset"]


def _has_images(folder: Path) -> bool:
    return folder.is_dir() and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.iterdir())


def _image_and_mask_folders(root: Path) -> tuple[Path, Path, list[str]] | None:
    """(image folder, mask folder, split subfolder names): by folder names, else the two folders
    with image files where the one of single-channel files is the masks."""
    subdirs = [d for d in sorted(root.iterdir()) if d.is_dir()]

    def split_names(folder: Path) -> list[str]:
        return [s for s in SPLITS if _has_images(folder / s)]

    candidates = [d for d in subdirs if _has_images(d) or split_names(d)]
    by_word = {d: d.name.lower() for d in candidates}
    masks = next((d for w in MASK_WORDS for d in candidates if by_word[d] == w), None)
    images = next((d for w in IMAGE_WORDS for d in candidates if by_word[d] == w), None)
    if masks is None or images is None:
        rest = [d for d in candidates if d not in (masks, images)]
        for d in rest:
            sample = next(
                (p for p in sorted(d.rglob("*")) if p.suffix.lower() in IMAGE_EXTENSIONS), None
            )
            single = sample is not None and _single_channel(sample)
            if single and masks is None:
                masks = d
            elif not single and images is None:
                images = d
    if masks is None or images is None:
        return None
    splits = [s for s in split_names(images) if (masks / s).is_dir()]
    return images, masks, splits if "train" in splits else []


def _single_channel(path: Path) -> bool:
    try:
        raw = read_raw_mask(path)
    except SegcliError:
        return False
    return raw.pixels.ndim == 2 or raw.palette is not None


def _common_suffix(names: list[str]) -> str:
    """The ``_word`` ending every name shares (``tile1_mask``, ``tile2_mask`` -> ``_mask``), or ''."""
    ends = {n[n.rfind("_") :] if "_" in n else "" for n in names}
    return ends.pop() if len(ends) == 1 else ""


def _pairing(images: Path, masks: Path) -> tuple[str, str, int, int, int]:
    """(image suffix, mask suffix, pairs, images, masks) of the rule that pairs the most files."""
    image_names, mask_names = list(list_images(images)), list(list_images(masks))
    best = ("", "", -1)
    for image_suffix in sorted({"", _common_suffix(image_names)}):  # ties: identical names first
        for mask_suffix in sorted({"", _common_suffix(mask_names)}):
            found = len(
                set(list_images(images, image_suffix)) & set(list_images(masks, mask_suffix))
            )
            if found > best[2]:
                best = (image_suffix, mask_suffix, found)
    return best[0], best[1], best[2], len(image_names), len(mask_names)


def _split_lists(root: Path) -> dict[str, str] | None:
    """``{split: root-relative path}`` of train/val(/test) list files in root, lists/, splits/ or ImageSets/."""
    for folder in (root, root / "lists", root / "splits", root / "ImageSets"):
        found = {
            s: str((folder / f"{s}.txt").relative_to(root))
            for s in SPLITS
            if (folder / f"{s}.txt").is_file()
        }
        if "train" in found and "val" in found:
            return found
    return None


def _encoding(files: list[Path], out: Diagnosis) -> dict | None:
    """Mask settings from a sample of ``files`` (evenly spaced), with findings; None (and a
    problem) when the masks cannot be class labels."""
    if not files:
        out.problems.append("no mask files found")
        return None
    picks = [files[i] for i in np.linspace(0, len(files) - 1, min(SAMPLE, len(files))).astype(int)]
    values, colours, kinds, lossy = Counter(), Counter(), Counter(), False
    for path in picks:
        try:
            raw = read_raw_mask(path)
        except SegcliError as exc:
            out.problems.append(str(exc))
            continue
        lossy |= raw.lossy
        pixels = raw.pixels
        if pixels.ndim == 3 and (pixels[..., :3] == pixels[..., :1]).all():
            pixels = pixels[..., 0]
        kinds[
            raw.describe() if pixels.ndim == 2 else f"{raw.encoding} colour {raw.file_format}"
        ] += 1
        if pixels.ndim == 2:
            v, n = np.unique(pixels, return_counts=True)
            values.update(dict(zip(v.tolist(), n.tolist(), strict=True)))
        else:
            code = pixels[..., :3].reshape(-1, 3).astype(np.int64) @ np.array([65536, 256, 1])
            v, n = np.unique(code, return_counts=True)
            colours.update(dict(zip(v.tolist(), n.tolist(), strict=True)))
    out.findings.append(
        f"masks: {', '.join(f'{k} ({n})' for k, n in kinds.most_common())}, "
        f"{len(picks)} of {len(files)} read"
    )
    if colours and values:
        out.problems.append("masks mix one-channel and colour files; convert them to one encoding")
        return None
    return _colour_settings(colours, lossy, out) if colours else _value_settings(values, lossy, out)


def _shares(counter: Counter, name) -> str:
    total = sum(counter.values())
    return ", ".join(f"{name(k)} {n / total:.1%}" for k, n in counter.most_common(12)) + (
        f", ... ({len(counter)} in all)" if len(counter) > 12 else ""
    )


def _value_settings(values: Counter, lossy: bool, out: Diagnosis) -> dict | None:
    found = sorted(values)
    out.findings.append(f"mask values (pixel share): {_shares(values, str)}")
    base = {**MASK_DEFAULTS, "mask_format": "index"}
    if lossy:  # even a clean sample: other JPEG masks of the set carry noise
        near = sum(n for v, n in values.items() if v < 32 or v > 223) / sum(values.values())
        if near > 0.95:
            out.findings.append(
                f"lossy (JPEG) masks of two levels: {near:.1%} of the pixels are within 32 of 0 or "
                "255 -> binary, dataset.mask_threshold=128"
            )
            return {
                **base,
                "num_classes": 2,
                "class_names": ["background", "foreground"],
                "colors": None,
                "mask_threshold": 128,
                "ignore_index": 254,
            }
        out.problems.append(
            f"lossy (JPEG) masks with {len(found)} values, not two levels near 0 and 255: class "
            "labels cannot be recovered; store masks as PNG"
        )
        return None
    if len(found) > MAX_CLASSES:
        out.problems.append(
            f"{len(found)} distinct mask values: not class labels (images in the mask folder?)"
        )
        return None
    if set(found) <= {0, 255}:
        out.findings.append(
            "binary 0/255 masks -> dataset.mask_values={0: 0, 255: 1}, ignore_index 254"
        )
        return {
            **base,
            "num_classes": 2,
            "class_names": ["background", "foreground"],
            "colors": None,
            "mask_values": {0: 0, 255: 1},
            "ignore_index": 254,
        }
    ignore = 255 if 255 in found else None
    classes = [v for v in found if v != ignore]
    if classes == list(range(len(classes))):
        note = f"class indices 0..{len(classes) - 1}" + (
            ", 255 ignored" if ignore is not None else ""
        )
        out.findings.append(note)
        return {**base, "num_classes": len(classes), "class_names": None, "colors": None}
    mapping = {v: i for i, v in enumerate(classes)}
    if ignore is not None:
        mapping[255] = 255
    out.findings.append(
        f"values {classes[:8]}{'...' if len(classes) > 8 else ''} are not 0..K-1: mapped in order "
        "by dataset.mask_values (rename the classes in class_names)"
    )
    return {
        **base,
        "num_classes": len(classes),
        "class_names": None,
        "colors": None,
        "mask_values": mapping,
    }


def _colour_settings(colours: Counter, lossy: bool, out: Diagnosis) -> dict | None:
    def rgb(code: int) -> list[int]:
        return [(code >> 16) & 255, (code >> 8) & 255, code & 255]

    total = sum(colours.values())
    main = [c for c, n in colours.most_common() if n / total >= 0.001]
    out.findings.append(
        f"colour masks (pixel share): {_shares(colours, lambda c: str(tuple(rgb(c))))}"
    )
    base = {**MASK_DEFAULTS, "mask_format": "rgb"}
    if lossy or len(colours) > MAX_CLASSES:
        main = _colour_centres(colours, total)
        if not main or len(main) > 64:
            out.problems.append(
                f"{len(colours)} distinct colours that do not gather around a few class colours "
                f"(within {SNAP} levels): not a colour code segcli can recover"
            )
            return None
        out.findings.append(
            f"lossy colour masks: {len(colours)} colours gather around {len(main)} class colours; "
            f"dataset.color_tolerance={SNAP} snaps the rest (blends at borders are ignored)"
        )
        base["color_tolerance"] = SNAP
    else:
        main = sorted(colours)
    colors = [rgb(c) for c in main]
    out.findings.append(
        f"{len(colors)} colours -> classes in that order (rename them in class_names)"
    )
    return {**base, "num_classes": len(colors), "class_names": None, "colors": colors}


def _colour_centres(colours: Counter, total: int) -> list[int]:
    """Class colours of lossy colour masks: the most frequent colours, each more than ``SNAP`` levels
    (largest channel difference) from every centre before it and not a blend of two of them (JPEG's
    chroma subsampling mixes neighbouring classes' chroma at their borders: chroma on the segment
    between theirs, luma within theirs, in JPEG's YCbCr), holding 0.5%
    of the pixels with the colours that snap to it. Returns colour codes ``(r << 16) | (g << 8) | b``."""

    def rgb(code: int) -> np.ndarray:
        return np.array([(code >> 16) & 255, (code >> 8) & 255, code & 255], dtype=float)

    def ycbcr(c: np.ndarray) -> np.ndarray:  # JPEG's colour space (ITU-R BT.601, full range)
        return np.array(
            [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]
        ) @ c + [0, 128, 128]

    def between(c: np.ndarray, a: np.ndarray, b: np.ndarray) -> bool:
        """c's chroma on the chroma segment a-b and its luma within theirs: a JPEG blend of a and b."""
        (yc, *cc), (ya, *ca), (yb, *cb) = ycbcr(c), ycbcr(a), ycbcr(b)
        cc, ca, cb = np.array(cc), np.array(ca), np.array(cb)
        t = np.clip(np.dot(cc - ca, cb - ca) / max(np.dot(cb - ca, cb - ca), 1e-9), 0, 1)
        return bool(
            np.abs(cc - (ca + t * (cb - ca))).max() <= 16
            and min(ya, yb) - SNAP <= yc <= max(ya, yb) + SNAP
        )

    centres: dict[int, int] = {}
    for code, n in colours.most_common():
        if n / total < 0.0005 or len(centres) > 64:
            break
        c = rgb(code)
        near = [k for k in centres if np.abs(c - rgb(k)).max() <= SNAP]
        if near:
            centres[near[0]] += n
            continue
        points = [rgb(k) for k in centres]
        if not any(between(c, a, b) for i, a in enumerate(points) for b in points[i + 1 :]):
            centres[code] = n
    return [c for c, n in centres.items() if n / total >= 0.005]


def _complete(cfg: dict) -> dict:
    """``cfg`` over conf/dataset/folder.yaml's keys (so every override of dataset=folder works)."""
    defaults = _builtin_config("folder")
    done = {**defaults, **{k: v for k, v in cfg.items() if k != "root"}, "root": cfg["root"]}
    if done.get("class_names") is None:
        done["class_names"] = [f"class{i}" for i in range(done["num_classes"])]
    if done.get("colors") is None:
        done["colors"] = default_colors(done["num_classes"])
    return done


def _check(out: Diagnosis, cfg: dict) -> None:
    """segcli's own checks of every file with the proposed config; their problems become ours."""
    from segcli.data.datasets import check_dataset

    cfg = {**cfg, "seed": 0, "trainer": {"seed": 0}}
    try:
        found = check_dataset(cfg)
    except SegcliError as exc:
        out.problems.append(str(exc))
        return
    for split, s in found["splits"].items():
        out.findings.append(
            f"{split}: {s['images']} good pairs, {s['bad']} bad; sizes "
            + ", ".join(f"{k} ({n})" for k, n in list(s["sizes"].items())[:3])
        )
    out.problems += found["problems"]
    out.findings += [f"note: {n}" for n in found["notes"]]
    if out.config:
        out.config = cfg["dataset"]
        out.command = (
            f"segcli data doctor {out.root} --write DIR/dataset/NAME.yaml, then "
            "segcli train --config-dir DIR dataset=NAME"
        )


def write_config(diagnosis: Diagnosis, path: Path) -> Path:
    """Write the proposed ``dataset`` group as YAML (a header of the findings as comments), so that
    ``segcli train --config-dir DIR dataset=NAME`` trains when ``path`` is ``DIR/dataset/NAME.yaml``.

    Raises:
        SegcliError: there is no proposed config (a built-in dataset or nothing usable).
    """
    import yaml

    from segcli.files import atomic_write

    if not diagnosis.config:
        what = (
            f"use dataset={diagnosis.builtin}" if diagnosis.builtin else "nothing usable was found"
        )
        raise SegcliError(f"{path}: no config to write ({what})")
    header = [
        f"# segcli data doctor {diagnosis.root}",
        *("# " + re.sub(r"\s+", " ", f) for f in diagnosis.findings),
    ]
    text = "\n".join(header) + "\n" + yaml.safe_dump(diagnosis.config, sort_keys=False, width=100)
    path = Path(path)
    atomic_write(path, lambda f: f.write(text.encode()))
    return path
