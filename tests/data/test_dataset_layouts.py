"""Datasets as people have them (layouts.py, data/masks.py): VOC, Cityscapes and ADE20K trees in
their official layouts, every common mask encoding, names that differ between image and mask, split
lists, and the misreadings they invite (palette PNGs as colours, 0/255 masks with ignore_index 255,
lossy masks). Each tree is written here, small, with known class pixels."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import FAST, segcli
from PIL import Image

from segcli.config import compose_config, to_plain
from segcli.data.datasets import build_datasets
from segcli.data.doctor import diagnose
from segcli.data.images import read_image, read_raw_mask
from segcli.data.layouts import find_split_files
from segcli.data.masks import keep_points, mask_lut, mask_table, read_mask
from segcli.data.pairing import read_list
from segcli.data.readers import check_pairs
from segcli.data.settings import DatasetInfo, DatasetSettings, default_colors
from segcli.errors import SegcliError

VOC_PALETTE = [0, 0, 0] + [
    v for rgb in default_colors(255) for v in rgb
]  # VOC's bit-interleaved colour map


def settings(group: dict) -> DatasetSettings:
    """A ``dataset`` group (a few keys or a whole composed one) as the builders read it."""
    return DatasetSettings.from_config(group)


def decoder(group: dict, colors=None, identity: bool = False):
    """The mask decoder of a ``dataset`` group, with its classes' colours unless given."""
    parsed = settings(group)
    return mask_table(
        parsed, colors if colors is not None else DatasetInfo.from_settings(parsed).colors, identity
    )


