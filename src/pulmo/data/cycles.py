"""Cycle records -> preprocessed waveforms (resampled, band-passed, not yet cut to length).

Each audio file is read once: a whole recording is resampled and filtered as a whole,
then its cycles are sliced out, so the filter has no edge effects at cycle bounds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from pulmo.config import AudioConfig
from pulmo.data.audio_io import band_pass, read_audio, resample
from pulmo.data.records import AudioRecord


def preprocess(samples: np.ndarray, sample_rate_hz: int, cfg: AudioConfig) -> np.ndarray:
    """Resample to ``cfg.sample_rate_hz`` and band-pass, ``(T,) -> (T',)``."""
    out = resample(samples, sample_rate_hz, cfg.sample_rate_hz)
    return band_pass(out, cfg.sample_rate_hz, cfg.band_low_hz, cfg.band_high_hz, cfg.filter_order)


def load_cycle_waveforms(
    records: Sequence[AudioRecord], cfg: AudioConfig, progress: bool = True
) -> list[np.ndarray]:
    """Preprocessed waveform of each record, in the records' order, at ``cfg.sample_rate_hz``."""
    by_path: dict[str, list[int]] = defaultdict(list)
    for i, rec in enumerate(records):
        by_path[rec.path].append(i)
    out: list[np.ndarray] = [np.zeros(0, np.float32)] * len(records)
    for path, idx in tqdm(by_path.items(), desc="loading audio", unit="file", disable=not progress):
        samples, sr = read_audio(path, sample_rate_hz=cfg.sample_rate_hz)  # resampled block by block
        clean = preprocess(samples, sr, cfg)
        for i in idx:
            rec = records[i]
            first = int(round(rec.start_s * cfg.sample_rate_hz))
            last = len(clean) if rec.end_s is None else int(round(rec.end_s * cfg.sample_rate_hz))
            out[i] = clean[first:last]
    return out
