"""Chest X-ray across sources: leave-one-source-out (LOSO), source probe, calibration, abstention.

    python benchmarks/cxr_sources.py features            # frozen Lite0 features, once per preprocessing
    python benchmarks/cxr_sources.py run --seeds 0 1 2   # every row x held-out source x seed
    python benchmarks/cxr_sources.py run --rows vbreathnet --seeds 0   # V-BreathNet trained end to end per fold
    python benchmarks/cxr_sources.py report [--bundle]   # results/cxr_sources.md|csv (+ the bundled model)
    python benchmarks/cxr_sources.py novelty             # does a held-out source look unfamiliar?

Data: ``adult_multisource`` (sources from ``manifest.csv``) pooled with ``covid19_3class``
(:mod:`pulmo.cxr.sources`: class mapping, patient groups). For each held-out source a head is
trained on the other sources' frozen EfficientNet-Lite0 (ImageNet) features; its epoch,
temperature and abstention threshold come from a patient-grouped 15 % inner validation split of
the training sources. The ``vbreathnet`` row trains the paper's whole network per fold instead,
as ``results/cxr.md`` trains it (``configs/experiments/vbreathnet/table4_vbreathnet.yaml``).
Features are cached outside the repository (``$PULMO_CXR_CACHE``, default
``/tmp/pulmo_cxr_sources``). One CPU thread.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_format import mean_std  # noqa: E402

from pulmo.config import default_data_root  # noqa: E402
from pulmo.cxr.config import ImageConfig  # noqa: E402
from pulmo.cxr.sources import OUTPUT_CLASSES, PooledImage, held_out_sources, load_pooled  # noqa: E402

CACHE = Path(os.environ.get("PULMO_CXR_CACHE", "/tmp/pulmo_cxr_sources"))
RESULTS = ROOT / "results"
VIEWS = 4
#: preprocessing settings whose features are cached (128 px, ImageNet normalisation, 3 channels)
PREPROCESS: dict[str, dict[str, Any]] = {
    "eq": {"contrast": "equalize", "lung_crop": False},
    "eq_crop": {"contrast": "equalize", "lung_crop": True},
    "clahe_crop": {"contrast": "clahe", "lung_crop": True},
    # explored after the bundled model was chosen (not a candidate under the rule): 224 px input
    "eq_crop_224": {"contrast": "equalize", "lung_crop": True, "size_px": 224},
}


def image_config(prep: str) -> ImageConfig:
    return ImageConfig(**{"size_px": 128, "channels": 3, "normalize": "imagenet", **PREPROCESS[prep]})


def pooled() -> list[PooledImage]:
    return load_pooled(default_data_root() / "cxr")


def backbone() -> torch.nn.Module:
    from pulmo.models import create_model

    return create_model("transfer", backbone="efficientnet_lite0", pretrained="package", num_classes=3, in_chans=3)


def features(preps: list[str]) -> None:
    """Cache ``<prep>.npy``: ``(1 + VIEWS, N, 1280, 3, 3)`` float16, image order of :func:`pooled`."""
    from pulmo.cxr.features import view_features
    from pulmo.data.image_io import read_image

    images = pooled()
    model = backbone()
    CACHE.mkdir(parents=True, exist_ok=True)
    for prep in preps:
        out = CACHE / f"{prep}.npy"
        if out.exists():
            continue
        start = time.time()
        f = view_features(model, lambda i: read_image(images[i].path), len(images), image_config(prep), VIEWS,
                          progress=lambda k: print(f"  {prep}: {k}/{len(images)} {time.time() - start:.0f}s", flush=True))
        np.save(out, f)
        print(f"{prep}: {f.shape} in {time.time() - start:.0f}s", flush=True)


RUNS = ROOT / "runs" / "cxr_sources"
#: rows: preprocessing, head recipe. ``bundled_current`` scores the bundled model as it is (trained on
#: covid19_3class only, so its covid19_3class fold is not held out); ``logreg`` is the frozen-ImageNet
#: + logistic-regression transfer baseline (not a bundling candidate: not in the checkpoint's head format).
ROWS: dict[str, dict[str, Any]] = {
    "bundled_current": {"prep": "eq"},  # the model bundled before this study (PREVIOUS_REV)
    "logreg": {"prep": "eq", "logreg": True},
    "pooled": {"prep": "eq", "balance": "class", "augment": False},
    "srcbal": {"prep": "eq", "balance": "source", "augment": False},
    "srcbal_harmonize": {"prep": "eq", "balance": "source", "augment": True},
    "crop_srcbal_harmonize": {"prep": "eq_crop", "balance": "source", "augment": True},
    "clahe_crop_srcbal_harmonize": {"prep": "clahe_crop", "balance": "source", "augment": True},
    "crop_srcbal_harmonize_adv": {"prep": "eq_crop", "balance": "source", "augment": True, "adversary": 0.3},
    # added after the rule was fixed (before any of their results): a head on globally pooled features
    # (location-blind); the rule does not count global pooling as a control
    "gap_crop_srcbal_harmonize": {"prep": "eq_crop", "balance": "source", "augment": True, "global_pool": True},
    "gap_crop_srcbal_harmonize_adv": {"prep": "eq_crop", "balance": "source", "augment": True, "adversary": 0.3,
                                      "global_pool": True},
    # explored after the bundled model was chosen: the chosen recipe on 224-px features (not a bundling candidate)
    "gap_crop224_srcbal_harmonize": {"prep": "eq_crop_224", "balance": "source", "augment": True, "global_pool": True,
                                     "explored_after_choice": True},
    # inference-time averaging on the bundled recipe (configs/experiments/cxr-sources/inference_rule.md, fixed before
    # any of them was scored): over the plain image and its harmonising views, over 3 heads, or both
    **{f"gap_crop_srcbal_harmonize{suffix}": {"prep": "eq_crop", "balance": "source", "augment": True,
                                             "global_pool": True, "explored_after_choice": True, **extra}
       for suffix, extra in (("_tta", {"tta": True}), ("_ens3", {"members": 3}),
                             ("_ens3_tta", {"members": 3, "tta": True}))},
    # the bundled recipe with a lung-segmentation crop (configs/experiments/cxr-sources/segmentation_rule.md, fixed before
    # any of them was scored; features from benchmarks/cxr_lungseg.py): the box around the segmented lungs, and the same
    # with everything outside the lungs blanked
    **{f"gap_{prep[3:]}_srcbal_harmonize": {"prep": prep, "balance": "source", "augment": True, "global_pool": True,
                                           "segmented": True, "explored_after_choice": True}
       for prep in ("eq_seg", "eq_segmask")},
    # added after the choice: the paper's V-BreathNet trained end to end per fold, with its own preprocessing,
    # class balancing and augmentation (results/cxr.md's table4_vbreathnet row)
    "vbreathnet": {"prep": "minmax 96 px", "end_to_end": "vbreathnet/table4_vbreathnet.yaml", "explored_after_choice": True},
    # added after the choice: the paper's Table 3 transfer baselines as results/cxr.md trains them (frozen backbone at
    # random initialisation, no ImageNet weights installable offline, + the paper's head)
    **{name: {"prep": "minmax 128 px", "end_to_end": f"vbreathnet/table3_{name}.yaml", "explored_after_choice": True}
       for name in ("densenet121", "mobilenet_v2", "vgg16")},
}
#: sources whose films taught the lung segmenter: their LOSO folds read features cropped by a segmenter trained
#: without them (``<prep>-no-<source>.npy``, benchmarks/cxr_lungseg.py)
MASKED_SOURCES = ("hannover", "ieee8023")
COVERAGE = 0.8
K = len(OUTPUT_CLASSES)


def n_controls(row: str) -> int:
    """Shortcut controls of a row (selection rule, step 3)."""
    r = ROWS[row]
    return (r.get("balance") == "source") + bool(r.get("augment")) + ("crop" in r["prep"]) + (r.get("adversary", 0) > 0)


def load_features(prep: str) -> np.ndarray:
    return np.load(CACHE / f"{prep}.npy", mmap_mode="r")


def end_to_end_config(row: str, seed: int) -> Any:
    from pulmo.cxr.config import load_cxr_config

    return load_cxr_config(ROOT / "configs" / "experiments" / ROWS[row]["end_to_end"],
                           {"classes": list(OUTPUT_CLASSES), "train": {"seed": seed}})


def row_inputs(row: str, images: list[PooledImage]) -> Any:
    """What ``row`` trains on: cached backbone features, or (an end-to-end row) every pooled image
    prepared as its config says, ``(N, 1, S, S)`` in [0, 1]."""
    if "end_to_end" not in ROWS[row]:
        return load_features(ROWS[row]["prep"])
    from pulmo.cxr.preprocess import prepare_gray
    from pulmo.data.image_io import read_image

    image = end_to_end_config(row, 0).image
    return torch.from_numpy(np.stack([prepare_gray(read_image(im.path), image) for im in images]))[:, None]


def fit_end_to_end(row: str, x: torch.Tensor, y: np.ndarray, tr: np.ndarray, va: np.ndarray,
                   seed: int) -> tuple[Any, int]:
    """Train ``row``'s whole network on images ``tr`` of ``x`` through :func:`pulmo.cxr.train.train_cxr`
    (epoch kept by macro-F1 on ``va``). Returns ``(logits(idx), best_epoch)``."""
    from pulmo.cxr.data import ImageSet
    from pulmo.cxr.train import model_input, train_cxr

    cfg = end_to_end_config(row, seed)
    yt = torch.as_tensor(y)
    res = train_cxr(cfg, ImageSet([], x[tr], yt[tr]), ImageSet([], x[va], yt[va]))

    @torch.no_grad()
    def logits(idx: np.ndarray) -> np.ndarray:
        return torch.cat([res.model(model_input(x[idx[i:i + 64]], cfg.image)) for i in range(0, len(idx), 64)]).numpy()

    return logits, res.best_epoch


#: the model bundled before this study: the asset as committed at this revision (the selection rule's commit)
PREVIOUS_REV = "b4c838d"
ASSET = "src/pulmo/assets/cxr_efficientnet_lite0_head.pt"


def bundled_head() -> torch.nn.Module:
    """The head of the model bundled before this study (``git show PREVIOUS_REV:ASSET``, cached)."""
    import subprocess

    from pulmo.cxr.heads import make_head

    path = CACHE / f"previous_bundled_{PREVIOUS_REV}.pt"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        path.write_bytes(subprocess.run(["git", "-C", str(ROOT), "show", f"{PREVIOUS_REV}:{ASSET}"], check=True,
                                        capture_output=True).stdout)
    bundle = torch.load(path, weights_only=False)
    head = make_head()
    head.load_state_dict({k[5:]: v.float() for k, v in bundle["state_dict"].items()})
    return head.eval()


def head_spec(row: str) -> Any:
    """The :class:`pulmo.cxr.heads.HeadSpec` of a head row."""
    from pulmo.cxr.heads import HeadSpec

    spec = ROWS[row]
    return HeadSpec(balance=spec["balance"], augment=spec["augment"], adversary=spec.get("adversary", 0.0),
                    global_pool=spec.get("global_pool", False))


def fit_one(row: str, feats: np.ndarray | torch.Tensor, y: np.ndarray, src: list[str], groups: list[str],
            train: np.ndarray, seed: int) -> tuple[Any, np.ndarray, int]:
    """Fit ``row`` on images ``train`` (an inner 15 % patient-grouped split of them validates);
    ``feats`` is what :func:`row_inputs` gives for the row. Returns ``(predict(idx) -> logits,
    val_idx, best_epoch)``."""
    from sklearn.linear_model import LogisticRegression

    from pulmo.cxr.heads import head_logits, train_head
    from pulmo.cxr.protocol import grouped_split

    spec = ROWS[row]
    strata = [f"{y[i]}|{src[i]}" for i in train]
    tr, va = grouped_split(strata, [groups[i] for i in train], 0.15, seed)
    tr, va = train[tr], train[va]
    if row == "bundled_current":
        head = bundled_head()
        return (lambda idx: head_logits(head, np.asarray(feats[0, idx]))), va, 0
    if "end_to_end" in spec:
        predict, epoch = fit_end_to_end(row, feats, y, tr, va, seed)
        return predict, va, epoch
    if spec.get("logreg"):
        pooled = np.asarray(feats[0], dtype=np.float32).mean(axis=(2, 3))
        clf = LogisticRegression(C=0.1, max_iter=3000, class_weight="balanced").fit(pooled[tr], y[tr])
        return (lambda idx: clf.decision_function(pooled[idx])), va, 0
    hs = head_spec(row)
    fits = [train_head(np.asarray(feats[:, tr]), y[tr], [src[i] for i in tr], np.asarray(feats[0, va]), y[va], hs,
                       seed + 100 * m) for m in range(spec.get("members", 1))]
    if len(fits) == 1 and not spec.get("tta"):
        return (lambda idx: head_logits(fits[0].head, np.asarray(feats[0, idx]))), va, fits[0].best_epoch
    views = range(feats.shape[0]) if spec.get("tta") else [0]
    return (lambda idx: averaged_logits([f.head for f in fits], [np.asarray(feats[v, idx]) for v in views])), va, \
        fits[0].best_epoch


def averaged_logits(heads: list[torch.nn.Module], views: list[np.ndarray]) -> np.ndarray:
    """Log of the mean softmax of every head on every view ``(N, d, 3, 3)`` of the same images: ``(N, K)``."""
    from scipy.special import softmax

    from pulmo.cxr.heads import head_logits

    p = np.mean([softmax(head_logits(h, v), axis=1) for h in heads for v in views], axis=0)
    return np.log(np.clip(p, 1e-12, None))


def run(rows: list[str], seeds: list[int], force: bool) -> None:
    """One JSON per row and seed: held-out logits of every LOSO fold, with the fold's temperature and threshold."""
    from pulmo.cxr.calibration import calibrated_proba, coverage_threshold, fit_temperature

    images = pooled()
    y = np.array([OUTPUT_CLASSES.index(im.label) for im in images])
    src = [im.source for im in images]
    groups = [im.group for im in images]
    folds = held_out_sources(images)
    RUNS.mkdir(parents=True, exist_ok=True)
    for row in rows:
        feats = row_inputs(row, images)
        for seed in seeds:
            out = RUNS / f"{row}_seed{seed}.json"
            if out.exists() and not force:
                continue
            start = time.time()
            result: dict[str, Any] = {"row": row, "seed": seed, "folds": {}}
            for held in folds:
                train = np.array([i for i, s in enumerate(src) if s != held])
                test = np.array([i for i, s in enumerate(src) if s == held])
                fold_feats = (load_features(f"{ROWS[row]['prep']}-no-{held}")
                              if ROWS[row].get("segmented") and held in MASKED_SOURCES else feats)
                predict, va, epoch = fit_one(row, fold_feats, y, src, groups, train, seed)
                val_logits = predict(va)
                t = fit_temperature(val_logits, y[va])
                thr = coverage_threshold(calibrated_proba(val_logits, t), COVERAGE)
                result["folds"][held] = {"test": test.tolist(), "logits": predict(test).tolist(), "temperature": t,
                                         "threshold": thr, "best_epoch": epoch, "val": va.tolist(),
                                         "val_logits": val_logits.tolist()}
            result["seconds"] = time.time() - start
            out.write_text(json.dumps(result))
            print(f"{row} seed {seed}: {result['seconds']:.0f}s", flush=True)


