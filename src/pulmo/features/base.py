"""Base class and registry for feature extractors."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn

from pulmo.errors import ConfigError
from pulmo.registry import Registry

FEATURES: Registry[type["FeatureExtractor"]] = Registry("feature extractor")


class FeatureExtractor(nn.Module):
    """Maps ``(B, T)`` waveforms at ``config.sample_rate_hz`` to ``(B, C, F, frames)``.

    Subclasses set ``name``, ``config_class`` (a dataclass) and implement ``forward``.
    """

    name: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config

    @classmethod
    def from_params(cls, **params: Any) -> FeatureExtractor:
        try:
            return cls(cls.config_class(**params))
        except TypeError as err:
            raise ConfigError(f"invalid parameters for features {cls.name!r}: {err}") from None

    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    @property
    def channels(self) -> int:
        return 1


def to_db(power: torch.Tensor, top_db: float) -> torch.Tensor:
    """Power ``(B, ..., F, T)`` -> decibels, floored ``top_db`` below each example's peak."""
    db = 10.0 * torch.log10(power.clamp_min(1e-10))
    peak = db.flatten(1).amax(dim=1).view(-1, *([1] * (db.ndim - 1)))
    return torch.maximum(db, peak - top_db)


def standardise(x: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per example over all but the batch axis."""
    flat = x.flatten(1)
    mean = flat.mean(dim=1).view(-1, *([1] * (x.ndim - 1)))
    std = flat.std(dim=1).clamp_min(1e-5).view(-1, *([1] * (x.ndim - 1)))
    return (x - mean) / std


def normalise(x: torch.Tensor, mode: str) -> torch.Tensor:
    """Normalise ``(B, F, T)`` log features per example.

    ``example``: zero mean, unit variance over the whole map. ``frequency``: subtract each
    frequency row's mean over time first (in log power this removes a recording device's
    stationary frequency response, as cepstral mean normalisation does), then scale to
    unit variance.
    """
    if mode == "example":
        return standardise(x)
    if mode == "frequency":
        return standardise(x - x.mean(dim=-1, keepdim=True))
    raise ConfigError(f"unknown normalisation {mode!r}; known: example, frequency")


def check_waveforms(x: torch.Tensor) -> torch.Tensor:
    if x.ndim != 2:
        raise ValueError(f"expected waveforms of shape (B, T), got {tuple(x.shape)}")
    return x.float()
