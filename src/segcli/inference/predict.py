"""Prediction: image files -> class-index masks and colour overlays, from a checkpoint alone.

Each image is segmented at its own resolution: padded (top-left anchored) to a multiple of 32
by the same eval pipeline as validation, then the logits are cropped back to H x W. With
``dataset.scale`` other than 1 the model runs on a resized copy and its logits are resized back
(``inference.loop.forward_at_scale``), exactly as in validation. ``inference`` (inference/modes.py)
chooses how: one pass (default), sliding windows, test-time augmentation, dense CRF. A Predictor
runs a torch checkpoint (inference/loaded.py) or an ONNX bundle (inference/bundle.py) through the
same code. A GeoTIFF scene goes block by block through inference/raster.py instead, into a GeoTIFF
mask.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import torch

from segcli.data.images import IMAGE_EXTENSIONS, read_image
from segcli.errors import SegcliError
from segcli.inference.loaded import LoadedModel
from segcli.inference.modes import Inference, InferenceSettings
from segcli.runtime import StepContext


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
                raise SegcliError(
                    f"{path}: folder holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})"
                )
            found += images
        elif path.is_file():
            found.append(path)
        else:
            matches = sorted(
                Path(p) for p in glob.glob(str(path)) if Path(p).suffix.lower() in IMAGE_EXTENSIONS
            )
            if not matches:
                raise SegcliError(f"{item}: no such image file, folder or matching glob")
            found += matches
    if not found:
        raise SegcliError("no input images given")
    return found


class Predictor:
    """A trained model with its preprocessing, class names and colours.

    Use ``Predictor.from_checkpoint(path)`` or ``bundle.predictor_from_bundle(dir)``;
    ``predict(image)`` maps an ``(H, W, 3) uint8`` RGB image (``(H, W, C) float32`` for a
    stored-channels run: ``read(path)`` reads either) to an ``(H, W) uint8`` class-index mask.
    ``model``: a torch module or any callable ``(N, C_in, H, W) float32 -> (N, C, H, W)`` logits.
    ``display(image) -> (H, W, 3) uint8``: the picture the overlay is drawn on.
    """

    def __init__(
        self,
        model,
        transform,
        colors: list[list[int]],
        class_names: list[str],
        ctx: StepContext,
        inference: Inference | None = None,
        normalization: dict | None = None,
        read=None,
    ) -> None:
        self.model, self.transform, self.ctx = model, transform, ctx
        self.normalization = normalization or {}
        self.read = read or read_image
        self.colors = np.array(colors, dtype=np.uint8)
        self.class_names = class_names
        self.inference = inference or Inference(InferenceSettings())

    @classmethod
    def from_checkpoint(
        cls,
        path: Path,
        device: str = "auto",
        amp: str | None = None,
        inference: InferenceSettings | None = None,
    ) -> Predictor:
        """Load a checkpoint written by `segcli train` (needs nothing else from the run) through
        ``inference.loaded.LoadedModel``: its model, eval pipeline, statistics and classes.
        ``amp``: autocast setting (see ``runtime.resolve_amp``), default the run's
        ``trainer.amp``; the run's ``channels_last`` applies too.

        Raises:
            SegcliError: see ``LoadedModel.load`` (a missing, unreadable or foreign file; weights
                that do not fit); an unknown ``amp``; a CRF without pydensecrf2.
        """
        loaded = LoadedModel.load(path, device, amp)
        pre = loaded.preprocessing
        return cls(
            loaded.model,
            loaded.transform(),
            loaded.classes.colors,
            loaded.classes.class_names,
            loaded.ctx,
            loaded.inference(inference),
            pre.normalization,
            pre.reader(),
        )

    def display(self, image: np.ndarray) -> np.ndarray:
        """``(H, W, 3) uint8`` RGB of an image as ``read`` gives it (``preprocessing.stored_rgb``
        for stored channels)."""
        from segcli.preprocessing import stored_rgb

        return stored_rgb(image, self.normalization)

    @torch.inference_mode()
    def scores(self, image: np.ndarray) -> torch.Tensor:
        """``(H, W, 3) uint8`` RGB -> ``(C, H, W) float32`` class scores: logits for the plain
        ``whole`` inference, else probabilities (see ``inference.modes.Inference``)."""
        h, w = image.shape[:2]
        x = self.ctx.images({"image": self.transform(image=image)["image"].unsqueeze(0)})
        with self.ctx.autocast():
            scores = self.inference(self.model, x, self.ctx.eval_scale)
        return scores[0, :, :h, :w].float()

    def predict(self, image: np.ndarray) -> np.ndarray:
        """``(H, W, 3) uint8`` RGB -> ``(H, W) uint8`` class indices (argmax of the scores)."""
        return self.scores(image).argmax(0).to(torch.uint8).cpu().numpy()

    def predict_with_probabilities(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(H, W, 3) uint8`` RGB -> (``(H, W) uint8`` mask, ``(C, H, W) float32`` probabilities)
        of one forward pass: the mask is the argmax of the full-precision scores, the one
        ``predict`` gives, whatever precision the probabilities are stored at later."""
        scores = self.scores(image)
        mask = scores.argmax(0).to(torch.uint8).cpu().numpy()
        return mask, (scores.softmax(0) if self.inference.settings.plain else scores).cpu().numpy()

    def overlay(self, image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
        """The image with each pixel's class colour blended in: ``(H, W, 3) uint8`` RGB (rounded;
        computed in uint8, so a 6000x4000 image needs no float copies)."""
        colored = self.colors[np.minimum(mask, len(self.colors) - 1)]
        return cv2.addWeighted(image, 1 - alpha, colored, alpha, 0.0)


def predict_files(
    predictor: Predictor, files: list[Path], out_dir: Path, on_image=None, save_probs: bool = False
) -> list[Path]:
    """Write ``out_dir/NAME.png`` (uint8 class indices, the input's size) and ``NAME_overlay.jpg``
    for each file; with ``save_probs`` also ``NAME_probs.npz`` (key ``probs``: ``(C, H, W)``
    float16 probabilities, compressed; key ``class_names``), for fusing models later. Returns the
    mask paths.

    The mask is the argmax of the full-precision scores with or without ``save_probs`` (the same
    file either way); the argmax of the stored float16 probabilities agrees with it wherever the
    two highest probabilities differ by more than float16's rounding (at most 2**-11 below 1).

    Raises:
        SegcliError: a file cannot be read as an image.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in files:
        image = predictor.read(path)
        if save_probs:
            mask, probs = predictor.predict_with_probabilities(image)
            np.savez_compressed(
                out_dir / f"{path.stem}_probs.npz",
                probs=probs.astype(np.float16),
                class_names=np.array(predictor.class_names, dtype=str),
            )
        else:
            mask = predictor.predict(image)
        mask_path = out_dir / f"{path.stem}.png"
        cv2.imwrite(str(mask_path), mask)
        cv2.imwrite(
            str(out_dir / f"{path.stem}_overlay.jpg"),
            cv2.cvtColor(predictor.overlay(predictor.display(image), mask), cv2.COLOR_RGB2BGR),
        )
        written.append(mask_path)
        if on_image:
            on_image(path, mask_path)
    return written


def predict_checkpoint(request) -> list[Path]:
    """``segcli predict`` with a semantic checkpoint or an ONNX bundle: load it (``Predictor``
    or ``bundle.predictor_from_bundle``), print what runs, write ``predict_files``' files and say
    where; returns the mask paths. ``request``: an ``inference.tasks.PredictRequest``.

    Raises:
        SegcliError: task=instance's options (``--score-threshold``, ``--coco-json``),
            ``--save-probs`` with a GeoTIFF scene, or see ``Predictor.from_checkpoint``,
            ``predict_files``, ``raster.predict_raster``.
    """
    from segcli import console
    from segcli.inference.bundle import is_bundle, predictor_from_bundle
    from segcli.inference.modes import describe
    from segcli.inference.raster import is_geotiff, predict_raster

    r = request
    if r.score_threshold is not None or r.coco_json is not None:
        raise SegcliError(
            f"{r.checkpoint}: a semantic model; --score-threshold and --coco-json are options of "
            "task=instance checkpoints"
        )
    if is_bundle(r.checkpoint):
        predictor = predictor_from_bundle(r.checkpoint, r.settings)
        how = "onnxruntime (CPU)"
    else:
        predictor = Predictor.from_checkpoint(r.checkpoint, r.device, r.amp, r.settings)
        how = predictor.ctx.precision.describe()
    console.out.print(
        f"checkpoint {r.checkpoint}: {len(r.files)} image(s) -> {r.out_dir}/, {how}; "
        f"{describe(r.settings)}",
        highlight=False,
    )
    scenes = [f for f in r.files if is_geotiff(f)]
    if scenes and r.save_probs:
        raise SegcliError(f"{scenes[0]}: --save-probs is not written for GeoTIFF scenes")
    masks = predict_files(
        predictor, [f for f in r.files if f not in scenes], r.out_dir, save_probs=r.save_probs
    )
    if masks:
        console.out.print(f"wrote {len(masks)} masks and overlays to {r.out_dir}", highlight=False)
    for scene in scenes:
        done = predict_raster(predictor, scene, r.out_dir, r.window, r.margin)
        masks.append(done.path)
        console.out.print(
            f"{scene}: {done.width}x{done.height} pixels in {done.blocks} blocks of {r.window} "
            f"(+{r.margin} margin; {done.skipped} without valid pixels skipped), "
            f"{done.seconds:.1f} s -> {done.path} (GeoTIFF, the scene's CRS and transform)",
            highlight=False,
        )
    return masks
