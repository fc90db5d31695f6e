"""Where a dataset's image/mask pairs are: the ``layout`` of a ``kind: folder`` dataset config.

- ``image_mask_dirs`` (``dataset=folder``): ``root/<image_dir>[/<split>]`` + ``root/<mask_dir>[/<split>]``
  paired by name, where a file's name is its stem less ``image_suffix`` / ``mask_suffix``
  (``NAME.jpg`` <-> ``NAME_mask.png``: ``mask_suffix=_mask``; ``X_leftImg8bit.png`` <->
  ``X_gtFine_labelIds.png``: both suffixes), in subfolders too with ``recursive``. Splits: split
  folders, or ``split_lists`` (``{train: FILE, val: FILE}``, VOC's ImageSets style: a name per
  line, or ``IMAGE MASK`` paths relative to root), or none: a seeded random split by ``val_fraction``.
  Optional region-of-interest masks in ``roi_dir`` (``NAME<roi_suffix>.*``, flat or per split).
- ``segnet`` (CamVid): ``root/<split>`` + ``root/<split>annot``.
- ``voc``: PASCAL VOC 2012, ``VOCdevkit/VOC2012``: ``JPEGImages/NAME.jpg`` + ``SegmentationClass/NAME.png``
  by ``ImageSets/Segmentation/{train,val}.txt``; with ``aug: true`` the training list is ``aug_list``
  (SBD's augmented set, masks in ``SegmentationClassAug/``), val images left out of it.
- ``cityscapes``: ``leftImg8bit/{train,val}/CITY/X_leftImg8bit.png`` + ``gtFine/{split}/CITY/X_gtFine_labelTrainIds.png``
  when every image of the split has one (already train ids: ``SplitFiles.identity``), else
  ``X_gtFine_labelIds.png`` (mapped by the config's ``mask_values``, the official labelId -> trainId table).
  The public test split has no labels: predict on it, do not score it.
- ``ade20k``: ``ADEChallengeData2016/images/{training,validation}`` + ``annotations/...`` as train and val.

Written here: these are the benchmarks' own folder conventions (MMSegmentation's dataset classes
encode the same rules, but importing them would bring its whole registry and mmcv).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from segcli import console
from segcli.data.readers import IMAGE_EXTENSIONS, SPLITS
from segcli.errors import SegcliError

LAYOUTS = ("image_mask_dirs", "segnet", "voc", "cityscapes", "ade20k")


@dataclass
class SplitFiles:
    """The file pairs of each split of a folder dataset; whether the split was made by segcli
    (``random_split``); the splits whose masks already hold class indices (``identity``: the
    config's ``mask_values`` do not apply); image path -> region-of-interest mask (``rois``)."""

    pairs: dict[str, list[tuple[Path, Path]]] = field(default_factory=dict)
    random_split: bool = False
    identity: set[str] = field(default_factory=set)
    rois: dict[Path, Path] = field(default_factory=dict)

    def as_json(self) -> dict:
        """``{split: [image stems]}`` for split.json."""
        return {s: [img.stem for img, _ in p] for s, p in self.pairs.items()}


def list_images(folder: Path, suffix: str = "", recursive: bool = False) -> dict[str, Path]:
    """Image files in ``folder`` (and its subfolders with ``recursive``) by name, sorted: the
    path relative to ``folder`` without extension and without ``suffix``; files whose stem does
    not end with ``suffix`` are left out."""
    files = folder.rglob("*") if recursive else folder.iterdir()
    out = {}
    for p in sorted(files):
        if not (p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and p.stem.endswith(suffix)):
            continue
        name = p.relative_to(folder).with_suffix("").as_posix()
        out[name[: len(name) - len(suffix)] if suffix else name] = p
    return out


def pair_files(
    image_dir: Path,
    mask_dir: Path,
    problems: list[str] | None = None,
    image_suffix: str = "",
    mask_suffix: str = "",
    recursive: bool = False,
) -> list[tuple[Path, Path]]:
    """Pair ``image_dir/NAME<image_suffix>.*`` with ``mask_dir/NAME<mask_suffix>.*``.

    Args:
        problems: when given, a file without a partner is described here and left out
            instead of raising (``dataset.on_bad_file=skip``, ``segcli data check``).

    Raises:
        SegcliError: a folder is missing or holds no images, or (without ``problems``) a file
            has no partner.
    """
    for folder in (image_dir, mask_dir):
        if not folder.is_dir():
            raise SegcliError(f"{folder}: data folder not found")
    images = list_images(image_dir, image_suffix, recursive)
    masks = list_images(mask_dir, mask_suffix, recursive)
    if not images:
        what = f"names ending in {image_suffix!r}, " if image_suffix else ""
        raise SegcliError(
            f"{image_dir}: no image files ({what}{', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    unpaired = [
        f"{images[n]}: image has no mask {mask_dir}/{n}{mask_suffix}.*"
        for n in images
        if n not in masks
    ]
    unpaired += [
        f"{masks[n]}: mask has no image {image_dir}/{n}{image_suffix}.*"
        for n in masks
        if n not in images
    ]
    if unpaired and problems is None:
        raise SegcliError(unpaired[0] + _suffix_hint(images, masks, image_suffix, mask_suffix))
    if problems is not None:
        problems.extend(unpaired)
    return [(images[n], masks[n]) for n in images if n in masks]


def _suffix_hint(images: dict, masks: dict, image_suffix: str, mask_suffix: str) -> str:
    """When no name pairs at all, say which suffix setting would pair them."""
    if set(images) & set(masks) or not masks:
        return ""
    ends = {n.rsplit("_", 1)[-1] for n in masks if "_" in n}
    if len(ends) == 1 and not mask_suffix and all("_" in n for n in masks):
        end = ends.pop()
        return f" (no name pairs at all; masks named NAME_{end}? set dataset.mask_suffix=_{end})"
    return " (no name pairs at all; see dataset.image_suffix and dataset.mask_suffix)"


def read_list(path: Path, root: Path) -> list[tuple[str, ...]]:
    """A split list: one ``NAME`` or ``IMAGE MASK`` (paths relative to ``root``; a leading ``/``
    is relative to root too, as in SBD's ``train_aug.txt``) per line; blank lines and ``#``
    comments skipped.

    Raises:
        SegcliError: the file is missing, or a line has more than two fields.
    """
    if not path.is_file():
        raise SegcliError(f"{path}: split list not found")
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) > 2:
            raise SegcliError(
                f"{path}:{number}: expected NAME or 'IMAGE MASK', got {len(fields)} fields"
            )
        out.append(tuple(f.lstrip("/") for f in fields))
    return out


