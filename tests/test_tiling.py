"""Tiling, clipping and merging on hand-made cases with exact coordinates."""

from __future__ import annotations

import numpy as np
import pytest

from pulmo.data.tiling import (
    boxes_in_window,
    crop_window,
    grid_tiles,
    merge_detections,
    nms,
    random_negative_tiles,
    random_positive_tiles,
    seam_flags,
    shift_boxes,
    visible_fraction,
)


def test_grid_tiles_exact_coordinates():
    # 1000 x 700 image, 512 tiles, 128 overlap: x starts 0, 384, 488 (flush); y starts 0, 188 (flush).
    tiles = grid_tiles(1000, 700, 512, 128)
    assert tiles == [(0, 0, 512, 512), (384, 0, 896, 512), (488, 0, 1000, 512),
                     (0, 188, 512, 700), (384, 188, 896, 700), (488, 188, 1000, 700)]


def test_grid_tiles_exact_fit_and_small_image():
    assert grid_tiles(1024, 512, 512, 0) == [(0, 0, 512, 512), (512, 0, 1024, 512)]
    assert grid_tiles(300, 200, 512, 64) == [(0, 0, 512, 512)]  # one padded tile
    with pytest.raises(ValueError):
        grid_tiles(100, 100, 64, 64)


def test_grid_tiles_cover_every_pixel():
    w, h = 1216, 1500
    cover = np.zeros((h, w), dtype=bool)
    for x0, y0, x1, y1 in grid_tiles(w, h, 320, 32):
        cover[y0:y1, x0:x1] = True
    assert cover.all()


def test_boxes_in_window_clips_and_drops():
    boxes = np.array([[90, 90, 110, 130],    # straddles the window's top-left corner: 10x10 of 20x40 visible
                      [120, 120, 140, 140],  # inside
                      [300, 300, 320, 320]])  # outside
    local, keep = boxes_in_window(boxes, (100, 100, 200, 200), min_visible=0.1)
    assert keep.tolist() == [True, True, False]
    np.testing.assert_allclose(local, [[0, 0, 10, 30], [20, 20, 40, 40]])
    # visible share of the first box is (10*30)/(20*40) = 0.375, so a 0.4 minimum drops it
    _, keep = boxes_in_window(boxes, (100, 100, 200, 200), min_visible=0.4)
    assert keep.tolist() == [False, True, False]


def test_visible_fraction_of_box_larger_than_window():
    np.testing.assert_allclose(visible_fraction(np.array([[0, 0, 1000, 1000]]), (100, 100, 200, 200)), [1.0])


def test_every_positive_tile_holds_an_object():
    rng = np.random.default_rng(0)
    for _ in range(200):
        w, h = int(rng.integers(200, 1500)), int(rng.integers(200, 1500))
        tile = int(rng.choice([128, 256, 512]))
        n = int(rng.integers(1, 5))
        x0 = rng.uniform(0, w - 20, n)
        y0 = rng.uniform(0, h - 20, n)
        boxes = np.stack([x0, y0, np.minimum(x0 + rng.uniform(5, 600, n), w), np.minimum(y0 + rng.uniform(5, 600, n), h)], 1)
        for win in random_positive_tiles(w, h, boxes, 4, tile, rng):
            assert win[2] - win[0] == tile and win[3] - win[1] == tile
            assert win[0] >= 0 and win[1] >= 0
            if w >= tile:
                assert win[2] <= w
            if h >= tile:
                assert win[3] <= h
            local, keep = boxes_in_window(boxes, win, min_visible=0.99)
            assert keep.any(), (w, h, tile, boxes, win)


def test_positive_tiles_contain_small_box_whole():
    rng = np.random.default_rng(1)
    box = np.array([[400.0, 300.0, 450.0, 340.0]])
    for win in random_positive_tiles(1000, 800, box, 50, 256, rng):
        assert win[0] <= 400 and win[2] >= 450 and win[1] <= 300 and win[3] >= 340


