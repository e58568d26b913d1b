"""Synthetic 16-bit body scans with inserted objects of the paper's 18 classes.

A stand-in for the private THEIA set (paper section 3.2): portrait ``uint16`` images
(default 1500 x 1216, height x width) of a transmission X-ray of a standing person. Dense
material attenuates more and looks darker: ``I = I0 * exp(-sum mu * thickness)``, then
Poisson-like photon noise plus Gaussian read noise, as in a low-dose scanner. Objects are
drawn as masks with their own attenuation; their boxes come from the masks, so they are
exact. Classes are drawn with the paper's imbalance (pants button, unknown anomaly, shirt
button and zipper together about 65 % of objects).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from pulmo.data.adapters.voc_xml import write_voc_xml
from pulmo.data.boxes import BoxRecord
from pulmo.data.remap import BODY_SCAN_CLASSES
from pulmo.data.xray_image import save_xray

# Relative frequency of each class (sums to 1; the four most common make 0.65).
CLASS_WEIGHTS: dict[str, float] = {
    "pants button": 0.20, "unknown anomaly": 0.17, "shirt button": 0.15, "zipper": 0.13,
    "belt buckle": 0.055, "zipper head": 0.04, "jewelry": 0.035, "watch": 0.03, "key": 0.03,
    "shoes": 0.03, "bra": 0.025, "piercing": 0.02, "glasses": 0.02, "surgical implant": 0.02,
    "drugs": 0.015, "cuffs": 0.01, "holding shoes": 0.01, "ankle monitor": 0.01,
}
assert set(CLASS_WEIGHTS) == set(BODY_SCAN_CLASSES)


def _ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.ogrid[:h, :w]
    return ((yy - cy) / max(ry, 0.5)) ** 2 + ((xx - cx) / max(rx, 0.5)) ** 2 <= 1.0


def _rect(h: int, w: int, y0: float, x0: float, y1: float, x1: float) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[max(int(y0), 0):max(int(y1), 0), max(int(x0), 0):max(int(x1), 0)] = True
    return m


def _body(h: int, w: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, tuple[float, float]]]:
    """Attenuation map ``(H, W)`` of soft tissue and bone, and landmark points (y, x)."""
    cx = w / 2 + rng.normal(0, w * 0.02)
    s = h / 1500.0
    mu = np.zeros((h, w), dtype=np.float32)
    parts = [
        _ellipse(h, w, 130 * s, cx, 95 * s, 75 * s),  # head
        _rect(h, w, 215 * s, cx - 35 * s, 280 * s, cx + 35 * s),  # neck
        _ellipse(h, w, 560 * s, cx, 300 * s, 230 * s),  # torso
        _rect(h, w, 700 * s, cx - 200 * s, 1450 * s, cx - 15 * s),  # left leg
        _rect(h, w, 700 * s, cx + 15 * s, 1450 * s, cx + 200 * s),  # right leg
        _rect(h, w, 300 * s, cx - 330 * s, 900 * s, cx - 240 * s),  # arms
        _rect(h, w, 300 * s, cx + 240 * s, 900 * s, cx + 330 * s),
    ]
    for p in parts:
        mu += p.astype(np.float32)
    mu = gaussian_filter(mu, sigma=25 * s) * 1.2  # soft-tissue thickness gradient
    bone = np.zeros((h, w), dtype=np.float32)
    bone += _rect(h, w, 230 * s, cx - 12 * s, 900 * s, cx + 12 * s)  # spine
    for k in range(10):  # ribs
        y = (330 + 38 * k) * s
        bone += _ellipse(h, w, y, cx, 8 * s, 190 * s) & ~_ellipse(h, w, y + 4 * s, cx, 6 * s, 175 * s)
    bone += _ellipse(h, w, 900 * s, cx, 70 * s, 190 * s) & ~_ellipse(h, w, 910 * s, cx, 45 * s, 120 * s)  # pelvis
    bone += _rect(h, w, 950 * s, cx - 120 * s, 1400 * s, cx - 95 * s) + _rect(h, w, 950 * s, cx + 95 * s, 1400 * s, cx + 120 * s)
    bone += _ellipse(h, w, 130 * s, cx, 90 * s, 70 * s) & ~_ellipse(h, w, 130 * s, cx, 80 * s, 62 * s)  # skull
    mu += gaussian_filter(bone, sigma=2 * s) * 0.8
    marks = {"chest": (500 * s, cx), "waist": (860 * s, cx), "head": (130 * s, cx), "eyes": (115 * s, cx),
             "wrist_l": (880 * s, cx - 285 * s), "wrist_r": (880 * s, cx + 285 * s), "feet": (1440 * s, cx),
             "ankle": (1380 * s, cx - 110 * s), "hip": (900 * s, cx + 100 * s), "ear": (140 * s, cx + 80 * s)}
    return mu, marks


def _object(cls: str, h: int, w: int, marks: dict[str, tuple[float, float]], rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Mask and attenuation of one object of class ``cls`` at a plausible place."""
    s = h / 1500.0
    j = lambda v: v + rng.normal(0, 12 * s)  # noqa: E731  (placement jitter, pixels)
    cy, cx = marks["chest"]
    if cls == "pants button":
        y, x = j(marks["waist"][0]), j(marks["waist"][1])
        return _ellipse(h, w, y, x, 9 * s, 9 * s), 2.0
    if cls == "shirt button":
        y, x = j(cy + rng.uniform(-200, 250) * s), j(cx)
        return _ellipse(h, w, y, x, 6 * s, 6 * s), 1.5
    if cls == "zipper":
        y, x = j(marks["waist"][0] + 20 * s), j(marks["waist"][1])
        m = np.zeros((h, w), dtype=bool)
        for k in range(int(rng.integers(8, 16))):
            m |= _rect(h, w, y + 9 * k * s, x - 5 * s, y + (9 * k + 5) * s, x + 5 * s)
        return m, 1.5
    if cls == "zipper head":
        y, x = j(cy + 280 * s), j(cx)
        return _rect(h, w, y, x - 6 * s, y + 16 * s, x + 6 * s), 2.5
    if cls == "unknown anomaly":
        y, x = rng.uniform(0.2, 0.9) * h, marks["chest"][1] + rng.uniform(-200, 200) * s
        return _ellipse(h, w, y, x, rng.uniform(8, 30) * s, rng.uniform(8, 30) * s), float(rng.uniform(0.6, 2.5))
    if cls == "belt buckle":
        y, x = j(marks["waist"][0] - 25 * s), j(marks["waist"][1])
        outer = _rect(h, w, y - 22 * s, x - 30 * s, y + 22 * s, x + 30 * s)
        return outer & ~_rect(h, w, y - 14 * s, x - 22 * s, y + 14 * s, x + 22 * s), 2.5
    if cls == "jewelry":
        y0, x0 = j(marks["head"][0] + 130 * s), marks["head"][1]
        m = np.zeros((h, w), dtype=bool)
        for a in np.linspace(0.2, np.pi - 0.2, 14):
            m |= _ellipse(h, w, y0 + 45 * s * np.sin(a), x0 + 55 * s * np.cos(a), 3 * s, 3 * s)
        return m, 2.0
    if cls in ("watch", "cuffs"):
        side = "wrist_l" if rng.random() < 0.5 else "wrist_r"
        y, x = j(marks[side][0]), marks[side][1]
        if cls == "watch":
            return _ellipse(h, w, y, x, 20 * s, 16 * s), 2.5
        ring = _ellipse(h, w, y, x, 22 * s, 22 * s) & ~_ellipse(h, w, y, x, 16 * s, 16 * s)
        other = "wrist_r" if side == "wrist_l" else "wrist_l"
        y2, x2 = marks[other][0], marks[other][1]
        return ring | (_ellipse(h, w, y2, x2, 22 * s, 22 * s) & ~_ellipse(h, w, y2, x2, 16 * s, 16 * s)), 3.0
    if cls == "key":
        y, x = j(marks["hip"][0]), j(marks["hip"][1])
        return _ellipse(h, w, y, x, 12 * s, 12 * s) | _rect(h, w, y - 4 * s, x + 8 * s, y + 4 * s, x + 45 * s), 3.0
    if cls in ("shoes", "holding shoes"):
        y, x = (j(marks["feet"][0]), marks["feet"][1]) if cls == "shoes" else (j(marks["wrist_l"][0] + 60 * s), marks["wrist_l"][1])
        return _rect(h, w, y - 30 * s, x - 150 * s, y + 20 * s, x + 150 * s) if cls == "shoes" else \
            _rect(h, w, y - 25 * s, x - 60 * s, y + 25 * s, x + 60 * s), 1.0
    if cls == "bra":
        y, x = j(cy - 40 * s), cx
        m = np.zeros((h, w), dtype=bool)
        for dx in (-70, 70):
            m |= _ellipse(h, w, y, x + dx * s, 45 * s, 55 * s) & ~_ellipse(h, w, y - 6 * s, x + dx * s, 40 * s, 50 * s)
        return m, 1.2
    if cls == "piercing":
        y, x = j(marks["ear"][0]), marks["ear"][1]
        return _ellipse(h, w, y, x, 4 * s, 4 * s), 3.0
    if cls == "glasses":
        y, x = j(marks["eyes"][0]), marks["eyes"][1]
        m = np.zeros((h, w), dtype=bool)
        for dx in (-32, 32):
            m |= _ellipse(h, w, y, x + dx * s, 16 * s, 24 * s) & ~_ellipse(h, w, y, x + dx * s, 13 * s, 21 * s)
        return m | _rect(h, w, y - 2 * s, x - 10 * s, y + 2 * s, x + 10 * s), 2.0
    if cls == "surgical implant":
        y, x = j(marks["hip"][0] + 150 * s), marks["hip"][1] + 7 * s
        return _rect(h, w, y, x - 7 * s, y + rng.uniform(80, 160) * s, x + 7 * s), 3.5
    if cls == "drugs":
        y, x = j(cy + rng.uniform(-100, 250) * s), j(cx + rng.uniform(-120, 120) * s)
        return _ellipse(h, w, y, x, rng.uniform(25, 45) * s, rng.uniform(15, 30) * s), 0.25  # low contrast
    if cls == "ankle monitor":
        y, x = j(marks["ankle"][0]), marks["ankle"][1]
        return _rect(h, w, y - 18 * s, x - 28 * s, y + 18 * s, x + 28 * s), 3.0
    raise ValueError(f"unknown class {cls!r}")


