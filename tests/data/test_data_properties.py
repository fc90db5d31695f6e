"""Property-based: whatever image and mask files a user has, the dataset code returns a correct
sample or raises a SegcliError (one clean line), never another exception."""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from segcli.config import compose_config, to_plain
from segcli.data.augment import build_transforms
from segcli.data.masks import mask_table
from segcli.data.readers import PairedFolderDataset, check_pairs
from segcli.data.settings import DatasetSettings
from segcli.errors import SegcliError
from segcli.preprocessing import IMAGENET_MEAN, IMAGENET_STD

CLASSES, IGNORE = 3, 255
AUGMENT = to_plain(compose_config(["augmentation=heavy", "dataset.crop_size=[32,32]"]))[
    "augmentation"
]["train"]


@st.composite
def arrays(draw, kind: str):
    h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    channels = draw(st.sampled_from([None, 1, 3, 4] if kind == "image" else [None, None, None, 3]))
    dtype = draw(
        st.sampled_from(
            ["uint8", "uint16"] if kind == "image" else ["uint8", "uint16", "int32", "float32"]
        )
    )
    high = {"uint8": 255, "uint16": 65535, "int32": 70000, "float32": 5}[dtype]
    if kind == "mask" and draw(st.integers(0, 3)) > 0:
        high = CLASSES - 1  # mostly valid masks, so that samples are built too
    shape = (h, w) if channels is None else (h, w, channels)
    seed = draw(st.integers(0, 2**16))
    values = np.random.default_rng(seed).integers(0, high + 1, size=shape)
    if kind == "mask" and draw(st.booleans()):
        values.flat[0] = IGNORE
    return values.astype(dtype)


def write(path: Path, array: np.ndarray, garbage: int) -> Path:
    """Save ``array`` in a format that holds its dtype, then maybe damage the file."""
    suffix = ".png" if array.dtype in (np.uint8, np.uint16) else ".tiff"
    path = path.with_suffix(suffix)
    assert cv2.imwrite(str(path), array)
    if garbage == 1:
        path.write_bytes(path.read_bytes()[: max(len(path.read_bytes()) // 3, 1)])  # truncated
    elif garbage == 2:
        path.write_bytes(b"\x89PNG not really")
    elif garbage == 3:
        path.write_bytes(b"")
    return path


# pairs that always build a sample (one of each image kind: RGB, 16-bit gray, RGBA with an RGB mask)
_rng = np.random.default_rng(5)
GOOD_RGB = _rng.integers(0, 256, (20, 37, 3)).astype(np.uint8)
GOOD_GRAY16 = _rng.integers(0, 65536, (20, 37)).astype(np.uint16)
GOOD_RGBA = _rng.integers(0, 256, (20, 37, 4)).astype(np.uint8)
GOOD_MASK = _rng.integers(0, CLASSES, (20, 37)).astype(np.uint8)
GOOD_MASK[0, :5] = IGNORE


def expected_image(array: np.ndarray) -> np.ndarray:
    """What the file of ``array`` holds as an 8-bit RGB picture: gray repeated, alpha dropped, BGR
    (OpenCV's order, as written) reversed, 16 bits cut to their top 8."""
    pixels = array if array.ndim == 3 else array[..., None]
    pixels = np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels[..., 2::-1]
    return (pixels >> 8 if pixels.dtype == np.uint16 else pixels).astype(np.uint8)


def expected_mask(array: np.ndarray) -> np.ndarray:
    """The class indices of a mask file that passed the check: its values, or for an RGB mask of the
    gray colours (v, v, v) of the classes, v."""
    return (array if array.ndim == 2 else array[..., 0]).astype(np.int64)


def unaugmented_sample_is_the_files(
    dataset_sample: dict, image: np.ndarray, mask: np.ndarray
) -> None:
    """The evaluation pipeline (pad to a multiple of 32, normalise) changes no pixel: inside the
    image the normalised values come back to the file's pixels, the mask to its classes; the padding
    is ignore_index."""
    h, w = image.shape[:2]
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    x = dataset_sample["image"]
    assert tuple(x.shape) == (3, -(-h // 32) * 32, -(-w // 32) * 32)
    pixels = ((x[:, :h, :w] * std + mean) * 255).permute(1, 2, 0).numpy()
    assert np.abs(pixels - expected_image(image)).max() < 0.01
    y = dataset_sample["mask"].numpy()
    assert (
        np.array_equal(y[:h, :w], expected_mask(mask))
        and (y[h:] == IGNORE).all()
        and (y[:, w:] == IGNORE).all()
    )
    assert dataset_sample["size"] == (h, w)


def test_any_files_give_a_sample_or_a_clean_error():
    built = []

    @settings(
        max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
    )
    @given(
        image=arrays("image"),
        mask=arrays("mask"),
        same_size=st.sampled_from([True, True, True, False]),
        image_garbage=st.sampled_from([0] * 6 + [1, 2, 3]),
        mask_garbage=st.sampled_from([0] * 6 + [1, 2, 3]),
        mask_format=st.sampled_from(["index"] * 4 + ["rgb"]),
    )
    @example(
        image=GOOD_RGB,
        mask=GOOD_MASK,
        same_size=True,
        image_garbage=0,
        mask_garbage=0,
        mask_format="index",
    )
    @example(
        image=GOOD_GRAY16,
        mask=GOOD_MASK,
        same_size=True,
        image_garbage=0,
        mask_garbage=0,
        mask_format="index",
    )
    @example(
        image=GOOD_RGBA,
        mask=np.repeat(GOOD_MASK[..., None], 3, 2),
        same_size=True,
        image_garbage=0,
        mask_garbage=0,
        mask_format="rgb",
    )
    def check(image, mask, same_size, image_garbage, mask_garbage, mask_format):
        if same_size:
            mask = np.resize(mask, image.shape[:2] + mask.shape[2:])
        colors = [[0, 0, 0], [1, 1, 1], [2, 2, 2]]
        with tempfile.TemporaryDirectory() as tmp:
            image_path = write(Path(tmp) / "img", image, image_garbage)
            mask_path = write(Path(tmp) / "mask", mask, mask_garbage)
            try:
                group = {"mask_format": mask_format, "num_classes": CLASSES, "ignore_index": IGNORE}
                table = mask_table(DatasetSettings.from_config(group), colors)
                found = check_pairs([(image_path, mask_path)], table, CLASSES)
                plain = PairedFolderDataset(found.pairs, table, build_transforms(None, IGNORE))[0]
                unaugmented_sample_is_the_files(plain, image, mask)
                dataset = PairedFolderDataset(
                    found.pairs, table, build_transforms(AUGMENT, IGNORE), augment_seed=0
                )
                sample = dataset[(1, 0)]
            except SegcliError as exc:
                assert "\n" not in str(exc) and str(exc)
                event(
                    "error: "
                    + "".join(c for c in str(exc).split(": ", 1)[1][:24] if not c.isdigit())
                )
                return
        event("sample")
        built.append(sample["name"])
        assert sample["image"].dtype.is_floating_point and sample["image"].shape[0] == 3
        assert tuple(sample["image"].shape[1:]) == tuple(sample["mask"].shape) == (32, 32)
        assert set(sample["mask"].unique().tolist()) <= {0, 1, 2, IGNORE}

    check()
    # the 3 explicit examples always build; of the ~120 drawn pairs about 15% are good files of one
    # size (12 to 30 seen): at least 4 more, or an error on every pair would pass
    assert len(built) >= 3 + 4, f"only {len(built)} of the examples built a sample"
