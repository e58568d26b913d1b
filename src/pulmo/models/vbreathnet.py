"""V-BreathNet (Nagullas et al., chest X-ray): a small CNN whose filters go 128 -> 32 -> 128.

The paper gives the pattern, not a layer table: blocks of convolution -> batch norm ->
max-pool -> dropout with ReLU, filters "spanning from 128 to 32 and back to 128", 64
filters before flattening, a 512-unit dense layer, softmax over 3 classes, 792,291
parameters. The reconstruction here reproduces that count exactly (as Keras counts it,
batch-norm moving statistics included) with 3-channel 256 x 256 input:

    conv 3x3 filters 128, 64, 32, 64, 128, 64 (ReLU, "same" padding), each followed by
    batch norm, 2x2 max-pool and dropout  ->  4 x 4 x 64 = 1024 features  ->
    dense 512 (ReLU) -> batch norm -> dropout -> dense 3

= 790,307 trainable parameters + 1,984 batch-norm running statistics = 792,291. An
adaptive max-pool to 4 x 4 before flattening (the identity at 256 px) keeps that count at
any input size, so the CPU runs here can use 128 px. Logits come out; the softmax is in the
loss (cross-entropy) and in inference.
"""

from __future__ import annotations

import torch
from torch import nn

from pulmo.models import MODELS

PAPER_FILTERS: tuple[int, ...] = (128, 64, 32, 64, 128, 64)


class VBreathNet(nn.Module):
    """V-BreathNet over ``(B, C, H, W)`` images.

    Args:
        num_classes: output logits (3: Covid, Normal, Viral Pneumonia).
        in_chans: input channels (1 for grayscale; the paper's Keras model took 3).
        filters: filters of the conv blocks, the "V".
        dense: units of the hidden dense layer.
        conv_dropout, dense_dropout: dropout after each conv block and after the dense layer.
    """

    def __init__(self, num_classes: int = 3, in_chans: int = 1, filters: tuple[int, ...] | list[int] = PAPER_FILTERS,
                 dense: int = 512, conv_dropout: float = 0.2, dense_dropout: float = 0.5) -> None:
        super().__init__()
        self.num_classes = num_classes
        blocks: list[nn.Module] = []
        prev = in_chans
        for f in filters:
            blocks.append(nn.Sequential(
                nn.Conv2d(prev, f, 3, padding=1), nn.ReLU(inplace=True), nn.BatchNorm2d(f),
                nn.MaxPool2d(2, ceil_mode=True), nn.Dropout(conv_dropout),
            ))
            prev = f
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveMaxPool2d(4)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(prev * 16, dense), nn.ReLU(inplace=True), nn.BatchNorm1d(dense),
            nn.Dropout(dense_dropout), nn.Linear(dense, num_classes),
        )

    @property
    def cam_layer(self) -> nn.Module:
        """The last convolution block's batch norm (before its pooling): what Grad-CAM reads."""
        return self.blocks[-1][2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, num_classes)`` logits."""
        if x.ndim != 4:
            raise ValueError(f"expected input of shape (B, C, H, W), got {tuple(x.shape)}")
        return self.head(self.pool(self.blocks(x)))


def keras_parameter_count(model: nn.Module) -> int:
    """Parameters as Keras counts them: trainable ones plus batch-norm moving mean and variance."""
    bn = sum(m.running_mean.numel() + m.running_var.numel() for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None)
    return sum(p.numel() for p in model.parameters()) + bn


MODELS.add("vbreathnet", VBreathNet)
