"""STFT, mel and MFCC features computed with ``torch.stft`` (differentiable, batched)."""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import scipy.fft
import torch

from pulmo.features.base import FEATURES, FeatureExtractor, check_waveforms, normalise, to_db


@dataclass
class StftConfig:
    """Log-power STFT. ``n_fft=0`` means the window length (paper: 100 ms window, 40 ms hop).

    ``normalise`` is ``example`` or ``frequency`` (see :func:`pulmo.features.base.normalise`).
    """

    sample_rate_hz: int = 4000
    window_ms: float = 100.0
    hop_ms: float = 40.0
    n_fft: int = 0
    top_db: float = 80.0
    normalise: str = "example"

    @property
    def win_length(self) -> int:
        return int(round(self.window_ms * self.sample_rate_hz / 1000))

    @property
    def hop_length(self) -> int:
        return int(round(self.hop_ms * self.sample_rate_hz / 1000))

    @property
    def fft_size(self) -> int:
        return max(self.n_fft, self.win_length)


def _power_spectrogram(x: torch.Tensor, cfg: StftConfig, window: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` -> ``(B, n_fft // 2 + 1, frames)`` power."""
    spec = torch.stft(
        x, n_fft=cfg.fft_size, hop_length=cfg.hop_length, win_length=cfg.win_length,
        window=window, center=True, return_complex=True,
    )
    return spec.abs().pow(2)


@FEATURES.register("stft")
class StftFeatures(FeatureExtractor):
    """``(B, T)`` -> ``(B, 1, n_fft // 2 + 1, frames)`` standardised log-power spectrogram."""

    name = "stft"
    config_class = StftConfig

    def __init__(self, config: StftConfig) -> None:
        super().__init__(config)
        self.register_buffer("window", torch.hann_window(config.win_length), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        power = _power_spectrogram(check_waveforms(x), self.config, self.window)
        return normalise(to_db(power, self.config.top_db), self.config.normalise).unsqueeze(1)


@dataclass
class MelConfig(StftConfig):
    """Log-mel energies; ``fmax_hz=0`` means Nyquist. ``n_mfcc>0`` turns them into MFCCs."""

    n_mels: int = 64
    fmin_hz: float = 0.0
    fmax_hz: float = 0.0
    n_mfcc: int = 0


class _MelBase(FeatureExtractor):
    config_class = MelConfig

    def __init__(self, config: MelConfig) -> None:
        super().__init__(config)
        fmax = config.fmax_hz or config.sample_rate_hz / 2
        mel = librosa.filters.mel(
            sr=config.sample_rate_hz, n_fft=config.fft_size, n_mels=config.n_mels, fmin=config.fmin_hz, fmax=fmax
        )
        self.register_buffer("window", torch.hann_window(config.win_length), persistent=False)
        self.register_buffer("mel_basis", torch.from_numpy(mel).float(), persistent=False)

    def log_mel(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` -> ``(B, n_mels, frames)`` in dB."""
        power = _power_spectrogram(check_waveforms(x), self.config, self.window)
        return to_db(self.mel_basis @ power, self.config.top_db)


@FEATURES.register("mel")
class MelFeatures(_MelBase):
    """``(B, T)`` -> ``(B, 1, n_mels, frames)`` standardised log-mel spectrogram."""

    name = "mel"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return normalise(self.log_mel(x), self.config.normalise).unsqueeze(1)


@FEATURES.register("mfcc")
class MfccFeatures(_MelBase):
    """``(B, T)`` -> ``(B, 1, n_mfcc, frames)`` standardised MFCCs (orthonormal DCT-II of log-mel)."""

    name = "mfcc"

    def __init__(self, config: MelConfig) -> None:
        if config.n_mfcc <= 0:
            config.n_mfcc = 20
        super().__init__(config)
        dct = scipy.fft.dct(torch.eye(config.n_mels).numpy(), type=2, norm="ortho", axis=0)[: config.n_mfcc]
        self.register_buffer("dct", torch.from_numpy(dct).float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return normalise(self.dct @ self.log_mel(x), self.config.normalise).unsqueeze(1)
