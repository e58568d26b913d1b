"""Band envelopes: log energy in log-spaced bands up to the input's Nyquist, at a slow frame
rate (breathing-rate features for any sample rate).

Stethoscope audio at 2 kHz carries breath sounds below 1 kHz; air-microphone audio at 8-48
kHz carries turbulent flow noise from a few hundred Hz to several kHz. The same extractor,
with the same number of bands, covers both: the bands are spread log-evenly from
``fmin_hz`` to ``min(fmax_hz, 0.45 * sample_rate_hz)``, so a 2 kHz recording gets bands up to
900 Hz and a 16 kHz one up to 7.2 kHz, and a model or a DSP estimator sees ``n_bands`` rows
either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pulmo.features.base import FEATURES, FeatureExtractor, check_waveforms, normalise
from pulmo.features.spectral import StftConfig, _power_spectrogram


@dataclass
class BandEnvelopeConfig(StftConfig):
    """``n_bands`` log-spaced bands from ``fmin_hz`` to ``min(fmax_hz, 0.45 * sample_rate_hz)``
    (Hz); 100 ms frames every 100 ms (10 envelope samples per second, enough for 60 breaths
    per minute and its second harmonic). ``normalise``: ``frequency`` removes each band's
    mean log energy (a device's fixed response), ``none`` keeps log energy as it is."""

    sample_rate_hz: int = 16000
    window_ms: float = 100.0
    hop_ms: float = 100.0
    n_bands: int = 8
    fmin_hz: float = 100.0
    fmax_hz: float = 12000.0
    normalise: str = "none"

    def __post_init__(self) -> None:
        if self.sample_rate_hz < 2 * self.fmin_hz / 0.45 or self.n_bands < 1:
            raise ValueError(f"band envelopes need a sample rate above {2 * self.fmin_hz / 0.45:.0f} Hz and a band, "
                             f"got {self.sample_rate_hz} Hz, {self.n_bands} bands")

    @property
    def top_hz(self) -> float:
        return min(self.fmax_hz, 0.45 * self.sample_rate_hz)

    def edges_hz(self) -> np.ndarray:
        """``(n_bands + 1,)`` band edges in Hz."""
        return np.geomspace(self.fmin_hz, self.top_hz, self.n_bands + 1)


@FEATURES.register("band_env")
class BandEnvelopeFeatures(FeatureExtractor):
    """``(B, T)`` -> ``(B, 1, n_bands, frames)`` log band energies (natural log of mean power)."""

    name = "band_env"
    config_class = BandEnvelopeConfig

    def __init__(self, config: BandEnvelopeConfig) -> None:
        super().__init__(config)
        self.register_buffer("window", torch.hann_window(config.win_length), persistent=False)
        freqs = np.fft.rfftfreq(config.fft_size, 1.0 / config.sample_rate_hz)
        edges = config.edges_hz()
        masks = np.stack([(freqs >= lo) & (freqs < hi) for lo, hi in zip(edges[:-1], edges[1:])]).astype(np.float32)
        masks /= np.maximum(masks.sum(axis=1, keepdims=True), 1.0)  # mean power in the band
        self.register_buffer("bands", torch.from_numpy(masks), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        power = _power_spectrogram(check_waveforms(x), self.config, self.window)  # (B, F, frames)
        band = torch.einsum("kf,bft->bkt", self.bands, power)
        floor = band.flatten(1).amax(dim=1).clamp_min(1e-20).view(-1, 1, 1) * 1e-10
        logs = torch.log(band + floor)
        if self.config.normalise != "none":
            logs = normalise(logs, self.config.normalise)
        return logs.unsqueeze(1)


def band_envelopes_np(samples: np.ndarray, sample_rate_hz: int, n_bands: int = 8, fmin_hz: float = 100.0,
                      fmax_hz: float = 12000.0) -> tuple[np.ndarray, np.ndarray]:
    """One recording ``(T,)`` -> ``(log band energies (n_bands, frames) at 10 frames/s, edges_hz (n_bands + 1,))``."""
    fx = BandEnvelopeFeatures(BandEnvelopeConfig(sample_rate_hz=sample_rate_hz, n_bands=n_bands, fmin_hz=fmin_hz,
                                                 fmax_hz=fmax_hz))
    with torch.no_grad():
        out = fx(torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None])[0, 0].double().numpy()
    return out, fx.config.edges_hz()


__all__ = ["BandEnvelopeConfig", "BandEnvelopeFeatures", "band_envelopes_np"]
