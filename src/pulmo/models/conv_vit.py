"""Convolution-Vision Transformer for lung sounds (Neto et al., 2022).

Stacked feature maps ``(B, C, F, T)`` (one channel each for MFCC, mel and CQT) go through

1. three independent 3x3 convolution branches, one per channel, that keep the map's size
   (a grouped convolution with ``groups=C``), batch norm and ReLU;
2. CBAM: channel attention (eq. 11), then 7x7 spatial attention (eq. 12);
3. a timm DeiT (tiny / small / base, plain or distilled) built for the map's size, whose
   class token (and distillation token, averaged, in the distilled variants) gives the logits.

``conv=False`` / ``attention=False`` drop steps 1 / 2 (the paper's Table II ablation).
Pretrained DeiT weights load from ``pretrained`` (a file path); without one the
transformer starts from scratch.
"""

from __future__ import annotations

from collections.abc import Sequence

import timm
import torch
from torch import nn

from pulmo.errors import ConfigError, DataError
from pulmo.models import MODELS
from pulmo.models.layers.cbam import CBAM
from pulmo.models.vit_weights import WeightReport, load_vit_weights

VIT_VARIANTS = (
    "deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224",
    "deit_tiny_distilled_patch16_224", "deit_small_distilled_patch16_224", "deit_base_distilled_patch16_224",
)


class BranchConv(nn.Module):
    """One 3x3 convolution per input channel, size-preserving: ``(B, C, H, W) -> (B, C, H, W)``.

    Output channel ``c`` depends on input channel ``c`` only.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1, groups=channels)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.norm(self.conv(x)))


class ConvViT(nn.Module):
    """``(B, in_chans, *input_size) -> (B, num_classes)`` logits; see the module docstring."""

    def __init__(
        self,
        num_classes: int,
        in_chans: int,
        input_size: Sequence[int],
        vit: str = "deit_tiny_patch16_224",
        conv: bool = True,
        attention: bool = True,
        cbam_reduction: int = 1,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        pretrained: str = "",
    ) -> None:
        super().__init__()
        if vit not in VIT_VARIANTS:
            raise ConfigError(f"unknown ViT {vit!r}; known: {list(VIT_VARIANTS)}")
        if len(input_size) != 2 or min(input_size) < 16:
            raise ConfigError(f"input_size must be (F, T), both >= 16 (one patch), got {tuple(input_size)}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.branches = BranchConv(in_chans) if conv else nn.Identity()
        self.attention = CBAM(in_chans, reduction=cbam_reduction) if attention else nn.Identity()
        self.vit = timm.create_model(
            vit, pretrained=False, num_classes=num_classes, in_chans=in_chans, img_size=self.input_size,
            drop_rate=drop_rate, drop_path_rate=drop_path_rate,
        )
        self.pretrained_report: WeightReport | None = load_vit_weights(self.vit, pretrained) if pretrained else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expected = (self.in_chans, *self.input_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise DataError(
                f"Conv-ViT was built for inputs (B, {expected[0]}, {expected[1]}, {expected[2]}) "
                f"(channels, feature bins, frames), got {tuple(x.shape)}: check the features and the cycle length"
            )
        return self.vit(self.attention(self.branches(x)))


@MODELS.register("conv_vit")
def conv_vit(num_classes: int = 4, in_chans: int = 3, input_size: Sequence[int] = (96, 126), **kwargs: object) -> ConvViT:
    """The Conv-ViT; keyword arguments as :class:`ConvViT`."""
    return ConvViT(num_classes=num_classes, in_chans=in_chans, input_size=input_size, **kwargs)  # type: ignore[arg-type]
