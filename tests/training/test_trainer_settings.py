"""The ``trainer`` group as ``TrainerSettings``: the YAML's defaults, one-line errors naming the
key, and what a config saved before a key existed reads."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from helpers import REPO

from segcli.config import compose_config, to_plain
from segcli.errors import SegcliError
from segcli.training.settings import BEFORE_THE_KEY, TrainerSettings


def trainer_group(*overrides: str) -> dict:
    return to_plain(compose_config(list(overrides)))["trainer"]


def test_the_settings_are_the_yamls_values():
    yaml_group = yaml.safe_load((REPO / "conf" / "trainer" / "default.yaml").read_text())
    s = TrainerSettings.from_config(trainer_group())
    fields = {f.name for f in dataclasses.fields(s)}
    assert fields == set(yaml_group) - {"seed"}  # the seed is config.run_seed's
    for name in fields - {"epochs"}:  # epochs: ${dataset.epochs}
        assert getattr(s, name) == yaml_group[name], name
    assert s.epochs == to_plain(compose_config([]))["dataset"]["epochs"]
    assert s.checkpoint_seconds == 600.0 and s.max_seconds is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.epochs = 3  # type: ignore[misc]
    s = TrainerSettings.from_config(
        trainer_group("trainer.max_minutes=1.5", "trainer.checkpoint_minutes=null")
    )
    assert s.max_seconds == 90.0 and s.checkpoint_seconds == 0.0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.batch_size=0", "trainer.batch_size=0: expected an integer >= 1"),
        ("trainer.epochs=2.5", "trainer.epochs=2.5: expected an integer >= 1"),
        ("trainer.max_minutes=soon", "trainer.max_minutes=soon: expected a number > 0 or null"),
        ("trainer.compile=yes", "trainer.compile=yes: expected true or false"),
        ("trainer.channels_last=1", "trainer.channels_last=1: expected true or false"),
        ("trainer.samples=-1", "trainer.samples=-1: expected an integer >= 0 or null"),
        ("trainer.samples=1.5", "trainer.samples=1.5: expected an integer >= 0 or null"),
        ("trainer.device=0", "trainer.device=0: expected a string (auto, cpu, cuda or cuda:N)"),
        ("trainer.init_from=[a]", "trainer.init_from=['a']: expected a checkpoint path or null"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_key(override: str, message: str):
    with pytest.raises(SegcliError) as err:
        TrainerSettings.from_config(trainer_group(override))
    assert str(err.value) == message


def test_a_missing_key_and_a_config_saved_before_a_key_existed():
    group = trainer_group()
    del group["val_every"]
    with pytest.raises(SegcliError, match=r"^trainer.val_every: missing from the config"):
        TrainerSettings.from_config(group)
    old = {k: v for k, v in trainer_group().items() if k not in BEFORE_THE_KEY}
    s = TrainerSettings.from_config(old)  # as an older segcli saved it in last.pt
    assert (s.samples, s.checkpoint_minutes, s.init_from) == (0, None, None)
    assert s.skip_if_done and not s.deterministic
    assert TrainerSettings.from_config({**old, "samples": None}).samples == 0
