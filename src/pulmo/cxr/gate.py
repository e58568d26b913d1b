"""Is this a frontal chest X-ray? A one-class gate that needs no examples of what it refuses.

Every image is reduced to a ``SIDE x SIDE`` gray thumbnail and rank-equalised (each pixel
replaced by its rank, so exposure, contrast, gamma and bit depth drop out); chest X-rays then
live near a low-dimensional subspace (the first ``k`` principal components of chest X-rays,
"eigen-chests"). An image is accepted when both

- its distance from that subspace (the reconstruction residual) and
- its Mahalanobis distance within it (how unusual its coefficients are)

stay within the thresholds fixed at fitting time, the thumbnail has the fine structure
films have (ribs, vessels, edges: the mean absolute Laplacian over the gray-level spread; a
smooth gradient lies close to the mean chest X-ray but has none), and it is not a mirror image
of itself (a frontal film's heart and mediastinum lie left of the patient's midline, so its
left-right mirror correlation stays below :data:`MAX_MIRROR` (no film of 7,022 here exceeds
0.984); a drawing of two lungs in a body outline, such as the demo image, reaches 0.997).
The first three thresholds are a quantile of the *training* chest X-rays' own scores times a margin. Nothing refused
is used to fit or to set thresholds; negatives (baggage scans, photos, MRI, rotated films)
only measure the gate (``benchmarks/cxr_gate.py``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 32
MAX_MIRROR = 0.99  # left-right mirror correlation above which an image is a drawing, not a film


def _thumb(gray: np.ndarray) -> np.ndarray:
    """``(SIDE, SIDE)`` float32 box-filtered thumbnail of a gray image ``(H, W)`` in [0, 1]."""
    im = Image.fromarray((np.clip(gray, 0.0, 1.0) * 255).astype(np.uint8))
    return np.asarray(im.resize((SIDE, SIDE), Image.Resampling.BOX), dtype=np.float32) / 255.0


def _ranks(thumb: np.ndarray) -> np.ndarray:
    a = thumb.ravel()
    ranks = a.argsort(kind="stable").argsort(kind="stable").astype(np.float32)
    return ranks / (a.size - 1)


def _detail(thumb: np.ndarray) -> float:
    lap = 4 * thumb[1:-1, 1:-1] - thumb[:-2, 1:-1] - thumb[2:, 1:-1] - thumb[1:-1, :-2] - thumb[1:-1, 2:]
    return float(np.abs(lap).mean() / (thumb.std() + 1e-6))


def _mirror(thumb: np.ndarray) -> float:
    a = thumb.astype(np.float64)
    if a.std() == 0:
        return 1.0
    return float(np.corrcoef(a.ravel(), a[:, ::-1].ravel())[0, 1])


def gate_features(gray: np.ndarray) -> np.ndarray:
    """``(SIDE * SIDE,)`` float32 rank-equalised thumbnail of a gray image ``(H, W)`` in [0, 1]."""
    return _ranks(_thumb(gray))


def detail(gray: np.ndarray) -> float:
    """Fine structure of the thumbnail: mean absolute 4-neighbour Laplacian over the gray-level
    standard deviation (0 for a linear gradient; chest X-rays here 0.13-0.8)."""
    return _detail(_thumb(gray))


def mirror(gray: np.ndarray) -> float:
    """Pearson correlation of the thumbnail with its left-right mirror image (1: symmetric;
    chest X-rays here at most 0.984, because of the heart)."""
    return _mirror(_thumb(gray))


def gate_measures(gray: np.ndarray) -> tuple[np.ndarray, float, float]:
    """:func:`gate_features`, :func:`detail` and :func:`mirror` of one gray image, from one thumbnail."""
    thumb = _thumb(gray)
    return _ranks(thumb), _detail(thumb), _mirror(thumb)


@dataclass(frozen=True)
class GateScore:
    """``residual``: distance from the chest subspace; ``mahalanobis``: distance within it;
    ``detail``: fine structure (:func:`detail`); ``mirror``: left-right symmetry (:func:`mirror`);
    ``accepted``: all four within their thresholds."""

    residual: float
    mahalanobis: float
    detail: float
    mirror: float
    accepted: bool


@dataclass(frozen=True)
class ChestGate:
    """``mean (D,)``, ``components (k, D)`` (orthonormal rows), ``variances (k,)`` of the chest
    X-rays it was fitted on; ``max_residual``, ``max_mahalanobis``, ``min_detail``: acceptance thresholds."""

    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    max_residual: float
    max_mahalanobis: float
    min_detail: float

    @classmethod
    def fit(cls, features: np.ndarray, details: np.ndarray, k: int = 8, quantile: float = 0.995,
            residual_margin: float = 1.1, mahalanobis_margin: float = 1.2, detail_margin: float = 0.5) -> ChestGate:
        """Fit on ``features (N, D)`` and ``details (N,)`` of chest X-rays; thresholds = the
        ``quantile`` of their own distances (the ``1 - quantile`` one of their detail) times the margins."""
        mean = features.mean(axis=0)
        _, s, vt = np.linalg.svd(features - mean, full_matrices=False)
        gate = cls(mean.astype(np.float32), vt[:k].astype(np.float32),
                   (s[:k] ** 2 / (len(features) - 1)).astype(np.float32), np.inf, np.inf, 0.0)
        res, maha = gate.distances(features)
        return cls(gate.mean, gate.components, gate.variances, float(np.quantile(res, quantile) * residual_margin),
                   float(np.quantile(maha, quantile) * mahalanobis_margin),
                   float(np.quantile(details, 1 - quantile) * detail_margin))

    def accepts(self, residual: np.ndarray, mahalanobis: np.ndarray, details: np.ndarray,
                mirrors: np.ndarray) -> np.ndarray:
        """Elementwise verdict for scores as :meth:`distances`, :func:`detail` and :func:`mirror` give them."""
        return ((residual <= self.max_residual) & (mahalanobis <= self.max_mahalanobis) & (details >= self.min_detail)
                & (mirrors <= MAX_MIRROR))

    def why_refused(self, score: GateScore) -> str:
        """What failed in ``score``, in words a user reads ("" when it was accepted)."""
        if score.accepted:
            return ""
        layout_fits = score.residual <= self.max_residual and score.mahalanobis <= self.max_mahalanobis
        if layout_fits and score.detail < self.min_detail:
            return "it lacks a film's fine structure (ribs, vessels, edges): a smooth gradient, not a film"
        if score.mirror > MAX_MIRROR:
            return (f"it is its own mirror image, left-right correlation {score.mirror:.3f} > {MAX_MIRROR}: a drawing, "
                    "not a film, whose heart shadow would break the symmetry")
        return ("the layout does not match chest X-rays: lateral view, rotated film, another body part or not an "
                "X-ray")

    def distances(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(residual (N,), mahalanobis (N,))`` for ``features (N, D)``."""
        centred = np.atleast_2d(features) - self.mean
        z = centred @ self.components.T
        residual = np.linalg.norm(centred - z @ self.components, axis=1)
        return residual, np.sqrt(((z**2) / self.variances).sum(axis=1))

    def score(self, gray: np.ndarray) -> GateScore:
        """Score one gray image ``(H, W)`` in [0, 1]."""
        features, d, m = gate_measures(gray)
        res, maha = self.distances(features[None])
        return GateScore(float(res[0]), float(maha[0]), d, m, bool(self.accepts(res, maha, np.array([d]), np.array([m]))[0]))

    def save(self, path: str | Path) -> None:
        np.savez_compressed(path, mean=self.mean, components=self.components, variances=self.variances,
                            max_residual=self.max_residual, max_mahalanobis=self.max_mahalanobis,
                            min_detail=self.min_detail, side=SIDE)

    @classmethod
    def load(cls, path: str | Path) -> ChestGate:
        with np.load(path) as z:
            if int(z["side"]) != SIDE:
                raise ValueError(f"{Path(path).name}: gate fitted on {int(z['side'])}-px thumbnails, this code uses {SIDE}")
            return cls(z["mean"], z["components"], z["variances"], float(z["max_residual"]),
                       float(z["max_mahalanobis"]), float(z["min_detail"]))


def bundled_gate() -> ChestGate | None:
    """The bundled gate (``assets/cxr_gate.npz``), or None where it is absent."""
    path = Path(__file__).resolve().parents[1] / "assets" / "cxr_gate.npz"  # pulmo.inference.bundled.ASSETS, without importing torch
    return _load_cached(str(path)) if path.is_file() else None


@functools.lru_cache(maxsize=4)
def _load_cached(path: str) -> ChestGate:
    return ChestGate.load(path)


__all__ = ["MAX_MIRROR", "SIDE", "ChestGate", "GateScore", "bundled_gate", "detail", "gate_features", "gate_measures", "mirror"]