def seed_scores(res: dict[str, Any], y: np.ndarray, src: list[str]) -> dict[str, Any]:
    """Every figure of one row and seed, from its LOSO folds."""
    from sklearn.metrics import f1_score

    from pulmo.cxr.calibration import calibrated_proba, expected_calibration_error
    from pulmo.cxr.protocol import source_scores

    idx, logits, temps, thrs, adult = [], [], [], [], []
    out: dict[str, Any] = {"sources": {}}
    val_before, val_after = [], []
    for held, f in res["folds"].items():
        lg = np.array(f["logits"])
        test = np.array(f["test"])
        out["sources"][held] = source_scores(y[test], lg.argmax(1), K)
        idx.append(test)
        logits.append(lg)
        temps.append(np.full(len(test), f["temperature"]))
        thrs.append(np.full(len(test), f["threshold"]))
        adult.append(np.full(len(test), held != "covid19_3class"))
        vl, vy = np.array(f["val_logits"]), y[np.array(f["val"])]
        val_before.append(expected_calibration_error(calibrated_proba(vl), vy))
        val_after.append(expected_calibration_error(calibrated_proba(vl, f["temperature"]), vy))
    idx_a, lg_a = np.concatenate(idx), np.concatenate(logits)
    t_a, thr_a, ad = np.concatenate(temps), np.concatenate(thrs), np.concatenate(adult)
    yt = y[idx_a]
    pred = lg_a.argmax(1)
    p_after = calibrated_proba(lg_a / t_a[:, None])
    out["pooled_macro_f1"] = float(f1_score(yt, pred, average="macro", labels=list(range(K)), zero_division=0))
    out["pooled_f1"] = [float(v) for v in f1_score(yt, pred, average=None, labels=list(range(K)), zero_division=0)]
    out["pooled_accuracy"] = float((yt == pred).mean())
    out["adult_macro_f1"] = float(f1_score(yt[ad], pred[ad], average="macro", labels=list(range(K)), zero_division=0))
    out["worst_source_macro_f1"] = min(v["macro_f1"] for v in out["sources"].values())
    out["ece_before"] = expected_calibration_error(calibrated_proba(lg_a), yt)
    out["ece_after"] = expected_calibration_error(p_after, yt)
    out["val_ece_before"], out["val_ece_after"] = float(np.mean(val_before)), float(np.mean(val_after))
    keep = p_after.max(1) >= thr_a
    out["abstention_rate"] = float(1 - keep.mean())
    out["selective_macro_f1"] = float(f1_score(yt[keep], pred[keep], average="macro", labels=list(range(K)),
                                               zero_division=0)) if keep.any() else float("nan")
    out["adult_abstention_rate"] = float(1 - keep[ad].mean())
    out["adult_selective_macro_f1"] = float(f1_score(yt[ad & keep], pred[ad & keep], average="macro",
                                                     labels=list(range(K)), zero_division=0))
    return out


