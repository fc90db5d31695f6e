"""Image and mask files -> their pixels as stored (what a file holds, not what it means).

Images (``read_image``): 8-bit files as they are; 16-bit PNG/TIFF images are scaled to 8 bits by
OpenCV's rule, value / 256 (the top 8 bits of the full 0..65535 range: 12-bit data stored in 16
bits comes out dark; rescale such files first); GIFs through Pillow (first frame). EXIF
orientation is ignored for images and masks alike, so that their pixels stay aligned.

Images with every channel as stored (``read_channels``, ``dataset.channels: stored``): ``.npy``
arrays (numpy), TIFFs of any number of bands and any dtype (tifffile: the first series, its axes
other than Y and X as channels: RGB, planar multi-band, one band per page), and every other image
file through OpenCV's unchanged read (16-bit PNGs stay 16-bit); nothing is scaled.

Masks (``read_raw_mask``): palette ("P" mode) PNGs and GIFs through Pillow, as their *indices*
(OpenCV would expand them to their palette's colours, the most common way a VOC mask is misread);
a palette whose colours are all gray (a 0/255 mask saved as GIF) as its gray levels, so the mask
reads as it looks; 1-bit images as 0/255; everything else through OpenCV's unchanged read (8/16-bit,
colour). What the values mean (classes) is data/masks.py's job.

Unreadable, truncated or non-image files are one-line ``SegcliError``s naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from segcli.errors import SegcliError

cv2.utils.logging.setLogLevel(
    cv2.utils.logging.LOG_LEVEL_SILENT
)  # bad files get segcli's one-line errors instead

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".npy"}
ARRAY_EXTENSIONS = {".npy"}  # read only with dataset.channels=stored
TIFF_EXTENSIONS = {".tif", ".tiff"}
LOSSY_FORMATS = {"JPEG", "MPO"}


def read_image(path: Path) -> np.ndarray:
    """Read an image file as ``(H, W, 3) uint8`` RGB, in stored pixel order (EXIF orientation
    is ignored, as it is for masks, so that image and mask pixels stay aligned).

    Raises:
        SegcliError: the file cannot be decoded as an image, or is a ``.npy`` array (read with
            ``dataset.channels=stored``).
    """
    if Path(path).suffix.lower() in ARRAY_EXTENSIONS:
        raise SegcliError(
            f"{path}: a numpy array, not an image file; read arrays with dataset.channels=stored"
        )
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


def read_channels(path: Path) -> np.ndarray:
    """Read an image file with every channel as stored (see the module docstring).

    Returns:
        ``(H, W, C)`` in the file's dtype (uint8, uint16, int16, float32, ...); C >= 1; colour
        files in RGB(A) order.

    Raises:
        SegcliError: the file cannot be read, or its array is not (H, W) or (H, W, C) (``.npy``:
            channels last) or its TIFF has axes other than Y, X and channels (Z stacks, time).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in ARRAY_EXTENSIONS:
            array = np.load(path, allow_pickle=False)
            if array.ndim not in (2, 3) or array.dtype.kind not in "uif":
                raise SegcliError(
                    f"{path}: array of shape {array.shape} and dtype {array.dtype}; expected "
                    "(H, W) or (H, W, C) numbers, channels last"
                )
            return array[..., None] if array.ndim == 2 else array
        if suffix in TIFF_EXTENSIONS:
            return _read_tiff(path)
    except SegcliError:
        raise
    except (OSError, ValueError, EOFError, KeyError, IndexError) as exc:  # numpy's, tifffile's
        raise SegcliError(f"{path}: cannot read ({str(exc)[:80] or type(exc).__name__})") from None
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if array is None:
        if suffix == ".gif":
            return read_image(path)
        raise SegcliError(f"{path}: cannot read as an image (missing, truncated or not an image)")
    if array.ndim == 2:
        return array[..., None]
    if array.shape[2] in (3, 4):
        return cv2.cvtColor(
            array, cv2.COLOR_BGR2RGB if array.shape[2] == 3 else cv2.COLOR_BGRA2RGBA
        )
    return array


