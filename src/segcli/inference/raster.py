"""``segcli predict scene.tif`` on a GeoTIFF: read in windows, segmented window by window, the
mask written window by window as a GeoTIFF in the scene's coordinate system, so that a scene of
any size is predicted in bounded memory.

Reading and writing are rasterio's (GDAL's): windows of the scene, its per-pixel validity mask
(nodata, alpha or an internal mask), and a tiled, deflate-compressed uint8 GeoTIFF with the
input's CRS and transform and a colour table of the classes. What is written here is the
overlap-tile strategy of U-Net (Ronneberger et al. 2015, Fig. 2) with blending: each ``window``
x ``window`` block is segmented with ``margin`` pixels of its neighbours around it (clamped to the
scene) by the predictor's own inference mode (``whole``, ``slide`` with Gaussian tiles, flips,
...), and across the ``2 margin`` pixels two neighbours share, their class probabilities are
mixed with linear ramps (each block's weight falls from 1 to 0 towards its read window's edge, so
the block that saw more context counts more): no block border is a hard cut (no seams), and a
pixel is decided by the block whose core holds it wherever the two disagree less than their
weights. Memory is one block with its margins plus the pending sums of two ``2 margin``-row bands
of the scene's width (``(C, 2 margin, W) float16`` each): the scene is never read whole. Pixels
the scene marks invalid are not predicted: they get the mask's nodata (255), and a block whose
core has no valid pixel is skipped. No library does this streaming (MONAI's sliding window keeps
the whole image's scores in memory; rasterio reads and writes windows but does not blend).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segcli.errors import SegcliError

TIFF_SUFFIXES = (".tif", ".tiff")
#: the mask's value for pixels not predicted (nodata of the input)
NODATA = 255
#: the pending band sums (weighted probabilities, two of ``(C, 2 margin, W)``): float16 halves
#: them (30,000 px wide, 11 classes, margin 128: 2 x 169 MB instead of 2 x 338 MB); its 3
#: significant digits can flip only pixels whose two best classes are within 1e-3 of each other
BAND_DTYPE = np.float16
#: GDAL's block cache, MB (its default, 5% of the machine's memory, would be 1.2 GB on 24 GB):
#: blocks are read and written once each, so a small cache loses nothing
GDAL_CACHE_MB = 128


def rasterio_or_none():
    """The ``rasterio`` module, or None when it is not installed."""
    try:
        import rasterio
    except ImportError:
        return None
    return rasterio


#: TIFF tags of GeoTIFF's georeference (pixel scale, tie points, transformation, GeoKeys)
GEOTIFF_TAGS = (33550, 33922, 34264, 34735)


def is_geotiff(path: Path) -> bool:
    """A ``.tif``/``.tiff`` file that rasterio opens and that is georeferenced (a CRS, or a
    transform other than the identity, or ground control points). Without rasterio: one that
    carries GeoTIFF's tags (read with PIL), so that ``predict_raster`` names the missing extra
    instead of the scene being read whole."""
    if Path(path).suffix.lower() not in TIFF_SUFFIXES:
        return False
    rasterio = rasterio_or_none()
    if rasterio is None:
        from PIL import Image

        try:
            with Image.open(path) as image:
                return any(t in getattr(image, "tag_v2", {}) for t in GEOTIFF_TAGS)
        except (OSError, ValueError):
            return False
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NotGeoreferencedWarning: that is the answer
            with rasterio.open(path) as src:
                return src.crs is not None or not src.transform.is_identity or bool(src.gcps[0])
    except rasterio.errors.RasterioError:
        return False


@dataclass(frozen=True)
class RasterResult:
    """What ``predict_raster`` did: the mask's path, the scene's size (pixels), blocks run and
    skipped (no valid pixel), seconds."""

    path: Path
    height: int
    width: int
    blocks: int
    skipped: int
    seconds: float


def predict_raster(
    predictor, path: Path, out_dir: Path, window: int = 1024, margin: int = 128
) -> RasterResult:
    """Segment the GeoTIFF ``path`` block by block (see the module docstring) with ``predictor``
    (a ``predict.Predictor``: its ``scores``, ``(H, W, 3) uint8`` RGB -> ``(C, H, W)`` logits
    or, for other than the plain ``whole`` inference, probabilities; its ``colors``) and write
    ``out_dir/NAME.tif``: one uint8 band of class indices, the input's size, CRS and transform,
    nodata ``NODATA`` where the input is invalid, a colour table of the classes. ``window``: the
    block's core side in pixels; ``margin``: pixels of context read around it (each side). The
    file is written as ``NAME.tif.partial`` and renamed when complete.

    Raises:
        SegcliError: rasterio missing; the file unreadable, or a block of it (or the mask
            not writable); bands the model does not take (``_input_bands``); ``window`` < 32,
            ``margin`` < 0 or > window / 2; ``out_dir`` the scene's folder (the mask would
            replace the scene)."""
    rasterio = rasterio_or_none()
    if rasterio is None:
        raise SegcliError(f"{path}: predicting a GeoTIFF needs rasterio: pip install 'segcli[geo]'")
    if window < 32 or not 0 <= margin <= window // 2:
        raise SegcliError(
            f"--window {window} --margin {margin}: expected window >= 32 and 0 <= margin <= "
            "window / 2 (a block's margins reach only its neighbours)"
        )
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / f"{Path(path).stem}.tif"
    if final.resolve() == Path(path).resolve():
        raise SegcliError(f"{path}: the mask would replace the scene; pass another -o folder")
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        return _predict_scene(rasterio, predictor, Path(path), final, window, margin, start)


def _predict_scene(rasterio, predictor, path, final, window, margin, start) -> RasterResult:
    partial = final.with_name(final.name + ".partial")
    blocks = skipped = 0
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioError as e:
        raise SegcliError(f"{path}: rasterio cannot read it: {e}") from None
    with src:
        bands = _input_bands(src, path, getattr(predictor, "normalization", None) or {})
        profile = {
            "driver": "GTiff",
            "height": src.height,
            "width": src.width,
            "count": 1,
            "dtype": "uint8",
            "crs": src.crs,
            "transform": src.transform,
            "nodata": NODATA,
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
            "compress": "deflate",
            "BIGTIFF": "IF_SAFER",
        }
        try:
            with rasterio.open(partial, "w", **profile) as dst:
                dst.write_colormap(1, _colormap(predictor.colors))
                blender = _Blender(predictor, src, dst, bands, window, margin)
                for row in range(0, src.height, window):
                    for col in range(0, src.width, window):
                        try:
                            ran = blender.block(row, col)
                        except rasterio.errors.RasterioError as e:
                            raise SegcliError(
                                f"{path}: the block at row {row}, column {col}: {e}"
                            ) from None
                        blocks += ran
                        skipped += not ran
            partial.replace(final)
        finally:
            partial.unlink(missing_ok=True)
        return RasterResult(
            final, src.height, src.width, blocks, skipped, time.perf_counter() - start
        )


def _ramp(n: int, rising: bool) -> np.ndarray:
    """Weights across an overlap of ``n`` pixels, (t + 0.5) / n rising (or 1 minus that): a
    rising and a falling ramp sum to 1 at every pixel, and none is 0."""
    up = (np.arange(n, dtype=np.float32) + 0.5) / max(n, 1)
    return up if rising else 1 - up


class _Blender:
    """Blocks in row-major order, their class probabilities weighted by linear ramps across the
    ``2 margin`` pixels each shares with a neighbour and summed; a pixel's class is the argmax of
    its sum, written as soon as no later block reads it. Pending sums are kept for the band
    below the current row of blocks (``bottom``: ``(C, 2 margin, W)``, ``BAND_DTYPE``), for the one
    above it (``top``, the previous row's ``bottom``), and for the strip right of the last block
    (``right``); block ``(row, col)`` writes rows ``[row - margin, row + window - margin)`` x
    columns ``[col - margin, col + window - margin)`` (to the scene's edges for the last
    ones): those rectangles tile the scene."""

    def __init__(self, predictor, src, dst, bands, window: int, margin: int) -> None:
        self.predictor, self.src, self.dst, self.bands = predictor, src, dst, bands
        self.window, self.m = window, margin
        self.classes = len(predictor.colors)
        self.top = self.bottom = None
        self.right = None

    def _rows(self, row: int):
        """Core rows [y0, y1), read rows [r0, r1), written rows [r0, e1) of a block row."""
        h, m = self.src.height, self.m
        y0, y1 = row, min(row + self.window, h)
        last = y1 >= h
        return y0, y1, max(0, y0 - m), min(h, y1 + m), (h if last else y1 - m), last

    def _cols(self, col: int):
        w, m = self.src.width, self.m
        x0, x1 = col, min(col + self.window, w)
        last = x1 >= w
        return x0, x1, max(0, x0 - m), min(w, x1 + m), (w if last else x1 - m), last

    def _weights(self, y0, y1, r0, r1, x0, x1, c0, c1) -> np.ndarray:
        m = self.m
        wy = np.ones(r1 - r0, np.float32)
        wx = np.ones(c1 - c0, np.float32)
        for w, lo, hi, a, b in ((wy, r0, r1, y0, y1), (wx, c0, c1, x0, x1)):
            if a > lo:  # a neighbour before: rising over [a - m, a + m)
                w[: 2 * m] = _ramp(2 * m, True)[: min(2 * m, hi - lo)]
            if b < hi:  # a neighbour after: falling over [b - m, b + m), cut at the scene's edge
                n = hi - (b - m)
                w[-n:] *= _ramp(2 * m, False)[:n]
        return wy[:, None] * wx[None, :]

    def _probabilities(self, image: np.ndarray) -> np.ndarray:
        scores = self.predictor.scores(image)
        plain = getattr(getattr(self.predictor, "inference", None), "settings", None)
        if plain is None or plain.plain:
            scores = scores.float().softmax(0)
        return scores.float().cpu().numpy()

    def block(self, row: int, col: int) -> bool:
        """Segment and write the block with core at (``row``, ``col``); False when its core has
        no valid pixel (not run)."""
        from rasterio.windows import Window

        m, width = self.m, self.src.width
        y0, y1, r0, r1, e1, last_row = self._rows(row)
        x0, x1, c0, c1, f1, last_col = self._cols(col)
        if col == 0:  # a new row of blocks: the old bottom band is the new top band
            self.top, self.bottom = self.bottom, np.zeros((self.classes, 2 * m, width), BAND_DTYPE)
            self.right = None
        core = Window(x0, y0, x1 - x0, y1 - y0)
        ran = bool((self.src.dataset_mask(window=core) > 0).any())
        acc = np.zeros((self.classes, r1 - r0, c1 - c0), np.float32)
        if ran:
            read = Window(c0, r0, c1 - c0, r1 - r0)
            image = np.ascontiguousarray(self.src.read(self.bands, window=read).transpose(1, 2, 0))
            if image.dtype != np.uint8:  # a stored-channels model: values as stored, float32
                image = image.astype(np.float32)
            acc = self._probabilities(image) * self._weights(y0, y1, r0, r1, x0, x1, c0, c1)
        if not last_row:  # rows [y1 - m, r1): pending until the next row of blocks
            self.bottom[:, : r1 - (y1 - m), c0:c1] += acc[:, y1 - m - r0 :]
        out = acc[:, : e1 - r0, : f1 - c0].copy()
        if self.top is not None and y0 > 0:  # rows [y0 - m, y0 + m): the row above's share
            n = min(2 * m, e1 - r0)
            out[:, :n] += self.top[:, :n, c0:f1].astype(np.float32)
        if self.right is not None:  # columns [x0 - m, x0 + m): the block on the left's share
            out[:, :, : self.right.shape[2]] += self.right
        self.right = None if last_col else acc[:, : e1 - r0, x1 - m - c0 :].copy()
        mask = out.argmax(0).astype(np.uint8)
        written = Window(c0, r0, f1 - c0, e1 - r0)
        mask[self.src.dataset_mask(window=written) == 0] = NODATA
        self.dst.write(mask[None], window=written)
        return ran


def _input_bands(src, path: Path, normalization: dict) -> list[int]:
    """The scene's bands the model reads (1-based; an alpha band is the validity mask, not an
    input): 3 bands of uint8 for an RGB model; for a stored-channels model (``normalization``
    with ``max_pixel_value`` 1, data/channels.py) as many bands as it has input channels, of any
    dtype, read at full precision.

    Raises:
        SegcliError: another number of bands or (RGB model) not uint8; a model with extra
            inputs (a scene holds all its bands in one file)."""
    from rasterio.enums import ColorInterp

    bands = [i for i, c in enumerate(src.colorinterp, 1) if c != ColorInterp.alpha]
    kinds = ", ".join(sorted(set(src.dtypes)))
    if float(normalization.get("max_pixel_value") or 255.0) != 1.0:
        if len(bands) != 3 or any(src.dtypes[i - 1] != "uint8" for i in bands):
            raise SegcliError(
                f"{path}: {len(bands)} band(s) of {kinds}; this model takes 3 bands of 8-bit RGB "
                "(train with dataset.channels=stored for other bands)"
            )
        return bands
    layout = normalization.get("channels") or []
    if len(layout) > 1:
        raise SegcliError(
            f"{path}: the model stacks extra input files ({', '.join(c['file'] for c in layout)});"
            " a GeoTIFF scene must hold every input band itself"
        )
    if len(bands) != len(normalization["mean"]):
        raise SegcliError(
            f"{path}: {len(bands)} band(s) of {kinds}; this model takes "
            f"{len(normalization['mean'])}"
        )
    return bands


def _colormap(colors) -> dict[int, tuple[int, int, int, int]]:
    table = {k: (int(c[0]), int(c[1]), int(c[2]), 255) for k, c in enumerate(colors)}
    table[NODATA] = (0, 0, 0, 0)
    return table
