"""Inputs of any number of channels (data/channels.py, images.read_channels, the augmentation tail):
reading as stored, pairing extra inputs, per-channel statistics, channel-aware augmentation."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from segcli.data.augment import build_transforms, seed_transform
from segcli.data.channels import (
    ChannelStack,
    channel_statistics,
    extra_files_of,
    find_extras,
    stack_channels,
)
from segcli.data.images import image_size, read_channels
from segcli.errors import SegcliError

BRIGHTNESS = [{"_target_": "albumentations.RandomBrightnessContrast", "p": 1.0}]


def test_read_channels_keeps_dtype_bands_and_values(tmp_path: Path):
    rng = np.random.default_rng(0)
    bands = rng.integers(0, 65535, (4, 20, 30)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "planar.tif", bands, planarconfig="separate")  # SYX
    tifffile.imwrite(tmp_path / "contig.tif", np.moveaxis(bands, 0, -1))  # YXS
    floats = rng.normal(0, 1, (20, 30)).astype(np.float32)
    np.save(tmp_path / "one.npy", floats)
    cv2.imwrite(str(tmp_path / "deep.png"), bands[0])
    for name in ("planar.tif", "contig.tif"):
        got = read_channels(tmp_path / name)
        assert got.dtype == np.uint16 and got.shape == (20, 30, 4), name
        np.testing.assert_array_equal(got, np.moveaxis(bands, 0, -1))
    got = read_channels(tmp_path / "one.npy")
    assert got.shape == (20, 30, 1) and got.dtype == np.float32
    np.testing.assert_array_equal(got[..., 0], floats)
    got = read_channels(tmp_path / "deep.png")
    assert got.dtype == np.uint16 and got.max() > 255  # no 8-bit squeeze
    np.testing.assert_array_equal(got[..., 0], bands[0])
    assert image_size(tmp_path / "planar.tif") == (20, 30)
    assert image_size(tmp_path / "one.npy") == (20, 30)


def test_read_channels_refuses_arrays_it_cannot_place(tmp_path: Path):
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 4, 5), np.float32))
    with pytest.raises(SegcliError, match=r"cube.npy: array of shape \(2, 3, 4, 5\)"):
        read_channels(tmp_path / "cube.npy")
    (tmp_path / "junk.tif").write_bytes(b"not a tiff")
    with pytest.raises(SegcliError, match="junk.tif: cannot read"):
        read_channels(tmp_path / "junk.tif")


def _pairs(root: Path, names, split="train"):
    for name in names:
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "images" / split / f"{name}.png"), np.zeros((8, 8, 3), np.uint8))
    return {split: [(root / "images" / split / f"{n}.png", Path(f"{n}.png")) for n in names]}


def test_find_extras_pairs_by_name_and_names_the_missing_file(tmp_path: Path):
    pairs = _pairs(tmp_path, ["a", "b"])
    (tmp_path / "depth" / "train").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "depth" / "train" / "a_d.png"), np.zeros((8, 8), np.uint16))
    with pytest.raises(SegcliError, match=r"b.png: image has no extra input .*depth/b_d\.\*"):
        find_extras(tmp_path, [("depth", "_d")], pairs)
    problems: list[str] = []
    extras, kept = find_extras(tmp_path, [("depth", "_d")], pairs, problems=problems)
    assert kept["train"] == pairs["train"][:1] and len(problems) == 1
    assert extras == {pairs["train"][0][0]: (tmp_path / "depth" / "train" / "a_d.png",)}
    with pytest.raises(SegcliError, match="nope: dataset.extra_inputs folder not found"):
        find_extras(tmp_path, [("nope", "")], pairs)
    # one image outside the dataset (segcli predict): depth/ beside images/
    assert extra_files_of(pairs["train"][0][0], [("depth", "_d")]) == (
        (tmp_path / "depth" / "train" / "a_d.png").resolve(),
    )
    with pytest.raises(SegcliError, match="no extra input b_d"):
        extra_files_of(pairs["train"][1][0], [("depth", "_d")])


def test_stack_puts_extra_channels_after_the_image_and_checks_sizes(tmp_path: Path):
    rgb = np.zeros((6, 7, 3), np.uint8)
    rgb[..., 0] = 10
    cv2.imwrite(str(tmp_path / "x.png"), rgb[..., ::-1])
    cv2.imwrite(str(tmp_path / "x_d.png"), np.full((6, 7), 40000, np.uint16))
    cv2.imwrite(str(tmp_path / "small_d.png"), np.zeros((5, 7), np.uint16))
    got = stack_channels(tmp_path / "x.png", [tmp_path / "x_d.png"])
    assert got.dtype == np.float32 and got.shape == (6, 7, 4)
    assert got[0, 0].tolist() == [10, 0, 0, 40000]  # RGB order, depth unscaled
    with pytest.raises(SegcliError, match=r"small_d.png: extra input is 7x5 \(WxH\); expected"):
        stack_channels(tmp_path / "x.png", [tmp_path / "small_d.png"])


def test_statistics_are_the_per_channel_mean_and_std_and_clip_to_percentiles(tmp_path: Path):
    # two 10x10 images: channel 0 holds 0..99 and 100..199, channel 1 is constant 7
    paths = []
    for k in range(2):
        array = np.zeros((10, 10, 2), np.float32)
        array[..., 0] = np.arange(100).reshape(10, 10) + 100 * k
        array[..., 1] = 7
        np.save(tmp_path / f"i{k}.npy", array)
        paths.append(tmp_path / f"i{k}.npy")
    stats = channel_statistics(paths, ChannelStack({}))
    values = np.arange(200)
    assert stats["mean"] == pytest.approx([values.mean(), 7.0])
    assert stats["std"] == pytest.approx([values.std(), 1.0])  # a constant channel: std 1
    assert stats["min"] == [0.0, 7.0] and stats["max"] == [199.0, 7.0]
    assert stats["max_pixel_value"] == 1.0 and stats["clip"] is None
    assert stats["channels"] == [{"file": "image", "channels": 2, "dtype": "float32"}]
    clipped = channel_statistics(paths, ChannelStack({}), clip_percentiles=(10, 90))
    low, high = np.percentile(values, [10, 90])
    assert clipped["clip"][0][0] == pytest.approx(low) and clipped["clip"][1][0] == pytest.approx(
        high
    )
    assert clipped["mean"][0] == pytest.approx(np.clip(values, low, high).mean())
    assert clipped["std"][0] == pytest.approx(np.clip(values, low, high).std())
    np.save(tmp_path / "three.npy", np.zeros((10, 10, 3), np.float32))
    with pytest.raises(SegcliError, match="three.npy: 3 channel"):
        channel_statistics([*paths, tmp_path / "three.npy"], ChannelStack({}))


def _stored(channels, mean, std, clip=None):
    return {"mean": mean, "std": std, "max_pixel_value": 1.0, "clip": clip, "channels": channels}


RGB_DEPTH = [
    {"file": "image", "channels": 3, "dtype": "uint8"},
    {"file": "depth", "channels": 1, "dtype": "uint16"},
]


def test_the_tail_clips_then_normalises_each_channel_in_file_units():
    norm = _stored(
        [{"file": "image", "channels": 2, "dtype": "uint16"}],
        [100.0, 1000.0],
        [10.0, 500.0],
        clip=[[0.0, 0.0], [150.0, 60000.0]],
    )
    transform = build_transforms([], 255, normalization=norm)
    image = np.zeros((32, 32, 2), np.float32)
    image[..., 0], image[..., 1] = 500.0, 2000.0  # channel 0 above its clip bound
    out = transform(image=image, mask=np.zeros((32, 32), np.int64))["image"]
    assert out.shape == (2, 32, 32)
    assert float(out[0, 0, 0]) == pytest.approx((150 - 100) / 10)
    assert float(out[1, 0, 0]) == pytest.approx((2000 - 1000) / 500)


def test_photometric_transforms_touch_the_rgb_channels_only():
    transform = build_transforms(
        BRIGHTNESS, 255, normalization=_stored(RGB_DEPTH, [0.0] * 4, [1.0] * 4)
    )
    image = np.full((32, 32, 4), 100.0, np.float32)
    image[..., 3] = 3000.0
    changed = 0
    for i in range(4):
        seed_transform(transform, (0, 0, i))
        out = transform(image=image, mask=np.zeros((32, 32), np.int64))["image"].numpy()
        assert np.all(out[3] == 3000.0)  # depth as it was
        changed += not np.allclose(out[:3], 100.0)
    assert changed >= 3  # and the colour channels were changed


def test_photometric_transforms_are_refused_without_rgb_first():
    bands = [{"file": "image", "channels": 4, "dtype": "uint16"}]
    with pytest.raises(
        SegcliError,
        match=r"augmentation entry 0 \(albumentations.RandomBrightnessContrast\): a photometric "
        r"transform needs 8-bit RGB channels; these images have image: 4 x uint16",
    ):
        build_transforms(BRIGHTNESS, 255, normalization=_stored(bands, [0.0] * 4, [1.0] * 4))
    geometric = [{"_target_": "albumentations.HorizontalFlip", "p": 1.0}]
    transform = build_transforms(geometric, 255, normalization=_stored(bands, [0.0] * 4, [1.0] * 4))
    image = np.arange(32 * 32 * 4, dtype=np.float32).reshape(32, 32, 4)
    out = transform(image=image, mask=np.zeros((32, 32), np.int64))["image"].numpy()
    np.testing.assert_array_equal(out, np.moveaxis(image[:, ::-1], -1, 0))  # every band flipped


def test_doctor_reports_channels_and_proposes_stored_channels_and_extra_inputs(tmp_path: Path):
    from helpers import write_rgbd

    from segcli.data.doctor import diagnose

    write_rgbd(tmp_path / "rgbd", {"train": 4, "val": 2})
    found = diagnose(tmp_path / "rgbd")
    text = "\n".join(found.findings)
    assert "images: 3 channel(s), uint8 (8-bit)" in text
    assert "depth/: 1 channel(s), uint16 (16-bit)" in text
    assert "dataset.extra_inputs=[{dir: depth, suffix: '_depth'}]" in text
    assert found.config["channels"] is None  # 8-bit RGB: the RGB reader is right
    bands = tmp_path / "bands"
    for i in range(3):
        (bands / "images").mkdir(parents=True, exist_ok=True)
        (bands / "masks").mkdir(exist_ok=True)
        array = np.zeros((4, 16, 16), np.uint16)
        array[2] = 1000 * (i + 1)  # band 2 holds 1000, 2000, 3000
        tifffile.imwrite(bands / "images" / f"t{i}.tif", array, planarconfig="separate")
        cv2.imwrite(str(bands / "masks" / f"t{i}.png"), np.eye(16, dtype=np.uint8))
    found = diagnose(bands)
    text = "\n".join(found.findings)
    assert "images: 4 channel(s), uint16 (16-bit); min..max per channel in 3 files: " in text
    assert "2: 1000..3000" in text
    assert found.config["channels"] == "stored" and found.usable, found.problems


def test_geotiff_nodata_pixels_are_ignore_index_in_training(tmp_path: Path):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    from segcli.data.readers import PairedFolderDataset

    bands = np.full((2, 16, 16), 500, np.uint16)
    bands[:, :, :5] = 9999  # nodata on the left, in every band
    bands[0, 0, 10] = 9999  # one band only: a valid pixel
    profile = {"driver": "GTiff", "height": 16, "width": 16, "count": 2, "dtype": "uint16"}
    with rasterio.open(
        tmp_path / "t.tif",
        "w",
        nodata=9999,
        transform=from_origin(500_000, 4_000_000, 1, 1),
        **profile,
    ) as dst:
        dst.write(bands)
    cv2.imwrite(str(tmp_path / "t.png"), np.ones((16, 16), np.uint8))
    dataset = PairedFolderDataset(
        [(tmp_path / "t.tif", tmp_path / "t.png")],
        np.arange(256),  # mask values are classes
        lambda image, mask: {"image": image, "mask": mask},
        read=ChannelStack({}),
    )
    image, mask, _ = dataset.load(0)
    assert image.shape == (16, 16, 2) and image.dtype == np.float32
    assert (mask[:, :5] == 255).all() and (mask[:, 5:] == 1).all()


def test_a_photometric_transform_inside_one_of_is_refused_for_stored_channels():
    nested = [
        {
            "_target_": "albumentations.OneOf",
            "transforms": [
                {"_target_": "albumentations.HorizontalFlip"},
                {"_target_": "albumentations.GaussNoise"},
            ],
        }
    ]
    norm = _stored(RGB_DEPTH, [0.0] * 4, [1.0] * 4)
    with pytest.raises(SegcliError, match=r"entry 0 \(albumentations.OneOf\): holds a photometric"):
        build_transforms(nested, 255, normalization=norm)
    build_transforms(nested, 255)  # 8-bit RGB: as before
