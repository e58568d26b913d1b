"""The pooled chest X-ray set with each image's source and patient group.

Two folders under ``<data root>/cxr`` are pooled:

- ``adult_multisource/`` (``manifest.csv``): the source is the file-name prefix
  (``nih``, ``hannover``, ``cxnet``, ``ieee8023``, ``figure1``), the group the manifest's
  ``patient_id_if_known`` (the file itself where it is empty);
- ``covid19_3class/`` (both splits): source ``covid19_3class``; near-duplicates flagged in
  ``cxr/manifest.csv`` share one group, so they never straddle a split. ``train/Covid/062.jpeg``
  (a "No Finding" film in its origin collection, a label error) is left out.

Output classes (the model's three labels) and what they mean:

- ``Covid``: COVID-19 pneumonia;
- ``Normal``: no finding;
- ``Viral Pneumonia``: **pneumonia that is not COVID-19**, viral or bacterial. The shared data
  hold no adult viral (non-COVID) pneumonia, so this output is taught by NIH "Pneumonia"
  (pre-2018, organism not stated), the ieee8023 bacterial/fungal films and the paediatric viral
  films of ``covid19_3class``. The name is kept so that folders labelled ``Viral Pneumonia``
  (the external check's label) score against it.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

OUTPUT_CLASSES: tuple[str, ...] = ("Covid", "Normal", "Viral Pneumonia")
#: folder class -> output class
CLASS_MAP: dict[str, str] = {"Covid": "Covid", "Normal": "Normal", "Viral Pneumonia": "Viral Pneumonia",
                             "Pneumonia": "Viral Pneumonia", "Bacterial Pneumonia": "Viral Pneumonia"}
#: sources too small to be held out on their own (always in training)
NEVER_HELD_OUT: tuple[str, ...] = ("figure1",)
LABEL_ERRORS: frozenset[str] = frozenset({"covid19_3class/train/Covid/062.jpeg"})


@dataclass(frozen=True)
class PooledImage:
    """One image of the pooled set: ``label`` is the output class, ``folder_class`` the data's own."""

    path: Path
    label: str
    folder_class: str
    source: str
    group: str


def _adult(root: Path) -> list[PooledImage]:
    out = []
    with open(root / "adult_multisource" / "manifest.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            source = Path(row["file"]).name.split("_")[0]
            group = row["patient_id_if_known"] or f"file:{row['file']}"
            out.append(PooledImage(root / "adult_multisource" / row["file"], CLASS_MAP[row["class"]], row["class"],
                                   source, group))
    return out


def _covid3(root: Path) -> list[PooledImage]:
    parent: dict[str, str] = {}

    def find(a: str) -> str:
        while parent.setdefault(a, a) != a:
            a = parent[a]
        return a

    rows = []
    with open(root / "manifest.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["subset"] != "covid19_3class" or row["path"] in LABEL_ERRORS:
                continue
            rows.append(row)
            for flag in filter(None, row["flags"].split(";")):
                if flag.strip().startswith("near_duplicate_of="):
                    for other in flag.strip().split("=", 1)[1].split("|"):
                        parent[find(other)] = find(row["path"])
    return [PooledImage(root / r["path"], CLASS_MAP[r["label"]], r["label"], "covid19_3class", "c3:" + find(r["path"]))
            for r in rows]


def load_pooled(cxr_root: str | Path) -> list[PooledImage]:
    """Every pooled image, adult_multisource first, in a fixed order."""
    root = Path(cxr_root)
    return _adult(root) + _covid3(root)


def held_out_sources(images: list[PooledImage]) -> list[str]:
    """Sources that get a leave-one-source-out fold, most images first."""
    counts = Counter(im.source for im in images)
    return [s for s, _ in counts.most_common() if s not in NEVER_HELD_OUT]


__all__ = ["CLASS_MAP", "OUTPUT_CLASSES", "PooledImage", "held_out_sources", "load_pooled"]
