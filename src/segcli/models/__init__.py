"""models: the ``model`` group. ``build`` (``build_model``, ``segcli models`` facts, a
checkpoint's model), ``builders`` (``MODELS``: SMP's architectures, torchvision's, ours, the
classical ones), ``weights`` (weights into a model and local encoder files, each failure one
line), ``architectures/`` (FCN-8s, FastFCN, FC-DenseNet, written here), ``classical`` (pixel
forest, Otsu), ``amx_guard`` (float32 for the convolutions that crash torch's bf16 weight
gradient on AMX CPUs) and ``instance`` (task=instance: torchvision's Mask R-CNN,
``INSTANCE_MODELS``).

May import: the top level only. Never imports: data, losses, metrics, runs, training, inference,
reports, cli (import contracts in pyproject.toml).
"""
