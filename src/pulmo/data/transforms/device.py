"""Stethoscope-response augmentation: a random recording chain applied to a waveform.

A stethoscope (or its filter mode) acts on lung sounds as a smooth frequency response
plus its own noise floor. The Littmann 3200's modes emphasise the bell band (about
20-200 Hz), the diaphragm band (100-500 Hz) or both (extended, 50-500 Hz) and roll off
above; ICBHI's AKG C417L, Meditron and Littmann Classic II SE pass wider bands. The
random chain drawn here covers that range:

- a spectral tilt of -6..+3 dB per octave around 300 Hz,
- one resonance of -6..+12 dB, centred 60-800 Hz log-uniformly, 0.5-2 octaves wide,
- a low-pass roll-off with corner 250-2000 Hz and slope 6-30 dB per octave,
- self-noise (white) 25-50 dB below the filtered signal's power.

The filter is zero-phase (multiplication of the real FFT), so the output keeps the input's
length and alignment; its RMS is restored to the input's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REFERENCE_HZ = 300.0


@dataclass(frozen=True)
class DeviceResponse:
    """One drawn chain. Gains in dB, frequencies in Hz, slopes in dB per octave."""

    tilt_db_per_octave: float
    resonance_hz: float
    resonance_gain_db: float
    resonance_octaves: float
    rolloff_hz: float
    rolloff_db_per_octave: float
    noise_below_db: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> DeviceResponse:
        return cls(
            tilt_db_per_octave=float(rng.uniform(-6.0, 3.0)),
            resonance_hz=float(np.exp(rng.uniform(np.log(60.0), np.log(800.0)))),
            resonance_gain_db=float(rng.uniform(-6.0, 12.0)),
            resonance_octaves=float(rng.uniform(0.5, 2.0)),
            rolloff_hz=float(np.exp(rng.uniform(np.log(250.0), np.log(2000.0)))),
            rolloff_db_per_octave=float(rng.uniform(6.0, 30.0)),
            noise_below_db=float(rng.uniform(25.0, 50.0)),
        )

    def gain_db(self, freqs_hz: np.ndarray) -> np.ndarray:
        """The response in dB at ``freqs_hz`` (``(F,)``); 0 Hz gets the value at 1 Hz."""
        octaves = np.log2(np.maximum(freqs_hz, 1.0) / REFERENCE_HZ)
        tilt = self.tilt_db_per_octave * octaves
        distance = np.log2(np.maximum(freqs_hz, 1.0) / self.resonance_hz) / self.resonance_octaves
        resonance = self.resonance_gain_db * np.exp(-0.5 * (2.0 * distance) ** 2)
        rolloff = -self.rolloff_db_per_octave * np.maximum(0.0, np.log2(np.maximum(freqs_hz, 1.0) / self.rolloff_hz))
        return tilt + resonance + rolloff


def apply_device_response(
    wave: np.ndarray, sample_rate_hz: int, response: DeviceResponse, rng: np.random.Generator
) -> np.ndarray:
    """Filter ``wave`` (``(T,)``) with ``response`` and add its self-noise; ``(T,)`` float32 out."""
    x = np.asarray(wave, np.float64)
    if len(x) < 2:
        return x.astype(np.float32)
    spectrum = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(len(x), 1.0 / sample_rate_hz)
    y = np.fft.irfft(spectrum * 10.0 ** (response.gain_db(freqs) / 20.0), n=len(x))
    power = float(np.mean(y**2))
    y = y + rng.standard_normal(len(x)) * np.sqrt(power * 10.0 ** (-response.noise_below_db / 10.0))
    rms_in, rms_out = np.sqrt(np.mean(x**2)), np.sqrt(np.mean(y**2))
    if rms_out > 0:
        y *= rms_in / rms_out
    return y.astype(np.float32)


def random_device_response(wave: np.ndarray, sample_rate_hz: int, rng: np.random.Generator) -> np.ndarray:
    """``wave`` through a freshly drawn :class:`DeviceResponse` (see the module's ranges)."""
    return apply_device_response(wave, sample_rate_hz, DeviceResponse.draw(rng), rng)
