"""ICBHI 2017 Respiratory Sound Database -> one :class:`AudioRecord` per respiratory cycle.

Layout read (see ``shared/data/README.md``)::

    annotations/<recording_id>.txt        start_s end_s crackle wheeze, one line per cycle
    ICBHI_challenge_train_test.txt        <recording_id>\\t<train|test>
    audio/<recording_id>.(flac|wav)       whole recordings
    cycles/<recording_id>_<i>.(flac|wav)  single cycles (i = 0-based annotation line)

Audio is optional per recording: a cycle without audio is listed in
:attr:`IcbhiIndex.missing` and, with ``strict=True``, makes loading fail. Known quirks
of the official files are repaired here and reported in :attr:`IcbhiIndex.notes`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf

from pulmo.config import ICBHI_CLASSES
from pulmo.data.records import AudioRecord
from pulmo.errors import DataError

AUDIO_SUFFIXES = (".flac", ".wav")
SPLIT_FILE = "ICBHI_challenge_train_test.txt"
# The official split file names a recording that does not exist under that name.
SPLIT_NAME_FIXES = {"226_1b1_Pl_sc_Meditron": "226_1b1_Pl_sc_LittC2SE"}
# Tolerance for an annotated cycle end past the end of its audio (rounding in the files).
END_TOLERANCE_S = 0.05


def label_from_flags(crackle: int, wheeze: int) -> str:
    """ICBHI's two presence flags -> one of ``normal``, ``crackle``, ``wheeze``, ``both``."""
    return ICBHI_CLASSES[int(bool(crackle)) + 2 * int(bool(wheeze))]


@dataclass(frozen=True)
class RecordingName:
    """The parts of an ICBHI file name: ``patient_index_location_mode_device``."""

    recording_id: str
    patient_id: str
    index: str
    location: str
    mode: str
    device: str

    @classmethod
    def parse(cls, recording_id: str) -> RecordingName:
        parts = recording_id.split("_")
        if len(parts) != 5:
            raise DataError(f"{recording_id!r} is not an ICBHI name (patient_index_location_mode_device)")
        return cls(recording_id, *parts)


@dataclass(frozen=True)
class MissingCycle:
    recording_id: str
    cycle_index: int
    split: str
    label: str


@dataclass
class IcbhiIndex:
    """Everything the adapter found: cycles with audio, cycles without, and repairs made."""

    records: list[AudioRecord]
    missing: list[MissingCycle] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    annotation_counts: dict[str, Counter[str]] = field(default_factory=dict)


def read_split_file(root: Path) -> tuple[dict[str, str], list[str]]:
    """Official split ``{recording_id: 'train'|'test'}`` with name fixes applied."""
    path = root / SPLIT_FILE
    if not path.is_file():
        raise DataError(f"ICBHI split file not found: {path}")
    split: dict[str, str] = {}
    notes: list[str] = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ("train", "test"):
            raise DataError(f"{path}:{n}: expected '<recording_id> <train|test>', got {line!r}")
        rec_id, part = parts
        if rec_id in SPLIT_NAME_FIXES:
            notes.append(f"split file names {rec_id}; using {SPLIT_NAME_FIXES[rec_id]}")
            rec_id = SPLIT_NAME_FIXES[rec_id]
        split[rec_id] = part
    return split, notes


def read_annotation(path: Path) -> list[tuple[float, float, str]]:
    """``(start_s, end_s, label)`` per line of an ICBHI annotation file."""
    cycles = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            start, end, crackle, wheeze = float(parts[0]), float(parts[1]), int(parts[2]), int(parts[3])
        except (ValueError, IndexError):
            raise DataError(f"{path}:{n}: expected 'start end crackle wheeze', got {line!r}") from None
        if end <= start or start < 0:
            raise DataError(f"{path}:{n}: cycle end {end} s is not after start {start} s")
        cycles.append((start, end, label_from_flags(crackle, wheeze)))
    return cycles


