"""Train / validation / test splits. Seeds are passed explicitly; no global RNG is touched."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from pulmo.data.records import AudioRecord


def official_split(records: Sequence[AudioRecord], part: str) -> list[AudioRecord]:
    """Records whose ``split`` field is ``part`` (``'train'`` or ``'test'``)."""
    return [r for r in records if r.split == part]


def patient_disjoint_split(
    records: Sequence[AudioRecord], val_fraction: float, seed: int, tries: int = 500
) -> tuple[list[AudioRecord], list[AudioRecord]]:
    """Carve a validation split that shares no patient with the training split.

    Patients are shuffled ``tries`` times (with ``seed``); each shuffle fills the
    validation split patient by patient until it holds ``val_fraction`` of the cycles.
    The shuffle kept is the one whose validation split is closest to the target size and
    to the overall label distribution (L1 distance of label fractions).

    Returns:
        ``(train, val)`` record lists.
    """
    by_patient: dict[str, list[AudioRecord]] = defaultdict(list)
    for r in records:
        by_patient[r.patient_id].append(r)
    patients = sorted(by_patient)
    if len(patients) < 2:
        raise ValueError("a patient-disjoint split needs at least two patients")
    labels = sorted({r.label for r in records})
    total = Counter(r.label for r in records)
    overall = np.array([total[k] for k in labels], float) / len(records)
    target = val_fraction * len(records)
    rng = np.random.default_rng(seed)
    best: tuple[float, set[str]] | None = None
    for _ in range(tries):
        order = rng.permutation(len(patients))
        val: set[str] = set()
        count: Counter[str] = Counter()
        n = 0
        for i in order:
            if n >= target:
                break
            p = patients[i]
            val.add(p)
            count.update(r.label for r in by_patient[p])
            n += len(by_patient[p])
        if len(val) == len(patients):
            continue
        frac = np.array([count[k] for k in labels], float) / max(n, 1)
        cost = float(np.abs(frac - overall).sum()) + abs(n - target) / target
        if best is None or cost < best[0]:
            best = (cost, val)
    assert best is not None
    val_patients = best[1]
    train = [r for r in records if r.patient_id not in val_patients]
    val_records = [r for r in records if r.patient_id in val_patients]
    return train, val_records
