"""Instance-segmentation annotation readers, one module per kind of file: COCO instances JSON
(``coco``), labelme JSON (``labelme``), the index maps of PASCAL VOC and Cityscapes
(``index_maps``), their common types (``base``) and the format guess of ``segcli data doctor``
(``detect``). The public names are re-exported by ``segcli.data.instances``."""
