"""The ``dataset`` config group as one typed, validated, frozen object: ``DatasetSettings``.

``DatasetSettings.from_config(cfg["dataset"])`` is the one place that reads the group's raw dict;
everything else (datasets, layouts, masks, the pair cache, training, eval, predict, export) reads
the object's attributes. A wrong value is a one-line ``SegcliError`` naming ``dataset.KEY`` and what
was expected. The object never changes: ``with_root(path)`` returns a copy with another root
(``segcli eval --data-root``), ``absolute()`` one whose root is an absolute path.

Defaults live in YAML, once: a key the group lacks (a checkpoint of an older segcli, a user's own
short YAML file, a test's few keys) takes its value from ``conf/dataset/<kind>.yaml``
(``folder.yaml``, ``synthetic.yaml``; a group without ``kind`` reads as ``folder``), and a key only
one layout reads (VOC's ``aug`` and ``aug_list``) from the packaged YAML file of that ``layout``
(``voc.yaml``). ``null`` for a key that needs a value means that default too. Keys the object does
not know are left to their readers (Hydra interpolations, a user's own notes).

``DatasetInfo`` is what eval and predict need about the classes (stored in every checkpoint).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

from segcli.errors import SegcliError

SPLITS = ("train", "val", "test")
ON_BAD_FILE = ("error", "skip")
MASK_FORMATS = ("index", "rgb")
#: ``dataset.labels``: the training split's kind of label (weak labels: src/segcli/weak/)
LABEL_KINDS = ("masks", "boxes", "points", "scribbles", "tags")
#: ``dataset.simulate``: the weak labels segcli can derive from full masks
SIMULATED = ("boxes", "points", "scribbles")
#: ``dataset.channels``: rgb: 8-bit RGB as today (gray and 16-bit converted, ImageNet statistics) |
#: stored: every channel as the files store it (dtype kept), extra_inputs stacked, statistics of
#: the training split (data/channels.py)
CHANNEL_MODES = ("rgb", "stored")
MISSING = "???"  # Hydra's "required" marker (folder.yaml's root)
DEFAULT_KIND = "folder"  # a group without kind reads as conf/dataset/folder.yaml's


def _bad(key: str, value: Any, expected: str) -> SegcliError:
    return SegcliError(f"dataset.{key}={value}: expected {expected}")


def _name(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _bad(key, value, "a name")
    return value


def _text(key: str, value: Any) -> str:
    """A folder, file or suffix: a string (a number, as YAML reads ``2020``, is its digits)."""
    if isinstance(value, PathLike):
        return str(value)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _bad(key, value, "a string (a folder, file or suffix)")
    return str(value)


def _flag(key: str, value: Any) -> bool:
    if value in (0, 1) and not isinstance(value, float):  # True, False, 0, 1
        return bool(value)
    raise _bad(key, value, "true or false")


def _whole(value: Any) -> bool:
    """An integer, or a float of an integer value (``2.0``); not a bool."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return number and float(value).is_integer()


def _integer(
    low: int | None = None, expected: str | None = None, high: int | None = None
) -> Callable[[str, Any], int]:
    def parse(key: str, value: Any) -> int:
        if (
            not _whole(value)
            or (low is not None and value < low)
            or (high is not None and value > high)
        ):
            shown = "an integer" if low is None else f"an integer >= {low}"
            raise _bad(key, value, expected or shown)
        return int(value)

    return parse


