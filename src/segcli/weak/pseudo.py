"""One round's training masks from weak labels, written to the run folder, with their own scores.

    RUN/weak/round1/masks/NAME.png    the training masks of round 1 (data/masks.py's encoding:
                                      class indices, 255 = unlabelled)
    RUN/weak/round1/pseudo.json       what they hold: labelled share, and with simulated labels
                                      their mIoU against the true masks
    RUN/weak/round2/...               rounds >= 2: the previous round's prediction on the training
                                      images, kept inside the boxes (weak/fill.py)

Round 1 comes from the labels: read from the user's files (weak/readers.py) or simulated from the
training masks (weak/simulate.py), then filled (boxes: ``weak.fill``; points and scribbles are used
as they are, the loss skipping unlabelled pixels). A masks folder is written under another name
and renamed when complete, so an interrupted run never trains on half a round.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from segcli import console
from segcli.config import run_seed
from segcli.data.datasets import build_datasets
from segcli.data.images import image_size, read_image
from segcli.data.layouts import find_split_files
from segcli.data.masks import encode_training_mask, mask_table, read_mask
from segcli.data.pairing import list_images
from segcli.data.settings import DatasetInfo, DatasetSettings
from segcli.data.weak_images import train_image_folder, weak_training_names
from segcli.errors import SegcliError
from segcli.weak.fill import pseudo_mask
from segcli.weak.labels import ImageLabels
from segcli.weak.pseudo_scores import MaskTally
from segcli.weak.refine import refine_with_prediction
from segcli.weak.settings import WeakSettings, check_weak, weak_kind

MASKS, SCORES = "masks", "pseudo.json"


@dataclass
class TrainImages:
    """The training images of a weak-label run and how to read each.

    Attributes:
        names: image names (stems), in a fixed order.
        image: ``image(i) -> (H, W, 3) uint8`` RGB.
        truth: ``truth(i) -> (H, W) int64`` true mask, or None when there are none (label files).
        labels: ``labels(i) -> ImageLabels`` (read once, or simulated from the true mask).
        paths: the image files (label files), or None when the train split's own dataset holds
            them (simulated labels: ``build_datasets(train_images=None)``).
    """

    names: list[str]
    image: Callable[[int], np.ndarray]
    truth: Callable[[int], np.ndarray] | None
    labels: Callable[[int], ImageLabels]
    paths: list[Path] | None


class WeakLabels:
    """The weak labels of the run of ``cfg`` and the training masks of its rounds.

    Raises:
        SegcliError: see ``weak.settings.check_weak``, ``WeakSettings.from_config`` and the readers.
    """

    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg
        self.dataset = DatasetSettings.from_config(cfg["dataset"]).absolute()
        self.info = DatasetInfo.from_settings(self.dataset)
        self.weak = WeakSettings.from_config(cfg.get("weak"))
        check_weak(self.dataset, self.weak, self.info.num_classes)
        self.kind = weak_kind(self.dataset)
        self.seed = run_seed(cfg)
        self._images: TrainImages | None = None
        self._require_libraries()

    def _require_libraries(self) -> None:
        """The optional libraries the labels need, asked for now rather than in the first image.

        Raises:
            SegcliError: pydensecrf2 missing for ``weak.fill=crf``, scikit-image for simulated
                scribbles (one line naming the key and the extra)."""
        if self.kind == "boxes" and self.weak.fill == "crf":
            from segcli.inference.refine import require_crf

            try:
                require_crf()
            except SegcliError:
                raise SegcliError(
                    "weak.fill=crf needs pydensecrf2: pip install 'segcli[crf]' (or weak.fill="
                    "grabcut)"
                ) from None
        if self.dataset.simulate == "scribbles":
            from segcli.weak.simulate import require_skeletonize

            require_skeletonize()

    @property
    def images(self) -> TrainImages:
        """The training images (found on first use)."""
        if self._images is None:
            self._images = self._simulated() if self.dataset.simulate else self._from_files()
        return self._images

    # -- the training images and their labels -------------------------------------------------

    def _simulated(self) -> TrainImages:
        from segcli.weak.simulate import SIMULATORS

        _, data, _ = build_datasets(self.cfg, ("train",), self.seed, augmented=())
        ds, info, weak = data["train"], self.info, self.weak
        simulate = SIMULATORS[self.kind]
        names = [ds.name(i) for i in range(len(ds))]

        def labels(i: int) -> ImageLabels:
            mask = ds.load(i)[1]
            if self.kind == "boxes":
                return simulate(
                    mask,
                    info.num_classes,
                    info.ignore_index,
                    self.dataset.background_class,
                    min_area=weak.min_area,
                )
            if self.kind == "points":
                key = (self.seed, zlib.crc32(names[i].encode()))
                return simulate(
                    mask, weak.points_per_class, key, info.num_classes, info.ignore_index
                )
            return simulate(
                mask,
                info.num_classes,
                info.ignore_index,
                width=weak.scribble_width,
                min_area=weak.min_area,
            )

        return TrainImages(names, lambda i: ds.load(i)[0], lambda i: ds.load(i)[1], labels, None)

    def _from_files(self) -> TrainImages:
        from segcli.weak.readers import LabelSpec, read_labels

        settings, info = self.dataset, self.info
        path = Path(settings.root) / str(settings.weak_labels)
        if not path.exists():
            raise SegcliError(f"{path}: dataset.weak_labels not found (relative to dataset.root)")
        found = _by_stem(train_image_folder(settings))
        listed = weak_training_names(settings)
        held_out = _eval_images(settings, self.seed)
        known = {**held_out, **found}  # labels may name validation images: left out, not wrong
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            sizes = dict(zip(known, pool.map(image_size, known.values())))
        spec = LabelSpec(
            info.class_names,
            info.ignore_index,
            sizes,
            settings.background_class,
            self.weak.scribble_width,
            _mask_decoding(settings, info),
        )
        read = {n: _compact(v) for n, v in read_labels(self.kind, path, spec).items()}
        trainable = [n for n in found if n not in held_out and (listed is None or n in listed)]
        names = sorted(n for n in trainable if n in read)
        if not names:
            raise SegcliError(
                f"{path}: labels no training image of {train_image_folder(settings)}; expected "
                "labels named like the images (file stems)"
            )
        if len(trainable) > len(names):
            console.warning(
                f"{len(trainable) - len(names)} training image(s) have no weak labels and are "
                "left out"
            )
        paths = [found[n] for n in names]
        return TrainImages(
            names, lambda i: read_image(paths[i]), None, lambda i: read[names[i]], paths
        )

    def forget_labels(self) -> None:
        """Drop the labels once round 1's masks are written (points and scribbles have no later
        rounds; their sparse masks can be large); names and paths stay."""
        if self._images is not None:
            self._images.labels = _gone

    # -- one round's masks ------------------------------------------------------------------

    def first_round(self, folder: Path) -> Path:
        """Write round 1's masks (the labels, filled) under ``folder``, unless done; returns the
        masks folder."""
        return self._write_round(folder, self._filled)

    def next_round(self, folder: Path, first: Path, checkpoint: Path) -> Path:
        """Write the masks of a round >= 2 under ``folder``, unless done: ``checkpoint``'s
        prediction on each training image kept inside its boxes, a box predicted below
        ``weak.min_share`` of its area reset to its round-1 filling (``first``: round 1's folder).
        Returns the masks folder."""
        from segcli.weak.predict import TrainingPredictor

        predictor = TrainingPredictor(checkpoint)
        first = first / MASKS
        decode = _training_decoder(self.info)

        def refined(i: int) -> np.ndarray:
            images = self.images
            pred = predictor(images.image(i))
            labels = images.labels(i)
            fallback = read_mask(first / f"{images.names[i]}.png", decode)
            return refine_with_prediction(
                pred,
                labels.boxes,
                labels.box_classes,
                fallback,
                self.dataset.background_class,
                self.info.ignore_index,
                self.weak.min_share,
            )

        what = f"boxes, {checkpoint.parent.parent.name}'s model inside them"
        return self._write_round(folder, refined, threads=1, what=what)

    def _filled(self, i: int) -> np.ndarray:
        images = self.images
        return pseudo_mask(
            self.weak.fill,
            images.image(i),
            images.labels(i),
            self.info.num_classes,
            self.dataset.background_class,
            self.info.ignore_index,
            **_fill_params(self.weak),
        )

    def settings_record(self) -> dict:
        """What decides a round's training masks: the labelling ``dataset`` keys, the ``weak``
        group and the seed (kept in pseudo.json; masks made under other settings are remade)."""
        d = self.dataset
        keys = ("root", "labels", "weak_labels", "weak_images", "simulate", "background_class")
        return {
            "dataset": {k: getattr(d, k) for k in keys},
            "weak": asdict(self.weak),
            "seed": self.seed,
        }

    def _write_round(
        self,
        folder: Path,
        mask_of: Callable[[int], np.ndarray],
        threads: int = 0,
        what: str | None = None,
    ) -> Path:
        """``folder/masks/NAME.png`` (``masks.encode_training_mask``: class indices, unlabelled
        255, or 65535 for 255 classes or more) of every training image and ``folder/pseudo.json``,
        unless both exist for the same settings; returns the masks folder.

        Raises:
            SegcliError: a mask cannot be written, or what ``mask_of`` raises (the first error
                stops the remaining images).
        """
        masks, scores = folder / MASKS, folder / SCORES
        settings = self.settings_record()
        if masks.is_dir() and scores.is_file():
            if json.loads(scores.read_text()).get("settings") == settings:
                return masks
            console.warning(f"{folder}: training masks of other settings; making them again")
        partial = folder / (MASKS + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        images, info = self.images, self.info
        tally = MaskTally(info.num_classes, info.ignore_index, images.truth is not None)

        def one(i: int) -> None:
            mask = mask_of(i)
            path = partial / f"{images.names[i]}.png"
            if not cv2.imwrite(str(path), encode_training_mask(mask, info.num_classes)):
                raise SegcliError(f"{path}: could not write the training mask")
            tally.add(mask, images.truth(i) if images.truth is not None else None)

        what = what or (self.kind if self.kind != "boxes" else f"boxes, weak.fill={self.weak.fill}")
        console.out.print(
            f"segcli: training masks ({what}) of {len(images.names)} images -> {masks}",
            highlight=False,
        )
        start = time.perf_counter()
        _each(one, len(images.names), threads or min(4, os.cpu_count() or 1))
        shutil.rmtree(masks, ignore_errors=True)
        partial.rename(masks)
        record = {"images": len(images.names), "labels": what}
        record.update(tally.scores(info.class_names))
        record["seconds"] = round(time.perf_counter() - start, 1)
        record["settings"] = settings
        _report(record)
        tmp = scores.with_suffix(".json.partial")
        tmp.write_text(json.dumps(record, indent=2))
        tmp.replace(scores)
        return masks


def _each(work: Callable[[int], None], count: int, threads: int) -> None:
    """``work(i)`` for i in 0..count-1 on ``threads`` threads; the first error (or Ctrl-C) stops
    the items not yet started and is raised."""
    pool = ThreadPoolExecutor(max_workers=threads)
    try:
        for future in [pool.submit(work, i) for i in range(count)]:
            future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _report(record: dict) -> None:
    """The console line of a round's finished masks (seconds, labelled share, mIoU)."""
    score = record.get("miou_vs_truth")
    console.out.print(
        f"segcli: training masks written in {record['seconds']:.0f} s; labelled share "
        f"{record['labelled_share']:.3f}"
        + ("" if score is None else f", mIoU against the true masks {score:.4f}"),
        highlight=False,
    )


def _gone(i: int) -> ImageLabels:
    raise RuntimeError("the weak labels were dropped after round 1 (WeakLabels.forget_labels)")


def _fill_params(weak: WeakSettings) -> dict:
    """The ``weak`` keys that ``weak.fill``'s method takes (weak/fill.py)."""
    inner = {"inner_share": weak.inner_share}
    return {
        "box": {},
        "box_i": inner,
        "grabcut": {**inner, "iterations": weak.grabcut_iterations, "min_share": weak.min_share},
        "crf": {**inner, "confidence": weak.crf_confidence},
    }[weak.fill]


def _by_stem(folder: Path) -> dict[str, Path]:
    """Stem -> image file of ``folder`` and its subfolders.

    Raises:
        SegcliError: two images share a stem (weak labels name images by stem)."""
    out: dict[str, Path] = {}
    for path in list_images(folder, recursive=True).values():
        if path.stem in out:
            raise SegcliError(
                f"{path}: another training image has the stem {path.stem!r} ({out[path.stem]}); "
                "weak labels name images by stem: expected unique file names"
            )
        out[path.stem] = path
    return out


def _compact(labels: ImageLabels) -> ImageLabels:
    """``labels`` with its sparse mask stored as int16 where the values fit (a quarter of int64's
    memory, for label files of many images); a view of the same values otherwise."""
    sparse = labels.sparse
    if sparse is None or sparse.size == 0:
        return labels
    if -32768 <= int(sparse.min()) and int(sparse.max()) <= 32767:
        return ImageLabels(labels.boxes, labels.box_classes, sparse.astype(np.int16))
    return labels


def _eval_images(settings: DatasetSettings, seed: int) -> dict[str, Path]:
    """Name -> file of the val and test images: never trained on, even when the label files name
    them (VOC's JPEGImages/ and Annotations/ hold every split)."""
    files = find_split_files(settings, seed)
    return {img.stem: img for s, pairs in files.pairs.items() if s != "train" for img, _ in pairs}


def _mask_decoding(settings: DatasetSettings, info: DatasetInfo):
    table = mask_table(settings, info.colors)
    return lambda path: read_mask(path, table)


def _training_decoder(info: DatasetInfo):
    from segcli.data.masks import training_mask_decoder

    return training_mask_decoder(info.num_classes, info.ignore_index)
