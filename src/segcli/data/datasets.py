"""Datasets from the ``dataset`` and ``augmentation`` config groups: the splits a job needs, each with
its pipeline (the ``train`` one for augmented splits, the ``eval`` one otherwise), and every check
of ``segcli data check``. The readers themselves are data/readers.py's and data/synthetic.py's.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Mapping, Sequence

from segcli import console
from segcli.config import run_seed
from segcli.data.augment import build_transforms
from segcli.data.layouts import find_split_files
from segcli.data.masks import keep_points, mask_table
from segcli.data.readers import SPLITS, DatasetInfo, PairedFolderDataset, SplitCheck, check_pairs
from segcli.data.synthetic import SyntheticDataset
from segcli.errors import SegcliError
from segcli.preprocessing import IMAGENET_MEAN, IMAGENET_STD


def build_datasets(
    cfg: Mapping,
    splits: Sequence[str],
    seed: int,
    save_split: Callable[[dict], None] | None = None,
    augmented: Sequence[str] = ("train",),
    normalization: Mapping[str, Sequence[float]] | None = None,
) -> tuple[DatasetInfo, dict, dict]:
    """Datasets of the given splits; those in ``augmented`` get the ``train`` pipeline, the
    others the ``eval`` one. ``save_split(split)`` receives a random train/val split of flat
    folders (``{split: [image stems]}``, to keep it with the run) when segcli made one.
    ``normalization``: ``{"mean", "std"}`` (per channel, 0..1 units) of every pipeline's
    normalising step, a checkpoint's for eval; None: ImageNet's (``preprocessing``).

    Returns:
        (class info, {split: Dataset}, {split: data.readers.SplitCheck} for folder data).

    Raises:
        SegcliError: any data problem (see data/readers.py), or a split the dataset does not have.
    """
    dcfg, aug = cfg["dataset"], cfg["augmentation"]
    info = DatasetInfo.from_config(dcfg)
    norm = normalization or {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    transforms = {
        s: build_transforms(
            aug.get("train" if s in augmented else "eval"),
            info.ignore_index,
            scale=float(dcfg.get("scale", 1.0)) if s in augmented else 1.0,
            mean=norm["mean"],
            std=norm["std"],
        )
        for s in splits
    }
    seeds = {s: seed if s in augmented else None for s in splits}
    if dcfg["kind"] == "synthetic":
        datasets = {
            s: SyntheticDataset(dcfg[f"num_{s}"], dcfg["image_size"], s, transforms[s], seeds[s])
            for s in splits
        }
        return info, datasets, {s: d.class_pixels() for s, d in datasets.items() if s == "train"}
    if dcfg["kind"] != "folder":
        raise SegcliError(f"dataset.kind={dcfg['kind']}: expected folder or synthetic")
    on_bad = str(dcfg.get("on_bad_file") or "error")
    if on_bad not in ("error", "skip"):
        raise SegcliError(f"dataset.on_bad_file={on_bad}: expected error or skip")
    unpaired: list[str] | None = [] if on_bad == "skip" else None
    points_per_class = dcfg.get("point_labels")
    if points_per_class is not None and (
        isinstance(points_per_class, bool)
        or not isinstance(points_per_class, int)
        or points_per_class < 1
    ):
        raise SegcliError(
            f"dataset.point_labels={points_per_class}: expected a number of pixels per class >= 1, or null"
        )
    files = find_split_files(dcfg, seed, unpaired)
    if save_split is not None and files.random_split:
        save_split(files.as_json())
    datasets, counts = {}, {}
    for s in splits:
        if s not in files.pairs:
            raise SegcliError(
                f"{dcfg['root']}: the dataset has no '{s}' split (found {', '.join(files.pairs)})"
            )
        lut = mask_table(dcfg, info.colors, identity=s in files.identity)
        points = points_per_class if s in augmented else None
        cache = _pair_cache(dcfg, lut, info, points)
        counts[s] = check_pairs(
            files.pairs[s],
            lut,
            info.num_classes,
            skip_bad=on_bad == "skip",
            point_labels=points,
            rois=files.rois,
            cache=cache,
        )
        if cache is not None:
            cache.save()
        if (
            s == "train"
        ):  # val/test may hold one class (e.g. only negatives); training on one is the trap
            one_class_trap(counts[s], info, s)
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
        datasets[s] = PairedFolderDataset(
            counts[s].pairs, lut, transforms[s], seeds[s], sparsify, files.rois
        )
        if counts[s].problems:
            console.warning(
                f"dataset.on_bad_file=skip: left out {len(counts[s].problems)} bad pair(s) of the "
                f"{s} split; the first: {counts[s].problems[0]}"
            )
    if unpaired:
        console.warning(
            f"dataset.on_bad_file=skip: left out {len(unpaired)} file(s) without a partner; "
            f"the first: {unpaired[0]}"
        )
    return info, datasets, counts


def _pair_cache(dcfg: Mapping, decoder, info: DatasetInfo, points: int | None):
    """The pair-check cache of this dataset root and mask decoding (data/pair_cache.py), or None when off."""
    from segcli.data.pair_cache import PairCache

    return PairCache.open(str(dcfg["root"]), f"{decoder.fingerprint()}|{info.num_classes}|{points}")


def _points_of(mask, name: str, per_class: int, seed: int, num_classes: int, ignore_index: int):
    """``masks.keep_points`` seeded by (run seed, the image's name): fixed per image across epochs and resumes."""
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
            f"({found.ignored} pixels): if {info.ignore_index} marks a class (0/255 binary masks), set "
            f"dataset.mask_values={{0: 0, {info.ignore_index}: 1}} and dataset.ignore_index to a value the masks do not use"
        )


