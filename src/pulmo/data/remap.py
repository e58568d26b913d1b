"""Class remapping for detection (paper section 4.3): original classes, bands of per-class
F1, bands of object size, binary (clothing vs anomaly), class-agnostic, or a user file.

A mapping is a plain ``dict[str, str]`` from original to new class name; a class mapped to
:data:`DROP` loses its boxes; the key :data:`ANY` (``*``) maps every class not named (the
agnostic and binary mappings use it, so they also cover classes never seen in training).
Applying a mapping without ``*`` to a class it does not name is an error.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import yaml

from pulmo.data.boxes import BoxRecord
from pulmo.errors import ConfigError

DROP = "__drop__"
ANY = "*"
AGNOSTIC_CLASS = "anomaly"

# The body-scan set's 18 classes (paper section 3.2) and which of them are clothing.
BODY_SCAN_CLASSES: tuple[str, ...] = (
    "zipper", "watch", "unknown anomaly", "surgical implant", "shoes", "piercing", "key", "jewelry",
    "holding shoes", "glasses", "drugs", "cuffs", "bra", "belt buckle", "zipper head", "ankle monitor",
    "shirt button", "pants button",
)
CLOTHING: frozenset[str] = frozenset(
    {"zipper", "zipper head", "shirt button", "pants button", "bra", "belt buckle", "shoes", "holding shoes"}
)
REMAPS = ("original", "score", "size", "binary", "agnostic")


def identity_map(classes: Iterable[str]) -> dict[str, str]:
    return {c: c for c in classes}


def agnostic_map(classes: Iterable[str]) -> dict[str, str]:
    """Every class -> ``anomaly`` (one class-agnostic detector)."""
    return {c: AGNOSTIC_CLASS for c in classes} | {ANY: AGNOSTIC_CLASS}


def binary_map(classes: Iterable[str], clothing: Iterable[str] = CLOTHING) -> dict[str, str]:
    """Clothing classes -> ``clothing``; all others -> ``anomaly``."""
    clothing = set(clothing)
    return {c: "clothing" if c in clothing else AGNOSTIC_CLASS for c in classes} | {ANY: AGNOSTIC_CLASS}


def score_map(f1_by_class: Mapping[str, float]) -> dict[str, str]:
    """The paper's F1 bands: best (> 0.75), high (0.5-0.75], medium (0.25-0.5], low (<= 0.25)."""
    def band(f1: float) -> str:
        if f1 > 0.75:
            return "best"
        if f1 > 0.5:
            return "high"
        if f1 > 0.25:
            return "medium"
        return "low"

    return {c: band(float(f)) for c, f in f1_by_class.items()}


def size_map(records: Iterable[BoxRecord]) -> dict[str, str]:
    """Classes by the mean square-root area of their boxes (pixels), cut at the quartiles of
    the per-class means into ``large``/``medium``/``small``/``tiny``."""
    sizes: dict[str, list[float]] = {}
    for r in records:
        b = r.boxes
        for lab, s in zip(r.labels, np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))):
            sizes.setdefault(lab, []).append(float(s))
    if not sizes:
        return {}
    means = {c: float(np.mean(v)) for c, v in sizes.items()}
    q1, q2, q3 = np.percentile(list(means.values()), [25, 50, 75])

    def band(m: float) -> str:
        if m > q3:
            return "large"
        if m > q2:
            return "medium"
        if m > q1:
            return "small"
        return "tiny"

    return {c: band(m) for c, m in means.items()}


def load_mapping_file(path: str | Path) -> dict[str, str]:
    """A user mapping: YAML or JSON ``{original: new}``, or CSV/TXT lines ``original,new``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"class mapping file not found: {path}")
    text = path.read_text()
    if path.suffix.lower() in (".csv", ".txt"):
        out = {}
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = [p.strip() for p in line.split(",")]
            if len(parts) != 2 or not all(parts):
                raise ConfigError(f"{path}:{n}: expected 'original,new', got {line!r}")
            out[parts[0]] = parts[1]
        return out
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot parse class mapping: {err}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ConfigError(f"{path}: a class mapping must be a mapping of class name to class name")
    return dict(data)


def build_mapping(kind: str, records: list[BoxRecord], f1_by_class: Mapping[str, float] | None = None,
                  classes: Iterable[str] = ()) -> dict[str, str]:
    """The mapping named ``kind`` (one of :data:`REMAPS`, or a path to a mapping file) for
    the classes in ``records`` (the training set) plus ``classes`` (names seen elsewhere,
    e.g. in validation). Sizes and scores come from ``records``/``f1_by_class`` only; a
    class without training boxes is put in the ``tiny`` size band and the ``low`` score band."""
    classes = sorted({lab for r in records for lab in r.labels} | set(classes))
    if kind == "original":
        return identity_map(classes)
    if kind == "agnostic":
        return agnostic_map(classes)
    if kind == "binary":
        return binary_map(classes)
    if kind == "size":
        return {c: "tiny" for c in classes} | size_map(records)
    if kind == "score":
        if f1_by_class is None:
            raise ConfigError("remap 'score' needs per-class F1 from a model trained on the original classes")
        return score_map({c: f1_by_class.get(c, 0.0) for c in classes})
    if Path(kind).suffix.lower() in (".yaml", ".yml", ".json", ".csv", ".txt"):
        return load_mapping_file(kind)
    raise ConfigError(f"unknown remap {kind!r}; use one of {list(REMAPS)} or a mapping file")


def apply_mapping(records: Iterable[BoxRecord], mapping: Mapping[str, str]) -> list[BoxRecord]:
    """Records with their labels remapped; boxes of classes mapped to :data:`DROP` removed."""
    out = []
    for r in records:
        missing = sorted({lab for lab in r.labels if lab not in mapping})
        if missing and ANY not in mapping:
            raise ConfigError(f"class mapping has no entry for {missing} (image {r.path})")
        new = [mapping.get(lab, mapping.get(ANY, DROP)) for lab in r.labels]
        out.append(r.with_labels(new, keep=[n != DROP for n in new]))
    return out


def mapped_classes(mapping: Mapping[str, str]) -> list[str]:
    """Sorted target class names of a mapping (without :data:`DROP`)."""
    return sorted({v for v in mapping.values() if v != DROP})
