"""The scores of a round's training masks (weak/pseudo.py's pseudo.json): how many pixels they
label and, for labels simulated from true masks, how well they agree with them (a confusion matrix
over the pixels both label; IoU as metrics/confusion.py defines it, in NumPy because the masks are
NumPy arrays written from several threads).
"""

from __future__ import annotations

import threading

import numpy as np


class MaskTally:
    """Labelled pixels of the training masks and, with true masks, their confusion matrix (rows:
    truth, columns: training mask) over the pixels both label. ``add`` may be called from several
    threads; ``scores`` gives pseudo.json's figures (shares 0..1, IoU per class)."""

    def __init__(self, num_classes: int, ignore_index: int, scored: bool) -> None:
        self.c, self.ignore, self.scored = num_classes, ignore_index, scored
        self.matrix = np.zeros((num_classes, num_classes), np.int64)
        self.labelled = self.total = self.truth_labelled = self.covered = 0
        self.lock = threading.Lock()

    def add(self, mask: np.ndarray, truth: np.ndarray | None) -> None:
        with self.lock:
            self._add(mask, truth)

    def _add(self, mask: np.ndarray, truth: np.ndarray | None) -> None:
        c = self.c
        labelled = (mask >= 0) & (mask < c)
        self.labelled += int(labelled.sum())
        self.total += mask.size
        if truth is None:
            return
        known = (truth >= 0) & (truth < c)
        both = labelled & known
        counts = np.bincount(truth[both] * c + mask[both], minlength=c * c).reshape(c, c)
        self.matrix += counts
        self.truth_labelled += int(known.sum())
        self.covered += int(both.sum())

    def scores(self, class_names) -> dict:
        out = {"labelled_share": self.labelled / max(self.total, 1)}
        if not self.scored:
            return out
        m = self.matrix.astype(np.float64)
        union = m.sum(0) + m.sum(1) - np.diag(m)
        iou = np.where(union > 0, np.diag(m) / np.maximum(union, 1), np.nan)
        out["miou_vs_truth"] = float(np.nanmean(iou)) if np.isfinite(iou).any() else None
        out["pixel_accuracy_vs_truth"] = float(np.diag(m).sum() / max(m.sum(), 1))
        out["truth_covered_share"] = self.covered / max(self.truth_labelled, 1)
        out["iou_vs_truth"] = {
            n: (None if np.isnan(v) else float(v)) for n, v in zip(class_names, iou)
        }
        return out
