"""Detection data: VOC/YOLO/COCO round trips, 16-bit images through the pipeline,
augmentations moving boxes, and the synthetic body-scan generator."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pulmo.data.adapters.coco_json import read_coco_json, write_coco_json
from pulmo.data.adapters.synthetic_xray import CLASS_WEIGHTS, synthetic_body_scan, write_synthetic_body_scans
from pulmo.data.adapters.voc_xml import read_voc_folder, read_voc_xml, write_voc_xml
from pulmo.data.adapters.yolo_txt import read_yolo_txt, write_yolo_txt
from pulmo.data.boxes import BoxRecord, load_box_manifest, save_box_manifest
from pulmo.data.remap import BODY_SCAN_CLASSES
from pulmo.data.tiling import boxes_in_window, crop_window, grid_tiles
from pulmo.data.transforms.boxes import BoxAugment, brightness_contrast, gaussian_blur, gaussian_noise, hflip
from pulmo.data.xray_image import Window, load_xray, resize_xray, save_xray, to_detector_input, window_levels
from pulmo.errors import DataError

REC = BoxRecord("0007", "/data/0007.png", 640, 480, ((10.5, 20.25, 100.0, 200.0), (300.0, 40.0, 330.0, 90.0)),
                ("zipper", "drugs"), split="train")


def test_voc_round_trip(tmp_path):
    path = write_voc_xml(REC, tmp_path / "0007.xml")
    back = read_voc_xml(path, image_path=REC.path, split="train")
    assert back.boxes_xyxy == REC.boxes_xyxy and back.labels == REC.labels
    assert (back.width, back.height, back.path) == (640, 480, REC.path)


def test_voc_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.xml"
    bad.write_text("<annotation><object><name>x</name><bndbox><xmin>5</xmin><ymin>5</ymin>"
                   "<xmax>5</xmax><ymax>9</ymax></bndbox></object></annotation>")
    with pytest.raises(DataError, match="bad.xml.*no area"):
        read_voc_xml(bad)
    (tmp_path / "broken.xml").write_text("<annotation>")
    with pytest.raises(DataError, match="broken.xml"):
        read_voc_xml(tmp_path / "broken.xml")


def test_voc_folder_with_unannotated_image(tmp_path):
    root = tmp_path / "set"
    for i, rec in enumerate([REC, None]):
        img = root / "test" / "images" / f"{i:04d}.png"
        save_xray(np.zeros((48, 64), dtype=np.uint16), img)
        if rec is not None:
            write_voc_xml(BoxRecord(f"{i:04d}", str(img), 64, 48, rec.boxes_xyxy, rec.labels), root / "test" / "Annotations" / f"{i:04d}.xml")
    recs = read_voc_folder(root, "test")
    assert [len(r.labels) for r in recs] == [2, 0]
    assert recs[0].path.endswith("0000.png") and recs[1].split == "test"
    with pytest.raises(DataError, match="no VOC layout"):
        read_voc_folder(root, "val")


def test_yolo_round_trip(tmp_path):
    classes = ["drugs", "zipper"]
    write_yolo_txt(REC, tmp_path / "0007.txt", classes)
    back = read_yolo_txt(tmp_path / "0007.txt", REC.path, 640, 480, classes)
    np.testing.assert_allclose(back.boxes, REC.boxes, atol=1e-3)
    assert back.labels == REC.labels
    empty = read_yolo_txt(tmp_path / "missing.txt", "x.png", 10, 10, classes)
    assert empty.labels == () and empty.boxes.shape == (0, 4)
    (tmp_path / "bad.txt").write_text("5 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DataError, match="bad.txt:1"):
        read_yolo_txt(tmp_path / "bad.txt", "x.png", 10, 10, classes)


def test_coco_round_trip_and_manifest(tmp_path):
    empty = BoxRecord("e", "/data/e.png", 10, 10)
    write_coco_json([REC, empty], tmp_path / "c.json")
    back = read_coco_json(tmp_path / "c.json", image_root="/data")
    assert back[0].boxes_xyxy == REC.boxes_xyxy and back[0].labels == REC.labels and back[1].labels == ()
    assert back[0].path == "/data/0007.png"
    save_box_manifest([REC, empty], tmp_path / "m.jsonl")
    assert load_box_manifest(tmp_path / "m.jsonl") == [REC, empty]


def test_16bit_in_16bit_through_the_pipeline(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(1000, 60000, size=(300, 200), dtype=np.uint16)
    img[0, 0], img[0, 1] = 30000, 30001  # one 16-bit step apart
    path = save_xray(img, tmp_path / "scan.png")
    assert Image.open(path).mode.startswith("I")
    loaded = load_xray(path)
    assert loaded.dtype == np.uint16
    np.testing.assert_array_equal(loaded, img)
    tile = crop_window(loaded, grid_tiles(200, 300, 128, 32)[0])
    assert tile.dtype == np.uint16
    for aug in (hflip, gaussian_blur, brightness_contrast, gaussian_noise):
        out, _ = aug(tile, np.zeros((0, 4)), rng)
        assert out.dtype == np.uint16 and out.shape == tile.shape
    assert resize_xray(loaded, 0.5).dtype == np.uint16
    levels = window_levels(loaded, Window(0.0))
    assert levels == (0.0, 65535.0)
    x = to_detector_input(loaded, levels)
    assert x.dtype == np.float32 and x.shape == (3, 300, 200)
    assert x[0, 0, 0] != x[0, 0, 1]  # no 8-bit rounding before the detector
    assert x[0, 0, 1] - x[0, 0, 0] == pytest.approx(1 / 65535, rel=1e-3)


def test_load_xray_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_xray(tmp_path / "nope.png")
    (tmp_path / "trunc.png").write_bytes(b"\x89PNG\r\n\x1a\n0000")
    with pytest.raises(DataError, match="trunc.png"):
        load_xray(tmp_path / "trunc.png")
    Image.new("RGB", (20, 10), (255, 0, 0)).save(tmp_path / "rgb.png")
    assert load_xray(tmp_path / "rgb.png").shape == (10, 20)
    assert load_xray(tmp_path / "rgb.png", color=True).shape == (10, 20, 3)


def test_hflip_moves_boxes_exactly():
    img = np.zeros((10, 100), dtype=np.uint16)
    img[:, 10:30] = 1
    out, boxes = hflip(img, np.array([[10.0, 2.0, 30.0, 8.0]]), np.random.default_rng(0))
    np.testing.assert_allclose(boxes, [[70, 2, 90, 8]])
    assert out[:, 70:90].all() and out[:, :70].sum() == 0


def test_box_augment_probability_and_names():
    rng = np.random.default_rng(0)
    img = np.full((32, 32), 1000, dtype=np.uint16)
    img[:, :8] = 5000
    never = BoxAugment(("hflip",), p=0.0)
    out, b = never(img, np.array([[0.0, 0.0, 8.0, 8.0]]), rng)
    np.testing.assert_array_equal(out, img)
    always = BoxAugment(("hflip",), p=1.0)
    _, b = always(img, np.array([[0.0, 0.0, 8.0, 8.0]]), rng)
    np.testing.assert_allclose(b, [[24, 0, 32, 8]])
    with pytest.raises(ValueError, match="unknown augmentation"):
        BoxAugment(("mosaic",))


def test_synthetic_body_scan():
    rng = np.random.default_rng(3)
    img, boxes, labels = synthetic_body_scan(rng, height=300, width=244, n_objects=(4, 8))
    assert img.dtype == np.uint16 and img.shape == (300, 244)
    assert img.max() > 255 * 4  # uses the 16-bit range
    assert len(boxes) == len(labels) and len(boxes) >= 3
    b = np.asarray(boxes)
    assert (b[:, 0] >= 0).all() and (b[:, 2] <= 244).all() and (b[:, 1] >= 0).all() and (b[:, 3] <= 300).all()
    assert set(labels) <= set(BODY_SCAN_CLASSES)
    top4 = sum(CLASS_WEIGHTS[c] for c in ("pants button", "unknown anomaly", "shirt button", "zipper"))
    assert top4 == pytest.approx(0.65) and sum(CLASS_WEIGHTS.values()) == pytest.approx(1.0)


def test_synthetic_folder_reads_back_as_voc(tmp_path):
    root = write_synthetic_body_scans(tmp_path / "syn", {"train": 2, "test": 1}, seed=1, height=150, width=122, n_objects=(1, 3))
    recs = read_voc_folder(root, "train")
    assert len(recs) == 2 and load_xray(recs[0].path).dtype == np.uint16
    local, keep = boxes_in_window(recs[0].boxes, (0, 0, 122, 150))
    assert keep.all()


class _BrightSquareDetector:
    """A stand-in detector: one box around the pixels above 0.5 in each input, score 0.9."""

    def predict(self, x, conf=0.05, iou=0.5):
        out = []
        for img in x.numpy():
            ys, xs = np.nonzero(img[0] > 0.5)
            if len(xs):
                out.append((np.array([[xs.min(), ys.min(), xs.max() + 1.0, ys.max() + 1.0]]), np.array([0.9]), np.array([0])))
            else:
                out.append((np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64)))
        return out


def test_unflip_boxes_hand_case():
    from pulmo.detect.infer import unflip_boxes

    np.testing.assert_allclose(unflip_boxes(np.array([[10.0, 5.0, 30.0, 20.0]]), 100), [[70.0, 5.0, 90.0, 20.0]])
    assert unflip_boxes(np.zeros((0, 4)), 64).shape == (0, 4)


def test_flip_tta_finds_the_same_object_once():
    from pulmo.detect.config import TilingConfig
    from pulmo.detect.data import PreparedImage
    from pulmo.detect.infer import detect_image

    image = np.zeros((128, 160), dtype=np.uint16)
    image[40:60, 100:130] = 60000  # off-centre, so a box left unmirrored would land elsewhere
    prep = PreparedImage(BoxRecord("x", "x.png", 160, 128), image, 1.0, (0.0, 65535.0), np.zeros((0, 4)), np.zeros(0, dtype=np.int64))
    tiling = TilingConfig(tile=64, overlap=0)
    plain = detect_image(_BrightSquareDetector(), prep, tiling, 0.05, 0.5)
    flipped = detect_image(_BrightSquareDetector(), prep, tiling, 0.05, 0.5, flip=True)
    # one box each way (grid tiles at x = 0, 64, 96 see the square whole or cut at x = 128; NMS keeps one)
    assert len(plain[0]) == len(flipped[0]) == 1
    np.testing.assert_allclose(plain[0], [[100.0, 40.0, 130.0, 60.0]], atol=2.0)
    np.testing.assert_allclose(flipped[0], [[100.0, 40.0, 130.0, 60.0]], atol=2.0)
