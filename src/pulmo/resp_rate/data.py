"""Breath recordings in memory, subject folds, and the training clip sampler.

Recordings are read once, mixed to mono and resampled to ``clip.sample_rate_hz``. Training
clips are drawn fresh every batch: one random length in ``[clip.min_s, clip.max_s]`` per
batch (so a batch stacks without padding), a random start, and optionally a synthetic
clip, a simulated air-microphone clip, a time-compressed real clip, background noise at an
SNR band and a band limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import soxr
import torch

from pulmo.data.adapters.synthetic_breath import breath_class, synth_breath
from pulmo.data.audio_io import audio_header, read_audio
from pulmo.data.records import AudioRecord
from pulmo.data.transforms.audio import make_noise, mix_at_snr
from pulmo.errors import AudioTooShortError, DataError
from pulmo.resp_rate.air_data import air_bank, band_limit
from pulmo.resp_rate.config import AugmentConfig, ClipConfig, RRDataConfig


@dataclass
class Recording:
    """One recording at the working rate: samples ``(T,)``, its rate (bpm) and subject."""

    record: AudioRecord
    samples: np.ndarray
    rate_bpm: float

    @property
    def subject(self) -> str:
        return self.record.patient_id


def load_recording(path: str, sample_rate_hz: int, min_seconds: float) -> np.ndarray:
    """Read, mix to mono and resample ``path``; refuse audio shorter than ``min_seconds``
    (a model's shortest training clip, ``ClipConfig.min_s``) or silent.

    Raises:
        DataError: unreadable, NaN/infinite samples, or silent; :class:`AudioTooShortError` (a
            ``DataError``) if too short.
    """
    samples, _ = read_audio(path, sample_rate_hz=sample_rate_hz)  # mixed and resampled block by block
    duration = audio_header(path).duration_s
    if duration < min_seconds:
        raise AudioTooShortError(f"{path} is {duration:.2f} s long, shorter than the model's shortest clip of {min_seconds:g} s",
                                 duration)
    if float(np.abs(samples).max()) < 1e-6 or float(np.std(samples)) < 1e-7:
        raise DataError(f"{path} is silent (no signal above 1e-6 full scale)")
    return samples


def load_recordings(records: Sequence[AudioRecord], clip: ClipConfig) -> list[Recording]:
    return [Recording(r, load_recording(r.path, clip.sample_rate_hz, clip.min_s), float(r.rr_bpm or 0.0))
            for r in records]


def subject_folds(records: Sequence[AudioRecord], data: RRDataConfig) -> dict[str, list[AudioRecord]]:
    """``train`` / ``val`` / ``test`` records, disjoint by subject (``patient_id``).

    Subjects are shuffled with ``split_seed`` and dealt into ``folds``; fold ``test_fold``
    is the test split; ``val_fraction`` of the other subjects form the validation split.
    """
    subjects = sorted({r.patient_id for r in records})
    if len(subjects) < 3:
        raise DataError(f"a subject-disjoint train/val/test split needs at least 3 subjects, found {len(subjects)}")
    rng = np.random.default_rng(data.split_seed)
    order = [subjects[i] for i in rng.permutation(len(subjects))]
    test = set(order[data.test_fold :: data.folds])
    rest = [s for s in order if s not in test]
    n_val = max(1, int(round(data.val_fraction * len(rest))))
    val = set(rest[:n_val])
    return {
        "train": [r for r in records if r.patient_id not in test | val],
        "val": [r for r in records if r.patient_id in val],
        "test": [r for r in records if r.patient_id in test],
    }


class ClipSampler:
    """Draws labelled training batches from recordings (and, optionally, the generator).

    Each batch is a dict: ``audio`` (B, N) float32, ``rate`` (B,) bpm, ``count`` (B,)
    breaths, ``breath`` (B,) class index, ``noisy`` (B,) 0/1.
    """

    def __init__(self, recordings: Sequence[Recording], clip: ClipConfig, data: RRDataConfig,
                 augment: AugmentConfig, seed: int) -> None:
        if not recordings:
            raise DataError("no training recordings")
        self.recordings, self.clip, self.data, self.augment = list(recordings), clip, data, augment
        self.rng = np.random.default_rng(seed)
        sr = clip.sample_rate_hz
        self.noise = {k: [make_noise(k, 30 * sr, sr, self.rng) for _ in range(3)] for k in augment.noise_types} \
            if augment.enabled else {}
        self.synthetic = []
        if data.synthetic_fraction > 0:
            for _ in range(data.synthetic_bank):
                rate = 0.0 if self.rng.random() < 0.1 else float(self.rng.uniform(5, 60))
                self.synthetic.append(synth_breath(clip.max_s, rate, sr, self.rng, irregularity=self.rng.uniform(0, 0.2)))
        self.air = air_bank(data.air_bank, max(data.air_bank_s, clip.max_s), sr, self.rng, augment.noisy_below_snr_db) \
            if data.air_fraction > 0 else []

    def _real(self, n: int) -> tuple[np.ndarray, float]:
        rec = self.recordings[self.rng.integers(len(self.recordings))]
        x, rate = rec.samples, rec.rate_bpm
        factor = 1.0
        if self.rng.random() < self.data.time_compress_fraction and rate > 0:
            factor = float(self.rng.uniform(1.5, min(3.0, 60.0 / rate)))
        elif self.data.rate_stretch_fraction > 0 and self.rng.random() < self.data.rate_stretch_fraction and rate > 0:
            lo, hi = self.data.rate_stretch_range
            factor = float(np.exp(self.rng.uniform(np.log(lo), np.log(hi))))
        span = int(round(n * factor))
        if len(x) < span:  # shorter than needed: repeat the recording
            x = np.resize(x, span)
        start = int(self.rng.integers(0, len(x) - span + 1))
        seg = x[start : start + span]
        if factor != 1.0:
            seg = soxr.resample(seg, span, n)[:n]
            seg = np.pad(seg, (0, n - len(seg)))
        return seg.astype(np.float32), rate * factor

    def _synthetic(self, n: int) -> tuple[np.ndarray, float]:
        c = self.synthetic[self.rng.integers(len(self.synthetic))]
        start = int(self.rng.integers(0, len(c.audio) - n + 1))
        return c.audio[start : start + n], c.rate_bpm

    def _air(self, n: int) -> tuple[np.ndarray, float, int]:
        c = self.air[self.rng.integers(len(self.air))]
        start = int(self.rng.integers(0, len(c.samples) - n + 1))
        return c.samples[start : start + n], c.rate_bpm, int(c.noisy)

    def _noise(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        bands = self.augment.snr_bands_db
        pick = int(self.rng.integers(len(bands) + 1))
        if pick == len(bands) or float(np.square(x).mean()) == 0:
            return x, 0
        snr = float(self.rng.uniform(*bands[pick]))
        bank = self.noise[self.augment.noise_types[self.rng.integers(len(self.augment.noise_types))]]
        noise = bank[self.rng.integers(len(bank))]
        start = int(self.rng.integers(0, len(noise) - len(x) + 1))
        return mix_at_snr(x, noise[start : start + len(x)], snr), int(snr < self.augment.noisy_below_snr_db)

    def batch(self, size: int) -> dict[str, torch.Tensor]:
        seconds = float(self.rng.uniform(self.clip.min_s, self.clip.max_s))
        n = int(round(seconds * self.clip.sample_rate_hz))
        audio, rates, noisy = [], [], []
        for _ in range(size):
            u = self.rng.random()
            if self.air and u < self.data.air_fraction:  # the simulator's clips bring their own room noise
                x, rate, flag = self._air(n)
            else:
                use_synth = self.synthetic and u < self.data.air_fraction + self.data.synthetic_fraction
                x, rate = self._synthetic(n) if use_synth else self._real(n)
                flag = 0
                if self.augment.enabled:
                    x, flag = self._noise(x)
            if self.rng.random() < self.data.band_limit_fraction:
                x = band_limit(x, self.clip.sample_rate_hz, self.rng)
            audio.append(x)
            rates.append(rate)
            noisy.append(flag)
        rate_t = torch.tensor(rates, dtype=torch.float32)
        return {
            "audio": torch.from_numpy(np.stack(audio)),
            "rate": rate_t,
            "count": rate_t * seconds / 60.0,
            "breath": torch.tensor([breath_class(r) for r in rates]),
            "noisy": torch.tensor(noisy),
        }
