"""Concordance-correlation loss (paper section IV-B): ``1 - CCC`` over a batch."""

from __future__ import annotations

import torch


def ccc_torch(pred: torch.Tensor, true: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Lin's CCC of two ``(B,)`` tensors with population moments (differentiable)."""
    pred, true = pred.reshape(-1).float(), true.reshape(-1).float()
    pm, tm = pred.mean(), true.mean()
    cov = ((pred - pm) * (true - tm)).mean()
    return 2 * cov / (pred.var(unbiased=False) + true.var(unbiased=False) + (pm - tm) ** 2 + eps)


def ccc_loss(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """``1 - CCC``: 0 for perfect agreement, 2 for perfect anti-agreement."""
    return 1.0 - ccc_torch(pred, true)


def ccc_cost(rate_pred: torch.Tensor, rate_true: torch.Tensor, count_pred: torch.Tensor,
             count_true: torch.Tensor, alpha: float) -> torch.Tensor:
    """The paper's ``CCC_cost = alpha * CCC_RR + (1 - alpha) * CCC_RC``, as a loss (1 - CCC each)."""
    return alpha * ccc_loss(rate_pred, rate_true) + (1 - alpha) * ccc_loss(count_pred, count_true)
