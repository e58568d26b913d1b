"""Train one respiratory-rate experiment: subject-disjoint split, multi-task loss with
dynamic weight averaging, epoch selection on the validation CCC (or MAE) of the recording rates
(validation subjects, and simulated air-microphone clips where the config asks for them),
the spectral-refinement tolerance and the three-halves check chosen on validation MAE,
test scored once with and without them.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from pulmo.config import save_config
from pulmo.data.adapters.breath_csv import load_breath_csv
from pulmo.engine.launch import Launch, quiet_lightning, ranks_agree, restore_best
from pulmo.errors import ConfigError
from pulmo.resp_rate.air_data import air_validation_clips
from pulmo.resp_rate.config import ClipConfig, RespRateConfig
from pulmo.resp_rate.data import Recording, load_recordings, subject_folds
from pulmo.resp_rate.evaluate import LabelledAudio, labelled_recordings, score_model
from pulmo.resp_rate.net import RateNet, build_net, save_rr_checkpoint
from pulmo.resp_rate.predictor import NetPredictor
from pulmo.resp_rate.task import ClipBatches, RateTask


def run_rr_experiment(cfg: RespRateConfig, out_dir: str | Path, progress: bool = True,
                      launch: Launch | None = None) -> dict[str, Any]:
    """Train through Lightning (:class:`~pulmo.resp_rate.task.RateTask`; ``launch``: devices,
    strategy and nodes, default one process) and select the epoch on validation; score
    validation and test; write ``config.yaml``, ``metrics.json``, ``history.json`` and
    ``model.pt`` (fp32) under ``out_dir``. In a multi-process run only rank 0 scores and
    writes; the others return ``{}``."""
    if cfg.data.dataset not in ("rrujo", "breath_csv"):
        raise ConfigError(f"data.dataset {cfg.data.dataset!r} is not supported (rrujo, breath_csv)")
    launch = launch or Launch()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    started = time.time()
    L.seed_everything(cfg.train.seed, verbose=False)
    splits = subject_folds(load_breath_csv(cfg.data.resolved_root()), cfg.data)
    recs = {k: load_recordings(v, cfg.clip) for k, v in splits.items()}
    net = build_net(cfg)
    val_items = labelled_recordings(recs["val"]) + air_validation_items(cfg)
    val_clip = ClipConfig(**{**cfg.clip.__dict__, "hop_s": cfg.train.val_hop_s})
    steps = max(cfg.train.clips_per_epoch // cfg.train.batch_size, 1)
    task = RateTask(net, cfg, val_items, val_clip, progress)
    best = ModelCheckpoint(dirpath=out / "lightning", monitor="val_score", mode="max", save_top_k=1, filename="best",
                           save_on_train_epoch_end=True)
    trainer = L.Trainer(max_epochs=cfg.train.epochs, gradient_clip_val=5.0, **launch.trainer_kwargs(),
                        callbacks=[best, EarlyStopping(monitor="val_score", mode="max", patience=cfg.train.patience,
                                                       check_on_train_epoch_end=True)],
                        logger=CSVLogger(out, name="logs", version=""), enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                        log_every_n_steps=min(50, steps))
    with quiet_lightning():
        # its own generator: the loader's per-epoch seed must not draw on the global stream that dropout uses
        loader = DataLoader(ClipBatches(recs["train"], cfg, steps), batch_size=None, generator=torch.Generator())
        trainer.fit(task, loader)
    selected = restore_best(task, best)
    ranks = ranks_agree(trainer, task)
    if not trainer.is_global_zero:
        return {}
    net = task.net.eval()
    metrics: dict[str, Any] = {"selected_epoch": selected, "epochs_run": len(task.history),
                               "subjects": {k: sorted({r.patient_id for r in v}) for k, v in splits.items()}}
    if ranks is not None:
        metrics["ranks"] = ranks
    finish_run(net, cfg, recs, metrics)
    metrics["train_seconds"] = time.time() - started
    write_run(out, net, cfg, metrics)
    (out / "history.json").write_text(json.dumps(task.history, indent=1))
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
