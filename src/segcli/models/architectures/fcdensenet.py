"""FC-DenseNet ("The One Hundred Layers Tiramisu"), Jégou, Drozdzal, Vazquez, Romero and Bengio,
"The One Hundred Layers Tiramisu: Fully Convolutional DenseNets for Semantic Segmentation",
CVPR Workshops 2017 (arXiv:1611.09326), Table 1 and 2.

Written here: neither segmentation-models-pytorch, torchvision nor timm has it. Checked against the
authors' Lasagne code (github.com/SimJeg/FC-DenseNet, ``FC-DenseNet.py``) and the widely used
PyTorch port (github.com/bfortuner/pytorch_tiramisu): the layer is BN - ReLU - 3x3 conv - dropout
0.2; a dense block concatenates its layers' outputs to its input on the way down, and on the way up
passes on only the new feature maps (the paper's "to avoid a feature explosion"); transition down
is BN - ReLU - 1x1 conv - dropout - 2x2 max pool; transition up a 3x3 transposed convolution of
stride 2 whose output is cropped to the skip connection's size (so any input size works, not
only multiples of 32); a 1x1 convolution gives the class scores.

Parameter counts (``segcli models``; the paper's Table 2 in brackets): FC-DenseNet56 1.37M
[1.5M], FC-DenseNet67 3.47M [3.5M], FC-DenseNet103 9.32M [9.4M], for 11 classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

#: the paper's three networks: (layers per down block, bottleneck layers, growth rate)
VARIANTS = {
    "fcdensenet56": ((4, 4, 4, 4, 4), 4, 12),
    "fcdensenet67": ((5, 5, 5, 5, 5), 5, 16),
    "fcdensenet103": ((4, 5, 7, 10, 12), 15, 16),
}


class DenseLayer(nn.Sequential):
    """BN - ReLU - 3x3 conv (``growth`` maps) - dropout: ``(N, C, H, W) -> (N, growth, H, W)``."""

    def __init__(self, channels: int, growth: int, dropout: float) -> None:
        super().__init__(
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, growth, 3, padding=1, bias=True),
            nn.Dropout2d(dropout),
        )


class DenseBlock(nn.Module):
    """``layers`` dense layers, each fed the concatenation of the block's input and all earlier
    layers' outputs. ``forward(x: (N, C, H, W)) -> (N, C + layers*growth, H, W)`` when
    ``keep_input`` (down path), else ``(N, layers*growth, H, W)`` (up path)."""

    def __init__(
        self, channels: int, layers: int, growth: int, dropout: float, keep_input: bool
    ) -> None:
        super().__init__()
        self.keep_input = keep_input
        self.layers = nn.ModuleList(
            DenseLayer(channels + i * growth, growth, dropout) for i in range(layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = []
        for layer in self.layers:
            out = layer(x)
            x = torch.cat([x, out], 1)
            new.append(out)
        return x if self.keep_input else torch.cat(new, 1)


class TransitionDown(nn.Sequential):
    """BN - ReLU - 1x1 conv - dropout - 2x2 max pool: ``(N, C, H, W) -> (N, C, H//2, W//2)``."""

    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__(
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1),
            nn.Dropout2d(dropout),
            nn.MaxPool2d(2),
        )


class TransitionUp(nn.Module):
    """3x3 transposed conv, stride 2, cropped to the skip's size and concatenated with it:
    ``forward(x: (N, C, h, w), skip: (N, S, H, W)) -> (N, C + S, H, W)`` (H <= 2h + 1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        out = self.up(x)
        h, w = skip.shape[-2:]
        top, left = (out.shape[-2] - h) // 2, (out.shape[-1] - w) // 2
        return torch.cat([out[..., top : top + h, left : left + w], skip], 1)


class FCDenseNet(nn.Module):
    """FC-DenseNet (see the module docstring).

    Args:
        num_classes: output channels C.
        down_layers: layers of each down block; the up blocks mirror them.
        bottleneck_layers: layers of the block between the two paths.
        growth: maps each dense layer adds (k in the paper).
        first_channels: maps of the first 3x3 convolution (48 in the paper).
        dropout: dropout rate of every layer (0.2 in the paper).

    ``forward(x: (N, in_channels, H, W) float) -> (N, C, H, W) float`` logits, any H and W >= 32.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        down_layers: Sequence[int] = (4, 5, 7, 10, 12),
        bottleneck_layers: int = 15,
        growth: int = 16,
        first_channels: int = 48,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.first = nn.Conv2d(in_channels, first_channels, 3, padding=1, bias=True)
        channels, skips = first_channels, []
        self.down, self.pool = nn.ModuleList(), nn.ModuleList()
        for n in down_layers:
            self.down.append(DenseBlock(channels, n, growth, dropout, keep_input=True))
            channels += n * growth
            skips.append(channels)
            self.pool.append(TransitionDown(channels, dropout))
        self.bottleneck = DenseBlock(channels, bottleneck_layers, growth, dropout, keep_input=False)
        upsampled = bottleneck_layers * growth
        self.up, self.transitions = nn.ModuleList(), nn.ModuleList()
        for n, skip in zip(reversed(down_layers), reversed(skips), strict=True):
            self.transitions.append(TransitionUp(upsampled))
            channels = upsampled + skip
            last = len(self.up) == len(down_layers) - 1
            self.up.append(DenseBlock(channels, n, growth, dropout, keep_input=last))
            upsampled = n * growth
        self.head = nn.Conv2d(channels + n * growth, num_classes, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_uniform_(
                    m.weight, nonlinearity="relu"
                )  # HeUniform, as the authors' code
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first(x)
        skips = []
        for block, pool in zip(self.down, self.pool, strict=True):
            x = block(x)
            skips.append(x)
            x = pool(x)
        x = self.bottleneck(x)
        for transition, block in zip(self.transitions, self.up, strict=True):
            x = block(transition(x, skips.pop()))
        return self.head(x)


def fcdensenet(variant: str, num_classes: int, in_channels: int = 3, **params) -> FCDenseNet:
    """One of the paper's networks by name (``VARIANTS``); ``params`` override its settings
    (``growth``, ``dropout``, ``first_channels``, ``down_layers``, ``bottleneck_layers``).

    Raises:
        KeyError: ``variant`` is not one of ``VARIANTS``.
    """
    down, bottleneck, growth = VARIANTS[variant]
    settings = {"down_layers": down, "bottleneck_layers": bottleneck, "growth": growth, **params}
    return FCDenseNet(num_classes, in_channels, **settings)
