"""A run's class statistics, kept in its folder: the training split's pixel counts per class and
the class weights both balancing schemes give (``class_pixels.json``), counted once when the run
starts and read back when it resumes, so a resumed run weights its loss as it began even if the
data changed meanwhile. Used by the CNN trainer and the classical fit alike.
"""

from __future__ import annotations

import numpy as np

from segcli.data.readers import ClassPixels
from segcli.losses.build import class_weights
from segcli.runs.run_dir import RunDir


def cached_class_pixels(
    run: RunDir, found: ClassPixels | None, num_classes: int, resume: bool = False
) -> ClassPixels | None:
    """The training split's class statistics of a run, computed once: ``class_pixels.json`` in the
    run dir keeps the pixel counts (int64 per class) and the class weights both balancing schemes
    give, so a resumed run weights its loss the same even if the data changed. ``found``: this
    start's counts (None for data without counts); ``resume``: read the saved file if there is one.
    """
    saved = run.class_pixels() if resume else None
    if saved:
        return ClassPixels(
            np.asarray(saved["pixels"], dtype=np.int64),
            np.asarray(saved["present"], dtype=np.int64),
        )
    if found is not None:
        run.write_class_pixels(
            {
                "pixels": np.asarray(found.pixels).tolist(),
                "present": np.asarray(found.present).tolist(),
                "class_weights": {
                    s: class_weights(s, num_classes, found)
                    for s in ("median_frequency", "inverse_frequency")
                },
            }
        )
    return found