def bands(values: list[int], h: int = 64, w: int = 64, dtype=np.uint8) -> np.ndarray:
    """A mask of horizontal bands, one per value, top to bottom (h divisible by len(values))."""
    mask = np.zeros((h, w), dtype)
    for i, v in enumerate(values):
        mask[i * h // len(values) : (i + 1) * h // len(values)] = v
    return mask


def photo(path: Path, h: int = 64, w: int = 64, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def palette_png(path: Path, indices: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(indices.astype(np.uint8), "P")
    im.putpalette(VOC_PALETTE)
    im.save(path)


def class_totals(npz: Path, num_classes: int) -> list[int]:
    """Truth pixels per class in an eval's per-image matrices (rows are the truth)."""
    with np.load(npz) as z:
        return z["matrices"].sum(axis=(0, 2))[:num_classes].tolist()


def train_and_eval(
    dataset: str, root: Path, tmp_path: Path, num_classes: int
) -> tuple[Path, list[int]]:
    """``segcli train dataset=DATASET`` for one tiny epoch, then ``segcli eval --split val``: the
    run folder and the val split's truth pixels per class as the eval counted them."""
    run = tmp_path / "run"
    r = segcli(
        "train",
        f"dataset={dataset}",
        f"dataset.root={root}",
        *FAST,
        "trainer.epochs=1",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    r = segcli("eval", str(run / "checkpoints" / "best.pt"), "--split", "val", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    return run, class_totals(run / "evals" / "best-val.npz", num_classes)


# -- PASCAL VOC ------------------------------------------------------------------------------------

VOC_MASK = [0, 7, 255, 15]  # background, car (a gray palette colour), the border, person


def voc_tree(
    base: Path, names=("2007_000001", "2007_000002", "2007_000003", "2007_000004")
) -> Path:
    root = base / "VOCdevkit" / "VOC2012"
    for i, name in enumerate(names):
        photo(root / "JPEGImages" / f"{name}.jpg", seed=i)
        palette_png(root / "SegmentationClass" / f"{name}.png", bands(VOC_MASK))
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("\n".join(names[:3]) + "\n")
    (lists / "val.txt").write_text(names[3] + "\n")
    return root


def test_voc_palette_masks_read_as_indices_with_the_border_ignored(tmp_path):
    root = voc_tree(tmp_path)
    raw = read_raw_mask(root / "SegmentationClass" / "2007_000001.png")
    assert raw.encoding == "palette" and raw.palette[15].tolist() == [192, 128, 128]
    assert raw.palette[255].tolist() == [224, 224, 192]  # the border colour of VOC's files
    assert (
        cv2.imread(str(root / "SegmentationClass" / "2007_000001.png")).ndim == 3
    )  # what OpenCV would give
    cfg = to_plain(
        compose_config(["dataset=voc", f"dataset.root={tmp_path}"])
    )  # the VOCdevkit's parent
    files = find_split_files(settings(cfg["dataset"]), 0)
    assert {s: len(p) for s, p in files.pairs.items()} == {"train": 3, "val": 1}
    found = check_pairs(
        files.pairs["train"],
        decoder(cfg["dataset"]),
        21,
    )
    band = 16 * 64
    expected = [0] * 21
    expected[0] = expected[7] = expected[15] = 3 * band
    assert found.pixels.tolist() == expected and found.ignored == 3 * band


def test_voc_augmented_list_takes_pairs_and_leaves_val_out(tmp_path):
    root = voc_tree(tmp_path)
    for name in ("2008_000001", "2007_000004"):
        photo(root / "JPEGImages" / f"{name}.jpg")
        (root / "SegmentationClassAug").mkdir(exist_ok=True)
        cv2.imwrite(
            str(root / "SegmentationClassAug" / f"{name}.png"), bands([0, 1, 2, 3])
        )  # SBD: plain 8-bit
    (root / "ImageSets" / "Segmentation" / "train_aug.txt").write_text(
        "/JPEGImages/2008_000001.jpg /SegmentationClassAug/2008_000001.png\n2007_000004\n"
    )
    files = find_split_files(settings({"root": str(root), "layout": "voc", "aug": True}), 0)
    assert [p[0].name for p in files.pairs["train"]] == [
        "2008_000001.jpg"
    ]  # 2007_000004 is a val image
    assert files.pairs["train"][0][1].parent.name == "SegmentationClassAug"
    with pytest.raises(
        SegcliError, match=r"train_aug.txt:2: expected NAME or 'IMAGE MASK', got 3 fields"
    ):
        (root / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("a\nb c d\n")
        read_list(root / "ImageSets" / "Segmentation" / "train_aug.txt", root)


def test_voc_trains_evals_and_predicts_through_the_cli(tmp_path):
    root = voc_tree(tmp_path, names=tuple(f"2007_{i:06d}" for i in range(6)))
    run, totals = train_and_eval("voc", root, tmp_path, 21)
    expected = [0] * 21
    expected[0] = expected[7] = expected[15] = (
        16 * 64
    )  # one val image; its border band is not counted
    assert totals == expected
    r = segcli(
        "predict",
        str(root / "JPEGImages" / "2007_000005.jpg"),
        "-c",
        str(run / "checkpoints" / "best.pt"),
        "-o",
        str(tmp_path / "pred"),
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    pred = cv2.imread(str(tmp_path / "pred" / "2007_000005.png"), cv2.IMREAD_UNCHANGED)
    assert pred.shape == (64, 64) and pred.max() < 21


# -- Cityscapes ------------------------------------------------------------------------------------

# labelIds: unlabeled 0, road 7, car 26, bicycle 33, parking 9 (ignored in training), as bands
CITY_IDS = [0, 7, 26, 33, 9, 23, 24, 11]
CITY_TRAIN_IDS = [255, 0, 13, 18, 255, 10, 11, 2]


def city_tree(base: Path, train_ids: bool = False) -> Path:
    root = base / "cityscapes"
    for split, cities in (("train", {"aachen": 2, "bochum": 1}), ("val", {"frankfurt": 1})):
        for city, n in cities.items():
            for i in range(n):
                stem = f"{city}_{i:06d}_000019"
                photo(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", seed=i)
                gt = root / "gtFine" / split / city
                gt.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(gt / f"{stem}_gtFine_labelIds.png"), bands(CITY_IDS))
                cv2.imwrite(
                    str(gt / f"{stem}_gtFine_color.png"), np.zeros((64, 64, 3), np.uint8)
                )  # not a mask
                if train_ids:
                    cv2.imwrite(str(gt / f"{stem}_gtFine_labelTrainIds.png"), bands(CITY_TRAIN_IDS))
    return root


def test_cityscapes_label_ids_map_to_the_19_train_ids(tmp_path):
    root = city_tree(tmp_path)
    cfg = to_plain(compose_config(["dataset=cityscapes", f"dataset.root={root}"]))["dataset"]
    files = find_split_files(settings(cfg), 0)
    assert {s: len(p) for s, p in files.pairs.items()} == {
        "train": 3,
        "val": 1,
    } and not files.identity
    assert all(m.name.endswith("_gtFine_labelIds.png") for _, m in files.pairs["train"])
    mask = read_mask(files.pairs["val"][0][1], decoder(cfg))
    assert mask[::8, 0].tolist() == CITY_TRAIN_IDS

    # labelTrainIds present for every image: used as they are (the table is not applied twice)
    root = city_tree(tmp_path / "with_train_ids", train_ids=True)
    files = find_split_files(settings(cfg).with_root(root), 0)
    assert files.identity == {"train", "val"}
    mask = read_mask(
        files.pairs["val"][0][1],
        decoder(cfg, identity=True),
    )
    assert mask[::8, 0].tolist() == CITY_TRAIN_IDS


def test_cityscapes_label_train_ids_count_once_through_build_datasets(tmp_path):
    """The real builder on a tree with labelTrainIds: each split's class pixels are the files' own
    values counted (255 ignored), and a val sample's mask is the file's pixels; decoding them as
    labelIds again would move every class (train id 0 read as labelId 0 is 'unlabeled', ...)."""
    root = city_tree(tmp_path, train_ids=True)
    cfg = to_plain(
        compose_config(["dataset=cityscapes", f"dataset.root={root}", "augmentation=none"])
    )
    _, data, counts = build_datasets(cfg, ("train", "val"), 0)
    for split, images in (("train", 3), ("val", 1)):
        files = sorted((root / "gtFine" / split).rglob("*_gtFine_labelTrainIds.png"))
        assert len(files) == images and len(data[split]) == images
        expected = np.zeros(19, np.int64)
        for f in files:
            values = cv2.imread(str(f), cv2.IMREAD_UNCHANGED).ravel()
            expected += np.bincount(values[values < 19], minlength=19)
        assert counts[split].pixels.tolist() == expected.tolist(), split
        assert counts[split].ignored == images * 2 * 8 * 64  # the two 255 bands of each image
    assert sorted(np.flatnonzero(expected).tolist()) == sorted(
        v for v in CITY_TRAIN_IDS if v != 255
    )
    sample = data["val"][0]
    truth = cv2.imread(
        str(next((root / "gtFine" / "val").rglob("*_gtFine_labelTrainIds.png"))),
        cv2.IMREAD_UNCHANGED,
    )
    assert np.array_equal(sample["mask"][:64, :64].numpy(), truth)


def test_cityscapes_trains_and_evals_through_the_cli(tmp_path):
    _, totals = train_and_eval("cityscapes", city_tree(tmp_path), tmp_path, 19)
    expected = [0] * 19
    for train_id in (0, 13, 18, 10, 11, 2):
        expected[train_id] = 8 * 64
    assert totals == expected


# -- ADE20K ----------------------------------------------------------------------------------------


def ade_tree(base: Path) -> Path:
    root = base / "ADEChallengeData2016"
    for split, n in (("training", 3), ("validation", 1)):
        for i in range(n):
            photo(root / "images" / split / f"ADE_{split[:5]}_{i:08d}.jpg", seed=i)
            (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(
                str(root / "annotations" / split / f"ADE_{split[:5]}_{i:08d}.png"),
                bands([0, 1, 150, 5]),
            )
    return root


def test_ade20k_ignores_zero_and_shifts_the_rest(tmp_path):
    root = ade_tree(tmp_path)
    cfg = to_plain(compose_config(["dataset=ade20k", f"dataset.root={tmp_path}"]))["dataset"]
    files = find_split_files(settings(cfg), 0)
    assert {s: len(p) for s, p in files.pairs.items()} == {"train": 3, "val": 1}
    assert files.pairs["val"][0][0].parent == root / "images" / "validation"
    mask = read_mask(files.pairs["val"][0][1], decoder(cfg))
    assert mask[::16, 0].tolist() == [255, 0, 149, 4]
    with pytest.raises(
        SegcliError, match="dataset.mask_values and dataset.reduce_zero_label are both set"
    ):
        mask_lut(150, 255, {1: 0}, reduce_zero_label=True)


def test_ade20k_trains_and_evals_through_the_cli(tmp_path):
    _, totals = train_and_eval("ade20k", ade_tree(tmp_path), tmp_path, 150)
    assert (totals[0], totals[149], totals[4], sum(totals)) == (
        16 * 64,
        16 * 64,
        16 * 64,
        3 * 16 * 64,
    )


# -- folders as people have them -------------------------------------------------------------------


def test_different_names_pair_by_suffix_and_split_lists_pick_them(tmp_path):
    root = tmp_path / "own"
    (root / "labels").mkdir(parents=True)
    for i in range(4):
        photo(root / "images" / f"tile{i}_img.tif", seed=i)
        Image.fromarray(bands([0, 255])).save(root / "labels" / f"tile{i}_lbl.gif")
    cfg = {
        "root": str(root),
        "layout": "image_mask_dirs",
        "image_dir": "images",
        "mask_dir": "labels",
        "val_fraction": 0.25,
    }
    with pytest.raises(
        SegcliError,
        match=r"tile0_img.tif: image has no mask .*no name pairs at all; "
        r"masks named NAME_lbl\? set dataset.mask_suffix=_lbl",
    ):
        find_split_files(settings(cfg), 0)
    cfg.update(image_suffix="_img", mask_suffix="_lbl")
    files = find_split_files(settings(cfg), 0)
    assert sorted(p[0].name for p in files.pairs["train"] + files.pairs["val"]) == [
        f"tile{i}_img.tif" for i in range(4)
    ]
    assert all(m.name == i.name.replace("_img.tif", "_lbl.gif") for i, m in files.pairs["train"])

    (root / "lists").mkdir()
    (root / "lists" / "train.txt").write_text("tile0\ntile2  # a comment\n\ntile3\n")
    (root / "lists" / "val.txt").write_text("images/tile1_img.tif labels/tile1_lbl.gif\n")
    files = find_split_files(
        settings({**cfg, "split_lists": {"train": "lists/train.txt", "val": "lists/val.txt"}}), 0
    )
    assert [p[0].name for p in files.pairs["train"]] == [
        "tile0_img.tif",
        "tile2_img.tif",
        "tile3_img.tif",
    ]
    assert [p[1].name for p in files.pairs["val"]] == ["tile1_lbl.gif"] and not files.random_split
    (root / "lists" / "val.txt").write_text("tile9\n")
    with pytest.raises(SegcliError, match=r"val.txt: tile9 has no image/mask pair"):
        find_split_files(
            settings({**cfg, "split_lists": {"train": "lists/train.txt", "val": "lists/val.txt"}}),
            0,
        )


def test_gif_tiff_and_rgba_masks_and_16_bit_and_gif_images(tmp_path):
    # a 0/255 mask saved as GIF is stored as indices 0/1 with a black/white palette: read as it
    # looks
    Image.fromarray(bands([0, 255])).save(tmp_path / "m.gif")
    assert read_raw_mask(tmp_path / "m.gif").describe() == "gray palette GIF"
    assert read_mask(tmp_path / "m.gif", mask_lut(2, 254, {0: 0, 255: 1}))[::32, 0].tolist() == [
        0,
        1,
    ]
    # 16-bit label ids in a TIFF
    cv2.imwrite(str(tmp_path / "m.tif"), bands([0, 1000, 40000, 1000], dtype=np.uint16))
    assert read_raw_mask(tmp_path / "m.tif").encoding == "16-bit"
    assert read_mask(tmp_path / "m.tif", mask_lut(3, 255, {0: 0, 1000: 1, 40000: 2}))[
        ::16, 0
    ].tolist() == [0, 1, 2, 1]
    # RGBA colour mask: alpha dropped
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 3] = 128
    rgba[0, :, 0] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "c.png")
    table = decoder({"mask_format": "rgb", "ignore_index": 9}, [[0, 0, 0], [255, 0, 0]])
    assert read_mask(tmp_path / "c.png", table).tolist() == [[1, 1], [0, 0]]
    # 16-bit image: value / 256 (OpenCV's rule, stated in data/images.py); GIF image through Pillow
    cv2.imwrite(str(tmp_path / "i16.png"), np.array([[0, 256, 65535, 1000]], np.uint16))
    assert read_image(tmp_path / "i16.png")[0, :, 0].tolist() == [0, 1, 255, 3]
    Image.fromarray(np.full((3, 5, 3), [10, 200, 30], np.uint8)).save(tmp_path / "i.gif")
    image = read_image(tmp_path / "i.gif")
    assert (
        image.shape == (3, 5, 3) and np.abs(image.astype(int) - [10, 200, 30]).max() <= 8
    )  # GIF quantises


def test_lossy_masks_are_refused_with_the_setting_that_accepts_them(tmp_path):
    truth = bands([0, 255, 0, 255])
    truth[:, 20:30] = 255 - truth[:, 20:30]
    cv2.imwrite(str(tmp_path / "m.jpg"), truth, [cv2.IMWRITE_JPEG_QUALITY, 75])
    noisy = cv2.imread(str(tmp_path / "m.jpg"), cv2.IMREAD_UNCHANGED)
    assert len(np.unique(noisy)) > 2  # the compression noise the test is about
    with pytest.raises(
        SegcliError,
        match=r"m.jpg: 8-bit JPEG mask with values \[.*\] between the classes "
        r"\(lossy compression noise\); for a binary mask set dataset.mask_threshold=128",
    ):
        read_mask(tmp_path / "m.jpg", mask_lut(2, 254, {0: 0, 255: 1}))
    decoded = read_mask(
        tmp_path / "m.jpg", decoder({"mask_threshold": 128, "ignore_index": 254}, [[0] * 3] * 2)
    )
    assert np.array_equal(decoded, (truth == 255).astype(np.int64))
    with pytest.raises(
        SegcliError,
        match="dataset.mask_threshold=128: binary masks only; expected dataset.num_classes=2",
    ):
        decoder({"mask_threshold": 128, "ignore_index": 254}, [[0] * 3] * 3)

    colors = [[0, 0, 255], [255, 200, 0], [40, 160, 40]]
    index = bands([0, 1, 2, 1])
    cv2.imwrite(
        str(tmp_path / "c.jpg"),
        np.array(colors, np.uint8)[index][..., ::-1],
        [cv2.IMWRITE_JPEG_QUALITY, 90],
    )
    cfg = {"mask_format": "rgb", "ignore_index": 9}
    with pytest.raises(
        SegcliError, match=r"c.jpg: RGB JPEG mask colours .* set dataset.color_tolerance=N"
    ):
        read_mask(tmp_path / "c.jpg", decoder(cfg, colors))
    snapped = read_mask(tmp_path / "c.jpg", decoder({**cfg, "color_tolerance": 60}, colors))
    border = snapped == 9  # JPEG's chroma blends at the band borders: ignored, not guessed
    assert np.array_equal(snapped[~border], index[~border]) and 0 < border.mean() <= 0.05
    assert not border[4:12].any() and not border[20:28].any()  # inside the bands every pixel snaps
    with pytest.raises(
        SegcliError,
        match=r"within N levels per channel \(now 1: \d+\.\d% of the pixels are farther",
    ):
        read_mask(tmp_path / "c.jpg", decoder({**cfg, "color_tolerance": 1}, colors))


def binary_folder(root: Path, values=(0, 255)) -> Path:
    for i in range(5):
        photo(root / "images" / f"s{i}.png", seed=i)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "masks" / f"s{i}.png"), bands(list(values)))
    return root


def test_zero_255_masks_with_ignore_255_are_caught_and_num_classes_comes_from_the_names(tmp_path):
    root = binary_folder(tmp_path / "b")
    cfg = to_plain(
        compose_config(["dataset=folder", f"dataset.root={root}", "dataset.class_names=[bg,fg]"])
    )
    assert (
        cfg["dataset"]["num_classes"] is None
        and DatasetInfo.from_settings(settings(cfg["dataset"])).num_classes == 2
    )
    with pytest.raises(
        SegcliError,
        match=r"the train masks hold only class bg and ignore_index 255 \(\d+ pixels\): "
        r"if 255 marks a class \(0/255 binary masks\), set dataset.mask_values="
        r"\{0: 0, 255: 1\}",
    ):
        build_datasets(cfg, ("train",), 0)
    cfg["dataset"]["mask_values"], cfg["dataset"]["ignore_index"] = {0: 0, 255: 1}, 254
    info, data, counts = build_datasets(cfg, ("train", "val"), 0)
    assert info.num_classes == 2 and (len(data["train"]), len(data["val"])) == (4, 1)
    assert counts["train"].pixels.tolist() == [4 * 32 * 64, 4 * 32 * 64]
    with pytest.raises(
        SegcliError, match="dataset.num_classes: not set; set it, or dataset.class_names"
    ):
        DatasetInfo.from_settings(
            settings(
                {"num_classes": None, "class_names": None, "colors": None, "ignore_index": 255}
            )
        )


def test_a_binary_folder_read_with_ignore_255_stops_the_cli_in_one_line(tmp_path):
    root = binary_folder(tmp_path / "b")
    run = tmp_path / "run"
    r = segcli(
        "train",
        "dataset=folder",
        f"dataset.root={root}",
        "dataset.class_names=[bg,fg]",
        *FAST,
        "trainer.epochs=1",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
    )
    assert r.returncode == 2 and "dataset.mask_values={0: 0, 255: 1}" in r.stderr
    assert r.stderr.strip().count("\n") == 0 and not run.exists()  # no half-written run folder
    # with the setting it names, the same command trains: test_doctor_writes_a_config_that_trains


# -- sparse labels ---------------------------------------------------------------------------------


def test_keep_points_keeps_n_pixels_of_each_class_where_they_were():
    mask = bands([0, 1, 2, 255], h=8, w=4).astype(np.int64)  # 8 pixels of each class, 8 ignored
    mask[0, 0] = 3  # a class with a single pixel keeps it
    points = keep_points(mask, 3, (7, 1), num_classes=4, ignore_index=255)
    counts = {c: int((points == c).sum()) for c in range(4)}
    assert counts == {0: 3, 1: 3, 2: 3, 3: 1} and int((points == 255).sum()) == 32 - 10
    assert np.all((points == 255) | (points == mask))  # every kept pixel has its true class
    assert np.array_equal(
        points, keep_points(mask, 3, (7, 1), 4, 255)
    )  # the same key, the same points
    assert not np.array_equal(points, keep_points(mask, 3, (7, 2), 4, 255))


def test_point_labels_are_fixed_per_image_and_weights_count_only_them(tmp_path):
    root = binary_folder(tmp_path / "b", values=(0, 1))
    cfg = to_plain(
        compose_config(
            [
                "dataset=folder",
                f"dataset.root={root}",
                "dataset.num_classes=2",
                "dataset.point_labels=5",
                "augmentation=none",
            ]
        )
    )
    _, data, counts = build_datasets(cfg, ("train", "val"), 3)
    assert counts["train"].pixels.tolist() == [
        4 * 5,
        4 * 5,
    ]  # 4 training images, 5 points per class
    first, again = data["train"][(1, 0)]["mask"], data["train"][(2, 0)]["mask"]
    assert (
        torch.equal(first, again) and int((first != 255).sum()) == 10
    )  # the same points in epoch 2
    assert int((data["val"][0]["mask"] != 255).sum()) == 64 * 64  # validation keeps the full masks
    cfg["dataset"]["point_labels"] = 0
    with pytest.raises(
        SegcliError, match="dataset.point_labels=0: expected a number of pixels per class >= 1"
    ):
        build_datasets(cfg, ("train",), 3)


# -- segcli data doctor ----------------------------------------------------------------------------


def test_doctor_names_the_builtin_dataset_of_each_benchmark_layout(tmp_path):
    voc_tree(tmp_path / "v")
    city_tree(tmp_path / "c")
    ade_tree(tmp_path / "a")
    for root, name in (
        (tmp_path / "v", "voc"),
        (tmp_path / "c" / "cityscapes", "cityscapes"),
        (tmp_path / "a", "ade20k"),
    ):
        found = diagnose(root)
        assert (found.builtin, found.usable, found.config) == (name, True, {}), (
            name,
            found.problems,
        )
        assert found.command == f"segcli train dataset={name} dataset.root={root}"
        assert any(line.startswith("train: ") and " 0 bad" in line for line in found.findings)


def test_doctor_finds_suffixes_encodings_and_lossy_masks(tmp_path):
    root = (
        tmp_path / "own"
    )  # labels/NAME_lbl.gif (0/255 saved as GIF) for images/NAME_img.tif, no splits
    (root / "labels").mkdir(parents=True)
    for i in range(5):
        photo(root / "images" / f"tile{i}_img.tif", seed=i)
        Image.fromarray(bands([0, 255])).save(root / "labels" / f"tile{i}_lbl.gif")
    found = diagnose(root)
    assert found.usable, found.problems
    c = found.config
    assert (c["image_dir"], c["mask_dir"], c["image_suffix"], c["mask_suffix"]) == (
        "images",
        "labels",
        "_img",
        "_lbl",
    )
    assert (c["num_classes"], c["mask_values"], c["ignore_index"]) == (2, {0: 0, 255: 1}, 254)

    jpeg = tmp_path / "jpeg"  # noisy binary JPEG masks in split folders
    for split, n in (("train", 3), ("val", 2)):
        for i in range(n):
            photo(jpeg / "img" / split / f"{i}.png", seed=i)
            (jpeg / "gt" / split).mkdir(parents=True, exist_ok=True)
            truth = bands([0, 255, 0, 255])
            truth[:, 20:30] = 255 - truth[:, 20:30]  # off the 8x8 JPEG blocks: noise
            cv2.imwrite(
                str(jpeg / "gt" / split / f"{i}.jpg"), truth, [cv2.IMWRITE_JPEG_QUALITY, 60]
            )
    found = diagnose(jpeg)
    assert found.usable, found.problems
    assert (found.config["mask_threshold"], found.config["num_classes"]) == (128, 2)
    assert any("split folders train, val" in line for line in found.findings)

    coded = (
        tmp_path / "coded"
    )  # colour masks, and 8-bit masks of values 0, 50, 100 in another folder
    colors = np.array([[0, 0, 255], [255, 200, 0], [40, 160, 40]], np.uint8)
    for i in range(5):
        photo(coded / "images" / f"{i}.png", seed=i)
        (coded / "masks").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(coded / "masks" / f"{i}.png"), colors[bands([0, 1, 2, 1])][..., ::-1])
    found = diagnose(coded)
    assert found.usable and found.config["mask_format"] == "rgb", found.problems
    assert sorted(found.config["colors"]) == sorted(colors.tolist())

    for i in range(5):  # the same as JPEG: noisy colours gather around the three class colours
        (coded / "masks" / f"{i}.png").unlink()
        cv2.imwrite(
            str(coded / "masks" / f"{i}.jpg"),
            colors[bands([0, 1, 2, 1])][..., ::-1],
            [cv2.IMWRITE_JPEG_QUALITY, 90],
        )
    found = diagnose(coded)
    assert found.usable and found.config["color_tolerance"] == 48, found.problems
    got = np.array(
        found.config["colors"]
    )  # JPEG shifts them a little: (255, 200, 1) for (255, 200, 0)
    assert len(got) == 3 and all(np.abs(got - true).max(1).min() <= 8 for true in colors)

    for i in range(5):
        (coded / "masks" / f"{i}.jpg").unlink()
        cv2.imwrite(str(coded / "masks" / f"{i}.png"), bands([0, 50, 100, 50]))
    found = diagnose(coded)
    assert found.usable and found.config["mask_values"] == {0: 0, 50: 1, 100: 2}, found.problems

    (tmp_path / "empty" / "stuff").mkdir(parents=True)
    assert not diagnose(tmp_path / "empty").usable


def test_doctor_writes_a_config_that_trains_and_exits_1_when_nothing_is_usable(tmp_path):
    root = binary_folder(tmp_path / "b")
    conf = tmp_path / "myconf"
    r = segcli(
        "data", "doctor", str(root), "--write", str(conf / "dataset" / "mine.yaml"), cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    assert "binary 0/255 masks" in r.stdout
    assert f"usable; train with: segcli train --config-dir {conf} dataset=mine" in r.stdout.replace(
        "\n", ""
    )
    written = (conf / "dataset" / "mine.yaml").read_text()
    assert (
        written.startswith(f"# segcli data doctor {root}")
        and "mask_values:\n  0: 0\n  255: 1" in written
    )
    run = tmp_path / "run"
    r = segcli(
        "train",
        "--config-dir",
        str(conf),
        "dataset=mine",
        *FAST,
        "trainer.epochs=1",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads((run / "summary.json").read_text())["status"] == "done"

    voc_tree(tmp_path / "v")  # a benchmark layout: nothing to write, the built-in dataset named
    r = segcli(
        "data",
        "doctor",
        str(tmp_path / "v"),
        "--write",
        str(conf / "dataset" / "v.yaml"),
        cwd=tmp_path,
    )
    assert (
        r.returncode == 0
        and "nothing written: the built-in dataset=voc reads this layout" in r.stdout
    )
    assert not (conf / "dataset" / "v.yaml").exists()

    (tmp_path / "nothing").mkdir()
    r = segcli("data", "doctor", str(tmp_path / "nothing"), cwd=tmp_path)
    assert r.returncode == 1 and "no pair of image and mask folders found" in r.stderr


def test_region_of_interest_masks_make_the_outside_ignored_in_training_and_scoring(tmp_path):
    root = binary_folder(tmp_path / "r", values=(0, 1))
    (root / "fov").mkdir()
    for i in range(5):
        roi = np.zeros((64, 64), np.uint8)
        roi[:, 16:] = 255  # the left quarter is outside the field of view
        Image.fromarray(roi).save(root / "fov" / f"s{i}_fov.gif")
    overrides = [
        "dataset=folder",
        f"dataset.root={root}",
        "dataset.num_classes=2",
        "dataset.roi_dir=fov",
        "dataset.roi_suffix=_fov",
        "augmentation=none",
    ]
    _, data, counts = build_datasets(to_plain(compose_config(overrides)), ("train", "val"), 0)
    assert counts["train"].pixels.tolist() == [4 * 32 * 48, 4 * 32 * 48]  # 48 of 64 columns count
    for split in ("train", "val"):
        mask = data[split][0]["mask"]
        assert bool((mask[:, :16] == 255).all()) and not bool((mask[:, 16:] == 255).any()), split
    (root / "fov" / "s3_fov.gif").unlink()
    with pytest.raises(
        SegcliError, match=r"s3.png: image has no region-of-interest mask .*fov/s3_fov\.\*"
    ):
        build_datasets(to_plain(compose_config(overrides)), ("train",), 0)


def test_pair_check_cache_skips_unchanged_pairs_and_rechecks_a_changed_one(tmp_path, monkeypatch):
    import segcli.data.readers

    monkeypatch.setenv("SEGCLI_CACHE_DIR", str(tmp_path / "cache"))
    root = binary_folder(tmp_path / "c", values=(0, 1))
    cfg = to_plain(
        compose_config(
            [
                "dataset=folder",
                f"dataset.root={root}",
                "dataset.num_classes=2",
                "dataset.val_fraction=0.4",
            ]
        )
    )
    first = build_datasets(cfg, ("train", "val"), 0)[2]
    assert len(list((tmp_path / "cache").glob("pairs-*.json"))) == 1

    decoded = []
    real = segcli.data.readers._check_pair
    monkeypatch.setattr(
        segcli.data.readers, "_check_pair", lambda *a: decoded.append(a[0].name) or real(*a)
    )
    again = build_datasets(cfg, ("train", "val"), 0)[2]
    assert decoded == [] and again["train"].pixels.tolist() == first["train"].pixels.tolist()

    train_image = again["train"].pairs[0][0]
    cv2.imwrite(
        str(root / "masks" / f"{train_image.stem}.png"), np.ones((64, 64), np.uint8)
    )  # all class 1 now
    changed = build_datasets(cfg, ("train", "val"), 0)[2]
    assert decoded == [train_image.name]
    assert changed["train"].pixels.tolist() == [
        first["train"].pixels[0] - 32 * 64,
        first["train"].pixels[1] + 32 * 64,
    ]

    decoded.clear()
    cfg["dataset"]["mask_values"] = {
        0: 1,
        1: 0,
    }  # another decoding: another cache, every pair decoded
    build_datasets(cfg, ("train",), 0)
    assert len(decoded) == 3 and len(list((tmp_path / "cache").glob("pairs-*.json"))) == 2
