"""Tiled inference on whole images and its evaluation (paper section 3.3).

Each image is cut into grid tiles of the training tile size with overlap (or, for the
no-tiling baseline, scaled to fit one tile); per-tile detections are shifted back, merged
across seams and scaled to the original image's pixels.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from pulmo.data.tiling import crop_window, grid_tiles, merge_detections, seam_flags, shift_boxes
from pulmo.data.xray_image import to_detector_input
from pulmo.detect.config import TilingConfig
from pulmo.detect.data import PreparedImage
from pulmo.metrics.detection import ImageDetections


@dataclass
class TiledStats:
    """Counters for throughput: tiles and images run, seconds spent in :func:`detect_image`."""

    tiles: int = 0
    images: int = 0
    seconds: float = 0.0


def image_windows(prep: PreparedImage, tiling: TilingConfig) -> list[tuple[int, int, int, int]]:
    """Grid windows over the prepared image (one window for ``full``)."""
    overlap = 0 if tiling.mode == "full" else tiling.overlap
    return grid_tiles(prep.width, prep.height, tiling.tile, overlap)


def unflip_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    """``(K, 4)`` xyxy boxes found in a left-right mirrored ``width``-px input, in the unmirrored input."""
    out = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    out[:, [0, 2]] = width - out[:, [2, 0]]
    return out


@torch.no_grad()
def detect_image(detector: torch.nn.Module, prep: PreparedImage, tiling: TilingConfig, conf: float, iou: float,
                 batch_size: int = 8, stats: TiledStats | None = None, flip: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detections ``(boxes (K, 4), scores (K,), labels (K,) int)`` in the original image's
    pixels, after tiling, shifting back and merging. With ``flip``, each tile is also run
    mirrored left-right (test-time augmentation) and both views' boxes are merged."""
    t0 = time.perf_counter()
    windows = image_windows(prep, tiling)
    boxes, scores, labels, seams = [], [], [], []
    for i in range(0, len(windows), batch_size):
        chunk = windows[i:i + batch_size]
        x = torch.from_numpy(np.stack([to_detector_input(crop_window(prep.image, w), prep.levels) for w in chunk]))
        views = [detector.predict(x, conf=conf, iou=iou)]
        if flip:
            views.append([(unflip_boxes(b, x.shape[-1]), s, lab) for b, s, lab in detector.predict(x.flip(-1), conf=conf, iou=iou)])
        for view in views:
            for w, (b, s, lab) in zip(chunk, view):
                boxes.append(shift_boxes(b, w))
                seams.append(seam_flags(b, w, prep.width, prep.height))
                scores.append(s)
                labels.append(lab)
    if boxes:
        b, s, lab = merge_detections(np.concatenate(boxes), np.concatenate(scores), np.concatenate(labels),
                                     np.concatenate(seams), iou_threshold=iou)
    else:
        b, s, lab = np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64)
    b = b / prep.scale
    if prep.record.width and prep.record.height:
        b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, prep.record.width)
        b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, prep.record.height)
    if stats is not None:
        stats.tiles += len(windows)
        stats.images += 1
        stats.seconds += time.perf_counter() - t0
    return b, s, lab.astype(np.int64)


def detect_split(detector: torch.nn.Module, images: Iterable[PreparedImage], tiling: TilingConfig, classes: list[str],
                 conf: float, iou: float, stats: TiledStats | None = None, flip: bool = False) -> list[ImageDetections]:
    """Tiled inference over prepared images, paired with their ground truth (class names)."""
    out = []
    for prep in images:
        b, s, lab = detect_image(detector, prep, tiling, conf, iou, stats=stats, flip=flip)
        names = np.array([classes[k] for k in lab], dtype=object)
        out.append(ImageDetections(b, s, names, prep.record.boxes, np.array(prep.record.labels, dtype=object)))
    return out