def pairs_from_list(
    entries: list[tuple[str, ...]],
    by_name: dict[str, tuple[Path, Path]] | None,
    root: Path,
    source: Path,
    problems: list[str] | None,
) -> list[tuple[Path, Path]]:
    """The pairs a split list names: a ``NAME`` looked up in ``by_name``, an ``IMAGE MASK`` line as paths.

    Raises:
        SegcliError: (without ``problems``) a name with no pair, or a listed file that does not exist.
    """
    out, missing = [], []
    for entry in entries:
        if len(entry) == 2:
            image, mask = root / entry[0], root / entry[1]
            bad = next((p for p in (image, mask) if not p.is_file()), None)
            (
                missing.append(f"{bad}: listed in {source} but not found")
                if bad
                else out.append((image, mask))
            )
        elif by_name is not None and entry[0] in by_name:
            out.append(by_name[entry[0]])
        else:
            missing.append(f"{source}: {entry[0]} has no image/mask pair")
    if missing and problems is None:
        raise SegcliError(missing[0])
    if problems is not None:
        problems.extend(missing)
    return out


def find_split_files(cfg: Mapping, seed: int, problems: list[str] | None = None) -> SplitFiles:
    """Find the image/mask pairs of each split of a ``kind: folder`` dataset config (see the
    module docstring for the layouts). ``problems``: see ``pair_files``.

    Raises:
        SegcliError: the root or a needed folder is missing, an unknown layout, or pairing fails.
    """
    root = Path(str(cfg["root"])).expanduser()
    if not root.is_dir():
        raise SegcliError(
            f"{root}: dataset.root not found (expected a folder; set dataset.root=PATH)"
        )
    layout = str(cfg.get("layout") or "image_mask_dirs")
    if layout not in LAYOUTS:
        raise SegcliError(f"dataset.layout={layout}: expected one of {', '.join(LAYOUTS)}")
    if layout == "segnet":
        return SplitFiles(
            {
                split: pair_files(root / split, root / f"{split}annot", problems)
                for split in SPLITS
                if (root / split).is_dir() or split != "test"
            }
        )
    if layout == "voc":
        return _voc(cfg, root, problems)
    if layout == "cityscapes":
        return _cityscapes(root, problems)
    if layout == "ade20k":
        root = _inside(root, "ADEChallengeData2016", "images")
        return SplitFiles(
            {
                split: pair_files(root / "images" / folder, root / "annotations" / folder, problems)
                for split, folder in (("train", "training"), ("val", "validation"))
            }
        )
    out = _image_mask_dirs(cfg, root, seed, problems)
    if cfg.get("roi_dir"):
        _attach_rois(cfg, root, out, problems)
    return out


