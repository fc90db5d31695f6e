"""The refinement between two rounds of weak-label training (``weak.rounds``): a model's
prediction on a training image kept inside its boxes (Papandreou et al. 2015, the EM idea; Khoreva
et al. 2017, recursive training), with weak/fill.py's painting order and pixel rule.
"""

from __future__ import annotations

import numpy as np

from segcli.errors import SegcliError
from segcli.weak.fill import blank, box_ranges, painting_order


def refine_with_prediction(
    pred: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    fallback: np.ndarray,
    outside: int | None,
    ignore_index: int,
    min_share: float = 0.1,
) -> np.ndarray:
    """One EM round's refinement of the training masks (Papandreou et al. 2015's box EM;
    Khoreva et al. 2017's recursive training).

    Each box (largest first) claims the pixels inside it that ``pred`` gives its class; a box
    whose claimed pixels are fewer than ``min_share`` of its area is reset to its ``fallback``
    pixels (Khoreva et al.'s reset of a shrunken object to its box's filling); outside every box:
    ``outside`` (or ``ignore_index``), whatever ``pred`` says.

    Args:
        pred: ``(H, W) int64`` the model's labels on a training image.
        boxes: ``(K, 4)`` pixel edges; classes ``(K,)``.
        fallback: ``(H, W) int64`` the round-1 filling, e.g. ``fill_boxes`` with ``inner_share``.

    Returns:
        ``(H, W) int64`` class indices or ``ignore_index``.

    Raises:
        SegcliError: ``pred`` and ``fallback`` of different shapes.
    """
    if pred.shape != fallback.shape or pred.ndim != 2:
        raise SegcliError(
            f"weak.rounds: expected a prediction and a fallback mask of one (H, W) shape, got "
            f"{pred.shape} and {fallback.shape}"
        )
    out = blank(pred.shape, outside, ignore_index)
    ranges = box_ranges(boxes, pred.shape)
    classes = np.asarray(classes, np.int64).reshape(-1)
    for k in painting_order(ranges):
        r0, r1, c0, c1 = ranges[k]
        claim = pred[r0:r1, c0:c1] == classes[k]
        if claim.size == 0:
            continue
        if claim.sum() < min_share * claim.size:
            out[r0:r1, c0:c1] = fallback[r0:r1, c0:c1]
        else:
            out[r0:r1, c0:c1][claim] = classes[k]
    return out
