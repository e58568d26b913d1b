"""Tiling for detection: random positive tiles (training), grid tiles (inference), and
shifting and merging per-tile detections back onto the whole image. Pure functions on
NumPy arrays (DESIGN rule 9).

Windows are integer pixel rectangles ``(x0, y0, x1, y1)`` with ``x1 - x0 == y1 - y0 ==
tile``; a window may reach past the image's right/bottom edge when the image is smaller
than the tile (the image is then zero-padded by :func:`crop_window`). Boxes are float
``(N, 4)`` ``xyxy`` arrays in pixels.
"""

from __future__ import annotations

import numpy as np

Window = tuple[int, int, int, int]


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile start offsets along one axis: step ``tile - overlap``, last tile flush with the edge."""
    if tile <= 0 or not 0 <= overlap < tile:
        raise ValueError(f"need tile > 0 and 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def grid_tiles(width: int, height: int, tile: int, overlap: int = 0) -> list[Window]:
    """Windows covering the whole image, row by row, neighbours overlapping by at least
    ``overlap`` pixels (the last column/row is moved flush to the edge, overlapping more)."""
    return [(x, y, x + tile, y + tile) for y in _starts(height, tile, overlap) for x in _starts(width, tile, overlap)]


def visible_fraction(boxes: np.ndarray, window: Window) -> np.ndarray:
    """``(N,)`` share of each box that ``window`` shows, out of what a window of its size
    could show: per axis, the overlap over the smaller of the box's and the window's
    extent, multiplied (a box larger than the window that spans it counts as 1)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0, y0, x1, y1 = window
    iw = np.clip(np.minimum(boxes[:, 2], x1) - np.maximum(boxes[:, 0], x0), 0, None)
    ih = np.clip(np.minimum(boxes[:, 3], y1) - np.maximum(boxes[:, 1], y0), 0, None)
    dx = np.minimum(boxes[:, 2] - boxes[:, 0], float(x1 - x0))
    dy = np.minimum(boxes[:, 3] - boxes[:, 1], float(y1 - y0))
    ok = (dx > 0) & (dy > 0)
    return np.where(ok, iw / np.maximum(dx, 1e-12) * ih / np.maximum(dy, 1e-12), 0.0)


def boxes_in_window(boxes: np.ndarray, window: Window, min_visible: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Boxes clipped to ``window`` and moved into its frame.

    Returns ``(boxes_local (M, 4), keep (N,) bool)``: a box is kept when at least
    ``min_visible`` of it (see :func:`visible_fraction`) lies in the window.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    keep = visible_fraction(boxes, window) >= max(min_visible, 1e-9)
    x0, y0, x1, y1 = window
    clipped = boxes[keep].copy()
    clipped[:, [0, 2]] = np.clip(clipped[:, [0, 2]], x0, x1) - x0
    clipped[:, [1, 3]] = np.clip(clipped[:, [1, 3]], y0, y1) - y0
    return clipped, keep


def _random_start(lo: float, hi: float, length: int, tile: int, rng: np.random.Generator) -> int:
    """A start in ``[lo, hi]`` (integers) that also keeps the tile inside ``[0, length]``."""
    if length <= tile:
        return 0
    lo_i = int(np.clip(np.ceil(lo), 0, length - tile))
    hi_i = int(np.clip(np.floor(hi), 0, length - tile))
    if hi_i < lo_i:
        hi_i = lo_i
    return int(rng.integers(lo_i, hi_i + 1))


def random_positive_tiles(
    width: int, height: int, boxes: np.ndarray, n: int, tile: int, rng: np.random.Generator
) -> list[Window]:
    """``n`` windows, each holding one annotated box (chosen at random) at a random position.

    A box that fits in the tile lies wholly inside its window (where the image allows);
    a larger box covers its window. Images without boxes give no positive windows.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0 or n <= 0:
        return []
    out = []
    for idx in rng.integers(0, len(boxes), size=n):
        bx0, by0, bx1, by1 = boxes[idx]
        # Box fits: start in [b1 - tile, b0]; box larger than the tile: start in [b0, b1 - tile].
        x = _random_start(min(bx1 - tile, bx0), max(bx1 - tile, bx0), width, tile, rng)
        y = _random_start(min(by1 - tile, by0), max(by1 - tile, by0), height, tile, rng)
        out.append((x, y, x + tile, y + tile))
    return out


def random_negative_tiles(
    width: int, height: int, boxes: np.ndarray, n: int, tile: int, rng: np.random.Generator, attempts: int = 50
) -> list[Window]:
    """Up to ``n`` windows that touch no annotated box (fewer if none is found in
    ``attempts`` draws each)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    out: list[Window] = []
    for _ in range(max(n, 0)):
        for _ in range(attempts):
            x = int(rng.integers(0, max(width - tile, 0) + 1))
            y = int(rng.integers(0, max(height - tile, 0) + 1))
            w = (x, y, x + tile, y + tile)
            if not np.any(visible_fraction(boxes, w) > 0):
                out.append(w)
                break
    return out


def crop_window(image: np.ndarray, window: Window) -> np.ndarray:
    """The window's pixels of an ``(H, W)`` or ``(H, W, C)`` image, zero-padded where the
    window reaches past the image; the dtype is kept (16-bit stays 16-bit)."""
    x0, y0, x1, y1 = window
    h, w = image.shape[:2]
    out = np.zeros((y1 - y0, x1 - x0) + image.shape[2:], dtype=image.dtype)
    sx1, sy1 = min(x1, w), min(y1, h)
    out[: sy1 - y0, : sx1 - x0] = image[y0:sy1, x0:sx1]
    return out


def shift_boxes(boxes: np.ndarray, window: Window) -> np.ndarray:
    """Boxes from a window's frame back to the image's frame."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return boxes + np.array([window[0], window[1], window[0], window[1]], dtype=np.float64)


def seam_flags(boxes_local: np.ndarray, window: Window, width: int, height: int, tol: float = 2.0) -> np.ndarray:
    """``(N,)`` True where a box (window frame) touches an edge of the window that is
    inside the image (a seam), i.e. the object may continue in the neighbouring tile."""
    b = np.asarray(boxes_local, dtype=np.float64).reshape(-1, 4)
    x0, y0, x1, y1 = window
    size_x, size_y = x1 - x0, y1 - y0
    left = (b[:, 0] <= tol) & (x0 > 0)
    top = (b[:, 1] <= tol) & (y0 > 0)
    right = (b[:, 2] >= size_x - tol) & (x1 < width)
    bottom = (b[:, 3] >= size_y - tol) & (y1 < height)
    return left | top | right | bottom


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(N, M)`` intersection over union of two box sets (xyxy), by ``torchvision.ops.box_iou``."""
    import torch
    from torchvision.ops import box_iou as tv_box_iou

    a = torch.as_tensor(np.asarray(a, dtype=np.float64).reshape(-1, 4))
    b = torch.as_tensor(np.asarray(b, dtype=np.float64).reshape(-1, 4))
    return torch.nan_to_num(tv_box_iou(a, b), nan=0.0).numpy()


def nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float = 0.5) -> np.ndarray:
    """Indices kept by class-wise non-maximum suppression, highest score first
    (``torchvision.ops.batched_nms``; labels may be strings)."""
    import torch
    from torchvision.ops import batched_nms

    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    _, classes = np.unique(np.asarray(labels), return_inverse=True)
    keep = batched_nms(torch.as_tensor(boxes), torch.as_tensor(np.asarray(scores, dtype=np.float64)),
                       torch.as_tensor(classes.reshape(-1)), iou_threshold)
    return keep.numpy().astype(np.int64)


