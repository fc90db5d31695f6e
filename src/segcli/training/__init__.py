"""training: ``segcli train`` and ``segcli bench``. ``engine`` (the training loop: ``TrainStep``,
``train_one_epoch``, ``Budget``; the evaluation loop is ``inference.loop``'s), ``optim`` (optimizer
and scheduler groups), ``phases`` (``RunPhases``: what every run in a folder does), ``trainer``
(``Trainer``: a network's training run; the semantic ``build_run``), ``instance_trainer``
(``InstanceTrainer``: task=instance's run), ``tasks`` (``RUNS``: each task's run, ``build_run``),
``classical_fit`` (``ClassicalFit``: a classical baseline's one fit), ``settings``
(``TrainerSettings``: the ``trainer`` group, checked), ``class_pixels`` (the run's class
statistics, kept), ``resume``, ``interrupts``, ``distributed`` (torchrun), ``loggers``, ``jobs``
(start / skip / resume of a train job), ``sweeps`` (Hydra multiruns) and ``bench``.

May import: the top level, data, models, losses, metrics, runs, inference. Never imports: reports,
cli (import contracts in pyproject.toml).
"""
