"""inference: a trained model applied. ``loaded`` (``LoadedModel``: a checkpoint as a runnable
model with its preprocessing, classes and config; the one way eval, predict and export load one),
``loop`` (``evaluate``: the loop validation and ``segcli eval`` share; ``forward_at_scale``),
``modes`` (the ``inference`` presets and ``Inference``: whole, slide, flip, multiscale, CRF,
superpixels), ``sliding`` (slide: MONAI's tiling), ``refine`` (dense CRF and superpixel vote),
``gallery`` (sample strips and worst-image galleries), ``evaluation`` (``segcli eval``: a
checkpoint scored on a split, per-image evidence), ``eval_files`` (where evals are kept, read back
for compare and report), ``predict`` (``segcli predict``), ``export`` (``segcli export``: ONNX
bundles written), ``bundle`` (a bundle read back for ``segcli predict``), ``onnx_graph`` (torch ->
ONNX, ``OnnxModel`` on onnxruntime), ``parity`` (the ONNX graph against the checkpoint,
throughput); task=instance: ``instance_loop`` (its validation/eval loop: COCO AP and the pasted
masks' mIoU) and ``instance_predict`` (``segcli predict`` of an instance checkpoint).

May import: the top level, data, models, metrics, runs. Never imports: losses, training, reports,
cli (import contracts in pyproject.toml): ``segcli predict`` loads no training code.
"""
