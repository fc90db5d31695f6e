"""Datasets and loaders: paired image/mask folders (CamVid's SegNet layout, or images/ + masks/).
The embedded synthetic dataset is in synthetic.py.

Every sample is a dict ``{"image": (3, H, W) float32, "mask": (H, W) int64, "name": str,
"size": (h, w)}`` after the transform (see augment.py); ``size`` is the image's as read, in
pixels (evaluation pipelines only pad, bottom/right, so ``[:h, :w]`` is the image). Masks hold class indices 0..C-1 or ``ignore_index``;
raw mask values are mapped through a look-up table built from ``dataset.mask_values``.

Problems with the files (a missing folder, an image without a mask, a mask of another size,
an unreadable or truncated file, mask values outside the classes, a colour mask where indices
were expected) are found up front by ``pair_files`` and ``check_pairs``, before any training
step, and raised as one-line ``SegcliError``s naming the file; or, with
``dataset.on_bad_file=skip``, the bad pairs are left out with a warning and a count.
"""

from __future__ import annotations

import functools
import os
import random
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from segcli.augment import seed_transform
from segcli.errors import SegcliError

cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # bad files get segcli's one-line errors instead

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
SPLITS = ("train", "val", "test")


def default_colors(n: int) -> list[list[int]]:
    """``n`` distinct RGB colours for datasets that name none: PASCAL VOC's bit-interleaved
    colour map from index 1 on (index 0 is black). Returns ``n`` lists of three ints 0..255."""
    colors = []
    for i in range(n):
        r = g = b = 0
        c = i + 1  # skip black, which reads as "nothing"
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colors.append([r, g, b])
    return colors


@dataclass
class DatasetInfo:
    """What eval and predict need to know about the classes, stored in every checkpoint.

    Attributes:
        num_classes: C.
        class_names: C names.
        colors: C RGB triples (0..255) for overlays.
        ignore_index: mask value that losses and metrics skip.
    """

    num_classes: int
    class_names: list[str]
    colors: list[list[int]]
    ignore_index: int

    @classmethod
    def from_config(cls, cfg: Mapping) -> DatasetInfo:
        """Build from a ``dataset`` config group; names and colours default when null.

        Raises:
            SegcliError: class_names or colors do not have num_classes entries.
        """
        c = int(cfg["num_classes"])
        names = list(cfg.get("class_names") or [f"class{i}" for i in range(c)])
        colors = [list(map(int, x)) for x in (cfg.get("colors") or default_colors(c))]
        for key, value in (("dataset.class_names", names), ("dataset.colors", colors)):
            if len(value) != c:
                raise SegcliError(f"{key} has {len(value)} entries; expected dataset.num_classes={c}")
        return cls(c, names, colors, int(cfg["ignore_index"]))


def list_images(folder: Path) -> dict[str, Path]:
    """Image files directly in ``folder`` by stem (``NAME.jpg`` -> ``NAME``), sorted by stem."""
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return {p.stem: p for p in sorted(files)}


