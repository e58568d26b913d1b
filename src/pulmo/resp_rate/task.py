"""The respiratory-rate multi-task objective as a LightningModule, so that the rate networks
train through Lightning like every other pulmo model (checkpoints, early stopping, seeds,
logging and several processes in one place).

An epoch is ``train.clips_per_epoch // train.batch_size`` batches drawn by a
:class:`~pulmo.resp_rate.data.ClipSampler` (each process of a distributed run draws its own,
seeded ``seed + rank``). The four task losses (:func:`pulmo.resp_rate.train.task_losses`) are
mixed with the config's convex weights times dynamic weight averaging, whose weights move at
each epoch's end from the epoch's mean losses (averaged over processes). At each epoch's end
every process scores the validation recordings the same way and logs ``val_score``: the
recording CCC, or minus the MAE (``train.select_on``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import IterableDataset

import torch.nn.functional as F

from pulmo.engine.launch import selection_value
from pulmo.losses.ccc import ccc_cost
from pulmo.losses.focal import focal_loss
from pulmo.losses.multitask import DynamicWeightAverage, convex_mixture
from pulmo.losses.rate_bins import rate_bin_loss
from pulmo.resp_rate.config import ClipConfig, RespRateConfig
from pulmo.resp_rate.data import ClipSampler, Recording
from pulmo.resp_rate.evaluate import LabelledAudio, score_model
from pulmo.resp_rate.net import RateNet
from pulmo.resp_rate.predictor import NetPredictor

TASK_NAMES = ("ccc", "ce_breath", "ce_noise", "focal_breath")


class ClipBatches(IterableDataset):
    """``steps`` batches per pass from one :class:`ClipSampler` (made on first use, seeded
    ``seed + rank`` so that the processes of a distributed run draw different clips)."""

    def __init__(self, recordings: list[Recording], cfg: RespRateConfig, steps: int) -> None:
        self.recordings, self.cfg, self.steps = recordings, cfg, steps
        self.sampler: ClipSampler | None = None

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        if self.sampler is None:
            rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
            c = self.cfg
            self.sampler = ClipSampler(self.recordings, c.clip, c.data, c.augment, seed=c.train.seed + rank)
        for _ in range(self.steps):
            yield self.sampler.batch(self.cfg.train.batch_size)

    def __len__(self) -> int:
        return self.steps


def class_weights(counts: np.ndarray) -> torch.Tensor:
    """Inverse-frequency weights normalised to mean 1 over the classes seen so far."""
    seen = counts > 0
    w = np.zeros_like(counts, dtype=np.float64)
    w[seen] = counts[seen].sum() / (seen.sum() * counts[seen])
    return torch.tensor(w, dtype=torch.float32)


def task_losses(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], net: RateNet, cfg: RespRateConfig,
                breath_w: torch.Tensor, noise_w: torch.Tensor) -> torch.Tensor:
    """``(4,)`` losses: CCC cost (rate and count; plus ``rate_bins_weight`` x the rate-bin
    cross-entropy for a model with a rate-bin head), weighted CE breathing, weighted CE noise,
    focal breathing (with the CE weights)."""
    rate_t, count_t = batch["rate"] / net.rate_scale_bpm, batch["count"] / net.count_scale
    ccc = ccc_cost(out["rate"], rate_t, out["count"], count_t, cfg.loss.alpha)
    if cfg.loss.l1_weight:
        ccc = ccc + cfg.loss.l1_weight * (out["rate"] - rate_t).abs().mean()
    if "rate_bin_logits" in out:
        ccc = ccc + cfg.loss.rate_bins_weight * rate_bin_loss(out["rate_bin_logits"], batch["rate"], net.model.rate_bin_bpm,
                                                              cfg.loss.rate_bins_sigma)
    ce_b = F.cross_entropy(out["breath_logits"].float(), batch["breath"], weight=breath_w)
    ce_n = F.cross_entropy(out["noise_logits"].float(), batch["noisy"], weight=noise_w)
    fl = focal_loss(out["breath_logits"], batch["breath"], cfg.loss.focal_gamma, breath_w)
    return torch.stack([ccc, ce_b, ce_n, fl])


class RateTask(L.LightningModule):
    """Trains a :class:`RateNet` on ``ClipBatches``; validation scores ``val_items``
    (recordings and any simulated air clips) with windows ``val_clip`` at every epoch's end.
    ``history`` keeps one dict per epoch (losses, weights, validation CCC and MAE)."""

    def __init__(self, net: RateNet, cfg: RespRateConfig, val_items: list[LabelledAudio], val_clip: ClipConfig,
                 progress: bool = False) -> None:
        super().__init__()
        self.net, self.cfg, self.val_items, self.val_clip, self.progress = net, cfg, val_items, val_clip, progress
        self.dwa = DynamicWeightAverage(len(TASK_NAMES), cfg.loss.dwa_temperature)
        self.register_buffer("mix", torch.tensor(convex_mixture(cfg.loss.mix), dtype=torch.float32), persistent=False)
        self.breath_counts, self.noise_counts = np.zeros(3), np.zeros(2)
        self.history: list[dict[str, Any]] = []
        self.started = time.time()
        self._lam = torch.ones(len(TASK_NAMES))
        self._sums = torch.zeros(len(TASK_NAMES))
        self._steps = 0

    def on_train_epoch_start(self) -> None:
        self.net.train()  # the previous epoch's validation left it in eval mode
        self._lam = torch.tensor(self.dwa.weights(), dtype=torch.float32)
        self._sums, self._steps = torch.zeros(len(TASK_NAMES)), 0

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.breath_counts += np.bincount(batch["breath"].cpu().numpy(), minlength=3)
        self.noise_counts += np.bincount(batch["noisy"].cpu().numpy(), minlength=2)
        losses = task_losses(self.net(batch["audio"]), batch, self.net, self.cfg,
                             class_weights(self.breath_counts).to(self.device), class_weights(self.noise_counts).to(self.device))
        self._sums += losses.detach().cpu()
        self._steps += 1
        loss = (self.mix * self._lam.to(self.device) * losses).sum()
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(batch["audio"]))
        return loss

    def on_train_epoch_end(self) -> None:
        mean = self._sums / max(self._steps, 1)
        if self.trainer.world_size > 1:  # every process moves its task weights alike
            mean = self.trainer.strategy.reduce(mean.to(self.device), reduce_op="mean").cpu()
        self.dwa.end_epoch(mean.tolist())
        val = score_model(NetPredictor(self.net, self.val_clip), self.val_items)
        rec = val["recording"]
        # the same figures on every process (same weights, same clips); sync_dist only says so to Lightning
        score = rec["ccc"] if self.cfg.train.select_on == "ccc" else -rec["mae"]
        self.log("val_score", selection_value(score), sync_dist=True)
        self.log("val_ccc", rec["ccc"], sync_dist=True)
        self.log("val_mae", rec["mae"], sync_dist=True)
        self.history.append({"epoch": self.current_epoch, "losses": dict(zip(TASK_NAMES, mean.tolist())),
                             "dwa": self._lam.tolist(), "val_ccc": rec["ccc"], "val_mae": rec["mae"],
                             "val_window_mae": val["window"]["mae"], "seconds": time.time() - self.started})
        if self.progress and self.trainer.is_global_zero:
            print(f"epoch {self.current_epoch:3d} loss {float(mean.sum()):.3f} val CCC {rec['ccc']:.3f} "
                  f"MAE {rec['mae']:.2f} (window {val['window']['mae']:.2f}) {time.time() - self.started:.0f} s",
                  flush=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        t = self.cfg.train
        return torch.optim.Adam(self.net.parameters(), lr=t.lr, weight_decay=t.weight_decay)


__all__ = ["ClipBatches", "RateTask", "TASK_NAMES", "class_weights", "task_losses"]
