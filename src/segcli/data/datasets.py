"""Datasets from the ``dataset`` and ``augmentation`` config groups: the splits a job needs, each
with its pipeline (the ``train`` one for augmented splits, the ``eval`` one otherwise), and every
check of ``segcli data check``. The readers themselves are data/readers.py's and
data/synthetic.py's.

Each ``dataset.kind`` is a ``DatasetKind`` registered in ``KINDS``: how it builds the splits'
datasets (``build``) and how ``segcli data check`` reports on them (``check``). A new kind of
reader is one ``conf/dataset/<kind>.yaml`` (its defaults, see data/settings.py) and one
``KINDS.add(DatasetKind(...), ["<kind>"])`` here.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from segcli import console
from segcli.config import run_seed
from segcli.data.augment import build_transforms
from segcli.data.channels import ChannelStack
from segcli.data.layouts import SplitFiles, find_split_files
from segcli.data.masks import MaskDecoder, keep_points, mask_table, training_mask_decoder
from segcli.data.readers import PairedFolderDataset, PseudoMaskDataset, SplitCheck, check_pairs
from segcli.data.settings import SPLITS, DatasetInfo, DatasetSettings
from segcli.data.synthetic import SyntheticDataset
from segcli.errors import SegcliError
from segcli.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from segcli.registry import Registry
from segcli.tasks import task_name


@dataclass(frozen=True)
class BuildRequest:
    """What ``build_datasets`` asks of a kind: the parsed group and its classes, the splits, the
    run seed, each split's transform, the augmented splits (seeded augmentation, ``point_labels``)
    and where a random split goes (``save_split``, or None)."""

    settings: DatasetSettings
    info: DatasetInfo
    splits: Sequence[str]
    seed: int
    transforms: Mapping[str, Callable]
    augmented: Sequence[str]
    save_split: Callable[[dict], None] | None

    def augment_seed(self, split: str) -> int | None:
        """The augmentation seed of ``split``: the run seed when augmented, else None."""
        return self.seed if split in self.augmented else None


@dataclass(frozen=True)
class DatasetKind:
    """How one ``dataset.kind`` is read.

    Attributes:
        build: ``build(request: BuildRequest) -> ({split: Dataset}, {split: ClassPixels})``
            (class statistics of the training split at least; ``SplitCheck``s for file data).
        check: ``check(settings, info, seed, report) -> None``: fills ``check_dataset``'s report
            (``report["splits"]``, ``["problems"]``, ``["notes"]``) for every split.
    """

    build: Callable[[BuildRequest], tuple[dict, dict]]
    check: Callable[[DatasetSettings, DatasetInfo, int, dict], None]


KINDS: Registry[DatasetKind] = Registry("dataset", key="kind")


def build_datasets(
    cfg: Mapping,
    splits: Sequence[str],
    seed: int,
    save_split: Callable[[dict], None] | None = None,
    augmented: Sequence[str] = ("train",),
    settings: DatasetSettings | None = None,
    normalization: Mapping[str, Sequence[float]] | None = None,
    train_masks: Path | None = None,
    train_images: Sequence[Path] | None = None,
) -> tuple[DatasetInfo, dict, dict]:
    """Datasets of the given splits; those in ``augmented`` get the ``train`` pipeline, the
    others the ``eval`` one. ``save_split(split)`` receives a random train/val split of flat
    folders (``{split: [image stems]}``, to keep it with the run) when segcli made one.
    ``settings``: the parsed ``dataset`` group when the caller has it (e.g. ``with_root`` of
    another data folder), else ``cfg["dataset"]`` is parsed.
    ``normalization``: a checkpoint's (``{"mean", "std"}`` per channel, 0..1 units; for stored
    channels also ``max_pixel_value``, ``clip``, ``channels``: data/channels.py) for every
    pipeline's normalising step; None: ``input_normalization``'s.
    ``train_masks``: a folder of ``NAME.png`` training masks segcli wrote (weak labels' pseudo
    masks, weak/pseudo.py) that replace the train split's masks; its images are ``train_images``
    (files), or the train split's own when None. Only the images that have such a mask train.

    Returns:
        (class info, {split: Dataset}, {split: data.readers.SplitCheck} for folder data).

    Raises:
        SegcliError: any data problem (see data/readers.py), a bad ``dataset`` value (see
            data/settings.py), or a split the dataset does not have.
    """
    settings = settings or DatasetSettings.from_config(cfg["dataset"])
    info = DatasetInfo.from_settings(settings)
    aug = cfg["augmentation"]
    norm = normalization or input_normalization(settings, seed)
    transforms = {
        s: build_transforms(
            aug.get("train" if s in augmented else "eval"),
            info.ignore_index,
            scale=settings.scale if s in augmented else 1.0,
            normalization=norm,
        )
        for s in splits
    }
    kind = KINDS.get(settings.kind, "dataset.kind")
    own = [s for s in splits if not (s == "train" and train_images is not None)]
    request = BuildRequest(settings, info, own, seed, transforms, augmented, save_split)
    datasets, counts = kind.build(request)
    if train_masks is not None and "train" in splits:
        base = datasets.get("train")  # None: the images are train_images (label files)
        if train_images is None and isinstance(base, PairedFolderDataset):
            train_images = [image for image, _ in base.pairs]  # its masks are not read again
        datasets["train"] = PseudoMaskDataset(
            base if train_images is None else train_images,
            Path(train_masks),
            training_mask_decoder(info.num_classes, info.ignore_index),
            transforms["train"],
            request.augment_seed("train"),
        )
        counts["train"] = datasets["train"].class_pixels(info.num_classes)
    return info, {s: datasets[s] for s in splits}, counts


def input_normalization(settings: DatasetSettings, seed: int) -> dict:
    """How images of this dataset are normalised, the checkpoint's ``normalization``: ImageNet's
    mean and std for 8-bit RGB (``preprocessing``); for ``channels: stored`` the training split's
    per-channel statistics (``channels.cached_statistics``: mean, std, clipping bounds, the
    channels' files and dtypes), from which ``model.in_channels`` follows.

    Raises:
        SegcliError: stored channels on a dataset kind other than folder, or any data problem.
    """
    if not settings.stored_channels:
        return {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    if settings.kind != "folder":
        raise SegcliError(
            f"dataset.channels=stored: reads image files; dataset.kind={settings.kind} has none"
        )
    if settings.labels != "masks" or settings.simulate:
        raise SegcliError(
            "dataset.channels=stored: weak labels (dataset.labels, dataset.simulate) read 8-bit "
            "RGB images only"
        )
    from segcli.data.channels import cached_statistics

    files = find_split_files(settings, seed, [] if settings.on_bad_file == "skip" else None)
    images = [image for image, _ in files.pairs.get("train", [])]
    stack = ChannelStack(files.extras, tuple(d for d, _ in settings.extra_inputs or ()))
    skip = settings.on_bad_file == "skip"
    return cached_statistics(images, stack, settings.clip_percentiles, seed, skip)


def _build_synthetic(request: BuildRequest) -> tuple[dict, dict]:
    settings = request.settings
    datasets = {
        s: SyntheticDataset(
            settings.images_in(s),
            settings.image_size,
            s,
            request.transforms[s],
            request.augment_seed(s),
        )
        for s in request.splits
    }
    return datasets, {s: d.class_pixels() for s, d in datasets.items() if s == "train"}


def _build_folder(request: BuildRequest) -> tuple[dict, dict]:
    settings = request.settings
    unpaired: list[str] | None = [] if settings.on_bad_file == "skip" else None
    files = find_split_files(settings, request.seed, unpaired)
    if request.save_split is not None and files.random_split:
        request.save_split(files.as_json())
    datasets, counts = {}, {}
    for s in request.splits:
        if s not in files.pairs:
            raise SegcliError(
                f"{settings.root}: the dataset has no '{s}' split (found {', '.join(files.pairs)})"
            )
        datasets[s], counts[s] = _folder_split(request, files, s)
    if unpaired:
        console.warning(
            f"dataset.on_bad_file=skip: left out {len(unpaired)} file(s) without a partner; "
            f"the first: {unpaired[0]}"
        )
    return datasets, counts


def _folder_split(
    request: BuildRequest, files: SplitFiles, split: str
) -> tuple[PairedFolderDataset, SplitCheck]:
    """One split of folder data: its pairs checked (cached), its dataset."""
    settings, info, seed = request.settings, request.info, request.seed
    lut = mask_table(settings, info.colors, identity=split in files.identity)
    points = settings.point_labels if split in request.augmented else None
    found = _checked(settings, files, split, lut, info, points, settings.on_bad_file == "skip")
    if split == "train":  # val/test may hold one class (only negatives); training on one: the trap
        one_class_trap(found, info, split)
    sparsify = (
        None
        if points is None
        else functools.partial(
            _points_of,
            per_class=points,
            seed=seed,
            num_classes=info.num_classes,
            ignore_index=info.ignore_index,
        )
    )
    dataset = PairedFolderDataset(
        found.pairs,
        lut,
        request.transforms[split],
        request.augment_seed(split),
        sparsify,
        files.rois,
        **({"read": ChannelStack(files.extras)} if settings.stored_channels else {}),
    )
    if found.problems:
        console.warning(
            f"dataset.on_bad_file=skip: left out {len(found.problems)} bad pair(s) of the "
            f"{split} split; the first: {found.problems[0]}"
        )
    return dataset, found


def _checked(
    settings: DatasetSettings,
    files: SplitFiles,
    split: str,
    lut: MaskDecoder,
    info: DatasetInfo,
    points: int | None,
    skip_bad: bool,
) -> SplitCheck:
    """``check_pairs`` of one split through the pair-check cache (saved after)."""
    cache = _pair_cache(settings, lut, info, points)
    found = check_pairs(
        files.pairs[split],
        lut,
        info.num_classes,
        skip_bad=skip_bad,
        point_labels=points,
        rois=files.rois,
        cache=cache,
        extras=files.extras,
    )
    if cache is not None:
        cache.save()
    return found


def _pair_cache(settings: DatasetSettings, decoder, info: DatasetInfo, points: int | None):
    """The pair-check cache of this dataset root and mask decoding (data/pair_cache.py), or None
    when off."""
    from segcli.data.pair_cache import PairCache

    return PairCache.open(settings.root, f"{decoder.fingerprint()}|{info.num_classes}|{points}")


def _points_of(mask, name: str, per_class: int, seed: int, num_classes: int, ignore_index: int):
    """``masks.keep_points`` seeded by (run seed, the image's name): fixed per image across epochs
    and resumes."""
    return keep_points(
        mask, per_class, (seed, zlib.crc32(name.encode())), num_classes, ignore_index
    )


def one_class_trap(found: SplitCheck, info: DatasetInfo, split: str) -> None:
    """Refuse a split whose masks hold a single class and ignore_index: the classic misreading of
    0/255 binary masks with ignore_index 255 (the model learns "everything is background" and
    scores 100%).

    Raises:
        SegcliError: exactly one class has pixels and some pixels are ignore_index.
    """
    present = [n for n, c in zip(info.class_names, found.pixels) if c > 0]
    if info.num_classes > 1 and len(present) == 1 and found.ignored > 0:
        raise SegcliError(
            f"the {split} masks hold only class {present[0]} and ignore_index {info.ignore_index} "
            f"({found.ignored} pixels): if {info.ignore_index} marks a class (0/255 binary masks), "
            "set "
            f"dataset.mask_values={{0: 0, {info.ignore_index}: 1}} and dataset.ignore_index to a "
            "value the masks do not use"
        )


def check_dataset(cfg: Mapping) -> dict:
    """Every dataset check of ``build_datasets`` on every split, collecting all problems instead
    of stopping at the first (``segcli data check``). Nothing is trained or written.

    For ``task=instance`` the instance data's check (``instance_datasets.check_instance_dataset``).

    Returns:
        ``{"dataset": root or "synthetic", "class_names": [...], "splits": {split: {"images": int
        (good pairs), "bad": int, "sizes": {"HxW": count}, "class_pixels": [C ints]}},
        "problems": [one line each], "notes": [...]}``.

    Raises:
        SegcliError: problems that stop any check: a missing root or folder, bad class names.
    """
    task = task_name(cfg)
    if task not in DATA_CHECKS:
        raise SegcliError(f"task.name={task}: expected one of {', '.join(DATA_CHECKS)}")
    return DATA_CHECKS[task](cfg)


def _check_instances(cfg: Mapping) -> dict:
    from segcli.data.instance_datasets import check_instance_dataset  # its readers: only here

    return check_instance_dataset(cfg)


def _check_semantic(cfg: Mapping) -> dict:
    """``check_dataset`` of semantic data (``KINDS``' checks)."""
    settings = DatasetSettings.from_config(cfg["dataset"])
    info = DatasetInfo.from_settings(settings)
    out: dict = {
        "dataset": settings.root or settings.kind,
        "class_names": info.class_names,
        "splits": {},
        "problems": [],
        "notes": [],
    }
    KINDS.get(settings.kind, "dataset.kind").check(settings, info, run_seed(cfg), out)
    train = out["splits"].get("train")
    if train:
        absent = [n for n, c in zip(info.class_names, train["class_pixels"]) if c == 0]
        if absent:
            out["notes"].append(f"classes with no pixels in the train split: {', '.join(absent)}")
    return out


def _check_synthetic(settings: DatasetSettings, info: DatasetInfo, seed: int, out: dict) -> None:
    for split in SPLITS:
        ds = SyntheticDataset(settings.images_in(split), settings.image_size, split, None)
        out["splits"][split] = {
            "images": len(ds),
            "bad": 0,
            "sizes": {"x".join(map(str, ds.size)): len(ds)},
            "class_pixels": ds.class_pixels().pixels.tolist(),
        }


def _check_folder(settings: DatasetSettings, info: DatasetInfo, seed: int, out: dict) -> None:
    files = find_split_files(settings, seed, out["problems"])
    for split in files.pairs:
        lut = mask_table(settings, info.colors, identity=split in files.identity)
        found = _checked(settings, files, split, lut, info, None, skip_bad=True)
        out["problems"] += found.problems
        out["splits"][split] = {
            "images": len(found.pairs),
            "bad": len(found.problems),
            "sizes": {f"{h}x{w}": n for (h, w), n in sorted(found.sizes.items())},
            "class_pixels": found.pixels.tolist(),
        }
    if settings.label_files:
        out["notes"].append(
            f"the train split is labelled by {settings.labels} in {settings.weak_labels} "
            "(dataset.labels): its label files are read when training"
        )
    if files.random_split:
        out["notes"].append(
            f"no split folders: a seeded random split (dataset.val_fraction="
            f"{settings.val_fraction}) is made when training"
        )


#: task -> the check of its data (``check_dataset``)
DATA_CHECKS = {"semantic": _check_semantic, "instance": _check_instances}

KINDS.add(DatasetKind(_build_folder, _check_folder), ["folder"])
KINDS.add(DatasetKind(_build_synthetic, _check_synthetic), ["synthetic"])
