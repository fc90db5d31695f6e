"""The ``weak`` config group (conf/weak/default.yaml, whose comments document every key) as one
typed, validated object, and the checks of the ``dataset`` keys that choose weak labels
(``labels``, ``weak_labels``, ``weak_images``, ``simulate``, ``background_class``).

A wrong value is a one-line ``SegcliError`` naming ``weak.KEY`` or ``dataset.KEY`` and what was
expected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from segcli.data.settings import DatasetSettings
from segcli.errors import SegcliError
from segcli.weak.fill import FILL_METHODS


@dataclass(frozen=True)
class WeakSettings:
    """The ``weak`` group, parsed. Shares are fractions of a box's area (0..1]; ``min_area`` and
    ``scribble_width`` are pixels; ``rounds`` counts trainings (1: train once on the filled
    boxes)."""

    fill: str = "box_i"
    inner_share: float = 0.2
    grabcut_iterations: int = 5
    min_share: float = 0.1
    crf_confidence: float = 0.7
    rounds: int = 1
    points_per_class: int = 10
    scribble_width: int = 3
    min_area: int = 16

    @classmethod
    def from_config(cls, cfg: Mapping | None) -> WeakSettings:
        """Parse the ``weak`` group (None: the defaults).

        Raises:
            SegcliError: an unknown key, an unknown fill method, a share outside (0, 1], rounds,
                iterations, points or width < 1, min_area < 0, crf_confidence outside (0.5, 1).
        """
        cfg = dict(cfg or {})
        known = {f.name: f for f in fields(cls)}
        for key in cfg:
            if key not in known:
                raise SegcliError(f"weak.{key}: unknown key; expected one of {', '.join(known)}")
        defaults = cls()
        values = {}
        for key, value in cfg.items():
            kind = type(getattr(defaults, key))
            if value is None or isinstance(value, bool) or not isinstance(value, (kind, int)):
                expected = {"str": "name", "int": "whole number", "float": "number"}[kind.__name__]
                raise SegcliError(f"weak.{key}={value}: expected a {expected}")
            values[key] = kind(value)
        out = cls(**values)
        out._check()
        return out

    def _check(self) -> None:
        if self.fill not in FILL_METHODS:
            raise SegcliError(f"weak.fill={self.fill}: expected one of {', '.join(FILL_METHODS)}")
        for key in ("inner_share", "min_share"):
            if not 0 < getattr(self, key) <= 1:
                raise SegcliError(f"weak.{key}={getattr(self, key)}: expected a share in (0, 1]")
        if not 0.5 < self.crf_confidence < 1:
            raise SegcliError(
                f"weak.crf_confidence={self.crf_confidence}: expected a probability in (0.5, 1)"
            )
        for key in ("rounds", "grabcut_iterations", "points_per_class", "scribble_width"):
            if getattr(self, key) < 1:
                raise SegcliError(f"weak.{key}={getattr(self, key)}: expected an integer >= 1")
        if self.min_area < 0:
            raise SegcliError(f"weak.min_area={self.min_area}: expected pixels >= 0")


def weak_kind(dataset: DatasetSettings) -> str | None:
    """The weak labels a run trains from: ``dataset.simulate`` or ``dataset.labels`` when it is not
    ``masks``; None for full masks."""
    if dataset.simulate:
        return dataset.simulate
    return None if dataset.labels == "masks" else dataset.labels


def check_weak(dataset: DatasetSettings, weak: WeakSettings, num_classes: int) -> None:
    """The dataset keys that choose weak labels, together.

    Raises:
        SegcliError: (one line naming the key) tags (not done); real weak labels without
            ``weak_labels`` or on the synthetic dataset; ``simulate`` with ``labels`` of another
            kind or with ``point_labels``; ``background_class`` outside the classes; rounds with
            labels other than boxes.
    """
    if "tags" in (dataset.labels, dataset.simulate):
        raise SegcliError(
            "dataset.labels=tags: image-level tags are not supported yet (class activation maps "
            "are not done; docs/weak-labels.md); expected masks, boxes, points or scribbles"
        )
    if dataset.simulate and dataset.labels not in ("masks", dataset.simulate):
        raise SegcliError(
            f"dataset.simulate={dataset.simulate} derives labels from the training masks; "
            f"expected dataset.labels=masks (not {dataset.labels})"
        )
    if dataset.simulate and dataset.point_labels is not None:
        raise SegcliError(
            f"dataset.point_labels={dataset.point_labels} and dataset.simulate="
            f"{dataset.simulate} both sparsify the masks; expected one of them "
            "(dataset.simulate=points with weak.points_per_class)"
        )
    if dataset.labels != "masks" and not dataset.simulate:
        if dataset.kind == "synthetic":
            raise SegcliError(
                f"dataset.labels={dataset.labels}: the synthetic dataset has no label files; "
                f"expected dataset.simulate={dataset.labels}"
            )
        if not dataset.weak_labels:
            raise SegcliError(
                f"dataset.labels={dataset.labels}: dataset.weak_labels is not set; expected the "
                "file or folder of the training labels (relative to dataset.root)"
            )
    background = dataset.background_class
    if background is not None and background >= num_classes:
        raise SegcliError(
            f"dataset.background_class={background}: expected a class 0..{num_classes - 1} or null"
        )
    kind = weak_kind(dataset)
    if weak.rounds > 1 and kind != "boxes":
        raise SegcliError(
            f"weak.rounds={weak.rounds}: rounds refine predictions inside boxes; expected "
            f"dataset.labels=boxes or dataset.simulate=boxes (not {kind or 'masks'})"
        )


def check_full_masks(dataset: DatasetSettings, weak_cfg: Mapping | None) -> None:
    """A full-mask run (``dataset.labels=masks``, nothing simulated) that sets a key only weak
    labels read: refused rather than ignored (a forgotten ``dataset.labels=boxes`` would train on
    the masks).

    Raises:
        SegcliError: ``dataset.weak_labels`` or ``dataset.weak_images`` set, or ``weak.rounds``
            > 1 (one line naming the key).
    """
    for key in ("weak_labels", "weak_images"):
        value = getattr(dataset, key)
        if value:
            raise SegcliError(
                f"dataset.{key}={value} is read for weak labels only; expected dataset.labels="
                "boxes, points or scribbles with it (or dataset.{key}=null)".replace("{key}", key)
            )
    rounds = WeakSettings.from_config(weak_cfg).rounds
    if rounds > 1:
        raise SegcliError(
            f"weak.rounds={rounds} refines weak labels; expected dataset.labels=boxes or "
            "dataset.simulate=boxes with it"
        )
