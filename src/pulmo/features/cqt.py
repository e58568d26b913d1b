"""Constant-Q transform features through librosa (computed on the CPU, not differentiable)."""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import numpy as np
import torch

from pulmo.features.base import FEATURES, FeatureExtractor, check_waveforms, normalise, to_db


@dataclass
class CqtConfig:
    """``n_bins`` bins from ``fmin_hz`` at ``bins_per_octave``; hop in samples."""

    sample_rate_hz: int = 4000
    hop_length: int = 128
    fmin_hz: float = 32.7
    n_bins: int = 84
    bins_per_octave: int = 12
    top_db: float = 80.0
    normalise: str = "example"


@FEATURES.register("cqt")
class CqtFeatures(FeatureExtractor):
    """``(B, T)`` -> ``(B, 1, n_bins, frames)`` standardised log-CQT."""

    name = "cqt"
    config_class = CqtConfig

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        audio = check_waveforms(x).detach().cpu().numpy()
        mags = np.abs(
            librosa.cqt(
                audio, sr=cfg.sample_rate_hz, hop_length=cfg.hop_length, fmin=cfg.fmin_hz,
                n_bins=cfg.n_bins, bins_per_octave=cfg.bins_per_octave,
            )
        )
        power = torch.from_numpy(mags.astype(np.float32) ** 2).to(x.device)
        return normalise(to_db(power, cfg.top_db), cfg.normalise).unsqueeze(1)
