"""metrics: scores from predictions. ``confusion`` (confusion matrices, IoU, Dice, accuracy),
``surface`` (boundary F1, HD95), ``bootstrap`` (paired bootstrap and ranking over images) and
``coco`` (COCO mask and box AP with pycocotools, instances pasted into semantic masks).

May import: the top level only. Never imports: data, models, losses, runs, training, inference,
reports, cli (import contracts in pyproject.toml).
"""
