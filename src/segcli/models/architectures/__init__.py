"""Architectures written here because no maintained package has them (each module says why):
``fcn`` (FCN-8s/16s/32s, Long et al. 2015), ``fastfcn`` (JPU + ASPP, Wu et al. 2019),
``fcdensenet`` (FC-DenseNet 56/67/103, Jégou et al. 2017). ``models/builders.py`` registers them
beside segmentation-models-pytorch's and torchvision's; ``models/classical.py`` holds the non-CNN
baselines.
"""
