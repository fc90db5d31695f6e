"""The post-processing of class probabilities (the ``crf`` and ``superpixels`` keys of the
``inference`` config group): their settings, how the config section becomes them, and the two
refinements themselves.

- ``crf``: dense CRF refinement of the probabilities (Krähenbühl and Koltun 2011, "Efficient
  Inference in Fully Connected CRFs with Gaussian Edge Potentials"; the DeepLab papers' CNN +
  fully connected CRF) by pydensecrf2, the optional extra ``segcli[crf]``.
- ``superpixels``: majority vote of the predicted labels inside each superpixel, SLIC (Achanta et
  al. 2012) or Felzenszwalb-Huttenlocher (2004) from scikit-image: the classical post-processing
  that snaps label borders to colour edges.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from segcli.errors import SegcliError


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
    (``n_segments`` superpixels, ``compactness``: colour vs space, ``sigma`` pre-smoothing in
    pixels) or ``felzenszwalb`` (``scale``: larger gives larger segments, ``sigma``,
    ``min_size`` in pixels)."""

    method: str = "slic"
    n_segments: int = 400
    compactness: float = 10.0
    scale: float = 100.0
    sigma: float = 0.8
    min_size: int = 20


def crf_settings(cfg) -> CrfSettings | None:
    """``inference.crf`` (a mapping, or None/False for none; ``enabled: false`` turns it off) as
    ``CrfSettings``, or None.

    Raises:
        SegcliError: an unknown key, iterations < 1 or a sigma <= 0 (names the key).
    """
    if cfg is None or cfg is False:
        return None
    cfg = dict(cfg)
    if not cfg.pop("enabled", True):
        return None
    known = set(CrfSettings.__dataclass_fields__)
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise SegcliError(
            f"inference.crf.{unknown[0]}: unknown key; expected enabled or one of "
            f"{', '.join(sorted(known))}"
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


def superpixel_settings(cfg) -> SuperpixelSettings | None:
    """``inference.superpixels`` (a mapping, or None/False for none) as ``SuperpixelSettings``, or
    None.

    Raises:
        SegcliError: an unknown key or method, n_segments < 1, scale <= 0, min_size < 1 or
            sigma < 0 (names the key).
    """
    if cfg is None or cfg is False:
        return None
    cfg = dict(cfg)
    known = set(SuperpixelSettings.__dataclass_fields__)
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise SegcliError(
            f"inference.superpixels.{unknown[0]}: unknown key; expected one of "
            f"{', '.join(sorted(known))}"
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
            "inference.superpixels: expected n_segments >= 1, scale > 0, min_size >= 1, "
            f"sigma >= 0, got {asdict(settings)}"
        )
    return settings


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

    ``probs: (N, C, H, W) float`` class scores, ``images: (N, H, W, 3) uint8`` RGB. Returns
    ``(N, C, H, W) float32`` on ``probs``' device: per pixel, the share of its superpixel's pixels
    predicted as each class (so the argmax is the superpixel's majority label, ties to the lower
    class index). Superpixels: scikit-image's ``slic`` or ``felzenszwalb`` with ``settings``. Runs
    on the CPU.
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
