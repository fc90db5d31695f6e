"""How eval and predict turn an image batch into class scores: the ``inference`` config group
(conf/inference/: whole, slide, flip, multiscale, crf, ...).

- ``whole``: one forward pass over the padded image (validation during training always does this).
- ``slide``: tiles of ``crop`` pixels every ``stride`` pixels (default 2/3 of the crop, as
  MMSegmentation's Cityscapes configs; or ``overlap``, the fraction of a tile shared with the
  next, as nnU-Net's and MONAI's 0.5, giving a stride of ``crop x (1 - overlap)``), logits merged by averaging or by Gaussian weighting
  (nnU-Net; sigma = ``sigma`` x the tile, 1/8 by default). The tiling is MONAI's
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
  al. 2012) or Felzenszwalb-Huttenlocher (2004) from scikit-image: the classical post-processing that
  snaps label borders to colour edges. Combinable with every mode above (it runs last).

``Inference(settings, mean, std)(model, x)`` is the one entry point; it takes any callable
``model(x) -> logits`` (a torch module, or ``export.OnnxModel`` for ONNX bundles).
"""

from __future__ import annotations

import hashlib
import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from segcli.errors import SegcliError
from segcli.inference.loop import forward_at_scale

MODES = ("whole", "slide")
MERGES = ("mean", "gaussian")  # MONAI's names: "constant" and "gaussian"


@dataclass(frozen=True)
class CrfSettings:
    """Dense CRF parameters (pydensecrf's names). Defaults: DeepLab v2's released VOC settings
    (Chen et al. 2017, deeplab-public-ver2 ``run_densecrf.sh`` for ResNet-101: bilateral weight 4,
    spatial sigma 67 px, colour sigma 3; Gaussian smoothness weight 3, sigma 3 px), 10 mean-field
    iterations. Units: sigmas in pixels (xy) and 8-bit colour levels (rgb)."""

    iterations: int = 10
    bi_w: float = 4.0
    bi_xy_std: float = 67.0
    bi_rgb_std: float = 3.0
    pos_w: float = 3.0
    pos_xy_std: float = 3.0