def test_no_boxes_no_positive_tiles_and_negatives_are_empty():
    rng = np.random.default_rng(2)
    assert random_positive_tiles(500, 500, np.zeros((0, 4)), 4, 128, rng) == []
    boxes = np.array([[100, 100, 200, 200]])
    for win in random_negative_tiles(800, 800, boxes, 10, 128, rng):
        assert not np.any(visible_fraction(boxes, win) > 0)


def test_crop_window_pads_and_keeps_dtype():
    img = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)
    out = crop_window(img, (2, 1, 6, 5))
    assert out.dtype == np.uint16 and out.shape == (4, 4)
    np.testing.assert_array_equal(out[:2, :2], img[1:3, 2:4])
    assert out[2:].sum() == 0 and out[:, 2:].sum() == 0


def test_shift_boxes_back():
    np.testing.assert_allclose(shift_boxes(np.array([[1, 2, 3, 4]]), (100, 200, 612, 712)), [[101, 202, 103, 204]])


def test_nms_is_classwise():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10]], dtype=float)
    keep = nms(boxes, np.array([0.9, 0.8, 0.7]), np.array(["a", "a", "b"]))
    assert keep.tolist() == [0, 2]


def test_merge_removes_duplicates_from_overlapping_tiles():
    # One object at x 400..450 lies in the overlap of tiles (0..512) and (384..896): both see it.
    tiles = [(0, 0, 512, 512), (384, 0, 896, 512)]
    dets_local = [np.array([[400, 100, 450, 150]]), np.array([[17, 101, 67, 151]])]
    boxes = np.concatenate([shift_boxes(d, t) for d, t in zip(dets_local, tiles)])
    seam = np.concatenate([seam_flags(d, t, 896, 512) for d, t in zip(dets_local, tiles)])
    b, s, lab = merge_detections(boxes, np.array([0.9, 0.6]), np.array([0, 0]), seam)
    assert len(b) == 1 and s.tolist() == [0.9]
    np.testing.assert_allclose(b[0], [400, 100, 450, 150])


def test_merge_joins_an_object_cut_by_a_seam():
    # Object x 300..600, y 100..200; tiles (0..512) and (384..896) each see a piece.
    tiles = [(0, 0, 512, 512), (384, 0, 896, 512)]
    pieces = [np.array([[300, 100, 512, 200]]), np.array([[0, 100, 216, 200]])]
    seam = np.concatenate([seam_flags(p, t, 896, 512) for p, t in zip(pieces, tiles)])
    assert seam.tolist() == [True, True]
    boxes = np.concatenate([shift_boxes(p, t) for p, t in zip(pieces, tiles)])
    b, s, lab = merge_detections(boxes, np.array([0.5, 0.7]), np.array([1, 1]), seam)
    np.testing.assert_allclose(b, [[300, 100, 600, 200]])
    assert s.tolist() == [0.7]


def test_merge_keeps_separate_objects_and_classes_apart():
    boxes = np.array([[300, 100, 512, 200], [384, 100, 600, 200], [384, 300, 600, 400]], dtype=float)
    seam = np.array([True, True, True])
    # different classes at the seam stay apart; a piece far away in y stays apart
    b, s, lab = merge_detections(boxes, np.array([0.5, 0.7, 0.6]), np.array([0, 1, 1]), seam)
    assert len(b) == 3
    # not at a seam: no union even if adjacent
    b, _, _ = merge_detections(boxes[:2], np.array([0.5, 0.7]), np.array([1, 1]), np.array([False, False]))
    assert len(b) == 2


def test_seam_flags_ignore_image_border():
    # A box touching the left edge of the first tile touches the image border, not a seam.
    assert seam_flags(np.array([[0, 10, 50, 60]]), (0, 0, 512, 512), 1000, 1000).tolist() == [False]
    assert seam_flags(np.array([[0, 10, 50, 60]]), (384, 0, 896, 512), 1000, 1000).tolist() == [True]
    assert seam_flags(np.array([[400, 10, 512, 60]]), (488, 0, 1000, 512), 1000, 1000).tolist() == [False]
