"""Class-conditional adversaries through gradient reversal (Ganin & Lempitsky, 2015): a small
classifier learns to tell a nuisance (the stethoscope, the image source) from an embedding,
and the reversed gradient teaches the encoder to hide it.

The adversary also sees the true class (one-hot), so what it removes is nuisance information
*beyond* the class: where nuisance and class are confounded (one device recording mostly one
kind of patient, one collection holding mostly one diagnosis), an unconditional adversary
would remove the class too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, lam: float) -> torch.Tensor:  # type: ignore[override]
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return -ctx.lam * grad, None


def grad_reverse(x: torch.Tensor, lam: float) -> torch.Tensor:
    """Identity forward; the gradient flowing back through it is multiplied by ``-lam``."""
    return _Reverse.apply(x, lam)


class ConditionalAdversary(nn.Module):
    """``(embedding (B, D), labels (B,)) -> nuisance logits (B, n_nuisance)`` through gradient
    reversal of weight ``lam``: one linear layer on ``[embedding, one-hot label]``."""

    def __init__(self, dim: int, n_classes: int, n_nuisance: int, lam: float) -> None:
        super().__init__()
        self.n_classes, self.lam = n_classes, lam
        self.linear = nn.Linear(dim + n_classes, n_nuisance)

    def forward(self, embedding: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(labels, self.n_classes).to(embedding.dtype)
        return self.linear(torch.cat([grad_reverse(embedding, self.lam), onehot], dim=1))

    def loss(self, embedding: torch.Tensor, labels: torch.Tensor, nuisance: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the nuisance; minimising it trains the adversary, and (reversed) the
        encoder to remove what the adversary finds."""
        return F.cross_entropy(self.forward(embedding, labels).float(), nuisance)


__all__ = ["ConditionalAdversary", "grad_reverse"]
