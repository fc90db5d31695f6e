"""Prediction: image files -> class-index masks and colour overlays, from a checkpoint alone.

Each image is segmented at its own resolution: padded (top-left anchored) to a multiple of 32
by the same eval pipeline as validation, then the logits are cropped back to H x W. With
``dataset.scale`` other than 1 the model runs on a resized copy and its logits are resized back
(``engine.forward_at_scale``), exactly as in validation.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import torch

from segcli.augment import build_transforms
from segcli.checkpoints import load_checkpoint, model_from_checkpoint
from segcli.data import IMAGE_EXTENSIONS, read_image
from segcli.engine import forward_at_scale
from segcli.errors import SegcliError
from segcli.runtime import StepContext, step_context


def expand_inputs(inputs: Iterable[str]) -> list[Path]:
    """Image files named by paths, folders (their images, not recursive) or glob patterns.

    Raises:
        SegcliError: an input matches nothing, or no image is found at all.
    """
    found: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not images:
                raise SegcliError(f"{path}: folder holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
            found += images
        elif path.is_file():
            found.append(path)
        else:
            matches = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).suffix.lower() in IMAGE_EXTENSIONS)
            if not matches:
                raise SegcliError(f"{item}: no such image file, folder or matching glob")
            found += matches
    if not found:
        raise SegcliError("no input images given")
    return found


class Predictor:
    """A trained model with its preprocessing, class names and colours.

    Use ``Predictor.from_checkpoint(path)``; ``predict(image)`` maps an ``(H, W, 3) uint8`` RGB
    image to an ``(H, W) uint8`` class-index mask.
    """

    def __init__(self, model: torch.nn.Module, transform, colors: list[list[int]], class_names: list[str],
                 ctx: StepContext) -> None:
        self.model, self.transform, self.ctx = model, transform, ctx
        self.colors = np.array(colors, dtype=np.uint8)
        self.class_names = class_names

    @classmethod
    def from_checkpoint(cls, path: Path, device: str = "auto", amp: str | None = None) -> Predictor:
        """Load a checkpoint written by `segcli train` (needs nothing else from the run). ``amp``:
        autocast setting (see ``runtime.resolve_amp``), default the run's ``trainer.amp``; the
        run's ``channels_last`` applies too.

        Raises:
            SegcliError: see ``checkpoints.load_checkpoint`` and ``checkpoints.model_from_checkpoint``;
                an unknown ``amp``.
        """
        ckpt = load_checkpoint(path)
        classes, norm, cfg = ckpt["classes"], ckpt["normalization"], ckpt["config"]
        trainer = {**cfg["trainer"], "device": device, **({"amp": amp} if amp is not None else {})}
        ctx = step_context(trainer, float(cfg["dataset"].get("scale", 1.0)))
        transform = build_transforms(ckpt["config"]["augmentation"].get("eval"), int(classes["ignore_index"]),
                                     mean=norm["mean"], std=norm["std"])
        model = model_from_checkpoint(ckpt, ctx.device)
        if ctx.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return cls(model, transform, classes["colors"], classes["class_names"], ctx)

    @torch.inference_mode()
    def predict(self, image: np.ndarray) -> np.ndarray:
        """``(H, W, 3) uint8`` RGB -> ``(H, W) uint8`` class indices (argmax of the logits)."""
        h, w = image.shape[:2]
        x = self.ctx.images({"image": self.transform(image=image)["image"].unsqueeze(0)})
        with self.ctx.autocast():
            logits = forward_at_scale(self.model, x, self.ctx.eval_scale)[0, :, :h, :w]
        return logits.float().argmax(0).to(torch.uint8).cpu().numpy()

    def overlay(self, image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
        """The image with each pixel's class colour blended in: ``(H, W, 3) uint8`` RGB."""
        colored = self.colors[np.minimum(mask, len(self.colors) - 1)]
        return (image * (1 - alpha) + colored * alpha).astype(np.uint8)


def predict_files(predictor: Predictor, files: list[Path], out_dir: Path, on_image=None) -> list[Path]:
    """Write ``out_dir/NAME.png`` (uint8 class indices, the input's size) and ``NAME_overlay.jpg``
    for each file. Returns the mask paths.

    Raises:
        SegcliError: a file cannot be read as an image.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in files:
        image = read_image(path)
        mask = predictor.predict(image)
        mask_path = out_dir / f"{path.stem}.png"
        cv2.imwrite(str(mask_path), mask)
        cv2.imwrite(str(out_dir / f"{path.stem}_overlay.jpg"),
                    cv2.cvtColor(predictor.overlay(image, mask), cv2.COLOR_RGB2BGR))
        written.append(mask_path)
        if on_image:
            on_image(path, mask_path)
    return written
