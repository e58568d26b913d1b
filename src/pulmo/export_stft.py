"""The lung-sound classifier as it is exported: its spectral front end in ONNX's fast kernels.

onnxruntime's ``STFT`` kernel is slow on this project's CPU (one thread, a batch of 64 cycles:
260 ms against ``torch.stft``'s 31 ms for the first STFT model; 14 ms of the 53 ms FP32 graph of
the bundled log-mel model, and 2 ms more for the magnitude after it). The export writes the same
transforms with other operators:

- :class:`ConvStft` (:class:`~pulmo.features.spectral.StftFeatures`): the STFT as a strided
  ``Conv`` with windowed DFT kernels (``n_fft // 2 + 1`` cosine and as many sine rows);
- :class:`MatmulMel` (:class:`~pulmo.features.spectral.MelFeatures` and ``MfccFeatures``): frames
  cut by a reshape of the padded waveform (hop-long rows, each frame its row and the start of the
  next ones), the windowed real DFT as one ``MatMul`` (the cosine and sine columns of the bins the
  mel filters use), the power (``y * y``) and the mel filters as a second ``MatMul`` against the mel
  matrix stacked once for the cosine and once for the sine columns (``mel @ (re² + im²)``). The
  DFT and the mel matrix cannot be folded into one product: the power between them is quadratic.

Both compute the features exactly as PyTorch does (reflect padding, window, log power with its
``top_db`` floor, per-example normalisation, from :mod:`pulmo.features.base`); the parity tests
hold them to PyTorch's probabilities. Other feature extractors are exported as they are.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pulmo.features.base import check_waveforms, normalise, to_db
from pulmo.features.spectral import MelFeatures, MfccFeatures, StftFeatures


def _window(win_length: int, n_fft: int) -> torch.Tensor:
    """Hann window of ``win_length`` centred in ``n_fft`` (as ``torch.stft`` does), float64."""
    left = (n_fft - win_length) // 2
    window = torch.zeros(n_fft, dtype=torch.float64)
    window[left:left + win_length] = torch.hann_window(win_length, dtype=torch.float64)
    return window


class ConvStft(nn.Module):
    """``(B, T)`` -> ``(B, 1, n_fft // 2 + 1, frames)``: what ``features`` (a :class:`StftFeatures`)
    returns, with the STFT as ``conv1d`` by fixed DFT kernels ``(2 * bins, 1, n_fft)``."""

    def __init__(self, features: StftFeatures) -> None:
        super().__init__()
        cfg = features.config
        self.config, self.n_fft, self.hop = cfg, cfg.fft_size, cfg.hop_length
        window = _window(cfg.win_length, self.n_fft)
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


class MatmulMel(nn.Module):
    """``(B, T)`` -> ``(B, 1, n_mels or n_mfcc, frames)``: what ``features`` (a :class:`MelFeatures`
    or :class:`MfccFeatures`) returns, as frames ``@`` windowed DFT ``(n_fft, columns)``, squared,
    ``@`` stacked mel matrix ``(columns, n_mels)`` (then ``@ dct.T`` for MFCCs). Bins without mel
    weight (at the default settings DC and Nyquist) and the sine columns of DC and Nyquist (zero)
    are left out: they add nothing to any mel band."""

    def __init__(self, features: MelFeatures | MfccFeatures) -> None:
        super().__init__()
        cfg = features.config
        self.config, self.n_fft, self.hop = cfg, cfg.fft_size, cfg.hop_length
        mel = features.mel_basis.double()  # (n_mels, n_fft // 2 + 1)
        bins = (mel.abs().sum(0) > 0).nonzero().flatten()
        sines = bins[(bins > 0) & (2 * bins != self.n_fft)]
        t = torch.arange(self.n_fft, dtype=torch.float64)[:, None] * 2 * math.pi / self.n_fft
        dft = torch.cat([torch.cos(t * bins.double()), -torch.sin(t * sines.double())], 1)
        self.register_buffer("dft", (dft * _window(cfg.win_length, self.n_fft)[:, None]).float(), persistent=False)
        self.register_buffer("mel", torch.cat([mel[:, bins].T, mel[:, sines].T]).float(), persistent=False)
        dct = features.dct.T.contiguous() if isinstance(features, MfccFeatures) else None
        self.register_buffer("dct", dct, persistent=False)

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` -> ``(B, frames, n_fft)``, ``torch.stft``'s centred frames (reflect padding):
        the padded waveform as rows of ``hop`` samples, frame ``f`` rows ``f, f + 1, ...`` joined
        (the last one cut to what ``n_fft`` takes)."""
        samples, pad = x.shape[-1], self.n_fft // 2
        n = (samples + 2 * pad - self.n_fft) // self.hop + 1
        full, part = divmod(self.n_fft, self.hop)
        rows = n - 1 + full + (part > 0)
        right = rows * self.hop - samples - pad  # padding the rows take; past 2 * pad only unused zeros
        x = nn.functional.pad(x, (pad, min(max(right, 0), pad)), mode="reflect")
        if right > pad:
            x = nn.functional.pad(x, (0, right - pad))
        x = x[:, :rows * self.hop].reshape(x.shape[0], rows, self.hop)
        parts = [x[:, j:j + n] for j in range(full)] + ([x[:, full:full + n, :part]] if part else [])
        return torch.cat(parts, -1) if len(parts) > 1 else parts[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.frames(check_waveforms(x)) @ self.dft
        db = to_db((y * y) @ self.mel, self.config.top_db)  # (B, frames, n_mels)
        if self.dct is not None:
            db = db @ self.dct
        return normalise(db.transpose(1, 2), self.config.normalise).unsqueeze(1)


class ExportedClassifier(nn.Module):
    """An :class:`~pulmo.engine.task.AudioClassifier` as exported: ``(B, T)`` -> ``(B, classes)``
    logits, its STFT features as :class:`ConvStft`, its mel and MFCC features as :class:`MatmulMel`."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        kind = type(net.features)
        self.features = (ConvStft(net.features) if kind is StftFeatures
                         else MatmulMel(net.features) if kind in (MelFeatures, MfccFeatures) else net.features)
        self.model = net.model

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.model(self.features(audio))


__all__ = ["ConvStft", "ExportedClassifier", "MatmulMel"]
