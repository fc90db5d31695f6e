"""Datasets over image/mask pairs and their up-front check (which files pair up is layouts.py's
job; reading a file's pixels is data/images.py's, what mask values mean data/masks.py's; batching is
data/loaders.py's). The embedded synthetic dataset is in data/synthetic.py.

Every sample is a dict ``{"image": (C, H, W) float32, "mask": (H, W) int64, "name": str,
"size": (h, w)}`` after the transform (see data/augment.py); ``size`` is the image's as read, in
pixels (evaluation pipelines only pad, bottom/right, so ``[:h, :w]`` is the image). Masks hold
class indices 0..C-1 or ``ignore_index``; raw mask values are decoded by data/masks.py.

Problems with the files (a missing folder, an image without a mask, a mask of another size,
an unreadable or truncated file, mask values outside the classes, a colour mask where indices
were expected) are found up front by ``pairing.pair_files`` and ``check_pairs``, before any
training step, and raised as one-line ``SegcliError``s naming the file; or, with
``dataset.on_bad_file=skip``, the bad pairs are left out with a warning and a count.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import cv2
import numpy as np
from torch.utils.data import Dataset

from segcli.data.augment import seed_transform
from segcli.data.images import image_size, read_image, read_raw_mask
from segcli.data.masks import ColorTable, MaskDecoder, apply_roi, as_decoder
from segcli.errors import SegcliError


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

    def add(self, pair: tuple[Path, Path], result) -> None:
        """Count one checked pair: ``result`` is ``(class pixel counts (C,), ignored pixels,
        (height, width))`` for a good pair, or its problem line (a bad pair, left out)."""
        if isinstance(result, str):
            self.problems.append(result)
            return
        counts, ignored, size = result
        self.ignored += ignored
        self.pairs.append(pair)
        self.pixels += counts
        self.present += np.where(counts > 0, counts.sum(), 0)
        self.sizes[size] = self.sizes.get(size, 0) + 1


def _check_pair(
    image_path: Path,
    mask_path: Path,
    decoder: MaskDecoder,
    num_classes: int,
    point_labels: int | None = None,
    roi: Path | None = None,
    extras: Sequence[Path] = (),
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
    for extra in extras:
        if image_size(extra) != (height, width):
            h, w = image_size(extra)
            raise SegcliError(
                f"{extra}: extra input is {w}x{h} (WxH); expected the size of its image "
                f"{image_path.name}, {width}x{height}"
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
    extras: Mapping[Path, Sequence[Path]] | None = None,
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
        extras: image path -> its extra input files (data/channels.py): each must have the
            image's size.

    Returns:
        see ``SplitCheck``; ``pixels`` and ``present`` count the good pairs only.

    Raises:
        SegcliError: (without ``skip_bad``) the first bad pair, see ``read_mask`` and
            ``image_size``, or an image of another size than its mask.
    """
    from concurrent.futures import ThreadPoolExecutor

    def check(pair):
        roi, extra = (rois or {}).get(pair[0]), tuple((extras or {}).get(pair[0], ()))
        cached = cache.get(pair[0], pair[1], roi, extra) if cache is not None else None
        if cached is not None:
            return np.asarray(cached[0], dtype=np.int64), cached[1], cached[2]
        try:
            result = _check_pair(pair[0], pair[1], decoder, num_classes, point_labels, roi, extra)
            if cache is not None:
                cache.put(pair[0], pair[1], roi, *result, extras=extra)
            return result
        except SegcliError as exc:
            if not skip_bad:
                raise
            return str(exc)

    decoder = as_decoder(lut)
    out = SplitCheck(np.zeros(num_classes, dtype=np.int64), np.zeros(num_classes, dtype=np.int64))
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for pair, result in zip(pairs, pool.map(check, pairs)):
            out.add(pair, result)
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

    def name(self, index: int) -> str:
        """Sample ``index``'s name (its image's stem), without reading it where the dataset can."""
        return self.load(index)[2]