def _read_tiff(path: Path) -> np.ndarray:
    """A TIFF's first series as (H, W, C): tifffile's axes Y and X first, the others (samples S,
    channels C, pages I/Q) merged into channels."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        array, axes = series.asarray(), series.axes
    if "Y" not in axes or "X" not in axes:
        raise SegcliError(f"{path}: TIFF axes {axes}; expected Y and X (rows and columns)")
    other = [i for i, a in enumerate(axes) if a not in "YX"]
    if any(axes[i] in "ZT" for i in other) or len(other) > 1:
        raise SegcliError(
            f"{path}: TIFF axes {axes}; expected a 2-D image with channels (Y, X, one of S C I)"
        )
    array = np.transpose(array, [axes.index("Y"), axes.index("X"), *other])
    return array.reshape(array.shape[0], array.shape[1], -1)


def tiff_nodata(path: Path) -> float | None:
    """The nodata value of a GeoTIFF (GDAL's ``GDAL_NODATA`` tag, 42113), or None (no tag, not a
    TIFF, unreadable: the readers report those)."""
    if Path(path).suffix.lower() not in TIFF_EXTENSIONS:
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            tag = tif.pages[0].tags.get("GDAL_NODATA")
            return None if tag is None else float(str(tag.value).strip().strip("\x00"))
    except (OSError, ValueError, IndexError, tifffile.TiffFileError):
        return None


def image_size(path: Path) -> tuple[int, int]:
    """Decode an image file in full (which finds truncated files) and return its (height, width);
    ``.npy`` arrays and TIFFs that Pillow cannot open (multi-band, float) through
    ``read_channels``.

    Raises:
        SegcliError: the file is missing, truncated or not an image.
    """
    if Path(path).suffix.lower() in ARRAY_EXTENSIONS:
        return tuple(read_channels(path).shape[:2])
    try:
        with Image.open(path) as im:
            im.load()
            width, height = im.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if Path(path).suffix.lower() in TIFF_EXTENSIONS and Path(path).is_file():
            return tuple(read_channels(path).shape[:2])
        raise SegcliError(
            f"{path}: cannot read as an image ({str(exc)[:80] or type(exc).__name__})"
        ) from None
    return height, width


@dataclass
class RawMask:
    """A mask file's pixels as stored.

    Attributes:
        pixels: ``(H, W)`` integer values (palette indices for palette images) or ``(H, W, 3|4)``
            uint8 RGB(A), in RGB order.
        encoding: words for messages: ``palette``, ``8-bit``, ``16-bit``, ``1-bit``, ``RGB``,
            ``RGBA``.
        file_format: Pillow's format name (``PNG``, ``GIF``, ``JPEG``, ``TIFF``, ...).
        palette: ``(K, 3) uint8`` the palette's colours for palette images, else None.
    """

    pixels: np.ndarray
    encoding: str
    file_format: str
    palette: np.ndarray | None = None

    @property
    def lossy(self) -> bool:
        """Stored with lossy compression (JPEG): values between the classes are noise."""
        return self.file_format in LOSSY_FORMATS

    def describe(self) -> str:
        """E.g. ``palette PNG``, ``16-bit TIFF``, ``RGB JPEG``."""
        return f"{self.encoding} {self.file_format}"


def read_raw_mask(path) -> RawMask:
    """Read a mask file's stored pixels (see ``RawMask``): palette and 1-bit images and GIFs through
    Pillow (indices kept), everything else through OpenCV's unchanged read (8/16-bit, colour).

    Raises:
        SegcliError: the file cannot be read as an image.
    """
    try:
        with Image.open(path) as im:
            file_format, mode = im.format or "image", im.mode
            if file_format == "GIF" and mode not in ("P", "PA", "L"):
                return RawMask(np.array(im.convert("RGB")), "RGB", file_format)
            if mode in ("P", "PA") or file_format == "GIF":
                indices = np.array(im if im.mode != "PA" else im.getchannel(0))
                palette = im.getpalette() if im.mode in ("P", "PA") else None
                palette = (
                    None if palette is None else np.array(palette, dtype=np.uint8).reshape(-1, 3)
                )
                if palette is None:
                    return RawMask(indices, "8-bit", file_format)
                if (
                    palette == palette[:, :1]
                ).all():  # a gray palette (0/255 GIFs): the gray levels, as it looks
                    return RawMask(
                        palette[np.minimum(indices, len(palette) - 1), 0],
                        "gray palette",
                        file_format,
                    )
                return RawMask(indices, "palette", file_format, palette)
            if mode == "1":
                return RawMask(np.array(im.convert("L")), "1-bit", file_format)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise SegcliError(f"{path}: cannot read as a mask image") from None
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise SegcliError(f"{path}: cannot read as a mask image")
    if raw.ndim == 3 and raw.shape[2] in (3, 4):
        raw = cv2.cvtColor(raw, cv2.COLOR_BGR2RGB if raw.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
        return RawMask(raw, "RGB" if raw.shape[2] == 3 else "RGBA", file_format)
    bits = {1: "8-bit", 2: "16-bit"}.get(raw.dtype.itemsize, f"{raw.dtype}")
    return RawMask(raw, bits if raw.ndim == 2 else f"{raw.shape[2]}-channel", file_format)
