"""data: files -> samples. Image reading and pair checks (``readers``), which files pair up
(``layouts``: folders, CamVid, VOC, Cityscapes, ADE20K), mask decoding (``masks``), the synthetic
dataset (``synthetic``), the per-file cache of the pair check (``pair_cache``), the augmentation
pipelines (``augment``), the ``dataset`` group -> the splits' datasets (``datasets``) and
``segcli data doctor`` (``doctor``).

May import: the top level (errors, config, registry, console, runtime, files, preprocessing).
Never imports: models, losses, metrics, runs, training, inference, reports, cli (checked by the
import contracts in pyproject.toml, ``lint-imports``).
"""