@dataclass(frozen=True)
class SuperpixelSettings:
    """Superpixels for the majority vote (scikit-image's names and defaults). ``method``: ``slic``
    (``n_segments`` superpixels, ``compactness``: colour vs space, ``sigma`` pre-smoothing in pixels) or
    ``felzenszwalb`` (``scale``: larger gives larger segments, ``sigma``, ``min_size`` in pixels)."""

    method: str = "slic"
    n_segments: int = 400
    compactness: float = 10.0
    scale: float = 100.0
    sigma: float = 0.8
    min_size: int = 20


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
                32; a stride outside 1..crop; an overlap outside [0, 1) or set with a stride; a scale <= 0; a bad CRF value. Names the key.
        """
        cfg = dict(cfg)
        known = {f for f in cls.__dataclass_fields__ if f != "overrides"}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise SegcliError(
                f"inference.{unknown[0]}: unknown key; expected one of {', '.join(sorted(known))}"
            )
        mode = str(cfg.get("mode", "whole"))
        if mode not in MODES:
            raise SegcliError(f"inference.mode={mode}: expected one of {', '.join(MODES)}")
        merge = str(cfg.get("merge", "gaussian"))
        if merge not in MERGES:
            raise SegcliError(f"inference.merge={merge}: expected one of {', '.join(MERGES)}")
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
        scales = cfg.get("scales", (1.0,))
        scales = tuple(float(s) for s in ([scales] if isinstance(scales, (int, float)) else scales))
        if not scales or any(s <= 0 for s in scales):
            raise SegcliError(
                f"inference.scales={list(scales)}: expected positive resolution factors"
            )
        sigma = float(cfg.get("sigma", 0.125))
        tile_batch = int(cfg.get("tile_batch", 4))
        if sigma <= 0 or tile_batch < 1:
            raise SegcliError(
                f"inference.sigma={sigma}, tile_batch={tile_batch}: expected sigma > 0, tile_batch >= 1"
            )
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
            _crf_settings(cfg.get("crf")),
            _superpixel_settings(cfg.get("superpixels")),
            tuple(overrides),
        )


def _pair(value, key: str) -> tuple[int, int]:
    values = [value, value] if isinstance(value, (int, float)) else list(value)
    if len(values) != 2 or any(not float(v).is_integer() or v < 1 for v in values):
        raise SegcliError(
            f"{key}={value}: expected a positive integer or [height, width] in pixels"
        )
    return int(values[0]), int(values[1])


def _crf_settings(cfg) -> CrfSettings | None:
    if cfg is None or cfg is False:
        return None
    cfg = dict(cfg)
    if not cfg.pop("enabled", True):
        return None
    known = set(CrfSettings.__dataclass_fields__)
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise SegcliError(
            f"inference.crf.{unknown[0]}: unknown key; expected enabled or one of {', '.join(sorted(known))}"
        )
    settings = CrfSettings(
        **{k: (int(v) if k == "iterations" else float(v)) for k, v in cfg.items()}
    )
    if (
        settings.iterations < 1
        or min(settings.bi_xy_std, settings.bi_rgb_std, settings.pos_xy_std) <= 0
    ):
        raise SegcliError(
            f"inference.crf: expected iterations >= 1 and positive sigmas, got {asdict(settings)}"
        )
    return settings


def _superpixel_settings(cfg) -> SuperpixelSettings | None:
    if cfg is None or cfg is False:
        return None
    cfg = dict(cfg)
    known = set(SuperpixelSettings.__dataclass_fields__)
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise SegcliError(
            f"inference.superpixels.{unknown[0]}: unknown key; expected one of {', '.join(sorted(known))}"
        )
    defaults = SuperpixelSettings()
    settings = SuperpixelSettings(**{k: type(getattr(defaults, k))(v) for k, v in cfg.items()})
    if settings.method not in ("slic", "felzenszwalb"):
        raise SegcliError(
            f"inference.superpixels.method={settings.method}: expected slic or felzenszwalb"
        )
    if (
        settings.n_segments < 1
        or settings.scale <= 0
        or settings.min_size < 1
        or settings.sigma < 0
    ):
        raise SegcliError(
            f"inference.superpixels: expected n_segments >= 1, scale > 0, min_size >= 1, sigma >= 0, "
            f"got {asdict(settings)}"
        )
    return settings


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

    ``Inference(settings, mean, std)(model, x, scale)``: ``x: (N, 3, H, W) float`` normalised as
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
            _monai_sliding_window()  # import now (seconds), not inside the first timed batch

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
        """``(N, H, W, 3) uint8`` RGB images back from normalised ``x`` (rounded; ``preprocessing.denormalize``)."""
        from segcli.preprocessing import denormalize

        return denormalize(x, self.mean, self.std)


def slide(
    model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, s: InferenceSettings
) -> torch.Tensor:
    """Sliding-window logits ``(N, C, H, W)`` of ``x: (N, 3, H, W)`` (H, W multiples of 32) with
    MONAI's ``sliding_window_inference``: tiles of ``s.crop`` clamped to the image, ``s.stride``
    apart (the last tile of a row or column ends at the image's edge), merged by ``s.merge``. A
    tile that covers the image runs ``model(x)`` once, exactly the whole-image pass."""
    h, w = x.shape[-2:]
    roi = (min(s.crop[0], h), min(s.crop[1], w))
    if roi == (h, w):
        return model(x)
    sliding_window_inference = _monai_sliding_window()
    stride = s.stride_or_default()
    # MONAI takes an overlap fraction and steps int(roi * (1 - overlap)) pixels; the half pixel keeps
    # float rounding from turning a stride of 341 into 340.
    overlap = [
        0.0 if r == size else max(0.0, 1 - (min(st, r) + 0.5) / r)
        for r, st, size in zip(roi, stride, (h, w), strict=True)
    ]
    out = sliding_window_inference(
        x,
        roi,
        s.tile_batch,
        lambda t: model(t).float(),
        overlap=overlap,
        mode="constant" if s.merge == "mean" else "gaussian",
        sigma_scale=s.sigma,
        padding_mode="constant",
        cval=0.0,
    )
    return out.as_tensor() if hasattr(out, "as_tensor") else out


def _monai_sliding_window():
    """MONAI's ``sliding_window_inference``, imported on a separate thread the first time.

    MONAI's ``optional_import`` keeps the exceptions of optional modules that are missing, and with
    their tracebacks every frame of the stack that first imported MONAI, locals included. Imported
    from inside an eval loop, that kept the DataLoader's persistent workers alive until exit, where
    they blocked it. A thread's stack ends at the thread, so nothing of ours is kept."""
    if "monai.inferers" not in sys.modules:
        import threading

        thread = threading.Thread(
            target=importlib.import_module, args=("monai.inferers",), daemon=True
        )
        thread.start()
        thread.join()
    from monai.inferers import sliding_window_inference

    return sliding_window_inference


def require_crf():
    """The pydensecrf module.

    Raises:
        SegcliError: pydensecrf2 is not installed (one line naming the extra)."""
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError:
        raise SegcliError(
            "inference.crf needs pydensecrf2: pip install 'segcli[crf]' "
            "(builds from source; needs a C++ compiler)"
        ) from None
    return dcrf


def dense_crf(probs: torch.Tensor, images: np.ndarray, settings: CrfSettings) -> torch.Tensor:
    """Mean-field dense CRF (Krähenbühl and Koltun 2011) per image, with pydensecrf2.

    ``probs: (N, C, H, W) float`` class probabilities (unaries are their negative logs),
    ``images: (N, H, W, 3) uint8`` RGB for the bilateral kernel. Returns refined ``(N, C, H, W)
    float32`` probabilities on ``probs``' device. Runs on the CPU.
    """
    dcrf = require_crf()
    n, c, h, w = probs.shape
    out = np.empty((n, c, h, w), dtype=np.float32)
    p = probs.detach().float().cpu().numpy()
    for i in range(n):
        crf = dcrf.DenseCRF2D(w, h, c)
        unary = -np.log(np.clip(p[i], 1e-8, 1.0)).reshape(c, -1)
        crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
        crf.addPairwiseGaussian(sxy=settings.pos_xy_std, compat=settings.pos_w)
        crf.addPairwiseBilateral(
            sxy=settings.bi_xy_std,
            srgb=settings.bi_rgb_std,
            rgbim=np.ascontiguousarray(images[i]),
            compat=settings.bi_w,
        )
        out[i] = np.asarray(crf.inference(settings.iterations), dtype=np.float32).reshape(c, h, w)
    return torch.from_numpy(out).to(probs.device)


def require_skimage():
    """scikit-image's segmentation module.

    Raises:
        SegcliError: scikit-image is not installed (one line naming the extra)."""
    try:
        from skimage import segmentation
    except ImportError:
        raise SegcliError(
            "inference.superpixels needs scikit-image: pip install 'segcli[classical]'"
        ) from None
    return segmentation


def superpixel_vote(
    probs: torch.Tensor, images: np.ndarray, settings: SuperpixelSettings
) -> torch.Tensor:
    """Majority vote of the labels ``probs.argmax(1)`` inside each superpixel of each image.

    ``probs: (N, C, H, W) float`` class scores, ``images: (N, H, W, 3) uint8`` RGB. Returns ``(N, C, H,
    W) float32`` on ``probs``' device: per pixel, the share of its superpixel's pixels predicted as each
    class (so the argmax is the superpixel's majority label, ties to the lower class index).
    Superpixels: scikit-image's ``slic`` or ``felzenszwalb`` with ``settings``. Runs on the CPU.
    """
    segmentation = require_skimage()
    n, c, h, w = probs.shape
    labels = probs.argmax(1).cpu().numpy()
    out = np.empty((n, h, w, c), dtype=np.float32)
    for i in range(n):
        if settings.method == "slic":
            seg = segmentation.slic(
                images[i],
                n_segments=settings.n_segments,
                compactness=settings.compactness,
                sigma=settings.sigma,
                start_label=0,
                channel_axis=-1,
            )
        else:
            seg = segmentation.felzenszwalb(
                images[i],
                scale=settings.scale,
                sigma=settings.sigma,
                min_size=settings.min_size,
                channel_axis=-1,
            )
        segments = int(seg.max()) + 1
        votes = np.bincount((seg * c + labels[i]).reshape(-1), minlength=segments * c).reshape(
            segments, c
        )
        out[i] = (votes / np.maximum(votes.sum(1, keepdims=True), 1)).astype(np.float32)[seg]
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous().to(probs.device)


def describe(settings: InferenceSettings) -> str:
    """One line for the console: the preset and what it does."""
    s = settings
    parts = [
        s.mode
        if s.mode == "whole"
        else f"slide {s.crop[0]}x{s.crop[1]} stride {'x'.join(map(str, s.stride_or_default()))} {s.merge}"
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
