"""Several feature maps of one size stacked as input channels (Conv-ViT: MFCC, mel, CQT)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from pulmo.errors import ConfigError
from pulmo.features.base import FEATURES, FeatureExtractor, check_waveforms

STACKABLE = ("mfcc", "mel", "cqt")


@dataclass
class StackConfig:
    """``parts`` (any of mfcc, mel, cqt, in channel order), each ``n_bins`` high.

    STFT-based parts use an ``n_fft``-sample window and all parts hop ``hop_length``
    samples, so their frame counts agree. Mel filters and the CQT span
    ``fmin_hz``..``fmax_hz``; the CQT fits its ``n_bins`` into that range with
    ``ceil(n_bins / log2(fmax / fmin))`` bins per octave.
    """

    sample_rate_hz: int = 16000
    parts: list[str] = field(default_factory=lambda: list(STACKABLE))
    n_bins: int = 96
    n_fft: int = 2048
    hop_length: int = 512
    fmin_hz: float = 50.0
    fmax_hz: float = 2000.0
    top_db: float = 80.0
    normalise: str = "example"

    def __post_init__(self) -> None:
        unknown = [p for p in self.parts if p not in STACKABLE]
        if unknown or not self.parts or len(set(self.parts)) != len(self.parts):
            raise ConfigError(f"features.parts must be distinct names from {list(STACKABLE)}, got {self.parts}")
        if not 0 < self.fmin_hz < self.fmax_hz <= self.sample_rate_hz / 2:
            raise ConfigError("features need 0 < fmin_hz < fmax_hz <= sample_rate_hz / 2")

    @property
    def cqt_bins_per_octave(self) -> int:
        import math

        return math.ceil(self.n_bins / math.log2(self.fmax_hz / self.fmin_hz))


@FEATURES.register("stack")
class StackedFeatures(FeatureExtractor):
    """``(B, T)`` -> ``(B, len(parts), n_bins, 1 + T // hop_length)``, each part standardised alone."""

    name = "stack"
    config_class = StackConfig

    def __init__(self, config: StackConfig) -> None:
        super().__init__(config)
        window_ms = 1000.0 * config.n_fft / config.sample_rate_hz
        hop_ms = 1000.0 * config.hop_length / config.sample_rate_hz
        stft_args = {
            "sample_rate_hz": config.sample_rate_hz, "window_ms": window_ms, "hop_ms": hop_ms, "n_mels": config.n_bins,
            "fmin_hz": config.fmin_hz, "fmax_hz": config.fmax_hz, "top_db": config.top_db, "normalise": config.normalise,
        }
        args = {
            "mel": stft_args,
            "mfcc": {**stft_args, "n_mfcc": config.n_bins},
            "cqt": {
                "sample_rate_hz": config.sample_rate_hz, "hop_length": config.hop_length, "fmin_hz": config.fmin_hz,
                "n_bins": config.n_bins, "bins_per_octave": config.cqt_bins_per_octave, "top_db": config.top_db,
                "normalise": config.normalise,
            },
        }
        self.parts = nn.ModuleList(FEATURES.get(p).from_params(**args[p]) for p in config.parts)

    @property
    def channels(self) -> int:
        return len(self.parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_waveforms(x)
        return torch.cat([part(x) for part in self.parts], dim=1)
