"""Classical (pre-deep-learning) baselines that run in the same harness as the CNNs:
``model=pixel_forest`` and ``model=otsu``.

- ``PixelForest``: per-pixel features from scikit-image's ``multiscale_basic_features``
  (Gaussian-smoothed intensity, Sobel edges and Hessian-eigenvalue texture of each RGB channel at
  ``num_sigma`` scales from ``sigma_min`` to ``sigma_max`` pixels) classified by scikit-learn's
  ``RandomForestClassifier`` (Breiman 2001), trained on a seeded sample of labelled pixels per class
  of the training split: the "trainable segmentation" recipe of ilastik (Sommer et al. 2011) and
  scikit-image's own example.
- ``OtsuThreshold`` (binary tasks): a gray-level threshold picked by Otsu's method (Otsu 1979,
  "A Threshold Selection Method from Gray-Level Histograms") on the pooled histogram of the
  training images, with the side that is foreground learned from the masks.

Both are ``nn.Module``s whose ``forward(x: (N, 3, H, W) float, normalised as in training) ->
(N, C, H, W) float32`` gives log-probabilities (PixelForest) or +-1 scores (Otsu), so eval,
predict, ``--inference`` post-processing and the run folder work unchanged. Both subclass
``ClassicalModel``: training fits them once with ``fit(loader, seed, ignore_index, budget)``
(training/classical_fit.py) instead of gradient steps, and ``segcli bench`` and ``segcli export``
refuse them (no optimizer step to time, no torch graph to export).

The fitted forest travels inside the checkpoint as a ``uint8`` buffer holding scikit-learn's
model in skops' format, so ``best.pt`` stays a plain tensor file loaded with
``torch.load(weights_only=True)``; skops rebuilds the forest without pickle and without running
code, and only the types a forest is made of are allowed (``load_forest``). The feature
extraction and the forest are the libraries'; the glue is ours because no library puts a
pixel classifier behind a segmentation model's interface.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from segcli.errors import SegcliError
from segcli.preprocessing import denormalize

#: the types a scikit-learn random forest is made of that skops does not trust by default
FOREST_TYPES = ["sklearn.tree._tree.Tree"]


def require_classical():
    """scikit-image, scikit-learn and skops, or one line naming the extra.

    Raises:
        SegcliError: one of them is not installed."""
    try:
        import skimage.feature  # noqa: F401
        import sklearn.ensemble  # noqa: F401
        import skops.io  # noqa: F401
    except ImportError as exc:
        raise SegcliError(
            f"model=pixel_forest / otsu need scikit-image, scikit-learn and skops "
            f"({exc.name} is missing): pip install 'segcli[classical]'"
        ) from None


def to_rgb(x: torch.Tensor) -> np.ndarray:
    """``(N, H, W, 3) float32`` RGB in [0, 1] of normalised ``x: (N, 3, H, W)`` (ImageNet
    mean/std)."""
    return denormalize(x).astype(np.float32) / 255


def gray_levels(x: torch.Tensor) -> np.ndarray:
    """``(N, H, W) uint8`` gray levels (ITU-R BT.601 luma, as OpenCV and scikit-image) of normalised
    ``x``."""
    luma = denormalize(x).astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.round(luma).clip(0, 255).astype(np.uint8)


def sample_pixels(
    mask: np.ndarray, per_class: int, ignore_index: int, rng: np.random.Generator
) -> np.ndarray:
    """Flat indices of at most ``per_class`` random pixels of each class in ``mask: (H, W) int``
    (``ignore_index`` left out), sorted."""
    flat = mask.reshape(-1)
    picked = []
    for c in np.unique(flat):
        if c == ignore_index:
            continue
        where = np.flatnonzero(flat == c)
        picked.append(
            where if len(where) <= per_class else rng.choice(where, per_class, replace=False)
        )
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


class FitStopped(Exception):
    """A stop was requested while a baseline gathered its training pixels; nothing was fitted."""


class ClassicalModel(nn.Module):
    """A classical baseline: fitted once from the training split's batches (``fit``), not trained
    by gradient steps; ``forward(x: (N, 3, H, W) float) -> (N, C, H, W) float32`` scores.

    Args:
        num_classes: C.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def fit(
        self,
        loader,
        seed: int,
        ignore_index: int,
        budget=None,
        on_image: Callable[[], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> int:
        """Fit on ``loader``'s batches (image (N, 3, H, W) float normalised, mask (N, H, W) int64;
        ``ignore_index`` not labelled) until ``budget.spent()`` (``engine.Budget``; None: the
        whole loader), seeded by ``seed``; ``on_image()`` after each image. Returns the images
        used.

        Raises:
            SegcliError: no labelled pixel in the training split.
            FitStopped: ``should_stop()`` (asked between batches) became True; nothing is fitted.
        """
        raise NotImplementedError

    @staticmethod
    def _batches(loader, budget, should_stop: Callable[[], bool] | None):
        """The training batches one at a time as (normalised images, masks as numpy), until
        ``budget.spent()``; nothing is kept (the fits stream).

        Raises:
            FitStopped: ``should_stop()`` became True (SIGINT/SIGTERM) between two batches."""
        for batch in loader:
            if should_stop is not None and should_stop():
                raise FitStopped
            yield batch["image"].float(), batch["mask"].numpy()
            if budget is not None and budget.spent():
                break


class PixelForest(ClassicalModel):
    """Random forest on multi-scale pixel features (see the module docstring).

    Args:
        num_classes: C; classes absent from the training sample get probability 0.
        sigma_min, sigma_max, num_sigma: the feature scales in pixels (``num_sigma`` None:
            one per octave, scikit-image's default).
        intensity, edges, texture: which feature families (scikit-image's flags).
        n_estimators, max_depth, min_samples_leaf: the forest's (scikit-learn's names).
        pixels_per_image: labelled pixels drawn per class per training image.
        pixels_per_class: cap on the drawn pixels per class over the whole split.
    """

    def __init__(
        self,
        num_classes: int,
        sigma_min: float = 1.0,
        sigma_max: float = 16.0,
        num_sigma: int | None = None,
        intensity: bool = True,
        edges: bool = True,
        texture: bool = True,
        n_estimators: int = 100,
        max_depth: int | None = 20,
        min_samples_leaf: int = 1,
        pixels_per_image: int = 200,
        pixels_per_class: int = 20000,
    ) -> None:
        super().__init__(num_classes)
        require_classical()
        self.features_kw = {
            "sigma_min": sigma_min,
            "sigma_max": sigma_max,
            "num_sigma": num_sigma,
            "intensity": intensity,
            "edges": edges,
            "texture": texture,
        }
        self.forest_kw = {
            "n_estimators": n_estimators,
            "max_depth": max_depth,
            "min_samples_leaf": min_samples_leaf,
        }
        self.pixels_per_image, self.pixels_per_class = pixels_per_image, pixels_per_class
        self.register_buffer("forest_bytes", torch.zeros(0, dtype=torch.uint8))
        self._forest = None

    def features(self, rgb: np.ndarray) -> np.ndarray:
        """``(H, W, F) float32`` features of one ``(H, W, 3)`` [0, 1] image."""
        from skimage.feature import multiscale_basic_features

        return multiscale_basic_features(rgb, channel_axis=-1, **self.features_kw).astype(
            np.float32
        )

    def fit(
        self,
        loader,
        seed: int,
        ignore_index: int,
        budget=None,
        on_image: Callable[[], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> int:
        """Fit the forest on pixels drawn from ``loader``'s batches (image (N, 3, H, W) float,
        mask (N, H, W) int64; ``ignore_index`` not labelled) until ``budget.spent()``; returns the
        images used. Seeded by ``seed``. ``on_image()`` after each image's features.

        Raises:
            SegcliError: no labelled pixel in the training split.
            FitStopped: ``should_stop()`` (asked between batches) became True.
        """
        import skops.io as sio
        from sklearn.ensemble import RandomForestClassifier

        rng = np.random.default_rng(seed)
        xs, ys = [], []
        for x, masks in self._batches(loader, budget, should_stop):
            for rgb, mask in zip(to_rgb(x), masks, strict=True):
                keep = sample_pixels(mask, self.pixels_per_image, ignore_index, rng)
                feats = self.features(rgb)
                xs.append(feats.reshape(-1, feats.shape[-1])[keep])
                ys.append(mask.reshape(-1)[keep])
                if on_image:
                    on_image()
        images = len(xs)
        if not xs or sum(len(y) for y in ys) == 0:
            raise SegcliError("model=pixel_forest: no labelled pixel in the training split")
        x_all, y_all = np.concatenate(xs), np.concatenate(ys)
        keep = np.concatenate(
            [
                c
                if len(c) <= self.pixels_per_class
                else rng.choice(c, self.pixels_per_class, replace=False)
                for c in (np.flatnonzero(y_all == k) for k in np.unique(y_all))
            ]
        )
        forest = RandomForestClassifier(**self.forest_kw, n_jobs=-1, random_state=seed)
        forest.fit(x_all[keep], y_all[keep])
        forest.n_jobs = 1  # prediction: one process per image is what eval's loader gives
        self.forest_bytes = torch.frombuffer(
            bytearray(sio.dumps(forest)), dtype=torch.uint8
        ).clone()
        self._forest = forest
        return images

    @property
    def forest(self):
        """The fitted ``RandomForestClassifier`` (read from ``forest_bytes`` the first time).

        Raises:
            SegcliError: not fitted, or the bytes hold types other than a forest's."""
        if self._forest is None:
            if self.forest_bytes.numel() == 0:
                raise SegcliError(
                    "model=pixel_forest: the forest is not fitted (train the run first)"
                )
            self._forest = load_forest(bytes(self.forest_bytes.cpu().numpy().tobytes()))
        return self._forest

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        saved = state_dict.get(prefix + "forest_bytes")
        if saved is not None:  # a fitted forest has its own size: take the saved one's
            self.forest_bytes = torch.zeros_like(saved)
            self._forest = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        forest, out = (
            self.forest,
            np.full((n, self.num_classes, h * w), np.log(1e-6), dtype=np.float32),
        )
        for i, rgb in enumerate(to_rgb(x)):
            feats = self.features(rgb).reshape(h * w, -1)
            proba = forest.predict_proba(feats).T.astype(np.float32)
            out[i, forest.classes_.astype(int)] = np.log(np.maximum(proba, 1e-6))
        return torch.from_numpy(out.reshape(n, self.num_classes, h, w)).to(x.device)


def load_forest(data: bytes):
    """A scikit-learn forest from skops bytes, trusting only the types a forest is made of (skops
    itself trusts scikit-learn's estimators and builds no other object without being told to).

    Raises:
        SegcliError: the bytes name any other type, or hold something other than a forest (they
            may not be what segcli wrote)."""
    import skops.io as sio

    untrusted = [t for t in sio.get_untrusted_types(data=data) if t not in FOREST_TYPES]
    if untrusted:
        raise SegcliError(
            f"model=pixel_forest: the checkpoint's forest holds types segcli does not load: "
            f"{', '.join(untrusted[:3])}"
        )
    from sklearn.ensemble import RandomForestClassifier

    forest = sio.loads(data, trusted=FOREST_TYPES)
    if not isinstance(forest, RandomForestClassifier):
        raise SegcliError(
            f"model=pixel_forest: the checkpoint holds a {type(forest).__name__}, not a random "
            "forest"
        )
    return forest


class OtsuThreshold(ClassicalModel):
    """Gray-level threshold for binary tasks (see the module docstring).

    ``forward`` returns scores ``(N, 2, H, W)``: +1 on the predicted class, -1 on the other.
    Buffers: ``threshold`` (gray level 0..255; pixels above it are on the "bright" side) and
    ``bright_is_foreground`` (1.0 when the bright side is class 1).

    Raises:
        SegcliError: (construction) ``num_classes`` is not 2.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes)
        if num_classes != 2:
            raise SegcliError(
                f"model=otsu: a threshold separates 2 classes; this dataset has {num_classes}"
            )
        require_classical()
        self.register_buffer("threshold", torch.tensor(127.0))
        self.register_buffer("bright_is_foreground", torch.tensor(1.0))

    def fit(
        self,
        loader,
        seed: int,
        ignore_index: int,
        budget=None,
        on_image: Callable[[], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> int:
        """Otsu's threshold of the pooled 256-bin gray histogram of the training images, then the
        side of it that agrees with more labelled pixels is class 1; returns the images used.

        Raises:
            SegcliError: no labelled pixel in the training split.
            FitStopped: ``should_stop()`` (asked between batches) became True."""
        from skimage.filters import threshold_otsu

        # one pass: the gray histogram of every pixel, and of the labelled ones per class
        hist, labelled = np.zeros(256, dtype=np.int64), np.zeros((256, 2), dtype=np.int64)
        images = 0
        for x, masks in self._batches(loader, budget, should_stop):
            g = gray_levels(x)
            hist += np.bincount(g.reshape(-1), minlength=256)
            keep = masks != ignore_index
            labelled += np.bincount(
                g[keep].astype(np.int64) * 2 + masks[keep], minlength=512
            ).reshape(256, 2)
            images += len(g)
            if on_image:
                for _ in range(len(g)):
                    on_image()
        if labelled.sum() == 0:
            raise SegcliError("model=otsu: no labelled pixel in the training split")
        t = float(threshold_otsu(hist=(hist, np.arange(256))))
        above = np.arange(256) > t
        agree_bright = labelled[above, 1].sum() + labelled[~above, 0].sum()  # bright = class 1
        self.threshold.fill_(t)
        self.bright_is_foreground.fill_(
            1.0 if agree_bright >= labelled.sum() - agree_bright else 0.0
        )
        return images

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.from_numpy(gray_levels(x)).to(x.device).float()
        fg = (g > self.threshold) == (self.bright_is_foreground > 0.5)
        score = fg.float() * 2 - 1
        return torch.stack([-score, score], 1)
