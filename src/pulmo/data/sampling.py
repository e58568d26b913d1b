"""Sampling weights that stop a training set from teaching the recording device.

In ICBHI the label mix differs by stethoscope (most AKGC417L training cycles are crackles,
most Meditron cycles normal, most of the few Litt3200 cycles abnormal), so a classifier can
score on the training data by recognising the device. Weighting each cycle by
``w = P(y) / P(y | d)`` gives every device the same label mix (the overall one) in
expectation, so the device carries no information about the label while the overall label
distribution stays as it was.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence

import numpy as np


def device_balanced_weights(labels: Sequence[Hashable], devices: Sequence[Hashable]) -> np.ndarray:
    """``(N,)`` weights ``P(y) / P(y | d)``; they sum to ``N``.

    Under them, the weighted label distribution within every device equals the overall
    label distribution, and each device keeps its share of the total weight.
    """
    if len(labels) != len(devices):
        raise ValueError("labels and devices differ in length")
    n = len(labels)
    if n == 0:
        return np.zeros(0)
    p_label = Counter(labels)
    per_device = Counter(devices)
    joint = Counter(zip(devices, labels, strict=True))
    return np.array(
        [(p_label[y] / n) / (joint[(d, y)] / per_device[d]) for y, d in zip(labels, devices, strict=True)], dtype=float
    )
