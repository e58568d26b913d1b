"""Dynamic weight averaging (Liu, Johns and Davison 2019) for a multi-task loss.

For task ``k`` at epoch ``t``: ``r_k = L_k(t-1) / L_k(t-2)`` and
``lambda_k = K exp(r_k / T) / sum_j exp(r_j / T)``; the first two epochs use
``lambda_k = 1``. The weights therefore always sum to ``K``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class DynamicWeightAverage:
    """Keeps each task's mean loss per epoch and gives the next epoch's weights.

    Args:
        num_tasks: ``K``. temperature: ``T`` (the DWA paper uses 2).
    """

    def __init__(self, num_tasks: int, temperature: float = 2.0) -> None:
        if num_tasks < 1 or temperature <= 0:
            raise ValueError("need at least one task and a positive temperature")
        self.num_tasks = num_tasks
        self.temperature = temperature
        self.history: list[np.ndarray] = []

    def weights(self) -> np.ndarray:
        """``(K,)`` weights for the coming epoch (sum ``K``)."""
        if len(self.history) < 2:
            return np.ones(self.num_tasks)
        ratio = self.history[-1] / np.maximum(self.history[-2], 1e-12)
        e = np.exp((ratio - ratio.max()) / self.temperature)  # shift for stability; cancels out
        return self.num_tasks * e / e.sum()

    def end_epoch(self, mean_losses: Sequence[float]) -> None:
        """Record the epoch's mean loss per task."""
        losses = np.asarray(mean_losses, dtype=np.float64)
        if losses.shape != (self.num_tasks,):
            raise ValueError(f"expected {self.num_tasks} task losses, got {losses.shape}")
        self.history.append(losses)


def convex_mixture(mix: Sequence[float]) -> np.ndarray:
    """The paper's ``(beta, gamma, kappa, 1 - beta - gamma - kappa)`` from its first three values."""
    b = np.asarray(mix, dtype=np.float64)
    if b.shape != (3,) or (b < 0).any() or b.sum() > 1 + 1e-9:
        raise ValueError(f"need three non-negative mixing weights summing to at most 1, got {list(mix)}")
    return np.append(b, 1.0 - b.sum())
