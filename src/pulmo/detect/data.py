"""Detection data: records of a split, remapped classes, and images prepared for tiling.

An image is loaded once at full depth (``uint16`` or ``uint8``), scaled by
``data.image_scale`` (or, with ``tiling.mode: full``, to fit one tile), and given window
levels computed on the whole image, so that every tile is windowed alike.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pulmo.data.adapters.synthetic_xray import write_synthetic_body_scans
from pulmo.data.adapters.voc_xml import read_voc_folder
from pulmo.data.boxes import BoxRecord
from pulmo.data.remap import BODY_SCAN_CLASSES, apply_mapping, build_mapping
from pulmo.data.xray_image import Window, load_xray, resize_xray, window_levels
from pulmo.detect.config import DetectDataConfig, TilingConfig


def synthetic_root(cfg: DetectDataConfig) -> Path:
    """The synthetic body-scan folder for ``cfg.synthetic`` (written on first use), or
    ``cfg.root`` when it already holds a VOC layout."""
    key = hashlib.sha256(json.dumps(cfg.synthetic, sort_keys=True).encode()).hexdigest()[:10]
    root = Path(cfg.root) if cfg.root else Path(".cache") / "pulmo" / f"synthetic_body_scans_{key}"
    s = cfg.synthetic
    if cfg.root and any(root.glob("*/Annotations")):
        return root  # a synthetic set written before (e.g. by a test)
    if not (root / "done").is_file():
        write_synthetic_body_scans(root, {k: int(s[k]) for k in ("train", "val", "test") if k in s},
                                   seed=int(s.get("seed", 0)), height=int(s.get("height", 1500)), width=int(s.get("width", 1216)))
        (root / "done").write_text("ok\n")
    return root


def load_split(cfg: DetectDataConfig, split: str, root: str | Path | None = None) -> list[BoxRecord]:
    """Records of ``split`` (VOC layout under the dataset folder, or the synthetic set)."""
    if root is None:
        root = synthetic_root(cfg) if cfg.dataset == "synthetic" else cfg.resolved_root()
    return read_voc_folder(root, split)


def class_mapping(cfg: DetectDataConfig, train: list[BoxRecord], other: list[BoxRecord] = ()) -> dict[str, str]:
    """The remapping named by ``cfg.remap``, built from the training records; class names
    of ``other`` records (validation, test) are covered too (names only)."""
    names = {lab for r in other for lab in r.labels}
    if cfg.dataset == "synthetic":
        names |= set(BODY_SCAN_CLASSES)
    return build_mapping(cfg.remap, train, cfg.score_f1 or None, names)


def mapped(records: list[BoxRecord], mapping: dict[str, str]) -> list[BoxRecord]:
    return apply_mapping(records, mapping)


@dataclass
class PreparedImage:
    """An image ready for tiling. ``image`` is ``(H', W')`` or ``(H', W', 3)`` at full depth
    after scaling by ``scale``; ``boxes`` ``(N, 4)`` are in that frame; ``labels`` are class
    indices; ``levels`` the window (low, high) in the image's units."""

    record: BoxRecord
    image: np.ndarray
    scale: float
    levels: tuple[float, float]
    boxes: np.ndarray
    labels: np.ndarray

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


def prepare_array(image: np.ndarray, data: DetectDataConfig, tiling: TilingConfig) -> tuple[np.ndarray, float, tuple[float, float]]:
    """Scale an image as the config says; return ``(scaled, scale, levels)``."""
    h, w = image.shape[:2]
    scale = tiling.tile / max(h, w) if tiling.mode == "full" else data.image_scale
    levels = window_levels(image, Window(data.window_percentile))
    return resize_xray(image, scale), scale, levels


def prepare_image(record: BoxRecord, data: DetectDataConfig, tiling: TilingConfig, classes: list[str]) -> PreparedImage:
    """Load, scale and window one record; its labels become indices into ``classes``."""
    raw = load_xray(record.path, color=data.color)
    image, scale, levels = prepare_array(raw, data, tiling)
    index = {c: i for i, c in enumerate(classes)}
    return PreparedImage(record, image, scale, levels, record.boxes * scale,
                         np.array([index[lab] for lab in record.labels], dtype=np.int64))