class PairedFolderDataset(SegmentationSamples):
    """Image/mask file pairs read from disk.

    Args:
        pairs: ``(image_path, mask_path)`` pairs.
        lut: raw mask decoder (``masks.mask_table``; a ``mask_lut`` array or ``ColorTable`` also
        do). transform: ``f(image=(H, W, C), mask=(H, W) int64) -> {"image": (C, h, w) float32
            tensor, "mask": (h, w) tensor}``.
        augment_seed: see ``SegmentationSamples``; None for evaluation.
        sparsify: ``f(mask, name) -> mask`` applied after decoding (``dataset.point_labels``), or
        None. rois: image path -> region-of-interest mask; pixels outside become ignore_index.
        read: ``read(image_path) -> (H, W, C)`` image: ``images.read_image`` (8-bit RGB), or a
            ``channels.ChannelStack`` (stored channels and extra inputs, float32).
    """

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path]],
        lut: MaskDecoder | ColorTable | np.ndarray,
        transform: Callable,
        augment_seed: int | None = None,
        sparsify: Callable[[np.ndarray, str], np.ndarray] | None = None,
        rois: Mapping[Path, Path] | None = None,
        read: Callable[[Path], np.ndarray] = read_image,
    ) -> None:
        self.read = read
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

    def name(self, index: int) -> str:
        return self.pairs[index][0].stem

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        image_path, mask_path = self.pairs[index]
        invalid = None
        if hasattr(self.read, "with_nodata"):  # stored channels: a GeoTIFF's nodata is ignored
            image, invalid = self.read.with_nodata(image_path)
        else:
            image = self.read(image_path)
        mask = self.lut.decode(read_raw_mask(mask_path), mask_path)
        if image.shape[:2] != mask.shape:
            raise SegcliError(
                f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH); expected the "
                f"size of its image {image_path.name}, {image.shape[1]}x{image.shape[0]}"
            )
        if invalid is not None:
            mask = np.where(invalid, self.lut.ignore_index, mask)
        if image_path in self.rois:
            apply_roi(mask, self.rois[image_path], self.lut.ignore_index)
        if self.sparsify is not None:
            mask = self.sparsify(mask, image_path.stem)
        return image, mask, image_path.stem


class PseudoMaskDataset(SegmentationSamples):
    """Training images whose masks come from a folder of ``NAME.png`` files that segcli wrote
    (weak labels' training masks, src/segcli/weak/pseudo.py; ``masks.encode_training_mask``).

    Args:
        images: the images: image files (``NAME`` = the file's stem), or a dataset whose ``load``
            gives them (the synthetic one; its own masks are not used).
        masks: the folder of ``NAME.png``; the samples are the images that have one.
        decoder: ``masks.training_mask_decoder`` of the classes.
        transform, augment_seed: as ``PairedFolderDataset``'s.

    Raises:
        SegcliError: (when loading) a mask of another size than its image.
    """

    def __init__(
        self,
        images: Sequence[Path] | SegmentationSamples,
        masks: Path,
        decoder: MaskDecoder,
        transform: Callable,
        augment_seed: int | None = None,
    ) -> None:
        self.base = images if isinstance(images, SegmentationSamples) else None
        paths = [] if self.base is not None else list(images)
        names = (
            [self.base.name(i) for i in range(len(self.base))]
            if self.base is not None
            else [p.stem for p in paths]
        )
        present = {p.stem for p in Path(masks).glob("*.png")}
        self.items = [(i, n) for i, n in enumerate(names) if n in present]
        self.paths, self.masks, self.lut = paths, Path(masks), decoder
        self.transform, self.augment_seed = transform, augment_seed

    def __len__(self) -> int:
        return len(self.items)

    def source(self, index: int) -> str:
        i, name = self.items[index]
        return str(self.paths[i]) if self.paths else name

    def name(self, index: int) -> str:
        return self.items[index][1]

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        i, name = self.items[index]
        image = self.base.load(i)[0] if self.base is not None else read_image(self.paths[i])
        path = self.masks / f"{name}.png"
        mask = self.lut.decode(read_raw_mask(path), path)
        if image.shape[:2] != mask.shape:
            raise SegcliError(
                f"{path}: training mask is {mask.shape[1]}x{mask.shape[0]} (WxH); expected the "
                f"size of its image, {image.shape[1]}x{image.shape[0]}"
            )
        return image, mask, name

    def class_pixels(self, num_classes: int) -> ClassPixels:
        """``ClassPixels`` of the training masks (labelled pixels only), for class weights."""
        pixels = np.zeros(num_classes, np.int64)
        present = np.zeros(num_classes, np.int64)
        for _, name in self.items:
            path = self.masks / f"{name}.png"
            mask = self.lut.decode(read_raw_mask(path), path)
            counts = np.bincount(mask[(mask >= 0) & (mask < num_classes)], minlength=num_classes)
            pixels += counts[:num_classes]
            present += np.where(counts[:num_classes] > 0, counts[:num_classes].sum(), 0)
        return ClassPixels(pixels, present)