def pair_files(image_dir: Path, mask_dir: Path, problems: list[str] | None = None) -> list[tuple[Path, Path]]:
    """Pair ``image_dir/NAME.*`` with ``mask_dir/NAME.*``.

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
    images, masks = list_images(image_dir), list_images(mask_dir)
    if not images:
        raise SegcliError(f"{image_dir}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    unpaired = [f"{images[n]}: image has no mask {mask_dir}/{n}.*" for n in images if n not in masks]
    unpaired += [f"{masks[n]}: mask has no image {image_dir}/{n}.*" for n in masks if n not in images]
    if unpaired and problems is None:
        raise SegcliError(unpaired[0])
    if problems is not None:
        problems.extend(unpaired)
    return [(images[n], masks[n]) for n in images if n in masks]


def mask_lut(num_classes: int, ignore_index: int,
             mask_values: Mapping[int, int] | None = None) -> np.ndarray:
    """Look-up table raw mask value -> class index: ``(65536,) int64``, -1 where invalid.

    Without ``mask_values`` the raw values 0..C-1 and ``ignore_index`` are valid and kept.
    With it, each ``raw: class`` entry maps a raw value; ``ignore_index`` stays valid.

    Raises:
        SegcliError: a mapped class is outside 0..C-1 and is not ignore_index, or a raw value
            is not an integer in 0..65535.
    """
    lut = np.full(65536, -1, dtype=np.int64)
    if mask_values:
        for raw, cls in mask_values.items():
            if not (0 <= int(cls) < num_classes or int(cls) == ignore_index):
                raise SegcliError(f"dataset.mask_values maps {raw} to {cls}; expected 0..{num_classes - 1} or {ignore_index}")
            if not str(raw).isdigit() or int(raw) > 65535:
                raise SegcliError(f"dataset.mask_values key {raw!r}: expected a raw mask value 0..65535 "
                                  "(for colour masks use dataset.mask_format=rgb)")
            lut[int(raw)] = int(cls)
    else:
        lut[:num_classes] = np.arange(num_classes)
    if 0 <= ignore_index < 65536 and lut[ignore_index] == -1:
        lut[ignore_index] = ignore_index
    return lut


@dataclass
class ColorTable:
    """Colour-coded masks (``dataset.mask_format=rgb``): each RGB colour names a class.

    Attributes:
        codes: ``{(r << 16) | (g << 8) | b: class index or ignore_index}``.
    """

    codes: dict[int, int]

    @classmethod
    def from_config(cls, colors: Sequence[Sequence[int]], ignore_index: int,
                    mask_values: Mapping | None = None) -> ColorTable:
        """Class ``i`` is ``colors[i]``; ``mask_values`` adds ``"R,G,B": class`` entries (e.g.
        ``{"0,0,0": 255}`` to ignore black).

        Raises:
            SegcliError: a mask_values key is not "R,G,B", or its value is not a class or ignore_index.
        """
        codes = {(int(r) << 16) | (int(g) << 8) | int(b): i for i, (r, g, b) in enumerate(colors)}
        for key, value in (mask_values or {}).items():
            parts = str(key).replace(" ", "").split(",")
            if len(parts) != 3 or not all(p.isdigit() and int(p) < 256 for p in parts):
                raise SegcliError(f"dataset.mask_values key {key!r}: expected 'R,G,B' with dataset.mask_format=rgb")
            if not (0 <= int(value) < len(colors) or int(value) == ignore_index):
                raise SegcliError(f"dataset.mask_values maps {key} to {value}; expected 0..{len(colors) - 1} or {ignore_index}")
            r, g, b = map(int, parts)
            codes[(r << 16) | (g << 8) | b] = int(value)
        return cls(codes)

    def decode(self, rgb: np.ndarray) -> np.ndarray:
        """``(H, W, 3) uint8`` RGB -> ``(H, W) int64`` class indices, -1 for unknown colours."""
        code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
        values, inverse = np.unique(code, return_inverse=True)
        classes = np.array([self.codes.get(int(v), -1) for v in values], dtype=np.int64)
        return classes[inverse.reshape(code.shape)]


def mask_table(cfg: Mapping, colors: Sequence[Sequence[int]]) -> np.ndarray | ColorTable:
    """The raw-mask decoder a ``dataset`` config asks for: ``mask_lut`` for index masks
    (``mask_format: index``, the default) or a ``ColorTable`` for ``mask_format: rgb``.

    Raises:
        SegcliError: an unknown mask_format, or a bad mask_values entry.
    """
    fmt = str(cfg.get("mask_format") or "index")
    if fmt == "rgb":
        return ColorTable.from_config(colors, int(cfg["ignore_index"]), cfg.get("mask_values"))
    if fmt != "index":
        raise SegcliError(f"dataset.mask_format={fmt}: expected index or rgb")
    return mask_lut(int(cfg["num_classes"]), int(cfg["ignore_index"]), cfg.get("mask_values"))


def read_image(path: Path) -> np.ndarray:
    """Read an image file as ``(H, W, 3) uint8`` RGB, in stored pixel order (EXIF orientation
    is ignored, as it is for masks, so that image and mask pixels stay aligned).

    Raises:
        SegcliError: the file cannot be decoded as an image.
    """
    array = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if array is None:
        raise SegcliError(f"{path}: cannot read as an image (missing, truncated or not an image)")
    return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)


def read_mask(path: Path, lut: np.ndarray | ColorTable) -> np.ndarray:
    """Read a mask and map it to ``(H, W) int64`` class indices (or ignore_index): a
    single-channel integer image through the ``mask_lut`` table, or an RGB image through a
    ``ColorTable``.

    Raises:
        SegcliError: unreadable; colour where indices were expected or the reverse; a
            non-integer dtype; a value or colour the table does not allow.
    """
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise SegcliError(f"{path}: cannot read as a mask image")
    if isinstance(lut, ColorTable):
        if raw.ndim != 3 or raw.shape[2] not in (3, 4) or raw.dtype != np.uint8:
            raise SegcliError(f"{path}: mask is not an 8-bit RGB image; dataset.mask_format=rgb expects colour masks")
        mask = lut.decode(cv2.cvtColor(raw[..., :3], cv2.COLOR_BGR2RGB))
        if (mask < 0).any():
            bad = np.unique(raw[..., :3][mask < 0][:, ::-1], axis=0)[:3].tolist()
            raise SegcliError(f"{path}: mask colours {bad} are not in dataset.colors (map them with "
                              "dataset.mask_values, e.g. {'0,0,0': 255} to ignore)")
        return mask
    if raw.ndim == 3:
        raise SegcliError(f"{path}: mask has {raw.shape[2]} channels; expected one channel of class "
                          "indices (for colour-coded masks set dataset.mask_format=rgb and dataset.colors)")
    if raw.dtype.kind not in "ui":
        raise SegcliError(f"{path}: mask has {raw.dtype} pixels; expected integer class indices")
    raw = raw.astype(np.int64)
    outside = (raw < 0) | (raw >= len(lut))
    mask = lut[np.where(outside, 0, raw)]
    mask[outside] = -1
    if (mask < 0).any():
        bad = sorted(set(np.unique(raw[mask < 0]).tolist()))[:5]
        allowed = np.flatnonzero(lut >= 0).tolist()
        shown = ", ".join(map(str, allowed[:12])) + (", ..." if len(allowed) > 12 else "")
        raise SegcliError(f"{path}: mask values {bad} are not classes; expected one of [{shown}] "
                          "(classes and ignore_index; map raw values with dataset.mask_values)")
    return mask


def image_size(path: Path) -> tuple[int, int]:
    """Decode an image file in full (which finds truncated files) and return its (height, width).

    Raises:
        SegcliError: the file is missing, truncated or not an image.
    """
    try:
        with Image.open(path) as im:
            im.load()
            width, height = im.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise SegcliError(f"{path}: cannot read as an image ({str(exc)[:80] or type(exc).__name__})") from None
    return height, width


@dataclass
class ClassPixels:
    """Class statistics of a split, for class weighting and reports.

    Attributes:
        pixels: ``(C,) int64`` labelled pixels of each class.
        present: ``(C,) int64`` labelled pixels of the images in which each class occurs (the
            denominator of median-frequency balancing, Eigen and Fergus 2015).
    """

    pixels: np.ndarray
    present: np.ndarray


@dataclass
class SplitCheck(ClassPixels):
    """What ``check_pairs`` found in a split: class statistics of the good pairs, the good pairs,
    the problems of the bad ones (one line each), and how many images have each (H, W)."""

    pairs: list[tuple[Path, Path]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    sizes: dict[tuple[int, int], int] = field(default_factory=dict)


def _check_pair(image_path: Path, mask_path: Path, lut, num_classes: int) -> tuple[np.ndarray, tuple[int, int]]:
    mask = read_mask(mask_path, lut)
    height, width = image_size(image_path)
    if (height, width) != mask.shape:
        raise SegcliError(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH); "
                          f"expected the size of its image {image_path.name}, {width}x{height}")
    valid = mask[(mask >= 0) & (mask < num_classes)]
    return np.bincount(valid, minlength=num_classes)[:num_classes], (height, width)


def check_pairs(pairs: Sequence[tuple[Path, Path]], lut: np.ndarray | ColorTable, num_classes: int,
                skip_bad: bool = False) -> SplitCheck:
    """Check every pair up front, before any training step: both files decode in full (truncated
    files are found), sizes match, and mask values are classes. Files are read by a few threads
    (decoders release the GIL).

    Args:
        skip_bad: describe bad pairs in ``problems`` and leave them out instead of raising.

    Returns:
        see ``SplitCheck``; ``pixels`` and ``present`` count the good pairs only.

    Raises:
        SegcliError: (without ``skip_bad``) the first bad pair, see ``read_mask`` and
            ``image_size``, or an image of another size than its mask.
    """
    from concurrent.futures import ThreadPoolExecutor

    def check(pair):
        try:
            return _check_pair(pair[0], pair[1], lut, num_classes)
        except SegcliError as exc:
            if not skip_bad:
                raise
            return str(exc)

    out = SplitCheck(np.zeros(num_classes, dtype=np.int64), np.zeros(num_classes, dtype=np.int64))
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for pair, result in zip(pairs, pool.map(check, pairs)):
            if isinstance(result, str):
                out.problems.append(result)
                continue
            counts, size = result
            out.pairs.append(pair)
            out.pixels += counts
            out.present += np.where(counts > 0, counts.sum(), 0)
            out.sizes[size] = out.sizes.get(size, 0) + 1
    return out


class SegmentationSamples(Dataset):
    """Base of segcli's datasets: indexed by ``i`` or by ``(epoch, i)``.

    With an ``(epoch, i)`` key (what ``EpochSampler`` yields) and an ``augment_seed``, the
    transform's random draws are seeded from (augment_seed, epoch, i): a sample's augmentation
    does not depend on which worker loads it or on whether the run was resumed.
    """

    transform: Callable
    augment_seed: int | None = None

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        """``(H, W, 3) uint8`` image, ``(H, W) int64`` mask and name of sample ``index``."""
        raise NotImplementedError

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        image, mask, name = self.load(index)
        if self.augment_seed is not None:
            seed_transform(self.transform, (self.augment_seed, epoch, index))
        try:
            out = self.transform(image=image, mask=mask)
        except (cv2.error, ValueError) as exc:  # e.g. a 1-pixel image scaled down to nothing
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:160]
            raise SegcliError(f"{self.source(index)}: the augmentation pipeline failed on this "
                              f"{image.shape[1]}x{image.shape[0]} (WxH) image: {detail}") from None
        return {"image": out["image"], "mask": out["mask"].long(), "name": name, "size": image.shape[:2]}

    def source(self, index: int) -> str:
        """Where sample ``index`` comes from, for error messages."""
        return f"sample {index}"


class PairedFolderDataset(SegmentationSamples):
    """Image/mask file pairs read from disk.

    Args:
        pairs: ``(image_path, mask_path)`` pairs.
        lut: raw mask decoder (see ``mask_table``).
        transform: ``f(image=(H, W, 3) uint8, mask=(H, W) int64) -> {"image": (3, h, w) float32
            tensor, "mask": (h, w) tensor}``.
        augment_seed: see ``SegmentationSamples``; None for evaluation.
    """

    def __init__(self, pairs: Sequence[tuple[Path, Path]], lut: np.ndarray | ColorTable, transform: Callable,
                 augment_seed: int | None = None) -> None:
        self.pairs, self.lut, self.transform, self.augment_seed = list(pairs), lut, transform, augment_seed

    def __len__(self) -> int:
        return len(self.pairs)

    def source(self, index: int) -> str:
        return str(self.pairs[index][0])

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        image_path, mask_path = self.pairs[index]
        image, mask = read_image(image_path), read_mask(mask_path, self.lut)
        if image.shape[:2] != mask.shape:
            raise SegcliError(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH); expected the "
                              f"size of its image {image_path.name}, {image.shape[1]}x{image.shape[0]}")
        return image, mask, image_path.stem


class EpochSampler(Sampler):
    """Yields ``(epoch, index)`` keys: a permutation that depends only on (seed, epoch) when
    shuffling, else 0..n-1, after skipping the first ``skip`` keys (to resume inside an epoch).

    With ``world > 1`` (torchrun) it yields rank ``rank``'s shard, as torch's DistributedSampler
    does: the order padded by repeating its start to a multiple of ``world`` when ``pad`` (training:
    every rank takes the same number of steps), then every ``world``-th key from ``rank``; without
    ``pad`` (evaluation) nothing is repeated, so summed results count each sample once. Written here
    rather than using DistributedSampler because segcli's keys carry the epoch (augmentation is a
    function of (seed, epoch, index)); ``skip`` counts keys of this rank's shard.

    Call ``set_epoch`` before iterating. Used with a DataLoader's ``batch_size``/``drop_last``.
    """

    def __init__(self, length: int, seed: int, shuffle: bool, rank: int = 0, world: int = 1,
                 pad: bool | None = None) -> None:
        self.length, self.seed, self.shuffle = int(length), int(seed), bool(shuffle)
        self.rank, self.world = int(rank), int(world)
        self.pad = self.shuffle if pad is None else bool(pad)
        self.epoch, self.skip = 1, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Iterate epoch ``epoch`` (1-based) from its ``skip``-th sample on."""
        self.epoch, self.skip = int(epoch), int(skip)

    def order(self) -> list[int]:
        """The epoch's sample indices, before skipping."""
        if not self.shuffle:
            return list(range(self.length))
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0]))
        return torch.randperm(self.length, generator=g).tolist()

    def shard(self) -> list[int]:
        """This rank's indices of the epoch, before skipping."""
        order = self.order()
        if self.world == 1:
            return order
        if self.pad and order:
            total = -(-len(order) // self.world) * self.world
            order = (order * (total // len(order) + 1))[:total]
        return order[self.rank::self.world]

    def __iter__(self):
        return iter([(self.epoch, i) for i in self.shard()[self.skip:]])

    def __len__(self) -> int:
        if self.world == 1:
            size = self.length
        elif self.pad:
            size = -(-self.length // self.world)
        else:
            size = len(range(self.rank, self.length, self.world))
        return max(size - self.skip, 0)


@dataclass
class SplitFiles:
    """The file pairs of each split of a folder dataset, and whether the split was made by segcli."""

    pairs: dict[str, list[tuple[Path, Path]]] = field(default_factory=dict)
    random_split: bool = False

    def as_json(self) -> dict:
        """``{split: [image stems]}`` for split.json."""
        return {s: [img.stem for img, _ in p] for s, p in self.pairs.items()}


def find_split_files(cfg: Mapping, seed: int, problems: list[str] | None = None) -> SplitFiles:
    """Find the image/mask pairs of each split of a ``kind: folder`` dataset config.

    Layouts: ``segnet`` (``root/<split>`` + ``root/<split>annot``) and ``image_mask_dirs``
    (``root/<image_dir>[/<split>]`` + ``root/<mask_dir>[/<split>]``; flat folders are split at
    random, seeded, by ``val_fraction``). ``problems``: see ``pair_files``.

    Raises:
        SegcliError: the root or a needed folder is missing, or pairing fails.
    """
    root = Path(str(cfg["root"])).expanduser()
    if not root.is_dir():
        raise SegcliError(f"{root}: dataset.root not found (expected a folder; set dataset.root=PATH)")
    out = SplitFiles()
    if cfg.get("layout") == "segnet":
        for split in SPLITS:
            if (root / split).is_dir() or split != "test":
                out.pairs[split] = pair_files(root / split, root / f"{split}annot", problems)
        return out
    images, masks = root / str(cfg.get("image_dir", "images")), root / str(cfg.get("mask_dir", "masks"))
    if (images / "train").is_dir():
        for split in SPLITS:
            if (images / split).is_dir() or split != "test":
                out.pairs[split] = pair_files(images / split, masks / split, problems)
        return out
    pairs = pair_files(images, masks, problems)
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(pairs) * float(cfg.get("val_fraction", 0.2))))
    if n_val >= len(pairs):
        raise SegcliError(f"{images}: {len(pairs)} image(s) are too few to split off dataset.val_fraction for validation")
    out.pairs["val"] = [pairs[i] for i in sorted(order[:n_val])]
    out.pairs["train"] = [pairs[i] for i in sorted(order[n_val:])]
    out.random_split = True
    return out


def pad_collate(batch: list[dict], ignore_index: int) -> dict:
    """Stack samples of different sizes, padding bottom/right: image with 0, mask with ignore_index.

    Returns:
        ``{"image": (N, 3, H, W) float32, "mask": (N, H, W) int64, "name": list[str],
        "size": list[(h, w)]}``, with H, W the largest in the batch and ``size`` each sample's as
        read (pixels, before the transform).
    """
    h = max(s["image"].shape[-2] for s in batch)
    w = max(s["image"].shape[-1] for s in batch)
    images = torch.zeros(len(batch), batch[0]["image"].shape[0], h, w, dtype=batch[0]["image"].dtype)
    masks = torch.full((len(batch), h, w), ignore_index, dtype=torch.int64)
    for i, s in enumerate(batch):
        sh, sw = s["image"].shape[-2:]
        images[i, :, :sh, :sw] = s["image"]
        masks[i, :sh, :sw] = s["mask"]
    return {"image": images, "mask": masks, "name": [s["name"] for s in batch],
            "size": [tuple(int(v) for v in s.get("size", s["image"].shape[-2:])) for s in batch]}


def worker_init(worker_id: int) -> None:
    """DataLoader worker set-up: no OpenCV threads (the cores belong to the model), and signals
    left to the main process, which stops cleanly on Ctrl-C/SIGTERM (see interrupts.py); a
    worker that died of Ctrl-C would break the batch the main process still needs."""
    cv2.setNumThreads(0)
    seed = torch.initial_seed() % 2**32  # torch gives each worker base_seed + worker_id
    np.random.seed(seed)
    random.seed(seed)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # workers exit when the main process shuts them down


def make_loader(dataset: Dataset, batch_size: int, train: bool, num_workers: int, ignore_index: int,
                seed: int, pin_memory: bool = False, rank: int = 0, world: int = 1) -> DataLoader:
    """A DataLoader over ``EpochSampler`` keys: shuffled per (seed, epoch) and the last
    incomplete batch dropped for training (BatchNorm needs > 1 sample); in order and complete for
    evaluation. Workers persist across epochs. ``loader.sampler.set_epoch(e, skip)`` picks the epoch.
    ``rank``/``world``: this process's shard under torchrun (see EpochSampler)."""
    sampler = EpochSampler(len(dataset), seed, shuffle=train, rank=rank, world=world)
    # Linux: fork, as torch does by default, named explicitly because a job that Hydra's joblib
    # launcher runs in a loky process inherits loky's start method, whose Process cannot start
    # DataLoader workers ("'Process' object has no attribute 'env'")
    context = "fork" if num_workers > 0 and sys.platform.startswith("linux") else None
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler,
        drop_last=train and len(sampler) > batch_size, num_workers=num_workers,
        collate_fn=functools.partial(pad_collate, ignore_index=ignore_index), pin_memory=pin_memory,
        worker_init_fn=worker_init, persistent_workers=num_workers > 0, multiprocessing_context=context,
        generator=torch.Generator().manual_seed(seed),  # workers' base seed: not drawn from the global RNG
    )
