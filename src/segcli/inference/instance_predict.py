"""``segcli predict`` with a ``task=instance`` checkpoint: per image an instance-id PNG (16-bit:
0 background, 1..D the objects, 1 the highest score), the semantic PNG (the objects pasted by
score: ``metrics.coco.paste_semantic``, as eval scores them), an overlay with one colour per
object and "class score" labels; for the whole call a COCO results JSON (``detections.json``: RLE
masks, xywh boxes, scores, the dataset's own category ids, and per entry the image's
``file_name`` and ``image_id``: the COCO id when ``--coco-json`` names the images' annotation
file, else the image's position in the call, 1-based), so that pycocotools' ``loadRes`` +
``COCOeval`` on it reproduce ``segcli eval``'s AP.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch

from segcli.data.images import read_image
from segcli.errors import SegcliError
from segcli.inference.instance_loop import detections_of
from segcli.inference.loaded import LoadedModel
from segcli.metrics.coco import encode, instance_id_map, paste_semantic, results_json


class InstancePredictor:
    """A ``task=instance`` checkpoint ready to detect: ``detect(image)`` maps an ``(H, W, 3)
    uint8`` RGB image to its detections scoring >= ``score_threshold``.

    Args:
        loaded: the checkpoint (``LoadedModel.load``).
        score_threshold: detections below are dropped (default: the run's
            ``task.score_threshold``, 0.05).
    """

    def __init__(self, loaded: LoadedModel, score_threshold: float | None = None) -> None:
        task = loaded.config.get("task") or {}
        self.loaded, self.ctx = loaded, loaded.ctx
        self.transform = loaded.transform()
        self.class_names = loaded.classes.class_names
        self.colors = np.array(loaded.classes.colors, np.uint8)
        self.category_ids = loaded.category_ids or list(range(1, len(self.class_names)))
        self.mask_threshold = float(task.get("mask_threshold", 0.5))
        threshold = (
            task.get("score_threshold", 0.05) if score_threshold is None else score_threshold
        )
        self.score_threshold = float(threshold)

    @torch.inference_mode()
    def detect(self, image: np.ndarray) -> dict:
        """``(H, W, 3) uint8`` RGB -> ``{"masks": (D, H, W) uint8, "probabilities": (D, H, W)
        float32, "boxes": (D, 4) float32 xyxy pixels, "labels": (D,) int64, "scores": (D,)
        float32}``, highest score first."""
        h, w = image.shape[:2]
        x = self.ctx.images({"image": self.transform(image=image)["image"].unsqueeze(0)})
        with self.ctx.autocast():
            out = self.loaded.model(list(x))[0]
        det = detections_of(out, h, w, self.mask_threshold)
        keep = np.flatnonzero(det["scores"] >= self.score_threshold)
        keep = keep[np.argsort(-det["scores"][keep], kind="stable")]
        return {k: v[keep] for k, v in det.items()}

    def semantic(self, det: dict, height: int, width: int) -> np.ndarray:
        """The detections pasted by score: ``(H, W) uint8`` class indices."""
        probs = det["probabilities"] if len(det["scores"]) else np.zeros((0, height, width))
        return paste_semantic(probs, det["labels"], det["scores"], self.mask_threshold).astype(
            np.uint8
        )

    def overlay(self, image: np.ndarray, det: dict, alpha: float = 0.5) -> np.ndarray:
        """``draw_instances`` of ``det`` on ``image`` with this checkpoint's class names."""
        return draw_instances(image, det, self.class_names, alpha)

    def results(self, det: dict, image_id: int, file_name: str) -> list[dict]:
        """COCO results entries of one image's detections (RLE with ``counts`` as text, xywh box,
        the dataset's category id), with ``file_name``."""
        out = []
        for rle, box, label, score in zip(
            encode(det["masks"]), det["boxes"], det["labels"], det["scores"]
        ):
            x1, y1, x2, y2 = (float(v) for v in box)
            out.append(
                {
                    "image_id": int(image_id),
                    "file_name": file_name,
                    "category_id": int(self.category_ids[int(label) - 1]),
                    "segmentation": rle,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(score),
                }
            )
        return out


def draw_instances(
    image: np.ndarray, det: dict, class_names: list[str], alpha: float = 0.5, scores: bool = True
) -> np.ndarray:
    """``image (H, W, 3) uint8`` RGB with each object of ``det`` (``masks (D, H, W)``, ``boxes``,
    ``labels``, ``scores``; highest score first) in a colour of its own (a fixed palette by rank),
    its box outline and a "class score" label ("class" alone without ``scores``): ``(H, W, 3)
    uint8``; where objects overlap, the higher score's colour (``instance_id_map``)."""
    out = image.copy()
    n = len(det["labels"])
    palette = _palette(n)
    if n:
        ids = instance_id_map(det["masks"], det["scores"])
        for i in range(n):
            on = ids == i + 1
            out[on] = ((1 - alpha) * out[on] + alpha * palette[i]).astype(np.uint8)
    for i, (box, label, score) in enumerate(zip(det["boxes"], det["labels"], det["scores"])):
        color = tuple(int(c) for c in palette[i])
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        cv2.rectangle(out, (x1, y1), (max(x2 - 1, x1), max(y2 - 1, y1)), color, 1)
        text = class_names[int(label)] + (f" {float(score):.2f}" if scores else "")
        cv2.putText(out, text, (x1, max(y1 - 3, 9)), cv2.FONT_HERSHEY_SIMPLEX, 0.35, color, 1)
    return out


