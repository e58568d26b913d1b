"""Train / validation / test splits. Seeds are passed explicitly; no global RNG is touched."""

from __future__ import annotations

import warnings
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from pulmo.data.records import AudioRecord


def official_split(records: Sequence[AudioRecord], part: str) -> list[AudioRecord]:
    """Records whose ``split`` field is ``part`` (``'train'`` or ``'test'``)."""
    return [r for r in records if r.split == part]


def patient_disjoint_split(
    records: Sequence[AudioRecord],
    val_fraction: float,
    seed: int,
    strata: Sequence[str] = ("label", "device"),
    tries: int = 500,
) -> tuple[list[AudioRecord], list[AudioRecord]]:
    """Carve a validation split that shares no patient with the training split.

    Patients are shuffled ``tries`` times (with ``seed``); each shuffle fills the
    validation split patient by patient until it holds ``val_fraction`` of the cycles.
    The shuffle kept is the one whose validation split is closest to the target size and,
    for each record field in ``strata``, to the overall distribution of that field (sum
    of L1 distances of fractions). Stratifying on ``device`` keeps a device with few
    patients from landing wholly on one side.

    Returns:
        ``(train, val)`` record lists.
    """
    by_patient: dict[str, list[AudioRecord]] = defaultdict(list)
    for r in records:
        by_patient[r.patient_id].append(r)
    patients = sorted(by_patient)
    if len(patients) < 2:
        raise ValueError("a patient-disjoint split needs at least two patients")
    def fractions(recs: Sequence[AudioRecord]) -> np.ndarray:
        """Concatenated fractions of each stratum's values, ``(sum of value counts,)``."""
        parts = []
        for field, values in levels.items():
            count = Counter(getattr(r, field) for r in recs)
            parts.append(np.array([count[v] for v in values], float) / max(len(recs), 1))
        return np.concatenate(parts)

    levels = {field: sorted({getattr(r, field) for r in records}) for field in strata}
    overall = fractions(records)
    target = val_fraction * len(records)
    rng = np.random.default_rng(seed)
    best: tuple[float, set[str]] | None = None
    for _ in range(tries):
        order = rng.permutation(len(patients))
        val: set[str] = set()
        chosen: list[AudioRecord] = []
        for i in order:
            if len(chosen) >= target:
                break
            val.add(patients[i])
            chosen.extend(by_patient[patients[i]])
        if len(val) == len(patients):
            continue
        cost = float(np.abs(fractions(chosen) - overall).sum()) + abs(len(chosen) - target) / target
        if best is None or cost < best[0]:
            best = (cost, val)
    assert best is not None
    val_patients = best[1]
    train = [r for r in records if r.patient_id not in val_patients]
    val_records = [r for r in records if r.patient_id in val_patients]
    return train, val_records


def patient_folds(
    records: Sequence[AudioRecord], k: int, seed: int = 0, strata: Sequence[str] = ("device", "label")
) -> list[int]:
    """Fold index (``0..k-1``) of each record: patient-disjoint, balanced by ``strata``.

    scikit-learn's ``StratifiedGroupKFold`` with the patient as group and the joined
    ``strata`` fields (device and label by default) as the class to balance, shuffled
    with ``seed``. Every patient's records share one fold. Where no stratum has ``k``
    records (tiny sets), the folds are balanced by size only.

    Returns:
        ``(N,)`` fold indices in the records' order.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    if len({r.patient_id for r in records}) < k:
        raise ValueError(f"{k} patient-disjoint folds need at least {k} patients")
    strata_of = ["|".join(str(getattr(r, f)) for f in strata) for r in records]
    if max(Counter(strata_of).values()) < k:
        strata_of = [""] * len(records)
    groups = [r.patient_id for r in records]
    folds = [0] * len(records)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*least populated class.*")  # rare strata are spread as well as they can be
        for fold, (_, test_idx) in enumerate(splitter.split(np.zeros(len(records)), strata_of, groups)):
            for i in test_idx:
                folds[i] = fold
    return folds


def hold_out_fold(
    records: Sequence[AudioRecord], folds: Sequence[int], fold: int
) -> tuple[list[AudioRecord], list[AudioRecord]]:
    """``(the other folds' records, fold ``fold``'s records)``, each in the records' order."""
    rest = [r for r, f in zip(records, folds, strict=True) if f != fold]
    held = [r for r, f in zip(records, folds, strict=True) if f == fold]
    return rest, held
