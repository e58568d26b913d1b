"""Self-supervised pretraining of a spectrogram encoder by masked spectrogram modelling.

Random 2.5 s crops of unlabelled recordings become feature maps ``(B, 1, F, T)``; a
random half of an 8 x 8 grid of patches is blanked (set to 0, the maps' mean) and the
encoder plus a light decoder reconstruct the whole map. The loss is the mean squared error
on the blanked patches only, so the encoder must infer them from their context (the idea
of masked autoencoders and SSAST, with a convolutional encoder that a CPU can train).

The saved file holds the encoder's weights and the features and model settings it was
trained with; :func:`load_pretrained_encoder` refuses a network whose settings differ.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from pulmo.data.audio_io import fix_length
from pulmo.errors import ConfigError

PATCH_GRID = 8  # patches per axis of the feature map
MASK_FRACTION = 0.5


def patch_mask(shape: tuple[int, int], batch: int, generator: torch.Generator) -> torch.Tensor:
    """``(batch, 1, F, T)`` boolean mask, True on blanked patches of a ``PATCH_GRID``² grid."""
    grid = torch.rand(batch, 1, PATCH_GRID, PATCH_GRID, generator=generator) < MASK_FRACTION
    return F.interpolate(grid.float(), size=shape, mode="nearest").bool()


class MaskedReconstructor(nn.Module):
    """``encoder`` + a decoder of 1x1 and 3x3 convolutions upsampled back to the input size."""

    def __init__(self, encoder: nn.Module, channels: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = nn.Sequential(
            nn.Conv2d(channels, 64, 1), nn.ReLU(inplace=True), nn.Upsample(scale_factor=4, mode="nearest"),
            nn.Conv2d(64, 32, 3, padding=1), nn.ReLU(inplace=True), nn.Upsample(scale_factor=4, mode="nearest"),
            nn.Conv2d(32, 1, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, F, T)`` -> reconstruction ``(B, 1, F, T)``."""
        return F.interpolate(self.decoder(self.encoder(x)), size=x.shape[-2:], mode="bilinear", align_corners=False)


def pretrain_encoder(
    net: nn.Module, waveforms: Sequence[np.ndarray], n_samples: int, steps: int, out: str | Path,
    batch_size: int = 32, lr: float = 1e-3, seed: int = 0, progress: bool = True,
) -> dict[str, Any]:
    """Train ``net.model.encoder`` (``net`` an :class:`~pulmo.engine.task.AudioClassifier`) for
    ``steps`` batches of random ``n_samples`` crops of ``waveforms``; save it to ``out``.

    Returns the loss curve (mean per 50 steps) and wall time in seconds.
    """
    encoder = net.model.encoder
    channels = [m for m in encoder.modules() if isinstance(m, nn.Conv2d)][-1].out_channels
    model = MaskedReconstructor(encoder, channels)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    rng, generator = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    usable = [w for w in waveforms if len(w) > 0]
    losses, curve, started = [], [], time.time()
    model.train()
    for step in tqdm(range(steps), desc="pretraining", unit="step", disable=not progress):
        picks = rng.integers(0, len(usable), batch_size)
        audio = torch.from_numpy(np.stack([fix_length(usable[i], n_samples, start=None, rng=rng, pad="repeat") for i in picks]))
        with torch.no_grad():
            target = net.features(audio.float())
        mask = patch_mask(tuple(target.shape[-2:]), batch_size, generator)
        recon = model(target.masked_fill(mask, 0.0))
        loss = F.mse_loss(recon[mask], target[mask])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if (step + 1) % 50 == 0:
            curve.append(round(float(np.mean(losses[-50:])), 4))
    torch.save({"encoder": encoder.state_dict(), "features": _settings(net.features), "model": type(net.model).__name__,
                "steps": steps, "loss_curve": curve}, out)
    return {"loss_curve": curve, "seconds": round(time.time() - started, 1)}


def _settings(features: nn.Module) -> dict[str, Any]:
    return {"name": features.name, **features.config_dict()}  # type: ignore[operator]


def load_pretrained_encoder(net: nn.Module, path: str | Path) -> None:
    """Load a :func:`pretrain_encoder` file into ``net.model.encoder``.

    Raises:
        ConfigError: the file is missing, or its features or model differ from ``net``'s.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: pretrained encoder file not found")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved["features"] != _settings(net.features) or saved["model"] != type(net.model).__name__:
        raise ConfigError(f"{path}: pretrained with {saved['model']} on {saved['features']}, "
                          f"not this run's {type(net.model).__name__} on {_settings(net.features)}")
    net.model.encoder.load_state_dict(saved["encoder"])
