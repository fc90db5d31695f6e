"""A checkpoint's labels on a training image, for the rounds of weak-label training
(weak/pseudo.py): the checkpoint's own eval pipeline and whole-image inference
(``inference.loaded.LoadedModel``), as ``segcli predict`` runs it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from segcli.inference.loaded import LoadedModel


class TrainingPredictor:
    """``TrainingPredictor(checkpoint)(image) -> (H, W) int64`` labels.

    ``image``: ``(H, W, 3) uint8`` RGB; the prediction is the argmax of the class scores at the
    image's resolution (``dataset.scale`` applied as in eval). Runs on the checkpoint's device
    (``trainer.device``: a GPU when there is one).

    Raises:
        SegcliError: the checkpoint is missing or unreadable (``LoadedModel.load``).
    """

    def __init__(self, checkpoint: Path) -> None:
        self.loaded = LoadedModel.load(checkpoint)
        self.transform = self.loaded.transform()
        self.infer = self.loaded.inference()

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> np.ndarray:
        loaded, ctx = self.loaded, self.loaded.ctx
        h, w = image.shape[:2]
        x = self.transform(image=image)["image"][None].to(ctx.device)
        if ctx.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with ctx.autocast():
            scores = self.infer(loaded.model, x, ctx.eval_scale)
        return scores.argmax(1)[0, :h, :w].cpu().numpy().astype(np.int64)
