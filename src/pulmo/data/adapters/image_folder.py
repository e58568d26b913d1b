"""Image-classification datasets -> :class:`ImageRecord` lists (one record layout for all).

Three layouts:

- folder per class, with or without a split level: ``ROOT/<class>/*.png`` or
  ``ROOT/<split>/<class>/*.png`` (``covid19_3class`` is the second);
- a CSV with columns ``path,label`` and optional ``patient``, ``split`` (paths relative to
  the CSV's folder unless absolute);
- the MedMNIST ``.npz`` layout (``train_images`` N x H x W uint8, ``train_labels`` N x 1,
  the same for ``val`` and ``test``): records point into the archive by split and index.
"""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from pulmo.data.image_io import IMAGE_SUFFIXES, ImageLimits, read_image
from pulmo.errors import DataError

KNOWN_SPLITS = ("train", "val", "valid", "validation", "test")


@dataclass(frozen=True)
class ImageRecord:
    """One labelled image. ``index >= 0`` means item ``index`` of split ``split`` inside the
    ``.npz`` archive at ``path``; otherwise ``path`` is an image file."""

    record_id: str
    path: str
    label: str
    split: str = ""
    patient_id: str = ""
    source: str = ""
    index: int = -1

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def load_record_image(rec: ImageRecord, limits: ImageLimits = ImageLimits()) -> np.ndarray:
    """The record's pixels as grayscale ``(H, W)`` float32 in ``[0, 1]``."""
    if rec.index >= 0:
        images = _npz_images(rec.path, rec.split)
        return images[rec.index].astype(np.float32) / 255.0
    return read_image(rec.path, limits)


@lru_cache(maxsize=8)
def _npz_images(path: str, split: str) -> np.ndarray:
    with np.load(path) as z:
        return z[f"{split}_images"]


def read_image_folder(root: str | Path, classes: list[str] | None = None, split: str = "all") -> list[ImageRecord]:
    """Records of a folder-per-class tree, with or without a split level.

    ``classes`` (default: every class folder found) fixes which folder names count as
    classes; folders of other names are refused rather than silently skipped when
    ``classes`` is given and none match. ``split`` picks one split folder (``all``: every
    split; ignored when there is no split level).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    split_dirs = [p for p in subdirs if p.name.lower() in KNOWN_SPLITS]
    if split_dirs:
        if split != "all":
            split_dirs = [p for p in split_dirs if p.name.lower() == split.lower()]
            if not split_dirs:
                raise DataError(f"{root} has no split folder {split!r}")
        groups = [(p.name, p) for p in split_dirs]
    else:
        groups = [("", root)]
    records: list[ImageRecord] = []
    for split_name, base in groups:
        for class_dir in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if classes is not None and class_dir.name not in classes:
                continue
            for f in sorted(class_dir.rglob("*")):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                    rel = f.relative_to(root).as_posix()
                    records.append(ImageRecord(rel, str(f), class_dir.name, split_name, source=_source_of(f.name)))
    if not records:
        want = f" with class folders {classes}" if classes else ""
        raise DataError(f"no images found under {root}{want} (layout: ROOT/[split/]<class>/*.png)")
    return records


def read_image_csv(csv_path: str | Path) -> list[ImageRecord]:
    """Records from a CSV with ``path,label[,patient][,split]`` columns."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"CSV not found: {csv_path}")
    with csv_path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"path", "label"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{csv_path}: missing column(s) {sorted(missing)}; need path,label[,patient][,split]")
        records = []
        for i, row in enumerate(reader, start=2):
            if not row["path"] or not row["label"]:
                raise DataError(f"{csv_path}:{i}: empty path or label")
            p = Path(row["path"])
            p = p if p.is_absolute() else csv_path.parent / p
            records.append(ImageRecord(row["path"], str(p), row["label"], row.get("split") or "",
                                       row.get("patient") or "", _source_of(p.name)))
    if not records:
        raise DataError(f"{csv_path}: no rows")
    return records


def read_medmnist_npz(path: str | Path, class_names: list[str], splits: tuple[str, ...] = ("train", "val", "test")) -> list[ImageRecord]:
    """Records of a MedMNIST ``.npz`` archive; label ``k`` becomes ``class_names[k]``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"MedMNIST archive not found: {path}")
    records = []
    with np.load(path) as z:
        for split in splits:
            if f"{split}_images" not in z or f"{split}_labels" not in z:
                raise DataError(f"{path}: no {split}_images / {split}_labels arrays (MedMNIST layout)")
            labels = z[f"{split}_labels"].reshape(-1)
            if labels.max(initial=0) >= len(class_names):
                raise DataError(f"{path}: label {labels.max()} but only {len(class_names)} class names given")
            for i, lab in enumerate(labels):
                records.append(ImageRecord(f"{split}/{i}", str(path), class_names[int(lab)], split, index=i))
    return records


def _source_of(filename: str) -> str:
    """A coarse source tag from the file name (web sources name their files), for per-source reports."""
    name = filename.lower()
    for tag in ("auntminnie", "radiopaedia", "covid-", "nejm", "ryct", "jkms", "lancet", "person", "im-"):
        if name.startswith(tag):
            return tag.rstrip("-")
    return "numbered" if name.split(".")[0].isdigit() else "other"
