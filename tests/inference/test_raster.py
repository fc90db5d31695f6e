"""segcli predict scene.tif (inference/raster.py): a GeoTIFF segmented block by block with margins
(U-Net's overlap-tile strategy), written as a GeoTIFF in the scene's CRS and transform, nodata
kept out; the margin is what removes seams (a local operator's blocks equal its whole-image
result with it, and differ at block borders without it); a trained model through segcli predict;
bad scenes in one line."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import segcli
from PIL import Image

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import from_origin

from segcli.errors import SegcliError
from segcli.inference.raster import NODATA, is_geotiff, predict_raster

CRS = "EPSG:32633"
TRANSFORM = from_origin(500_000, 4_000_000, 0.5, 0.5)  # 0.5 m pixels, UTM zone 33N


def write_scene(path: Path, image: np.ndarray, nodata=None, crs=CRS) -> Path:
    """``image: (H, W, B) uint8`` as a georeferenced GeoTIFF."""
    h, w, b = image.shape
    profile = {
        "driver": "GTiff",
        "height": h,
        "width": w,
        "count": b,
        "dtype": image.dtype.name,
        "crs": crs,
    }
    with rasterio.open(path, "w", transform=TRANSFORM, nodata=nodata, **profile) as dst:
        dst.write(image.transpose(2, 0, 1))
    return path


class LocalOperator:
    """A predictor with a 9x9 receptive field: class 1 where the 9x9 mean of the red band is
    above 100 (OpenCV's box filter, border replicated), else 0; ``scores``: logits 2 for that
    class, 0 for the other."""

    colors = np.array([[0, 0, 0], [255, 255, 255]], np.uint8)

    def __init__(self):
        self.calls = []

    def predict(self, image: np.ndarray) -> np.ndarray:
        mean = cv2.blur(image[..., 0].astype(np.float32), (9, 9), borderType=cv2.BORDER_REPLICATE)
        return (mean > 100).astype(np.uint8)

    def scores(self, image: np.ndarray) -> torch.Tensor:
        self.calls.append(image.shape[:2])
        one = torch.from_numpy(self.predict(image)).long()
        return torch.nn.functional.one_hot(one, 2).permute(2, 0, 1).float() * 2


@pytest.fixture
def scene(tmp_path) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    image = (rng.random((150, 230, 3)) * 200).astype(np.uint8)  # noise around the threshold
    return write_scene(tmp_path / "scene.tif", image), image


def test_blocks_with_margins_equal_the_whole_scene_and_keep_its_georeference(scene, tmp_path):
    path, image = scene
    whole = LocalOperator().predict(image)
    op = LocalOperator()
    done = predict_raster(op, path, tmp_path / "out", window=64, margin=8)
    assert done.path == tmp_path / "out" / "scene.tif" and (done.height, done.width) == (150, 230)
    assert done.blocks == 3 * 4 and done.skipped == 0
    # every block was read with its margins, clamped to the scene: never the whole scene at once
    assert max(op.calls) == (64 + 16, 64 + 16) and (64 + 8, 64 + 8) in op.calls
    with rasterio.open(done.path) as out:
        assert out.crs == rasterio.crs.CRS.from_string(CRS) and out.transform == TRANSFORM
        assert (out.count, out.dtypes[0], out.nodata) == (1, "uint8", NODATA)
        assert out.colormap(1)[1] == (255, 255, 255, 255)
        mask = out.read(1)
    assert np.array_equal(mask, whole)  # no seam: a 9x9 operator needs 4 px of context
    assert not list((tmp_path / "out").glob("*.partial"))


def test_without_a_margin_the_block_borders_show(scene, tmp_path):
    path, image = scene
    whole = LocalOperator().predict(image)
    done = predict_raster(LocalOperator(), path, tmp_path / "out", window=64, margin=0)
    with rasterio.open(done.path) as out:
        wrong = out.read(1) != whole
    assert wrong.any()
    rows, cols = np.nonzero(wrong)
    # every wrong pixel lies within 4 px of a block border (a seam), none elsewhere
    near = np.minimum(rows % 64, 63 - rows % 64) < 4
    near |= np.minimum(cols % 64, 63 - cols % 64) < 4
    assert near.all()


def test_nodata_is_not_predicted_and_empty_blocks_are_skipped(tmp_path):
    image = np.full((100, 160, 3), 250, np.uint8)
    image[:, :64] = 0  # the first block column: nodata in every band
    image[70:, 100:] = 0
    path = write_scene(tmp_path / "s.tif", image, nodata=0)
    done = predict_raster(LocalOperator(), path, tmp_path / "o", window=64, margin=8)
    assert done.skipped == 2 and done.blocks == 4  # the two all-nodata blocks of column 0
    with rasterio.open(done.path) as out:
        mask = out.read(1)
    assert (mask[:, :64] == NODATA).all() and (mask[70:, 100:] == NODATA).all()
    assert (mask[:70, 64:] == 1).all() and (mask[70:, 64:100] == 1).all()


def test_an_alpha_band_is_the_validity_mask(tmp_path):
    from rasterio.enums import ColorInterp

    image = np.full((40, 60, 4), 250, np.uint8)
    image[:, :20, 3] = 0  # transparent
    path = write_scene(tmp_path / "rgba.tif", image)
    with rasterio.open(path, "r+") as dst:
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    op = LocalOperator()
    done = predict_raster(op, path, tmp_path / "o", window=32, margin=4)
    with rasterio.open(done.path) as out:
        mask = out.read(1)
    assert (mask[:, :20] == NODATA).all() and (mask[:, 20:] == 1).all()


def test_which_tiffs_are_scenes_and_bad_scenes_in_one_line(tmp_path):
    plain = tmp_path / "plain.tif"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(plain)
    assert not is_geotiff(plain)  # a TIFF without georeference takes the image path
    assert is_geotiff(write_scene(tmp_path / "g.tif", np.zeros((8, 8, 3), np.uint8)))
    assert not is_geotiff(tmp_path / "missing.tif")
    four = write_scene(tmp_path / "four.tif", np.zeros((8, 8, 4), np.uint16))
    with pytest.raises(SegcliError, match=r"4 band\(s\) of uint16; this model takes 3 bands of"):
        predict_raster(LocalOperator(), four, tmp_path / "o")
    with pytest.raises(SegcliError, match="0 <= margin <= window / 2"):
        predict_raster(LocalOperator(), plain, tmp_path / "o", window=64, margin=40)
    with pytest.raises(SegcliError, match="expected window >= 32"):
        predict_raster(LocalOperator(), plain, tmp_path / "o", window=16)
    scene = write_scene(tmp_path / "s.tif", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(SegcliError, match="the mask would replace the scene"):
        predict_raster(LocalOperator(), scene, tmp_path)


class BandOperator(LocalOperator):
    """``LocalOperator`` of a stored-channels model of 4 uint16 bands: class 1 where the 9x9
    mean of band 0 is above 20000 (values as stored, not 8-bit)."""

    def __init__(self):
        super().__init__()
        self.normalization = {
            "mean": [0.0] * 4,
            "std": [1.0] * 4,
            "max_pixel_value": 1.0,
            "channels": [{"file": "image", "channels": 4, "dtype": "uint16"}],
        }

    def predict(self, image: np.ndarray) -> np.ndarray:
        assert image.dtype == np.float32 and image.shape[2] == 4
        mean = cv2.blur(image[..., 0], (9, 9), borderType=cv2.BORDER_REPLICATE)
        return (mean > 20000).astype(np.uint8)


def test_a_stored_channels_model_reads_every_band_at_full_precision(tmp_path):
    rng = np.random.default_rng(1)
    bands = (rng.random((96, 130, 4)) * 40000).astype(np.uint16)
    path = write_scene(tmp_path / "bands.tif", bands)
    whole = BandOperator().predict(bands.astype(np.float32))
    assert 0.2 < whole.mean() < 0.8  # the pattern is not trivial
    done = predict_raster(BandOperator(), path, tmp_path / "o", window=32, margin=8)
    with rasterio.open(done.path) as out:
        np.testing.assert_array_equal(out.read(1), whole)
    three = write_scene(tmp_path / "three.tif", bands[..., :3])
    with pytest.raises(SegcliError, match=r"3 band\(s\) of uint16; this model takes 4"):
        predict_raster(BandOperator(), three, tmp_path / "o")


def test_segcli_predict_writes_a_geotiff_mask_of_a_trained_model(evaluated_runs, tmp_path):
    root, best = evaluated_runs["root"], evaluated_runs["longer"] / "checkpoints" / "best.pt"
    # four test-like frames tiled into a 96x160 scene
    frames = [np.array(Image.open(p).convert("RGB")) for p in sorted((root / "test").iterdir())]
    tile = np.concatenate([frames[0], frames[1]], axis=1)
    scene = write_scene(tmp_path / "scene.tif", np.concatenate([tile, tile[::-1]], axis=0))
    for name, args in (("blocks", ["--window", "64", "--margin", "32"]), ("one", [])):
        r = segcli(
            "predict", str(scene), "-c", str(best), "-o", str(tmp_path / name), "--amp", "false",
            *args, cwd=tmp_path,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert "GeoTIFF, the scene's CRS and transform" in r.stdout
    with (
        rasterio.open(tmp_path / "blocks" / "scene.tif") as a,
        rasterio.open(tmp_path / "one" / "scene.tif") as b,
    ):
        assert a.crs == b.crs == rasterio.crs.CRS.from_string(CRS) and a.transform == TRANSFORM
        blocks, one = a.read(1), b.read(1)
    assert blocks.shape == (96, 160) and set(np.unique(one)) <= {0, 1, 2}
    # a 1024 block covers the scene: the image path's mask; 64 + 32 px margins agree closely
    png = tmp_path / "scene.png"
    Image.fromarray(np.concatenate([tile, tile[::-1]], axis=0)).save(png)
    r = segcli(
        "predict", str(png), "-c", str(best), "-o", str(tmp_path / "png"), "--amp", "false",
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert np.array_equal(one, np.array(Image.open(tmp_path / "png" / "scene.png")))
    assert (blocks == one).mean() > 0.9


def test_without_rasterio_a_geotiff_names_the_extra(tmp_path, monkeypatch):
    from segcli.inference import raster

    scene = write_scene(tmp_path / "g.tif", np.zeros((8, 8, 3), np.uint8))
    plain = tmp_path / "plain.tif"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(plain)
    monkeypatch.setattr(raster, "rasterio_or_none", lambda: None)
    # GeoTIFF's own tags, read with PIL: the scene is not read whole as an image
    assert raster.is_geotiff(scene) and not raster.is_geotiff(plain)
    with pytest.raises(SegcliError, match=r"needs rasterio: pip install 'segcli\[geo\]'"):
        predict_raster(LocalOperator(), scene, tmp_path / "o")
