"""Quality gates of the paper (section 3.1): blur by variance of the Laplacian, too-low or
too-high contrast. Each verdict says which gate failed and the measured value."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from pulmo.cxr.config import GateConfig
from pulmo.cxr.preprocess import to_uint8


@dataclass
class GateVerdict:
    """Measured values and the reasons an image failed (empty: it passed)."""

    laplacian_var: float
    contrast_std: float
    reasons: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.reasons

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def measure(gray: np.ndarray, size_px: int = 256) -> tuple[float, float]:
    """``(variance of the Laplacian, std of gray levels)`` of ``gray`` ``(H, W)`` in [0, 1],
    resized to ``size_px`` square and measured in 0-255 levels (OpenCV's 3x3 Laplacian)."""
    u8 = cv2.resize(to_uint8(gray), (size_px, size_px), interpolation=cv2.INTER_AREA)
    lap = cv2.Laplacian(u8, cv2.CV_64F)
    return float(lap.var()), float(u8.astype(np.float64).std())


def check_quality(gray: np.ndarray, cfg: GateConfig) -> GateVerdict:
    """Run every gate on one image (all gates are evaluated; all failures are listed)."""
    lap, std = measure(gray, cfg.size_px)
    reasons = []
    if lap < cfg.blur_min:
        reasons.append(f"blurry: variance of Laplacian {lap:.1f} < {cfg.blur_min}")
    if std < cfg.contrast_min:
        reasons.append(f"low contrast: gray-level std {std:.1f} < {cfg.contrast_min}")
    if std > cfg.contrast_max:
        reasons.append(f"high contrast: gray-level std {std:.1f} > {cfg.contrast_max}")
    return GateVerdict(lap, std, reasons)


def gate_report(ids: list[str], verdicts: list[GateVerdict], cfg: GateConfig) -> dict[str, Any]:
    """What the gates dropped and why: ``{"thresholds", "n", "kept", "dropped": [{id, reasons}]}``."""
    dropped = [{"id": i, "reasons": v.reasons} for i, v in zip(ids, verdicts) if not v.passed]
    return {"thresholds": asdict(cfg), "n": len(ids), "kept": len(ids) - len(dropped), "dropped": dropped}
