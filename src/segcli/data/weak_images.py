"""Where the training images of a dataset labelled by weak-label files are (``dataset.labels``
boxes/points/scribbles with ``dataset.weak_labels``; src/segcli/weak/): the folder
(``train_image_folder``) and, for layouts that list their training images, the names
(``weak_training_names``). The validation and test splits are found by data/layouts.py as usual.
"""

from __future__ import annotations

from pathlib import Path

from segcli.data.layouts import LAYOUTS, VOC_IMAGES, VOC_LISTS
from segcli.data.pairing import read_list
from segcli.data.settings import DatasetSettings
from segcli.errors import SegcliError


def train_image_folder(settings: DatasetSettings) -> Path:
    """The folder of the training images of a dataset labelled by weak-label files:
    ``dataset.weak_images`` (relative to root), else the layout's own training image folder
    (``train/`` of CamVid's SegNet layout, ``<image_dir>/train`` of ``dataset=folder``,
    ``JPEGImages`` of VOC).

    Raises:
        SegcliError: no root, the folder is missing, or the layout has no fixed training folder
            (naming ``dataset.weak_images``).
    """
    if settings.root is None:
        raise SegcliError("dataset.root: not set (set dataset.root=PATH)")
    root = Path(settings.root).expanduser()
    if settings.weak_images:
        folder = root / settings.weak_images
    else:
        layout = LAYOUTS.get(str(settings.layout), "dataset.layout")
        base = layout.base(root) or root
        if "train" in layout.folders:
            folder = base / layout.folders["train"][0]
        elif layout.name == "image_mask_dirs":
            folder = base / str(settings.image_dir) / "train"
        elif layout.name == "voc":
            folder = base / VOC_IMAGES
        else:
            raise SegcliError(
                f"dataset.layout={layout.name}: set dataset.weak_images to the training images' "
                "folder (relative to dataset.root)"
            )
    if not folder.is_dir():
        raise SegcliError(
            f"{folder}: training images not found; expected a folder (set dataset.weak_images "
            "relative to dataset.root)"
        )
    return folder


def weak_training_names(settings: DatasetSettings) -> set[str] | None:
    """The names of the training images of a layout that lists them (VOC: ``train.txt`` of
    ``ImageSets/Segmentation``, or ``aug_list`` with ``dataset.aug``, SBD's 10,582 images, as the
    box-supervised VOC papers train), for weak-label files that label more images than that
    (VOC's ``Annotations/`` covers every split); None: every image of ``train_image_folder``.

    Raises:
        SegcliError: a list file is missing or unreadable.
    """
    if settings.layout != "voc" or settings.weak_images:
        return None
    root = Path(str(settings.root)).expanduser()
    base = LAYOUTS.get("voc", "dataset.layout").base(root) or root
    source = base / (settings.aug_list if settings.aug else f"{VOC_LISTS}/train.txt")
    return {Path(e[0]).stem for e in read_list(source, base)}
