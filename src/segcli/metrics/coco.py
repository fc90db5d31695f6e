"""Instance-segmentation scores by COCO's own protocol: pycocotools' ``COCOeval`` for ``"segm"``
(mask IoU) and ``"bbox"`` (box IoU), with COCO's defaults: IoU thresholds .50:.05:.95, 101 recall
points, ``maxDets`` 1/10/100 (the scores here use 100), area ranges small (< 32^2 px), medium
(32^2..96^2) and large (> 96^2), crowd regions matched as COCO does (a detection on a crowd region
is neither a true nor a false positive). Reference: pycocotools/cocoeval.py
(``COCOeval.evaluateImg``, ``accumulate``, ``summarize``) and
https://cocodataset.org/#detection-eval.

``CocoEvaluator`` keeps, per image, the ground truth and the detections as COCO run-length
encodings (``pycocotools.mask.encode``), never dense masks, builds the COCO ground-truth dict in
memory and the results list in COCO's results format (https://cocodataset.org/#format-results),
and runs ``COCOeval`` on them. ``paste_semantic`` and ``instance_id_map`` turn instances into a
semantic mask and a 16-bit instance-id image.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from segcli.errors import SegcliError
from segcli.files import write_json

# COCOeval.stats indices (cocoeval.py, _summarizeDets) -> our keys, without the mask_/box_ prefix
STATS = {"ap": 0, "ap50": 1, "ap75": 2, "ap_small": 3, "ap_medium": 4, "ap_large": 5, "ar100": 8}
IOU_TYPES = {"mask": "segm", "box": "bbox"}


def encode(masks: np.ndarray) -> list[dict]:
    """COCO compressed RLEs of ``masks: (K, H, W)`` binary (any integer or bool dtype), counts as
    ``str`` (JSON-ready); ``pycocotools.mask.encode`` wants ``(H, W, K)`` uint8 in Fortran order."""
    if len(masks) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0), dtype=np.uint8))
    for r in rles:
        r["counts"] = r["counts"].decode("ascii")
    return rles


def _check(name: str, where: str, a: np.ndarray, shape: tuple) -> np.ndarray:
    """``a`` as an array of ``shape`` (``None``: any length), or a one-line ``SegcliError``."""
    a = np.asarray(a)
    if a.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, a.shape)):
        want = ", ".join("N" if s is None else str(s) for s in shape)
        raise SegcliError(f"{where}: {name} has shape {a.shape}, expected ({want})")
    return a


def _binary(name: str, where: str, masks: np.ndarray) -> np.ndarray:
    if masks.dtype.kind not in "biu" or (masks.size and (masks.min() < 0 or masks.max() > 1)):
        raise SegcliError(
            f"{where}: {name} must be binary 0/1 (uint8 or bool, thresholded), got {masks.dtype}"
        )
    return masks.astype(np.uint8, copy=False)


class CocoEvaluator:
    """Accumulates ground truth and detections image by image, then runs pycocotools' COCOeval
    for iouType ``"segm"`` and ``"bbox"`` (COCO's own protocol, see the module docstring).

    Args:
        class_names: the C class names, background first.
        category_ids: the dataset's category ids of classes 1..C-1 (default 1..C-1), used in the
            ground truth and in the results JSON entries.

    Raises:
        SegcliError: fewer than two class names, or ``category_ids`` not C-1 distinct integers.
    """

    def __init__(self, class_names: Sequence[str], category_ids: Sequence[int] | None = None):
        self.class_names = list(class_names)
        if len(self.class_names) < 2:
            raise SegcliError(
                f"class_names: {self.class_names} has no object class (background comes first)"
            )
        ids = list(range(1, len(self.class_names))) if category_ids is None else category_ids
        self.category_ids = [int(i) for i in ids]
        n = len(self.class_names) - 1
        if len(self.category_ids) != n or len(set(self.category_ids)) != n:
            raise SegcliError(
                f"category_ids: {list(ids)} should be {len(self.class_names) - 1} distinct ids, "
                f"one per class after background {self.class_names[1:]}"
            )
        self._images: list[dict] = []
        self._gts: list[dict] = []
        self._dets: list[dict] = []
        self._segm_eval: COCOeval | None = None

    def add(
        self,
        image_id: int,
        file_name: str,
        height: int,
        width: int,
        gt_masks: np.ndarray,
        gt_labels: np.ndarray,
        gt_iscrowd: np.ndarray,
        pred_masks: np.ndarray,
        pred_boxes: np.ndarray,
        pred_labels: np.ndarray,
        pred_scores: np.ndarray,
    ) -> None:
        """Record one image: K ground-truth instances and D detections.

        Args:
            image_id: the image's COCO id (distinct per image).
            file_name, height, width: the image's file name and size in pixels.
            gt_masks: ``(K, H, W)`` uint8/bool binary; gt_labels: ``(K,)`` int64 in 1..C-1;
                gt_iscrowd: ``(K,)`` bool (COCO ``iscrowd``). A ground-truth box is the mask's
                bounding box (``pycocotools.mask.toBbox``) and its area the mask's pixel count
                (``pycocotools.mask.area``), not a polygon's area as in COCO's own files.
            pred_masks: ``(D, H, W)`` uint8/bool binary (already thresholded).
            pred_boxes: ``(D, 4)`` float xyxy in pixels, pixel-edge coordinates (COCO's: a box
                around pixel columns 10..29 is x1 10, x2 30); stored as COCO xywh.
            pred_labels: ``(D,)`` int64 in 1..C-1; pred_scores: ``(D,)`` float.

        Only RLEs are kept (``pycocotools.mask.encode``), never the dense masks.

        Raises:
            SegcliError: a repeated ``image_id``, a shape that disagrees with (height, width) or
                with K/D, a mask that is not binary, or a label outside 1..C-1.
        """
        where = f"image {image_id} ({file_name})"
        if any(im["id"] == int(image_id) for im in self._images):
            raise SegcliError(f"{where}: image_id {image_id} was added before; ids are distinct")
        hw = (int(height), int(width))
        gm = _binary("gt_masks", where, _check("gt_masks", where, gt_masks, (None, *hw)))
        k = len(gm)
        gl = self._labels("gt_labels", where, _check("gt_labels", where, gt_labels, (k,)))
        crowd = _check("gt_iscrowd", where, gt_iscrowd, (k,)).astype(bool)
        pm = _binary("pred_masks", where, _check("pred_masks", where, pred_masks, (None, *hw)))
        d = len(pm)
        boxes = _check("pred_boxes", where, pred_boxes, (d, 4)).astype(np.float64)
        pl = self._labels("pred_labels", where, _check("pred_labels", where, pred_labels, (d,)))
        scores = _check("pred_scores", where, pred_scores, (d,)).astype(np.float64)

        self._segm_eval = None
        image = {"id": int(image_id), "file_name": str(file_name), "height": hw[0], "width": hw[1]}
        self._images.append(image)
        self._store(image, gm, gl, crowd, pm, boxes, pl, scores)

    def _store(self, image, gt_masks, gt_cats, crowd, masks, boxes, cats, scores) -> None:
        """Append one checked image's annotations (RLE, box and area from the mask) and
        detections (RLE, xyxy -> xywh box)."""
        rles = encode(gt_masks)
        areas, bboxes = (mask_utils.area(rles), mask_utils.toBbox(rles)) if rles else ([], [])
        for i, rle in enumerate(rles):
            self._gts.append(
                {"image_id": image["id"], "category_id": gt_cats[i], "segmentation": rle}
                | {"area": float(areas[i]), "bbox": [float(v) for v in bboxes[i]]}
                | {"iscrowd": int(crowd[i])}
            )
        for i, rle in enumerate(encode(masks)):
            x1, y1, x2, y2 = (float(v) for v in boxes[i])
            self._dets.append(
                {"image_id": image["id"], "category_id": cats[i], "segmentation": rle}
                | {"bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(scores[i])}
                | {"file_name": image["file_name"]}
            )

    def _labels(self, name: str, where: str, labels: np.ndarray) -> list[int]:
        """Class indices 1..C-1 -> the dataset's category ids (python ints)."""
        labels = labels.astype(np.int64)
        bad = labels[(labels < 1) | (labels >= len(self.class_names))]
        if bad.size:
            raise SegcliError(
                f"{where}: {name} has {int(bad[0])}, expected 1..{len(self.class_names) - 1} "
                f"(0 is background)"
            )
        return [self.category_ids[i - 1] for i in labels.tolist()]

    def detections(self) -> list[dict]:
        """All detections in COCO's results format: ``{"image_id", "category_id", "segmentation"
        (compressed RLE, counts str), "bbox" [x, y, w, h] pixels, "score", "file_name"}`` (fresh
        dicts: ``COCO.loadRes`` may modify what it is given)."""
        return [dict(d) for d in self._dets]

    def gt_json(self) -> dict:
        """The COCO ground-truth dict (``images``, ``annotations`` with ids from 1, ``categories``)
        built in memory (https://cocodataset.org/#format-data); a fresh copy per call."""
        anns = [dict(g, id=i + 1) for i, g in enumerate(self._gts)]
        cats = [{"id": c, "name": n} for c, n in zip(self.category_ids, self.class_names[1:])]
        images = [dict(im) for im in self._images]
        return {"images": images, "annotations": anns, "categories": cats}

    def _evaluate(self, iou_type: str) -> COCOeval:
        """``COCOeval`` of ``iou_type`` after ``evaluate()`` (not yet ``accumulate()``), quiet."""
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO()
            gt.dataset = self.gt_json()
            gt.createIndex()
            dets = self.detections()
            if iou_type == "segm":  # area from the mask, not the box (as detectron2 does)
                for d in dets:
                    d.pop("bbox")
            if dets:
                dt = gt.loadRes(dets)
            else:  # loadRes reads anns[0]: an empty result set by hand
                dt = COCO()
                dt.dataset = {"images": gt.dataset["images"], "annotations": []}
                dt.dataset["categories"] = gt.dataset["categories"]
                dt.createIndex()
            e = COCOeval(gt, dt, iouType=iou_type)
            e.evaluate()
        return e

    def compute(self) -> dict:
        """COCO's scores, values in 0..1, ``None`` where COCOeval gives -1 (no ground truth of that
        kind, e.g. no large object).

        Returns:
            ``{"mask_ap", "mask_ap50", "mask_ap75", "mask_ap_small", "mask_ap_medium",
            "mask_ap_large", "mask_ar100"}``, the same with ``box_``, ``"per_class": {name:
            {"mask_ap", "box_ap", "mask_ap50"}}`` and ``"images"`` (how many were added). AP is
            COCOeval's ``stats`` (AP@[.5:.95], maxDets 100); a class's AP is the mean of
            ``eval["precision"]`` (shape T, R, K, A, M: IoU thresholds, recall points, classes,
            area ranges, maxDets) over T and R where > -1, area "all", maxDets 100, as
            ``COCOeval.summarize`` averages it over all classes (pycocotools/cocoeval.py).
        """
        out: dict = {}
        per_class = {n: {} for n in self.class_names[1:]}
        for prefix, iou_type in IOU_TYPES.items():
            e = self._evaluate(iou_type)
            if iou_type == "segm":
                self._segm_eval = e
            with contextlib.redirect_stdout(io.StringIO()):
                e.accumulate()
                e.summarize()
            out.update({f"{prefix}_{k}": _score(e.stats[i]) for k, i in STATS.items()})
            prec = e.eval["precision"][:, :, :, 0, -1]  # (T, R, K): area "all", maxDets 100
            t50 = int(np.argmin(np.abs(e.params.iouThrs - 0.5)))
            name_of = dict(zip(self.category_ids, self.class_names[1:]))
            for k, cat in enumerate(e.params.catIds):  # sorted ids, not our order
                per_class[name_of[cat]][f"{prefix}_ap"] = _mean_valid(prec[:, :, k])
                if prefix == "mask":
                    per_class[name_of[cat]]["mask_ap50"] = _mean_valid(prec[t50, :, k])
        return out | {"per_class": per_class, "images": len(self._images)}

    def per_image(self) -> list[dict]:
        """Per-image evidence for a paired bootstrap, from COCOeval's own matching of masks at IoU
        .50 (``evalImgs``, area "all", maxDets 100 per class): the greedy match by descending
        score of ``COCOeval.evaluateImg``, per class, summed over classes.

        Returns:
            In the order images were added: ``{"image_id", "file_name", "gt" (non-crowd
            instances), "tp50", "fp50" (detections matched to no instance; those matched to a crowd
            region count as neither), "fn50" (gt - tp50), "ious" (mask IoU of each true positive,
            float list)}``. No per-image AP (a COCOeval per image would be too slow).
        """
        e = self._segm_eval if self._segm_eval is not None else self._evaluate("segm")
        self._segm_eval = e
        rows = {
            im["id"]: {"image_id": im["id"], "file_name": im["file_name"], "gt": 0}
            | {"tp50": 0, "fp50": 0, "fn50": 0, "ious": []}
            for im in self._images
        }
        t50 = int(np.argmin(np.abs(e.params.iouThrs - 0.5)))
        for ev in e.evalImgs:
            if ev is None or ev["aRng"] != e.params.areaRng[0]:
                continue
            key = (ev["image_id"], ev["category_id"])
            r = rows[ev["image_id"]]
            matched, ignored = ev["dtMatches"][t50], ev["dtIgnore"][t50].astype(bool)
            tp = (matched > 0) & ~ignored
            gt_col = {g["id"]: j for j, g in enumerate(e._gts[key])}  # columns of e.ious[key]
            r["gt"] += int(np.count_nonzero(ev["gtIgnore"] == 0))
            r["tp50"] += int(tp.sum())
            r["fp50"] += int(((matched == 0) & ~ignored).sum())
            r["ious"] += [float(e.ious[key][d, gt_col[int(matched[d])]]) for d in tp.nonzero()[0]]
        for r in rows.values():
            r["fn50"] = r["gt"] - r["tp50"]
        return list(rows.values())


def _score(v: float) -> float | None:
    return None if v < 0 else float(v)


def _mean_valid(p: np.ndarray) -> float | None:
    valid = p[p > -1]
    return float(valid.mean()) if valid.size else None


def paste_semantic(
    masks: np.ndarray, labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5
) -> np.ndarray:
    """Semantic mask from instances: where ``masks >= threshold``, the label of the
    highest-scoring instance covering the pixel (lower scores pasted first, higher overwrite; equal
    scores: the later instance wins); elsewhere background 0.

    Args:
        masks: ``(D, H, W)`` float probabilities or uint8/bool binary (D may be 0).
        labels: ``(D,)`` int64 class indices; scores: ``(D,)`` float.

    Returns:
        ``(H, W)`` int64.

    Raises:
        SegcliError: masks not 3-D, or labels/scores not of length D.
    """
    masks = _check("masks", "paste_semantic", masks, (None, None, None))
    labels = _check("labels", "paste_semantic", labels, (len(masks),)).astype(np.int64)
    scores = _check("scores", "paste_semantic", scores, (len(masks),))
    out = np.zeros(masks.shape[1:], dtype=np.int64)
    for i in np.argsort(scores, kind="stable"):
        out[masks[i] >= threshold] = labels[i]
    return out


def instance_id_map(masks: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """The content of a 16-bit instance-id PNG: 0 background, the instance of rank i by descending
    score is i + 1 (1 = highest score), and where instances overlap the higher score is on top.

    Args:
        masks: ``(D, H, W)`` float or uint8/bool, foreground where ``>= threshold``;
        scores: ``(D,)`` float.

    Returns:
        ``(H, W)`` uint16.

    Raises:
        SegcliError: more than 65535 instances (16 bits), or shapes that disagree.
    """
    masks = _check("masks", "instance_id_map", masks, (None, None, None))
    scores = _check("scores", "instance_id_map", scores, (len(masks),))
    if len(masks) > 65535:
        raise SegcliError(f"instance_id_map: {len(masks)} instances, a 16-bit PNG holds 65535")
    out = np.zeros(masks.shape[1:], dtype=np.uint16)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    for rank in range(len(order) - 1, -1, -1):  # lowest score first, highest on top
        out[masks[order[rank]] >= threshold] = rank + 1
    return out


def results_json(evaluator_or_list: CocoEvaluator | list[dict], path: Path | str) -> None:
    """Write detections in COCO's results format (``CocoEvaluator.detections()`` or a list of such
    dicts) to ``path`` as JSON, atomically (``segcli.files.write_json``)."""
    dets = (
        evaluator_or_list.detections()
        if isinstance(evaluator_or_list, CocoEvaluator)
        else list(evaluator_or_list)
    )
    write_json(Path(path), dets)
