"""Instance-segmentation annotations -> ``(image, InstanceAnnotations)`` per image: the public
interface of the readers in ``segcli.data.instance_readers``.

Sources (each an ``InstanceSource``: ``len``, ``name``, ``file_name``, ``image_id``, ``load``;
``class_names`` background first and ``category_ids`` of classes 1..C-1): ``CocoSource`` (COCO
instances JSON + an image folder; ``coco_split_files`` finds them in COCO's layout),
``LabelmeSource`` (a folder of labelme JSON), ``VocInstanceSource`` (PASCAL VOC 2012
SegmentationObject), ``CityscapesInstanceSource`` (gtFine instanceIds). ``boxes_from_masks``:
masks -> xyxy boxes; ``detect_instance_format``: which format a folder holds.
"""

from segcli.data.instance_readers.base import (
    InstanceAnnotations,
    InstanceSource,
    boxes_from_masks,
)
from segcli.data.instance_readers.coco import CocoSource, coco_split_files
from segcli.data.instance_readers.detect import detect_instance_format
from segcli.data.instance_readers.index_maps import (
    CITYSCAPES_INSTANCE_CLASSES,
    VOC_CLASSES,
    CityscapesInstanceSource,
    VocInstanceSource,
)
from segcli.data.instance_readers.labelme import LabelmeSource

__all__ = [
    "CITYSCAPES_INSTANCE_CLASSES",
    "VOC_CLASSES",
    "CityscapesInstanceSource",
    "CocoSource",
    "InstanceAnnotations",
    "InstanceSource",
    "LabelmeSource",
    "VocInstanceSource",
    "boxes_from_masks",
    "coco_split_files",
    "detect_instance_format",
]
