"""Box-annotated images: the record every detection adapter returns (DESIGN rule 5).

Coordinates are pixels in the image's own frame, ``boxes_xyxy`` as ``(N, 4)`` float
``[x_min, y_min, x_max, y_max]`` with the origin at the top-left corner of the top-left
pixel (PASCAL VOC's 1-based pixel indices are converted by the VOC adapter).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class BoxRecord:
    """One image with its annotated objects.

    ``labels[i]`` names the class of ``boxes_xyxy[i]``; an image without objects has
    empty tuples. ``width``/``height`` are in pixels (0 where unknown).
    """

    record_id: str
    path: str
    width: int
    height: int
    boxes_xyxy: tuple[tuple[float, float, float, float], ...] = ()
    labels: tuple[str, ...] = ()
    split: str = ""
    source: str = ""
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if len(self.boxes_xyxy) != len(self.labels):
            raise ValueError(f"{self.record_id}: {len(self.boxes_xyxy)} boxes but {len(self.labels)} labels")

    @property
    def boxes(self) -> np.ndarray:
        """``(N, 4)`` float64 array of the boxes (``(0, 4)`` for an image without objects)."""
        return np.asarray(self.boxes_xyxy, dtype=np.float64).reshape(-1, 4)

    def with_labels(self, labels: Iterable[str], keep: Iterable[bool] | None = None) -> BoxRecord:
        """A copy with new labels; ``keep`` (one flag per box) drops boxes."""
        labels = list(labels)
        flags = [True] * len(labels) if keep is None else list(keep)
        boxes = tuple(b for b, k in zip(self.boxes_xyxy, flags) if k)
        labs = tuple(lab for lab, k in zip(labels, flags) if k)
        return dataclasses.replace(self, boxes_xyxy=boxes, labels=labs)

    def to_dict(self) -> dict[str, object]:
        d = dataclasses.asdict(self)
        d["boxes_xyxy"] = [list(b) for b in self.boxes_xyxy]
        d["labels"] = list(self.labels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> BoxRecord:
        d = dict(d)
        d["boxes_xyxy"] = tuple(tuple(float(v) for v in b) for b in d.get("boxes_xyxy", []))  # type: ignore[union-attr]
        d["labels"] = tuple(d.get("labels", []))  # type: ignore[arg-type]
        return cls(**d)  # type: ignore[arg-type]


def save_box_manifest(records: Iterable[BoxRecord], path: str | Path) -> None:
    with Path(path).open("w") as fh:
        for rec in records:
            fh.write(json.dumps(rec.to_dict()) + "\n")


def load_box_manifest(path: str | Path) -> list[BoxRecord]:
    with Path(path).open() as fh:
        return [BoxRecord.from_dict(json.loads(line)) for line in fh if line.strip()]
