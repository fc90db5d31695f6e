"""FastFCN: Joint Pyramid Upsampling (JPU) on a plain (undilated) encoder with a DeepLabv3 ASPP
head. Wu, Zhang, Huang, Liang and Yu, "FastFCN: Rethinking Dilated Convolution in the Backbone
for Semantic Segmentation", arXiv:1903.11816 (2019), section 3 and Fig. 4.

Written here: the authors' package (torch-encoding) needs CUDA extensions to build and is no
longer maintained, and no other maintained package has JPU. Checked against the authors' code
(github.com/wuhuikai/FastFCN, ``encoding/nn/customize.py`` class ``JPU``): each of the stride
8/16/32 encoder features goes through a 3x3 convolution to ``width`` maps (BN, ReLU); the stride
16 and 32 maps are upsampled bilinearly (align_corners=True, as there) to stride 8 and the three
concatenated; four separable convolutions (3x3 depthwise with dilation 1, 2, 4 and 8, BN,
pointwise to ``width``; then BN, ReLU) run on that in parallel and their outputs are concatenated
(4 x ``width`` maps at stride 8). The head is segmentation-models-pytorch's DeepLabv3 ASPP
(rates 12, 24, 36: DeepLabv3's rates at output stride 8), a 3x3 conv, a 1x1 classifier, and
bilinear upsampling to the input size. The encoder is any SMP encoder (default ResNet-50).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.decoders.deeplabv3.decoder import ASPP
from torch import nn


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class SeparableConv2d(nn.Sequential):
    """3x3 depthwise convolution with ``dilation`` (BN after it), then a 1x1 pointwise one:
    ``(N, cin, H, W) -> (N, cout, H, W)``."""

    def __init__(self, cin: int, cout: int, dilation: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cin, 3, padding=dilation, dilation=dilation, groups=cin, bias=False),
            nn.BatchNorm2d(cin),
            nn.Conv2d(cin, cout, 1, bias=False),
        )


class JPU(nn.Module):
    """Joint Pyramid Upsampling (see the module docstring).

    ``forward(c3: (N, in_channels[0], H/8, W/8), c4: (N, in_channels[1], H/16, W/16),
    c5: (N, in_channels[2], H/32, W/32)) -> (N, 4 * width, H/8, W/8)``.
    """

    def __init__(
        self, in_channels: Sequence[int], width: int = 512, dilations: Sequence[int] = (1, 2, 4, 8)
    ) -> None:
        super().__init__()
        self.convs = nn.ModuleList(_conv_bn_relu(c, width) for c in in_channels)
        self.dilated = nn.ModuleList(
            nn.Sequential(
                SeparableConv2d(len(in_channels) * width, width, d),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            )
            for d in dilations
        )

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        maps = [conv(f) for conv, f in zip(self.convs, features, strict=True)]
        size = maps[0].shape[-2:]
        maps = [maps[0]] + [
            F.interpolate(m, size=size, mode="bilinear", align_corners=True) for m in maps[1:]
        ]
        joint = torch.cat(maps, 1)
        return torch.cat([branch(joint) for branch in self.dilated], 1)


class FastFCN(nn.Module):
    """An encoder (SMP's, ``depth=5``) + JPU + ASPP head (see the module docstring).

    Args:
        encoder: an SMP encoder returning 6 feature maps (strides 1, 2, 4, 8, 16, 32) with
            ``out_channels``.
        num_classes: output channels C.
        width: JPU's maps per branch (512 in the paper).
        aspp_channels: ASPP's output maps (256, DeepLabv3's).
        atrous_rates: ASPP's dilation rates.

    ``forward(x: (N, in_channels, H, W) float) -> (N, C, H, W) float`` logits, any H and W >= 32.
    """

    def __init__(
        self,
        encoder: nn.Module,
        num_classes: int,
        width: int = 512,
        aspp_channels: int = 256,
        atrous_rates: Sequence[int] = (12, 24, 36),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.jpu = JPU(list(encoder.out_channels)[-3:], width)
        self.head = nn.Sequential(
            ASPP(4 * width, aspp_channels, tuple(atrous_rates), separable=False, dropout=0.5),
            _conv_bn_relu(aspp_channels, aspp_channels),
            nn.Dropout2d(dropout),
            nn.Conv2d(aspp_channels, num_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        scores = self.head(self.jpu(*features[-3:]))
        return F.interpolate(scores, size=x.shape[-2:], mode="bilinear", align_corners=False)
