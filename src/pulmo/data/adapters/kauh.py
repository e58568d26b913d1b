"""KAUH lung sounds (Fraiwan et al., Data in Brief 2021) -> recording-level :class:`AudioRecord`s.

Layout: ``<root>/labels.csv`` (``path, subject, filter, diagnosis, crackle, wheeze, flags, ...``)
and ``<root>/audio/{BP,DP,EP}/<subject>.flac``: one recording per subject through the
Littmann 3200's bell (``BP``), diaphragm (``DP``) and extended (``EP``) filter modes, 4 kHz.

Labels are per recording (no cycle times): a record covers the whole file
(``start_s=0``, ``end_s=None``) and its label is ICBHI's four-class name of the two
presence flags. Files whose ``flags`` column is set (byte-identical pairs with conflicting
labels upstream) are left out.
"""

from __future__ import annotations

import csv
from pathlib import Path

from pulmo.data.adapters.icbhi import label_from_flags
from pulmo.data.records import AudioRecord
from pulmo.errors import DataError

DEVICE = "Litt3200"
FILTER_MODES = ("BP", "DP", "EP")


def load_kauh(root: str | Path) -> list[AudioRecord]:
    """Every usable KAUH recording, sorted by subject then filter mode.

    ``patient_id`` is ``kauh<subject>`` (never equal to an ICBHI patient id), ``mode`` the
    filter mode, ``device`` ``Litt3200``, ``split`` empty (split by subject downstream).

    Raises:
        DataError: ``labels.csv`` is missing, or a listed audio file is absent.
    """
    root = Path(root)
    table = root / "labels.csv"
    if not table.is_file():
        raise DataError(f"{table}: KAUH labels.csv not found")
    records = []
    with table.open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("flags", "").strip():
                continue
            path = root / row["path"]
            if not path.is_file():
                raise DataError(f"{path}: listed in {table.name} but missing")
            subject = int(row["subject"])
            records.append(AudioRecord(
                record_id=f"kauh{subject:03d}_{row['filter']}", path=str(path),
                label=label_from_flags(int(row["crackle"]), int(row["wheeze"])),
                patient_id=f"kauh{subject:03d}", recording_id=f"kauh{subject:03d}_{row['filter']}",
                location=row.get("location", ""), mode=row["filter"], device=DEVICE,
            ))
    return sorted(records, key=lambda r: (r.patient_id, r.mode))
