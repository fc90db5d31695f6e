"""segcli's tasks and the rule that keeps a run's choices within its task.

A task is what a model predicts: ``semantic`` (a class per pixel, the default) or ``instance`` (a
mask, class and score per object: Mask R-CNN). The ``task`` config group (conf/task/NAME.yaml)
selects it and picks that task's defaults; each layer has one implementation per task, registered
by name (training/tasks.py: the run; inference/tasks.py: eval and predict; data and models: their
readers and builders). A third task is one more YAML and one more entry in each.

Which task a choice belongs to is written in its own YAML, so the config groups show it: a
``task:`` key in a ``model``, ``loss`` or ``dataset`` file names its task (or a list of tasks);
without it, the choice is semantic. ``check_task`` refuses a choice of another task, and the keys a
task lists in ``task.unused_keys`` when they are set, each with a one-line error.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

from segcli.errors import SegcliError

DEFAULT_TASK = "semantic"
#: the groups whose choices belong to a task
TASK_GROUPS = ("model", "loss", "dataset")


def task_name(cfg: Mapping) -> str:
    """The task of a resolved root config (``task.name``; semantic when absent, as in runs made
    before tasks existed)."""
    task = cfg.get("task") or {}
    return str(task.get("name", DEFAULT_TASK)) if isinstance(task, Mapping) else str(task)


def tasks_of(group_cfg: Mapping) -> tuple[str, ...]:
    """The tasks a group choice serves: its ``task`` key (a name or a list), else semantic."""
    value = group_cfg.get("task", DEFAULT_TASK) if isinstance(group_cfg, Mapping) else None
    if value is None:
        return (DEFAULT_TASK,)
    return tuple(str(v) for v in value) if isinstance(value, (list, tuple)) else (str(value),)


@functools.cache
def _options(config_root: str, group: str) -> dict[str, tuple[str, ...]]:
    """``{option: its tasks}`` of the YAML files of one group under ``config_root``."""
    import yaml

    out = {}
    for path in sorted((Path(config_root) / group).glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            continue
        out[path.stem] = tasks_of(data if isinstance(data, Mapping) else {})
    return out


def options_for(group: str, task: str) -> list[str]:
    """The packaged options of ``group`` that serve ``task`` (sorted)."""
    from segcli.config import config_dir

    return sorted(n for n, t in _options(str(config_dir()), group).items() if task in t)


def _choice(group: str, group_cfg: Mapping) -> str:
    """How a user names the choice in errors: ``model=maskrcnn_resnet18_fpn``, ``loss=dice``,
    ``dataset.kind=folder``."""
    key = {"model": "arch", "loss": "name", "dataset": "kind"}[group]
    value = group_cfg.get(key)
    return f"dataset.kind={value}" if group == "dataset" else f"{group}={str(value).lower()}"


def check_task(cfg: Mapping) -> None:
    """Refuse a config whose model, loss or dataset belongs to another task than ``task.name``, or
    that sets a key of the task's ``unused_keys`` (semantic masks' options in an instance run).

    Raises:
        SegcliError: one line naming the choice or key, its task and what the task takes.
    """
    task = task_name(cfg)
    for group in TASK_GROUPS:
        group_cfg = cfg.get(group)
        if not isinstance(group_cfg, Mapping) or task in tasks_of(group_cfg):
            continue
        kind = "/".join(tasks_of(group_cfg))
        takes = ", ".join(options_for(group, task)) or "none"
        article = "an" if kind[:1] in "aeiou" else "a"
        raise SegcliError(
            f"{_choice(group, group_cfg)} is {article} {kind} {group}; task={task} takes {group}="
            f"{takes}" + (" (or add task=" + kind + ")" if task == DEFAULT_TASK else "")
        )
    for key in (cfg.get("task") or {}).get("unused_keys") or []:
        section, _, name = str(key).partition(".")
        value = (cfg.get(section) or {}).get(name)
        if value is not None and value is not False:
            raise SegcliError(
                f"{key}={value}: an option of semantic masks; task={task} expects it null"
            )
