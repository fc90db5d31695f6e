from pathlib import Path

import pytest

from segcli.config import compose_config, config_dir, group_options, to_plain
from segcli.errors import SegcliError
from segcli.tasks import TASK_GROUPS, options_for

CONF = Path(__file__).resolve().parents[1] / "conf"
ALL_OPTIONS = [(g, o) for g, opts in group_options().items() for o in opts]


def with_task(group: str, option: str) -> list[str]:
    """The overrides that compose ``group=option`` in its own task: ``task=instance`` for an
    option only task=instance takes (its YAML says ``task: instance``), and a root for datasets
    that need one."""
    instance_only = group in TASK_GROUPS and option not in options_for(group, "semantic")
    extra = ["dataset.root=/data"] if group == "dataset" and option != "synthetic" else []
    return [*(["task=instance"] if instance_only else []), f"{group}={option}", *extra]


def test_config_dir_is_the_repo_conf_in_a_checkout():
    assert config_dir() == CONF


def test_defaults_compose_to_the_documented_main_job():
    cfg = to_plain(compose_config([]))
    assert cfg["dataset"]["kind"] == "synthetic" and cfg["model"]["arch"] == "Unet"
    assert cfg["model"]["encoder_weights"] is None  # nothing is downloaded by default
    assert cfg["trainer"]["epochs"] == cfg["dataset"]["epochs"]
    assert cfg["loss"]["ignore_index"] == cfg["dataset"]["ignore_index"]
    assert set(cfg["trainer"]) >= {
        "epochs",
        "max_minutes",
        "batch_size",
        "num_workers",
        "device",
        "amp",
    }
    assert {
        "dataset",
        "model",
        "loss",
        "augmentation",
        "trainer",
        "optimizer",
        "scheduler",
        "seed",
    } <= set(cfg)


@pytest.mark.parametrize("group,option", ALL_OPTIONS)
def test_every_option_of_every_group_composes_and_resolves(group, option):
    extra = ["dataset.num_classes=2"] if option == "folder" else []
    cfg = to_plain(compose_config([*with_task(group, option), *extra]))
    if group == "experiment":  # a global overlay: it names its model and optimizer
        assert cfg["model"]["arch"] and cfg["optimizer"]["name"] and "experiment" not in cfg
    else:
        assert cfg[group] is not None


def test_cross_group_values_follow_the_dataset():
    cfg = to_plain(compose_config(["dataset=camvid", "loss=ce"]))
    assert cfg["loss"]["ignore_index"] == 11 and cfg["trainer"]["epochs"] == 200
    crop = next(t for t in cfg["augmentation"]["train"] if t["_target_"].endswith("RandomCrop"))
    assert crop["fill_mask"] == 11 and (crop["height"], crop["width"]) == (256, 256)


def test_mistakes_are_one_line_user_errors():
    with pytest.raises(SegcliError, match=r"trainer.epochz") as e:
        compose_config(["trainer.epochz=3"])
    assert "\n" not in str(e.value)
    with pytest.raises(SegcliError, match=r"model/unett.*unet") as e:
        compose_config(["model=unett"])
    assert "\n" not in str(e.value)
    with pytest.raises(SegcliError, match=r"dataset.root"):
        compose_config(["dataset=folder", "dataset.num_classes=2"])


def test_a_users_own_config_dir_adds_options(tmp_path: Path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "mine.yaml").write_text(
        "arch: FPN\nencoder_name: resnet18\nencoder_weights: null\nparams: {}\n"
    )
    cfg = to_plain(compose_config(["model=mine"], user_config_dir=str(tmp_path)))
    assert cfg["model"]["arch"] == "FPN"
    assert "mine" in group_options([tmp_path])["model"]


def test_seed_is_settable_at_the_root_and_in_trainer():
    assert to_plain(compose_config(["seed=3"]))["trainer"]["seed"] == 3
    assert to_plain(compose_config(["trainer.seed=4"]))["trainer"]["seed"] == 4


def _registries():
    from segcli.losses.build import LOSSES
    from segcli.models.build import MODELS
    from segcli.training.loggers import LOGGERS
    from segcli.training.optim import OPTIMIZERS, SCHEDULES

    return {
        "loss": LOSSES,
        "optimizer": OPTIMIZERS,
        "scheduler": SCHEDULES,
        "logger": LOGGERS,
        "model": MODELS,
    }


@pytest.mark.parametrize(
    "group,option",
    [(g, o) for g, o in ALL_OPTIONS if g in ("loss", "optimizer", "scheduler", "logger", "model")],
)
def test_every_yaml_file_has_a_registered_builder_that_builds(group, option, tmp_path: Path):
    """A new YAML file of these groups needs one registered function and nothing else: this test
    finds it."""
    import torch

    from segcli.losses.build import build_loss
    from segcli.models.build import build_model
    from segcli.training.loggers import build_logger
    from segcli.training.optim import build_optimizer, build_schedule

    overrides = with_task(group, option)
    cfg = to_plain(
        compose_config(
            [*overrides, "dataset.num_classes=3", "dataset.class_names=null", "dataset.colors=null"]
        )
    )
    if "task=instance" in overrides:
        _check_instance_option(group, cfg)
        return
    registry = _registries()[group]
    assert cfg[group][registry.key] in registry
    if group == "loss":
        import numpy as np

        from segcli.data.readers import ClassPixels

        loss = build_loss(cfg["loss"], 3, ClassPixels(np.array([5, 6, 7]), np.array([10, 10, 10])))
        assert torch.isfinite(loss(torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))))
    elif group == "optimizer":
        p = torch.nn.Parameter(torch.ones(2))
        assert isinstance(build_optimizer(cfg["optimizer"], [p]), torch.optim.Optimizer)
    elif group == "scheduler":
        assert 0 <= build_schedule(cfg["scheduler"], 10).factor(0.5) <= 1
    elif group == "logger" and option not in ("tensorboard", "mlflow"):
        assert hasattr(build_logger(cfg["logger"], tmp_path), "log")
    elif group == "model":  # its forward pass: test_models.py
        assert isinstance(
            build_model(cfg["model"], 2 if option == "otsu" else 3), torch.nn.Module
        )  # otsu: binary


def _check_instance_option(group: str, cfg: dict) -> None:
    """task=instance's model options build torchvision's Mask R-CNN; its one loss option is the
    model's own (no builder of the semantic losses: the instance run steps on the model's loss
    dict)."""
    import torch

    from segcli.losses.build import LOSSES
    from segcli.models.instance import INSTANCE_MODELS, build_instance_model
    from segcli.training.instance_trainer import InstanceStep, InstanceTrainer

    if group == "model":
        assert cfg["model"]["arch"] in INSTANCE_MODELS
        model = build_instance_model(cfg["model"], 4)
        assert isinstance(model, torch.nn.Module) and hasattr(model, "roi_heads")
    else:
        assert cfg["loss"]["name"] not in LOSSES and InstanceTrainer.step_kind is InstanceStep


def test_registries_refuse_unknown_names_in_one_line():
    from segcli.training.optim import build_optimizer

    with pytest.raises(
        SegcliError, match=r"^optimizer.name=lion: expected one of adamw, adam, sgd, rmsprop$"
    ):
        build_optimizer({"name": "lion", "lr": 1e-3}, [])