def confusion_rows(row: str, y: np.ndarray, src: list[str]) -> list[str]:
    """Markdown rows: for each held-out source and true class, the predicted-class counts summed over seeds."""
    counts: dict[tuple[str, int], np.ndarray] = {}
    for fp in sorted(RUNS.glob(f"{row}_seed*.json")):
        for held, f in json.loads(fp.read_text())["folds"].items():
            pred = np.array(f["logits"]).argmax(1)
            for t, p_ in zip(y[np.array(f["test"])], pred):
                counts.setdefault((held, int(t)), np.zeros(K, dtype=int))[p_] += 1
    return [f"| {held} | {OUTPUT_CLASSES[t]} | " + " | ".join(str(v) for v in c) + " |"
            for (held, t), c in sorted(counts.items())]


def probes(images: list[PooledImage]) -> list[list[str]]:
    """Source probe on the backbone's (average-pooled, plain-view) features, per preprocessing."""
    from pulmo.cxr.protocol import source_probe

    src = np.array([im.source for im in images])
    groups = np.array([im.group for im in images])
    lab = np.array([im.label for im in images])
    rows = []
    seg_preps = [ROWS[r]["prep"] for r in ROWS if ROWS[r].get("segmented")]
    for prep in [*PREPROCESS, *(p for p in seg_preps if (CACHE / f"{p}.npy").exists())]:
        f = np.asarray(load_features(prep)[0], dtype=np.float32).mean(axis=(2, 3))
        keep = src != "figure1"
        all_src = source_probe(f[keep], src[keep], groups[keep])
        cov = keep & (lab == "Covid")
        covid = source_probe(f[cov], src[cov], groups[cov])
        nor = keep & (lab == "Normal")
        normal = source_probe(f[nor], src[nor], groups[nor])
        rows.append([prep, f"{all_src:.3f}", f"{covid:.3f}", f"{normal:.3f}"])
    return rows


