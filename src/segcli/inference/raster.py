"""``segcli predict scene.tif`` on a GeoTIFF: read in windows, segmented window by window, the
mask written window by window as a GeoTIFF in the scene's coordinate system, so that a scene of
any size is predicted in bounded memory.

Reading and writing are rasterio's (GDAL's): windows of the scene, its per-pixel validity mask
(nodata, alpha or an internal mask), and a tiled, deflate-compressed uint8 GeoTIFF with the
input's CRS and transform and a colour table of the classes. What is written here is the
overlap-tile strategy of U-Net (Ronneberger et al. 2015, Fig. 2): each ``window`` x ``window``
block is segmented with ``margin`` pixels of its neighbours around it (clamped to the scene), by
the predictor's own inference mode (``whole``, ``slide`` with Gaussian blending, flips, ...), and
only the block's core is kept, so every kept pixel saw at least ``margin`` pixels of context on
each side and no block border cuts a model's input at a kept pixel (no seams). Memory is one
block with its margins at a time: the scene is never read whole. Pixels the scene marks invalid
are not predicted: they get the mask's nodata (255), and a block with no valid pixel is skipped.
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


def is_geotiff(path: Path) -> bool:
    """A ``.tif``/``.tiff`` file that rasterio opens and that is georeferenced (a CRS, or a
    transform other than the identity, or ground control points). False without rasterio."""
    if Path(path).suffix.lower() not in TIFF_SUFFIXES:
        return False
    rasterio = rasterio_or_none()
    if rasterio is None:
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
    (a ``predict.Predictor``: ``(H, W, 3) uint8`` RGB -> ``(H, W) uint8`` classes) and write
    ``out_dir/NAME.tif``: one uint8 band of class indices, the input's size, CRS and transform,
    nodata ``NODATA`` where the input is invalid, a colour table of the classes. ``window``: the
    block's core side in pixels; ``margin``: pixels of context read around it (each side). The
    file is written as ``NAME.tif.partial`` and renamed when complete.

    Raises:
        SegcliError: rasterio missing; the file unreadable; not 3 bands of 8-bit values (the
            model takes RGB); ``window`` < 32 or ``margin`` < 0; ``out_dir`` the scene's folder
            (the mask would replace the scene)."""
    rasterio = rasterio_or_none()
    if rasterio is None:
        raise SegcliError(f"{path}: predicting a GeoTIFF needs rasterio: pip install 'segcli[geo]'")
    if window < 32 or margin < 0:
        raise SegcliError(
            f"--window {window} --margin {margin}: expected window >= 32, margin >= 0"
        )
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / f"{Path(path).stem}.tif"
    if final.resolve() == Path(path).resolve():
        raise SegcliError(f"{path}: the mask would replace the scene; pass another -o folder")
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        return _predict_scene(rasterio, predictor, Path(path), final, window, margin, start)


def _predict_scene(rasterio, predictor, path, final, window, margin, start) -> RasterResult:
    from rasterio.windows import Window

    partial = final.with_name(final.name + ".partial")
    blocks = skipped = 0
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioError as e:
        raise SegcliError(f"{path}: rasterio cannot read it: {e}") from None
    with src:
        bands = _colour_bands(src, path)
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
                for row in range(0, src.height, window):
                    for col in range(0, src.width, window):
                        core = Window(
                            col, row, min(window, src.width - col), min(window, src.height - row)
                        )
                        ran = _predict_block(predictor, src, dst, core, margin, bands)
                        blocks += ran
                        skipped += not ran
            partial.replace(final)
        finally:
            partial.unlink(missing_ok=True)
        return RasterResult(
            final, src.height, src.width, blocks, skipped, time.perf_counter() - start
        )


def _colour_bands(src, path: Path) -> list[int]:
    """The scene's 3 colour bands (1-based; an alpha band is the validity mask, not a colour).

    Raises:
        SegcliError: not 3 colour bands of uint8."""
    from rasterio.enums import ColorInterp

    bands = [i for i, c in enumerate(src.colorinterp, 1) if c != ColorInterp.alpha]
    if len(bands) != 3 or any(src.dtypes[i - 1] != "uint8" for i in bands):
        raise SegcliError(
            f"{path}: {len(bands)} band(s) of {', '.join(sorted(set(src.dtypes)))}; this model "
            "takes 3 bands of 8-bit RGB (multi-band and 16-bit input are not supported yet)"
        )
    return bands


def _predict_block(predictor, src, dst, core, margin: int, bands: list[int]) -> bool:
    """Segment one block: read ``core`` with ``margin`` pixels around it (clamped to the scene),
    predict, keep the core, set invalid pixels to NODATA, write. False when the core has no valid
    pixel (nothing predicted; the written file keeps nodata there)."""
    from rasterio.windows import Window

    valid = src.dataset_mask(window=core) > 0
    if not valid.any():
        dst.write(np.full((1, core.height, core.width), NODATA, np.uint8), window=core)
        return False
    c0, r0 = max(0, core.col_off - margin), max(0, core.row_off - margin)
    c1 = min(src.width, core.col_off + core.width + margin)
    r1 = min(src.height, core.row_off + core.height + margin)
    read = Window(c0, r0, c1 - c0, r1 - r0)
    image = np.ascontiguousarray(src.read(bands, window=read).transpose(1, 2, 0))
    mask = predictor.predict(image)
    y, x = core.row_off - r0, core.col_off - c0
    kept = mask[y : y + core.height, x : x + core.width].copy()
    kept[~valid] = NODATA
    dst.write(kept[None], window=core)
    return True


def _colormap(colors) -> dict[int, tuple[int, int, int, int]]:
    table = {k: (int(c[0]), int(c[1]), int(c[2]), 255) for k, c in enumerate(colors)}
    table[NODATA] = (0, 0, 0, 0)
    return table