def _attach_rois(cfg: Mapping, root: Path, out: SplitFiles, problems: list[str] | None) -> None:
    """Find each image's region-of-interest mask: ``roi_dir[/split]/NAME<roi_suffix>.*``, NAME as
    for the masks. Pairs without one are a problem (raised, or left out with ``problems``)."""
    folder = root / str(cfg["roi_dir"])
    if not folder.is_dir():
        raise SegcliError(f"{folder}: dataset.roi_dir not found")
    suffix, image_suffix = str(cfg.get("roi_suffix") or ""), str(cfg.get("image_suffix") or "")
    rois = list_images(folder, suffix, recursive=True)
    for split, pairs in out.pairs.items():
        kept = []
        for image, mask in pairs:
            name = image.stem[: len(image.stem) - len(image_suffix)] if image_suffix else image.stem
            roi = rois.get(f"{split}/{name}") or rois.get(name)
            if roi is None:
                line = f"{image}: image has no region-of-interest mask {folder}/{name}{suffix}.*"
                if problems is None:
                    raise SegcliError(line)
                problems.append(line)
                continue
            out.rois[image] = roi
            kept.append((image, mask))
        out.pairs[split] = kept


def _image_mask_dirs(cfg: Mapping, root: Path, seed: int, problems: list[str] | None) -> SplitFiles:
    images, masks = (
        root / str(cfg.get("image_dir", "images")),
        root / str(cfg.get("mask_dir", "masks")),
    )
    rule = {
        "image_suffix": str(cfg.get("image_suffix") or ""),
        "mask_suffix": str(cfg.get("mask_suffix") or ""),
        "recursive": bool(cfg.get("recursive", False)),
    }
    out = SplitFiles()
    if (images / "train").is_dir():
        for split in SPLITS:
            if (images / split).is_dir() or split != "test":
                out.pairs[split] = pair_files(images / split, masks / split, problems, **rule)
        return out
    lists = cfg.get("split_lists") or {}
    unknown = sorted(set(lists) - set(SPLITS))
    if unknown:
        raise SegcliError(
            f"dataset.split_lists.{unknown[0]}: expected splits among {', '.join(SPLITS)}"
        )
    if lists:
        if "train" not in lists or "val" not in lists:
            raise SegcliError("dataset.split_lists: expected at least train and val lists")
        by_name = _by_name(images, masks, rule)
        for split, path in lists.items():
            path = root / str(path)
            out.pairs[split] = pairs_from_list(read_list(path, root), by_name, root, path, problems)
        return out
    pairs = pair_files(images, masks, problems, **rule)
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(pairs) * float(cfg.get("val_fraction", 0.2))))
    if n_val >= len(pairs):
        raise SegcliError(
            f"{images}: {len(pairs)} image(s) are too few to split off dataset.val_fraction for validation"
        )
    out.pairs["val"] = [pairs[i] for i in sorted(order[:n_val])]
    out.pairs["train"] = [pairs[i] for i in sorted(order[n_val:])]
    out.random_split = True
    return out


