"""Focal loss (Lin et al. 2017) for multi-class logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0,
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``-w_y (1 - p_y)^gamma log p_y`` over the batch.

    Args:
        logits: ``(B, K)``. target: ``(B,)`` class indices. weight: optional ``(K,)``.
    """
    logp = F.log_softmax(logits.float(), dim=1).gather(1, target[:, None]).squeeze(1)
    loss = -((1 - logp.exp()) ** gamma) * logp
    if weight is not None:
        loss = loss * weight[target]
    return loss.mean()
