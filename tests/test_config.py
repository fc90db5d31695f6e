from pathlib import Path

import pytest

from segcli.config import compose_config, config_dir, group_options, to_plain
from segcli.errors import SegcliError

CONF = Path(__file__).resolve().parents[1] / "conf"
ALL_OPTIONS = [(g, o) for g, opts in group_options().items() for o in opts]


def test_config_dir_is_the_repo_conf_in_a_checkout():
    assert config_dir() == CONF


def test_defaults_compose_to_the_documented_main_job():
    cfg = to_plain(compose_config([]))
    assert cfg["dataset"]["kind"] == "synthetic" and cfg["model"]["arch"] == "Unet"
    assert cfg["model"]["encoder_weights"] is None  # nothing is downloaded by default
    assert cfg["trainer"]["epochs"] == cfg["dataset"]["epochs"]
    assert cfg["loss"]["ignore_index"] == cfg["dataset"]["ignore_index"]
    assert set(cfg["trainer"]) >= {"epochs", "max_minutes", "batch_size", "num_workers", "device", "amp"}
    assert {"dataset", "model", "loss", "augmentation", "trainer", "optimizer", "scheduler", "seed"} <= set(cfg)


@pytest.mark.parametrize("group,option", ALL_OPTIONS)
def test_every_option_of_every_group_composes_and_resolves(group, option):
    extra = ["dataset.root=/data", "dataset.num_classes=2"] if option == "folder" else []
    cfg = to_plain(compose_config([f"{group}={option}", *extra]))
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
    (tmp_path / "model" / "mine.yaml").write_text("arch: FPN\nencoder_name: resnet18\nencoder_weights: null\nparams: {}\n")
    cfg = to_plain(compose_config(["model=mine"], user_config_dir=str(tmp_path)))
    assert cfg["model"]["arch"] == "FPN"
    assert "mine" in group_options([tmp_path])["model"]


def test_seed_is_settable_at_the_root_and_in_trainer():
    assert to_plain(compose_config(["seed=3"]))["trainer"]["seed"] == 3
    assert to_plain(compose_config(["trainer.seed=4"]))["trainer"]["seed"] == 4
