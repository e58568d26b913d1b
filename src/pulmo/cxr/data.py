"""Chest X-ray datasets for training and scoring: load once, gate, de-leak, prepare tensors.

``covid19_3class``: the official ``train``/``val`` folders; validation images with a
near-duplicate in ``train`` (perceptual hash) are dropped before scoring, and an inner
validation split for epoch selection is carved from ``train`` with near-duplicates kept on
the same side. ``pneumoniamnist``: the official train / val / test arrays.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pulmo.cxr.config import GateConfig, ImageConfig
from pulmo.cxr.duplicates import DuplicatePair, find_duplicates, leaked
from pulmo.cxr.preprocess import prepare_gray
from pulmo.cxr.quality import GateVerdict, check_quality, gate_report
from pulmo.data.adapters.image_folder import ImageRecord, load_record_image
from pulmo.data.splits import patient_disjoint_split
from pulmo.errors import DataError


@dataclass
class ImageSet:
    """Prepared images: ``x`` ``(N, 1, size_px, size_px)`` float in [0, 1], ``y`` ``(N,)`` class indices."""

    records: list[ImageRecord]
    x: torch.Tensor
    y: torch.Tensor
    gates: list[GateVerdict] = field(default_factory=list)

    def subset(self, keep: Sequence[int]) -> ImageSet:
        keep = list(keep)
        return ImageSet([self.records[i] for i in keep], self.x[keep], self.y[keep],
                        [self.gates[i] for i in keep] if self.gates else [])


def label_indices(records: Sequence[ImageRecord], classes: Sequence[str]) -> torch.Tensor:
    """Class index of each record; a label outside ``classes`` raises ``DataError``."""
    lookup = {c: i for i, c in enumerate(classes)}
    bad = sorted({r.label for r in records} - set(lookup))
    if bad:
        raise DataError(f"labels {bad} are not among the model's classes {list(classes)}")
    return torch.tensor([lookup[r.label] for r in records], dtype=torch.long)


def prepare_set(records: Sequence[ImageRecord], classes: Sequence[str], image: ImageConfig,
                gates: GateConfig | None = None, grays: Sequence[np.ndarray] | None = None) -> ImageSet:
    """Load (unless ``grays`` given), gate (verdicts only; nothing dropped here) and prepare."""
    grays = grays if grays is not None else [load_record_image(r) for r in records]
    verdicts = [check_quality(g, gates) for g in grays] if gates is not None else []
    x = torch.from_numpy(np.stack([prepare_gray(g, image) for g in grays]))[:, None]
    return ImageSet(list(records), x, label_indices(records, classes), verdicts)


@dataclass
class Covid3Splits:
    """Training images (gated), inner train / inner validation indices, and the de-leaked
    official validation set, plus reports of what was dropped and why."""

    train: ImageSet
    inner_train: list[int]
    inner_val: list[int]
    val: ImageSet
    report: dict[str, Any]


def load_covid3(root: str | Path, classes: Sequence[str], image: ImageConfig, gates: GateConfig,
                val_fraction: float, seed: int, max_hash_distance: int = 4,
                cache: dict[str, Any] | None = None) -> Covid3Splits:
    """Read ``covid19_3class``; drop gated training images and leaked validation images.

    ``cache`` (a dict the caller keeps) holds the decoded images and duplicate pairs across
    calls, so many configurations can be prepared from one decoding pass.
    """
    from pulmo.data.adapters.image_folder import read_image_folder

    cache = cache if cache is not None else {}
    if "records" not in cache:
        recs = read_image_folder(root, list(classes))
        cache["records"] = recs
        cache["grays"] = [load_record_image(r) for r in recs]
        cache["pairs"] = find_duplicates([r.record_id for r in recs], cache["grays"], max_hash_distance)
    recs: list[ImageRecord] = cache["records"]
    grays: list[np.ndarray] = cache["grays"]
    pairs: list[DuplicatePair] = cache["pairs"]
    splits = {r.split for r in recs}
    if not {"train", "val"} <= splits:
        raise DataError(f"{root}: expected train/ and val/ split folders, found {sorted(splits)}")
    leaks = leaked(pairs, {r.record_id: r.split for r in recs}, "val")
    verdicts = [check_quality(g, gates) for g in grays]
    train_idx = [i for i, r in enumerate(recs) if r.split == "train" and (verdicts[i].passed or not gates.enabled)]
    val_idx = [i for i, r in enumerate(recs) if r.split == "val" and r.record_id not in leaks]
    train = prepare_set([recs[i] for i in train_idx], classes, image, None, [grays[i] for i in train_idx])
    train.gates = [verdicts[i] for i in train_idx]
    val = prepare_set([recs[i] for i in val_idx], classes, image, None, [grays[i] for i in val_idx])
    val.gates = [verdicts[i] for i in val_idx]
    inner_train, inner_val = duplicate_grouped_split(train.records, pairs, val_fraction, seed)
    train_all = [i for i, r in enumerate(recs) if r.split == "train"]
    report = {
        "gates": gate_report([recs[i].record_id for i in train_all], [verdicts[i] for i in train_all], gates),
        "duplicate_pairs": [dataclasses.asdict(p) for p in pairs],
        "val_leaks_dropped": sorted(leaks),
        "n_train": len(train_idx), "n_val": len(val_idx),
    }
    return Covid3Splits(train, inner_train, inner_val, val, report)


def duplicate_grouped_split(records: Sequence[ImageRecord], pairs: Sequence[DuplicatePair], val_fraction: float,
                            seed: int) -> tuple[list[int], list[int]]:
    """Stratified split of ``records`` (indices) with each near-duplicate group on one side."""
    ids = {r.record_id: i for i, r in enumerate(records)}
    parent = list(range(len(records)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for p in pairs:
        if p.a in ids and p.b in ids:
            parent[find(ids[p.a])] = find(ids[p.b])
    grouped = [dataclasses.replace(r, patient_id=f"g{find(i)}", record_id=str(i)) for i, r in enumerate(records)]
    tr, va = patient_disjoint_split(grouped, val_fraction, seed, strata=("label",))  # type: ignore[arg-type]
    return sorted(int(r.record_id) for r in tr), sorted(int(r.record_id) for r in va)
