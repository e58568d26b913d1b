"""The lung-sound classification task: features + model + loss, in one LightningModule."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from pulmo.data.transforms.spectrogram import mixup, spec_augment
from pulmo.features.base import FeatureExtractor
from pulmo.metrics.icbhi import icbhi_scores


class AudioClassifier(nn.Module):
    """Waveforms ``(B, T)`` -> features ``(B, C, F, frames)`` -> logits ``(B, K)``.

    This is the whole inference graph a checkpoint stores.
    """

    def __init__(self, features: FeatureExtractor, model: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.model = model

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.model(self.features(audio))


class CycleClassificationTask(L.LightningModule):
    """Trains an :class:`AudioClassifier`; validation logs the ICBHI ``val_score``.

    Args:
        net: the classifier.
        loss: a module mapping ``(logits (B, K), labels (B,))`` to a scalar.
        normal_index: index of the ``normal`` class for the ICBHI score.
        lr, weight_decay: AdamW settings; the rate follows a cosine schedule over ``max_epochs``.
    """

    def __init__(
        self, net: AudioClassifier, loss: nn.Module, normal_index: int, lr: float, weight_decay: float, max_epochs: int,
        mixup_alpha: float = 0.0, spec_augment: bool = False, seed: int = 0,
    ) -> None:
        super().__init__()
        self.net = net
        self.loss = loss
        self.normal_index = normal_index
        self.lr = lr
        self.weight_decay = weight_decay
        self.max_epochs = max_epochs
        self.mixup_alpha = mixup_alpha
        self.spec_augment = spec_augment
        self.generator = torch.Generator().manual_seed(seed)
        self._val_true: list[torch.Tensor] = []
        self._val_pred: list[torch.Tensor] = []

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = self.net.features(batch["audio"]), batch["label"]
        if self.spec_augment:
            x = spec_augment(x, 2, 20, 2, 10, self.generator)
        y_partner, lam = y, 1.0
        if self.mixup_alpha > 0:
            x, y, y_partner, lam = mixup(x, y, self.mixup_alpha, self.generator)
        logits = self.net.model(x).float()
        loss = self.loss(logits, y) if lam == 1.0 else lam * self.loss(logits, y) + (1 - lam) * self.loss(logits, y_partner)
        self.log("train_loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=len(logits))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self.net(batch["audio"]).float()
        self.log("val_loss", self.loss(logits, batch["label"]), on_epoch=True, batch_size=len(logits))
        self._val_true.append(batch["label"].cpu())
        self._val_pred.append(logits.argmax(dim=1).cpu())

    def on_validation_epoch_end(self) -> None:
        if not self._val_true:
            return
        scores = icbhi_scores(
            np.concatenate([t.numpy() for t in self._val_true]),
            np.concatenate([p.numpy() for p in self._val_pred]),
            self.normal_index,
        )
        self._val_true.clear()
        self._val_pred.clear()
        self.log("val_score", scores["score"], prog_bar=True)
        self.log("val_se", scores["sensitivity"])
        self.log("val_sp", scores["specificity"])

    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.max_epochs))
        return {"optimizer": opt, "lr_scheduler": sched}
