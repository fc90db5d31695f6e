"""Where a dataset's image/mask pairs are: the ``layout`` of a ``kind: folder`` dataset, each
described once by a ``Layout`` registered in ``LAYOUTS`` (``dataset.layout`` -> ``Layout``).

- ``image_mask_dirs`` (``dataset=folder``): ``root/<image_dir>[/<split>]`` +
  ``root/<mask_dir>[/<split>]`` paired by name, where a file's name is its stem less
  ``image_suffix`` / ``mask_suffix`` (``NAME.jpg`` <-> ``NAME_mask.png``: ``mask_suffix=_mask``;
  ``X_leftImg8bit.png`` <-> ``X_gtFine_labelIds.png``: both suffixes), in subfolders too with
  ``recursive``. Splits: split folders, or ``split_lists`` (``{train: FILE, val: FILE}``, VOC's
  ImageSets style: a name per line, or ``IMAGE MASK`` paths relative to root), or none: a seeded
  random split by ``val_fraction``. Optional region-of-interest masks in ``roi_dir``
  (``NAME<roi_suffix>.*``, flat or per split).
- ``segnet`` (CamVid): ``root/<split>`` + ``root/<split>annot``.
- ``voc``: PASCAL VOC 2012, ``VOCdevkit/VOC2012``: ``JPEGImages/NAME.jpg`` +
  ``SegmentationClass/NAME.png`` by ``ImageSets/Segmentation/{train,val}.txt``; with ``aug: true``
  the training list is ``aug_list`` (SBD's augmented set, masks in ``SegmentationClassAug/``), val
  images left out of it.
- ``cityscapes``: ``leftImg8bit/{train,val}/CITY/X_leftImg8bit.png`` +
  ``gtFine/{split}/CITY/X_gtFine_labelTrainIds.png`` when every image of the split has one (already
  train ids: ``SplitFiles.identity``), else ``X_gtFine_labelIds.png`` (mapped by the config's
  ``mask_values``, the official labelId -> trainId table). The public test split has no labels:
  predict on it, do not score it.
- ``ade20k``: ``ADEChallengeData2016/images/{training,validation}`` + ``annotations/...`` as train
  and val.

A ``Layout`` says what its folder tree looks like (the folders that mark it, the subfolders that
may hold it when ``dataset.root`` is their parent, each split's image and mask folder), which
built-in dataset of conf/dataset/ reads it, and how its pairs are found (``find``).
``find_split_files`` reads it for training, ``segcli data doctor`` (data/doctor.py) to recognise a
benchmark's tree.

Written here: these are the benchmarks' own folder conventions (MMSegmentation's dataset classes
encode the same rules, but importing them would bring its whole registry and mmcv).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from segcli import console
from segcli.data.pairing import list_images, pair_files, pairs_from_list, read_list
from segcli.data.settings import SPLITS, DatasetSettings
from segcli.errors import SegcliError
from segcli.registry import Registry

VOC_IMAGES, VOC_MASKS, VOC_LISTS = "JPEGImages", "SegmentationClass", "ImageSets/Segmentation"
VOC_AUG_MASKS = "SegmentationClassAug"
CITY_IMAGES, CITY_LABEL_IDS, CITY_TRAIN_IDS = (
    "_leftImg8bit",
    "_gtFine_labelIds",
    "_gtFine_labelTrainIds",
)


@dataclass
class SplitFiles:
    """The file pairs of each split of a folder dataset; whether the split was made by segcli
    (``random_split``); the splits whose masks already hold class indices (``identity``: the
    config's ``mask_values`` do not apply); image path -> region-of-interest mask (``rois``);
    image path -> its extra input files (``extras``, ``dataset.extra_inputs``)."""

    pairs: dict[str, list[tuple[Path, Path]]] = field(default_factory=dict)
    random_split: bool = False
    identity: set[str] = field(default_factory=set)
    rois: dict[Path, Path] = field(default_factory=dict)
    extras: dict[Path, tuple[Path, ...]] = field(default_factory=dict)

    def as_json(self) -> dict:
        """``{split: [image stems]}`` for split.json."""
        return {s: [img.stem for img, _ in p] for s, p in self.pairs.items()}


@dataclass(frozen=True)
class Layout:
    """One file layout of ``kind: folder`` datasets (see the module docstring).

    Attributes:
        name: the ``dataset.layout`` value.
        find: ``find(layout, settings, base, seed, problems) -> SplitFiles``: the pairs of each
            split under ``base`` (see ``base``); ``problems`` as for ``pairing.pair_files``.
        builtin: the conf/dataset/ file that reads this layout (``camvid`` for ``segnet``).
        markers: root-relative folders that all exist in this layout (how ``segcli data doctor``
            recognises it); none for a layout of the user's own folder names.
        nests: subfolders that hold the layout when ``dataset.root`` is their parent, tried after
            root itself (VOC's ``VOCdevkit/VOC2012``).
        required: folders checked before pairing; a missing one is an error saying ``expects``.
        expects: what the layout expects under root, in words, for that error.
        folders: ``{split: (image folder, mask folder)}`` relative to the base, for layouts of
            fixed split folders (a ``test`` entry is used when its image folder exists).
        summary: one line for the doctor's report; ``{where}`` is the base relative to root.
    """

    name: str
    find: Callable[..., SplitFiles]
    builtin: str | None = None
    markers: tuple[str, ...] = ()
    nests: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    expects: str = ""
    folders: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    summary: str = ""

    def base(self, root: Path) -> Path | None:
        """``root``, or the first of its ``nests``, that holds every marker folder; None when
        none does or the layout has no markers."""
        if not self.markers:
            return None
        for base in (root, *(root / nest for nest in self.nests)):
            if all((base / marker).is_dir() for marker in self.markers):
                return base
        return None


def find_split_files(
    settings: DatasetSettings, seed: int, problems: list[str] | None = None
) -> SplitFiles:
    """Find the image/mask pairs of each split of a ``kind: folder`` dataset (see the module
    docstring for the layouts). ``seed``: of the random split of flat folders. ``problems``: see
    ``pairing.pair_files``.

    Raises:
        SegcliError: no root, the root or a needed folder is missing, an unknown layout, or
            pairing fails.
    """
    if settings.root is None:
        raise SegcliError("dataset.root: not set (set dataset.root=PATH)")
    root = Path(settings.root).expanduser()
    if not root.is_dir():
        raise SegcliError(
            f"{root}: dataset.root not found (expected a folder; set dataset.root=PATH)"
        )
    layout = LAYOUTS.get(str(settings.layout), "dataset.layout")
    base = layout.base(root) or root
    for needed in layout.required:
        if not (base / needed).is_dir():
            raise SegcliError(
                f"{base / needed}: not found; dataset={layout.builtin} expects {layout.expects}"
            )
    out = layout.find(layout, settings, base, seed, problems)
    if settings.extra_inputs:
        from segcli.data.channels import find_extras

        out.extras, out.pairs = find_extras(
            root, settings.extra_inputs, out.pairs, settings.image_suffix or "", problems
        )
    return out


def _split_folders(
    layout: Layout, settings: DatasetSettings, root: Path, seed: int, problems: list[str] | None
) -> SplitFiles:
    """The layout's fixed split folders (CamVid's SegNet layout, ADE20K); the training split's
    masks are not paired when it has weak-label files (``DatasetSettings.label_files``)."""
    return SplitFiles(
        {
            split: pair_files(root / images, root / masks, problems)
            for split, (images, masks) in layout.folders.items()
            if (split != "test" or (root / images).is_dir())
            and not (split == "train" and settings.label_files)
        }
    )


def _image_mask_dirs(
    layout: Layout, settings: DatasetSettings, root: Path, seed: int, problems: list[str] | None
) -> SplitFiles:
    """``dataset=folder``: split folders, else split lists, else a seeded random split; then
    the region-of-interest masks."""
    images, masks = root / settings.image_dir, root / settings.mask_dir
    rule = {
        "image_suffix": settings.image_suffix,
        "mask_suffix": settings.mask_suffix,
        "recursive": settings.recursive,
    }
    out = SplitFiles()
    skip = ("train",) if settings.label_files else ()  # weak-label files, not masks
    if (images / "train").is_dir():
        for split in SPLITS:
            if ((images / split).is_dir() or split != "test") and split not in skip:
                out.pairs[split] = pair_files(images / split, masks / split, problems, **rule)
    elif settings.split_lists:
        by_name = _by_name(images, masks, rule)
        for split, path in settings.split_lists.items():
            if split in skip:
                continue
            path = root / path
            out.pairs[split] = pairs_from_list(read_list(path, root), by_name, root, path, problems)
    elif skip:
        raise SegcliError(
            f"{images}: dataset.labels={settings.labels} needs a validation split with full "
            "masks; expected split folders (train/, val/) or dataset.split_lists"
        )
    else:
        out = _random_split(images, pair_files(images, masks, problems, **rule), settings, seed)
    if settings.roi_dir:
        _attach_rois(settings, root, out, problems)
    return out


def _random_split(
    images: Path, pairs: list[tuple[Path, Path]], settings: DatasetSettings, seed: int
) -> SplitFiles:
    """Flat folders: ``val_fraction`` of the pairs (at least one) for validation, seeded."""
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(pairs) * settings.val_fraction))
    if n_val >= len(pairs):
        raise SegcliError(
            f"{images}: {len(pairs)} image(s) are too few to split off dataset.val_fraction "
            "for validation"
        )
    out = SplitFiles(random_split=True)
    out.pairs["val"] = [pairs[i] for i in sorted(order[:n_val])]
    out.pairs["train"] = [pairs[i] for i in sorted(order[n_val:])]
    return out


def _attach_rois(
    settings: DatasetSettings, root: Path, out: SplitFiles, problems: list[str] | None
) -> None:
    """Find each image's region-of-interest mask: ``roi_dir[/split]/NAME<roi_suffix>.*``, NAME as
    for the masks. Pairs without one are a problem (raised, or left out with ``problems``)."""
    folder = root / settings.roi_dir
    if not folder.is_dir():
        raise SegcliError(f"{folder}: dataset.roi_dir not found")
    suffix, image_suffix = settings.roi_suffix, settings.image_suffix
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


def _by_name(images: Path, masks: Path, rule: dict) -> dict[str, tuple[Path, Path]] | None:
    """Name -> pair of the image and mask folders when both exist (lists may give paths instead)."""
    if not (images.is_dir() and masks.is_dir()):
        return None
    found = list_images(images, rule["image_suffix"], rule["recursive"])
    labels = list_images(masks, rule["mask_suffix"], rule["recursive"])
    return {n: (found[n], labels[n]) for n in found if n in labels}


def _voc(
    layout: Layout, settings: DatasetSettings, root: Path, seed: int, problems: list[str] | None
) -> SplitFiles:
    """PASCAL VOC 2012: the ImageSets lists; with ``aug`` SBD's augmented training list."""
    lists = root / VOC_LISTS
    out = SplitFiles()
    for split in ("train", "val"):
        if split == "train" and settings.label_files:
            continue  # weak-label files, not masks (weak_training_names gives the images)
        names = [e[0] for e in read_list(lists / f"{split}.txt", root)]
        out.pairs[split] = _named_pairs(
            names, root / VOC_IMAGES, root / VOC_MASKS, lists / f"{split}.txt", problems
        )
    if settings.aug and not settings.label_files:
        out.pairs["train"] = _voc_aug(settings, root, out.pairs["val"], problems)
    return out


def _voc_aug(
    settings: DatasetSettings,
    root: Path,
    val: list[tuple[Path, Path]],
    problems: list[str] | None,
) -> list[tuple[Path, Path]]:
    """The pairs of ``aug_list`` (names, or ``IMAGE MASK`` lines), less the val images."""
    source = root / settings.aug_list
    entries = read_list(source, root)
    val_names = {p[0].stem for p in val}
    kept = [e for e in entries if Path(e[0]).stem not in val_names]
    if len(kept) < len(entries):
        console.warning(
            f"{source}: left out {len(entries) - len(kept)} val image(s) from the augmented "
            "training list"
        )
    named = [e[0] for e in kept if len(e) == 1]
    return pairs_from_list(
        [e for e in kept if len(e) == 2], None, root, source, problems
    ) + _named_pairs(named, root / VOC_IMAGES, root / VOC_AUG_MASKS, source, problems)


def _named_pairs(
    names: list[str], images: Path, masks: Path, source: Path, problems: list[str] | None
) -> list[tuple[Path, Path]]:
    """VOC's ``images/NAME.jpg`` + ``masks/NAME.png`` pairs of the names a list file gives."""
    entries = [
        (
            str((images / f"{n}.jpg").relative_to(images.parent)),
            str((masks / f"{n}.png").relative_to(images.parent)),
        )
        for n in names
    ]
    return pairs_from_list(entries, None, images.parent, source, problems)


def _cityscapes(
    layout: Layout, settings: DatasetSettings, root: Path, seed: int, problems: list[str] | None
) -> SplitFiles:
    """Cityscapes: labelTrainIds masks when every image of the split has one, else labelIds."""
    out = SplitFiles()
    for split, (image_folder, mask_folder) in layout.folders.items():
        if split == "train" and settings.label_files:
            continue  # weak-label files, not masks
        images, masks = root / image_folder, root / mask_folder
        train_ids = list_images(masks, CITY_TRAIN_IDS, recursive=True) if masks.is_dir() else {}
        image_names = list_images(images, CITY_IMAGES, recursive=True) if images.is_dir() else {}
        identity = bool(image_names) and set(image_names) <= set(train_ids)
        if identity:
            out.identity.add(split)
        mask_suffix = CITY_TRAIN_IDS if identity else CITY_LABEL_IDS
        out.pairs[split] = pair_files(images, masks, problems, CITY_IMAGES, mask_suffix, True)
    return out


LAYOUTS: Registry[Layout] = Registry("dataset", key="layout")
for _layout in (
    Layout("image_mask_dirs", _image_mask_dirs, builtin="folder"),
    Layout(
        "segnet",
        _split_folders,
        builtin="camvid",
        markers=("train", "trainannot"),
        folders={split: (split, f"{split}annot") for split in SPLITS},
        summary="CamVid's SegNet layout (train/ + trainannot/, val/ + valannot/, "
        "test/ + testannot/)",
    ),
    Layout(
        "voc",
        _voc,
        builtin="voc",
        markers=(VOC_IMAGES, VOC_MASKS),
        nests=("VOCdevkit/VOC2012", "VOC2012"),
        required=(VOC_IMAGES, VOC_MASKS, VOC_LISTS),
        expects="VOCdevkit/VOC2012 with JPEGImages/, SegmentationClass/ and "
        "ImageSets/Segmentation/",
        summary="PASCAL VOC layout ({where}: JPEGImages/, SegmentationClass/ palette PNGs, "
        "ImageSets/)",
    ),
    Layout(
        "cityscapes",
        _cityscapes,
        builtin="cityscapes",
        markers=("leftImg8bit", "gtFine"),
        required=("leftImg8bit", "gtFine"),
        expects="leftImg8bit/ and gtFine/ under root",
        folders={split: (f"leftImg8bit/{split}", f"gtFine/{split}") for split in ("train", "val")},
        summary="Cityscapes layout (leftImg8bit/, gtFine/ with labelIds or labelTrainIds)",
    ),
    Layout(
        "ade20k",
        _split_folders,
        builtin="ade20k",
        markers=("images/training", "annotations/training"),
        nests=("ADEChallengeData2016",),
        folders={
            "train": ("images/training", "annotations/training"),
            "val": ("images/validation", "annotations/validation"),
        },
        summary="ADE20K layout (images/training, annotations/training; 0 = other, ignored)",
    ),
):
    LAYOUTS.add(_layout, [_layout.name])
