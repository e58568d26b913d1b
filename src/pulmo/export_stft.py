"""The lung-sound classifier as it is exported: its STFT as a strided convolution.

onnxruntime's ``STFT`` kernel took 260 ms for a batch of 64 cycles on this project's CPU (one
thread), eight times ``torch.stft``'s 31 ms and a quarter of the whole FP32 graph. The same
transform written as a ``Conv`` with windowed DFT kernels (``n_fft // 2 + 1`` cosine and as many
sine rows) runs in onnxruntime's convolution code instead. :class:`ConvStft` computes
:class:`~pulmo.features.spectral.StftFeatures` exactly so (reflect padding, Hann window, log
power, per-example normalisation, from :mod:`pulmo.features.base`); the parity test holds it to
PyTorch's probabilities. Other feature extractors are exported as they are.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pulmo.features.base import check_waveforms, normalise, to_db
from pulmo.features.spectral import StftFeatures


class ConvStft(nn.Module):
    """``(B, T)`` -> ``(B, 1, n_fft // 2 + 1, frames)``: what ``features`` (a :class:`StftFeatures`)
    returns, with the STFT as ``conv1d`` by fixed DFT kernels ``(2 * bins, 1, n_fft)``."""

    def __init__(self, features: StftFeatures) -> None:
        super().__init__()
        cfg = features.config
        self.config, self.n_fft, self.hop = cfg, cfg.fft_size, cfg.hop_length
        left = (self.n_fft - cfg.win_length) // 2  # torch.stft centres a shorter window in n_fft
        window = torch.zeros(self.n_fft, dtype=torch.float64)
        window[left:left + cfg.win_length] = torch.hann_window(cfg.win_length, dtype=torch.float64)
        t = torch.arange(self.n_fft, dtype=torch.float64)
        k = torch.arange(self.n_fft // 2 + 1, dtype=torch.float64)[:, None]
        angle = 2 * math.pi * k * t / self.n_fft
        kernels = torch.cat([torch.cos(angle), -torch.sin(angle)]) * window
        self.register_buffer("kernels", kernels.float()[:, None, :], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.pad(check_waveforms(x)[:, None], (self.n_fft // 2, self.n_fft // 2), mode="reflect")
        real, imag = nn.functional.conv1d(x, self.kernels, stride=self.hop).chunk(2, dim=1)
        power = real.pow(2) + imag.pow(2)
        return normalise(to_db(power, self.config.top_db), self.config.normalise).unsqueeze(1)


class ExportedClassifier(nn.Module):
    """An :class:`~pulmo.engine.task.AudioClassifier` as exported: ``(B, T)`` -> ``(B, classes)``
    logits, its STFT features (where they are :class:`StftFeatures`) as :class:`ConvStft`."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.features = ConvStft(net.features) if type(net.features) is StftFeatures else net.features
        self.model = net.model

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.model(self.features(audio))


__all__ = ["ConvStft", "ExportedClassifier"]
