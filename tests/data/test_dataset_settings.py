"""data/settings.py: the ``dataset`` group parsed once (defaults from conf/dataset/*.yaml, one-line
errors naming the key, copies instead of in-place changes), and the registries of kinds and layouts
agreeing with the YAML files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from segcli.config import compose_config, group_options, to_plain
from segcli.data.datasets import KINDS
from segcli.data.instance_datasets import INSTANCE_KINDS
from segcli.data.layouts import LAYOUTS
from segcli.data.settings import DatasetInfo, DatasetSettings, packaged_groups
from segcli.errors import SegcliError
from segcli.tasks import options_for, tasks_of

DATASETS = group_options()["dataset"]


def composed(name: str) -> dict:
    extra = ["dataset.root=/data", "dataset.num_classes=2"] if name == "folder" else []
    if name not in options_for("dataset", "semantic"):  # task=instance data: classes from the files
        extra = ["task=instance", "dataset.root=/data"]
    return to_plain(compose_config([f"dataset={name}", *extra]))["dataset"]


@pytest.mark.parametrize("name", DATASETS)
def test_every_packaged_dataset_parses_to_its_own_values(name):
    group = composed(name)
    settings = DatasetSettings.from_config(group)
    for key, value in group.items():
        if hasattr(settings, key):
            parsed = getattr(settings, key)
            expected = (
                value
                if not isinstance(value, list)
                else tuple(tuple(v) if isinstance(v, list) else v for v in value)
            )
            assert parsed == expected, key
    if "semantic" in tasks_of(group):
        assert settings.kind in KINDS and DatasetInfo.from_settings(settings).num_classes >= 1
    if "instance" in tasks_of(group):
        assert settings.kind in INSTANCE_KINDS


def test_missing_keys_take_the_yaml_defaults_not_values_written_in_code():
    # a checkpoint of an older segcli had no dataset.scale; a test or a user's file gives few keys
    folder = packaged_groups()["folder"]
    settings = DatasetSettings.from_config({"root": "r", "num_classes": 2})
    assert (settings.kind, settings.layout, settings.scale, settings.val_fraction) == (
        folder["kind"],
        folder["layout"],
        folder["scale"],
        folder["val_fraction"],
    )
    assert (settings.image_dir, settings.on_bad_file, settings.mask_format) == (
        "images",
        "error",
        "index",
    )
    assert settings.aug is None  # no layout of this group reads it
    voc = DatasetSettings.from_config({"root": "r", "layout": "voc"})  # VOC's keys: voc.yaml's
    assert (voc.aug, voc.aug_list) == (False, packaged_groups()["voc"]["aug_list"])
    synthetic = DatasetSettings.from_config({"kind": "synthetic"})
    assert synthetic.num_train == packaged_groups()["synthetic"]["num_train"] and not synthetic.root
    # null where a value is needed is the default too (as `x or default` read it before)
    assert DatasetSettings.from_config({"layout": None, "on_bad_file": None}).layout == (
        "image_mask_dirs"
    )
    assert DatasetSettings.from_config({}).root is None  # folder.yaml's root is ??? (required)


@pytest.mark.parametrize(
    "group,message",
    [
        (
            {"kind": "camvid"},
            (
                "dataset.kind=camvid: expected one of cityscapes_instances, coco, folder, labelme, "
                "synthetic, voc_instances"
            ),
        ),
        ({"on_bad_file": "warn"}, "dataset.on_bad_file=warn: expected error or skip"),
        ({"mask_format": "hsv"}, "dataset.mask_format=hsv: expected index or rgb"),
        ({"scale": 0}, "dataset.scale=0: expected a number > 0"),
        ({"scale": "half"}, "dataset.scale=half: expected a number > 0"),
        ({"num_classes": 2.5}, "dataset.num_classes=2.5: expected an integer >= 1"),
        ({"ignore_index": "void"}, "dataset.ignore_index=void: expected an integer"),
        ({"recursive": "yes"}, "dataset.recursive=yes: expected true or false"),
        ({"colors": [[0, 0]]}, "dataset.colors=[[0, 0]]: expected a list of [R, G, B] colours"),
        ({"colors": [[0, 0, 256]]}, "dataset.colors=[[0, 0, 256]]: expected a list of [R, G, B]"),
        ({"class_names": "abc"}, "dataset.class_names=abc: expected a list of class names"),
        ({"color_tolerance": 300}, "dataset.color_tolerance=300: expected 0..255 levels"),
        ({"point_labels": 0}, "dataset.point_labels=0: expected a number of pixels per class"),
        ({"point_labels": True}, "dataset.point_labels=True: expected a number of pixels"),
        ({"crop_size": [64]}, "dataset.crop_size=[64]: expected [height, width] in pixels"),
        ({"image_dir": ["a"]}, "dataset.image_dir=['a']: expected a string"),
        ({"mask_values": [0, 1]}, "dataset.mask_values=[0, 1]: expected a mapping"),
        ({"split_lists": {"trian": "t.txt"}}, "dataset.split_lists.trian: expected splits among"),
        ({"split_lists": {"train": "t.txt"}}, "dataset.split_lists: expected at least train and"),
    ],
)
def test_a_wrong_value_is_one_line_naming_the_key_and_what_was_expected(group, message):
    with pytest.raises(SegcliError) as info:
        DatasetSettings.from_config(group)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_the_object_is_frozen_and_root_changes_are_copies(tmp_path: Path):
    group = composed("camvid")
    settings = DatasetSettings.from_config(group)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.root = "elsewhere"  # type: ignore[misc]
    moved = settings.with_root(tmp_path)
    assert (moved.root, settings.root, group["root"]) == (
        str(tmp_path),
        "data/camvid",
        "data/camvid",
    )
    assert dataclasses.replace(moved, root=settings.root) == settings
    absolute = settings.absolute()
    assert Path(absolute.root).is_absolute() and absolute.root.endswith("data/camvid")
    stored = absolute.as_group(group)
    assert stored == {**group, "root": absolute.root} and group["root"] == "data/camvid"
    synthetic = DatasetSettings.from_config(composed("synthetic"))
    assert synthetic.absolute() is synthetic and "root" not in synthetic.as_group(
        {"kind": "synthetic"}
    )


def test_the_registries_and_the_yaml_files_name_the_same_kinds_and_layouts():
    groups = packaged_groups()
    kinds = {name for name, g in groups.items() if g.get("kind") == name}
    semantic = {k for k in kinds if "semantic" in tasks_of(groups[k])}
    instance = {k for k in kinds if "instance" in tasks_of(groups[k])}
    assert set(KINDS.names()) == semantic  # a kind: a YAML file of its defaults + a DatasetKind
    assert set(INSTANCE_KINDS.names()) == instance  # task=instance's: + an INSTANCE_KINDS opener
    for name, group in groups.items():
        if group["kind"] == "folder":
            assert group["layout"] in LAYOUTS, name
    for name in LAYOUTS.names():
        layout = LAYOUTS.get(name)
        assert layout.name == name and groups[layout.builtin]["layout"] == name
        assert bool(layout.markers) == (name != "image_mask_dirs")  # the doctor finds benchmarks
    with pytest.raises(SegcliError, match=r"^dataset.layout=coco: expected one of image_mask_dirs"):
        LAYOUTS.get("coco", "dataset.layout")
