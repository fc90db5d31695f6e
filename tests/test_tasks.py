"""tasks.py (the task seam): ``check_task`` on configs composed as ``segcli train`` composes them
(a choice of another task, or a semantic-masks key in an instance run, is one line naming the
choice and what the task takes), ``task_name`` of old runs and ``options_for``."""

from __future__ import annotations

import pytest

from segcli.config import compose_config, to_plain
from segcli.errors import SegcliError
from segcli.tasks import check_task, options_for, task_name

INSTANCE_MODELS = ["maskrcnn_resnet18_fpn", "maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2"]


def composed(*overrides: str) -> dict:
    """The resolved config of ``segcli train OVERRIDES`` as plain dicts."""
    return to_plain(compose_config(list(overrides)))


def refusal(*overrides: str) -> str:
    """``check_task``'s message for the composed overrides (asserted to be one line)."""
    with pytest.raises(SegcliError) as info:
        check_task(composed(*overrides))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_instance_task_defaults_pass():
    cfg = composed("task=instance")
    assert task_name(cfg) == "instance"
    assert cfg["model"]["arch"] == "maskrcnn_resnet18_fpn"
    assert cfg["loss"]["name"] == "maskrcnn"
    assert cfg["dataset"]["kind"] == "synthetic"
    check_task(cfg)


def test_default_semantic_config_passes():
    cfg = composed()
    assert task_name(cfg) == "semantic"
    check_task(cfg)


def test_command_line_model_beats_the_tasks_default():
    cfg = composed("task=instance", "model=maskrcnn_resnet50_fpn")
    assert cfg["model"]["arch"] == "maskrcnn_resnet50_fpn"
    check_task(cfg)


def test_semantic_model_in_an_instance_run():
    message = refusal("task=instance", "model=unet")
    assert "model=unet" in message and "semantic" in message and "task=instance" in message
    for name in INSTANCE_MODELS:
        assert name in message


def test_semantic_loss_in_an_instance_run():
    message = refusal("task=instance", "loss=dice")
    assert "loss=dice" in message and "task=instance takes loss=maskrcnn" in message


def test_semantic_dataset_in_an_instance_run():
    message = refusal("task=instance", "dataset=folder", "dataset.root=x")
    assert "folder" in message and "semantic dataset" in message
    for name in ("coco", "labelme", "voc_instances", "cityscapes_instances", "synthetic"):
        assert name in message


def test_instance_model_in_a_semantic_run_suggests_task_instance():
    message = refusal("model=maskrcnn_resnet18_fpn")
    assert "model=maskrcnn_resnet18_fpn" in message and "task=semantic" in message
    assert "task=instance" in message and "unet" in message


def test_instance_loss_in_a_semantic_run_suggests_task_instance():
    message = refusal("loss=maskrcnn")
    assert "loss=maskrcnn" in message and "task=instance" in message and "dice" in message


@pytest.mark.parametrize(
    "override, shown",
    [
        ("+dataset.point_labels=5", "dataset.point_labels=5"),
        ("dataset.class_weights=[1,2,3,4]", "dataset.class_weights=[1, 2, 3, 4]"),
        ("dataset.class_weights=median_frequency", "dataset.class_weights=median_frequency"),
        ("+dataset.mask_values={1:255}", "dataset.mask_values="),
    ],
)
def test_semantic_mask_keys_in_an_instance_run(override, shown):
    message = refusal("task=instance", override)
    assert message.startswith(shown) and "task=instance" in message and "null" in message


def test_point_labels_on_the_synthetic_instance_data_is_refused_when_composed():
    # the synthetic group has no point_labels key: composing already refuses it, in one line
    with pytest.raises(SegcliError) as info:
        compose_config(["task=instance", "dataset.point_labels=5"])
    assert "dataset.point_labels" in str(info.value) and "\n" not in str(info.value)


def test_unused_keys_left_null_pass():
    check_task(composed("task=instance", "dataset.class_weights=null"))


def test_task_name_of_a_config_without_a_task_group_is_semantic():
    cfg = composed()
    del cfg["task"]
    assert task_name(cfg) == "semantic"
    check_task(cfg)  # an old run's semantic config still passes
    assert task_name({"task": "instance"}) == "instance"


def test_options_for_instance_models_are_the_three_mask_rcnns():
    assert options_for("model", "instance") == INSTANCE_MODELS
    assert options_for("loss", "instance") == ["maskrcnn"]
    assert "synthetic" in options_for("dataset", "instance")
    assert "synthetic" in options_for("dataset", "semantic")
    assert "unet" in options_for("model", "semantic")
    assert not set(INSTANCE_MODELS) & set(options_for("model", "semantic"))
