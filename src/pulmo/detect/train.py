"""One detection experiment end to end: its data, training through Lightning
(:mod:`pulmo.detect.task`: random positive tiles each epoch, the paper's augmentations, Adam,
validation every ``eval_every`` epochs, the best epoch kept by validation loss or validation
F1 / mAP50 -- never by test), thresholds chosen on validation, tiled inference scored on test.

The detector's own training pipeline (mosaic, HSV, affine, mixup) is not used at all:
tiles and augmentations are ours, so each ablation changes only what it names.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from pulmo.data.boxes import BoxRecord
from pulmo.data.remap import mapped_classes
from pulmo.detect.config import DetectExperimentConfig
from pulmo.detect.data import PreparedImage, class_mapping, load_split, mapped, prepare_image
from pulmo.detect.infer import TiledStats, detect_split
from pulmo.detect.task import DetectTask, EvaluationEarlyStopping, TileBatches, validation_samples
from pulmo.engine.launch import Launch, quiet_lightning, ranks_agree, restore_best
from pulmo.metrics.detection import ImageDetections, choose_thresholds, detection_report
from pulmo.models.detector import create_detector, load_pretrained


def _limit(records: list[BoxRecord], n: int) -> list[BoxRecord]:
    """``n`` records spread evenly over the list (files are often grouped by class), or all."""
    if n <= 0 or n >= len(records):
        return records
    return [records[int(i)] for i in np.linspace(0, len(records) - 1, n).round()]


def run_detect_experiment(cfg: DetectExperimentConfig, out_dir: str | Path, progress: bool = True,
                          eval_test: bool = True, launch: Launch | None = None) -> dict[str, Any]:
    """Train one configuration through Lightning (:class:`~pulmo.detect.task.DetectTask`;
    ``launch``: devices, strategy and nodes, default one process), keep the epoch with the best
    validation ``train.monitor`` (stopping after ``train.patience`` evaluations without a better
    one), then evaluate tiled inference on test.

    Writes ``model.pt`` (a pulmo detect checkpoint), ``metrics.json`` and ``log.jsonl`` to
    ``out_dir`` and returns the metrics; in a multi-process run only rank 0 writes and scores,
    the other processes return ``{}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    launch = launch or Launch()
    L.seed_everything(cfg.train.seed, verbose=False)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    t_start = time.time()
    train_raw = _limit(load_split(cfg.data, "train"), cfg.data.max_train_images)
    val_raw = _limit(load_split(cfg.data, "val"), cfg.data.max_val_images)
    mapping = class_mapping(cfg.data, train_raw, val_raw)
    classes = mapped_classes(mapping)
    train = [prepare_image(r, cfg.data, cfg.tiling, classes) for r in mapped(train_raw, mapping)]
    val = [prepare_image(r, cfg.data, cfg.tiling, classes) for r in mapped(val_raw, mapping)]
    detector = create_detector(cfg.model.name, num_classes=len(classes))
    pretrained_report = load_pretrained(detector, cfg.model.pretrained) if cfg.model.pretrained else None
    task = DetectTask(detector, cfg, TileBatches(train, cfg), val, validation_samples(val, cfg), classes,
                      out_dir / "log.jsonl", progress)
    with tempfile.TemporaryDirectory(prefix="pulmo-detect-") as tmp:
        best = ModelCheckpoint(dirpath=Path(tmp) / "checkpoints", monitor="val_value", mode="min", save_top_k=1,
                               filename="best", save_on_train_epoch_end=True)
        callbacks: list[L.Callback] = [best]
        if cfg.train.patience:
            callbacks.append(EvaluationEarlyStopping(cfg.train, monitor="val_value"))
        trainer = L.Trainer(max_epochs=cfg.train.epochs, **launch.trainer_kwargs(), callbacks=callbacks,
                            logger=CSVLogger(tmp, name="logs"), enable_progress_bar=False, enable_model_summary=False,
                            num_sanity_val_steps=0, limit_val_batches=0)
        with quiet_lightning():
            # its own generator: the loader's per-epoch seed must not draw on the global torch stream
            trainer.fit(task, DataLoader(task.batches, batch_size=None, generator=torch.Generator()))
        best_epoch = restore_best(task, best) + 1
    ranks = ranks_agree(trainer, task)
    if trainer.global_rank != 0:
        return {}
    detector.eval()
    info = {"best_epoch": best_epoch, "monitor": cfg.train.monitor, "train_seconds": round(time.time() - t_start, 1),
            "epochs_run": len(task.history), "patience": cfg.train.patience,
            "pretrained": pretrained_report and {k: len(v) for k, v in pretrained_report.items()}}
    if ranks is not None:
        info["ranks"] = ranks
    return evaluate_trained(detector, cfg, classes, mapping, val, out_dir, info, eval_test)


