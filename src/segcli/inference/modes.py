"""How eval and predict turn an image batch into class scores: the ``inference`` config group
(conf/inference/: whole, slide, flip, multiscale, crf, ...).

- ``whole``: one forward pass over the padded image (validation during training always does this).
- ``slide``: tiles of ``crop`` pixels every ``stride`` pixels (default 2/3 of the crop, as
  MMSegmentation's Cityscapes configs; or ``overlap``, the fraction of a tile shared with the
  next, as nnU-Net's and MONAI's 0.5, giving a stride of ``crop x (1 - overlap)``), logits
  merged by averaging or by Gaussian weighting (nnU-Net; sigma = ``sigma`` x the tile, 1/8 by
  default). The tiling is MONAI's
  ``sliding_window_inference``, a maintained implementation with both weightings, a
  class-score buffer the size of the image and nothing else that grows with it; we write only the
  choice of tile and overlap. A tile is clamped to the (padded) image, so an image smaller than a
  tile is padded to a multiple of 32 as in ``whole``, never resized, and a tile that covers the
  image *is* the whole-image pass (the same numbers, not merely close ones).
- test-time augmentation: ``flip`` (horizontal) and ``scales`` (e.g. 0.5..1.75 as FastFCN
  evaluates), combinable with ``slide``; softmax probabilities are averaged over the variants
  (MMSegmentation's ``aug_test`` does the same).
- ``crf``: dense CRF refinement of the probabilities (Krähenbühl and Koltun 2011, "Efficient
  Inference in Fully Connected CRFs with Gaussian Edge Potentials"; the DeepLab papers' CNN +
  fully connected CRF) by pydensecrf2, the optional extra ``segcli[crf]``.
- ``superpixels``: majority vote of the predicted labels inside each superpixel, SLIC (Achanta et
  al. 2012) or Felzenszwalb-Huttenlocher (2004) from scikit-image: the classical post-processing
  that snaps label borders to colour edges. Combinable with every mode above (it runs last).

``Inference(settings, mean, std)(model, x)`` is the one entry point; it takes any callable
``model(x) -> logits`` (a torch module, or ``onnx_graph.OnnxModel`` for ONNX bundles). Here: the
settings, the presets and the entry point; the tiling is in ``sliding``, the CRF and the
superpixel vote (with their settings) in ``refine``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from segcli.errors import SegcliError
from segcli.inference.loop import forward_at_scale
from segcli.inference.refine import (
    CrfSettings,
    SuperpixelSettings,
    crf_settings,
    dense_crf,
    require_crf,
    require_skimage,
    superpixel_settings,
    superpixel_vote,
)
from segcli.inference.sliding import monai_sliding_window, slide

MODES = ("whole", "slide")
MERGES = ("mean", "gaussian")  # MONAI's names: "constant" and "gaussian"


@dataclass(frozen=True)
class InferenceSettings:
    """One inference recipe (the ``inference`` config group); see the module docstring.

    ``crop`` and ``stride``: (height, width) in pixels, multiples of 32 for the crop; ``stride``
    None means ``crop x (1 - overlap)`` when ``overlap`` (a fraction in [0, 1)) is set, else 2/3
    of the crop (rounded down, at least 1 pixel). ``tile_batch``: tiles per forward pass.
    ``scales``: resolution factors of the multi-scale TTA (1.0 alone: none)."""

    name: str = "whole"
    mode: str = "whole"
    crop: tuple[int, int] = (512, 512)
    stride: tuple[int, int] | None = None
    overlap: float | None = None
    merge: str = "gaussian"
    sigma: float = 0.125
    tile_batch: int = 4
    flip: bool = False
    scales: tuple[float, ...] = (1.0,)
    crf: CrfSettings | None = None
    superpixels: SuperpixelSettings | None = None
    overrides: tuple[str, ...] = field(default=(), compare=False)

    @property
    def plain(self) -> bool:
        """One forward pass of the whole image and nothing else (scores are the logits)."""
        return (
            self.mode == "whole"
            and not self.flip
            and self.scales == (1.0,)
            and self.crf is None
            and self.superpixels is None
        )

    @property
    def tag(self) -> str:
        """A file-name part: the preset's name, plus a short hash of any overrides."""
        if not self.overrides:
            return self.name
        return f"{self.name}-{hashlib.sha1(' '.join(self.overrides).encode()).hexdigest()[:6]}"

    def stride_or_default(self) -> tuple[int, int]:
        """The stride in pixels (height, width)."""
        if self.stride:
            return self.stride
        if self.overlap is not None:
            return tuple(max(int(c * (1 - self.overlap)), 1) for c in self.crop)
        return (max(self.crop[0] * 2 // 3, 1), max(self.crop[1] * 2 // 3, 1))

    def as_dict(self) -> dict:
        """JSON-ready: every setting, and the stride actually used."""
        out = asdict(self)
        out["crop"], out["scales"] = list(self.crop), list(self.scales)
        out["stride"] = list(self.stride_or_default())
        out["overrides"] = list(self.overrides)
        return out

    @classmethod
    def from_config(cls, cfg: Mapping, overrides: Sequence[str] = ()) -> InferenceSettings:
        """Settings from an ``inference`` config section (plain dict).

        Raises:
            SegcliError: an unknown key, mode or merge; a crop that is not two positive multiples of
                32; a stride outside 1..crop; an overlap outside [0, 1) or set with a
                stride; a scale <= 0; a sigma <= 0 or a tile_batch < 1; a bad CRF or
                superpixel value. Names the key.
        """
        cfg = dict(cfg)
        _check_keys(cfg, {f for f in cls.__dataclass_fields__ if f != "overrides"})
        mode = _choice(cfg, "mode", "whole", MODES)
        merge = _choice(cfg, "merge", "gaussian", MERGES)
        crop, stride, overlap = _tiling(cfg)
        scales = _scales(cfg.get("scales", (1.0,)))
        sigma, tile_batch = _merge_sigma_and_tile_batch(cfg)
        return cls(
            str(cfg.get("name", "whole")),
            mode,
            crop,
            stride,
            overlap,
            merge,
            sigma,
            tile_batch,
            bool(cfg.get("flip", False)),
            scales,
            crf_settings(cfg.get("crf")),
            superpixel_settings(cfg.get("superpixels")),
            tuple(overrides),
        )


def _check_keys(cfg: Mapping, known: set[str]) -> None:
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise SegcliError(
            f"inference.{unknown[0]}: unknown key; expected one of {', '.join(sorted(known))}"
        )


def _choice(cfg: Mapping, key: str, default: str, choices: Sequence[str]) -> str:
    value = str(cfg.get(key, default))
    if value not in choices:
        raise SegcliError(f"inference.{key}={value}: expected one of {', '.join(choices)}")
    return value


def _tiling(cfg: Mapping) -> tuple[tuple[int, int], tuple[int, int] | None, float | None]:
    """``(crop, stride, overlap)`` of the slide mode, checked against each other."""
    crop = _pair(cfg.get("crop", (512, 512)), "inference.crop")
    if any(c % 32 for c in crop):
        raise SegcliError(
            f"inference.crop={list(crop)}: expected multiples of 32 (the models' stride)"
        )
    stride = cfg.get("stride")
    if stride is not None:
        stride = _pair(stride, "inference.stride")
        if any(s > c for s, c in zip(stride, crop, strict=True)):
            raise SegcliError(
                f"inference.stride={list(stride)}: expected at most the crop {list(crop)} "
                "(a larger stride leaves pixels without a tile)"
            )
    overlap = cfg.get("overlap")
    if overlap is not None:
        overlap = float(overlap)
        if not 0 <= overlap < 1:
            raise SegcliError(
                f"inference.overlap={overlap}: expected a fraction of the tile in [0, 1)"
            )
        if stride is not None:
            raise SegcliError(
                "inference.overlap and inference.stride are both set: expected one of them"
            )
    return crop, stride, overlap


def _scales(value) -> tuple[float, ...]:
    scales = tuple(float(s) for s in ([value] if isinstance(value, (int, float)) else value))
    if not scales or any(s <= 0 for s in scales):
        raise SegcliError(f"inference.scales={list(scales)}: expected positive resolution factors")
    return scales


def _merge_sigma_and_tile_batch(cfg: Mapping) -> tuple[float, int]:
    sigma = float(cfg.get("sigma", 0.125))
    tile_batch = int(cfg.get("tile_batch", 4))
    if sigma <= 0 or tile_batch < 1:
        raise SegcliError(
            f"inference.sigma={sigma}, tile_batch={tile_batch}: expected sigma > 0, tile_batch >= 1"
        )
    return sigma, tile_batch


def _pair(value, key: str) -> tuple[int, int]:
    values = [value, value] if isinstance(value, (int, float)) else list(value)
    if len(values) != 2 or any(not float(v).is_integer() or v < 1 for v in values):
        raise SegcliError(
            f"{key}={value}: expected a positive integer or [height, width] in pixels"
        )
    return int(values[0]), int(values[1])


def load_settings(
    name: str = "whole", overrides: Sequence[str] = (), user_config_dir: str | None = None
) -> InferenceSettings:
    """The preset ``conf/inference/NAME.yaml`` with Hydra-style ``overrides``
    (``inference.stride=[256,256]``, ``inference.crf.iterations=5``).

    Raises:
        SegcliError: an unknown preset or key, a bad value (see ``InferenceSettings.from_config``).
    """
    from segcli.config import compose_config, to_plain

    bad = [o for o in overrides if not o.lstrip("+~").startswith("inference.")]
    if bad:
        raise SegcliError(f"{bad[0]}: eval and predict take inference.KEY=VALUE overrides only")
    cfg = to_plain(compose_config([f"inference={name}", *overrides], "infer", user_config_dir))
    return InferenceSettings.from_config({"name": name, **cfg["inference"]}, overrides)


class Inference:
    """Class scores of a batch under ``settings``.

    ``Inference(settings, mean, std)(model, x, scale)``: ``x: (N, C_in, H, W) float`` normalised as
    in training (``(pixel/255 - mean) / std``, padded to a multiple of 32), ``model(x) -> (N, C,
    h, w)`` logits, ``scale``: ``dataset.scale`` (see ``inference.loop.forward_at_scale``). Returns
    ``(N, C, H, W) float32``: the logits when ``settings.plain``, else probabilities (mean of the
    softmax over TTA variants, then the CRF's). Either way the prediction is their argmax.
    ``mean``/``std`` (0..1 units) recover the RGB image the CRF needs.

    Raises:
        SegcliError: a CRF is asked for and pydensecrf2 is not installed (names the extra).
    """

    def __init__(
        self,
        settings: InferenceSettings,
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        std: Sequence[float] = (1.0, 1.0, 1.0),
    ) -> None:
        self.settings = settings
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        if settings.crf is not None:
            require_crf()
        if settings.superpixels is not None:
            require_skimage()
        if settings.mode == "slide":
            monai_sliding_window()  # import now (seconds), not inside the first timed batch

    def __call__(
        self, model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, scale: float = 1.0
    ) -> torch.Tensor:
        s = self.settings
        if s.plain:
            return forward_at_scale(model, x, scale).float()
        base = model if s.mode == "whole" else (lambda t: slide(model, t, s))
        total, count = None, 0
        for factor in s.scales:
            for flipped in (False, True) if s.flip else (False,):
                t = x.flip(-1) if flipped else x
                probs = forward_at_scale(base, t, factor * scale).float().softmax(1)
                probs = probs.flip(-1) if flipped else probs
                total = probs if total is None else total + probs
                count += 1
        probs = total / count
        if s.crf is not None:
            probs = dense_crf(probs, self.rgb(x), s.crf)
        if s.superpixels is not None:
            probs = superpixel_vote(probs, self.rgb(x), s.superpixels)
        return probs

    def rgb(self, x: torch.Tensor) -> np.ndarray:
        """``(N, H, W, 3) uint8`` RGB images back from normalised ``x`` (rounded;
        ``preprocessing.denormalize``)."""
        from segcli.preprocessing import denormalize

        return denormalize(x, self.mean, self.std)


def describe(settings: InferenceSettings) -> str:
    """One line for the console: the preset and what it does."""
    s = settings
    parts = [
        s.mode
        if s.mode == "whole"
        else f"slide {s.crop[0]}x{s.crop[1]} stride "
        f"{'x'.join(map(str, s.stride_or_default()))} {s.merge}"
    ]
    if s.flip:
        parts.append("flip")
    if s.scales != (1.0,):
        parts.append("scales " + ",".join(f"{f:g}" for f in s.scales))
    if s.crf is not None:
        parts.append(f"dense CRF {s.crf.iterations} it.")
    if s.superpixels is not None:
        sp = s.superpixels
        parts.append(
            f"superpixel vote ({sp.method}"
            + (f", {sp.n_segments} segments)" if sp.method == "slic" else f", scale {sp.scale:g})")
        )
    extra = f" ({' '.join(s.overrides)})" if s.overrides else ""
    return f"inference {s.name}: {' + '.join(parts)}{extra}"
