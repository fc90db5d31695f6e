from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import camvid_or_skip, write_pair
from PIL import Image

from segcli.data.augment import build_transforms
from segcli.data.images import image_size, read_image
from segcli.data.layouts import find_split_files
from segcli.data.loaders import EpochSampler, pad_collate
from segcli.data.masks import mask_lut, mask_table, read_mask
from segcli.data.pairing import pair_files
from segcli.data.readers import PairedFolderDataset, check_pairs
from segcli.data.settings import DatasetSettings
from segcli.data.synthetic import SyntheticDataset
from segcli.errors import SegcliError


def test_pair_files_pairs_by_stem_across_extensions(segnet_root: Path):
    pairs = pair_files(segnet_root / "train", segnet_root / "trainannot")
    assert len(pairs) == 8
    assert all(i.stem == m.stem and i.suffix == ".jpg" and m.suffix == ".png" for i, m in pairs)


def test_missing_folder_and_unpaired_files_name_the_file(segnet_root: Path):
    with pytest.raises(SegcliError, match="nowhere: data folder not found"):
        pair_files(segnet_root / "nowhere", segnet_root / "trainannot")
    (segnet_root / "trainannot" / "train0.png").unlink()
    with pytest.raises(SegcliError, match=r"train0.jpg: image has no mask"):
        pair_files(segnet_root / "train", segnet_root / "trainannot")
    write_pair(segnet_root / "x", segnet_root / "valannot", "orphan", 8, 8, 2, 0)
    (segnet_root / "x" / "orphan.jpg").unlink()
    with pytest.raises(SegcliError, match=r"orphan.png: mask has no image"):
        pair_files(segnet_root / "val", segnet_root / "valannot")


def test_check_pairs_counts_classes_and_rejects_bad_masks(segnet_root: Path):
    pairs = pair_files(segnet_root / "train", segnet_root / "trainannot")
    stats = check_pairs(pairs, mask_lut(3, 255), 3)
    assert (
        stats.pixels.tolist() == [8 * 16 * 80] * 3
    )  # 48 rows in three bands of 16, 80 wide, 8 images
    assert stats.present.tolist() == [8 * 48 * 80] * 3  # every class occurs in every image
    with pytest.raises(SegcliError, match=r"train\d.png: mask values \[2\] are not classes"):
        check_pairs(pairs, mask_lut(2, 255), 2)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(pairs[0][1])
    with pytest.raises(
        SegcliError, match=r"train0.png: mask is 10x10 \(WxH\); expected the size of its image"
    ):
        check_pairs(pairs, mask_lut(3, 255), 3)


def test_rgb_mask_and_unreadable_image_are_user_errors(tmp_path: Path):
    rgb = tmp_path / "m.png"
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[0, 0] = [0, 1, 0]
    Image.fromarray(colour).save(rgb)
    with pytest.raises(SegcliError, match="m.png: mask has 3 channels"):
        read_mask(rgb, mask_lut(2, 255))
    gray = np.zeros((4, 4, 3), np.uint8)
    gray[1] = 1  # equal channels: a gray mask saved as RGB reads as its values
    Image.fromarray(gray).save(rgb)
    assert read_mask(rgb, mask_lut(2, 255)).tolist() == [[0] * 4, [1] * 4, [0] * 4, [0] * 4]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "broken.png")
    with pytest.raises(SegcliError, match="broken.jpg: cannot read as an image"):
        check_pairs([(bad, tmp_path / "broken.png")], mask_lut(2, 255), 2)


def test_mask_values_map_binary_255_masks(flat_binary_root: Path):
    lut = mask_lut(2, 255, {0: 0, 255: 1})
    mask = read_mask(next((flat_binary_root / "masks").iterdir()), lut)
    assert set(np.unique(mask).tolist()) == {0, 1}
    with pytest.raises(
        SegcliError,
        match=r"mask values are 0 and 255 \(a binary 0/255 mask\); set "
        r"dataset.mask_values=\{0: 0, 255: 1\}",
    ):
        read_mask(next((flat_binary_root / "masks").iterdir()), mask_lut(2, 254))
    with pytest.raises(SegcliError, match="dataset.mask_values maps 255 to 7"):
        mask_lut(2, 254, {255: 7})


