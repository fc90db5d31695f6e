"""The ``trainer`` config group as typed settings: ``TrainerSettings.from_config(cfg["trainer"])``
reads and checks the group once, and training code reads the fields, never the raw dict.

The defaults are conf/trainer/default.yaml's, and only there: a composed config has every key of
it. The one exception is a config that an older segcli saved in a run's ``last.pt`` (``segcli
train --resume`` continues with the run's own config): it lacks the keys added since, and
``BEFORE_THE_KEY`` says what such a run did without them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from segcli.config import check_config
from segcli.errors import SegcliError

#: keys added to conf/trainer/default.yaml after its first version, and what a run whose saved
#: config predates them did (not defaults: a composed config always has the YAML's values)
BEFORE_THE_KEY: dict[str, Any] = {
    "checkpoint_minutes": None,  # last.pt at the end of each epoch only
    "deterministic": False,
    "skip_if_done": True,
    "samples": 0,  # no samples/best.png
    "init_from": None,
}

_FLAGS = ("channels_last", "compile", "deterministic", "skip_if_done")
_INTEGERS = ("epochs", "batch_size", "eval_batch_size", "num_workers", "val_every")


@dataclass(frozen=True)
class TrainerSettings:
    """The ``trainer`` group, checked (see conf/trainer/default.yaml for what each key does).

    Attributes:
        epochs: epochs to train (>= 1).
        max_minutes: the wall-clock budget in minutes (> 0), or None for none.
        batch_size, eval_batch_size: images per training / validation batch (>= 1).
        num_workers: data-loader worker processes (>= 0; 0: load in the main process).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` (as ``runtime.resolve_device`` reads it).
        amp: the autocast setting as given (``auto``, ``bf16``, ``fp16``, ``false``); its value is
            checked where it is resolved (``runtime.resolve_amp``, which needs the device).
        channels_last, compile, deterministic, skip_if_done: the flags of the same names.
        val_every: validate every N epochs (>= 1; the last epoch always validates).
        grad_clip: the max gradient norm (> 0), or None for no clipping.
        checkpoint_minutes: minutes between in-epoch ``last.pt`` writes (> 0), or None (epoch
            ends only).
        samples: val images in ``samples/best.png`` (>= 0; 0: none; null in the YAML reads 0).
        init_from: a segcli checkpoint path whose weights the model starts from, or None.
    """

    epochs: int
    max_minutes: float | None
    batch_size: int
    eval_batch_size: int
    num_workers: int
    device: str
    amp: str | bool | None
    channels_last: bool
    compile: bool
    val_every: int
    grad_clip: float | None
    checkpoint_minutes: float | None
    deterministic: bool
    skip_if_done: bool
    samples: int
    init_from: str | None

    @classmethod
    def from_config(cls, group: Mapping) -> TrainerSettings:
        """The settings of the resolved ``trainer`` group ``group`` (plain dict or DictConfig);
        keys it does not know (``seed``: ``config.run_seed``'s) are left alone.

        Raises:
            SegcliError: one line naming the first bad key ``trainer.X`` and what was expected:
                a key missing (other than those of ``BEFORE_THE_KEY``), a number of the wrong
                type or out of range (``config.check_config``'s messages), a flag that is not
                true/false, a device that is not a string, an ``init_from`` that is not a path
                (a bad ``amp`` is refused by ``runtime.resolve_amp``).
        """
        names = [f.name for f in fields(cls)]
        missing = [k for k in names if k not in group and k not in BEFORE_THE_KEY]
        if missing:
            raise SegcliError(
                f"trainer.{missing[0]}: missing from the config; expected a value "
                "(conf/trainer/default.yaml has its default)"
            )
        values = {k: group[k] if k in group else BEFORE_THE_KEY[k] for k in names}
        check_config({"trainer": values})  # the numbers, with the messages of every config check
        _check_kinds(values)
        return cls(
            **{
                **values,
                **{k: int(values[k]) for k in _INTEGERS},
                "samples": int(values["samples"] or 0),
                "init_from": None if values["init_from"] is None else str(values["init_from"]),
            }
        )

    @property
    def checkpoint_seconds(self) -> float:
        """Seconds between in-epoch ``last.pt`` writes; 0.0 for none."""
        return float(self.checkpoint_minutes or 0) * 60

    @property
    def max_seconds(self) -> float | None:
        """The wall-clock budget in seconds, or None for none."""
        return float(self.max_minutes) * 60 if self.max_minutes else None


def _check_kinds(values: Mapping) -> None:
    """What ``check_config`` does not check: the flags, ``samples``, ``device`` and ``init_from``
    (``amp`` is ``runtime.resolve_amp``'s).

    Raises:
        SegcliError: the first bad value, named ``trainer.X=VALUE`` with what was expected."""
    for key in _FLAGS:
        if not isinstance(values[key], bool):
            raise SegcliError(f"trainer.{key}={values[key]}: expected true or false")
    samples = values["samples"]
    if samples is not None and (
        isinstance(samples, bool)
        or not isinstance(samples, (int, float))
        or samples < 0
        or not float(samples).is_integer()
    ):
        raise SegcliError(f"trainer.samples={samples}: expected an integer >= 0 or null")
    if not isinstance(values["device"], str):
        raise SegcliError(
            f"trainer.device={values['device']}: expected a string (auto, cpu, cuda or cuda:N)"
        )
    if not isinstance(values["init_from"], (str, type(None))):
        raise SegcliError(
            f"trainer.init_from={values['init_from']}: expected a checkpoint path or null"
        )