def evaluate_trained(detector: torch.nn.Module, cfg: DetectExperimentConfig, classes: list[str], mapping: dict[str, str],
                     val: list[PreparedImage], out_dir: Path, info: dict[str, Any], eval_test: bool = True) -> dict[str, Any]:
    """Choose test-time flipping (when ``inference.flip_tta`` is ``validation``) and per-class
    thresholds on validation images, score tiled inference on test, and write ``model.pt``
    and ``metrics.json`` to ``out_dir``."""
    from pulmo.detect.checkpoint import save_detect_checkpoint

    def thresholds_for(dets: list[ImageDetections]) -> dict[str, float] | float:
        return choose_thresholds(dets, classes) if cfg.inference.per_class_thresholds else cfg.inference.score_threshold

    val_by_flip = {flip: detect_split(detector, val, cfg.tiling, classes, cfg.inference.conf, cfg.inference.iou, flip=flip)
                   for flip in {"off": [False], "on": [True], "validation": [False, True]}[cfg.inference.flip_tta]}
    val_f1 = {flip: detection_report(d, thresholds_for(d))["f1"] for flip, d in val_by_flip.items()}
    flip = max(val_f1, key=lambda k: (val_f1[k], not k))  # ties: no flip
    if len(val_f1) > 1:
        info = {**info, "flip_tta_val_f1": {"off": val_f1[False], "on": val_f1[True]}}
    cfg.inference.flip_tta = "on" if flip else "off"
    val_dets = val_by_flip[flip]
    thresholds = thresholds_for(val_dets)
    metrics: dict[str, Any] = {
        "classes": classes, "mapping": mapping, **info, "thresholds": thresholds, "candidate_conf": cfg.inference.conf,
        "val": _summary(detection_report(val_dets, thresholds, classes=classes)),
        "val_fixed_threshold": _summary(detection_report(val_dets, cfg.inference.score_threshold, classes=classes)),
    }
    if eval_test:
        test = [prepare_image(r, cfg.data, cfg.tiling, classes) for r in mapped(load_split(cfg.data, "test"), mapping)]
        stats = TiledStats()
        test_dets = detect_split(detector, test, cfg.tiling, classes, cfg.inference.conf, cfg.inference.iou, stats, flip=flip)
        metrics["test"] = _summary(detection_report(test_dets, thresholds, classes=classes))
        metrics["test_fixed_threshold"] = _summary(detection_report(test_dets, cfg.inference.score_threshold, classes=classes))
        metrics["test_throughput"] = {"tiles_per_s": stats.tiles / stats.seconds, "images_per_s": stats.images / stats.seconds,
                                      "tiles": stats.tiles, "images": stats.images}
    save_detect_checkpoint(out_dir / "model.pt", detector, cfg, classes, mapping, thresholds,
                           {k: metrics[k] for k in ("val", "test") if k in metrics})
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def rescore_run(run_dir: str | Path, inference: dict[str, Any], data: dict[str, Any] | None = None,
                into: str | Path | None = None) -> dict[str, Any]:
    """Re-run the post-training evaluation of a finished run with other inference settings
    (e.g. a lower candidate threshold, test-time flipping) or validation images (``data``,
    e.g. ``{"max_val_images": 0}``: all of them); training and the chosen epoch are unchanged.
    Results replace the run's, or, with ``into``, go to a new run folder (``.../<name>/seed<k>``)
    whose experiment is named after its parent folder."""
    from pulmo.detect.checkpoint import build_detector, read_detect_checkpoint

    run_dir = Path(run_dir)
    bundle = read_detect_checkpoint(run_dir / "model.pt")
    config = bundle["config"]
    config["inference"] = {**config["inference"], **inference}
    config["data"] = {**config["data"], **(data or {})}
    if into is not None:
        into = Path(into)
        into.mkdir(parents=True, exist_ok=True)
        config["name"] = into.parent.name
        for kept in ("log.jsonl", "command.txt"):
            if (run_dir / kept).is_file():
                (into / kept).write_bytes((run_dir / kept).read_bytes())
    cfg = DetectExperimentConfig.from_dict(config)
    old = json.loads((run_dir / "metrics.json").read_text())
    classes, mapping = list(bundle["labels"]), dict(bundle["mapping"])
    val_raw = _limit(load_split(cfg.data, "val"), cfg.data.max_val_images)
    val = [prepare_image(r, cfg.data, cfg.tiling, classes) for r in mapped(val_raw, mapping)]
    info = {k: old[k] for k in ("best_epoch", "monitor", "train_seconds", "epochs_run", "patience", "pretrained") if k in old}
    return evaluate_trained(build_detector(bundle), cfg, classes, mapping, val, into or run_dir, info)


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    """The report without the raw counts of images (kept small for checkpoints)."""
    return {k: v for k, v in report.items() if k != "image_counts"}
