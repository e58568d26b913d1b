"""Lung-sound inference: recordings and cycles in, per-cycle class probabilities out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pulmo.data.adapters.icbhi import check_cycle_in_audio, read_annotation
from pulmo.data.audio_io import audio_header, read_audio
from pulmo.data.cycles import preprocess
from pulmo.data.segmentation import segment_cycles
from pulmo.engine.checkpoint import build_from_checkpoint, file_hash, read_checkpoint
from pulmo.engine.evaluate import predict_probabilities
from pulmo.errors import CheckpointError, DataError
from pulmo.inference.bundled import default_checkpoint

# Recordings above this rate are segmented (and preprocessed) from a copy resampled to it while
# decoding. The segmenter listens at 150-800 Hz, in float64: a 600 s recording costs analyze_file
# about 200 MB read at 8 kHz, 300 MB at 16 kHz. ICBHI audio (4 and 8 kHz) reads exactly as before.
SEGMENTER_MAX_RATE_HZ = 8000


@dataclass
class CycleResult:
    """One cycle (or window): bounds in seconds, predicted label, probability per label."""

    start_s: float
    end_s: float
    label: str
    probabilities: dict[str, float]
    annotated_label: str | None = None


@dataclass
class RecordingResult:
    """All cycles of one recording, plus which model made them."""

    path: str
    segmentation: str  # "annotation" (from a .txt), "segmenter" (automatic cycles) or "windows" (sliding windows)
    cycles: list[CycleResult]
    model: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def window_starts(duration_s: float, window_s: float, hop_s: float) -> list[float]:
    """Start times of sliding windows that cover ``[0, duration_s]`` with nothing left out.

    Windows start every ``hop_s``; a last window aligned to the end is added when the
    regular ones stop short. A recording shorter than one window gets one window at 0.
    """
    if hop_s <= 0 or window_s <= 0:
        raise ValueError("window and hop must be positive")
    last = max(duration_s - window_s, 0.0)
    starts = [float(s) for s in np.arange(0.0, last + 1e-9, hop_s)]
    if starts[-1] < last - 1e-9:
        starts.append(round(last, 6))
    return starts


class LungSoundPipeline:
    """A trained lung-sound classifier with its preprocessing.

    >>> pipe = LungSoundPipeline.from_checkpoint()          # the bundled model
    >>> result = pipe.analyze_file("recording.wav")          # annotation .txt beside it is used if present
    """

    def __init__(self, bundle: dict[str, Any], checkpoint_path: Path) -> None:
        if bundle.get("task") != "lung-sounds":
            raise CheckpointError(f"{checkpoint_path} is a {bundle.get('task')!r} model, not lung-sounds")
        self.bundle = bundle
        self.net, self.audio = build_from_checkpoint(bundle)
        self.labels: list[str] = list(bundle["labels"])
        self.model_info = {
            "name": bundle["name"],
            "checkpoint": checkpoint_path.name,
            "sha256": file_hash(checkpoint_path),
            "pulmo_version": bundle["pulmo_version"],
            "git_commit": bundle["git_commit"],
        }

    @classmethod
    def from_checkpoint(cls, path: str | Path | None = None) -> LungSoundPipeline:
        """Load ``path``, or the bundled lung-sound model when ``path`` is None."""
        ckpt = Path(path) if path is not None else default_checkpoint("lung-sounds")
        return cls(read_checkpoint(ckpt), ckpt)

    def predict_cycles(self, waveforms: Sequence[np.ndarray], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """``(N, K)`` probabilities for preprocessed cycles at ``self.audio.sample_rate_hz``."""
        return predict_probabilities(self.net, waveforms, self.audio.cycle_samples, batch_size, progress, self.audio.pad)

    def analyze_file(
        self, path: str | Path, annotation: str | Path | None = None, hop_seconds: float | None = None,
        unannotated: str = "segmenter",
    ) -> RecordingResult:
        """Classify a recording's cycles.

        Cycles come from ``annotation`` (ICBHI ``.txt``), else from a ``.txt`` with the
        same stem beside the audio, else (``unannotated``) from the automatic segmenter
        (``"segmenter"``, :mod:`pulmo.data.segmentation`) or from sliding windows of the
        model's cycle length with ``hop_seconds`` (``"windows"``, default hop: half a window).
        """
        if unannotated not in ("segmenter", "windows"):
            raise DataError(f"unannotated must be 'segmenter' or 'windows', got {unannotated!r}")
        path = Path(path)
        # at most SEGMENTER_MAX_RATE_HZ, mixed and resampled block by block: a 192 kHz
        # multi-channel file never exists decoded in full; files at or below it read as before
        samples, sr = read_audio(path, sample_rate_hz=min(audio_header(path).sample_rate_hz, SEGMENTER_MAX_RATE_HZ))
        clean = preprocess(samples, sr, self.audio)
        rate = self.audio.sample_rate_hz
        duration = len(clean) / rate
        ann = Path(annotation) if annotation else path.with_suffix(".txt")
        if ann.is_file():
            bounds: list[tuple[float, float, str | None]] = list(read_annotation(ann))
            for s, e, _ in bounds:
                check_cycle_in_audio(s, e, duration, str(ann))
            segmentation = "annotation"
        elif unannotated == "segmenter":
            bounds = [(a, b, None) for a, b in segment_cycles(samples, sr).cycles]
            segmentation = "segmenter"
        else:
            win = self.audio.cycle_seconds
            hop = hop_seconds or win / 2
            bounds = [(s, min(s + win, duration), None) for s in window_starts(duration, win, hop)]
            segmentation = "windows"
        pieces = [clean[int(round(s * rate)) : int(round(e * rate))] for s, e, _ in bounds]
        probs = self.predict_cycles(pieces)
        cycles = [
            CycleResult(
                start_s=round(s, 3), end_s=round(e, 3), label=self.labels[int(p.argmax())],
                probabilities={k: round(float(v), 4) for k, v in zip(self.labels, p)}, annotated_label=lab,
            )
            for (s, e, lab), p in zip(bounds, probs)
        ]
        return RecordingResult(str(path), segmentation, cycles, dict(self.model_info))


def evaluate_icbhi(
    pipeline: LungSoundPipeline, root: str | Path, split: str = "test", limit: int = 0, strict: bool = False,
    progress: bool = True, cycles_out: str | Path | None = None,
) -> dict[str, Any]:
    """Score ``pipeline`` on an ICBHI folder's ``split`` (``train``, ``test`` or ``all``).

    ``cycles_out`` writes a CSV with one row per scored cycle (id, device, location,
    annotated and predicted label, probabilities), so exactly what was scored is on record.

    Only cycles with audio are scored; the count of those without is reported.
    ``limit > 0`` keeps the first ``limit`` recordings (sorted by name; with or without
    audio), a quick smoke check; the count of cycles without audio is then for those alone. Labels the model does not know are skipped and counted.
    """
    from pulmo.data.adapters.icbhi import load_icbhi
    from pulmo.data.cycles import load_cycle_waveforms
    from pulmo.engine.evaluate import icbhi_report

    if split not in ("train", "test", "all"):
        raise DataError(f"--split must be train, test or all, got {split!r}")
    index = load_icbhi(root, strict=strict)
    records = [r for r in index.records if split == "all" or r.split == split]
    missing = [m for m in index.missing if split == "all" or m.split == split]
    if limit > 0:
        keep = set(sorted({r.recording_id for r in records} | {m.recording_id for m in missing})[:limit])
        records = [r for r in records if r.recording_id in keep]
        missing = [m for m in missing if m.recording_id in keep]
    unknown = [r for r in records if r.label not in pipeline.labels]
    records = [r for r in records if r.label in pipeline.labels]
    if not records:
        raise DataError(f"no cycles with audio in split {split!r} of {root}")
    waves = load_cycle_waveforms(records, pipeline.audio, progress=progress)
    probs = pipeline.predict_cycles(waves, progress=progress)
    y_true = [pipeline.labels.index(r.label) for r in records]
    report = icbhi_report(records, y_true, probs.argmax(1).tolist(), pipeline.labels)
    if cycles_out:
        write_cycle_predictions(cycles_out, records, probs, pipeline.labels)
    return {
        "task": "lung-sounds",
        "split": split,
        **report,
        "cycles_without_audio": len(missing),
        "cycles_with_unknown_label": len(unknown),
        "checkpoint": pipeline.model_info["checkpoint"],
        "checkpoint_sha256": pipeline.model_info["sha256"],
        "model": pipeline.model_info["name"],
    }


def write_cycle_predictions(path: str | Path, records: Sequence[Any], probs: np.ndarray, labels: Sequence[str]) -> None:
    """One CSV row per cycle: which cycle, its annotation, the prediction and probabilities."""
    import csv

    with Path(path).open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["record_id", "split", "device", "location", "annotated", "predicted", *[f"p_{k}" for k in labels]])
        for rec, p in zip(records, probs):
            w.writerow([rec.record_id, rec.split, rec.device, rec.location, rec.label, labels[int(p.argmax())],
                        *[f"{v:.4f}" for v in p]])
