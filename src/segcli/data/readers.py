"""Datasets and loaders over image/mask pairs (which files pair up is layouts.py's job; how a mask
file becomes class indices is data/masks.py's). The embedded synthetic dataset is in data/synthetic.py.

Every sample is a dict ``{"image": (3, H, W) float32, "mask": (H, W) int64, "name": str,
"size": (h, w)}`` after the transform (see data/augment.py); ``size`` is the image's as read, in
pixels (evaluation pipelines only pad, bottom/right, so ``[:h, :w]`` is the image). Masks hold class indices 0..C-1 or ``ignore_index``;
raw mask values are decoded by data/masks.py.

Images: 8-bit files as they are; 16-bit PNG/TIFF images are scaled to 8 bits by OpenCV's rule,
value / 256 (the top 8 bits of the full 0..65535 range: 12-bit data stored in 16 bits comes out dark;
rescale such files first); GIFs through Pillow (first frame).

Problems with the files (a missing folder, an image without a mask, a mask of another size,
an unreadable or truncated file, mask values outside the classes, a colour mask where indices
were expected) are found up front by ``layouts.pair_files`` and ``check_pairs``, before any training
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

from segcli.data.augment import seed_transform
from segcli.data.masks import ColorTable, MaskDecoder, apply_roi, as_decoder, read_raw_mask
from segcli.errors import SegcliError

cv2.utils.logging.setLogLevel(
    cv2.utils.logging.LOG_LEVEL_SILENT
)  # bad files get segcli's one-line errors instead

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
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
        """Build from a ``dataset`` config group; names and colours default when null, and
        ``num_classes`` (when null) is the length of ``class_names`` or ``colors``.

        Raises:
            SegcliError: no num_classes and nothing to count; class_names or colors do not have
                num_classes entries.
        """
        given = cfg.get("num_classes")
        if given is None:
            given = len(cfg.get("class_names") or cfg.get("colors") or [])
            if not given:
                raise SegcliError(
                    "dataset.num_classes: not set; set it, or dataset.class_names or dataset.colors"
                )
        c = int(given)
        names = list(cfg.get("class_names") or [f"class{i}" for i in range(c)])
        colors = [list(map(int, x)) for x in (cfg.get("colors") or default_colors(c))]
        for key, value in (("dataset.class_names", names), ("dataset.colors", colors)):
            if len(value) != c:
                raise SegcliError(
                    f"{key} has {len(value)} entries; expected dataset.num_classes={c}"
                )
        return cls(c, names, colors, int(cfg["ignore_index"]))


def read_image(path: Path) -> np.ndarray:
    """Read an image file as ``(H, W, 3) uint8`` RGB, in stored pixel order (EXIF orientation
    is ignored, as it is for masks, so that image and mask pixels stay aligned).

    Raises:
        SegcliError: the file cannot be decoded as an image.
    """
    array = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if array is None and Path(path).suffix.lower() == ".gif":
        try:
            with Image.open(path) as im:
                return np.array(im.convert("RGB"))
        except (OSError, SyntaxError, ValueError):
            pass
    if array is None:
        raise SegcliError(f"{path}: cannot read as an image (missing, truncated or not an image)")
    return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)


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
        raise SegcliError(
            f"{path}: cannot read as an image ({str(exc)[:80] or type(exc).__name__})"
        ) from None
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
    the problems of the bad ones (one line each), how many images have each (H, W), and how many
    pixels of the good pairs are ignore_index (unlabelled)."""

    pairs: list[tuple[Path, Path]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    sizes: dict[tuple[int, int], int] = field(default_factory=dict)
    ignored: int = 0


def _check_pair(
    image_path: Path,
    mask_path: Path,
    decoder: MaskDecoder,
    num_classes: int,
    point_labels: int | None = None,
    roi: Path | None = None,
) -> tuple[np.ndarray, int, tuple[int, int]]:
    mask = decoder.decode(read_raw_mask(mask_path), mask_path)
    if roi is not None:
        apply_roi(mask, roi, decoder.ignore_index)
    height, width = image_size(image_path)
    if (height, width) != mask.shape:
        raise SegcliError(
            f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH); "
            f"expected the size of its image {image_path.name}, {width}x{height}"
        )
    labelled = (mask >= 0) & (mask < num_classes)
    counts = np.bincount(mask[labelled], minlength=num_classes)[:num_classes]
    if point_labels is not None:
        counts = np.minimum(counts, point_labels)  # what keep_points leaves of each class
    return counts, int((~labelled).sum()), (height, width)


