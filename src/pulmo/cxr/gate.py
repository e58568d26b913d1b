"""Is this a frontal chest X-ray? A one-class gate that needs no examples of what it refuses.

Every image is reduced to a ``SIDE x SIDE`` gray thumbnail and rank-equalised (each pixel
replaced by its rank, so exposure, contrast, gamma and bit depth drop out); chest X-rays then
live near a low-dimensional subspace (the first ``k`` principal components of chest X-rays,
"eigen-chests"). An image is accepted when both

- its distance from that subspace (the reconstruction residual) and
- its Mahalanobis distance within it (how unusual its coefficients are)

stay within the thresholds fixed at fitting time: a quantile of the *training* chest X-rays'
own scores times a margin. Nothing refused is used to fit or to set thresholds; negatives
(baggage scans, photos, MRI, rotated films) only measure the gate (``benchmarks/cxr_gate.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 32


def gate_features(gray: np.ndarray) -> np.ndarray:
    """``(SIDE * SIDE,)`` float32 rank-equalised thumbnail of a gray image ``(H, W)`` in [0, 1]."""
    im = Image.fromarray((np.clip(gray, 0.0, 1.0) * 255).astype(np.uint8))
    a = np.asarray(im.resize((SIDE, SIDE), Image.Resampling.BOX), dtype=np.float32).ravel()
    ranks = a.argsort(kind="stable").argsort(kind="stable").astype(np.float32)
    return ranks / (a.size - 1)


@dataclass(frozen=True)
class GateScore:
    """``residual``: distance from the chest subspace; ``mahalanobis``: distance within it;
    ``accepted``: both within their thresholds."""

    residual: float
    mahalanobis: float
    accepted: bool


@dataclass(frozen=True)
class ChestGate:
    """``mean (D,)``, ``components (k, D)`` (orthonormal rows), ``variances (k,)`` of the chest
    X-rays it was fitted on; ``max_residual``, ``max_mahalanobis``: acceptance thresholds."""

    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    max_residual: float
    max_mahalanobis: float

    @classmethod
    def fit(cls, features: np.ndarray, k: int = 8, quantile: float = 0.995, residual_margin: float = 1.1,
            mahalanobis_margin: float = 1.2) -> ChestGate:
        """Fit on ``features (N, D)`` of chest X-rays; thresholds = ``quantile`` of their own
        scores times the margins."""
        mean = features.mean(axis=0)
        _, s, vt = np.linalg.svd(features - mean, full_matrices=False)
        gate = cls(mean.astype(np.float32), vt[:k].astype(np.float32),
                   (s[:k] ** 2 / (len(features) - 1)).astype(np.float32), np.inf, np.inf)
        res, maha = gate.distances(features)
        return cls(gate.mean, gate.components, gate.variances, float(np.quantile(res, quantile) * residual_margin),
                   float(np.quantile(maha, quantile) * mahalanobis_margin))

    def distances(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(residual (N,), mahalanobis (N,))`` for ``features (N, D)``."""
        centred = np.atleast_2d(features) - self.mean
        z = centred @ self.components.T
        residual = np.linalg.norm(centred - z @ self.components, axis=1)
        return residual, np.sqrt(((z**2) / self.variances).sum(axis=1))

    def score(self, gray: np.ndarray) -> GateScore:
        """Score one gray image ``(H, W)`` in [0, 1]."""
        res, maha = self.distances(gate_features(gray)[None])
        r, m = float(res[0]), float(maha[0])
        return GateScore(r, m, r <= self.max_residual and m <= self.max_mahalanobis)

    def save(self, path: str | Path) -> None:
        np.savez_compressed(path, mean=self.mean, components=self.components, variances=self.variances,
                            max_residual=self.max_residual, max_mahalanobis=self.max_mahalanobis, side=SIDE)

    @classmethod
    def load(cls, path: str | Path) -> ChestGate:
        with np.load(path) as z:
            if int(z["side"]) != SIDE:
                raise ValueError(f"{Path(path).name}: gate fitted on {int(z['side'])}-px thumbnails, this code uses {SIDE}")
            return cls(z["mean"], z["components"], z["variances"], float(z["max_residual"]),
                       float(z["max_mahalanobis"]))


def bundled_gate() -> ChestGate | None:
    """The bundled gate (``assets/cxr_gate.npz``), or None where it is absent."""
    from pulmo.inference.bundled import ASSETS

    path = ASSETS / "cxr_gate.npz"
    return _load_cached(str(path)) if path.is_file() else None


_CACHE: dict[str, ChestGate] = {}


def _load_cached(path: str) -> ChestGate:
    if path not in _CACHE:
        _CACHE[path] = ChestGate.load(path)
    return _CACHE[path]


__all__ = ["ChestGate", "GateScore", "SIDE", "bundled_gate", "gate_features"]