def test_flat_folder_gets_a_seeded_random_split(flat_binary_root: Path):
    cfg = {
        "root": str(flat_binary_root),
        "layout": "image_mask_dirs",
        "image_dir": "images",
        "mask_dir": "masks",
        "val_fraction": 0.3,
    }
    settings = DatasetSettings.from_config(cfg)
    a, b, c = (
        find_split_files(settings, 0),
        find_split_files(settings, 0),
        find_split_files(settings, 1),
    )
    assert a.random_split and set(a.pairs) == {"train", "val"}
    assert len(a.pairs["val"]) == 3 and len(a.pairs["train"]) == 7
    assert a.as_json() == b.as_json() and a.as_json() != c.as_json()
    assert not set(a.as_json()["train"]) & set(a.as_json()["val"])


def test_split_subfolders_and_segnet_layout(segnet_root: Path, tmp_path: Path):
    files = find_split_files(
        DatasetSettings.from_config({"root": str(segnet_root), "layout": "segnet"}), 0
    )
    assert {s: len(p) for s, p in files.pairs.items()} == {"train": 8, "val": 3, "test": 2}
    root = tmp_path / "sub"
    for split in ("train", "val"):
        write_pair(root / "imgs" / split, root / "labels" / split, f"{split}0", 8, 8, 2, 0)
    cfg = {
        "root": str(root),
        "layout": "image_mask_dirs",
        "image_dir": "imgs",
        "mask_dir": "labels",
    }
    settings = DatasetSettings.from_config(cfg)
    files = find_split_files(settings, 0)
    assert not files.random_split and set(files.pairs) == {"train", "val"}
    with pytest.raises(SegcliError, match="dataset.root not found"):
        find_split_files(settings.with_root(tmp_path / "missing"), 0)


def test_dataset_sample_shapes_and_padding_uses_ignore_index(segnet_root: Path):
    pairs = pair_files(segnet_root / "val", segnet_root / "valannot")
    ds = PairedFolderDataset(pairs, mask_lut(3, 255), build_transforms([], 255))
    sample = ds[0]
    # 48x80 is padded to 64x96 (multiples of 32), bottom/right
    assert sample["image"].shape == (3, 64, 96) and sample["image"].dtype == torch.float32
    assert sample["mask"].shape == (64, 96) and sample["mask"].dtype == torch.int64
    assert (sample["mask"][48:] == 255).all() and (sample["mask"][:, 80:] == 255).all()
    assert set(sample["mask"][:48, :80].unique().tolist()) == {0, 1, 2}


def test_pad_collate_pads_masks_with_ignore_index():
    small = {"image": torch.ones(3, 2, 2), "mask": torch.zeros(2, 2, dtype=torch.long), "name": "a"}
    big = {"image": torch.ones(3, 3, 4), "mask": torch.ones(3, 4, dtype=torch.long), "name": "b"}
    batch = pad_collate([small, big], ignore_index=9)
    assert batch["image"].shape == (2, 3, 3, 4) and batch["mask"].shape == (2, 3, 4)
    assert (batch["mask"][0, 2:] == 9).all() and (batch["mask"][0, :, 2:] == 9).all()
    assert (batch["image"][0, :, 2:] == 0).all() and batch["name"] == ["a", "b"]


def test_synthetic_dataset_is_deterministic_and_differs_between_splits():
    t = build_transforms([], 255)
    a, b = SyntheticDataset(4, (64, 64), "train", t), SyntheticDataset(4, (64, 64), "val", t)
    img1, mask1 = a.render(1)
    img2, mask2 = a.render(1)
    assert np.array_equal(img1, img2) and np.array_equal(mask1, mask2)
    assert not np.array_equal(a.render(1)[0], b.render(1)[0])
    assert set(np.unique(mask1).tolist()) <= {0, 1, 2, 3} and len(np.unique(mask1)) > 1


@pytest.mark.camvid
def test_camvid_pairs_and_classes():
    root = camvid_or_skip()
    files = find_split_files(
        DatasetSettings.from_config({"root": str(root), "layout": "segnet"}), 0
    )
    assert {s: len(p) for s, p in files.pairs.items()} == {"train": 367, "val": 101, "test": 233}
    stats = check_pairs(files.pairs["val"], mask_lut(11, 11), 11)
    assert (stats.pixels > 0).all() and (
        stats.present >= stats.pixels
    ).all()  # every class occurs in val