def _number(low: float, shown: str) -> Callable[[str, Any], float]:
    def parse(key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
            raise _bad(key, value, f"a number {shown}")
        return float(value)

    return parse


def _choice(*options: str) -> Callable[[str, Any], str]:
    def parse(key: str, value: Any) -> str:
        if value not in options:
            raise _bad(key, value, " or ".join(options))
        return str(value)

    return parse


def _mapping(expected: str) -> Callable[[str, Any], dict]:
    def parse(key: str, value: Any) -> dict:
        if not isinstance(value, Mapping):
            raise _bad(key, value, expected)
        return dict(value)

    return parse


def _listed(value: Any) -> bool:
    """A list or tuple (not a string or a mapping)."""
    return hasattr(value, "__len__") and not isinstance(value, (str, bytes, Mapping))


def _names(key: str, value: Any) -> tuple:
    if not _listed(value) or any(_listed(n) or isinstance(n, Mapping) or n is None for n in value):
        raise _bad(key, value, "a list of class names")
    return tuple(value)


def _colors(key: str, value: Any) -> tuple[tuple[int, int, int], ...]:
    bad = _bad(key, value, "a list of [R, G, B] colours, each 0..255")
    if not _listed(value):
        raise bad
    for color in value:
        if not _listed(color) or len(color) != 3:
            raise bad
        if not all(_whole(c) and 0 <= c <= 255 for c in color):
            raise bad
    return tuple((int(r), int(g), int(b)) for r, g, b in value)


def _size(key: str, value: Any) -> tuple[int, int]:
    if not _listed(value) or len(value) != 2 or not all(_whole(v) and v >= 1 for v in value):
        raise _bad(key, value, "[height, width] in pixels, each >= 1")
    return int(value[0]), int(value[1])


def _split_lists(key: str, value: Any) -> dict[str, str]:
    lists = _mapping("{split: list file} (e.g. {train: lists/train.txt, val: lists/val.txt})")(
        key, value
    )
    unknown = sorted(set(lists) - set(SPLITS))
    if unknown:
        raise SegcliError(
            f"dataset.split_lists.{unknown[0]}: expected splits among {', '.join(SPLITS)}"
        )
    if lists and ("train" not in lists or "val" not in lists):
        raise SegcliError("dataset.split_lists: expected at least train and val lists")
    return {split: _text(f"{key}.{split}", path) for split, path in lists.items()}


def _extra_inputs(key: str, value: Any) -> tuple[tuple[str, str], ...]:
    """``[{dir: depth, suffix: _depth}, ...]`` -> ``((dir, suffix), ...)``."""
    expected = "a list of {dir: FOLDER, suffix: TEXT} (e.g. [{dir: depth, suffix: _depth}])"
    if not _listed(value):
        raise _bad(key, value, expected)
    out = []
    for i, entry in enumerate(value):
        if not isinstance(entry, Mapping) or "dir" not in entry or set(entry) - {"dir", "suffix"}:
            raise _bad(f"{key}[{i}]", entry, expected)
        out.append(
            (
                _text(f"{key}[{i}].dir", entry["dir"]),
                _text(f"{key}[{i}]", entry.get("suffix") or ""),
            )
        )
    return tuple(out)


def _percentiles(key: str, value: Any) -> tuple[float, float]:
    ok = _listed(value) and len(value) == 2
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if not ok or not 0 <= value[0] < value[1] <= 100:
        raise _bad(key, value, "[low, high] percentiles, 0 <= low < high <= 100 (e.g. [0.5, 99.5])")
    return float(value[0]), float(value[1])


def _anything(key: str, value: Any) -> Any:
    return value


# key -> (parser of a non-null value, whether null is a value of its own)
RULES: dict[str, tuple[Callable[[str, Any], Any], bool]] = {
    "kind": (_name, False),
    "root": (_text, True),
    "layout": (_name, False),
    "image_dir": (_text, False),
    "mask_dir": (_text, False),
    "image_suffix": (_text, False),
    "mask_suffix": (_text, False),
    "recursive": (_flag, False),
    "roi_dir": (_text, True),
    "roi_suffix": (_text, False),
    "channels": (_choice(*CHANNEL_MODES), True),
    "extra_inputs": (_extra_inputs, True),
    "clip_percentiles": (_percentiles, True),
    "split_lists": (_split_lists, True),
    "val_fraction": (_number(0, ">= 0"), False),
    "aug": (_flag, False),
    "aug_list": (_text, False),
    "num_classes": (_integer(1), True),
    "class_names": (_names, True),
    "colors": (_colors, True),
    "class_weights": (_anything, True),  # the loss group reads it (losses.build.class_weights)
    "ignore_index": (_integer(), False),
    "mask_values": (_mapping("a mapping raw mask value -> class (e.g. {0: 0, 255: 1})"), True),
    "reduce_zero_label": (_flag, False),
    "mask_format": (_choice(*MASK_FORMATS), False),
    "mask_threshold": (_integer(0), True),
    "color_tolerance": (_integer(0, "0..255 levels per channel", 255), True),
    "on_bad_file": (_choice(*ON_BAD_FILE), False),
    "point_labels": (_integer(1, "a number of pixels per class >= 1, or null"), True),
    "labels": (_choice(*LABEL_KINDS), False),
    "weak_labels": (_text, True),
    "weak_images": (_text, True),
    "simulate": (_choice(*SIMULATED), True),
    "background_class": (_integer(0), True),
    "scale": (_number(1e-3, "> 0"), False),
    "crop_size": (_size, True),
    "epochs": (_integer(1), True),
    "image_size": (_size, False),
    "num_train": (_integer(0), False),
    "num_val": (_integer(0), False),
    "num_test": (_integer(0), False),
}


@functools.cache
def packaged_groups() -> dict[str, dict]:
    """``{name: the dataset group of conf/dataset/<name>.yaml}``, as written (``???`` -> None)."""
    from omegaconf import OmegaConf

    from segcli.config import config_dir

    out = {}
    for path in sorted((config_dir() / "dataset").glob("*.yaml")):
        group = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        out[path.stem] = {k: None if v == MISSING else v for k, v in group.items()}
    return out


def dataset_defaults(kind: str, layout: str | None = None) -> dict:
    """The defaults of a group of this ``kind`` and ``layout`` (see the module docstring)."""
    groups = packaged_groups()
    base = groups.get(kind, {}) if groups.get(kind, {}).get("kind") == kind else {}
    extra = next((g for g in groups.values() if layout and g.get("layout") == layout), {})
    return {**{k: v for k, v in extra.items() if k not in base and k in RULES}, **base}


@dataclass(frozen=True)
class DatasetSettings:
    """The ``dataset`` group, parsed (see the module docstring and conf/dataset/folder.yaml, whose
    comments document every key). Keys that the group's kind does not use are None (a synthetic
    dataset has no ``root``). Paths and folders are strings, as in the config; ``class_names``,
    ``colors`` (RGB 0..255), ``crop_size`` and ``image_size`` ((height, width), pixels) are tuples;
    ``scale`` is the resolution factor at which the model sees images."""

    kind: str
    root: str | None
    layout: str | None
    image_dir: str | None
    mask_dir: str | None
    image_suffix: str | None
    mask_suffix: str | None
    recursive: bool | None
    roi_dir: str | None
    roi_suffix: str | None
    channels: str | None
    extra_inputs: tuple[tuple[str, str], ...] | None
    clip_percentiles: tuple[float, float] | None
    split_lists: dict[str, str] | None
    val_fraction: float | None
    aug: bool | None
    aug_list: str | None
    num_classes: int | None
    class_names: tuple | None
    colors: tuple[tuple[int, int, int], ...] | None
    class_weights: Any
    ignore_index: int | None
    mask_values: dict | None
    reduce_zero_label: bool | None
    mask_format: str | None
    mask_threshold: int | None
    color_tolerance: int | None
    on_bad_file: str | None
    point_labels: int | None
    labels: str
    weak_labels: str | None
    weak_images: str | None
    simulate: str | None
    background_class: int | None
    scale: float
    crop_size: tuple[int, int] | None
    epochs: int | None
    image_size: tuple[int, int] | None
    num_train: int | None
    num_val: int | None
    num_test: int | None

    @classmethod
    def from_config(cls, cfg: Mapping) -> DatasetSettings:
        """Parse a ``dataset`` group (a plain dict or an OmegaConf node).

        Raises:
            SegcliError: ``dataset.KEY=VALUE: expected ...`` for the first wrong value, or a
                ``kind`` without a file of its own in conf/dataset/.
        """
        if not isinstance(cfg, Mapping):
            raise SegcliError(f"dataset={cfg}: expected a config group (KEY: VALUE lines)")
        kind = _name("kind", cfg.get("kind") or DEFAULT_KIND)
        kinds = [name for name, group in packaged_groups().items() if group.get("kind") == name]
        if kind not in kinds:
            raise _bad("kind", kind, f"one of {', '.join(kinds)}")
        layout = cfg.get("layout")
        defaults = dataset_defaults(kind, layout if isinstance(layout, str) else None)
        values = {}
        for key, (parse, nullable) in RULES.items():
            value = cfg[key] if key in cfg else defaults.get(key)
            if value is None and not nullable:
                value = defaults.get(key)
            values[key] = None if value is None else parse(key, value)
        if values["extra_inputs"] and values["channels"] == "rgb":
            raise SegcliError(
                "dataset.extra_inputs: stacking channels needs dataset.channels=stored (or null), "
                "not rgb"
            )
        return cls(**values)

    def with_root(self, root: str | PathLike) -> DatasetSettings:
        """A copy whose data is under ``root`` (the object itself never changes)."""
        return dataclasses.replace(self, root=_text("root", root))

    def absolute(self) -> DatasetSettings:
        """A copy whose root is an absolute path (``~`` expanded), as a run stores it; itself
        when there is no root."""
        if self.root is None:
            return self
        return self.with_root(Path(self.root).expanduser().resolve())

    def as_group(self, group: Mapping) -> dict:
        """A copy of the raw ``group`` this object was parsed from, with this object's root
        (what a run stores: ``absolute().as_group(cfg["dataset"])``); the other keys as written."""
        return dict(group) if self.root is None else {**group, "root": self.root}

    @property
    def label_files(self) -> bool:
        """Whether the training split is labelled by weak-label files (``labels`` is not masks
        and nothing is simulated): its masks are not read, its images are ``weak_images``'."""
        return self.labels not in (None, "masks") and not self.simulate

    @property
    def stored_channels(self) -> bool:
        """Whether images are read with every channel as stored (``channels: stored``, or
        ``extra_inputs`` given and ``channels`` unset) instead of as 8-bit RGB."""
        mode = self.channels or ("stored" if self.extra_inputs else "rgb")
        return mode == "stored"

    def images_in(self, split: str) -> int:
        """A synthetic dataset's number of images of ``split`` (``num_train``, ...)."""
        return int(getattr(self, f"num_{split}") or 0)


def default_colors(n: int) -> list[list[int]]:
    """``n`` distinct RGB colours for datasets that name none: PASCAL VOC's bit-interleaved
    colour map from index 1 on (index 0 is black). Returns ``n`` lists of three ints 0..255."""
    colors = []
    for i in range(n):
        r = g = b = 0
        c = i + 1  # skip black, which reads as "nothing"
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colors.append([r, g, b])
    return colors


@dataclass
class DatasetInfo:
    """What eval and predict need to know about the classes, stored in every checkpoint.

    Attributes:
        num_classes: C.
        class_names: C names.
        colors: C RGB triples (0..255) for overlays.
        ignore_index: mask value that losses and metrics skip.
    """

    num_classes: int
    class_names: list[str]
    colors: list[list[int]]
    ignore_index: int

    @classmethod
    def from_settings(cls, settings: DatasetSettings) -> DatasetInfo:
        """The classes of a ``dataset`` group; names and colours default when null, and
        ``num_classes`` (when null) is the length of ``class_names`` or ``colors``.

        Raises:
            SegcliError: no num_classes and nothing to count; class_names or colors do not have
                num_classes entries.
        """
        c = settings.num_classes
        if c is None:
            c = len(settings.class_names or settings.colors or [])
            if not c:
                raise SegcliError(
                    "dataset.num_classes: not set; set it, or dataset.class_names or dataset.colors"
                )
        names = list(settings.class_names or [f"class{i}" for i in range(c)])
        colors = [list(x) for x in (settings.colors or default_colors(c))]
        for key, value in (("dataset.class_names", names), ("dataset.colors", colors)):
            if len(value) != c:
                raise SegcliError(
                    f"{key} has {len(value)} entries; expected dataset.num_classes={c}"
                )
        return cls(c, names, colors, int(settings.ignore_index))
