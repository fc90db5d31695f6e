"""``segcli data doctor``'s guess of a mask encoding from a sample of mask files: one-channel
values (class indices, values to map in order, 0/255 binary, lossy JPEG binary) or colours (exact
or lossy, gathered around a few class colours), each value's or colour's pixel share stated as a
finding. The result is the mask keys of a proposed ``dataset`` group (data/doctor.py).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Protocol

import numpy as np

from segcli.data.images import read_raw_mask
from segcli.data.settings import dataset_defaults
from segcli.errors import SegcliError

SAMPLE = 64  # masks read to find the encoding
MAX_CLASSES = 256  # more distinct values or colours than this: not class labels (or lossy noise)
# the mask keys a proposal sets (to conf/dataset/folder.yaml's values) before what the sample says
MASK_KEYS = (
    "mask_values",
    "reduce_zero_label",
    "mask_threshold",
    "color_tolerance",
    "ignore_index",
)
SNAP = 48  # lossy colour masks: colours within this many levels per channel are one class colour


class Notes(Protocol):
    """Where the guess writes: ``findings`` and ``problems``, one line each (a
    ``doctor.Diagnosis``)."""

    findings: list[str]
    problems: list[str]


def guess_encoding(files: list[Path], out: Notes) -> dict | None:
    """Mask settings (``mask_format``, ``mask_values``, ``num_classes``, ...) from a sample of
    ``files`` (up to ``SAMPLE``, evenly spaced), with findings; None (and a problem) when the masks
    cannot be class labels."""
    if not files:
        out.problems.append("no mask files found")
        return None
    picks = [files[i] for i in np.linspace(0, len(files) - 1, min(SAMPLE, len(files))).astype(int)]
    values, colours, kinds, lossy = Counter(), Counter(), Counter(), False
    for path in picks:
        try:
            raw = read_raw_mask(path)
        except SegcliError as exc:
            out.problems.append(str(exc))
            continue
        lossy |= raw.lossy
        pixels = raw.pixels
        if pixels.ndim == 3 and (pixels[..., :3] == pixels[..., :1]).all():
            pixels = pixels[..., 0]
        kinds[
            raw.describe() if pixels.ndim == 2 else f"{raw.encoding} colour {raw.file_format}"
        ] += 1
        if pixels.ndim == 2:
            v, n = np.unique(pixels, return_counts=True)
            values.update(dict(zip(v.tolist(), n.tolist(), strict=True)))
        else:
            code = pixels[..., :3].reshape(-1, 3).astype(np.int64) @ np.array([65536, 256, 1])
            v, n = np.unique(code, return_counts=True)
            colours.update(dict(zip(v.tolist(), n.tolist(), strict=True)))
    out.findings.append(
        f"masks: {', '.join(f'{k} ({n})' for k, n in kinds.most_common())}, "
        f"{len(picks)} of {len(files)} read"
    )
    if colours and values:
        out.problems.append("masks mix one-channel and colour files; convert them to one encoding")
        return None
    return _colour_settings(colours, lossy, out) if colours else _value_settings(values, lossy, out)


def _mask_defaults() -> dict:
    folder = dataset_defaults("folder")
    return {key: folder[key] for key in MASK_KEYS}


def _shares(counter: Counter, name) -> str:
    total = sum(counter.values())
    return ", ".join(f"{name(k)} {n / total:.1%}" for k, n in counter.most_common(12)) + (
        f", ... ({len(counter)} in all)" if len(counter) > 12 else ""
    )


def _lossy_values(values: Counter, base: dict, out: Notes) -> dict | None:
    """Lossy one-channel masks: binary when nearly every pixel is near 0 or 255, else refused."""
    near = sum(n for v, n in values.items() if v < 32 or v > 223) / sum(values.values())
    if near > 0.95:
        out.findings.append(
            f"lossy (JPEG) masks of two levels: {near:.1%} of the pixels are within 32 of 0 or "
            "255 -> binary, dataset.mask_threshold=128"
        )
        return {
            **base,
            "num_classes": 2,
            "class_names": ["background", "foreground"],
            "colors": None,
            "mask_threshold": 128,
            "ignore_index": 254,
        }
    out.problems.append(
        f"lossy (JPEG) masks with {len(values)} values, not two levels near 0 and 255: class "
        "labels cannot be recovered; store masks as PNG"
    )
    return None


def _value_settings(values: Counter, lossy: bool, out: Notes) -> dict | None:
    """One-channel masks: lossy binary, 0/255 binary, class indices, or values mapped in order."""
    found = sorted(values)
    out.findings.append(f"mask values (pixel share): {_shares(values, str)}")
    base = {**_mask_defaults(), "mask_format": "index"}
    if lossy:  # even a clean sample: other JPEG masks of the set carry noise
        return _lossy_values(values, base, out)
    if len(found) > MAX_CLASSES:
        out.problems.append(
            f"{len(found)} distinct mask values: not class labels (images in the mask folder?)"
        )
        return None
    if set(found) <= {0, 255}:
        out.findings.append(
            "binary 0/255 masks -> dataset.mask_values={0: 0, 255: 1}, ignore_index 254"
        )
        return {
            **base,
            "num_classes": 2,
            "class_names": ["background", "foreground"],
            "colors": None,
            "mask_values": {0: 0, 255: 1},
            "ignore_index": 254,
        }
    ignore = 255 if 255 in found else None
    classes = [v for v in found if v != ignore]
    if classes == list(range(len(classes))):
        note = f"class indices 0..{len(classes) - 1}" + (
            ", 255 ignored" if ignore is not None else ""
        )
        out.findings.append(note)
        return {**base, "num_classes": len(classes), "class_names": None, "colors": None}
    mapping = {v: i for i, v in enumerate(classes)}
    if ignore is not None:
        mapping[255] = 255
    out.findings.append(
        f"values {classes[:8]}{'...' if len(classes) > 8 else ''} are not 0..K-1: mapped in order "
        "by dataset.mask_values (rename the classes in class_names)"
    )
    return {
        **base,
        "num_classes": len(classes),
        "class_names": None,
        "colors": None,
        "mask_values": mapping,
    }


def _colour_settings(colours: Counter, lossy: bool, out: Notes) -> dict | None:
    def rgb(code: int) -> list[int]:
        return [(code >> 16) & 255, (code >> 8) & 255, code & 255]

    total = sum(colours.values())
    main = [c for c, n in colours.most_common() if n / total >= 0.001]
    out.findings.append(
        f"colour masks (pixel share): {_shares(colours, lambda c: str(tuple(rgb(c))))}"
    )
    base = {**_mask_defaults(), "mask_format": "rgb"}
    if lossy or len(colours) > MAX_CLASSES:
        main = _colour_centres(colours, total)
        if not main or len(main) > 64:
            out.problems.append(
                f"{len(colours)} distinct colours that do not gather around a few class colours "
                f"(within {SNAP} levels): not a colour code segcli can recover"
            )
            return None
        out.findings.append(
            f"lossy colour masks: {len(colours)} colours gather around {len(main)} class colours; "
            f"dataset.color_tolerance={SNAP} snaps the rest (blends at borders are ignored)"
        )
        base["color_tolerance"] = SNAP
    else:
        main = sorted(colours)
    colors = [rgb(c) for c in main]
    out.findings.append(
        f"{len(colors)} colours -> classes in that order (rename them in class_names)"
    )
    return {**base, "num_classes": len(colors), "class_names": None, "colors": colors}


def _colour_centres(colours: Counter, total: int) -> list[int]:
    """Class colours of lossy colour masks: the most frequent colours, each more than ``SNAP``
    levels (largest channel difference) from every centre before it and not a blend of two of them
    (JPEG's chroma subsampling mixes neighbouring classes' chroma at their borders: chroma on the
    segment between theirs, luma within theirs, in JPEG's YCbCr), holding 0.5% of the pixels with
    the colours that snap to it. Returns colour codes ``(r << 16) | (g << 8) | b``."""

    def rgb(code: int) -> np.ndarray:
        return np.array([(code >> 16) & 255, (code >> 8) & 255, code & 255], dtype=float)

    def ycbcr(c: np.ndarray) -> np.ndarray:  # JPEG's colour space (ITU-R BT.601, full range)
        return np.array(
            [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]
        ) @ c + [0, 128, 128]

    def between(c: np.ndarray, a: np.ndarray, b: np.ndarray) -> bool:
        """c's chroma on the chroma segment a-b and its luma within theirs: a JPEG blend of a
        and b."""
        (yc, *cc), (ya, *ca), (yb, *cb) = ycbcr(c), ycbcr(a), ycbcr(b)
        cc, ca, cb = np.array(cc), np.array(ca), np.array(cb)
        t = np.clip(np.dot(cc - ca, cb - ca) / max(np.dot(cb - ca, cb - ca), 1e-9), 0, 1)
        return bool(
            np.abs(cc - (ca + t * (cb - ca))).max() <= 16
            and min(ya, yb) - SNAP <= yc <= max(ya, yb) + SNAP
        )

    centres: dict[int, int] = {}
    for code, n in colours.most_common():
        if n / total < 0.0005 or len(centres) > 64:
            break
        c = rgb(code)
        near = [k for k in centres if np.abs(c - rgb(k)).max() <= SNAP]
        if near:
            centres[near[0]] += n
            continue
        points = [rgb(k) for k in centres]
        if not any(between(c, a, b) for i, a in enumerate(points) for b in points[i + 1 :]):
            centres[code] = n
    return [c for c, n in centres.items() if n / total >= 0.005]
