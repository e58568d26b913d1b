"""Synthetic lung sounds and a synthetic ICBHI-layout folder, for tests and demos.

The sounds are simple stand-ins with the acoustic signatures the classes are defined by:
breath noise is band-limited noise under a rising-falling envelope; crackles are short
(a few ms) damped oscillations; wheezes are sustained tones (200-800 Hz, > 100 ms) with
a harmonic. They are not clinical recordings and no model quality is claimed on them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import butter, sosfilt

from pulmo.config import ICBHI_CLASSES

DEVICES = ("Meditron", "LittC2SE", "Litt3200", "AKGC417L")
LOCATIONS = ("Al", "Ar", "Pl", "Pr", "Tc", "Ll", "Lr")


def breath_noise(n: int, sample_rate_hz: int, rng: np.random.Generator) -> np.ndarray:
    """``(n,)`` band-limited (100-1000 Hz) noise under a raised-cosine envelope, peak ~0.1."""
    high = min(1000.0, 0.45 * sample_rate_hz)
    sos = butter(4, [100.0, high], btype="bandpass", fs=sample_rate_hz, output="sos")
    noise = sosfilt(sos, rng.standard_normal(n))
    env = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / max(n, 1))
    out = noise * env
    return (0.1 * out / (np.abs(out).max() + 1e-9)).astype(np.float32)


def add_crackles(x: np.ndarray, sample_rate_hz: int, rng: np.random.Generator, count: int = 8) -> None:
    """Add ``count`` damped oscillations of 5-15 ms at random places (in place)."""
    for _ in range(count):
        dur = int(rng.uniform(0.005, 0.015) * sample_rate_hz)
        t = np.arange(dur) / sample_rate_hz
        freq = rng.uniform(300, min(1500, 0.4 * sample_rate_hz))
        burst = 0.3 * np.sin(2 * np.pi * freq * t) * np.exp(-t * 400)
        at = int(rng.integers(0, max(1, len(x) - dur)))
        x[at : at + dur] += burst[: len(x) - at].astype(np.float32)


def add_wheeze(x: np.ndarray, sample_rate_hz: int, rng: np.random.Generator) -> None:
    """Add a 0.3-0.8 s tone (200-800 Hz, with its second harmonic) with soft edges (in place)."""
    dur = min(len(x), int(rng.uniform(0.3, 0.8) * sample_rate_hz))
    t = np.arange(dur) / sample_rate_hz
    f0 = rng.uniform(200, 800)
    tone = np.sin(2 * np.pi * f0 * t) + 0.3 * np.sin(4 * np.pi * f0 * t)
    tone *= np.hanning(dur) * 0.15
    at = int(rng.integers(0, max(1, len(x) - dur + 1)))
    x[at : at + dur] += tone.astype(np.float32)


def synth_cycle(label: str, sample_rate_hz: int, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """One respiratory cycle of class ``label`` (``normal|crackle|wheeze|both``), ``(T,)`` float32."""
    if label not in ICBHI_CLASSES:
        raise ValueError(f"unknown class {label!r}")
    x = breath_noise(int(seconds * sample_rate_hz), sample_rate_hz, rng)
    if label in ("crackle", "both"):
        add_crackles(x, sample_rate_hz, rng)
    if label in ("wheeze", "both"):
        add_wheeze(x, sample_rate_hz, rng)
    return np.clip(x, -1, 1)


def write_icbhi_folder(
    root: str | Path,
    n_patients: int = 4,
    cycles_per_recording: int = 4,
    sample_rate_hz: int = 4000,
    seed: int = 0,
    missing_audio: int = 1,
) -> Path:
    """Write a small folder in the ICBHI layout: annotations, split file, diagnoses, audio.

    One recording per patient; even patients go to ``train``, odd to ``test``. Recordings
    alternate between whole files in ``audio/`` and per-cycle files in ``cycles/``; the
    last ``missing_audio`` recordings get no audio at all. Cycle labels cycle through the
    four classes so every class is present.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for sub in ("annotations", "audio", "cycles"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    split_lines, diag_lines = [], []
    for p in range(n_patients):
        patient = str(101 + p)
        rec_id = f"{patient}_1b1_{LOCATIONS[p % len(LOCATIONS)]}_sc_{DEVICES[p % len(DEVICES)]}"
        split_lines.append(f"{rec_id}\t{'train' if p % 2 == 0 else 'test'}")
        diag_lines.append(f"{patient}\t{'Healthy' if p % 3 == 0 else 'COPD'}")
        cycles, ann, t = [], [], 0.0
        for i in range(cycles_per_recording):
            label = ICBHI_CLASSES[(i + p) % len(ICBHI_CLASSES)]
            seconds = float(rng.uniform(1.5, 3.5))
            cycles.append(synth_cycle(label, sample_rate_hz, seconds, rng))
            crackle, wheeze = int(label in ("crackle", "both")), int(label in ("wheeze", "both"))
            ann.append(f"{t:.3f}\t{t + seconds:.3f}\t{crackle}\t{wheeze}")
            t += seconds
        (root / "annotations" / f"{rec_id}.txt").write_text("\n".join(ann) + "\n")
        if p >= n_patients - missing_audio:
            continue
        if p % 2 == 0:
            sf.write(root / "audio" / f"{rec_id}.wav", np.concatenate(cycles), sample_rate_hz)
        else:
            for i, c in enumerate(cycles):
                sf.write(root / "cycles" / f"{rec_id}_{i}.wav", c, sample_rate_hz)
    (root / "ICBHI_challenge_train_test.txt").write_text("\r\n".join(split_lines) + "\r\n")
    (root / "patient_diagnosis.txt").write_text("\n".join(diag_lines) + "\n")
    return root


def write_demo_recording(path: str | Path, sample_rate_hz: int = 4000, seed: int = 7) -> Path:
    """A 16-bit recording of ten synthetic cycles plus its ICBHI-style ``.txt`` beside it.

    The labels run normal, crackle, wheeze, both, twice, then two normal cycles.
    """
    path = Path(path)
    rng = np.random.default_rng(seed)
    labels = [*ICBHI_CLASSES, *ICBHI_CLASSES, "normal", "normal"]
    cycles, lines, t = [], [], 0.0
    for label in labels:
        seconds = float(rng.uniform(2.0, 3.2))
        cycles.append(synth_cycle(label, sample_rate_hz, seconds, rng))
        lines.append(f"{t:.3f}\t{t + seconds:.3f}\t{int(label in ('crackle', 'both'))}\t{int(label in ('wheeze', 'both'))}")
        t += seconds
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.concatenate(cycles), sample_rate_hz, subtype="PCM_16")
    path.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    return path
