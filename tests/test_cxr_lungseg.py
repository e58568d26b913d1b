"""Lung segmentation for the chest X-ray crop (pulmo.cxr.lungseg), on synthetic films whose lungs are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("segmentation_models_pytorch", reason="the lung segmenter needs pulmo[lungseg]")

from pulmo.cxr.config import ImageConfig  # noqa: E402
from pulmo.cxr.features import view_features  # noqa: E402
from pulmo.cxr.lungseg import (dice, load_segmenter, lung_masks, mask_box, segment_crop,  # noqa: E402
                               segmenter_state, train_segmenter)
from pulmo.cxr.synthetic import chest_phantom  # noqa: E402


def film_and_lungs(seed: int, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A phantom film, shifted by a few pixels, and its two lung ellipses (as chest_phantom draws them)."""
    shift = np.random.default_rng(seed).integers(-6, 7, 2)
    film = np.roll(chest_phantom(size, seed), tuple(shift), axis=(0, 1))
    y, x = np.mgrid[0:size, 0:size] / size
    lungs = np.zeros((size, size), bool)
    for cx in (0.3, 0.7):
        lungs |= ((x - cx) / 0.15) ** 2 + ((y - 0.45) / 0.3) ** 2 < 1
    return film, np.roll(lungs, tuple(shift), axis=(0, 1))


def test_mask_box_pads_the_lungs_and_falls_back_to_the_whole_film() -> None:
    mask = np.zeros((100, 200), bool)
    mask[20:60, 50:150] = True
    assert mask_box(mask, margin=0.05) == (40, 15, 160, 65)
    tiny = np.zeros((100, 200), bool)
    tiny[0:2, 0:2] = True  # 0.02 % lung: not a segmentation to crop by
    assert mask_box(tiny) == (0, 0, 200, 100)


def test_dice() -> None:
    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4), bool)
    b[1:3] = True
    assert dice(a, a) == 1.0 and dice(a, b) == pytest.approx(0.5) and dice(~a & a, ~a & a) == 1.0


@pytest.fixture(scope="module")
def trained() -> tuple[torch.nn.Module, float, float]:
    films = [film_and_lungs(s) for s in range(8)]
    held_film, held_lungs = film_and_lungs(99)
    fit = train_segmenter([f for f, _ in films], [m for _, m in films], [held_film], [held_lungs], epochs=12, batch_size=4, lr=3e-3,
                          seed=0)
    return fit.net, fit.val_dice[0], fit.val_dice[-1]


def test_segmenter_learns_the_lungs_of_a_film_it_did_not_see(trained: tuple[torch.nn.Module, float, float]) -> None:
    net, first, last = trained
    held_film, held_lungs = film_and_lungs(99)
    got = dice(lung_masks(net, [held_film])[0], held_lungs)
    assert got == pytest.approx(last) and got > 0.8 and got > first


def test_saved_segmenter_is_its_decoder_and_predicts_the_same(trained: tuple[torch.nn.Module, float, float]) -> None:
    net = trained[0]
    state = segmenter_state(net)
    assert state and not any(k.startswith("encoder.") for k in state)
    film = film_and_lungs(5)[0]
    again = load_segmenter({k: v.half() for k, v in state.items()})
    assert dice(lung_masks(again, [film])[0], lung_masks(net, [film])[0]) > 0.98


def test_segment_crop_cuts_to_the_lungs_and_blanks_outside(trained: tuple[torch.nn.Module, float, float]) -> None:
    net = trained[0]
    film, lungs = film_and_lungs(7)
    x0, y0, x1, y1 = mask_box(lungs)
    cut = segment_crop(net)(film)
    assert abs(cut.shape[0] - (y1 - y0)) <= 8 and abs(cut.shape[1] - (x1 - x0)) <= 8
    blank = segment_crop(net, blank_outside=True)(film)
    assert blank.shape == cut.shape and (blank == 0).mean() > 0.05 and (cut == 0).mean() == 0
    features = view_features(tiny_backbone(), lambda i: film, 2, ImageConfig(size_px=32), views=1, crop=segment_crop(net))
    assert features.shape == (2, 2, 4, 1, 1)


def tiny_backbone() -> torch.nn.Module:
    """A stand-in backbone with ``features``: 4 channels, pooled to 1 x 1."""

    class Tiny(torch.nn.Module):
        def features(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.adaptive_avg_pool2d(x.repeat(1, 4, 1, 1), 1)

    return Tiny()
