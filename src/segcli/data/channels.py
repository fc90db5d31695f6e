"""Inputs of any number of channels (``dataset.channels: stored``): each image's channels as its
file stores them (data/images.py's ``read_channels``: multi-band TIFF, ``.npy``, 16-bit PNG), with
the channels of its extra input files stacked after them (``dataset.extra_inputs``: e.g. a depth
PNG beside each frame), as one ``(H, W, C) float32`` array; and the per-channel statistics of the
training split that normalise it (``channel_statistics``), stored in the checkpoint as its
``normalization`` and used by eval, predict and export.

Pairing an extra input follows the masks' and the ROIs' rule (layouts.py): the file
``ROOT/<dir>[/<split>]/NAME<suffix>.*`` for the image ``NAME<image_suffix>.*``; a missing one is a
one-line error naming the file expected (or a pair left out with ``on_bad_file=skip``). For one
image outside a dataset (``segcli predict``), ``extra_files_of`` looks for ``<dir>`` beside the
image's folder or one of its parents.

Statistics (mean, std, and with ``dataset.clip_percentiles`` the clipping bounds; nnU-Net's CT
normalisation, Isensee et al. 2021) come from a seeded sample of at most 8,192 pixels of each of
at most 512 training images (exact min/max over those images; a GeoTIFF's nodata pixels left
out): means and stds to about 3 significant digits, enough for a normalisation, in tens of MB and
fast on 100,000 images. They are cached with
the pair check's cache (data/pair_cache.py's folder), keyed by the files' stamps. Written here:
torchgeo and MONAI compute such statistics per dataset class or per transform, not over a folder
of files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segcli.data.images import read_channels, tiff_nodata
from segcli.data.pairing import list_images
from segcli.errors import SegcliError

PIXELS_PER_IMAGE = 8192  # float32: 512 images x 8192 px x 4 B = 17 MB per channel
MAX_IMAGES = 512
STATS_VERSION = 2


def find_extras(
    root: Path,
    extra_inputs: Sequence[tuple[str, str]],
    pairs: Mapping[str, list[tuple[Path, Path]]],
    image_suffix: str = "",
    problems: list[str] | None = None,
) -> tuple[dict[Path, tuple[Path, ...]], dict[str, list[tuple[Path, Path]]]]:
    """Each image's extra input files, ``ROOT/<dir>[/<split>]/NAME<suffix>.*`` per entry.

    Args:
        pairs: ``{split: [(image, mask), ...]}``.
        problems: when given, a pair with a missing extra file is described here and left out.

    Returns:
        (image path -> one extra file per ``extra_inputs`` entry, the pairs kept).

    Raises:
        SegcliError: a ``dir`` does not exist; (without ``problems``) an extra file is missing.
    """
    listings = []
    for folder, suffix in extra_inputs:
        path = Path(root) / folder
        if not path.is_dir():
            raise SegcliError(f"{path}: dataset.extra_inputs folder not found")
        listings.append((path, suffix, list_images(path, suffix, recursive=True)))
    extras: dict[Path, tuple[Path, ...]] = {}
    kept_pairs = {}
    for split, split_pairs in pairs.items():
        kept = []
        for image, mask in split_pairs:
            stem = image.stem
            name = stem[: len(stem) - len(image_suffix)] if image_suffix else stem
            found, missing = [], None
            for folder, suffix, files in listings:
                extra = files.get(f"{split}/{name}") or files.get(name)
                if extra is None:
                    missing = f"{image}: image has no extra input {folder}/{name}{suffix}.*"
                    break
                found.append(extra)
            if missing is not None:
                if problems is None:
                    raise SegcliError(missing)
                problems.append(missing)
                continue
            extras[image] = tuple(found)
            kept.append((image, mask))
        kept_pairs[split] = kept
    return extras, kept_pairs


def extra_files_of(image: Path, extra_inputs: Sequence[tuple[str, str]]) -> tuple[Path, ...]:
    """The extra input files of one image outside a dataset (``segcli predict``): for each
    ``(dir, suffix)``, ``NAME<suffix>.*`` in ``A/<dir>/<R>`` for ``A`` the image's folder or one
    of its three parents and ``R`` the tail of the path from ``A`` to the image's folder (longest
    first): ``root/images/val/x.jpg`` -> ``root/depth/val/x_depth.png``, ``root/images/x.jpg`` ->
    ``root/depth/x_depth.png``, ``frames/x.jpg`` -> ``frames/depth/x_depth.png``.

    Raises:
        SegcliError: an extra file is not found (the message names where it was looked for).
    """
    image = Path(image).resolve()
    out = []
    for folder, suffix in extra_inputs:
        tried: list[Path] = []
        for base in [image.parent, *image.parents[1:4]]:
            parts = image.parent.relative_to(base).parts
            for k in range(len(parts) + 1):
                where = base / folder / Path(*parts[k:])
                if where not in tried:
                    tried.append(where)
        hit = next(
            (
                found
                for where in tried
                if where.is_dir() and (found := list_images(where, suffix).get(image.stem))
            ),
            None,
        )
        if hit is None:
            raise SegcliError(
                f"{image}: no extra input {image.stem}{suffix}.* (dataset.extra_inputs dir "
                f"'{folder}') in {tried[0]} or beside the folders above it"
            )
        out.append(hit)
    return tuple(out)


def describe_layout(layout: Sequence[Mapping]) -> str:
    """``ChannelStack.layout`` in words: ``image: 3 x uint8, depth: 1 x uint16``."""
    return ", ".join(f"{c['file']}: {c['channels']} x {c['dtype']}" for c in layout)


@dataclass(frozen=True)
class ChannelStack:
    """Reads an image and its extra inputs as one array: ``stack(image_path) -> (H, W, C) float32``
    (the image's channels first, then each extra file's, values as stored). Picklable (loader
    workers).

    Attributes:
        extras: image path -> its extra input files (``find_extras``); images not in it have none.
        names: the extra inputs' ``dir`` names, in order (for ``layout``).
    """

    extras: Mapping[Path, tuple[Path, ...]]
    names: tuple[str, ...] = ()

    def __call__(self, image_path: Path) -> np.ndarray:
        return stack_channels(image_path, self.extras.get(Path(image_path), ()))

    def with_nodata(self, image_path: Path) -> tuple[np.ndarray, np.ndarray | None]:
        """``(stack, invalid)``: the stacked image and, for a GeoTIFF with a nodata value, the
        ``(H, W) bool`` pixels where every band of the image file holds it (rasterio's dataset
        mask rule), else None. Training makes those pixels ignore_index."""
        stack = self(image_path)
        nodata = tiff_nodata(image_path)
        if nodata is None:
            return stack, None
        bands = read_channels(image_path).shape[2] if self.extras.get(Path(image_path)) else None
        part = stack[..., :bands]
        same = np.isnan(part) if np.isnan(nodata) else part == np.float32(nodata)
        return stack, same.all(axis=2)

    def layout(self, image_path: Path) -> list[dict]:
        """What each group of channels is: ``[{"file": "image"|"<dir>", "channels": n,
        "dtype": "uint8"}, ...]``."""
        files = [Path(image_path), *self.extras.get(Path(image_path), ())]
        out = []
        for i, path in enumerate(files):
            array = read_channels(path)
            out.append(
                {
                    "file": "image"
                    if i == 0
                    else (self.names[i - 1 : i] or (path.parent.name,))[0],
                    "channels": int(array.shape[2]),
                    "dtype": str(array.dtype),
                }
            )
        return out


@dataclass(frozen=True)
class StoredReader:
    """Reads one image outside a dataset as a stored-channels run read its data (``segcli
    predict``): ``reader(path) -> (H, W, C) float32``, its extra inputs found by
    ``extra_files_of``.

    Attributes:
        extra_inputs: the run's ``dataset.extra_inputs``.
        channels: the model's input channels; described: e.g. ``image: 3 x uint8, depth: 1 x
            uint16`` (for the error).
    """

    extra_inputs: tuple[tuple[str, str], ...]
    channels: int
    described: str

    def __call__(self, path: Path) -> np.ndarray:
        extras = extra_files_of(path, self.extra_inputs) if self.extra_inputs else ()
        array = stack_channels(path, extras)
        if array.shape[2] != self.channels:
            raise SegcliError(
                f"{path}: {array.shape[2]} channel(s); the model takes {self.channels} "
                f"({self.described})"
            )
        return array


def stack_channels(image_path: Path, extra_files: Sequence[Path]) -> np.ndarray:
    """``(H, W, C) float32``: the image's channels then each extra file's, as stored.

    Raises:
        SegcliError: a file cannot be read, or an extra file's size is not its image's.
    """
    image = read_channels(image_path)
    parts = [image.astype(np.float32, copy=False)]
    for extra in extra_files:
        array = read_channels(extra)
        if array.shape[:2] != image.shape[:2]:
            raise SegcliError(
                f"{extra}: extra input is {array.shape[1]}x{array.shape[0]} (WxH); expected the "
                f"size of its image {Path(image_path).name}, {image.shape[1]}x{image.shape[0]}"
            )
        parts.append(array.astype(np.float32, copy=False))
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=2)


def channel_statistics(
    images: Sequence[Path],
    stack: ChannelStack,
    clip_percentiles: tuple[float, float] | None = None,
    seed: int = 0,
    skip_bad: bool = False,
) -> dict:
    """Per-channel statistics of training images, the checkpoint's ``normalization`` for
    ``dataset.channels: stored`` (see the module docstring for the sample; a GeoTIFF's nodata
    pixels are left out; ``skip_bad``: unreadable images too, as ``on_bad_file=skip`` does).

    Returns:
        ``{"mean": [C], "std": [C], "max_pixel_value": 1.0, "clip": [[low] * C, [high] * C] or
        None, "min": [C], "max": [C], "channels": ChannelStack.layout, "images": n}``: values in
        the files' units; ``x = (clip(v) - mean) / std``. A constant channel gets std 1.

    Raises:
        SegcliError: no images (or no valid pixel); images with different numbers of channels
            (the first two named); (without ``skip_bad``) an unreadable image.
    """
    if not images:
        raise SegcliError("dataset.channels=stored: no training images to compute statistics on")
    chosen = np.linspace(0, len(images) - 1, min(len(images), MAX_IMAGES)).round().astype(int)
    chosen = sorted(set(chosen.tolist()))
    sample, low, high = _pixel_sample(images, chosen, stack, seed, skip_bad)
    clip = None
    if clip_percentiles is not None:
        bounds = np.percentile(sample, list(clip_percentiles), axis=0)
        sample = np.clip(sample, bounds[0], bounds[1])
        clip = [[float(v) for v in bounds[0]], [float(v) for v in bounds[1]]]
    std = sample.std(0, dtype=np.float64)
    return {
        "mean": [float(v) for v in sample.mean(0, dtype=np.float64)],
        "std": [float(v) if v > 0 else 1.0 for v in std],
        "max_pixel_value": 1.0,
        "clip": clip,
        "min": [float(v) for v in low],
        "max": [float(v) for v in high],
        "channels": stack.layout(images[0]),
        "images": len(chosen),
    }


def _pixel_sample(
    images: Sequence[Path], chosen: Sequence[int], stack: ChannelStack, seed: int, skip_bad: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(sample (N, C) float32, min (C,), max (C,))`` over the ``chosen`` images' valid pixels:
    at most ``PIXELS_PER_IMAGE`` of each (seeded by ``seed`` and the image's index), min and max
    over all of them.

    Raises:
        SegcliError: see ``channel_statistics``."""
    samples, low, high, first = [], None, None, None
    for k in chosen:
        try:
            array, invalid = stack.with_nodata(images[k])
        except SegcliError:
            if skip_bad:
                continue
            raise
        if first is None:
            first = (images[k], array.shape[2])
        elif array.shape[2] != first[1]:
            raise SegcliError(
                f"{images[k]}: {array.shape[2]} channel(s); expected {first[1]} like "
                f"{first[0].name} (every image of a dataset has the same channels)"
            )
        flat = array.reshape(-1, array.shape[2])
        if invalid is not None:
            flat = flat[~invalid.ravel()]
        if not len(flat):
            continue
        low = flat.min(0) if low is None else np.minimum(low, flat.min(0))  # exact
        high = flat.max(0) if high is None else np.maximum(high, flat.max(0))
        if len(flat) > PIXELS_PER_IMAGE:
            rng = np.random.default_rng([seed, k])
            flat = flat[rng.choice(len(flat), PIXELS_PER_IMAGE, replace=False)]
        samples.append(flat.astype(np.float32, copy=False))
    if not samples:
        raise SegcliError(f"{images[0].parent}: no valid pixel in the training images' sample")
    return np.concatenate(samples), low, high