@torch.inference_mode()
def save_instance_samples(
    model: torch.nn.Module,
    dataset,
    count: int,
    ctx,
    class_names: list[str],
    mean,
    std,
    path: Path,
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
) -> None:
    """samples/best.png of a task=instance run: ``count`` rows (image | true objects | detected
    objects scoring >= ``score_threshold``) for images spread evenly over ``dataset`` (an
    ``InstanceDataset`` with its eval transform), as ``gallery.save_samples`` does for semantic
    runs; the model is put back into the mode it was in."""
    from segcli.inference.gallery import _write_png
    from segcli.preprocessing import denormalize

    was_training, rows = model.training, []
    model.eval()
    for index in sorted(
        {int(i) for i in np.linspace(0, len(dataset) - 1, min(count, len(dataset)))}
    ):
        sample = dataset[index]
        h, w = sample["size"]
        x = ctx.images({"image": sample["image"][None]})
        with ctx.autocast():
            det = detections_of(model(list(x))[0], h, w, mask_threshold)
        det = {k: v[det["scores"] >= score_threshold] for k, v in det.items()}
        image = denormalize(sample["image"][None], mean, std)[0][:h, :w]
        t = sample["target"]
        truth = {
            "masks": t["masks"][:, :h, :w].numpy(),
            "boxes": t["boxes"].numpy(),
            "labels": t["labels"].numpy(),
            "scores": np.ones(len(t["labels"])),
        }
        drawn = [
            draw_instances(image, truth, class_names, scores=False),
            draw_instances(image, det, class_names),
        ]
        rows.append(np.concatenate([image, *drawn], axis=1))
    model.train(was_training)
    if rows:
        _write_png(rows, path)


def _palette(n: int) -> np.ndarray:
    """``(n, 3) uint8`` well-separated colours (golden-angle hues, full saturation)."""
    hues = (np.arange(n) * 137.508) % 360 / 2  # OpenCV hue: 0..180
    hsv = np.stack([hues, np.full(n, 220), np.full(n, 255)], 1).astype(np.uint8)[None]
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0] if n else np.zeros((0, 3), np.uint8)


def coco_image_ids(annotation_file: Path) -> dict[str, int]:
    """``{file name: COCO image id}`` of a COCO JSON's ``images`` (by base name too).

    Raises:
        SegcliError: the file is not a COCO JSON with an ``images`` list.
    """
    try:
        images = json.loads(Path(annotation_file).read_text(encoding="utf-8"))["images"]
        out = {}
        for im in images:
            out[str(im["file_name"])] = int(im["id"])
            out.setdefault(Path(str(im["file_name"])).name, int(im["id"]))
        return out
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SegcliError(
            f"{annotation_file}: --coco-json expects a COCO JSON with an images list "
            f"({type(exc).__name__})"
        ) from None


def predict_instance_files(
    predictor: InstancePredictor,
    files: list[Path],
    out_dir: Path,
    coco_json: Path | None = None,
    on_image=None,
) -> list[Path]:
    """Write ``NAME.png`` (uint8 classes), ``NAME_instances.png`` (uint16 object ids),
    ``NAME_overlay.jpg`` per file and ``detections.json`` (COCO results) for all; returns the
    instance PNG paths.

    Raises:
        SegcliError: a file cannot be read as an image; an image missing from ``coco_json``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = coco_image_ids(coco_json) if coco_json else None
    entries, written = [], []
    for n, path in enumerate(files, 1):
        image = read_image(path)
        det = predictor.detect(image)
        h, w = image.shape[:2]
        instances = instance_id_map(det["masks"], det["scores"]) if len(det["scores"]) else None
        if instances is None:
            instances = np.zeros((h, w), np.uint16)
        cv2.imwrite(str(out_dir / f"{path.stem}.png"), predictor.semantic(det, h, w))
        cv2.imwrite(str(out_dir / f"{path.stem}_instances.png"), instances)
        overlay = cv2.cvtColor(predictor.overlay(image, det), cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(out_dir / f"{path.stem}_overlay.jpg"), overlay)
        if ids is not None and path.name not in ids:
            raise SegcliError(f"{path}: not an image of --coco-json {coco_json}")
        entries += predictor.results(det, ids[path.name] if ids else n, path.name)
        written.append(out_dir / f"{path.stem}_instances.png")
        if on_image:
            on_image(path, written[-1])
    results_json(entries, out_dir / "detections.json")
    return written


def predict_instances(request) -> list[Path]:
    """``segcli predict`` with a ``task=instance`` checkpoint: load it, print what runs, write
    ``predict_instance_files``' files and say where; returns the instance PNG paths.
    ``request``: an ``inference.tasks.PredictRequest``.

    Raises:
        SegcliError: semantic models' options (``--save-probs``, an ``--inference`` other than
            whole), or see ``LoadedModel.load`` and ``predict_instance_files``.
    """
    from segcli import console

    r = request
    if r.save_probs or (r.settings is not None and not r.settings.plain):
        raise SegcliError(
            f"{r.checkpoint}: a task=instance checkpoint; --save-probs and --inference other "
            "than whole are options of semantic models"
        )
    loaded = LoadedModel.load(r.checkpoint, r.device, r.amp)
    predictor = InstancePredictor(loaded, r.score_threshold)
    console.out.print(
        f"checkpoint {r.checkpoint} (task=instance): {len(r.files)} image(s) -> {r.out_dir}/, "
        f"{predictor.ctx.precision.describe()}; detections scoring >= {predictor.score_threshold}",
        highlight=False,
    )
    written = predict_instance_files(predictor, r.files, r.out_dir, r.coco_json)
    console.out.print(
        f"wrote {len(written)} instance-id PNGs, semantic PNGs and overlays, and "
        f"{r.out_dir / 'detections.json'} (COCO results)",
        highlight=False,
    )
    return written
