"""Predict a generated GeoTIFF scene with segcli and print a table: scene size, seconds, peak
resident memory (GNU time's "Maximum resident set size"), the georeference read back, and whether
the mask of a known pattern shows a seam at block borders.

    python scripts/bench_raster.py CHECKPOINT --size 30000        # 30,000 x 30,000 px, 3 bands
    python scripts/bench_raster.py CHECKPOINT --size 8000 --window 1024 --margin 128
    python scripts/bench_raster.py CHECKPOINT --size 2048 --window 512 --reference  # + one block
    python scripts/bench_raster.py CHECKPOINT --size 30000 --bands 4 --dtype uint16  # multispectral
    python scripts/bench_raster.py --tiles DIR --bands 4 --dtype uint16   # training tiles of it

A multi-band uint16 scene needs a model trained with ``dataset.channels=stored`` on such bands:
``--tiles DIR`` writes 64 training and 16 validation tiles of 256 px of the same pattern
(``DIR/images/{train,val}/*.tif``, masks: the cell parity) and prints the train command.

The scene is stripes of two colours, 37 px wide (not a divisor of any block size), written in
1024-row strips (deflate, tiled), so generating it needs little memory either. The seam check
compares the mask along each block border with the mask one pixel away: on stripes that cross
the borders at right angles, a seam would show as disagreement concentrated on border rows and
columns; the table gives the disagreement rate on border lines and elsewhere. ``--reference``
(scenes that fit in memory) also predicts the scene as one block and prints how often the blocks'
mask differs from it, by distance to the nearest block border: a seam is an excess near 0.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def pattern(rows: np.ndarray, cols: np.ndarray, bands: int, dtype: str) -> tuple:
    """(image (h, w, bands), cell parity (h, w)) of the 37 x 53 px checkerboard at these
    pixel rows and columns: two colours (uint8), or for uint16 the colours times 200 and further
    bands their mean times 100 (values up to 40,000: nothing an 8-bit reader could keep)."""
    colors = np.array([[200, 60, 40], [40, 90, 200]], np.float64)
    if dtype != "uint8":
        colors = colors * 200
    extra = colors.mean(1, keepdims=True) * (0.5 if dtype != "uint8" else 1)
    colors = np.concatenate([colors, np.repeat(extra, max(0, bands - 3), 1)], 1)[:, :bands]
    parity = ((cols[None, :] // 37) + (rows[:, None] // 53)) % 2
    return colors[parity].astype(dtype), parity.astype(np.uint8)


def write_tiles(folder: Path, bands: int, dtype: str, size: int = 256) -> None:
    """Training tiles of the scene's pattern at random offsets (seeded), with noise."""
    import cv2
    import tifffile

    rng = np.random.default_rng(0)
    for split, n in (("train", 64), ("val", 16)):
        (folder / "images" / split).mkdir(parents=True, exist_ok=True)
        (folder / "masks" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            r, c = rng.integers(0, 10_000, 2)
            image, parity = pattern(np.arange(r, r + size), np.arange(c, c + size), bands, dtype)
            noisy = image.astype(np.float64) + rng.normal(0, image.max() * 0.05, image.shape)
            info = np.iinfo(dtype)
            image = np.clip(noisy, info.min, info.max).astype(dtype)
            tifffile.imwrite(folder / "images" / split / f"t{i}.tif", image)
            cv2.imwrite(str(folder / "masks" / split / f"t{i}.png"), parity)


def write_scene(path: Path, size: int, strip: int = 1024, bands: int = 3, dtype="uint8") -> None:
    import rasterio
    from rasterio.transform import from_origin

    profile = {
        "driver": "GTiff", "height": size, "width": size, "count": bands, "dtype": dtype,
        "crs": "EPSG:32633", "transform": from_origin(500_000, 4_000_000, 0.5, 0.5),
        "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate",
        "BIGTIFF": "YES",
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, size, strip):
            h = min(strip, size - row)
            image, _ = pattern(np.arange(row, row + h), np.arange(size), bands, dtype)
            dst.write(image.transpose(2, 0, 1), window=((row, row + h), (0, size)))


def seam_rates(mask_path: Path, window: int, sample: int = 8192) -> tuple[float, float]:
    """Disagreement between each pixel and its neighbour across a line: on block-border lines
    and on all other lines, over the top-left ``sample`` x ``sample`` pixels."""
    import rasterio

    with rasterio.open(mask_path) as src:
        m = src.read(1, window=((0, min(sample, src.height)), (0, min(sample, src.width))))
    diff_cols = m[:, 1:] != m[:, :-1]  # between column j and j+1
    border = (np.arange(1, m.shape[1]) % window) == 0
    # the pattern's own edges are every 37 px, and a model may place one a pixel or two off:
    # compare like with like, only lines at least 3 px from a pattern edge (a border 1 px from
    # one, e.g. 3072 = 83 x 37 + 1, would count the model's edge error as a seam)
    k = np.arange(1, m.shape[1]) % 37
    pattern = np.minimum(k, 37 - k) <= 2
    on = diff_cols[:, border & ~pattern].mean() if (border & ~pattern).any() else float("nan")
    off = diff_cols[:, ~border & ~pattern].mean()
    return float(on), float(off)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?")
    parser.add_argument("--size", type=int, default=30000)
    parser.add_argument("--bands", type=int, default=3)
    parser.add_argument("--dtype", default="uint8", choices=["uint8", "uint16"])
    parser.add_argument("--tiles", type=Path, help="Write training tiles here instead and stop")
    parser.add_argument("--window", type=int, default=1024)
    parser.add_argument("--margin", type=int, default=128)
    parser.add_argument("--keep", type=Path, help="Folder for the scene and mask (default: temp)")
    parser.add_argument("--reference", action="store_true", help="Also predict as one block")
    a = parser.parse_args()
    if a.tiles:
        write_tiles(a.tiles, a.bands, a.dtype)
        print(
            f"segcli train dataset=folder dataset.root={a.tiles} dataset.num_classes=2 "
            "dataset.channels=stored dataset.crop_size=[256,256]"
        )
        return
    if not a.checkpoint:
        parser.error("a checkpoint is needed (or --tiles DIR)")
    import rasterio

    folder = a.keep or Path(tempfile.mkdtemp(prefix="bench-raster-"))
    folder.mkdir(parents=True, exist_ok=True)
    scene = folder / f"scene{a.size}-{a.bands}x{a.dtype}.tif"
    start = time.perf_counter()
    if not scene.is_file():
        write_scene(scene, a.size, bands=a.bands, dtype=a.dtype)
    made = time.perf_counter() - start
    cmd = [
        "/usr/bin/time", "-v", sys.executable, "-m", "segcli", "predict", str(scene),
        "-c", a.checkpoint, "-o", str(folder / "out"), "--window", str(a.window),
        "--margin", str(a.margin),
    ]  # fmt: skip
    start = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if r.returncode != 0:
        sys.exit(f"segcli predict failed ({r.returncode}): {r.stderr[-2000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1)) / 1e6
    mask = folder / "out" / scene.name
    with rasterio.open(scene) as s, rasterio.open(mask) as m:
        same = s.crs == m.crs and s.transform == m.transform and s.shape == m.shape
    on, off = seam_rates(mask, a.window)
    print(
        "| scene (px) | scene file (MB) | window + margin | seconds (predict) | peak RSS (GB) "
        "| CRS and transform read back | label changes on block borders / elsewhere |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(
        f"| {a.size} x {a.size} ({a.bands} x {a.dtype}) | {scene.stat().st_size / 1e6:.0f} | "
        f"{a.window} + {a.margin} | {seconds:.0f} (scene made in {made:.0f}) | {rss:.2f} | "
        f"{'same' if same else 'DIFFERENT'} | {on:.4f} / {off:.4f} |"
    )
    print(r.stdout.strip().splitlines()[-1])
    if a.reference:
        ref = subprocess.run(
            [*cmd[2:-6], "-o", str(folder / "one"), "--window", str(a.size), "--margin", "0"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if ref.returncode != 0:
            sys.exit(f"one-block predict failed: {ref.stderr[-2000:]}")
        with rasterio.open(mask) as b, rasterio.open(folder / "one" / scene.name) as o:
            wrong = b.read(1) != o.read(1)
        d = np.arange(a.size) % a.window
        d = np.minimum(d, a.window - 1 - d)  # distance to the nearest block border, per line
        dist = np.minimum(d[:, None], d[None, :])
        print("| distance to a block border (px) | 0-3 | 4-15 | 16-63 | 64+ | all |")
        print("| --- | --- | --- | --- | --- | --- |")
        rates = [wrong[(dist >= lo) & (dist < hi)].mean() for lo, hi in ((0, 4), (4, 16), (16, 64))]
        rates += [wrong[dist >= 64].mean(), wrong.mean()]
        print(
            "| blocks vs one block: pixels that differ | "
            + " | ".join(f"{v:.4f}" for v in rates)
            + " |"
        )


if __name__ == "__main__":
    main()
