"""models: the ``model`` group. ``build`` (``MODELS``: SMP's architectures, torchvision's, ours;
``segcli models`` facts; a checkpoint's model), ``weights`` (weights into a model and local
encoder files, each failure one line), ``architectures/`` (FCN-8s, FastFCN, FC-DenseNet, written
here), ``classical`` (pixel forest, Otsu) and ``amx_guard`` (float32 for the convolutions that
crash torch's bf16 weight gradient on AMX CPUs).

May import: the top level only. Never imports: data, losses, metrics, runs, training, inference,
reports, cli (import contracts in pyproject.toml).
"""
