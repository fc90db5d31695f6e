"""losses: the ``loss`` group.

- ``build``: ``LOSSES`` (one builder per ``conf/loss/*.yaml`` name), ``build_loss``,
  ``class_weights``, ``loss_mode`` (``loss.mode`` / ``loss.classes`` checks), ``WeightedSum``
  (``compound``) and the SMP and torch losses (ce, dice, focal, jaccard, lovasz, tversky).
- ``region``: the region losses written here, one class each on the base ``RegionLoss`` and the
  shared soft TP/FP/FN (``soft_counts``): ``FocalTversky``, ``LogCoshDice``,
  ``SensitivitySpecificity``, ``Combo``, ``ExpLog``.
- ``binary``: sigmoid losses: ``MultilabelTarget`` (multilabel mode with ignore_index), ``BCE``,
  ``WeightedBCE``, ``BalancedCE``.
- ``distance``: distance-map losses, one class each on the base ``DistanceLoss``: ``Boundary``,
  ``Hausdorff``, ``ShapeAware``, and their distance maps.

May import: the top level, and data's class pixel counts (``data.readers.ClassPixels``). Never
imports: models, metrics, runs, training, inference, reports, cli (import contracts in
pyproject.toml).
"""
