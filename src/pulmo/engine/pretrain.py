"""Self-supervised pretraining of a spectrogram encoder by masked spectrogram modelling.

Random 2.5 s crops of unlabelled recordings become feature maps ``(B, 1, F, T)``; a
random half of an 8 x 8 grid of patches is blanked (set to 0, the maps' mean) and the
encoder plus a light decoder reconstruct the whole map. The loss is the mean squared error
on the blanked patches only, so the encoder must infer them from their context (the idea
of masked autoencoders and SSAST, with a convolutional encoder that a CPU can train).
Training runs through Lightning (:class:`MaskedPretrainTask`, one process on the CPU).

The saved file holds the encoder's weights and the features and model settings it was
trained with; :func:`load_pretrained_encoder` refuses a network whose settings differ.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, IterableDataset
from tqdm.auto import tqdm

from pulmo.data.audio_io import fix_length
from pulmo.engine.launch import Launch, quiet_lightning
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


class CropBatches(IterableDataset):
    """``steps`` batches ``(batch_size, n_samples)`` float32 of random crops (repeat-padded when
    shorter) of randomly picked ``waveforms``, drawn from one generator seeded ``seed``."""

    def __init__(self, waveforms: Sequence[np.ndarray], n_samples: int, batch_size: int, steps: int, seed: int) -> None:
        self.waveforms = [w for w in waveforms if len(w) > 0]
        self.n_samples, self.batch_size, self.steps = n_samples, batch_size, steps
        self.rng = np.random.default_rng(seed)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for _ in range(self.steps):
            picks = self.rng.integers(0, len(self.waveforms), self.batch_size)
            crops = [fix_length(self.waveforms[i], self.n_samples, start=None, rng=self.rng, pad="repeat") for i in picks]
            yield torch.from_numpy(np.stack(crops)).float()

    def __len__(self) -> int:
        return self.steps


class MaskedPretrainTask(L.LightningModule):
    """Masked spectrogram modelling: audio ``(B, samples)`` -> ``features`` (fixed, no gradient)
    ``(B, 1, F, T)`` -> :func:`patch_mask` blanks half the patches -> ``model`` reconstructs the map;
    the loss is the MSE on the blanked patches. AdamW (weight decay 1e-4) with a one-cycle rate
    peaking at ``lr`` over ``steps`` batches. ``losses`` keeps every step's loss."""

    def __init__(self, features: nn.Module, model: MaskedReconstructor, steps: int, lr: float, seed: int,
                 progress: bool = False) -> None:
        super().__init__()
        self.features, self.model, self.steps, self.lr, self.progress = features, model, steps, lr, progress
        self.generator = torch.Generator().manual_seed(seed)  # the masks' own stream
        self.losses: list[float] = []
        self._bar: tqdm | None = None

    def on_train_start(self) -> None:
        self._bar = tqdm(total=self.steps, desc="pretraining", unit="step", disable=not self.progress)

    def training_step(self, audio: torch.Tensor, batch_idx: int) -> torch.Tensor:
        with torch.no_grad():
            target = self.features(audio)
        mask = patch_mask(tuple(target.shape[-2:]), len(audio), self.generator).to(target.device)
        recon = self.model(target.masked_fill(mask, 0.0))
        loss = F.mse_loss(recon[mask], target[mask])
        self.losses.append(loss.item())
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        assert self._bar is not None
        self._bar.update()

    def on_train_end(self) -> None:
        assert self._bar is not None
        self._bar.close()

    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.lr, total_steps=self.steps, pct_start=0.1)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def pretrain_encoder(
    net: nn.Module, waveforms: Sequence[np.ndarray], n_samples: int, steps: int, out: str | Path,
    batch_size: int = 32, lr: float = 1e-3, seed: int = 0, progress: bool = True,
) -> dict[str, Any]:
    """Train ``net.model.encoder`` (``net`` an :class:`~pulmo.engine.task.AudioClassifier`) for
    ``steps`` batches of random ``n_samples`` crops of ``waveforms`` through Lightning
    (:class:`MaskedPretrainTask`, one process on the CPU); save it to ``out``.

    Returns the loss curve (mean per 50 steps) and wall time in seconds.
    """
    encoder = net.model.encoder
    channels = [m for m in encoder.modules() if isinstance(m, nn.Conv2d)][-1].out_channels
    task = MaskedPretrainTask(net.features, MaskedReconstructor(encoder, channels), steps, lr, seed, progress)
    started = time.time()
    trainer = L.Trainer(max_epochs=1, **Launch(accelerator="cpu").trainer_kwargs(), logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0)
    with quiet_lightning():
        # its own generator: the loader's per-epoch seed must not draw on the global stream
        trainer.fit(task, DataLoader(CropBatches(waveforms, n_samples, batch_size, steps, seed), batch_size=None,
                                     generator=torch.Generator()))
    losses = task.losses
    curve = [round(float(np.mean(losses[i - 50:i])), 4) for i in range(50, len(losses) + 1, 50)]
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