def check_dataset(cfg: Mapping) -> dict:
    """Every dataset check of ``build_datasets`` on every split, collecting all problems instead
    of stopping at the first (``segcli data check``). Nothing is trained or written.

    Returns:
        ``{"dataset": root or "synthetic", "class_names": [...], "splits": {split: {"images": int
        (good pairs), "bad": int, "sizes": {"HxW": count}, "class_pixels": [C ints]}},
        "problems": [one line each], "notes": [...]}``.

    Raises:
        SegcliError: problems that stop any check: a missing root or folder, bad class names.
    """
    dcfg = cfg["dataset"]
    info = DatasetInfo.from_config(dcfg)
    out: dict = {
        "dataset": dcfg.get("root") or dcfg["kind"],
        "class_names": info.class_names,
        "splits": {},
        "problems": [],
        "notes": [],
    }
    if dcfg["kind"] == "synthetic":
        for split in SPLITS:
            ds = SyntheticDataset(dcfg[f"num_{split}"], dcfg["image_size"], split, None)
            out["splits"][split] = {
                "images": len(ds),
                "bad": 0,
                "sizes": {"x".join(map(str, ds.size)): len(ds)},
                "class_pixels": ds.class_pixels().pixels.tolist(),
            }
    else:
        files = find_split_files(dcfg, run_seed(cfg), out["problems"])
        for split, pairs in files.pairs.items():
            lut = mask_table(dcfg, info.colors, identity=split in files.identity)
            cache = _pair_cache(dcfg, lut, info, None)
            found = check_pairs(
                pairs, lut, info.num_classes, skip_bad=True, rois=files.rois, cache=cache
            )
            if cache is not None:
                cache.save()
            out["problems"] += found.problems
            out["splits"][split] = {
                "images": len(found.pairs),
                "bad": len(found.problems),
                "sizes": {f"{h}x{w}": n for (h, w), n in sorted(found.sizes.items())},
                "class_pixels": found.pixels.tolist(),
            }
        if files.random_split:
            out["notes"].append(
                f"no split folders: a seeded random split (dataset.val_fraction="
                f"{dcfg.get('val_fraction')}) is made when training"
            )
    train = out["splits"].get("train")
    if train:
        absent = [n for n, c in zip(info.class_names, train["class_pixels"]) if c == 0]
        if absent:
            out["notes"].append(f"classes with no pixels in the train split: {', '.join(absent)}")
    return out
