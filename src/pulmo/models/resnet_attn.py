"""ResNet-18 with an attention block in every residual module (Yang et al., 2020).

Built on timm's ResNet and BasicBlock: the attention block sits where timm puts SE,
after the second convolution's batch norm and before the identity is added. The
variants are one model with a keyword, ``attn='none'|'se'|'spatial'|'se_spatial'|'component'``.
"""

from __future__ import annotations

import torch
from timm.models.resnet import BasicBlock, ResNet
from torch import nn

from pulmo.errors import ConfigError
from pulmo.models import MODELS
from pulmo.models.layers.attention import ATTENTION_BLOCKS


class ResNetAttn(nn.Module):
    """ResNet-18 over spectrogram-like input.

    Args:
        num_classes: number of output logits.
        in_chans: input channels ``C`` of ``(B, C, F, T)`` (1 for a single spectrogram).
        attn: attention block in each residual module, see ``ATTENTION_BLOCKS``.
        drop_rate: dropout before the classifier.
    """

    def __init__(self, num_classes: int = 4, in_chans: int = 1, attn: str = "none", drop_rate: float = 0.0) -> None:
        super().__init__()
        if attn not in ATTENTION_BLOCKS:
            raise ConfigError(f"unknown attention {attn!r}; known: {sorted(ATTENTION_BLOCKS)}")
        self.num_classes = num_classes
        self.attn = attn
        self.net = ResNet(
            block=BasicBlock,
            layers=(2, 2, 2, 2),
            num_classes=num_classes,
            in_chans=in_chans,
            drop_rate=drop_rate,
            block_args={"attn_layer": ATTENTION_BLOCKS[attn]},
        )

    @property
    def cam_layer(self) -> nn.Module:
        """Last residual stage: the layer Grad-CAM reads."""
        return self.net.layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, F, T)`` -> ``(B, num_classes)`` logits."""
        if x.ndim != 4:
            raise ValueError(f"expected input of shape (B, C, F, T), got {tuple(x.shape)}")
        return self.net(x)


MODELS.add("resnet18_attn", ResNetAttn)
