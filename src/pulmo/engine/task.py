"""The lung-sound classification task: features + model + loss, in one LightningModule."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch import nn

from pulmo.config import TrainConfig
from pulmo.data.transforms.spectrogram import mixup, spec_augment, time_shift
from pulmo.errors import ConfigError
from pulmo.features.base import FeatureExtractor
from pulmo.losses.adversarial import ConditionalAdversary
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

    Batches hold ``audio`` (B, T) waveforms, or ``features`` (B, C, F, frames) computed
    beforehand (``train.precompute_features``), and ``label`` (B,). With a ``bag_loss``,
    training batches are ``{"cycles": <such a batch>, "bags": {"bag": (B, W, T), "presence": (B, 2)}}``
    and the loss adds ``train.mil_weight`` times the bags' multiple-instance loss.

    Args:
        net: the classifier.
        loss: a module mapping ``(logits (B, K), labels (B,))`` to a scalar.
        normal_index: index of the ``normal`` class for the ICBHI score.
        train: optimiser (AdamW or Adam; cosine or constant rate over ``max_epochs``) and
            augmentation settings (mixup, SpecAugment, time shift); ``seed`` seeds the
            task's own generator for augmentation.
        bag_loss: maps ``(window logits (B, W, K), presence (B, 2))`` to a scalar
            (:class:`pulmo.losses.mil.BagPresenceLoss`), for recordings labelled as a whole.
        train_devices: the stethoscope of each training cycle (an index, in the training
            dataset's order), for ``train.device_adversary``: a class-conditional device
            classifier on the model's pooled embedding, through gradient reversal
            (:class:`pulmo.losses.adversarial.ConditionalAdversary`); the model needs
            ``embed`` and ``head`` (e.g. ``small_cnn``).
    """

    def __init__(
        self, net: AudioClassifier, loss: nn.Module, normal_index: int, train: TrainConfig,
        bag_loss: nn.Module | None = None, train_devices: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.loss = loss
        self.bag_loss = bag_loss
        self.normal_index = normal_index
        self.train_config = train
        self.generator = torch.Generator().manual_seed(train.seed)
        self.adversary: ConditionalAdversary | None = None
        if train.device_adversary > 0:
            model = net.model
            if not (hasattr(model, "embed") and hasattr(model, "head") and train_devices is not None):
                raise ConfigError(f"train.device_adversary needs a model with an embedding (small_cnn), "
                                  f"not {type(model).__name__}, and each training cycle's device")
            self.register_buffer("train_devices", torch.as_tensor(list(train_devices), dtype=torch.long), persistent=False)
            self.adversary = ConditionalAdversary(model.classifier.in_features, model.num_classes,
                                                  int(self.train_devices.max()) + 1, train.device_adversary)
        self._val_true: list[torch.Tensor] = []
        self._val_pred: list[torch.Tensor] = []

    def _features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return batch["features"] if "features" in batch else self.net.features(batch["audio"])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if "cycles" not in batch:
            return self._cycle_loss(batch)
        loss = self._cycle_loss(batch["cycles"])
        bags = batch.get("bags")
        if bags is not None and self.bag_loss is not None:
            b, w, t = bags["bag"].shape
            logits = self.net.model(self.net.features(bags["bag"].reshape(b * w, t))).float().reshape(b, w, -1)
            bag = self.bag_loss(logits, bags["presence"])
            self.log("train_bag_loss", bag, on_step=False, on_epoch=True, batch_size=b)
            loss = loss + self.train_config.mil_weight * bag
        return loss

    def _cycle_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x, y, tc = self._features(batch), batch["label"], self.train_config
        if tc.time_shift:
            x = time_shift(x, self.generator)
        if tc.spec_augment:
            x = spec_augment(x, 2, 20, 2, 10, self.generator)
        y_partner, lam = y, 1.0
        if tc.mixup_alpha > 0:
            x, y, y_partner, lam = mixup(x, y, tc.mixup_alpha, self.generator)
        if self.adversary is None:
            logits = self.net.model(x).float()
        else:
            embedding = self.net.model.embed(x)
            logits = self.net.model.head(embedding).float()
            device_loss = self.adversary.loss(embedding, y, self.train_devices[batch["index"]])
            self.log("train_device_loss", device_loss, on_step=False, on_epoch=True, batch_size=len(logits))
        loss = self.loss(logits, y) if lam == 1.0 else lam * self.loss(logits, y) + (1 - lam) * self.loss(logits, y_partner)
        if self.adversary is not None:
            loss = loss + device_loss
        self.log("train_loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=len(logits))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self.net.model(self._features(batch)).float()
        self.log("val_loss", self.loss(logits, batch["label"]), on_epoch=True, batch_size=len(logits))
        self._val_true.append(batch["label"].cpu())
        self._val_pred.append(logits.argmax(dim=1).cpu())

    def on_validation_epoch_end(self) -> None:
        if not self._val_true:
            return
        true, pred = torch.cat(self._val_true), torch.cat(self._val_pred)
        if self.trainer.world_size > 1:  # every process scores all validation cycles, so all decide alike
            true, pred = self.all_gather(true).reshape(-1), self.all_gather(pred).reshape(-1)
        scores = icbhi_scores(true.cpu().numpy(), pred.cpu().numpy(), self.normal_index)
        self._val_true.clear()
        self._val_pred.clear()
        self.log("val_score", scores["score"], prog_bar=True)
        self.log("val_se", scores["sensitivity"])
        self.log("val_sp", scores["specificity"])

    def configure_optimizers(self) -> Any:
        tc = self.train_config
        optimiser = torch.optim.Adam if tc.optimizer == "adam" else torch.optim.AdamW
        opt = optimiser(self.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        if tc.schedule == "constant":
            return opt
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, tc.max_epochs))
        return {"optimizer": opt, "lr_scheduler": sched}
