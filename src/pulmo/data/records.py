"""Source-independent records and JSONL manifests.

Every adapter returns a list of records of the same layout (DESIGN rule 5), so datasets
can be merged, relabelled and saved without knowing where they came from.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class AudioRecord:
    """One labelled stretch of audio: a respiratory cycle, or a breath recording with its rate.

    ``path`` is the audio file; ``start_s``/``end_s`` locate the stretch inside it in
    seconds (``end_s=None``: to the end of the file). ``annotated_start_s`` and
    ``annotated_end_s`` keep the cycle's bounds in the original recording's time.
    """

    record_id: str
    path: str
    label: str
    start_s: float = 0.0
    end_s: float | None = None
    patient_id: str = ""
    recording_id: str = ""
    cycle_index: int = -1
    location: str = ""
    mode: str = ""
    device: str = ""
    split: str = ""
    annotated_start_s: float = 0.0
    annotated_end_s: float = 0.0
    rr_bpm: float | None = None  # respiratory rate (breaths per minute), where labelled
    breath_count: float | None = None  # breaths in the stretch, where labelled
    noisy: bool | None = None  # background-noise flag, where labelled

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def save_manifest(records: Iterable[AudioRecord], path: str | Path) -> None:
    """Write records as JSON lines, one per record."""
    with Path(path).open("w") as fh:
        for rec in records:
            fh.write(json.dumps(rec.to_dict()) + "\n")


def load_manifest(path: str | Path) -> list[AudioRecord]:
    with Path(path).open() as fh:
        return [AudioRecord(**json.loads(line)) for line in fh if line.strip()]
