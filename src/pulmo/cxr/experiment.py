"""One chest X-ray experiment end to end (``pulmo train`` and ``benchmarks/cxr.py``): its data
split, training through Lightning, the selection and reported scores, and the run folder.

covid19_3class: train on ``train/`` minus an inner ``train.val_fraction`` validation split
(picks the epoch; near-duplicates stay on one side), score on ``val/`` after dropping its
near-duplicates of ``train/``. PneumoniaMNIST: official train / val (epoch) / test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pulmo.config import default_data_root, save_config
from pulmo.cxr.config import CxrConfig
from pulmo.cxr.data import ImageSet, load_covid3, prepare_set
from pulmo.cxr.train import TrainResult, predict_proba, train_cxr
from pulmo.engine.launch import Launch
from pulmo.metrics.classification import classification_report


def dataset_root(cfg: CxrConfig) -> Path:
    """``cfg.root``, or ``<data root>/cxr/<dataset>``."""
    return Path(cfg.root) if cfg.root else default_data_root() / "cxr" / cfg.dataset


def load_data(cfg: CxrConfig, seed: int, cache: dict[str, Any] | None = None) -> tuple[ImageSet, ImageSet, ImageSet, dict[str, Any]]:
    """``(train, selection, scored, report)`` sets for one config and seed (``cache``: decoded
    images kept across calls by the caller)."""
    root = dataset_root(cfg)
    if cfg.dataset == "pneumoniamnist":
        from pulmo.data.adapters.image_folder import read_medmnist_npz

        recs = read_medmnist_npz(root / "pneumoniamnist.npz", list(cfg.classes))
        parts = {s: prepare_set([r for r in recs if r.split == s], cfg.classes, cfg.image) for s in ("train", "val", "test")}
        return parts["train"], parts["val"], parts["test"], {"scored": "official test"}
    cache = cache if cache is not None else {}
    splits = load_covid3(root, cfg.classes, cfg.image, cfg.gates, cfg.train.val_fraction, seed,
                         cache=cache.setdefault("covid3", {}))
    report = {k: v for k, v in splits.report.items() if k != "duplicate_pairs"}
    report["scored"] = "val without near-duplicates of train"
    return splits.train.subset(splits.inner_train), splits.train.subset(splits.inner_val), splits.val, report


def scores(res: TrainResult, cfg: CxrConfig, sel: ImageSet, scored: ImageSet) -> dict[str, Any]:
    """Classification reports of the selection (inner validation) and scored sets, and the
    scored set's per-class probabilities ``(N, K)``."""
    labels = list(cfg.classes)
    probs = predict_proba(res.model, scored.x, cfg.image)
    sel_probs = predict_proba(res.model, sel.x, cfg.image)
    return {"scored": classification_report(scored.y.tolist(), probs.argmax(1).tolist(), labels),
            "selection": classification_report(sel.y.tolist(), sel_probs.argmax(1).tolist(), labels),
            "probabilities": probs}


def short_report(rep: dict[str, Any]) -> dict[str, Any]:
    """Accuracy, macro-F1, n and per-class F1 of a classification report (what a checkpoint stores)."""
    return {"accuracy": rep["accuracy"], "macro_f1": rep["macro_f1"], "n": rep["n"],
            **{f"f1_{k}": v for k, v in rep["f1"].items()}}


def run_cxr_experiment(cfg: CxrConfig, out_dir: str | Path, progress: bool = True,
                       launch: Launch | None = None) -> dict[str, Any]:
    """Train ``cfg`` (``launch``: devices, strategy and nodes), select on the inner validation
    split, score the reported set once; write ``config.yaml``, ``metrics.json`` (``val``: the
    selection split, ``test``: the reported set) and ``model.pt`` (fp16) under ``out_dir``.
    In a multi-process run only rank 0 writes; the others return ``{}``."""
    import torch.distributed as dist

    from pulmo.cxr.checkpoint import save_cxr_checkpoint

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    train, sel, scored, data_report = load_data(cfg, cfg.train.seed)
    res = train_cxr(cfg, train, sel, progress=progress, launch=launch)
    if dist.is_initialized() and dist.get_rank() != 0:
        return {}
    s = scores(res, cfg, sel, scored)
    metrics: dict[str, Any] = {"name": cfg.name, "seed": cfg.train.seed, "best_epoch": res.best_epoch,
                               "train_seconds": round(res.seconds, 1), "data": data_report,
                               "val": s["selection"], "test": s["scored"], "history": res.history}
    if res.ranks is not None:
        metrics["ranks"] = res.ranks
    save_cxr_checkpoint(out / "model.pt", res.model, cfg, {"val": short_report(s["selection"]),
                                                            "test": short_report(s["scored"]),
                                                            "protocol": data_report.get("scored", "")}, half=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


__all__ = ["dataset_root", "load_data", "run_cxr_experiment", "scores", "short_report"]
