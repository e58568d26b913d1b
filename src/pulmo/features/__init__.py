"""Feature extractors: waveform batches ``(B, T)`` -> feature maps ``(B, C, F, frames)``.

Each extractor is a small ``nn.Module`` with a dataclass config that saves to a dict and
rebuilds the same extractor (DESIGN rule 4)::

    fx = create_features("stft", sample_rate_hz=4000)
    same = create_features(fx.name, **fx.config_dict())
"""

from __future__ import annotations

from typing import Any

from pulmo.features.base import FEATURES, FeatureExtractor


def create_features(name: str, **params: Any) -> FeatureExtractor:
    from pulmo.features import band_envelope, cqt, mfb, spectral, stack  # noqa: F401  (register extractors)

    return FEATURES.get(name).from_params(**params)


def feature_names() -> list[str]:
    from pulmo.features import band_envelope, cqt, mfb, spectral, stack  # noqa: F401

    return FEATURES.names()


__all__ = ["FEATURES", "FeatureExtractor", "create_features", "feature_names"]