def _by_name(images: Path, masks: Path, rule: dict) -> dict[str, tuple[Path, Path]] | None:
    """Name -> pair of the image and mask folders when both exist (lists may give paths instead)."""
    if not (images.is_dir() and masks.is_dir()):
        return None
    found = list_images(images, rule["image_suffix"], rule["recursive"])
    labels = list_images(masks, rule["mask_suffix"], rule["recursive"])
    return {n: (found[n], labels[n]) for n in found if n in labels}


def _inside(root: Path, name: str, marker: str) -> Path:
    """``root`` itself, or its subfolder ``name`` when the user pointed at the parent."""
    return root / name if not (root / marker).is_dir() and (root / name / marker).is_dir() else root


def _voc(cfg: Mapping, root: Path, problems: list[str] | None) -> SplitFiles:
    root = _inside(_inside(root, "VOCdevkit", "VOC2012"), "VOC2012", "JPEGImages")
    lists = root / "ImageSets" / "Segmentation"
    for needed in (root / "JPEGImages", root / "SegmentationClass", lists):
        if not needed.is_dir():
            raise SegcliError(
                f"{needed}: not found; dataset=voc expects VOCdevkit/VOC2012 with JPEGImages/, "
                "SegmentationClass/ and ImageSets/Segmentation/"
            )
    out = SplitFiles()
    for split in ("train", "val"):
        names = [e[0] for e in read_list(lists / f"{split}.txt", root)]
        out.pairs[split] = _named_pairs(
            names,
            root / "JPEGImages",
            ".jpg",
            root / "SegmentationClass",
            ".png",
            lists / f"{split}.txt",
            problems,
        )
    if cfg.get("aug"):
        source = root / str(cfg.get("aug_list") or "ImageSets/Segmentation/train_aug.txt")
        entries = read_list(source, root)
        val = {p[0].stem for p in out.pairs["val"]}
        kept = [e for e in entries if Path(e[0]).stem not in val]
        if len(kept) < len(entries):
            console.warning(
                f"{source}: left out {len(entries) - len(kept)} val image(s) from the augmented training list"
            )
        named = [e[0] for e in kept if len(e) == 1]
        out.pairs["train"] = pairs_from_list(
            [e for e in kept if len(e) == 2], None, root, source, problems
        ) + _named_pairs(
            named,
            root / "JPEGImages",
            ".jpg",
            root / "SegmentationClassAug",
            ".png",
            source,
            problems,
        )
    return out


def _named_pairs(
    names: list[str],
    images: Path,
    image_ext: str,
    masks: Path,
    mask_ext: str,
    source: Path,
    problems: list[str] | None,
) -> list[tuple[Path, Path]]:
    entries = [
        (
            str((images / f"{n}{image_ext}").relative_to(images.parent)),
            str((masks / f"{n}{mask_ext}").relative_to(images.parent)),
        )
        for n in names
    ]
    return pairs_from_list(entries, None, images.parent, source, problems)


def _cityscapes(root: Path, problems: list[str] | None) -> SplitFiles:
    for needed in (root / "leftImg8bit", root / "gtFine"):
        if not needed.is_dir():
            raise SegcliError(
                f"{needed}: not found; dataset=cityscapes expects leftImg8bit/ and gtFine/ under root"
            )
    out = SplitFiles()
    for split in ("train", "val"):
        images, masks = root / "leftImg8bit" / split, root / "gtFine" / split
        train_ids = (
            list_images(masks, "_gtFine_labelTrainIds", recursive=True) if masks.is_dir() else {}
        )
        image_names = list_images(images, "_leftImg8bit", recursive=True) if images.is_dir() else {}
        if image_names and set(image_names) <= set(train_ids):
            out.identity.add(split)
            out.pairs[split] = pair_files(
                images, masks, problems, "_leftImg8bit", "_gtFine_labelTrainIds", True
            )
        else:
            out.pairs[split] = pair_files(
                images, masks, problems, "_leftImg8bit", "_gtFine_labelIds", True
            )
    return out
