"""data/pair_cache.py on its own: an unchanged pair is not decoded again; a change of any file's
modification time or size is; another decoding is another cache; off is off."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from segcli.data import readers
from segcli.data.masks import mask_lut
from segcli.data.pair_cache import PairCache, cache_dir
from segcli.data.readers import check_pairs


def pair(folder: Path, name: str, classes: list[int]) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    mask = np.repeat(np.array(classes, np.uint8), 4)[:, None].repeat(
        6, 1
    )  # 4 rows per class, 6 wide
    cv2.imwrite(str(folder / f"{name}.png"), np.full((*mask.shape, 3), 90, np.uint8))
    cv2.imwrite(str(folder / f"{name}_mask.png"), mask)
    return folder / f"{name}.png", folder / f"{name}_mask.png"


def test_unchanged_pairs_decode_nothing_and_a_changed_stamp_decodes_that_pair_again(
    tmp_path, monkeypatch
):
    pairs = [pair(tmp_path, "a", [0, 1]), pair(tmp_path, "b", [1, 1, 2])]
    decoded = []
    real = readers._check_pair
    monkeypatch.setattr(readers, "_check_pair", lambda *a: decoded.append(a[1].name) or real(*a))
    lut = mask_lut(3, 255)
    monkeypatch.setenv("SEGCLI_CACHE_DIR", str(tmp_path / "cache"))

    def check() -> list[int]:
        cache = PairCache.open(tmp_path, "fingerprint-1")
        found = check_pairs(pairs, lut, 3, cache=cache)
        cache.save()
        return found.pixels.tolist()

    assert check() == [24, 72, 24] and sorted(decoded) == ["a_mask.png", "b_mask.png"]
    decoded.clear()
    assert (
        check() == [24, 72, 24] and decoded == []
    )  # a second check of unchanged files decodes nothing
    cache = PairCache.open(tmp_path, "fingerprint-1")
    assert cache.get(*pairs[0]) == ([24, 24, 0], 0, (8, 6)) and (cache.hits, cache.misses) == (1, 0)

    # the modification time alone (same bytes): that pair again
    image, mask = pairs[1]
    stat = os.stat(mask)
    os.utime(mask, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert check() == [24, 72, 24] and decoded == ["b_mask.png"]
    # the size alone (the modification time put back): that pair again
    decoded.clear()
    stat = os.stat(image)
    with open(image, "ab") as f:
        f.write(b"\0" * 16)  # bytes after PNG's end: the same picture, 16 bytes longer
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (
        os.stat(image).st_mtime_ns == stat.st_mtime_ns
        and os.stat(image).st_size == stat.st_size + 16
    )
    assert check() == [24, 72, 24] and decoded == ["b_mask.png"]
    decoded.clear()
    assert check() == [24, 72, 24] and decoded == []  # and remembered with the new stamps

    # the decoding names the cache: another fingerprint checks every pair
    cache = PairCache.open(tmp_path, "fingerprint-2")
    check_pairs(pairs, lut, 3, cache=cache)
    assert sorted(decoded) == ["a_mask.png", "b_mask.png"] and (cache.hits, cache.misses) == (0, 2)
    assert (
        len(list((tmp_path / "cache").glob("pairs-*.json"))) == 1
    )  # nothing new added yet: not saved


def test_a_region_of_interest_file_is_part_of_the_stamp(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGCLI_CACHE_DIR", str(tmp_path / "cache"))
    image, mask = pair(tmp_path, "a", [0, 1])
    roi = tmp_path / "roi.png"
    roi.write_bytes(b"x")
    cache = PairCache.open(tmp_path, "f")
    cache.put(image, mask, roi, [1, 2], 3, (8, 6))
    assert cache.get(image, mask, roi) == ([1, 2], 3, (8, 6)) and cache.get(image, mask) is None
    roi.write_bytes(b"xy")
    assert cache.get(image, mask, roi) is None
    assert (cache.hits, cache.misses) == (1, 2)


@pytest.mark.parametrize("value", ["off", "", "0", "none", "OFF"])
def test_the_cache_can_be_turned_off(value, monkeypatch, tmp_path):
    monkeypatch.setenv("SEGCLI_CACHE_DIR", value)
    assert cache_dir() is None and PairCache.open(tmp_path, "f") is None