def check_pairs(
    pairs: Sequence[tuple[Path, Path]],
    lut: MaskDecoder | ColorTable | np.ndarray,
    num_classes: int,
    skip_bad: bool = False,
    point_labels: int | None = None,
    rois: Mapping[Path, Path] | None = None,
    cache=None,
) -> SplitCheck:
    """Check every pair up front, before any training step: both files decode in full (truncated
    files are found), sizes match, and mask values are classes. Files are read by a few threads
    (decoders release the GIL).

    Args:
        skip_bad: describe bad pairs in ``problems`` and leave them out instead of raising.
        point_labels: count at most this many pixels of a class per image (the labelled pixels
            ``masks.keep_points`` leaves), so class weights count only labelled pixels.
        rois: image path -> region-of-interest mask (``masks.apply_roi``): only pixels inside count.
        cache: a ``pair_cache.PairCache`` opened for this decoder: unchanged pairs are not decoded
            again (the caller saves it).

    Returns:
        see ``SplitCheck``; ``pixels`` and ``present`` count the good pairs only.

    Raises:
        SegcliError: (without ``skip_bad``) the first bad pair, see ``read_mask`` and
            ``image_size``, or an image of another size than its mask.
    """
    from concurrent.futures import ThreadPoolExecutor

    def check(pair):
        roi = (rois or {}).get(pair[0])
        cached = cache.get(pair[0], pair[1], roi) if cache is not None else None
        if cached is not None:
            return np.asarray(cached[0], dtype=np.int64), cached[1], cached[2]
        try:
            result = _check_pair(pair[0], pair[1], decoder, num_classes, point_labels, roi)
            if cache is not None:
                cache.put(pair[0], pair[1], roi, *result)
            return result
        except SegcliError as exc:
            if not skip_bad:
                raise
            return str(exc)

    decoder = as_decoder(lut)
    out = SplitCheck(np.zeros(num_classes, dtype=np.int64), np.zeros(num_classes, dtype=np.int64))
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for pair, result in zip(pairs, pool.map(check, pairs)):
            if isinstance(result, str):
                out.problems.append(result)
                continue
            counts, ignored, size = result
            out.ignored += ignored
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
            raise SegcliError(
                f"{self.source(index)}: the augmentation pipeline failed on this "
                f"{image.shape[1]}x{image.shape[0]} (WxH) image: {detail}"
            ) from None
        return {
            "image": out["image"],
            "mask": out["mask"].long(),
            "name": name,
            "size": image.shape[:2],
        }

    def source(self, index: int) -> str:
        """Where sample ``index`` comes from, for error messages."""
        return f"sample {index}"


