"""Attention blocks of Yang et al. (Interspeech 2020), equations 1-7.

Each block maps feature maps ``F`` of shape ``(B, C, H, W)`` to ``A(F) * F`` of the
same shape, where ``A`` is a sigmoid attention map:

* :class:`SqueezeExcite` - channel attention ``(B, C, 1, 1)`` (eqs. 1-2).
* :class:`SpatialAttention` - one 1x1 convolution to ``(B, 1, H, W)`` (eqs. 3-4).
* :class:`SESpatialAttention` - both maps multiplied onto ``F`` (eq. 5).
* :class:`ComponentAttention` - a 1x1 convolution to ``(B, C, H, W)`` (eqs. 6-7).

Constructors take the channel count first, as timm's ``create_attn`` expects, so the
blocks plug into timm's ResNet blocks through ``attn_layer``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class SqueezeExcite(nn.Module):
    """Channel attention: ``sigmoid(W2 relu(W1 avgpool(F)))`` with ``C -> C/r -> C``."""

    def __init__(self, channels: int, reduction: int = 16, **factory: Any) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden, **factory)
        self.fc2 = nn.Linear(hidden, channels, **factory)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, 1, 1)`` weights in (0, 1)."""
        squeezed = x.mean(dim=(2, 3))
        weights = torch.sigmoid(self.fc2(torch.relu(self.fc1(squeezed))))
        return weights[:, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class SpatialAttention(nn.Module):
    """Spatial attention: ``sigmoid(conv1x1_{C->1}(F))``, one weight per location."""

    def __init__(self, channels: int, **factory: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, kernel_size=1, **factory)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, 1, H, W)`` weights in (0, 1)."""
        return torch.sigmoid(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class SESpatialAttention(nn.Module):
    """``A_SE(F) * A_SP(F) * F``: both maps computed from the same input ``F`` (eq. 5)."""

    def __init__(self, channels: int, reduction: int = 16, **factory: Any) -> None:
        super().__init__()
        self.se = SqueezeExcite(channels, reduction, **factory)
        self.spatial = SpatialAttention(channels, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.se.attention(x) * self.spatial.attention(x)


class ComponentAttention(nn.Module):
    """Component attention: ``sigmoid(conv1x1_{C->C}(F))``, one weight per element."""

    def __init__(self, channels: int, **factory: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=1, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv(x))


ATTENTION_BLOCKS: dict[str, type[nn.Module] | None] = {
    "none": None,
    "se": SqueezeExcite,
    "spatial": SpatialAttention,
    "se_spatial": SESpatialAttention,
    "component": ComponentAttention,
}
