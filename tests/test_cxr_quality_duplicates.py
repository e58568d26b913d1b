import cv2
import numpy as np
from PIL import Image

from pulmo.cxr.config import GateConfig
from pulmo.cxr.duplicates import find_duplicates, leaked
from pulmo.cxr.preprocess import lung_box
from pulmo.cxr.quality import check_quality, gate_report
from pulmo.cxr.synthetic import synth_xray
from pulmo.data.image_io import read_image


def test_blur_gate_flags_a_blurred_image_and_passes_the_sharp_one():
    sharp = synth_xray("Normal", 256, np.random.default_rng(0))
    blurred = cv2.GaussianBlur(sharp, (0, 0), 6)
    cfg = GateConfig()
    ok, bad = check_quality(sharp, cfg), check_quality(blurred, cfg)
    assert ok.passed and ok.laplacian_var > cfg.blur_min
    assert not bad.passed and bad.laplacian_var < cfg.blur_min
    assert any(r.startswith("blurry: variance of Laplacian") for r in bad.reasons)


def test_contrast_gates_and_report():
    img = synth_xray("Normal", 256, np.random.default_rng(1))
    flat = 0.5 + 0.05 * (img - 0.5)  # same picture, very low contrast
    harsh = (img > 0.4).astype(np.float32)  # black and white only
    cfg = GateConfig(blur_min=0.0)
    verdicts = [check_quality(v, cfg) for v in (img, flat, harsh)]
    assert verdicts[0].passed
    assert any("low contrast" in r for r in verdicts[1].reasons)
    assert any("high contrast" in r for r in verdicts[2].reasons)
    rep = gate_report(["ok", "flat", "harsh"], verdicts, cfg)
    assert rep["n"] == 3 and rep["kept"] == 1 and [d["id"] for d in rep["dropped"]] == ["flat", "harsh"]
    assert rep["thresholds"]["contrast_max"] == cfg.contrast_max


def test_duplicate_finder_catches_a_resized_reencoded_copy(tmp_path):
    rng = np.random.default_rng(2)
    a, b = synth_xray("Covid", 256, rng), synth_xray("Normal", 256, rng)
    Image.fromarray(np.uint8(a * 255)).resize((180, 180)).save(tmp_path / "copy.jpg", quality=70)
    copy = read_image(tmp_path / "copy.jpg")
    other = np.fliplr(b).copy()
    pairs = find_duplicates(["train/a", "train/b", "val/copy", "val/other"], [a, b, copy, other])
    assert [(p.a, p.b) for p in pairs] == [("train/a", "val/copy")]
    assert pairs[0].distance <= 4
    split = {"train/a": "train", "train/b": "train", "val/copy": "val", "val/other": "val"}
    assert leaked(pairs, split) == {"val/copy"}


def test_lung_box_surrounds_both_lung_fields():
    img = synth_xray("Normal", 256, np.random.default_rng(3), pose=False)
    x0, y0, x1, y1 = lung_box(img)
    # the synthetic lungs are ellipses centred at x = 0.33 s and 0.67 s, y = 0.5 s, half-axes 0.13 s x 0.27 s
    assert x0 <= 0.2 * 256 + 8 and x1 >= 0.8 * 256 - 8 and y0 <= 0.23 * 256 + 8 and y1 >= 0.77 * 256 - 8
    assert (x1 - x0) * (y1 - y0) < 0.8 * 256 * 256
    assert lung_box(np.full((64, 64), 0.5, np.float32)) == (0, 0, 64, 64)  # nothing lung-like: whole image
