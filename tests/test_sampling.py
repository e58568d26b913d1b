import numpy as np
import pytest

from pulmo.data.sampling import device_balanced_weights


def test_weighted_label_mix_is_the_same_for_every_device():
    devices = ["A"] * 10 + ["B"] * 6
    labels = ["crackle"] * 8 + ["normal"] * 2 + ["crackle"] * 1 + ["normal"] * 5
    w = device_balanced_weights(labels, devices)
    assert w.sum() == pytest.approx(len(w))
    overall = {y: labels.count(y) / len(labels) for y in set(labels)}
    for d in "AB":
        idx = [i for i, dev in enumerate(devices) if dev == d]
        total = w[idx].sum()
        assert total == pytest.approx(len(idx))  # each device keeps its share
        for y, p in overall.items():
            assert w[[i for i in idx if labels[i] == y]].sum() / total == pytest.approx(p)
    # hand-computed: P(crackle) = 9/16, P(crackle | A) = 8/10 -> weight 0.703125
    assert w[0] == pytest.approx((9 / 16) / (8 / 10))


def test_already_balanced_data_gets_unit_weights_and_bad_input_fails():
    np.testing.assert_allclose(device_balanced_weights([0, 1, 0, 1], ["a", "a", "b", "b"]), 1.0)
    with pytest.raises(ValueError, match="differ in length"):
        device_balanced_weights([0, 1], ["a"])
