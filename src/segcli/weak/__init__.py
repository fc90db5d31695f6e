"""weak: training from boxes, points and scribbles instead of full masks (``dataset.labels``,
``dataset.simulate`` and the ``weak`` config group; docs/weak-labels.md). What every reader and
simulator returns (``labels``: ``ImageLabels``); the annotation files people make cheaply
(``readers``, their formats' parsing in ``label_files``: COCO bbox JSON, VOC XML, YOLO txt, point
CSV/JSON, labelme points and lines, sparse scribble PNGs); the same labels derived from full masks
for annotation-budget studies (``simulate``); boxes -> training masks (``fill``: Box, Box^i,
GrabCut, dense CRF); the rounds' refinement of a prediction inside the boxes (``refine``); the
``weak`` group (``settings``); one round's training masks in the run folder and their scores
(``pseudo``), the previous round's model on the training images (``predict``). The rounds
themselves are training's (training/weak_rounds.py).

May import: the top level, data, inference (its dense CRF and checkpoint loading), and what
those import (models, metrics, runs).
Never imports: training, reports, cli (checked by the import contracts in pyproject.toml,
``lint-imports``).
"""
