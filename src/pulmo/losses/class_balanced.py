"""Cross-entropy variants for imbalanced classes.

The class-balanced loss of Cui et al. (CVPR 2019; eq. 13 of the Conv-ViT paper) weights
class ``y`` by ``(1 - beta) / (1 - beta ** n_y)``, the inverse effective number of
samples; weights are normalised to sum to the number of classes, as in Cui et al.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pulmo.errors import ConfigError


def class_balanced_weights(counts: Sequence[int], beta: float) -> torch.Tensor:
    """``(K,)`` weights ``(1 - beta) / (1 - beta**n_k)``, scaled to sum to ``K``."""
    if not 0.0 <= beta < 1.0:
        raise ConfigError(f"class-balanced beta must be in [0, 1), got {beta}")
    n = torch.as_tensor(counts, dtype=torch.float64)
    if (n <= 0).any():
        raise ConfigError(f"every class needs at least one training example, got counts {list(counts)}")
    w = (1.0 - beta) / (1.0 - torch.pow(beta, n))
    return (w / w.sum() * len(counts)).float()


def inverse_frequency_weights(counts: Sequence[int]) -> torch.Tensor:
    """``(K,)`` weights ``1 / n_k``, scaled to sum to ``K``."""
    n = torch.as_tensor(counts, dtype=torch.float64)
    if (n <= 0).any():
        raise ConfigError(f"every class needs at least one training example, got counts {list(counts)}")
    w = 1.0 / n
    return (w / w.sum() * len(counts)).float()


def build_classification_loss(name: str, counts: Sequence[int], beta: float = 0.999) -> nn.Module:
    """``ce`` | ``weighted_ce`` | ``class_balanced`` -> a ``CrossEntropyLoss``."""
    if name == "ce":
        return nn.CrossEntropyLoss()
    if name == "weighted_ce":
        return nn.CrossEntropyLoss(weight=inverse_frequency_weights(counts))
    if name == "class_balanced":
        return nn.CrossEntropyLoss(weight=class_balanced_weights(counts, beta))
    raise ConfigError(f"unknown loss {name!r}; known: ce, weighted_ce, class_balanced")
