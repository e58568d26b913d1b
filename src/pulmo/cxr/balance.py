"""Class balancing for training: augmented copies up to a target count (the paper's way),
or inverse-frequency sampling weights (the alternative)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchvision.transforms import v2


def balanced_plan(labels: Sequence[int], target: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices for one balanced epoch and whether each is an augmented copy.

    Every image appears once as itself; each class is then topped up to ``target`` (0: the
    largest class's count) with randomly chosen images of that class marked for augmentation.
    A class already at or above ``target`` is left as it is (never cut).
    Returns ``(indices, augmented)``, both of length ``sum(max(count_c, target))``.
    """
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    target = target or int(counts.max())
    idx = [np.arange(len(labels))]
    aug = [np.zeros(len(labels), dtype=bool)]
    for c, n in zip(classes, counts):
        extra = max(target - int(n), 0)
        if extra:
            idx.append(rng.choice(np.flatnonzero(labels == c), size=extra, replace=True))
            aug.append(np.ones(extra, dtype=bool))
    return np.concatenate(idx), np.concatenate(aug)


def sampler_weights(labels: Sequence[int]) -> torch.Tensor:
    """One weight per sample, ``1 / count(class)``: every class is drawn equally often."""
    labels = np.asarray(labels)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return torch.as_tensor(1.0 / counts[inverse], dtype=torch.double)


def train_augment(size_px: int, strong: bool = False) -> v2.Transform:
    """Augmentation of one ``(1, size_px, size_px)`` image in [0, 1]: small rotations, shifts
    and zoom, brightness / contrast jitter. ``strong`` adds random resized crops (scale 0.6-1,
    aspect 0.8-1.25), which hide body-size (age) cues and framing differences between sources."""
    ops: list[v2.Transform] = [v2.RandomAffine(degrees=10, translate=(0.06, 0.06), scale=(0.9, 1.1))]
    if strong:
        ops.append(v2.RandomResizedCrop(size=(size_px, size_px), scale=(0.6, 1.0), ratio=(0.8, 1.25), antialias=True))
    ops.append(v2.ColorJitter(brightness=0.2, contrast=0.2))
    return v2.Compose(ops)


def augment_batch(x: torch.Tensor, transform: v2.Transform) -> torch.Tensor:
    """``(B, 1, H, W)`` -> the same shape, each image with its own random parameters, in [0, 1]."""
    return torch.stack([transform(img).clamp(0, 1) for img in x])