def synthetic_body_scan(rng: np.random.Generator, height: int = 1500, width: int = 1216,
                        n_objects: tuple[int, int] = (0, 6), dose_photons: float = 400.0,
                        ) -> tuple[np.ndarray, list[tuple[float, float, float, float]], list[str]]:
    """One ``(height, width)`` ``uint16`` scan, its boxes (xyxy pixels) and class names.

    ``dose_photons`` is the mean photon count of an unattenuated pixel: lower means
    noisier (low-dose scanner).
    """
    mu, marks = _body(height, width, rng)
    names = list(CLASS_WEIGHTS)
    probs = np.array([CLASS_WEIGHTS[n] for n in names])
    boxes, labels = [], []
    for _ in range(int(rng.integers(n_objects[0], n_objects[1] + 1))):
        cls = names[int(rng.choice(len(names), p=probs / probs.sum()))]
        mask, att = _object(cls, height, width, marks, rng)
        ys, xs = np.nonzero(mask)
        if len(ys) < 4:
            continue
        mu += mask.astype(np.float32) * att
        boxes.append((float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)))
        labels.append(cls)
    expected = dose_photons * np.exp(-mu)
    counts = rng.poisson(expected).astype(np.float32) + rng.normal(0, 2.0, size=mu.shape).astype(np.float32)
    img = np.clip(counts / dose_photons * 60000.0, 0, 65535).astype(np.uint16)
    return img, boxes, labels


def write_synthetic_body_scans(root: str | Path, n_images: dict[str, int], seed: int = 0,
                               height: int = 1500, width: int = 1216, n_objects: tuple[int, int] = (0, 6)) -> Path:
    """Write a VOC folder ``ROOT/<split>/{images,Annotations}`` of 16-bit PNG scans."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, n in n_images.items():
        for i in range(n):
            img, boxes, labels = synthetic_body_scan(rng, height, width, n_objects)
            path = save_xray(img, root / split / "images" / f"{i:04d}.png")
            write_voc_xml(BoxRecord(f"{i:04d}", str(path), width, height, tuple(boxes), tuple(labels), split),
                          root / split / "Annotations" / f"{i:04d}.xml")
    return root