def _axis_overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    """1-D intersection over union of two intervals."""
    inter = max(0.0, min(a1, b1) - max(a0, b0))
    union = max(a1, b1) - min(a0, b0)
    return inter / union if union > 0 else 0.0


def merge_detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    at_seam: np.ndarray | None = None,
    iou_threshold: float = 0.5,
    seam_overlap: float = 0.5,
    gap_px: float = 2.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge detections gathered from overlapping tiles (image frame).

    1. Duplicates (same class, IoU > ``iou_threshold``) are removed by NMS.
    2. Seam pieces are joined: two boxes of the same class that both touch a seam
       (``at_seam``), overlap or lie within ``gap_px`` of each other, and share at least
       ``seam_overlap`` (1-D IoU) of their extent along the other axis become their union,
       with the higher score. Repeated until nothing changes.

    Returns ``(boxes (K, 4), scores (K,), labels (K,))``.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    seam = np.zeros(len(boxes), dtype=bool) if at_seam is None else np.asarray(at_seam, dtype=bool).reshape(-1)
    keep = nms(boxes, scores, labels, iou_threshold)
    boxes, scores, labels, seam = boxes[keep], scores[keep], labels[keep], seam[keep]
    b, s, lab = boxes[seam].tolist(), scores[seam].tolist(), labels[seam].tolist()  # only seam pieces can join
    changed = True
    while changed:
        changed = False
        for i in range(len(b)):
            for j in range(i + 1, len(b)):
                if lab[i] != lab[j]:
                    continue
                bi, bj = b[i], b[j]
                gap_x = max(bi[0], bj[0]) - min(bi[2], bj[2])
                gap_y = max(bi[1], bj[1]) - min(bi[3], bj[3])
                if gap_x > gap_px or gap_y > gap_px:
                    continue
                if max(_axis_overlap(bi[1], bi[3], bj[1], bj[3]), _axis_overlap(bi[0], bi[2], bj[0], bj[2])) < seam_overlap:
                    continue
                b[i] = [min(bi[0], bj[0]), min(bi[1], bj[1]), max(bi[2], bj[2]), max(bi[3], bj[3])]
                s[i] = max(s[i], s[j])
                del b[j], s[j], lab[j]
                changed = True
                break
            if changed:
                break
    out_b = np.concatenate([boxes[~seam], np.asarray(b, dtype=np.float64).reshape(-1, 4)])
    out_s = np.concatenate([scores[~seam], np.asarray(s, dtype=np.float64)])
    out_l = np.concatenate([labels[~seam], np.asarray(lab, dtype=labels.dtype)])
    order = np.argsort(-out_s, kind="stable")
    return out_b[order], out_s[order], out_l[order]
