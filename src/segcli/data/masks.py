"""Mask files -> class indices: every encoding people store masks in, read as what it means
(the file's stored pixels come from data/images.py's ``read_raw_mask``).

- Palette ("P" mode) PNGs and GIFs (PASCAL VOC's ``SegmentationClass``): their *indices* (a
  palette of gray colours only: its gray levels), decoded like one-channel masks.
- One-channel 8- and 16-bit PNG/TIFF and 1-bit images (read as 0/255): raw values through a
  look-up table (``mask_lut``): classes 0..C-1 as they are, ``dataset.mask_values`` to map raw
  values (``{0: 0, 255: 1}``; Cityscapes' labelId -> trainId table), or ``reduce_zero_label``
  (ADE20K: 0 "other" ignored, 1..C shifted to 0..C-1). A three-channel mask whose channels are
  equal (a gray image saved as RGB) counts as one channel.
- Colour masks (``dataset.mask_format=rgb``): RGB or RGBA (alpha dropped) or a palette's colours,
  class ``i`` = ``dataset.colors[i]``.
- Lossy masks (JPEG): compression noise puts values between the classes. Refused with a message
  naming the setting that accepts them: ``dataset.mask_threshold=T`` (binary: raw >= T is class 1)
  or ``dataset.color_tolerance=N`` (snap each colour to the nearest class colour within N levels
  per channel; what is farther, the blends JPEG's chroma subsampling makes at class borders,
  becomes ignore_index, up to 5% of a mask).

Written here: no library decodes masks by these rules (Pillow and OpenCV read pixels, not classes).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from segcli.data.images import RawMask, read_raw_mask
from segcli.data.settings import DatasetSettings
from segcli.errors import SegcliError

MAX_UNSNAPPED = (
    0.05  # colour masks with a tolerance: share of pixels that may stay unsnapped (ignored)
)


def mask_lut(
    num_classes: int,
    ignore_index: int,
    mask_values: Mapping[int, int] | None = None,
    reduce_zero_label: bool = False,
) -> np.ndarray:
    """Look-up table raw mask value -> class index: ``(65536,) int64``, -1 where invalid.

    Without ``mask_values`` the raw values 0..C-1 and ``ignore_index`` are valid and kept.
    With it, each ``raw: class`` entry maps a raw value; ``ignore_index`` stays valid.
    ``reduce_zero_label`` (MMSegmentation's name; ADE20K): raw 0 -> ignore_index, 1..C -> 0..C-1.

    Raises:
        SegcliError: a mapped class is outside 0..C-1 and is not ignore_index, a raw value is not
            an integer in 0..65535, or both mask_values and reduce_zero_label are set.
    """
    lut = np.full(65536, -1, dtype=np.int64)
    if mask_values and reduce_zero_label:
        raise SegcliError(
            "dataset.mask_values and dataset.reduce_zero_label are both set; expected one of them"
        )
    if mask_values:
        for raw, cls in mask_values.items():
            if not (0 <= int(cls) < num_classes or int(cls) == ignore_index):
                raise SegcliError(
                    f"dataset.mask_values maps {raw} to {cls}; expected 0..{num_classes - 1} or "
                    f"{ignore_index}"
                )
            if not str(raw).isdigit() or int(raw) > 65535:
                raise SegcliError(
                    f"dataset.mask_values key {raw!r}: expected a raw mask value 0..65535 "
                    "(for colour masks use dataset.mask_format=rgb)"
                )
            lut[int(raw)] = int(cls)
    elif reduce_zero_label:
        lut[0] = ignore_index
        lut[1 : num_classes + 1] = np.arange(num_classes)
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
        tolerance: snap an unknown colour to the nearest known one when its largest channel
            difference is at most this (8-bit levels); None: unknown colours are invalid.
    """

    codes: dict[int, int]
    tolerance: int | None = None

    @classmethod
    def from_config(
        cls,
        colors: Sequence[Sequence[int]],
        ignore_index: int,
        mask_values: Mapping | None = None,
        tolerance: int | None = None,
    ) -> ColorTable:
        """Class ``i`` is ``colors[i]``; ``mask_values`` adds ``"R,G,B": class`` entries (e.g.
        ``{"0,0,0": 255}`` to ignore black).

        Raises:
            SegcliError: a mask_values key is not "R,G,B", or its value is not a class or
            ignore_index.
        """
        codes = {(int(r) << 16) | (int(g) << 8) | int(b): i for i, (r, g, b) in enumerate(colors)}
        for key, value in (mask_values or {}).items():
            parts = str(key).replace(" ", "").split(",")
            if len(parts) != 3 or not all(p.isdigit() and int(p) < 256 for p in parts):
                raise SegcliError(
                    f"dataset.mask_values key {key!r}: expected 'R,G,B' with "
                    "dataset.mask_format=rgb"
                )
            if not (0 <= int(value) < len(colors) or int(value) == ignore_index):
                raise SegcliError(
                    f"dataset.mask_values maps {key} to {value}; expected 0..{len(colors) - 1} or "
                    f"{ignore_index}"
                )
            r, g, b = map(int, parts)
            codes[(r << 16) | (g << 8) | b] = int(value)
        return cls(codes, tolerance)

    def decode(self, rgb: np.ndarray) -> np.ndarray:
        """``(H, W, 3) uint8`` RGB -> ``(H, W) int64`` class indices, -1 for unknown colours
        (with ``tolerance``: for colours farther than it from every known colour)."""
        code = (
            (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
        )
        values, inverse = np.unique(code, return_inverse=True)
        classes = np.array([self.codes.get(int(v), -1) for v in values], dtype=np.int64)
        if self.tolerance is not None and (classes < 0).any():
            known = np.array(list(self.codes), dtype=np.int64)
            known_rgb = np.stack([(known >> 16) & 255, (known >> 8) & 255, known & 255], 1)
            for i in np.flatnonzero(classes < 0):
                v = int(values[i])
                distance = np.abs(
                    known_rgb - np.array([(v >> 16) & 255, (v >> 8) & 255, v & 255])
                ).max(1)
                if distance.min() <= self.tolerance:
                    classes[i] = self.codes[int(known[distance.argmin()])]
        return classes[inverse.reshape(code.shape)]


@dataclass
class MaskDecoder:
    """Raw mask -> class indices for one dataset config: a ``mask_lut`` table (index masks) or a
    ``ColorTable`` (colour masks), and ``threshold`` for binary masks (raw >= threshold is class
    1, else 0; lossy gray masks). With a colour tolerance, pixels farther than it from every class
    colour (blends at class borders) become ``ignore_index``, up to ``MAX_UNSNAPPED`` of a mask."""

    lut: np.ndarray | None = None
    colors: ColorTable | None = None
    threshold: int | None = None
    ignore_index: int = 255

    def fingerprint(self) -> str:
        """A hash of everything that decides how masks decode (for caches of checked pairs)."""
        h = hashlib.sha1(f"{self.threshold}|{self.ignore_index}".encode())
        if self.lut is not None:
            h.update(np.ascontiguousarray(self.lut).tobytes())
        if self.colors is not None:
            h.update(f"{sorted(self.colors.codes.items())}|{self.colors.tolerance}".encode())
        return h.hexdigest()[:16]

    def decode(self, raw: RawMask, path) -> np.ndarray:
        """``(H, W) int64`` class indices or ignore_index.

        Raises:
            SegcliError: colour where indices were expected or the reverse; a non-integer dtype;
                a value or colour the table does not allow (naming the setting that would accept
                it).
        """
        if self.colors is not None:
            return self._colors(raw, path)
        pixels = raw.pixels
        if pixels.ndim == 3:
            channels = pixels[..., :3]
            if (self.threshold is not None or pixels.shape[2] == 3) and (
                channels == channels[..., :1]
            ).all():
                pixels = channels[..., 0]  # gray stored as RGB
            else:
                raise SegcliError(
                    f"{path}: mask has {pixels.shape[2]} channels ({raw.describe()}); expected one "
                    "channel of class indices (for colour-coded masks set dataset.mask_format=rgb "
                    "and dataset.colors)"
                )
        if pixels.dtype.kind not in "ui":
            raise SegcliError(
                f"{path}: mask has {pixels.dtype} pixels; expected integer class indices"
            )
        if self.threshold is not None:
            return (pixels >= self.threshold).astype(np.int64)
        raw_values = pixels.astype(np.int64)
        outside = (raw_values < 0) | (raw_values >= len(self.lut))
        mask = self.lut[np.where(outside, 0, raw_values)]
        mask[outside] = -1
        if (mask < 0).any():
            raise SegcliError(self._bad_values(raw, np.unique(raw_values[mask < 0]), path))
        return mask

    def _bad_values(self, raw: RawMask, bad: np.ndarray, path) -> str:
        shown_bad = bad[:5].tolist()
        present = set(np.unique(raw.pixels).tolist()) if raw.pixels.ndim == 2 else set()
        if raw.lossy:
            return (
                f"{path}: {raw.describe()} mask with values {shown_bad} between the classes (lossy "
                "compression "
                "noise); for a binary mask set dataset.mask_threshold=128 (values >= 128 are class "
                "1), or "
                "store masks as PNG"
            )
        if present and present <= {0, 255} and 255 in bad:
            return (
                f"{path}: mask values are 0 and 255 (a binary 0/255 mask); set dataset.mask_values="
                "{0: 0, 255: 1} (and dataset.num_classes=2)"
            )
        allowed = np.flatnonzero(self.lut >= 0).tolist()
        shown = ", ".join(map(str, allowed[:12])) + (", ..." if len(allowed) > 12 else "")
        return (
            f"{path}: mask values {shown_bad} are not classes; expected one of [{shown}] "
            "(classes and ignore_index; map raw values with dataset.mask_values)"
        )

    def _colors(self, raw: RawMask, path) -> np.ndarray:
        if raw.palette is not None:
            rgb = raw.palette[np.minimum(raw.pixels, len(raw.palette) - 1)]
        elif raw.pixels.ndim == 3 and raw.pixels.dtype == np.uint8:
            rgb = raw.pixels[..., :3]
        else:
            raise SegcliError(
                f"{path}: mask is {raw.describe()}, not an 8-bit colour image; "
                "dataset.mask_format=rgb "
                "expects colour masks (index masks: dataset.mask_format=index)"
            )
        mask = self.colors.decode(rgb)
        unknown = mask < 0
        if self.colors.tolerance is not None and unknown.mean() <= MAX_UNSNAPPED:
            mask[unknown] = (
                self.ignore_index
            )  # blends at class borders (JPEG chroma), too far from any colour
            return mask
        if unknown.any():
            bad = np.unique(rgb[unknown], axis=0)[:3].tolist()
            if raw.lossy or self.colors.tolerance is not None:
                now = (
                    ""
                    if self.colors.tolerance is None
                    else f" (now {self.colors.tolerance}: {unknown.mean():.1%} of the pixels are "
                    f"farther, at most {MAX_UNSNAPPED:.0%} may be, as ignore_index)"
                )
                raise SegcliError(
                    f"{path}: {raw.describe()} mask colours {bad} are not in dataset.colors "
                    f"({unknown.mean():.1%} of the pixels; lossy compression noise?); set "
                    "dataset.color_tolerance=N to snap each colour to the nearest class colour "
                    "within "
                    f"N levels per channel{now}"
                )
            raise SegcliError(
                f"{path}: mask colours {bad} are not in dataset.colors (map them with "
                "dataset.mask_values, e.g. {'0,0,0': 255} to ignore)"
            )
        return mask


def mask_table(
    settings: DatasetSettings, colors: Sequence[Sequence[int]], identity: bool = False
) -> MaskDecoder:
    """The mask decoder a ``dataset`` group asks for (``mask_format``, ``mask_values``,
    ``reduce_zero_label``, ``mask_threshold``, ``color_tolerance``; checked by
    ``DatasetSettings``). ``colors``: the C class colours (``DatasetInfo.colors``).
    ``identity``: the files already hold class indices (Cityscapes' labelTrainIds):
    ``mask_values`` is not applied.

    Raises:
        SegcliError: a bad mask_values entry, a threshold without two classes.
    """
    num_classes, ignore_index = len(colors), int(settings.ignore_index)
    if settings.mask_format == "rgb":
        return MaskDecoder(
            colors=ColorTable.from_config(
                colors, ignore_index, settings.mask_values, settings.color_tolerance
            ),
            ignore_index=ignore_index,
        )
    threshold = settings.mask_threshold
    if threshold is not None and num_classes != 2:
        raise SegcliError(
            f"dataset.mask_threshold={threshold}: binary masks only; expected "
            "dataset.num_classes=2 "
            f"(not {num_classes})"
        )
    lut = mask_lut(
        num_classes,
        ignore_index,
        None if identity else settings.mask_values,
        bool(settings.reduce_zero_label) and not identity,
    )
    return MaskDecoder(lut=lut, threshold=threshold, ignore_index=ignore_index)


def keep_points(
    mask: np.ndarray, per_class: int, key: Sequence[int], num_classes: int, ignore_index: int
) -> np.ndarray:
    """Sparse labels for experiments (``dataset.point_labels``; point supervision as in Bearman et
    al. 2016, "What's the Point"): keep ``per_class`` random labelled pixels of each class present
    (all of a class with fewer), everything else ``ignore_index``.

    Args:
        mask: ``(H, W) int64`` class indices or ignore_index.
        key: the random draw's seed, e.g. (run seed, image name hash): the same points every epoch
            and after a resume.

    Returns:
        ``(H, W) int64``, at most ``per_class`` pixels of each class, the rest ignore_index.
    """
    rng = np.random.default_rng([int(k) for k in key])
    flat = mask.ravel()
    out = np.full(flat.shape, ignore_index, dtype=np.int64)
    for c in range(num_classes):
        where = np.flatnonzero(flat == c)
        if where.size:
            out[rng.choice(where, min(per_class, where.size), replace=False)] = c
    return out.reshape(mask.shape)


def apply_roi(mask: np.ndarray, roi_path, ignore_index: int) -> np.ndarray:
    """Set the pixels outside a region-of-interest mask to ``ignore_index`` (``dataset.roi_dir``:
    fields of view in medical images, unlabelled areas of aerial tiles). Inside = any non-zero
    value (any channel).

    Args:
        mask: ``(H, W) int64`` class indices; changed in place and returned.

    Raises:
        SegcliError: the ROI file is unreadable or of another size than the mask.
    """
    roi = read_raw_mask(roi_path).pixels
    inside = roi != 0 if roi.ndim == 2 else (roi[..., :3] != 0).any(-1)
    if inside.shape != mask.shape:
        raise SegcliError(
            f"{roi_path}: region-of-interest mask is {inside.shape[1]}x{inside.shape[0]} (WxH); "
            f"expected the size of its mask, {mask.shape[1]}x{mask.shape[0]}"
        )
    mask[~inside] = ignore_index
    return mask


def as_decoder(table: MaskDecoder | ColorTable | np.ndarray) -> MaskDecoder:
    """A ``MaskDecoder`` from a decoder, a ``ColorTable`` or a ``mask_lut`` array."""
    if isinstance(table, MaskDecoder):
        return table
    if isinstance(table, ColorTable):
        return MaskDecoder(colors=table)
    return MaskDecoder(lut=table)


def read_mask(path, table: MaskDecoder | ColorTable | np.ndarray) -> np.ndarray:
    """Read a mask file and map it to ``(H, W) int64`` class indices (or ignore_index).

    Raises:
        SegcliError: unreadable, or see ``MaskDecoder.decode``.
    """
    return as_decoder(table).decode(read_raw_mask(path), path)


def unlabelled_value(num_classes: int) -> int:
    """The value that marks unlabelled pixels in a training-mask PNG segcli writes (weak labels'
    pseudo masks): 255 in 8-bit files (fewer than 255 classes), else 65535 in 16-bit ones."""
    return 255 if num_classes < 255 else 65535


def encode_training_mask(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """``(H, W)`` integer classes 0..C-1, anything else (ignore_index) unlabelled -> the PNG's
    pixels: ``uint8`` (or ``uint16`` for 255 classes or more), unlabelled stored as
    ``unlabelled_value``. ``training_mask_decoder`` reads it back."""
    unlabelled = unlabelled_value(num_classes)
    out = np.where((mask >= 0) & (mask < num_classes), mask, unlabelled)
    return out.astype(np.uint8 if unlabelled == 255 else np.uint16)


def training_mask_decoder(num_classes: int, ignore_index: int) -> MaskDecoder:
    """The decoder of ``encode_training_mask``'s PNGs: 0..C-1 kept, ``unlabelled_value`` ->
    ignore_index, anything else refused (see ``MaskDecoder.decode``)."""
    lut = np.full(65536, -1, dtype=np.int64)
    lut[:num_classes] = np.arange(num_classes)
    lut[unlabelled_value(num_classes)] = ignore_index
    return MaskDecoder(lut=lut, ignore_index=ignore_index)
