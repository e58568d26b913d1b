"""Text of the benchmark reports: one way to write a mean and its spread."""

from __future__ import annotations

import math
from collections.abc import Iterable


def mean_std(values: Iterable[float | None], digits: int = 3, missing: str = "-") -> str:
    """``"mean ± sample std"`` of the values that are given (``None`` and NaN are left out),
    with ``digits`` decimals; one value alone is written without a spread (a sample std of one
    value does not exist); ``missing`` when none is left."""
    kept = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not kept:
        return missing
    mean = sum(kept) / len(kept)
    if len(kept) == 1:
        return f"{mean:.{digits}f}"
    std = math.sqrt(sum((v - mean) ** 2 for v in kept) / (len(kept) - 1))
    return f"{mean:.{digits}f} ± {std:.{digits}f}"
