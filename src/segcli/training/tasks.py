"""The run of each task (``task.name``, src/segcli/tasks.py): ``RUNS`` maps a task to the class
of its run, ``build_run`` picks it. semantic: ``trainer.build_run`` (a CNN ``Trainer``, or a
classical baseline's ``ClassicalFit``), or with weak labels (``dataset.labels``/``simulate``)
``weak_rounds.WeakRounds``; instance: ``instance_trainer.InstanceTrainer``.
"""

from __future__ import annotations

from pathlib import Path

from segcli.data.settings import DatasetSettings
from segcli.errors import SegcliError
from segcli.models.build import is_classical
from segcli.registry import Registry
from segcli.tasks import task_name
from segcli.training import distributed, instance_trainer, trainer
from segcli.training.phases import RunPhases


def semantic_run(
    cfg: dict,
    run_path: Path,
    ddp: distributed.Distributed | None = None,
    resume: bool = False,
    changes: dict | None = None,
):
    """``weak_rounds.WeakRounds`` for weak training labels, else ``trainer.build_run``'s run.

    Raises:
        SegcliError: weak labels with a classical baseline, weak-label keys set for full masks
            (``weak.settings.check_full_masks``), or what the run raises.
    """
    dataset = DatasetSettings.from_config(cfg["dataset"])
    if dataset.labels == "masks" and not dataset.simulate:
        from segcli.weak.settings import check_full_masks

        check_full_masks(dataset, cfg.get("weak"))
        return trainer.build_run(cfg, run_path, ddp, resume, changes)
    if is_classical(cfg["model"]):
        raise SegcliError(
            f"model.arch={cfg['model']['arch']}: weak labels train networks only; expected a "
            "network model (e.g. model=unet)"
        )
    from segcli.training.weak_rounds import WeakRounds

    return WeakRounds(cfg, run_path, ddp, resume, changes)


RUNS = Registry("task")
RUNS.add(semantic_run, ["semantic"])
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
