"""Breath recordings listed in a CSV (RRuJO's ``labels.csv`` or any folder laid out like it).

Columns (header names, case-insensitive): ``path`` (relative to the CSV's folder, or
absolute) and the rate as ``rr_bpm`` or ``bpm``; optional ``breath_count``, ``noisy``
(0/1, true/false), ``subject`` or ``subject_code``, and ``device``. Each row becomes one
:class:`~pulmo.data.records.AudioRecord` whose ``label`` is its breathing class
(none / normal / heavy) and ``patient_id`` its subject (the file's stem when absent).
"""

from __future__ import annotations

import csv
from pathlib import Path

from pulmo.data.adapters.synthetic_breath import BREATH_CLASSES, breath_class
from pulmo.data.records import AudioRecord
from pulmo.errors import DataError

RATE_COLUMNS = ("rr_bpm", "bpm")
SUBJECT_COLUMNS = ("subject", "subject_code")


def _flag(value: str, where: str) -> bool | None:
    v = value.strip().lower()
    if v == "":
        return None
    if v in ("1", "true", "yes", "noisy"):
        return True
    if v in ("0", "false", "no", "clean"):
        return False
    raise DataError(f"{where}: cannot read noise flag {value!r} (use 0/1)")


def load_breath_csv(location: str | Path, csv_name: str = "labels.csv") -> list[AudioRecord]:
    """Records of a labels CSV; ``location`` is the CSV itself or the folder holding ``csv_name``.

    Raises:
        DataError: missing CSV or columns, unreadable numbers, or listed files that do not exist.
    """
    location = Path(location)
    path = location / csv_name if location.is_dir() else location
    if not path.is_file():
        raise DataError(f"labels file not found: {path} (expected a CSV with columns path and bpm or rr_bpm)")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        header = {h.strip().lower(): h for h in (reader.fieldnames or [])}
        rate_col = next((header[c] for c in RATE_COLUMNS if c in header), None)
        if "path" not in header or rate_col is None:
            raise DataError(f"{path}: needs columns 'path' and 'rr_bpm' (or 'bpm'); found {list(header.values())}")
        subject_col = next((header[c] for c in SUBJECT_COLUMNS if c in header), None)
        records = []
        missing = []
        for i, row in enumerate(reader, start=2):
            where = f"{path}, line {i}"
            audio = Path(row[header["path"]].strip())
            audio = audio if audio.is_absolute() else path.parent / audio
            if not audio.is_file():
                missing.append(str(audio))
                continue
            try:
                rate = float(row[rate_col])
                count = float(row[header["breath_count"]]) if row.get(header.get("breath_count", ""), "").strip() else None
            except ValueError:
                raise DataError(f"{where}: rate or breath count is not a number") from None
            if not 0 <= rate <= 120:
                raise DataError(f"{where}: rate {rate} breaths per minute is out of range (0-120)")
            noisy = _flag(row[header["noisy"]], where) if "noisy" in header else None
            subject = row[subject_col].strip() if subject_col else ""
            records.append(AudioRecord(
                record_id=str(audio.relative_to(path.parent)) if audio.is_relative_to(path.parent) else str(audio),
                path=str(audio), label=BREATH_CLASSES[breath_class(rate)], patient_id=subject or audio.stem,
                recording_id=audio.stem, device=row.get(header.get("device", ""), "").strip(),
                rr_bpm=rate, breath_count=count, noisy=noisy,
            ))
    if missing:
        raise DataError(f"{path}: {len(missing)} listed audio file(s) not found, e.g. {missing[0]}")
    if not records:
        raise DataError(f"{path} lists no recordings")
    return records
