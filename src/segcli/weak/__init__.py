"""Weak supervision: training from boxes, points and scribbles instead of full masks
(``dataset.labels``, ``dataset.simulate`` and the ``weak`` config group; docs/weak-labels.md).

- weak/labels.py: what every reader and simulator returns (``ImageLabels``).
- weak/readers.py: the annotation files people make cheaply (COCO bbox JSON, VOC XML, YOLO txt,
  point JSON/CSV, labelme points and lines, sparse scribble PNGs).
- weak/simulate.py: the same labels derived from full masks, for annotation-budget studies.
- weak/fill.py: boxes -> training masks (Box, Box^i, GrabCut, dense CRF) and the rounds' refinement
  of a prediction inside the boxes.
- weak/pseudo.py: one round's training masks written to the run folder, and their own scores.
"""
