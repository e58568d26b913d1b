import torch

from pulmo.data.transforms.spectrogram import mixup, spec_augment, time_shift


def test_spec_augment_masks_bounded_bands_and_spans():
    x = torch.ones(4, 1, 50, 40)
    out = spec_augment(x, freq_masks=1, freq_width=5, time_masks=1, time_width=3, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.equal(x, torch.ones_like(x))  # input untouched
    for b in range(4):
        zero_rows = int((out[b, 0] == 0).all(dim=1).sum())
        zero_cols = int((out[b, 0] == 0).all(dim=0).sum())
        assert zero_rows <= 5 and zero_cols <= 3
    again = spec_augment(x, 1, 5, 1, 3, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # same generator seed, same masks


def test_mixup_is_a_convex_combination():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 1, 4, 4), torch.arange(6)
    mixed, ya, yb, lam = mixup(x, y, 0.4, g)
    assert 0.0 <= lam <= 1.0 and torch.equal(ya, y)
    perm = [int(torch.nonzero(y == v)[0]) for v in yb]
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x[perm])
    same, _, _, one = mixup(x, y, 0.0, g)
    assert one == 1.0 and torch.equal(same, x)


def test_time_shift_rolls_each_example_by_its_own_offset():
    x = torch.arange(2 * 1 * 3 * 5, dtype=torch.float32).view(2, 1, 3, 5)
    out = time_shift(x, torch.Generator().manual_seed(0))
    for b in range(2):
        matches = [k for k in range(5) if torch.equal(out[b], torch.roll(x[b], k, dims=-1))]
        assert len(matches) == 1  # a pure circular shift along time, same for every bin
