"""inference: a trained model applied. ``loaded`` (``LoadedModel``: a checkpoint as a runnable
model with its preprocessing, classes and config; the one way eval, predict and export load one),
``loop`` (``evaluate``: the loop validation and ``segcli eval`` share; ``forward_at_scale``),
``modes`` (whole, slide, flip, multiscale, CRF, superpixels), ``gallery`` (sample strips and
worst-image galleries), ``evaluation`` (``segcli eval``: a checkpoint scored on a split, per-image
evidence) and ``eval_files`` (where evals are kept), ``predict`` (``segcli predict``), ``export``
(``segcli export``: ONNX bundles) and ``bundle`` (a bundle read back for ``segcli predict``).

May import: the top level, data, models, metrics, runs. Never imports: losses, training, reports,
cli (import contracts in pyproject.toml): ``segcli predict`` loads no training code.
"""
