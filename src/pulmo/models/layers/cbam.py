"""Convolutional Block Attention Module (Woo et al., ECCV 2018), as used by Conv-ViT (eqs. 11-12).

``CBAM(F) = M_s(F') * F'`` with ``F' = M_c(F) * F``, for feature maps ``F`` of shape
``(B, C, H, W)``:

* :class:`ChannelAttention` ``M_c(F) = sigmoid(MLP(avgpool(F)) + MLP(maxpool(F)))``, ``(B, C, 1, 1)``;
  one MLP ``C -> C/r -> C`` shared by both pooled descriptors (eq. 11).
* :class:`CbamSpatialAttention` ``M_s(F) = sigmoid(conv7x7([mean_c(F); max_c(F)]))``, ``(B, 1, H, W)`` (eq. 12).
"""

from __future__ import annotations

import torch
from torch import nn


class ChannelAttention(nn.Module):
    """Eq. 11: channel weights from average- and max-pooled descriptors through one shared MLP."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, 1, 1)`` weights in (0, 1)."""
        weights = torch.sigmoid(self.mlp(x.mean(dim=(2, 3))) + self.mlp(x.amax(dim=(2, 3))))
        return weights[:, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class CbamSpatialAttention(nn.Module):
    """Eq. 12: one weight per location from the channel-wise mean and max, through a k x k convolution."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, 1, H, W)`` weights in (0, 1)."""
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class CBAM(nn.Module):
    """Channel attention, then spatial attention on its output; shape-preserving."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = CbamSpatialAttention(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))
