"""FCN-32s, FCN-16s and FCN-8s: Long, Shelhamer and Darrell, "Fully Convolutional Networks for
Semantic Segmentation", CVPR 2015 (arXiv:1411.4038), section 4 and Fig. 3.

Written here: torchvision's ``fcn_resnet50`` is an FCN *head* on a ResNet, not the paper's VGG16
network, and no maintained package has the latter. Checked layer by layer against the authors'
Caffe definition (github.com/shelhamer/fcn.berkeleyvision.org, ``voc-fcn8s/net.py``) and its PyTorch
port (github.com/wkentaro/pytorch-fcn, ``torchfcn/models/fcn8s.py``):

- VGG16's 13 convolutions with 100 pixels of zero padding before the first one and pools that
  round up (Caffe's), so that any input size gives score maps covering the image;
- fc6/fc7 as convolutions (7x7 with 4096 maps, then 1x1), ReLU and dropout 0.5;
- ``score_fr`` (1x1 to the classes) and, for 16s/8s, ``score_pool4`` / ``score_pool3`` skip scores
  (zero-initialised, as the paper does for every class-scoring layer);
- transposed convolutions without bias (2x: kernel 4; 8x: 16; 16x: 32; 32x: 64) initialised to
  bilinear interpolation (``bilinear_kernel``; the paper: "initialized to bilinear upsampling",
  then learned) and the Caffe crop offsets (5 and 9 for the skips, 31 / 27 / 19 for the output).

``batch_norm=True`` takes torchvision's ``vgg16_bn`` layers instead (not in the paper; helps a
from-scratch start). A torchvision VGG16 weights file (``vgg16-397923af.pth``) is loaded with its
fully connected fc6/fc7 reshaped into convolutions, as the paper converts the classifier.
"""

from __future__ import annotations

import numpy as np
import torch
import torchvision
from torch import nn

#: final upsampling (kernel, stride, crop offset) per output stride, from voc-fcn{8,16,32}s/net.py
FINAL = {8: (16, 8, 31), 16: (32, 16, 27), 32: (64, 32, 19)}


def bilinear_kernel(channels: int, size: int) -> torch.Tensor:
    """Weights ``(channels, channels, size, size) float32`` of a transposed convolution that does
    bilinear upsampling of each channel on its own (zero between channels): the 1-D filter is
    ``1 - |i - c| / f`` with ``f = ceil(size / 2)`` and ``c = f - 1`` (size odd) or ``f - 0.5``
    (size even), the outer product of two of them in 2-D. Source: Caffe's ``BilinearFiller`` and
    FCN's ``surgery.upsample_filt``."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = np.ogrid[:size, :size]
    filt = (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)
    weight = np.zeros((channels, channels, size, size), dtype=np.float32)
    weight[range(channels), range(channels)] = filt
    return torch.from_numpy(weight)


def _upsample(channels: int, size: int, stride: int) -> nn.ConvTranspose2d:
    up = nn.ConvTranspose2d(channels, channels, size, stride=stride, bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_kernel(channels, size))
    return up


def _score(channels: int, num_classes: int) -> nn.Conv2d:
    conv = nn.Conv2d(channels, num_classes, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class FCN(nn.Module):
    """The VGG16 FCN of Long et al. (see the module docstring).

    Args:
        num_classes: output channels C.
        stride: 8 (FCN-8s, pool3 and pool4 skips), 16 (FCN-16s, pool4 skip) or 32 (FCN-32s).
        batch_norm: VGG16 with batch normalisation (torchvision's ``vgg16_bn``) instead of plain
        VGG16.

    ``forward(x: (N, in_channels, H, W) float) -> (N, C, H, W) float`` logits, any H and W.

    Raises:
        ValueError: ``stride`` is not 8, 16 or 32.
    """

    def __init__(
        self, num_classes: int, in_channels: int = 3, stride: int = 8, batch_norm: bool = False
    ) -> None:
        super().__init__()
        if stride not in FINAL:
            raise ValueError(f"stride={stride}: expected 8, 16 or 32")
        self.stride = stride
        vgg = (torchvision.models.vgg16_bn if batch_norm else torchvision.models.vgg16)(
            weights=None
        )
        self.features = vgg.features
        first = self.features[0]
        self.features[0] = nn.Conv2d(in_channels, first.out_channels, 3, padding=100)
        pools = [i for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d)]
        for i in pools:
            self.features[i] = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.pool3, self.pool4 = pools[2], pools[3]
        self.fc = nn.Sequential(
            nn.Conv2d(512, 4096, 7),
            nn.ReLU(inplace=True),
            nn.Dropout2d(0.5),
            nn.Conv2d(4096, 4096, 1),
            nn.ReLU(inplace=True),
            nn.Dropout2d(0.5),
        )
        for conv in (self.fc[0], self.fc[3]):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        self.score_fr = _score(4096, num_classes)
        if stride <= 16:
            self.score_pool4, self.upscore2 = _score(512, num_classes), _upsample(num_classes, 4, 2)
        if stride == 8:
            self.score_pool3, self.upscore_pool4 = (
                _score(256, num_classes),
                _upsample(num_classes, 4, 2),
            )
        size, step, self.offset = FINAL[stride]
        self.upscore = _upsample(num_classes, size, step)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, taps = x, {}
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in (self.pool3, self.pool4):
                taps[i] = h
        h = self.score_fr(self.fc(h))
        if self.stride <= 16:
            h = self.upscore2(h)
            h = h + _crop(self.score_pool4(taps[self.pool4]), 5, h)
        if self.stride == 8:
            h = self.upscore_pool4(h)
            h = h + _crop(self.score_pool3(taps[self.pool3]), 9, h)
        h = self.upscore(h)
        return h[
            ..., self.offset : self.offset + x.shape[-2], self.offset : self.offset + x.shape[-1]
        ]

    def load_vgg16(self, state: dict[str, torch.Tensor]) -> tuple[int, int]:
        """Copy a torchvision VGG16 state dict (``features.*``, ``classifier.0/3.*``) into the
        network, fc6/fc7 reshaped to 7x7 and 1x1 convolutions; the first convolution keeps its
        shape (in_channels 3). Returns (tensors copied, tensors of the file not used)."""
        own, used = self.state_dict(), 0
        renamed = {
            "classifier.0.weight": ("fc.0.weight", (4096, 512, 7, 7)),
            "classifier.0.bias": ("fc.0.bias", None),
            "classifier.3.weight": ("fc.3.weight", (4096, 4096, 1, 1)),
            "classifier.3.bias": ("fc.3.bias", None),
        }
        for key, value in state.items():
            name, shape = renamed.get(key, (key, None))
            value = value.reshape(shape) if shape else value
            if name in own and own[name].shape == value.shape:
                own[name] = value
                used += 1
        self.load_state_dict(own)
        return used, len(state) - used


def _crop(score: torch.Tensor, offset: int, like: torch.Tensor) -> torch.Tensor:
    return score[..., offset : offset + like.shape[-2], offset : offset + like.shape[-1]]
