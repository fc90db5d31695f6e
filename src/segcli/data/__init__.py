"""data: files -> samples. The ``dataset`` group parsed once (``settings``: ``DatasetSettings``,
its defaults read from conf/dataset/*.yaml, and the classes, ``DatasetInfo``); image and mask files
read as stored (``images``); which image goes with which mask by name and list files (``pairing``);
the file layouts of folders and benchmarks, each described once (``layouts``: ``Layout`` in the
``LAYOUTS`` registry: folders, CamVid, VOC, Cityscapes, ADE20K) and where weak-label files' training
images are (``weak_images``); mask values -> classes
(``masks``); the datasets and the up-front pair check (``readers``), its per-file cache
(``pair_cache``), the synthetic dataset (``synthetic``); sampler and loader (``loaders``); the
augmentation pipelines (``augment``); the ``dataset`` group -> the splits' datasets (``datasets``:
the ``KINDS`` registry) and ``segcli data doctor`` (``doctor``, its mask-encoding guess in
``mask_guess``). task=instance: the readers' interface (``instances``: ``InstanceSource``) over
``instance_readers/`` (COCO JSON, labelme, VOC SegmentationObject, Cityscapes instanceIds), the
datasets (``instance_datasets``: ``INSTANCE_KINDS``), masks and boxes augmented together
(``instance_augment``) and the doctor's instance formats (``instance_doctor``).

May import: the top level (errors, config, registry, console, runtime, files, preprocessing,
tasks).
Never imports: models, losses, metrics, runs, training, inference, reports, cli (checked by the
import contracts in pyproject.toml, ``lint-imports``).
"""
