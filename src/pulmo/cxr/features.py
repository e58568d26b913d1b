"""Frozen-backbone features of gray X-rays, plain and under random harmonising views.

Computed once per preprocessing setting, so that many heads (folds, seeds, recipes) train on
them cheaply: see :mod:`pulmo.cxr.heads`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from pulmo.cxr.config import ImageConfig
from pulmo.cxr.harmonize import harmonize_view
from pulmo.cxr.preprocess import normalize_tensor, prepare_gray

#: an optional cut of the gray film before :func:`prepare_gray`: ``(H, W)`` -> ``(h, w)``
Crop = Callable[[np.ndarray], np.ndarray]


@torch.no_grad()
def backbone_features(model: nn.Module, grays: Sequence[np.ndarray], image: ImageConfig,
                      batch_size: int = 32, crop: Crop | None = None) -> np.ndarray:
    """``model.features`` of each gray image ``(H, W)`` in [0, 1] after ``crop`` (if given, e.g.
    :func:`pulmo.cxr.lungseg.segment_crop`) and :func:`prepare_gray`: ``(N, d, 3, 3)`` float16
    (``d`` = 1280 for EfficientNet-Lite0)."""
    model.eval()
    out = []
    for i in range(0, len(grays), batch_size):
        x = torch.from_numpy(np.stack([prepare_gray(crop(g) if crop else g, image)
                                       for g in grays[i:i + batch_size]]))[:, None]
        out.append(model.features(normalize_tensor(x, image)).half().numpy())
    return np.concatenate(out)


def view_features(model: nn.Module, load: Callable[[int], np.ndarray], n: int, image: ImageConfig, views: int,
                  seed: int = 0, progress: Callable[[int], None] | None = None, crop: Crop | None = None) -> np.ndarray:
    """Features of the plain image and ``views`` harmonising views (:func:`harmonize_view`) of
    each of ``n`` images read by ``load(i)``: ``(1 + views, n, d, 3, 3)`` float16. ``crop`` runs on
    each view after harmonising (so it finds the lungs in the view itself)."""
    rng = np.random.default_rng(seed)
    chunks = []
    for i in range(0, n, 32):
        grays = [load(j) for j in range(i, min(n, i + 32))]
        per_view = [backbone_features(model, grays, image, crop=crop)]
        for _ in range(views):
            per_view.append(backbone_features(model, [harmonize_view(g, rng) for g in grays], image, crop=crop))
        chunks.append(np.stack(per_view))
        if progress:
            progress(min(n, i + 32))
    return np.concatenate(chunks, axis=1)


__all__ = ["backbone_features", "view_features"]