def hidden_probe(row: str, images: list[PooledImage], seed: int = 0) -> tuple[float, float]:
    """Source probe on the hidden layer of ``row``'s head trained on every source (seed 0):
    ``(all sources, within Covid)`` balanced accuracy."""
    from pulmo.cxr.heads import hidden_activations, make_head
    from pulmo.cxr.protocol import source_probe

    src = np.array([im.source for im in images])
    groups = np.array([im.group for im in images])
    lab = np.array([im.label for im in images])
    y = np.array([OUTPUT_CLASSES.index(v) for v in lab])
    feats = load_features(ROWS[row]["prep"])
    if row == "bundled_current":
        head = bundled_head()
    else:
        head = make_head()
        head.load_state_dict(train_all(row, feats, y, list(src), list(groups), seed)[0])
    h = hidden_activations(head, np.asarray(feats[0]))
    keep = src != "figure1"
    cov = keep & (lab == "Covid")
    return source_probe(h[keep], src[keep], groups[keep]), source_probe(h[cov], src[cov], groups[cov])


def train_all(row: str, feats: np.ndarray, y: np.ndarray, src: list[str], groups: list[str],
              seed: int) -> tuple[dict[str, torch.Tensor], float, float, int]:
    """``row``'s head trained on every source: ``(head state, temperature, threshold, best epoch)``."""
    from pulmo.cxr.calibration import calibrated_proba, coverage_threshold, fit_temperature
    from pulmo.cxr.heads import head_logits, train_head
    from pulmo.cxr.protocol import grouped_split

    allidx = np.arange(len(y))
    tr, va = grouped_split([f"{y[i]}|{src[i]}" for i in allidx], groups, 0.15, seed)
    hs = head_spec(row)
    res = train_head(np.asarray(feats[:, tr]), y[tr], [src[i] for i in tr], np.asarray(feats[0, va]), y[va], hs, seed)
    vl = head_logits(res.head, np.asarray(feats[0, va]))
    t = fit_temperature(vl, y[va])
    return res.head.state_dict(), t, coverage_threshold(calibrated_proba(vl, t), COVERAGE), res.best_epoch


def gate_rates(images: list[PooledImage]) -> list[list[str]]:
    """Acceptance of the bundled chest X-ray gate on every pooled image, by source."""
    from pulmo.cxr.gate import bundled_gate
    from pulmo.data.image_io import read_image

    gate = bundled_gate()
    by: dict[str, list[bool]] = {}
    for im in images:
        by.setdefault(im.source, []).append(gate.score(read_image(im.path)).accepted if gate else True)
    return [[s, str(len(v)), f"{np.mean(v):.3f}"] for s, v in by.items()]


def choose(summary: dict[str, dict[str, list[float]]]) -> str:
    """configs/experiments/cxr-sources/selection_rule.md, steps 2-3 (candidates: trained heads)."""
    cands = [r for r in summary if r not in ("bundled_current", "logreg") and not ROWS[r].get("explored_after_choice")]
    best = max(np.mean(summary[r]["pooled_macro_f1"]) for r in cands)
    near = [r for r in cands if np.mean(summary[r]["pooled_macro_f1"]) >= best - 0.02]
    return max(near, key=lambda r: (n_controls(r), np.mean(summary[r]["worst_source_macro_f1"]), -list(ROWS).index(r)))


