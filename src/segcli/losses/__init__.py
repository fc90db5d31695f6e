"""losses: the ``loss`` group. ``build`` (``LOSSES``, ``build_loss``, class weights, the region
losses: Dice, Tversky, focal, Lovasz, ... and their weighted sums) and ``distance`` (boundary,
Hausdorff and shape-aware losses on distance maps).

May import: the top level, and data's class pixel counts (``data.readers.ClassPixels``). Never
imports: models, metrics, runs, training, inference, reports, cli (import contracts in pyproject.toml).
"""
