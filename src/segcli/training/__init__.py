"""training: ``segcli train`` and ``segcli bench``. ``engine`` (the training loop: ``TrainStep``,
``train_one_epoch``, ``Budget``; the evaluation loop is ``inference.loop``'s), ``optim`` (optimizer and scheduler groups),
``trainer`` (``Trainer``: a run's phases), ``resume``, ``interrupts``, ``distributed`` (torchrun),
``loggers``, ``jobs`` (start / skip / resume of a train job), ``sweeps`` (Hydra multiruns) and
``bench``.

May import: the top level, data, models, losses, metrics, runs, inference. Never imports: reports,
cli (import contracts in pyproject.toml).
"""