def report(bundle: bool) -> None:
    images = pooled()
    y = np.array([OUTPUT_CLASSES.index(im.label) for im in images])
    src = [im.source for im in images]
    folds = held_out_sources(images)
    summary: dict[str, dict[str, list[float]]] = {}
    per_source: dict[str, dict[str, list[dict[str, Any]]]] = {}
    csv_rows = []
    for row in ROWS:
        files = sorted(RUNS.glob(f"{row}_seed*.json"))
        if not files:
            continue
        for fp in files:
            res = json.loads(fp.read_text())
            sc = seed_scores(res, y, src)
            d = summary.setdefault(row, {})
            for k, v in sc.items():
                if isinstance(v, float):
                    d.setdefault(k, []).append(v)
            for k in range(K):
                d.setdefault(f"pooled_f1_{OUTPUT_CLASSES[k]}", []).append(sc["pooled_f1"][k])
            for held, v in sc["sources"].items():
                per_source.setdefault(row, {}).setdefault(held, []).append(v)
                csv_rows.append({"row": row, "seed": res["seed"], "held_out": held, "n": v["n"],
                                 "accuracy": round(v["accuracy"], 4), "macro_f1": round(v["macro_f1"], 4),
                                 **{f"f1_{OUTPUT_CLASSES[k]}": "" if v["f1"][k] is None else round(v["f1"][k], 4)
                                    for k in range(K)}})
            csv_rows.append({"row": row, "seed": res["seed"], "held_out": "pooled", "n": len(y),
                             "accuracy": round(sc["pooled_accuracy"], 4), "macro_f1": round(sc["pooled_macro_f1"], 4),
                             **{f"f1_{OUTPUT_CLASSES[k]}": round(sc["pooled_f1"][k], 4) for k in range(K)},
                             "ece_before": round(sc["ece_before"], 4), "ece_after": round(sc["ece_after"], 4),
                             "abstention_rate": round(sc["abstention_rate"], 4),
                             "selective_macro_f1": round(sc["selective_macro_f1"], 4)})
    chosen = choose(summary)
    md = ["# Chest X-ray across sources: leave-one-source-out (LOSO)", "",
          "Generated by `python benchmarks/cxr_sources.py report" + (" --bundle" if bundle else "") + "` from "
          "`python benchmarks/cxr_sources.py features` and `python benchmarks/cxr_sources.py run --seeds 0 1 2` "
          "(PULMO_DATA=../shared/data; one CPU thread). Fractions, mean ± sample std over seeds 0, 1, 2 unless a row "
          "says fewer.", "",
          "Pooled set: `adult_multisource` + `covid19_3class` (1,165 images; `train/Covid/062.jpeg` left out, a "
          "label error). Output classes: Covid; Normal; **Viral Pneumonia = pneumonia, not COVID-19** (NIH "
          "Pneumonia, ieee8023 bacterial/fungal, covid19_3class paediatric viral). Held-out sources: "
          + ", ".join(f"{s} (n={sum(1 for x in src if x == s)})" for s in folds) + "; figure1 (5 Covid) always trains. "
          "For each held-out source a head is trained on the frozen EfficientNet-Lite0 (ImageNet, 128 px) features "
          "of the other sources; its epoch, temperature and abstention threshold (calibrated confidence keeping "
          f"{COVERAGE:.0%} of validation) come from a patient-grouped 15 % inner split of the training sources. "
          "Pooled = every image predicted by the fold that held its source out. A one-class source's macro-F1 is its "
          "class's F1 (precision is 1 there, so it is 2R/(1+R) of recall R).", "",
          "## Rows (pooled over held-out sources)", "",
          "| row | preprocessing | controls | pooled macro-F1 | adult-sources macro-F1 | F1 Covid / Normal / Pneumonia (not COVID) | worst-source macro-F1 | ECE before → after temperature (held-out sources) | ECE before → after (inner validation) | abstention | selective macro-F1 | adult abstention / selective macro-F1 |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row, d in summary.items():
        ctrl = "; ".join(k for k, ok in (("source-balanced", ROWS[row].get("balance") == "source"),
                                         ("harmonising views", ROWS[row].get("augment")),
                                         ("lung crop", "crop" in ROWS[row]["prep"]),
                                         ("lung segmentation crop", "seg" in ROWS[row]["prep"]),
                                         ("outside the lungs blanked", "segmask" in ROWS[row]["prep"]),
                                         ("source adversary", ROWS[row].get("adversary", 0) > 0),
                                         ("global pooling", ROWS[row].get("global_pool", False))) if ok) or "-"
        n_seeds = len(d["pooled_macro_f1"])
        seeds_note = f" (seed{'s' if n_seeds > 1 else ''} {', '.join(map(str, range(n_seeds)))} only)" if n_seeds < 3 else ""
        md.append(f"| {row}{' (chosen)' if row == chosen else ''}{seeds_note} | "
                  f"{ROWS[row]['prep']} | {ctrl} | "
                  f"{mean_std(d['pooled_macro_f1'])} | {mean_std(d['adult_macro_f1'])} | "
                  + " / ".join(mean_std(d[f'pooled_f1_{c}']) for c in OUTPUT_CLASSES)
                  + f" | {mean_std(d['worst_source_macro_f1'])} | {mean_std(d['ece_before'])} → {mean_std(d['ece_after'])} | "
                  f"{mean_std(d['val_ece_before'])} → {mean_std(d['val_ece_after'])} | "
                  f"{mean_std(d['abstention_rate'])} | {mean_std(d['selective_macro_f1'])} | "
                  f"{mean_std(d['adult_abstention_rate'])} / {mean_std(d['adult_selective_macro_f1'])} |")
    md += ["", "`bundled_current`: the model bundled before this study (trained on covid19_3class only): its "
           "covid19_3class row is not held out (it trained on that source's train split). `logreg`: logistic "
           "regression on average-pooled features (a transfer baseline, not a bundling candidate). "
           "`vbreathnet`: the paper's V-BreathNet trained end to end per fold from scratch as `results/cxr.md` "
           "trains it (`configs/experiments/vbreathnet/table4_vbreathnet.yaml`: 96 px gray, min-max contrast, "
           "classes balanced by augmented copies, RMSprop, 10 epochs, the epoch by inner-validation macro-F1), with "
           "none of the shortcut controls; not a bundling candidate. `densenet121`, `mobilenet_v2`, `vgg16`: the "
           "paper's Table 3 transfer baselines as `results/cxr.md` trains them (`configs/experiments/vbreathnet/"
           "table3_*.yaml`: the backbone frozen at random initialisation, since no ImageNet weights install offline, "
           "and a new head; 128 px, min-max contrast), none of the shortcut controls. `..._tta`, `..._ens3`, "
           "`..._ens3_tta`: the bundled recipe's predictions averaged over the plain image and its 4 harmonising "
           "views, over 3 heads, or both (`configs/experiments/cxr-sources/inference_rule.md`). `gap_seg_...`, "
           "`gap_segmask_...`: the bundled recipe with the heuristic box replaced by a lung-segmentation crop "
           "(`benchmarks/cxr_lungseg.py`, `results/cxr_lungseg.md`; the hannover and ieee8023 folds use a "
           "segmenter trained without their masks), or that crop with everything outside the lungs blanked "
           "(`configs/experiments/cxr-sources/segmentation_rule.md`). Every row added after the bundled model was "
           "chosen is marked as not a candidate under the first rule; the later rules' decisions are at the end.", "",
           "## Per held-out source (macro-F1 over the classes present; per-class F1)", "",
           "| row | " + " | ".join(folds) + " |", "|---|" + "---|" * len(folds)]
    for row, srcs in per_source.items():
        cells = []
        for held in folds:
            v = srcs.get(held, [])
            f1s = " / ".join(f"{OUTPUT_CLASSES[k][:5]} {mean_std([x['f1'][k] for x in v])}" for k in range(K)
                             if v and v[0]["f1"][k] is not None)
            cells.append(f"{mean_std([x['macro_f1'] for x in v])} ({f1s})")
        md.append(f"| {row} | " + " | ".join(cells) + " |")
    md += ["", f"## Confusion of the chosen row ({chosen}), held-out predictions summed over seeds", "",
           "Rows: true class by held-out source; columns: predicted " + " / ".join(OUTPUT_CLASSES) + ".", "",
           "| held-out source | true class | " + " | ".join(OUTPUT_CLASSES) + " |", "|---|---|" + "---|" * K]
    md += confusion_rows(chosen, y, src)
    md += ["", "## Source probe", "", "Balanced accuracy of a logistic regression (C = 0.1, standardised) predicting "
           "the source, 5-fold patient-grouped, out of fold; figure1 left out. Chance: 1/5 over all sources, 1/4 "
           "within Covid (hannover, cxnet, ieee8023, covid19_3class), 1/2 within Normal (nih, covid19_3class).", "",
           "| features | all sources | within Covid | within Normal |", "|---|---|---|---|"]
    md += [f"| backbone, {r[0]} | {r[1]} | {r[2]} | {r[3]} |" for r in probes(images)]
    for row in summary:
        if row == "logreg" or "end_to_end" in ROWS[row] or ROWS[row].get("tta") or ROWS[row].get("members"):
            continue
        a, c = hidden_probe(row, images)
        how = "as bundled before this study" if row == "bundled_current" else "trained on every source, seed 0"
        md.append(f"| head hidden layer, {row} ({how}) | {a:.3f} | {c:.3f} | |")
    md += ["", "## Chest X-ray gate on the pooled set", "", "The bundled gate (`src/pulmo/cxr/gate.py`, rates on "
           "SIXray and other negatives in `results/cxr_gate.md`), acceptance by source:", "",
           "| source | n | accepted |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in gate_rates(images)]
    md += ["", "## Selection", "", f"Rule (`configs/experiments/cxr-sources/selection_rule.md`, committed before any "
           f"LOSO result): chosen row **{chosen}**."]
    new, old = np.mean(summary[chosen]["adult_macro_f1"]), np.mean(summary["bundled_current"]["adult_macro_f1"])
    md.append(f"Adult held-out sources, pooled macro-F1: {chosen} {new:.3f} vs the previous bundled model {old:.3f} "
              "(rule step 4).")
    md += bundle_model(chosen, summary, images) if bundle else bundled_lines()
    md += later_decisions(summary)
    (RESULTS / "cxr_sources.md").write_text("\n".join(md) + "\n")
    keys = sorted({k for r in csv_rows for k in r}, key=lambda k: list(csv_rows[-1]).index(k) if k in csv_rows[-1] else 99)
    with open(RESULTS / "cxr_sources.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(csv_rows)
    print("\n".join(md))


#: rules fixed after the bundled model was chosen: file -> (candidate rows, seeds a row must win of 3, the guard
#: figure and whether higher is better there); each row is compared with the bundled recipe, seed by seed
BASE_RECIPE = "gap_crop_srcbal_harmonize"
LATER_RULES: dict[str, tuple[tuple[str, ...], int, str, bool]] = {
    "inference_rule.md": (("gap_crop_srcbal_harmonize_tta", "gap_crop_srcbal_harmonize_ens3",
                           "gap_crop_srcbal_harmonize_ens3_tta"), 3, "ece_after", False),
    "segmentation_rule.md": (("gap_seg_srcbal_harmonize", "gap_segmask_srcbal_harmonize"), 2, "adult_macro_f1", True),
}


def later_decisions(summary: dict[str, dict[str, list[float]]]) -> list[str]:
    """Markdown: what each of :data:`LATER_RULES` decides (a row qualifies with a mean pooled LOSO
    macro-F1 gain of at least 0.02 over the bundled recipe, a win on enough paired seeds and its
    guard figure no worse)."""
    base = summary[BASE_RECIPE]
    md = []
    for rule, (rows, min_wins, guard, higher_better) in LATER_RULES.items():
        present = [r for r in rows if r in summary and len(summary[r]["pooled_macro_f1"]) == len(base["pooled_macro_f1"])]
        if not present:
            continue
        md += ["", f"## Decision of `configs/experiments/cxr-sources/{rule}`", "",
               f"Against {BASE_RECIPE} (the bundled recipe), paired by seed: a row qualifies with a mean gain "
               f"of at least 0.02, a win on at least {min_wins} of 3 seeds and a mean {guard} "
               f"{'not lower' if higher_better else 'not higher'}.", "",
               "| row | pooled macro-F1 gain per seed | mean gain | seeds won | " + guard + " (row vs bundled recipe) | qualifies |",
               "|---|---|---|---|---|---|"]
        gains = {}
        for r in present:
            d = np.array(summary[r]["pooled_macro_f1"]) - np.array(base["pooled_macro_f1"])
            g_row, g_base = np.mean(summary[r][guard]), np.mean(base[guard])
            ok = d.mean() >= 0.02 and (d > 0).sum() >= min_wins and (g_row >= g_base if higher_better else g_row <= g_base)
            if ok:
                gains[r] = d.mean()
            md.append(f"| {r} | {' / '.join(f'{v:+.3f}' for v in d)} | {d.mean():+.3f} | {(d > 0).sum()} | "
                      f"{g_row:.3f} vs {g_base:.3f} | {'yes' if ok else 'no'} |")
        md += ["", f"Chosen: **{max(gains, key=gains.get)}**." if gains else
               "No row qualifies: the bundled model stays as it is."]
    return md


def bundled_lines() -> list[str]:
    """What the bundled checkpoint says about itself (a report run without ``--bundle``)."""
    from pulmo.inference.bundled import default_checkpoint

    path = default_checkpoint("cxr")
    meta = torch.load(path, weights_only=False)
    cal = meta["metrics"].get("calibration", {})
    return [f"Bundled now (unchanged by this run): `{path.relative_to(ROOT)}`, {meta['name']}, temperature "
            f"{cal.get('temperature', 1.0):.3f}, abstention below calibrated confidence {cal.get('threshold', 0.0):.3f}."]


def bundle_model(chosen: str, summary: dict[str, dict[str, list[float]]], images: list[PooledImage]) -> list[str]:
    """Rule step 4: retrain ``chosen`` on every source and bundle it if it beats the current model."""
    from pulmo.cxr.checkpoint import save_cxr_checkpoint
    from pulmo.cxr.config import CxrConfig, CxrTrainConfig
    from pulmo.inference.bundled import default_checkpoint
    from pulmo.config import NamedConfig

    new, old = np.mean(summary[chosen]["adult_macro_f1"]), np.mean(summary["bundled_current"]["adult_macro_f1"])
    lines: list[str] = []
    if new <= old:
        return ["The previous model stays bundled (rule step 4)."]
    y = np.array([OUTPUT_CLASSES.index(im.label) for im in images])
    state, t, thr, epoch = train_all(chosen, load_features(ROWS[chosen]["prep"]), y, [im.source for im in images],
                                     [im.group for im in images], 0)
    cfg = CxrConfig(name=f"lite0_imagenet_{chosen}", description="EfficientNet-Lite0 (ImageNet, frozen) + head on "
                    "pooled adult_multisource + covid19_3class; " + chosen, dataset="pooled",
                    classes=list(OUTPUT_CLASSES), image=image_config(ROWS[chosen]["prep"]),
                    model=NamedConfig("transfer", {"backbone": "efficientnet_lite0", "pretrained": "package"}),
                    train=CxrTrainConfig(seed=0, epochs=15, optimizer="adam", balance="sampler"))
    model = backbone()
    model.head.load_state_dict(state)
    d = summary[chosen]
    metrics = {"protocol": "leave-one-source-out over adult_multisource sources + covid19_3class (benchmarks/cxr_sources.py)",
               "loso": {k: [round(float(np.mean(d[k])), 4), round(float(np.std(d[k], ddof=1)), 4)]
                        for k in ("pooled_macro_f1", "adult_macro_f1", "worst_source_macro_f1", "abstention_rate",
                                  "selective_macro_f1", "ece_before", "ece_after")},
               "calibration": {"temperature": t, "threshold": thr, "coverage": COVERAGE},
               # what `pulmo models` shows: the recipe's pooled LOSO figures (cross-validation over sources)
               "val": {"accuracy": round(float(np.mean(d["pooled_accuracy"])), 4),
                       "macro_f1": round(float(np.mean(d["pooled_macro_f1"])), 4), "n": len(images),
                       "protocol": "leave-one-source-out, pooled over held-out sources, mean of 3 seeds"},
               "output_classes": {"Viral Pneumonia": "pneumonia, not COVID-19 (viral or bacterial)"},
               "best_epoch": epoch}
    path = save_cxr_checkpoint(default_checkpoint("cxr"), model.eval(), cfg, metrics, half=True)
    return lines + [f"Bundled: `{path.relative_to(ROOT)}` ({path.stat().st_size / 1e6:.2f} MB), {chosen} trained on "
                    f"every source (seed 0, epoch {epoch} on a patient-grouped 15 % inner split), temperature {t:.3f}, "
                    f"abstention below calibrated confidence {thr:.3f}."]


def crop_stats() -> None:
    """How often the heuristic lung box falls back to the whole image, and the share it keeps, by source."""
    from pulmo.cxr.preprocess import lung_box
    from pulmo.data.image_io import read_image

    by: dict[str, list[tuple[float, bool]]] = {}
    for im in pooled():
        g = read_image(im.path)
        h, w = g.shape
        x0, y0, x1, y1 = lung_box(g)
        by.setdefault(im.source, []).append(((x1 - x0) * (y1 - y0) / (h * w), (x0, y0, x1, y1) == (0, 0, w, h)))
    for src, v in by.items():
        a = np.array(v, dtype=float)
        print(f"{src}: n={len(v)} whole-image fallback {a[:, 1].mean():.3f}, mean share of the image kept {a[:, 0].mean():.3f}")


NOVELTY_ROW = "gap_crop_srcbal_harmonize"  # the bundled recipe
NOVELTY_KEEP = 0.95  # of the inner validation images (sources seen in training) count as familiar


def novelty(seeds: list[int]) -> None:
    """Can the model tell that an image comes from a source it never saw? Per LOSO fold, the
    distance of an image's pooled backbone feature (unit length) to its 5 nearest training images;
    images farther than 95 % of the inner validation images are flagged as from an unfamiliar
    source. Writes ``results/cxr_sources_novelty.md``: how many of each held-out source are
    flagged, and the bundled recipe's accuracy on flagged and kept images."""
    from sklearn.metrics import f1_score
    from sklearn.neighbors import NearestNeighbors

    images = pooled()
    y = np.array([OUTPUT_CLASSES.index(im.label) for im in images])
    src = np.array([im.source for im in images])
    f = np.asarray(load_features(ROWS[NOVELTY_ROW]["prep"])[0], dtype=np.float32).mean(axis=(2, 3))
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    per: dict[str, dict[str, list[float]]] = {}
    pooled_kept, pooled_all = [], []
    for seed in seeds:
        res = json.loads((RUNS / f"{NOVELTY_ROW}_seed{seed}.json").read_text())
        preds, truth, kept = [], [], []
        for held, fold in res["folds"].items():
            test, val = np.array(fold["test"]), np.array(fold["val"])
            train = np.setdiff1d(np.flatnonzero(src != held), val)
            knn = NearestNeighbors(n_neighbors=5).fit(f[train])
            threshold = np.quantile(knn.kneighbors(f[val])[0].mean(1), NOVELTY_KEEP)
            flagged = knn.kneighbors(f[test])[0].mean(1) > threshold
            right = np.array(fold["logits"]).argmax(1) == y[test]
            row = per.setdefault(held, {"n": [len(test)], "flagged": [], "acc_kept": [], "acc_flagged": []})
            row["flagged"].append(float(flagged.mean()))
            row["acc_kept"].append(float(right[~flagged].mean()) if (~flagged).any() else float("nan"))
            row["acc_flagged"].append(float(right[flagged].mean()) if flagged.any() else float("nan"))
            preds.append(np.array(fold["logits"]).argmax(1))
            truth.append(y[test])
            kept.append(~flagged)
        p, t, k = np.concatenate(preds), np.concatenate(truth), np.concatenate(kept)
        pooled_all.append(f1_score(t, p, average="macro", labels=list(range(K)), zero_division=0))
        pooled_kept.append(f1_score(t[k], p[k], average="macro", labels=list(range(K)), zero_division=0))

    md = ["# Chest X-ray: does the model know when an image comes from a source it never saw?", "",
          f"`python benchmarks/cxr_sources.py novelty --seeds {' '.join(map(str, seeds))}` (after `features` and "
          f"`run`). Row: {NOVELTY_ROW} (the bundled recipe), leave-one-source-out folds, mean ± std over seeds "
          f"{', '.join(map(str, seeds))}.", "",
          "Novelty score: mean distance of an image's globally pooled EfficientNet-Lite0 feature (unit length) to its 5 "
          "nearest training images of the fold; flagged as from an unfamiliar source when farther than "
          f"{NOVELTY_KEEP:.0%} of the fold's inner validation images (sources seen in training), so about "
          f"{1 - NOVELTY_KEEP:.0%} of familiar images are flagged by construction.", "",
          "| held-out source | n | flagged as unfamiliar | accuracy, kept | accuracy, flagged |", "|---|---|---|---|---|"]
    md += [f"| {held} | {r['n'][0]} | {mean_std(r['flagged'], 2)} | {mean_std(r['acc_kept'], 2)} | {mean_std(r['acc_flagged'], 2)} |"
           for held, r in per.items()]
    md += ["", f"Pooled macro-F1 over held-out sources: all images {mean_std(pooled_all, 3)}, images not flagged "
           f"{mean_std(pooled_kept, 3)}.", "",
           "Reading: a source the model never saw does not look new in these features: most of its images sit as "
           "close to the training images as the training sources' own validation images do, and the flagged ones are "
           "mostly not the ones it gets wrong (the table says per source). Abstaining on novelty would not remove the "
           "errors a new hospital brings, so pulmo does not; the answer carries the leave-one-source-out warning "
           "instead."]
    out = RESULTS / "cxr_sources_novelty.md"
    out.write_text("\n".join(md) + "\n")
    print("\n".join(md))


def main() -> None:
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("features")
    f.add_argument("--preps", nargs="+", default=list(PREPROCESS))
    r = sub.add_parser("run")
    r.add_argument("--rows", nargs="+", default=list(ROWS))
    r.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    r.add_argument("--force", action="store_true")
    sub.add_parser("crop-stats")
    nv = sub.add_parser("novelty", help="does a held-out source look unfamiliar? (results/cxr_sources_novelty.md)")
    nv.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    rp = sub.add_parser("report")
    rp.add_argument("--bundle", action="store_true")
    args = ap.parse_args()
    if args.cmd == "features":
        features(args.preps)
    elif args.cmd == "crop-stats":
        crop_stats()
    elif args.cmd == "novelty":
        novelty(args.seeds)
    elif args.cmd == "run":
        run(args.rows, args.seeds, args.force)
    else:
        report(args.bundle)


if __name__ == "__main__":
    main()
