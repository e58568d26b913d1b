"""Mel filterbank energies (MFB) for breath audio (respiratory-rate paper, section IV-A)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from pulmo.features.base import FEATURES, normalise
from pulmo.features.spectral import MelConfig, _MelBase


@dataclass
class MfbConfig(MelConfig):
    """40 log mel energies, 0-7500 Hz as in the paper. When the audio is sampled lower,
    the upper edge is capped at Nyquist (``sample_rate_hz / 2``); ``effective_fmax_hz``
    says which edge was used. Defaults: 64 ms windows every 50 ms (20 frames per second).

    ``normalise``: ``frequency`` subtracts each band's mean over time (removes the
    microphone's or stethoscope's fixed response), then scales to unit variance.
    """

    sample_rate_hz: int = 2000
    window_ms: float = 64.0
    hop_ms: float = 50.0
    n_mels: int = 40
    fmin_hz: float = 0.0
    fmax_hz: float = 7500.0
    normalise: str = "frequency"

    @property
    def effective_fmax_hz(self) -> float:
        return min(self.fmax_hz or self.sample_rate_hz / 2, self.sample_rate_hz / 2)


@FEATURES.register("mfb")
class MfbFeatures(_MelBase):
    """``(B, T)`` -> ``(B, 1, n_mels, frames)`` normalised log mel filterbank energies."""

    name = "mfb"
    config_class = MfbConfig

    def __init__(self, config: MfbConfig) -> None:
        capped = MelConfig(**{**config.__dict__, "fmax_hz": config.effective_fmax_hz})
        with warnings.catch_warnings():  # narrow low bands may be empty at low rates; librosa warns
            warnings.simplefilter("ignore", UserWarning)
            super().__init__(capped)
        self.config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return normalise(self.log_mel(x), self.config.normalise).unsqueeze(1)
