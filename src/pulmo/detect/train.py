"""The detection training loop: random positive tiles each epoch, the paper's
augmentations, Adam, validation every ``eval_every`` epochs, and the best epoch kept by
validation loss (or validation F1 fitness) -- never by test.

The detector's own training pipeline (mosaic, HSV, affine, mixup) is not used at all:
tiles and augmentations are ours, so each ablation changes only what it names.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pulmo.data.boxes import BoxRecord
from pulmo.data.remap import mapped_classes
from pulmo.data.tiling import boxes_in_window, crop_window, random_negative_tiles, random_positive_tiles
from pulmo.data.transforms.boxes import BoxAugment
from pulmo.data.xray_image import to_detector_input
from pulmo.detect.config import DetectExperimentConfig
from pulmo.detect.data import PreparedImage, class_mapping, load_split, mapped, prepare_image
from pulmo.detect.infer import TiledStats, detect_split, image_windows
from pulmo.metrics.detection import ImageDetections, choose_thresholds, detection_report
from pulmo.models.detector import create_detector, load_pretrained

Sample = tuple[np.ndarray, np.ndarray, np.ndarray]  # (3, S, S) float32, boxes (n, 4), labels (n,)


def training_samples(images: list[PreparedImage], cfg: DetectExperimentConfig, rng: np.random.Generator,
                     augment: BoxAugment) -> list[Sample]:
    """One epoch of tiles: for each image ``n_tiles`` positive + ``n_negative`` negative
    windows (``full``: the whole scaled image), cropped, clipped, augmented, converted."""
    t = cfg.tiling
    out = []
    for prep in images:
        if t.mode == "full":
            windows = [(0, 0, t.tile, t.tile)]
        else:
            windows = random_positive_tiles(prep.width, prep.height, prep.boxes, t.n_tiles, t.tile, rng)
            windows += random_negative_tiles(prep.width, prep.height, prep.boxes, t.n_negative, t.tile, rng)
        for w in windows:
            boxes, keep = boxes_in_window(prep.boxes, w, t.min_visible)
            tile, boxes = augment(crop_window(prep.image, w), boxes, rng)
            out.append((to_detector_input(tile, prep.levels), boxes, prep.labels[keep]))
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def validation_samples(images: list[PreparedImage], cfg: DetectExperimentConfig) -> list[Sample]:
    """Fixed grid tiles of the validation images with their clipped boxes (no augmentation)."""
    out = []
    for prep in images:
        for w in image_windows(prep, cfg.tiling):
            boxes, keep = boxes_in_window(prep.boxes, w, cfg.tiling.min_visible)
            out.append((to_detector_input(crop_window(prep.image, w), prep.levels), boxes, prep.labels[keep]))
    return out


def epoch_learning_rates(lr: float, lr_final: float, epochs: int) -> list[float]:
    """Learning rate of each epoch: cosine from ``lr`` at epoch 1 to ``lr * lr_final`` at the
    last (constant ``lr`` when ``lr_final`` is 1)."""
    if epochs == 1:
        return [lr]
    low = lr * lr_final
    return [low + (lr - low) * 0.5 * (1 + math.cos(math.pi * e / (epochs - 1))) for e in range(epochs)]


@dataclass
class BestEpoch:
    """The epoch kept on validation (``value``: lower is better) and early stopping:
    ``exhausted`` once ``patience`` evaluations in a row (0: never) brought no better value."""

    patience: int = 0
    epoch: int = 0
    value: float | None = None
    stale: int = 0

    def update(self, epoch: int, value: float) -> bool:
        """Record one evaluation; True when it is the new best."""
        if self.value is None or value < self.value:
            self.epoch, self.value, self.stale = epoch, value, 0
            return True
        self.stale += 1
        return False

    @property
    def exhausted(self) -> bool:
        return self.patience > 0 and self.stale >= self.patience


def _batches(samples: list[Sample], batch_size: int):
    for i in range(0, len(samples), batch_size):
        chunk = samples[i:i + batch_size]
        yield torch.from_numpy(np.stack([c[0] for c in chunk])), [(c[1], c[2]) for c in chunk]


def validation_loss(detector: torch.nn.Module, samples: list[Sample], batch_size: int) -> float:
    detector.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for x, targets in _batches(samples, batch_size):
            loss, _ = detector.loss(x, targets)
            total += float(loss) * len(targets)
            n += len(targets)
    return total / max(n, 1)


def _limit(records: list[BoxRecord], n: int) -> list[BoxRecord]:
    """``n`` records spread evenly over the list (files are often grouped by class), or all."""
    if n <= 0 or n >= len(records):
        return records
    return [records[int(i)] for i in np.linspace(0, len(records) - 1, n).round()]


def run_detect_experiment(cfg: DetectExperimentConfig, out_dir: str | Path, progress: bool = True,
                          eval_test: bool = True) -> dict[str, Any]:
    """Train one configuration, select on validation, evaluate tiled inference on test.

    Writes ``model.pt`` (a pulmo detect checkpoint), ``metrics.json`` and ``log.jsonl`` to
    ``out_dir`` and returns the metrics.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.train.seed)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    rng = np.random.default_rng(cfg.train.seed)
    t_start = time.time()
    train_raw = _limit(load_split(cfg.data, "train"), cfg.data.max_train_images)
    val_raw = _limit(load_split(cfg.data, "val"), cfg.data.max_val_images)
    mapping = class_mapping(cfg.data, train_raw, val_raw)
    classes = mapped_classes(mapping)
    train = [prepare_image(r, cfg.data, cfg.tiling, classes) for r in mapped(train_raw, mapping)]
    val_recs = mapped(val_raw, mapping)
    val = [prepare_image(r, cfg.data, cfg.tiling, classes) for r in val_recs]
    val_samples = validation_samples(val, cfg)
    detector = create_detector(cfg.model.name, num_classes=len(classes))
    pretrained_report = load_pretrained(detector, cfg.model.pretrained) if cfg.model.pretrained else None
    opt = torch.optim.Adam(detector.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    schedule = epoch_learning_rates(cfg.train.lr, cfg.train.lr_final, cfg.train.epochs)
    augment = BoxAugment(tuple(cfg.train.augment), cfg.train.augment_p)
    keeper, best_state = BestEpoch(cfg.train.patience), copy.deepcopy(detector.state_dict())
    log = (out_dir / "log.jsonl").open("w")
    for epoch in range(1, cfg.train.epochs + 1):
        detector.train()
        t0 = time.time()
        for group in opt.param_groups:
            group["lr"] = schedule[epoch - 1]
        samples = training_samples(train, cfg, rng, augment)
        losses = []
        for x, targets in _batches(samples, cfg.train.batch_size):
            loss, _ = detector.loss(x, targets)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        row: dict[str, Any] = {"epoch": epoch, "lr": schedule[epoch - 1], "train_loss": float(np.mean(losses)) if losses else None,
                               "train_tiles": len(samples), "epoch_seconds": round(time.time() - t0, 1)}
        if epoch % cfg.train.eval_every == 0 or epoch == cfg.train.epochs:
            row["val_loss"] = validation_loss(detector, val_samples, cfg.train.batch_size)
            value = row["val_loss"]
            if cfg.train.monitor in ("val_f1", "val_map50"):
                dets = detect_split(detector, val, cfg.tiling, classes, cfg.inference.conf, cfg.inference.iou)
                rep = detection_report(dets, cfg.inference.score_threshold)
                row["val_f1"], row["val_map50"] = rep["f1"], rep["map50"]
                value = -row[cfg.train.monitor]
            if keeper.update(epoch, value):
                best_state = copy.deepcopy(detector.state_dict())
        log.write(json.dumps(row) + "\n")
        log.flush()
        if progress:
            print(f"[{cfg.name}] " + " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
        if keeper.exhausted:
            break
    log.close()
    detector.load_state_dict(best_state)
    detector.eval()
    info = {"best_epoch": keeper.epoch, "monitor": cfg.train.monitor, "train_seconds": round(time.time() - t_start, 1),
            "epochs_run": epoch, "patience": cfg.train.patience,
            "pretrained": pretrained_report and {k: len(v) for k, v in pretrained_report.items()}}
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
