"""Config -> object, one idiom for every named choice: a ``Registry`` maps the name a config gives
to what serves it. Most registries map a group's choice (the ``name:`` key of a YAML file of
``conf/<group>/``, or ``arch:`` for models) to the function that builds it: ``LOSSES``
(losses/build.py), ``MODELS`` (models/build.py), ``OPTIMIZERS`` and ``SCHEDULES``
(training/optim.py), ``LOGGERS`` (training/loggers.py). Two map a key of the ``dataset`` group to a
description: ``KINDS`` (``dataset.kind`` -> how that kind builds and checks its splits,
data/datasets.py) and ``LAYOUTS`` (``dataset.layout`` -> a benchmark's or a folder's file layout,
data/layouts.py, which ``segcli data doctor`` reads too).

A builder registers itself where it is defined::

    @OPTIMIZERS.register("adamw")
    def adamw(cfg, params): ...

and ``OPTIMIZERS.build(cfg, params)`` calls the one ``cfg["name"]`` names; a description is added
with ``LAYOUTS.add(Layout(...), ["voc"])`` and found with ``LAYOUTS.get(name)``. Adding a loss,
optimizer, scheduler, logger, model, dataset kind or layout is then one YAML file or key plus one
registration; no list or if-chain elsewhere changes, and ``tests/test_config.py`` checks every YAML
file against its registry.

Written here rather than with Hydra's ``_target_`` + ``hydra.utils.instantiate`` because the
config keys users already write and checkpoints already store (``loss.name``, ``optimizer.name``,
``model.arch``) stay as they are, and builders need run-time arguments (class count, class pixel
statistics, parameters, run folder) that a YAML file cannot hold.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

from segcli.errors import SegcliError

T = TypeVar("T")


class Registry(Generic[T]):
    """Builders (or descriptions) of one named choice, by name (see the module docstring).

    Args:
        group: the config group (``loss``), used in error messages.
        key: the config key that names the choice (``name``; ``arch`` for models).
        fold_case: look names up case-insensitively (SMP's ``Unet`` == ``unet``).
    """

    def __init__(self, group: str, key: str = "name", fold_case: bool = False) -> None:
        self.group, self.key, self.fold_case = group, key, fold_case
        self._builders: dict[str, T] = {}
        self._display: dict[str, str] = {}

    def _norm(self, name: str) -> str:
        return name.lower() if self.fold_case else name

    def register(self, *names: str) -> Callable[[T], T]:
        """Decorator: register the function under each of ``names``.

        Raises:
            ValueError: a name is registered twice (a programming error, not user input).
        """

        def add(builder: T) -> T:
            self.add(builder, names)
            return builder

        return add

    def add(self, builder: T, names: Iterable[str]) -> None:
        """Register ``builder`` (a function, or a description) under each of ``names`` (the
        non-decorator form).

        Raises:
            ValueError: a name is registered twice.
        """
        for name in names:
            if self._norm(name) in self._builders:
                raise ValueError(f"{self.group}: {name!r} is registered twice")
            self._builders[self._norm(name)] = builder
            self._display[self._norm(name)] = name

    def names(self) -> list[str]:
        """The registered names, as registered, in registration order."""
        return list(self._display.values())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._norm(name) in self._builders

    def get(self, name: str, where: str | None = None) -> T:
        """The builder (or description) registered as ``name``.

        Raises:
            SegcliError: no such name; the message names ``where`` (default ``group.key``) and
                lists the registered names.
        """
        if name not in self:
            raise SegcliError(
                f"{where or f'{self.group}.{self.key}'}={name}: expected one of "
                f"{', '.join(self.names())}"
            )
        return self._builders[self._norm(name)]

    def build(self, cfg: Mapping, *args: Any, **kwargs: Any) -> Any:
        """``builder(cfg, *args, **kwargs)`` for the builder that ``cfg[key]`` names (registries of
        functions).

        Raises:
            SegcliError: as ``get``, and whatever the builder raises.
        """
        return self.get(str(cfg[self.key]))(cfg, *args, **kwargs)
