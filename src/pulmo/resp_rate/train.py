"""Train one respiratory-rate experiment: subject-disjoint split, multi-task loss with
dynamic weight averaging, epoch selection on the validation CCC (or MAE) of the recording rates
(validation subjects, and simulated air-microphone clips where the config asks for them),
the spectral-refinement tolerance and the three-halves check chosen on validation MAE,
test scored once with and without them.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pulmo.data.adapters.breath_csv import load_breath_csv
from pulmo.errors import ConfigError
from pulmo.losses.ccc import ccc_cost
from pulmo.losses.focal import focal_loss
from pulmo.losses.multitask import DynamicWeightAverage, convex_mixture
from pulmo.losses.rate_bins import rate_bin_loss
from pulmo.resp_rate.air_data import air_validation_clips
from pulmo.resp_rate.config import ClipConfig, RespRateConfig, save_rr_config
from pulmo.resp_rate.data import ClipSampler, Recording, load_recordings, subject_folds
from pulmo.resp_rate.evaluate import LabelledAudio, labelled_recordings, score_model
from pulmo.resp_rate.net import RateNet, build_net, save_rr_checkpoint
from pulmo.resp_rate.predictor import NetPredictor

TASK_NAMES = ("ccc", "ce_breath", "ce_noise", "focal_breath")


def _class_weights(counts: np.ndarray) -> torch.Tensor:
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


def run_rr_experiment(cfg: RespRateConfig, out_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    """Train and select on validation; score validation and test; write ``config.yaml``,
    ``metrics.json``, ``history.json`` and ``model.pt`` (fp32) under ``out_dir``."""
    if cfg.data.dataset not in ("rrujo", "breath_csv"):
        raise ConfigError(f"data.dataset {cfg.data.dataset!r} is not supported (rrujo, breath_csv)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_rr_config(cfg, out / "config.yaml")
    started = time.time()
    torch.manual_seed(cfg.train.seed)
    splits = subject_folds(load_breath_csv(cfg.data.resolved_root()), cfg.data)
    recs = {k: load_recordings(v, cfg.clip) for k, v in splits.items()}
    sampler = ClipSampler(recs["train"], cfg.clip, cfg.data, cfg.augment, seed=cfg.train.seed)
    net = build_net(cfg)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    dwa = DynamicWeightAverage(len(TASK_NAMES), cfg.loss.dwa_temperature)
    mix = torch.tensor(convex_mixture(cfg.loss.mix), dtype=torch.float32)
    breath_counts, noise_counts = np.zeros(3), np.zeros(2)
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    history = []
    val_items = labelled_recordings(recs["val"]) + air_validation_items(cfg)
    val_clip = ClipConfig(**{**cfg.clip.__dict__, "hop_s": cfg.train.val_hop_s})
    steps = max(cfg.train.clips_per_epoch // cfg.train.batch_size, 1)
    for epoch in range(cfg.train.epochs):
        net.train()
        lam = torch.tensor(dwa.weights(), dtype=torch.float32)
        sums = torch.zeros(len(TASK_NAMES))
        for _ in range(steps):
            batch = sampler.batch(cfg.train.batch_size)
            breath_counts += np.bincount(batch["breath"].numpy(), minlength=3)
            noise_counts += np.bincount(batch["noisy"].numpy(), minlength=2)
            losses = task_losses(net(batch["audio"]), batch, net, cfg, _class_weights(breath_counts), _class_weights(noise_counts))
            loss = (mix * lam * losses).sum()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            opt.step()
            sums += losses.detach()
        dwa.end_epoch((sums / steps).tolist())
        val = score_model(NetPredictor(net, val_clip), val_items)
        score = val["recording"]["ccc"] if cfg.train.select_on == "ccc" else -val["recording"]["mae"]
        history.append({"epoch": epoch, "losses": dict(zip(TASK_NAMES, (sums / steps).tolist())),
                        "dwa": lam.tolist(), "val_ccc": val["recording"]["ccc"], "val_mae": val["recording"]["mae"],
                        "val_window_mae": val["window"]["mae"], "seconds": time.time() - started})
        if progress:
            print(f"epoch {epoch:3d} loss {float((sums / steps).sum()):.3f} val CCC {val['recording']['ccc']:.3f} "
                  f"MAE {val['recording']['mae']:.2f} (window {val['window']['mae']:.2f}) {time.time() - started:.0f} s",
                  flush=True)
        if best is None or score > best[0]:
            best = (score, epoch, copy.deepcopy(net.state_dict()))
        elif epoch - best[1] >= cfg.train.patience:
            break
    assert best is not None
    net.load_state_dict(best[2])
    metrics: dict[str, Any] = {"selected_epoch": best[1], "epochs_run": len(history),
                               "subjects": {k: sorted({r.patient_id for r in v}) for k, v in splits.items()}}
    finish_run(net, cfg, recs, metrics)
    metrics["train_seconds"] = time.time() - started
    write_run(out, net, cfg, metrics)
    (out / "history.json").write_text(json.dumps(history, indent=1))
    return metrics


def air_validation_items(cfg: RespRateConfig) -> list[LabelledAudio]:
    """The ``data.val_air`` simulated air-microphone validation clips at the working rate (none by default)."""
    d = cfg.data
    clips = air_validation_clips(d.val_air, d.val_air_s, cfg.clip.sample_rate_hz, d.val_air_seed,
                                 cfg.augment.noisy_below_snr_db)
    return [LabelledAudio(f"air_val/{i}", c.samples, c.rate_bpm, c.noisy, "air") for i, c in enumerate(clips)]


def select_post_processing(net: RateNet, clip: ClipConfig, val_items: list[LabelledAudio]) -> tuple[ClipConfig, dict[str, Any]]:
    """How a recording's rate is made from its windows, chosen on validation MAE: a refinement
    tolerance from ``clip.refine_grid`` or (a network with a rate-bin head) a spectrum weight
    from ``clip.posterior_grid`` (ties: the first of the tolerances, then the weights, each
    in ascending order); after a refinement, the three-halves check, kept only when it lowers
    the MAE. The check is not offered after the posterior fit: it corrects the refinement's
    slip onto the two-thirds peak of the spectrum, and on top of the fit it lowered the
    validation MAE in most cross-validation runs but raised the test MAE (see the README).
    The validation windows are predicted once. Returns the clip config and a record."""
    base = replace(clip, refine_tolerance=0.0, three_halves_check=False, posterior_weight=None)
    tolerances = sorted(clip.refine_grid or [0.0])
    weights = sorted(clip.posterior_grid) if getattr(net.model, "rate_bin_head", None) is not None else []
    refined = [replace(base, refine_tolerance=t) for t in tolerances]
    ways = refined + [replace(base, posterior_weight=w) for w in weights]
    options = ways + [replace(w, three_halves_check=True) for w in refined]
    maes = score_model(NetPredictor(net, base), val_items, alternatives=options)["alternative_mae"]
    off, on = maes[: len(ways)], maes[len(ways) :]
    best = min(range(len(ways)), key=lambda i: (off[i], i))
    checked = on[best] if best < len(refined) else None
    chosen = replace(ways[best], three_halves_check=checked is not None and checked < off[best])
    record: dict[str, Any] = {"val_mae_by_tolerance": dict(zip(tolerances, off)), "selected_tolerance": chosen.refine_tolerance,
                              "three_halves_check": {"val_mae_off": off[best], "val_mae_on": checked,
                                                     "selected": chosen.three_halves_check}}
    if weights:
        record["val_mae_by_posterior_weight"] = dict(zip(weights, off[len(tolerances) :]))
        record["selected_posterior_weight"] = chosen.posterior_weight
    return chosen, record


def finish_run(net: RateNet, cfg: RespRateConfig, recs: dict[str, list[Recording]], metrics: dict[str, Any]) -> None:
    """Choose the post-processing on validation (the validation recordings and any simulated
    air clips, into ``cfg.clip``), then score validation, the air clips (``val_air``) and test
    (neural only and as chosen) into ``metrics``."""
    air = air_validation_items(cfg)
    cfg.clip, metrics["refine"] = select_post_processing(net, cfg.clip, labelled_recordings(recs["val"]) + air)
    if air:
        metrics["val_air"] = score_model(NetPredictor(net, cfg.clip), air)["recording"]
    test_items = labelled_recordings(recs["test"])
    raw = replace(cfg.clip, refine_tolerance=0.0, three_halves_check=False, posterior_weight=None)
    metrics["test_neural_only"] = score_model(NetPredictor(net, raw), test_items)["recording"]
    for name in ("val", "test"):
        res = score_model(NetPredictor(net, cfg.clip), labelled_recordings(recs[name]))
        metrics[name] = {**res["recording"], "window": res["window"], "mse_by_range": res["mse_by_range"],
                         "breath_f1": res["breath_f1"], "noise_f1": res["noise_f1"]}
        metrics[f"{name}_predictions"] = res["predictions"]


def write_run(out: Path, net: RateNet, cfg: RespRateConfig, metrics: dict[str, Any]) -> None:
    """``model.pt`` (fp32, with the chosen post-processing) and ``metrics.json`` of a finished run."""
    save_rr_checkpoint(out / "model.pt", net, cfg, {k: metrics[k] for k in ("val", "val_air", "test", "test_neural_only", "selected_epoch", "refine", "subjects")
                                                          if k in metrics})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))


def reselect_run(run_dir: str | Path) -> dict[str, Any]:
    """Redo a finished run's post-processing choice (:func:`select_post_processing`) on its own
    validation subjects and rescore it; training and the selected epoch are unchanged.
    Rewrites ``model.pt`` and ``metrics.json``; returns the metrics."""
    from pulmo.engine.checkpoint import read_checkpoint
    from pulmo.resp_rate.config import load_rr_config
    from pulmo.resp_rate.net import build_from_rr_checkpoint

    out = Path(run_dir)
    cfg = load_rr_config(out / "config.yaml")
    net, _ = build_from_rr_checkpoint(read_checkpoint(out / "model.pt"))
    metrics = json.loads((out / "metrics.json").read_text())
    splits = subject_folds(load_breath_csv(cfg.data.resolved_root()), cfg.data)
    if {k: sorted({r.patient_id for r in v}) for k, v in splits.items()} != metrics["subjects"]:
        raise ConfigError(f"{out}: the data's subject split is not the one this run was trained on")
    finish_run(net, cfg, {k: load_recordings(v, cfg.clip) for k, v in splits.items()}, metrics)
    write_run(out, net, cfg, metrics)
    return metrics
