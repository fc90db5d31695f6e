"""``segcli data doctor ROOT``: look at a folder segcli has never seen and say how to train on it.

It finds, in this order: a known benchmark layout (CamVid/SegNet, VOC, Cityscapes, ADE20K, as
data/layouts.py's ``LAYOUTS`` describe them: then it names the built-in dataset); else the image and
mask folders (by name, else by content), the pairing rule (identical names or suffixes on either
side), the splits (folders, list files, or none), and the mask encoding from a sample of masks
(data/mask_guess.py: palette indices, gray values, colours, 0/255, lossy JPEG), with each value's or
colour's pixel share. From that it
proposes a ``dataset`` config (all keys of conf/dataset/folder.yaml), runs segcli's own checks on
every file with it (``datasets.check_dataset``: pairing, decoding, sizes, values) and reports.

Instance annotations (COCO JSON, labelme, VOC SegmentationObject, Cityscapes instanceIds) are found
by data/instance_doctor.py: when the semantic diagnosis is usable they are an extra finding with
their ``task=instance`` command; otherwise they are the diagnosis (``task`` "instance").

Written here: no library infers a segmentation dataset's conventions; the rules are the formats'
own (see layouts.py and data/masks.py), the guesses are stated in the report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from segcli.data.images import IMAGE_EXTENSIONS, read_raw_mask
from segcli.data.layouts import LAYOUTS
from segcli.data.mask_guess import guess_encoding
from segcli.data.pairing import list_images
from segcli.data.settings import SPLITS, default_colors
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


@dataclass
class Diagnosis:
    """What ``diagnose`` found: ``builtin`` (a dataset of conf/dataset that reads this layout) or
    ``config`` (a proposed ``dataset`` group, plain dict), the ``findings`` (one line each, for the
    user), the ``problems`` that stop training (empty when usable), ``command`` to train and the
    ``task`` it trains (semantic, or instance for an instance dataset of conf/dataset)."""

    root: Path
    builtin: str | None = None
    config: dict = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    command: str = ""
    task: str = "semantic"

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
    from segcli.data.instance_doctor import find_instances

    semantic = _semantic(root)
    instances = find_instances(root)
    return semantic if instances is None else _with_instances(semantic, instances)


def _with_instances(out: Diagnosis, found) -> Diagnosis:
    """Merge ``instance_doctor.find_instances``'s ``found`` into the semantic diagnosis ``out``:
    an extra finding when ``out`` is usable (or found something while the instances have
    problems), else the instance dataset becomes the diagnosis."""
    found_semantic = bool(out.builtin or out.config)
    if out.usable or (found_semantic and not found.usable):
        out.findings += [
            f"{'instances,' if i else 'instance annotations too:'} {line}"
            for i, line in enumerate(found.findings)
        ]
        out.findings += [f"instance problem: {line}" for line in found.problems]
        out.findings.append(f"train instances with: {found.command}")
        return out
    notes = [f"note: not usable as dataset={out.builtin}: {p}" for p in out.problems[:1]]
    return Diagnosis(
        out.root,
        builtin=found.dataset,
        findings=found.findings + (notes if out.builtin else []),
        problems=found.problems,
        command=found.command,
        task="instance",
    )


def _semantic(root: Path) -> Diagnosis:
    """The semantic diagnosis of ``root``: a benchmark layout, else image and mask folders."""
    out = Diagnosis(root)
    if _known_layout(out):
        return out
    folders = _image_and_mask_folders(root)
    if folders is None:
        out.problems.append(
            f"{root}: no pair of image and mask folders found (expected e.g. images/ and masks/, "
            "each flat or with train/ val/ subfolders)"
        )
        return out
    images, masks, split_dirs = folders
    cfg = _folder_config(out, images, masks, split_dirs)
    _channels(out, cfg, images, split_dirs)
    _extra_inputs(out, images, masks, split_dirs)
    mask_files = sorted(
        p
        for d in ([masks / s for s in split_dirs] or [masks])
        for p in d.iterdir()
        if p.suffix.lower() in IMAGE_EXTENSIONS
    )
    encoding = guess_encoding(mask_files, out)
    if encoding is None:
        return out
    cfg.update(encoding)
    out.config = cfg
    _check(out, {"dataset": _complete(cfg)})
    return out


def _known_layout(out: Diagnosis) -> bool:
    """Whether a built-in dataset reads ``out.root`` as it is (a benchmark ``Layout`` of
    data/layouts.py recognised by its folders); if so it is named, with a line saying why, and
    checked."""
    root = out.root
    for name in LAYOUTS.names():
        layout = LAYOUTS.get(name)
        base = layout.base(root)
        if base is None:
            continue
        out.builtin = layout.builtin
        out.findings.append(
            layout.summary.format(where=base.relative_to(root) if base != root else ".")
        )
        out.command = f"segcli train dataset={out.builtin} dataset.root={root}"
        _check(out, {"dataset": {**_builtin_config(out.builtin), "root": str(root)}})
        return True
    return False


def _folder_config(out: Diagnosis, images: Path, masks: Path, split_dirs: list[str]) -> dict:
    """The folder keys of a proposed ``dataset`` group (folders, pairing rule, split lists), with
    findings."""
    root = out.root
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
    return cfg


def _channels(out: Diagnosis, cfg: dict, images: Path, split_dirs: list[str]) -> None:
    """Findings on the images' channels (data/channels.py's ``channel_report``); ``channels:
    stored`` in ``cfg`` when they are not 8-bit gray or RGB."""
    from segcli.data.channels import channel_report

    files = sorted(
        p
        for d in ([images / s for s in split_dirs] or [images])
        for p in d.iterdir()
        if p.suffix.lower() in IMAGE_EXTENSIONS
    )
    lines, stored = channel_report(files)
    out.findings += lines
    if stored:
        cfg["channels"] = "stored"
        out.findings.append(
            "channels: stored (every channel at full precision, per-channel statistics of the "
            "training split; docs/channels.md)"
        )


def _extra_inputs(out: Diagnosis, images: Path, masks: Path, split_dirs: list[str]) -> None:
    """Findings on other folders beside the images whose files pair with them by name (a depth
    map per frame): candidates for ``dataset.extra_inputs``, named with their channels, not put
    in the config (a folder of previews pairs by name too)."""
    from segcli.data.channels import channel_report

    first = split_dirs[0] if split_dirs else ""
    for folder in sorted(d for d in images.parent.iterdir() if d.is_dir()):
        if folder in (images, masks) or not _has_images(folder / first):
            continue
        image_suffix, suffix, paired, count, _ = _pairing(images / first, folder / first)
        if image_suffix or paired < max(1, count // 2):
            continue
        files = sorted(
            p for p in (folder / first).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS
        )
        lines, _ = channel_report(files, f"{folder.name}/")
        out.findings += lines
        dir_name = folder.relative_to(out.root).as_posix()
        out.findings.append(
            f"{dir_name}/ pairs with the images ({paired} of {count} as NAME{suffix}.*): to stack "
            f"it as input channels, dataset.extra_inputs=[{{dir: {dir_name}, suffix: '{suffix}'}}]"
        )


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
    """The ``_word`` ending every name shares (``tile1_mask``, ``tile2_mask`` -> ``_mask``), or
    ''."""
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
    """``{split: root-relative path}`` of train/val(/test) list files in root, lists/, splits/ or
    ImageSets/."""
    for folder in (root, root / "lists", root / "splits", root / "ImageSets"):
        found = {
            s: str((folder / f"{s}.txt").relative_to(root))
            for s in SPLITS
            if (folder / f"{s}.txt").is_file()
        }
        if "train" in found and "val" in found:
            return found
    return None


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
    ``segcli train --config-dir DIR dataset=NAME`` trains when ``path`` is
    ``DIR/dataset/NAME.yaml``.

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