class PairedFolderDataset(SegmentationSamples):
    """Image/mask file pairs read from disk.

    Args:
        pairs: ``(image_path, mask_path)`` pairs.
        lut: raw mask decoder (``masks.mask_table``; a ``mask_lut`` array or ``ColorTable`` also do).
        transform: ``f(image=(H, W, 3) uint8, mask=(H, W) int64) -> {"image": (3, h, w) float32
            tensor, "mask": (h, w) tensor}``.
        augment_seed: see ``SegmentationSamples``; None for evaluation.
        sparsify: ``f(mask, name) -> mask`` applied after decoding (``dataset.point_labels``), or None.
        rois: image path -> region-of-interest mask; pixels outside become ignore_index.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path]],
        lut: MaskDecoder | ColorTable | np.ndarray,
        transform: Callable,
        augment_seed: int | None = None,
        sparsify: Callable[[np.ndarray, str], np.ndarray] | None = None,
        rois: Mapping[Path, Path] | None = None,
    ) -> None:
        self.pairs, self.lut, self.transform, self.augment_seed = (
            list(pairs),
            as_decoder(lut),
            transform,
            augment_seed,
        )
        self.sparsify, self.rois = sparsify, dict(rois or {})

    def __len__(self) -> int:
        return len(self.pairs)

    def source(self, index: int) -> str:
        return str(self.pairs[index][0])

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        image_path, mask_path = self.pairs[index]
        image, mask = read_image(image_path), self.lut.decode(read_raw_mask(mask_path), mask_path)
        if image.shape[:2] != mask.shape:
            raise SegcliError(
                f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH); expected the "
                f"size of its image {image_path.name}, {image.shape[1]}x{image.shape[0]}"
            )
        if image_path in self.rois:
            apply_roi(mask, self.rois[image_path], self.lut.ignore_index)
        if self.sparsify is not None:
            mask = self.sparsify(mask, image_path.stem)
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

    def __init__(
        self,
        length: int,
        seed: int,
        shuffle: bool,
        rank: int = 0,
        world: int = 1,
        pad: bool | None = None,
    ) -> None:
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
        g = torch.Generator().manual_seed(
            int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0])
        )
        return torch.randperm(self.length, generator=g).tolist()

    def shard(self) -> list[int]:
        """This rank's indices of the epoch, before skipping."""
        order = self.order()
        if self.world == 1:
            return order
        if self.pad and order:
            total = -(-len(order) // self.world) * self.world
            order = (order * (total // len(order) + 1))[:total]
        return order[self.rank :: self.world]

    def __iter__(self):
        return iter([(self.epoch, i) for i in self.shard()[self.skip :]])

    def __len__(self) -> int:
        if self.world == 1:
            size = self.length
        elif self.pad:
            size = -(-self.length // self.world)
        else:
            size = len(range(self.rank, self.length, self.world))
        return max(size - self.skip, 0)


def pad_collate(batch: list[dict], ignore_index: int) -> dict:
    """Stack samples of different sizes, padding bottom/right: image with 0, mask with ignore_index.

    Returns:
        ``{"image": (N, 3, H, W) float32, "mask": (N, H, W) int64, "name": list[str],
        "size": list[(h, w)]}``, with H, W the largest in the batch and ``size`` each sample's as
        read (pixels, before the transform).
    """
    h = max(s["image"].shape[-2] for s in batch)
    w = max(s["image"].shape[-1] for s in batch)
    images = torch.zeros(
        len(batch), batch[0]["image"].shape[0], h, w, dtype=batch[0]["image"].dtype
    )
    masks = torch.full((len(batch), h, w), ignore_index, dtype=torch.int64)
    for i, s in enumerate(batch):
        sh, sw = s["image"].shape[-2:]
        images[i, :, :sh, :sw] = s["image"]
        masks[i, :sh, :sw] = s["mask"]
    return {
        "image": images,
        "mask": masks,
        "name": [s["name"] for s in batch],
        "size": [tuple(int(v) for v in s.get("size", s["image"].shape[-2:])) for s in batch],
    }


def worker_init(worker_id: int) -> None:
    """DataLoader worker set-up: no OpenCV threads (the cores belong to the model), and signals
    left to the main process, which stops cleanly on Ctrl-C/SIGTERM (see training/interrupts.py); a
    worker that died of Ctrl-C would break the batch the main process still needs."""
    cv2.setNumThreads(0)
    seed = torch.initial_seed() % 2**32  # torch gives each worker base_seed + worker_id
    np.random.seed(seed)
    random.seed(seed)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(
        signal.SIGTERM, signal.SIG_IGN
    )  # workers exit when the main process shuts them down


def make_loader(
    dataset: Dataset,
    batch_size: int,
    train: bool,
    num_workers: int,
    ignore_index: int,
    seed: int,
    pin_memory: bool = False,
    rank: int = 0,
    world: int = 1,
) -> DataLoader:
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
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=train and len(sampler) > batch_size,
        num_workers=num_workers,
        collate_fn=functools.partial(pad_collate, ignore_index=ignore_index),
        pin_memory=pin_memory,
        worker_init_fn=worker_init,
        persistent_workers=num_workers > 0,
        multiprocessing_context=context,
        generator=torch.Generator().manual_seed(
            seed
        ),  # workers' base seed: not drawn from the global RNG
    )