def test_truncated_image_is_found_up_front_and_can_be_skipped(segnet_root: Path):
    pairs = pair_files(segnet_root / "train", segnet_root / "trainannot")
    data = pairs[2][0].read_bytes()
    pairs[2][0].write_bytes(data[: len(data) // 2])  # cv2 would decode this with a grey bottom half
    with pytest.raises(
        SegcliError, match=r"train2.jpg: cannot read as an image \(image file is truncated"
    ):
        check_pairs(pairs, mask_lut(3, 255), 3)
    found = check_pairs(pairs, mask_lut(3, 255), 3, skip_bad=True)
    assert len(found.pairs) == 7 and pairs[2] not in found.pairs and len(found.problems) == 1
    assert found.pixels.tolist() == [7 * 16 * 80] * 3 and found.sizes == {(48, 80): 7}


def test_unpaired_files_are_collected_when_skipping(segnet_root: Path):
    (segnet_root / "trainannot" / "train0.png").unlink()
    problems: list[str] = []
    pairs = pair_files(segnet_root / "train", segnet_root / "trainannot", problems)
    assert len(pairs) == 7 and len(problems) == 1 and "train0.jpg: image has no mask" in problems[0]


def test_non_integer_and_out_of_table_masks_are_errors(tmp_path: Path):
    import cv2

    path = tmp_path / "m.tiff"
    cv2.imwrite(str(path), np.full((4, 4), 1.5, np.float32))
    with pytest.raises(SegcliError, match="m.tiff: mask has float32 pixels; expected integer"):
        read_mask(path, mask_lut(2, 255))
    cv2.imwrite(str(path), np.full((4, 4), 70000, np.int32))
    with pytest.raises(SegcliError, match=r"mask values \[70000\] are not classes"):
        read_mask(path, mask_lut(2, 255))


def test_colour_masks_map_through_dataset_colors(tmp_path: Path):
    colors = [[0, 0, 255], [255, 0, 0]]
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0] = [255, 0, 0]
    rgb[1, :2] = [0, 0, 255]  # rgb[1, 2] stays black: not a class colour
    Image.fromarray(rgb).save(tmp_path / "c.png")
    rgb_masks = DatasetSettings.from_config({"mask_format": "rgb", "ignore_index": 9})
    table = mask_table(rgb_masks, colors)
    with pytest.raises(
        SegcliError, match=r"c.png: mask colours \[\[0, 0, 0\]\] are not in dataset.colors"
    ):
        read_mask(tmp_path / "c.png", table)
    table = mask_table(
        DatasetSettings.from_config(
            {"mask_format": "rgb", "ignore_index": 9, "mask_values": {"0,0,0": 9}}
        ),
        colors,
    )
    assert read_mask(tmp_path / "c.png", table).tolist() == [[1, 1, 1], [0, 0, 9]]
    Image.fromarray(np.zeros((2, 3), np.uint8)).save(tmp_path / "i.png")
    with pytest.raises(SegcliError, match="i.png: mask is 8-bit PNG, not an 8-bit colour image"):
        read_mask(tmp_path / "i.png", table)
    with pytest.raises(SegcliError, match="^dataset.mask_format=hsv: expected index or rgb$"):
        DatasetSettings.from_config({"mask_format": "hsv"})


def test_exif_orientation_is_ignored_so_images_stay_aligned_with_masks(tmp_path: Path):
    image = np.zeros((20, 40, 3), np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees": a viewer would show it 40 high and 20 wide
    Image.fromarray(image).save(tmp_path / "r.jpg", exif=exif)
    assert read_image(tmp_path / "r.jpg").shape == (20, 40, 3)
    assert image_size(tmp_path / "r.jpg") == (20, 40)


def test_epoch_sampler_order_depends_on_seed_and_epoch_only_and_skips():
    a, b = EpochSampler(10, seed=3, shuffle=True), EpochSampler(10, seed=3, shuffle=True)
    a.set_epoch(2)
    b.set_epoch(2, skip=4)
    keys = list(a)
    assert sorted(i for _, i in keys) == list(range(10)) and {e for e, _ in keys} == {2}
    assert list(b) == keys[4:] and len(b) == 6
    b.set_epoch(3)
    assert list(b) != keys
    plain = EpochSampler(4, seed=0, shuffle=False)
    assert list(plain) == [(1, 0), (1, 1), (1, 2), (1, 3)]
