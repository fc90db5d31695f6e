"""metrics: scores from predictions. ``confusion`` (confusion matrices, IoU, Dice, accuracy),
``surface`` (boundary F1, HD95) and ``bootstrap`` (paired bootstrap and ranking over images).

May import: the top level only. Never imports: data, models, losses, runs, training, inference,
reports, cli (import contracts in pyproject.toml).
"""
