"""The run of each task (``task.name``, src/segcli/tasks.py): ``RUNS`` maps a task to the class
of its run, ``build_run`` picks it. semantic: ``trainer.build_run`` (a CNN ``Trainer``, or a
classical baseline's ``ClassicalFit``); instance: ``instance_trainer.InstanceTrainer``.
"""

from __future__ import annotations

from pathlib import Path

from segcli.registry import Registry
from segcli.tasks import task_name
from segcli.training import distributed, instance_trainer, trainer
from segcli.training.phases import RunPhases

RUNS = Registry("task")
RUNS.add(trainer.build_run, ["semantic"])
RUNS.add(instance_trainer.InstanceTrainer, ["instance"])


def build_run(
    cfg: dict,
    run_path: Path,
    ddp: distributed.Distributed | None = None,
    resume: bool = False,
    changes: dict | None = None,
) -> RunPhases:
    """The run of ``cfg``'s task in ``run_path`` (arguments as ``trainer.Trainer``'s); ``.fit()``
    runs it.

    Raises:
        SegcliError: an unknown task (naming the tasks), or what the run raises.
    """
    run = RUNS.get(task_name(cfg), "task.name")
    return run(cfg, run_path, ddp, resume, changes)
