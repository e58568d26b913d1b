"""A compact four-stage CNN for spectrogram classification that trains on one CPU core.

``encoder`` maps ``(B, C, F, T)`` to ``(B, widths[-1], F / 16, T / 16)``; the head pools
frequency by mean and time by mean + max (a short crackle survives max pooling) and
classifies. The encoder alone is what self-supervised pretraining
(:mod:`pulmo.engine.pretrain`) trains and fine-tuning loads.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pulmo.models import MODELS


def _stage(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3 conv-BN-ReLU layers, then 2x2 average pooling: ``(B, c_in, F, T) -> (B, c_out, F/2, T/2)``."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.AvgPool2d(2),
    )


class SmallCNN(nn.Module):
    """Args: ``num_classes`` logits; ``in_chans`` input channels; ``widths`` channels of the
    four stages; ``drop_rate`` dropout before the classifier."""

    def __init__(
        self, num_classes: int = 4, in_chans: int = 1, widths: Sequence[int] = (16, 32, 64, 128), drop_rate: float = 0.3
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        chans = [in_chans, *widths]
        self.encoder = nn.Sequential(*[_stage(a, b) for a, b in zip(chans[:-1], chans[1:], strict=True)])
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(2 * widths[-1], num_classes)

    @property
    def cam_layer(self) -> nn.Module:
        """Last stage: the layer Grad-CAM reads."""
        return self.encoder[-1]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, F, T)`` -> pooled features ``(B, 2 * widths[-1])``."""
        if x.ndim != 4:
            raise ValueError(f"expected input of shape (B, C, F, T), got {tuple(x.shape)}")
        h = self.encoder(x).mean(dim=2)  # (B, C', T')
        return torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1)

    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, 2 * widths[-1])`` -> ``(B, num_classes)`` logits."""
        return self.classifier(self.dropout(embedding))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, F, T)`` -> ``(B, num_classes)`` logits."""
        return self.head(self.embed(x))


MODELS.add("small_cnn", SmallCNN)
