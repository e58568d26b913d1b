"""Torch datasets: preprocessed cycles -> fixed-length samples with fixed keys."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from pulmo.data.audio_io import fix_length


class CycleDataset(Dataset[dict[str, torch.Tensor]]):
    """Fixed-length cycles: random crop when ``train`` (paper 4.2), else from the start;
    shorter cycles padded with ``pad`` (see :func:`pulmo.data.audio_io.fix_length`).

    Items are ``{"audio": (T,) float32, "label": () int64, "index": () int64}``.
    Random crops come from the dataset's own generator seeded with ``seed``.
    """

    def __init__(
        self, waveforms: Sequence[np.ndarray], labels: Sequence[int], n_samples: int, train: bool, seed: int = 0,
        pad: str = "zero",
    ) -> None:
        if len(waveforms) != len(labels):
            raise ValueError("waveforms and labels differ in length")
        self.waveforms = waveforms
        self.labels = labels
        self.n_samples = n_samples
        self.train = train
        self.pad = pad
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.waveforms)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        start = None if self.train else 0
        audio = fix_length(self.waveforms[i], self.n_samples, start=start, rng=self.rng, pad=self.pad)
        return {
            "audio": torch.from_numpy(np.ascontiguousarray(audio)),
            "label": torch.tensor(self.labels[i], dtype=torch.long),
            "index": torch.tensor(i, dtype=torch.long),
        }


class FeatureDataset(Dataset[dict[str, torch.Tensor]]):
    """Feature maps computed beforehand: items ``{"features": (C, F, T), "label": (), "index": ()}``."""

    def __init__(self, features: torch.Tensor, labels: Sequence[int]) -> None:
        if len(features) != len(labels):
            raise ValueError("features and labels differ in length")
        self.features = features
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "features": self.features[i],
            "label": torch.tensor(self.labels[i], dtype=torch.long),
            "index": torch.tensor(i, dtype=torch.long),
        }