def check_cycle_in_audio(start_s: float, end_s: float, audio_s: float, where: str) -> None:
    """Raise unless the cycle ``[start_s, end_s]`` lies in ``audio_s`` seconds of audio
    (an end up to ``END_TOLERANCE_S`` past the audio is rounding and allowed)."""
    if start_s >= audio_s or end_s > audio_s + END_TOLERANCE_S:
        raise DataError(f"{where}: cycle {start_s}-{end_s} s ends after the audio ({audio_s:.3f} s)")


def _find_audio(folder: Path, stem: str) -> Path | None:
    for suffix in AUDIO_SUFFIXES:
        p = folder / f"{stem}{suffix}"
        if p.is_file():
            return p
    return None


def _audio_seconds(path: Path) -> float:
    try:
        info = sf.info(str(path))
    except Exception as err:  # soundfile raises several types for unreadable files
        raise DataError(f"cannot read audio {path}: {err}") from None
    if info.frames == 0:
        raise DataError(f"audio file is empty: {path}")
    return info.frames / info.samplerate


def load_icbhi(root: str | Path, strict: bool = False) -> IcbhiIndex:
    """Index an ICBHI folder into cycle records.

    Args:
        root: folder with ``annotations/`` and the split file, plus ``audio/`` and/or ``cycles/``.
        strict: fail on the first annotated cycle that has no audio instead of listing it.

    Raises:
        DataError: missing folder or split file, malformed annotation, a cycle that ends
            after its audio does, or (strict) a cycle without audio.
    """
    root = Path(root)
    ann_dir = root / "annotations"
    if not ann_dir.is_dir():
        raise DataError(f"no ICBHI annotations folder at {ann_dir} (set --data or PULMO_DATA)")
    split, notes = read_split_file(root)
    records: list[AudioRecord] = []
    missing: list[MissingCycle] = []
    ann_counts: dict[str, Counter[str]] = {"train": Counter(), "test": Counter()}
    ann_files = sorted(ann_dir.glob("*.txt"))
    if not ann_files:
        raise DataError(f"no annotation files in {ann_dir}")
    unsplit = sorted(set(split) - {p.stem for p in ann_files})
    if unsplit:
        notes.append(f"{len(unsplit)} recording(s) in the split file have no annotation: {unsplit[:5]}")
    for ann_path in ann_files:
        name = RecordingName.parse(ann_path.stem)
        part = split.get(name.recording_id)
        if part is None:
            raise DataError(f"recording {name.recording_id} is not in {SPLIT_FILE}")
        cycles = read_annotation(ann_path)
        whole = _find_audio(root / "audio", name.recording_id)
        whole_s = _audio_seconds(whole) if whole else None
        for i, (start, end, label) in enumerate(cycles):
            ann_counts[part][label] += 1
            common = dict(
                label=label, patient_id=name.patient_id, recording_id=name.recording_id, cycle_index=i,
                location=name.location, mode=name.mode, device=name.device, split=part,
                annotated_start_s=start, annotated_end_s=end, record_id=f"{name.recording_id}_{i}",
            )
            if whole is not None and whole_s is not None:
                check_cycle_in_audio(start, end, whole_s, f"{ann_path.name} line {i + 1} ({whole})")
                records.append(AudioRecord(path=str(whole), start_s=start, end_s=min(end, whole_s), **common))
                continue
            cycle_file = _find_audio(root / "cycles", f"{name.recording_id}_{i}")
            if cycle_file is not None:
                _audio_seconds(cycle_file)  # fail early on empty or unreadable files
                records.append(AudioRecord(path=str(cycle_file), **common))
                continue
            miss = MissingCycle(name.recording_id, i, part, label)
            if strict:
                raise DataError(f"strict: no audio for cycle {i} of {name.recording_id} ({part})")
            missing.append(miss)
    if missing:
        notes.append(f"{len(missing)} annotated cycle(s) have no audio and are not scored")
    return IcbhiIndex(records=records, missing=missing, notes=notes, annotation_counts=ann_counts)
