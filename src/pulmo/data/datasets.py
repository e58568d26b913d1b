"""Torch datasets: preprocessed cycles -> fixed-length samples with fixed keys."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from pulmo.data.audio_io import fix_length
from pulmo.data.transforms.device import random_device_response


class CycleDataset(Dataset[dict[str, torch.Tensor]]):
    """Fixed-length cycles: random crop when ``train`` (paper 4.2), else from the start;
    shorter cycles padded with ``pad`` (see :func:`pulmo.data.audio_io.fix_length`).

    Items are ``{"audio": (T,) float32, "label": () int64, "index": () int64}``.
    Random crops come from the dataset's own generator seeded with ``seed``. In training, a
    ``device_augment`` share of items first goes through a random stethoscope response
    (:mod:`pulmo.data.transforms.device`) at ``sample_rate_hz``.
    """

    def __init__(
        self, waveforms: Sequence[np.ndarray], labels: Sequence[int], n_samples: int, train: bool, seed: int = 0,
        pad: str = "zero", device_augment: float = 0.0, sample_rate_hz: int = 4000,
    ) -> None:
        if len(waveforms) != len(labels):
            raise ValueError("waveforms and labels differ in length")
        self.waveforms = waveforms
        self.labels = labels
        self.n_samples = n_samples
        self.train = train
        self.pad = pad
        self.device_augment = device_augment if train else 0.0
        self.sample_rate_hz = sample_rate_hz
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.waveforms)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        start = None if self.train else 0
        audio = fix_length(self.waveforms[i], self.n_samples, start=start, rng=self.rng, pad=self.pad)
        if self.device_augment and self.rng.random() < self.device_augment:
            audio = random_device_response(audio, self.sample_rate_hz, self.rng)
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


class BagDataset(Dataset[dict[str, torch.Tensor]]):
    """Recordings labelled as a whole, as bags of ``windows`` random crops of ``n_samples``.

    Items are ``{"bag": (windows, n_samples) float32, "presence": (2,) float32}`` with
    ``presence`` = (crackle, wheeze) flags of the recording. A ``device_augment`` share of
    bags goes through one random stethoscope response (the same for all its windows).
    """

    def __init__(
        self, waveforms: Sequence[np.ndarray], presence: Sequence[tuple[int, int]], n_samples: int, windows: int,
        seed: int = 0, device_augment: float = 0.0, sample_rate_hz: int = 4000,
    ) -> None:
        if len(waveforms) != len(presence):
            raise ValueError("waveforms and presence labels differ in length")
        self.waveforms = waveforms
        self.presence = np.asarray(presence, np.float32).reshape(len(waveforms), 2)
        self.n_samples = n_samples
        self.windows = windows
        self.device_augment = device_augment
        self.sample_rate_hz = sample_rate_hz
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.waveforms)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        wave = self.waveforms[i]
        if self.device_augment and self.rng.random() < self.device_augment:
            wave = random_device_response(wave, self.sample_rate_hz, self.rng)
        bag = np.stack([fix_length(wave, self.n_samples, start=None, rng=self.rng, pad="repeat")
                        for _ in range(self.windows)])
        return {"bag": torch.from_numpy(bag.astype(np.float32)), "presence": torch.from_numpy(self.presence[i])}
