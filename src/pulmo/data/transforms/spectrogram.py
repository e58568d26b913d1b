"""Batch augmentations on feature maps ``(B, C, F, T)``: SpecAugment masks, time shift and mixup.

Random numbers come from the ``generator`` passed in, never from global state.
"""

from __future__ import annotations

import torch


def spec_augment(
    x: torch.Tensor, freq_masks: int, freq_width: int, time_masks: int, time_width: int, generator: torch.Generator
) -> torch.Tensor:
    """Zero ``freq_masks`` bands of up to ``freq_width`` bins and ``time_masks`` spans of up
    to ``time_width`` frames, independently per example (Park et al., 2019). Returns a copy."""
    out = x.clone()
    b, _, f, t = x.shape
    for axis, count, width, size in ((2, freq_masks, freq_width, f), (3, time_masks, time_width, t)):
        for _ in range(count):
            w = torch.randint(0, width + 1, (b,), generator=generator)
            start = (torch.rand(b, generator=generator) * (size - w).clamp_min(1)).long()
            pos = torch.arange(size)
            mask = (pos[None] >= start[:, None]) & (pos[None] < (start + w)[:, None])  # (B, size)
            shape = (b, 1, size, 1) if axis == 2 else (b, 1, 1, size)
            out = out.masked_fill(mask.view(shape), 0.0)
    return out


def time_shift(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Roll each example ``(C, F, T)`` of ``x`` ``(B, C, F, T)`` by its own random number of
    frames along time (circular: what leaves at the end comes back at the start, which suits
    repeat-padded cycles)."""
    b, _, _, t = x.shape
    shifts = torch.randint(0, t, (b,), generator=generator)
    idx = (torch.arange(t)[None, :] - shifts[:, None]) % t  # (B, T): source frame of each output frame
    return torch.gather(x, 3, idx[:, None, None, :].expand_as(x).to(x.device))


def mixup(
    x: torch.Tensor, y: torch.Tensor, alpha: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Mix each example with a random partner (Zhang et al., 2018).

    Returns ``(mixed_x, y, y_partner, lam)``; train with
    ``lam * loss(out, y) + (1 - lam) * loss(out, y_partner)``.
    """
    lam = float(torch.distributions.Beta(alpha, alpha).sample().item()) if alpha > 0 else 1.0
    perm = torch.randperm(x.shape[0], generator=generator)
    return lam * x + (1 - lam) * x[perm], y, y[perm], lam
