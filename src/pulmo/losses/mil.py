"""Multiple-instance learning for recordings labelled as a whole (KAUH).

A recording is a bag of fixed-length windows. Under the standard MIL assumption a
recording holds crackles (wheezes) if at least one of its windows does, so the bag's
presence probability is the largest window's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def presence_probabilities(probs: torch.Tensor, crackle: int, wheeze: int, both: int) -> torch.Tensor:
    """Four-class window probabilities ``(..., K)`` -> presence probabilities ``(..., 2)``.

    ``[..., 0]`` = P(crackle) + P(both), ``[..., 1]`` = P(wheeze) + P(both).
    """
    return torch.stack([probs[..., crackle] + probs[..., both], probs[..., wheeze] + probs[..., both]], dim=-1)


def window_presence(logits: torch.Tensor, crackle: int, wheeze: int, both: int) -> torch.Tensor:
    """Four-class window logits ``(..., K)`` -> presence probabilities ``(..., 2)`` (see
    :func:`presence_probabilities`)."""
    return presence_probabilities(logits.float().softmax(dim=-1), crackle, wheeze, both)


def bag_presence(window_probs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Max pooling over windows: ``(B, W, 2)`` (``mask`` ``(B, W)`` True = real window) -> ``(B, 2)``."""
    if mask is not None:
        window_probs = window_probs.masked_fill(~mask.unsqueeze(-1), 0.0)
    return window_probs.amax(dim=1)


class BagPresenceLoss(nn.Module):
    """Binary cross-entropy of each bag's crackle and wheeze presence against its labels.

    ``forward(window_logits (B, W, K), targets (B, 2) in {0, 1}, mask (B, W) | None)``.
    """

    def __init__(self, crackle: int, wheeze: int, both: int) -> None:
        super().__init__()
        self.index = (crackle, wheeze, both)

    def forward(self, window_logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        probs = bag_presence(window_presence(window_logits, *self.index), mask).clamp(1e-6, 1 - 1e-6)
        return F.binary_cross_entropy(probs, targets.float())