def cached_statistics(
    images: Sequence[Path],
    stack: ChannelStack,
    clip_percentiles: tuple[float, float] | None,
    seed: int,
    skip_bad: bool = False,
) -> dict:
    """``channel_statistics`` through a cache file in the pair check's folder, keyed by every
    file's path, size and modification time, the percentiles and the seed (recomputed when any
    changes; the cache is skipped when off or not writable)."""
    from segcli.data.pair_cache import _stamp, cache_dir
    from segcli.files import atomic_write

    folder = cache_dir()
    key = {
        "version": STATS_VERSION,
        "clip": clip_percentiles,
        "seed": seed,
        "files": [
            [
                str(p),
                *map(str, stack.extras.get(Path(p), ())),
                _stamp((p, *stack.extras.get(Path(p), ()))),
            ]
            for p in images
        ],
    }
    digest = hashlib.sha1(json.dumps(key, default=list).encode()).hexdigest()[:20]
    path = None if folder is None else folder / f"channels-{digest}.json"
    if path is not None and path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass
    stats = channel_statistics(images, stack, clip_percentiles, seed, skip_bad)
    if path is not None:
        try:
            atomic_write(path, lambda f: f.write(json.dumps(stats).encode()))
        except OSError:
            pass
    return stats


def channel_report(
    files: Sequence[Path], what: str = "images", sample: int = 8
) -> tuple[list[str], bool]:
    """``segcli data doctor``'s lines on the channels of ``files`` (up to ``sample`` of them,
    evenly spread, read as stored): channels, dtype and bit depth, per-channel min..max; and
    whether they need ``dataset.channels: stored`` (anything but 8-bit gray or RGB(A), whose
    values the RGB reader would convert: 16-bit scaled to 8, bands dropped, floats refused).

    Returns:
        (finding lines, needs stored). Files that cannot be read are left to the pair check.
    """
    picks = sorted({int(i) for i in np.linspace(0, len(files) - 1, min(sample, len(files)))})
    shapes, dtypes, low, high, read = set(), set(), None, None, 0
    for i in picks if files else []:
        try:
            array = read_channels(files[i])
        except SegcliError:
            continue
        read += 1
        shapes.add(array.shape[2])
        dtypes.add(str(array.dtype))
        flat = array.reshape(-1, array.shape[2])
        if len(shapes) == 1:
            low = flat.min(0) if low is None else np.minimum(low, flat.min(0))
            high = flat.max(0) if high is None else np.maximum(high, flat.max(0))
    if not read:
        return [], False
    if len(shapes) > 1:
        counts = ", ".join(str(c) for c in sorted(shapes))
        return [f"{what}: files with {counts} channels (every image needs the same)"], True
    (channels,) = shapes
    kinds = ", ".join(f"{d} ({np.dtype(d).itemsize * 8}-bit)" for d in sorted(dtypes))
    ranges = ", ".join(f"{c}: {_number(low[c])}..{_number(high[c])}" for c in range(channels))
    line = f"{what}: {channels} channel(s), {kinds}; min..max per channel in {read} files: {ranges}"
    stored = channels not in (1, 3, 4) or dtypes != {"uint8"}
    return [line], stored


def _number(value) -> str:
    return f"{value:g}" if isinstance(value, (float, np.floating)) else str(int(value))
