"""registry.Registry: names to builders, case folding, the unknown-name message, double
registration."""

from __future__ import annotations

import pytest

from segcli.errors import SegcliError
from segcli.registry import Registry


def test_register_and_build_call_the_named_builder_with_the_config_and_arguments():
    losses = Registry("loss")

    @losses.register("dice", "soft_dice")
    def dice(cfg, classes, weights=None):
        return ("dice", cfg["smooth"], classes, weights)

    @losses.register("ce")
    def ce(cfg, classes, weights=None):
        return ("ce", classes)

    assert dice.__name__ == "dice"  # the decorator gives the function back
    assert losses.names() == ["dice", "soft_dice", "ce"]  # as registered, in order
    assert losses.build({"name": "soft_dice", "smooth": 1.5}, 4, weights=[1, 2]) == (
        "dice",
        1.5,
        4,
        [1, 2],
    )
    assert losses.build({"name": "ce"}, 3) == ("ce", 3)
    assert losses.get("dice") is dice and "ce" in losses and "CE" not in losses and 3 not in losses


def test_unknown_names_are_one_line_errors_that_list_the_choices():
    losses = Registry("loss")
    losses.add(lambda cfg: None, ["dice", "ce"])
    with pytest.raises(SegcliError) as info:
        losses.build({"name": "focal"})
    assert str(info.value) == "loss.name=focal: expected one of dice, ce"
    with pytest.raises(SegcliError, match=r"^model\.arch=Dice: expected one of dice, ce$"):
        losses.get("Dice", "model.arch")  # no case folding: another name
    models = Registry("model", key="arch")
    models.add(lambda cfg: None, ["Unet"])
    with pytest.raises(SegcliError, match=r"^model\.arch=FPN: expected one of Unet$"):
        models.build({"arch": "FPN", "name": "Unet"})  # the registry's key, not "name"


def test_case_folding_finds_any_spelling_and_shows_names_as_registered():
    models = Registry("model", key="arch", fold_case=True)

    @models.register("Unet", "DeepLabV3Plus")
    def smp(cfg):
        return cfg["arch"]

    assert (
        models.build({"arch": "unet"}) == "unet"
        and models.build({"arch": "DEEPLABV3PLUS"}) == "DEEPLABV3PLUS"
    )
    assert "uNeT" in models and models.names() == ["Unet", "DeepLabV3Plus"]
    with pytest.raises(ValueError, match="model: 'UNET' is registered twice"):
        models.add(smp, ["UNET"])  # the same name in another case
    plain = Registry("loss")
    plain.add(smp, ["dice"])
    with pytest.raises(ValueError, match="loss: 'dice' is registered twice"):
        plain.add(smp, ["dice"])
    plain.add(smp, ["Dice"])  # without folding: another name
    assert plain.names() == ["dice", "Dice"]
