"""Respiratory rate (Kumar et al.): Tables I-III at CPU scale on RRuJO, a held-out synthetic
set with noise at known SNRs, and the DSP baseline beside every neural row.

Every config in ``configs/experiments/resp-rate/`` (except ``base``) x seed is trained in
its own process (one thread each, ``--jobs`` at a time) into ``--runs/<row>/seed<k>/``;
finished runs are reused. Each run's selected model is then scored on the synthetic set.
Writes ``results/resp_rate.md``, ``results/resp_rate.csv`` and ``results/resp_rate_snr.png``.

    python benchmarks/resp_rate.py --seeds 0 1 2 --jobs 2 --cv-row push_window15 push_window15_stretch \
        push_window15_long push_heavy64_window15 push_heavy_window15 push_window30 push64_window15 table1_lstm64 \
        push_heavy64 --cv-seeds 0 1 2 \
        --bundle src/pulmo/assets/resp_rate_tc_lstm.pt --bundle-rate-only src/pulmo/assets/resp_rate_lstm_window15.pt \
        --vote-study push_window15

``--reselect`` chooses the post-processing of finished runs again (after a change to how it
is chosen) without retraining them.

Each row is also scored as a vote of its seeds (the median of their stored recording rates),
on fold 0 and, for the ``--cv-row`` rows, over all subject folds. A shipped vote of networks
that fit rate distributions pools their distributions instead
(``pulmo.resp_rate.predictor.vote_rate``), which needs the networks and the audio:
``benchmarks/resp_rate_composite.py`` scores that vote (its "rate member alone" rows). The two bundles are such
votes, of the row with the lowest cross-validated vote MAE among the rate-only rows and among
the heavy-capable rows: the rate member and a breathing-member candidate of the default model,
which ``benchmarks/resp_rate_composite.py`` builds and scores (choosing among breathing-member
candidates on validation).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_format import mean_std
from bench_jobs import run_logged

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

CONFIG_DIR = ROOT / "configs" / "experiments" / "resp-rate"
ROWS = ["table1_lstm16", "table1_lstm32", "table1_lstm64", "table2_tc_lstm32", "table3_lstm_aug",
        "table3_tc_lstm_aug", "push_heavy", "push_heavy64", "push_window15", "push_light_heavy_window15",
        "push_heavy_window15", "push_heavy64_window15", "push_window15_stretch", "push_window15_long", "push64_window15",
        "push_window30", "push_window15_bins", "push_heavy_window15_bins"]
# the rows trained with the heavy and none classes: the bundled model must be able to flag them
BUNDLE_ROWS = ("push_heavy", "push_heavy64", "push_light_heavy_window15", "push_heavy_window15", "push_heavy64_window15",
               "push_heavy_window15_bins")
# the most accurate rows on paced real recordings; never trained above 20 bpm (no heavy class)
RATE_ONLY_ROWS = ("push_window15", "push_window15_stretch", "push_window15_long", "push64_window15", "push_window15_bins")
# how vote_predictions scores a vote, stored with a bundled vote's figures: a vote of networks with a rate-distribution
# head predicts by pooling (pulmo.resp_rate.predictor.vote_rate), scored by benchmarks/resp_rate_composite.py
VOTE_SCORED_AS = "median of the seeds' stored recording rates"
DSP_GRID = [dict(band_low_hz=lo, band_high_hz=hi, harmonic_decay=d)
            for lo, hi in ((100.0, 400.0), (200.0, 800.0), (300.0, 900.0)) for d in (0.8, 1.0)]


def worker(row: str, seed: int, runs: Path, fold: int | None = None, reselect: bool = False) -> None:
    """Train one row x seed (unless done) and score its model on the synthetic set; with
    ``fold``, train with that subject fold as test (cross-validation) and skip the synthetic set.
    With ``reselect``, a finished run has its post-processing chosen again on validation
    (:func:`pulmo.resp_rate.train.reselect_run`), and its synthetic scores redone if the choice changed."""
    import torch

    torch.set_num_threads(1)
    from pulmo.inference.resp_rate import RespRatePipeline
    from pulmo.resp_rate.config import load_rr_config
    from pulmo.resp_rate.evaluate import by_group, score_model, synthetic_test_set
    from pulmo.resp_rate.train import reselect_run, run_rr_experiment

    out = run_dir(runs, row, seed, fold)
    over: dict[str, Any] = {"train": {"seed": seed}}
    if fold is not None:
        over["data"] = {"test_fold": fold}
    cfg = load_rr_config(CONFIG_DIR / f"{row}.yaml", over)
    if not (out / "metrics.json").exists():
        run_rr_experiment(cfg, out, progress=True)
    elif reselect:
        before = json.loads((out / "metrics.json").read_text())["refine"]
        if json.loads(json.dumps(reselect_run(out)["refine"])) != before:  # another post-processing: rescore the synthetic set
            (out / "synthetic.json").unlink(missing_ok=True)
    if fold is None and not (out / "synthetic.json").exists():
        pipe = RespRatePipeline(out / "model.pt")
        items = synthetic_test_set(pipe.clip.sample_rate_hz, noisy_below_snr_db=cfg.augment.noisy_below_snr_db)
        res = score_model(pipe.predictor, items)
        syn = {k: res[k] for k in ("recording", "window", "mse_by_range", "breath_f1", "noise_f1")}
        syn["by_snr"] = by_group(items, res["predictions"])
        (out / "synthetic.json").write_text(json.dumps(syn, indent=1))


def shown(path: Path) -> Path:
    """``path`` relative to the repository root where it lies inside it (``runs/...``), else as given."""
    path = path.resolve()
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def cv_dir(runs: Path, row: str, seed: int, fold: int) -> Path:
    """Where the cross-validation run of ``row`` x ``seed`` with subject fold ``fold`` as test lives."""
    return runs / "cv" / row / f"seed{seed}" / f"fold{fold}"


def run_dir(runs: Path, row: str, seed: int, fold: int | None) -> Path:
    """Where the run of ``row`` x ``seed`` lives: fold 0 of the main table, or a cross-validation fold."""
    return runs / row / f"seed{seed}" if fold is None else cv_dir(runs, row, seed, fold)


def finished(runs: Path, row: str, seed: int, fold: int | None) -> bool:
    """Whether the run has nothing left to do (trained; main-table runs also scored on the synthetic set)."""
    out = run_dir(runs, row, seed, fold)
    return (out / "metrics.json").is_file() and (fold is not None or (out / "synthetic.json").is_file())


def run_all(tasks: list[tuple[str, int, int | None]], jobs: int, runs: Path, reselect: bool = False) -> None:
    """``(row, seed, fold or None)`` tasks, each in its own process, ``jobs`` at a time;
    finished runs are skipped (their training logs kept) unless ``reselect``."""
    commands = []
    for row, seed, fold in tasks:
        if finished(runs, row, seed, fold) and not reselect:
            continue
        name = f"{row}_seed{seed}" if fold is None else f"cv_{row}_seed{seed}_fold{fold}"
        argv = [sys.executable, __file__, "--worker", row, str(seed), "--runs", str(runs)] + (["--reselect"] if reselect else [])
        log = runs / f"{name}{'_reselect' if reselect else ''}.log"  # a training log is never overwritten
        commands.append((name, argv + (["--fold", str(fold)] if fold is not None else []), log))
    run_logged(commands, jobs)


def dsp_baseline(runs: Path) -> dict[str, Any]:
    """DSP on the same subject split: band and harmonic decay chosen on training+validation
    recordings (MAE), then scored once on test; also on the synthetic set by SNR band."""
    from pulmo.data.adapters.breath_csv import load_breath_csv
    from pulmo.resp_rate.config import load_rr_config
    from pulmo.resp_rate.data import load_recordings, subject_folds
    from pulmo.resp_rate.dsp import DspConfig
    from pulmo.resp_rate.evaluate import LabelledAudio, by_group, labelled_recordings, score_dsp, synthetic_test_set

    cache = runs / "dsp.json"
    if cache.exists():
        return json.loads(cache.read_text())
    cfg = load_rr_config(CONFIG_DIR / "base.yaml")
    splits = subject_folds(load_breath_csv(cfg.data.resolved_root()), cfg.data)

    def items(name: str) -> list[LabelledAudio]:
        return labelled_recordings(load_recordings(splits[name], cfg.clip))

    fit, test = items("train") + items("val"), items("test")
    grid = {json.dumps(g): score_dsp(cfg.clip, fit, DspConfig(**g))["recording"]["mae"] for g in DSP_GRID}
    best = json.loads(min(grid, key=grid.get))
    chosen = DspConfig(**best)
    out: dict[str, Any] = {"selected": best, "fit_mae_by_setting": grid, "window_s": cfg.clip.window_s}
    for method in ("harmonic_sum", "autocorrelation", "spectral_peak"):
        res = score_dsp(cfg.clip, test, DspConfig(**{**best, "method": method}))
        out[method] = {**res["recording"], "window": res["window"], "mse_by_range": res["mse_by_range"]}
    syn = synthetic_test_set(cfg.clip.sample_rate_hz)
    res = score_dsp(cfg.clip, syn, chosen)
    out["synthetic"] = {"recording": res["recording"], "window": res["window"], "mse_by_range": res["mse_by_range"],
                        "by_snr": by_group(syn, res["predictions"])}
    cache.write_text(json.dumps(out, indent=1))
    return out


def load_rr_config_folds() -> int:
    from pulmo.resp_rate.config import load_rr_config

    return load_rr_config(CONFIG_DIR / "base.yaml").data.folds


def pooled_report(predictions: list[Any]) -> dict[str, Any]:
    """Regression report (bpm) of ``(key, true, predicted)`` triples, with the share within 1 bpm."""
    from pulmo.metrics.regression import regression_report

    rep: dict[str, Any] = regression_report([p for _, _, p in predictions], [t for _, t, _ in predictions])
    rep["within_1_bpm"] = sum(abs(p - t) <= 1 for _, t, p in predictions) / len(predictions)
    return rep


def cross_validation(runs: Path, row: str, folds: int, seeds: list[int]) -> str:
    """Pooled per-recording scores over all subject folds of ``row``, per seed and as mean ± std
    over ``seeds``, the DSP baseline chosen per fold on that fold's training+validation subjects beside them."""
    from pulmo.data.adapters.breath_csv import load_breath_csv
    from pulmo.resp_rate.config import load_rr_config
    from pulmo.resp_rate.data import load_recordings, subject_folds
    from pulmo.resp_rate.dsp import DspConfig
    from pulmo.resp_rate.evaluate import labelled_recordings, score_dsp

    cache = runs / "cv" / "dsp_cv.json"  # the same for every row
    if cache.exists():
        dsp_pred = json.loads(cache.read_text())
    else:
        dsp_pred = []
        for k in range(folds):
            cfg = load_rr_config(CONFIG_DIR / "base.yaml", {"data": {"test_fold": k}})
            splits = subject_folds(load_breath_csv(cfg.data.resolved_root()), cfg.data)
            items = {n: labelled_recordings(load_recordings(splits[n], cfg.clip)) for n in ("train", "val", "test")}
            fit = items["train"] + items["val"]
            grid = {json.dumps(g): score_dsp(cfg.clip, fit, DspConfig(**g))["recording"]["mae"] for g in DSP_GRID}
            best = DspConfig(**json.loads(min(grid, key=grid.get)))
            dsp_pred += score_dsp(cfg.clip, items["test"], best)["predictions"]
        cache.write_text(json.dumps(dsp_pred))

    def line(name: str, r: dict[str, float]) -> str:
        return (f"| {name} | {r['n']} | {r['mae']:.2f} | {r['mse']:.2f} | {r['ccc']:.3f} | {r['pearson']:.3f} | "
                f"{r['within_1_bpm']:.2f} |")

    per_seed = {s: [json.loads((cv_dir(runs, row, s, k) / "metrics.json").read_text()) for k in range(folds)] for s in seeds}
    pooled = {s: pooled_report([p for m in ms_ for p in m["test_predictions"]]) for s, ms_ in per_seed.items()}
    lines = ["", f"## Five-fold subject cross-validation: {row}, seeds {', '.join(map(str, seeds))} (every RRuJO recording"
             " scored once per seed, by the model whose test fold holds its subject)", "",
             "| estimator | n | MAE | MSE | CCC | Pearson | within 1 bpm |", "|---|---|---|---|---|---|---|"]
    lines += [line(f"{row} (refined), seed {s}", r) for s, r in pooled.items()]
    if len(seeds) > 1:
        lines.append(f"| {row} (refined), mean ± std over seeds | {pooled[seeds[0]]['n']} | "
                     + " | ".join(mean_std([r[k] for r in pooled.values()], d) for k, d in
                                  (("mae", 2), ("mse", 2), ("ccc", 3), ("pearson", 3), ("within_1_bpm", 2))) + " |")
    lines += [line("DSP harmonic_sum (chosen per fold on training+validation)", pooled_report(dsp_pred)), "",
              "Per fold (test MAE refined / neural only; CCC refined / neural only; tolerance, or spectrum weight w of the"
              " rate-distribution fit): "
              + "; ".join(f"seed {s} fold {k}: {m['test']['mae']:.2f} / {m['test_neural_only']['mae']:.2f}, "
                          f"{m['test']['ccc']:.3f} / {m['test_neural_only']['ccc']:.3f}, {post_processing(m['refine'])}"
                          for s, ms_ in per_seed.items() for k, m in enumerate(ms_)), ""]
    return "\n".join(lines) + "\n"


def post_processing(refine: dict[str, Any]) -> str:
    """A run's chosen post-processing in a few characters: its refinement tolerance, or ``w``
    and the spectrum weight of the rate-distribution fit."""
    w = refine.get("selected_posterior_weight")
    return f"w {w}" if w is not None else str(refine["selected_tolerance"])


def load_runs(runs: Path, rows: list[str], stored: Path | None = None) -> dict[str, list[dict[str, Any]]]:
    """Every finished run of ``rows`` by row, seeds in order: from ``runs/<row>/seed*/``, and
    for runs whose folders are gone (``runs/`` is not kept between machines) from the
    per-run summaries in ``stored`` (written by :func:`write_run_summaries`; no weights, so
    such runs are tabulated but never bundled)."""
    from pulmo.resp_rate.config import load_rr_config

    kept = {(m["row"], m["seed"]): m for m in json.loads(stored.read_text())} if stored and stored.is_file() else {}
    by_row: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        found = {}
        for path in sorted((runs / row).glob("seed*/metrics.json")):
            m = json.loads(path.read_text())
            m["seed"] = int(path.parent.name[4:])
            m["run_dir"] = str(shown(path.parent))  # relative to the repository: results files name no machine
            syn = path.parent / "synthetic.json"
            m["synthetic"] = json.loads(syn.read_text()) if syn.exists() else None
            found[m["seed"]] = m
        for (r, seed), m in kept.items():
            if r == row and seed not in found:
                found[seed] = {**m, "from_results": True}
        cfg = load_rr_config(CONFIG_DIR / f"{row}.yaml")
        for seed in sorted(found):
            found[seed]["paper"], found[seed]["window_s"] = cfg.paper, cfg.clip.window_s
            by_row.setdefault(row, []).append(found[seed])
    return by_row


def write_run_summaries(by_row: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Per-run metrics (no training history, no per-recording predictions) for every run in
    ``by_row``: what the page needs to be rebuilt once ``runs/`` is gone."""
    drop = {"history", "val_predictions", "test_predictions", "paper", "window_s", "from_results"}
    out = [{"row": row, **{k: v for k, v in m.items() if k not in drop}} for row, rs in by_row.items() for m in rs]
    path.write_text(json.dumps(out, indent=1) + "\n")


def get(d: dict[str, Any] | None, *keys: str) -> Any:
    for k in keys:
        if d is None:
            return None
        d = d.get(k)
    return d


def write_csv(by_row: dict[str, list[dict[str, Any]]], path: Path) -> None:
    fields = ["experiment", "seed", "val_ccc", "val_mae", "test_mae", "test_mse", "test_ccc", "test_pearson",
              "test_window_mae", "test_window_ccc", "test_neural_only_mae", "test_neural_only_ccc", "refine_tolerance",
              "synthetic_mae", "synthetic_ccc", "synthetic_breath_macro_f1", "synthetic_noise_macro_f1",
              "selected_epoch", "train_seconds", "run_dir"]
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for row, rs in by_row.items():
            for r in rs:
                w.writerow({
                    "experiment": row, "seed": r["seed"], "val_ccc": r["val"]["ccc"], "val_mae": r["val"]["mae"],
                    "test_mae": r["test"]["mae"], "test_mse": r["test"]["mse"], "test_ccc": r["test"]["ccc"],
                    "test_pearson": r["test"]["pearson"], "test_window_mae": r["test"]["window"]["mae"],
                    "test_window_ccc": r["test"]["window"]["ccc"], "test_neural_only_mae": r["test_neural_only"]["mae"],
                    "test_neural_only_ccc": r["test_neural_only"]["ccc"],
                    "refine_tolerance": r["refine"]["selected_tolerance"],
                    "synthetic_mae": get(r["synthetic"], "recording", "mae"),
                    "synthetic_ccc": get(r["synthetic"], "recording", "ccc"),
                    "synthetic_breath_macro_f1": get(r["synthetic"], "breath_f1", "macro_f1"),
                    "synthetic_noise_macro_f1": get(r["synthetic"], "noise_f1", "macro_f1"),
                    "selected_epoch": r["selected_epoch"], "train_seconds": round(r["train_seconds"], 1),
                    "run_dir": r["run_dir"],
                })


def plot_snr(by_row: dict[str, list[dict[str, Any]]], dsp: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pulmo.resp_rate.evaluate import SNR_BANDS

    bands = list(SNR_BANDS)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for row, rs in by_row.items():
        vals = np.array([[get(r["synthetic"], "by_snr", b, "mae") or np.nan for b in bands] for r in rs])
        ax.errorbar(range(len(bands)), np.nanmean(vals, 0), yerr=np.nanstd(vals, 0), marker="o", capsize=3, label=row)
    ax.plot(range(len(bands)), [dsp["synthetic"]["by_snr"][b]["mae"] for b in bands], "k--s", label="DSP baseline")
    ax.set_xticks(range(len(bands)), bands)
    ax.set_xlabel("background noise (SNR band)")
    ax.set_ylabel("MAE, breaths per minute (per recording)")
    ax.set_title("Held-out synthetic recordings (0-60 bpm, 30 s): error against SNR")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def page(by_row: dict[str, list[dict[str, Any]]], dsp: dict[str, Any], command: str, wall_s: float, device: str) -> str:
    from pulmo.resp_rate.evaluate import SNR_BANDS

    first = next(iter(by_row.values()))[0]
    subj = first["subjects"]
    L = [
        "# Respiratory rate from breath audio (Kumar et al.): RRuJO and synthetic, CPU scale",
        "",
        f"RRuJO, subject-disjoint: test = {len(subj['test'])} subjects ({first['test']['n']} recordings of ~60 s, paced 8-20 bpm,"
        f" two stethoscopes), validation = {len(subj['val'])} subjects (epoch selection on validation CCC of the"
        f" recording rates; refinement tolerance on validation MAE), training = {len(subj['train'])} subjects. One split"
        " (fold 0 of 5, split seed 0); seeds vary the training only. Audio resampled to 2 kHz (the lowest rate in RRuJO), so"
        " the 40 mel bands span 0-1000 Hz (the paper's 7500 Hz upper edge capped at Nyquist).",
        "A recording's rate = median of the model's rates on windows of its clip length (7 s; 15 s for the `_window15` rows)"
        " every 1 s; **refined** = that median snapped to the"
        " strongest peak of the recording's breath-envelope harmonic-sum spectrum within ± tolerance (chosen on validation;"
        " 0 = off); for a row with a rate-distribution head, validation may instead choose the spectrum peak that best fits"
        " the windows' mean rate distribution, the spectrum weighted by w (`pulmo.resp_rate.dsp.posterior_rate`; shown"
        " as w in the tolerance column). Rates in breaths per minute; mean ± std over seeds.",
        "",
        f"Device: {device}. Wall time of this invocation: {wall_s / 60:.1f} min (finished runs are reused; per-run training"
        " seconds are in the CSV). 2 cores, shared with other benchmark jobs.",
        "",
        f"Reproduce: `{command}`",
        "",
        "## RRuJO test (per recording)",
        "",
        "| row | window | seeds | CCC | Pearson | MSE | MAE | MAE per window | neural only: MAE | neural only: CCC | tolerance | val CCC |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row, rs in by_row.items():
        L.append(f"| {row} | {rs[0]['window_s']:g} s | {len(rs)} | {mean_std([r['test']['ccc'] for r in rs])} | {mean_std([r['test']['pearson'] for r in rs])} | "
                 f"{mean_std([r['test']['mse'] for r in rs], 2)} | {mean_std([r['test']['mae'] for r in rs], 2)} | "
                 f"{mean_std([r['test']['window']['mae'] for r in rs], 2)} | {mean_std([r['test_neural_only']['mae'] for r in rs], 2)} | "
                 f"{mean_std([r['test_neural_only']['ccc'] for r in rs])} | "
                 f"{', '.join(post_processing(r['refine']) for r in rs)} | {mean_std([r['val']['ccc'] for r in rs])} |")
    for method in ("harmonic_sum", "autocorrelation", "spectral_peak"):
        d = dsp[method]
        L.append(f"| DSP {method} (whole recording) | {dsp['window_s']:g} s | - | {d['ccc']:.3f} | {d['pearson']:.3f} | {d['mse']:.2f} | {d['mae']:.2f} | "
                 f"{d['window']['mae']:.2f} | - | - | - | - |")
    L += ["", f"DSP settings chosen on training+validation recordings: `{json.dumps(dsp['selected'])}`.", "",
          "## Table I (LSTM size) and Table II (LSTM vs TC-LSTM), beside the paper", "",
          "F1 of the breathing classes on RRuJO is not informative (every window is 'normal'); the synthetic set"
          " (none / normal / heavy, clean and noisy) gives the classification F1s.", "",
          "| row | val CCC | val Pearson | test CCC | test Pearson | test MSE | synthetic F1 breathing | synthetic F1 noise | paper |",
          "|---|---|---|---|---|---|---|---|---|"]
    for row, rs in by_row.items():
        paper = json.dumps(rs[0].get("paper") or {})
        L.append(f"| {row} | {mean_std([r['val']['ccc'] for r in rs])} | {mean_std([r['val']['pearson'] for r in rs])} | "
                 f"{mean_std([r['test']['ccc'] for r in rs])} | {mean_std([r['test']['pearson'] for r in rs])} | "
                 f"{mean_std([r['test']['mse'] for r in rs], 2)} | "
                 f"{mean_std([get(r['synthetic'], 'breath_f1', 'macro_f1') for r in rs])} | "
                 f"{mean_std([get(r['synthetic'], 'noise_f1', 'macro_f1') for r in rs])} | {paper} |")
    L += ["", "## Table III: MSE by rate range (per recording)", "",
          "RRuJO has no rate above 20 bpm; the synthetic set covers all three ranges (its < 15 range holds the"
          " rate-0 recordings, which no regression output reaches: the none class flags them). The paper's MSEs"
          " (0.2-0.43) cannot be in breaths per minute squared (its CCC of 0.76 implies errors of several bpm); they are"
          " presumably on a normalised rate and are shown for reference only.", "",
          "| row | paper < 15 / 15-25 / > 25 | RRuJO < 15 | RRuJO 15-25 | synthetic < 15 | synthetic 15-25 | synthetic > 25 |",
          "|---|---|---|---|---|---|---|"]
    for row, rs in by_row.items():
        pp = rs[0]["paper"]
        paper = " / ".join(f"{pp[k]:g}" for k in ("mse_below_15", "mse_15_25", "mse_above_25")) if "mse_below_15" in pp else "-"
        L.append(f"| {row} | {paper} | {mean_std([r['test']['mse_by_range']['below_15'] for r in rs], 2)} | "
                 f"{mean_std([r['test']['mse_by_range']['15_to_25'] for r in rs], 2)} | "
                 + " | ".join(mean_std([get(r['synthetic'], 'mse_by_range', k) for r in rs], 2)
                              for k in ("below_15", "15_to_25", "above_25")) + " |")
    d, s = dsp["harmonic_sum"]["mse_by_range"], dsp["synthetic"]["mse_by_range"]
    L.append(f"| DSP harmonic_sum | - | {d['below_15']:.2f} | {d['15_to_25']:.2f} | {s['below_15']:.2f} | {s['15_to_25']:.2f} | "
             f"{s['above_25']:.2f} |")
    bands = list(SNR_BANDS)
    L += ["", "## Synthetic held-out set: MAE (bpm, per 30 s recording) by SNR band", "",
          "40 recordings per band, rates 0 (10 %) or 5-60 bpm, irregular rhythm, noise types hum / fan / traffic / wind /"
          " babble in turn; generated with a seed that training never uses. Plot: `resp_rate_snr.png`.", "",
          "| row | " + " | ".join(bands) + " | all CCC |", "|---|" + "---|" * (len(bands) + 1)]
    for row, rs in by_row.items():
        L.append(f"| {row} | " + " | ".join(mean_std([get(r['synthetic'], 'by_snr', b, 'mae') for r in rs], 2) for b in bands)
                 + f" | {mean_std([get(r['synthetic'], 'recording', 'ccc') for r in rs])} |")
    L.append("| DSP harmonic_sum | " + " | ".join(f"{dsp['synthetic']['by_snr'][b]['mae']:.2f}" for b in bands)
             + f" | {dsp['synthetic']['recording']['ccc']:.3f} |")
    return "\n".join(L) + "\n"


def vote_predictions(runs_predictions: list[list[Any]]) -> list[tuple[str, float, float]]:
    """The seed vote from stored results: per recording, the median of several runs' recording
    rates. ``(key, true, predicted)`` triples of each run in, of the vote out."""
    by_key: dict[str, tuple[float, list[float]]] = {}
    for preds in runs_predictions:
        for key, true, pred in preds:
            by_key.setdefault(key, (true, []))[1].append(pred)
    if any(len(ps) != len(runs_predictions) for _, ps in by_key.values()):
        raise SystemExit("the runs of a vote scored different recordings")
    return [(k, t, float(np.median(ps))) for k, (t, ps) in by_key.items()]


def cv_vote(runs: Path, row: str, folds: int, seeds: list[int], only_fold: int | None = None) -> list[tuple[str, float, float]] | None:
    """Every recording's vote of ``seeds`` over the subject folds of ``row`` (or over fold
    ``only_fold`` alone), or None if a run is missing."""
    which = range(folds) if only_fold is None else [only_fold]
    paths = [cv_dir(runs, row, s, k) / "metrics.json" for k in which for s in seeds]
    if not all(p.is_file() for p in paths):
        return None
    return [v for k in which for v in vote_predictions(
        [json.loads((cv_dir(runs, row, s, k) / "metrics.json").read_text())["test_predictions"] for s in seeds])]


def vote_rows(by_row: dict[str, list[dict[str, Any]]], runs: Path, folds: int, cv_seeds: list[int]) -> dict[str, dict[str, Any]]:
    """Per row whose fold-0 runs kept their predictions: the vote of its seeds on validation and
    test, and (where every cross-validation run of ``cv_seeds`` exists) over all subject folds."""
    out = {}
    for row, rs in by_row.items():
        kept = [r for r in rs if not r.get("from_results")]
        if len(kept) < 2:
            continue
        cv = cv_vote(runs, row, folds, cv_seeds) if folds else None
        out[row] = {"seeds": [r["seed"] for r in kept], "runs": kept,
                    **{split: pooled_report(vote_predictions([r[f"{split}_predictions"] for r in kept])) for split in ("val", "test")},
                    "cv": pooled_report(cv) if cv else None, "cv_misses": miss_kinds(cv) if cv else None,
                    "cv_single_seed_mae": [pooled_report(cv_vote(runs, row, folds, [s]) or [])["mae"] for s in cv_seeds]
                    if cv else None}
    return out


def miss_kinds(predictions: list[tuple[str, float, float]]) -> dict[str, int]:
    """Recordings missed by more than 1 bpm, by how the estimate relates to the label: an
    octave (0.45-0.55x or 1.8-2.2x), three halves (0.6-0.72x or 1.4-1.6x), or other."""
    kinds = {"octave": 0, "three_halves": 0, "other": 0}
    for _, true, pred in predictions:
        if abs(pred - true) > 1:
            r = pred / true if true else float("inf")
            kinds["octave" if 0.45 <= r <= 0.55 or 1.8 <= r <= 2.2 else
                  "three_halves" if 0.6 <= r <= 0.72 or 1.4 <= r <= 1.6 else "other"] += 1
    return kinds


def vote_section(votes: dict[str, dict[str, Any]], cv_seeds: list[int]) -> str:
    """The seed-vote table: fold-0 validation and test, and cross-validated where run."""
    L = ["", "## Vote of seeds: the median of the seeds' recording rates", "",
         "Each recording's rate = the median of the rates the row's seeds give it (each seed with its own refinement and check,"
         " chosen on validation). No choice among seeds is made. (A shipped vote of networks that fit rate distributions,"
         " the `_bins` rows, pools their distributions instead; `benchmarks/resp_rate_composite.py` scores that.)"
         " Cross-validated: every RRuJO recording scored by the vote of"
         f" seeds {', '.join(map(str, cv_seeds))} of the runs whose test fold holds its subject. The bundled votes' rows are"
         " chosen by this cross-validated MAE (not nested), so their own cross-validated figure is slightly optimistic.", "",
         "| row | seeds | val MAE | test MAE | test CCC | cross-validated MAE | cross-validated CCC | within 1 bpm | "
         "misses > 1 bpm: octave / 3:2 / other | single seeds, cross-validated MAE |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    for row, v in votes.items():
        cv = v["cv"]
        L.append(f"| {row} | {', '.join(map(str, v['seeds']))} | {v['val']['mae']:.2f} | {v['test']['mae']:.2f} | {v['test']['ccc']:.3f} | "
                 + (f"**{cv['mae']:.2f}** | {cv['ccc']:.3f} | {cv['within_1_bpm']:.2f} | "
                    + " / ".join(str(n) for n in v["cv_misses"].values()) + f" | {mean_std(v['cv_single_seed_mae'], 2)} |"
                    if cv else "- | - | - | - | - |"))
    return "\n".join(L) + "\n"


def vote_size_study(runs: Path, row: str, folds: int, seeds: list[int]) -> str:
    """How the cross-validated error of a vote depends on how many seeds it holds: every
    subset of ``seeds`` of each size, its vote scored over all subject folds."""
    from itertools import combinations

    L = ["", f"## How many seeds: {row}, votes of every subset of seeds {', '.join(map(str, seeds))}, cross-validated", "",
         "Each subset's vote scores all 250 RRuJO recordings over the five subject folds; mean ± std and range over the"
         " subsets of each size (size 1 = single seeds).", "",
         "| seeds per vote | subsets | MAE | MAE range | CCC | CCC range |", "|---|---|---|---|---|---|"]
    for size in range(1, len(seeds) + 1):
        reps = [pooled_report(cv_vote(runs, row, folds, list(c)) or []) for c in combinations(seeds, size)]
        mae, ccc = [r["mae"] for r in reps], [r["ccc"] for r in reps]
        L.append(f"| {size} | {len(reps)} | {mean_std(mae, 2)} | {min(mae):.2f}-{max(mae):.2f} | {mean_std(ccc)} | {min(ccc):.3f}-{max(ccc):.3f} |")
    return "\n".join(L) + "\n"


def row_choice_outside_fold(runs: Path, rows: tuple[str, ...], folds: int, seeds: list[int]) -> tuple[dict[str, Any], list[str]] | None:
    """The bundling rule checked without its optimism: for each subject fold, the row among
    ``rows`` is chosen by the vote MAE on the other folds only, and that row's vote scores the
    fold. Returns the pooled report and the row chosen per fold, or None without the runs."""
    per_fold = {r: [cv_vote(runs, r, folds, seeds, only_fold=k) for k in range(folds)] for r in rows}
    per_fold = {r: v for r, v in per_fold.items() if all(v)}
    if not per_fold:
        return None

    def mae_outside(row: str, fold: int) -> float:
        return float(np.mean([abs(p - t) for k, preds in enumerate(per_fold[row]) if k != fold for _, t, p in preds or []]))

    chosen = [min(per_fold, key=lambda r: mae_outside(r, k)) for k in range(folds)]
    return pooled_report([p for k, r in enumerate(chosen) for p in per_fold[r][k] or []]), chosen


def bundle_vote(votes: dict[str, dict[str, Any]], rows: tuple[str, ...], dest: Path) -> tuple[str, list[str]]:
    """Write the vote of the row among ``rows`` with the lowest cross-validated vote MAE to
    ``dest`` (members' weights fp16); returns that row and the rows it was chosen among
    (those of ``rows`` cross-validated in this invocation)."""
    from pulmo.engine.checkpoint import half_precision, read_checkpoint
    from pulmo.resp_rate.predictor import save_vote

    scored = [r for r in rows if r in votes and votes[r]["cv"]]
    if not scored:
        raise SystemExit(f"bundling a vote needs the cross-validation runs of one of {', '.join(rows)} (--cv-row)")
    row = min(scored, key=lambda r: votes[r]["cv"]["mae"])
    members = []
    for run in votes[row]["runs"]:
        b = read_checkpoint(ROOT / run["run_dir"] / "model.pt")
        b["state_dict"] = half_precision(b["state_dict"])
        members.append(b)
    v = votes[row]
    save_vote(dest, f"vote({row} seeds {', '.join(map(str, v['seeds']))})", members,
              {"val": v["val"], "test": v["test"], "cross_validation": v["cv"], "scored_as": VOTE_SCORED_AS})
    return row, scored


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rows", nargs="+", default=ROWS)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "resp_rate")
    p.add_argument("--results", type=Path, default=ROOT / "results")
    p.add_argument("--bundle", type=Path, help="write the seed vote of the row of BUNDLE_ROWS with the lowest cross-validated "
                   "vote MAE here, fp16: a breathing-member candidate for benchmarks/resp_rate_composite.py")
    p.add_argument("--bundle-rate-only", type=Path, help="likewise for RATE_ONLY_ROWS: the composite's rate member")
    p.add_argument("--cv-row", nargs="+", help="also run these rows over all subject folds: every recording scored once per seed")
    p.add_argument("--cv-seeds", type=int, nargs="+", default=[0], help="training seeds of the --cv-row runs")
    p.add_argument("--vote-study", metavar="ROW", help="also run ROW over all subject folds with --vote-study-seeds and "
                   "tabulate the cross-validated error of votes of every size")
    p.add_argument("--vote-study-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--reselect", action="store_true", help="choose the post-processing (refinement tolerance, "
                   "three-halves check) of every finished run again on its validation subjects; training is not repeated")
    p.add_argument("--worker", nargs=2, metavar=("ROW", "SEED"), help=argparse.SUPPRESS)
    p.add_argument("--fold", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), args.runs, args.fold, args.reselect)
        return
    started = time.time()
    tasks: list[tuple[str, int, int | None]] = [(r, s, None) for s in args.seeds for r in args.rows]
    folds = load_rr_config_folds() if args.cv_row or args.vote_study else 0
    tasks += [(row, s, k) for row in args.cv_row or [] for s in args.cv_seeds for k in range(folds)]
    if args.vote_study:
        tasks += [t for t in ((args.vote_study, s, k) for s in args.vote_study_seeds for k in range(folds)) if t not in tasks]
    run_all(tasks, args.jobs, args.runs, args.reselect)
    dsp = dsp_baseline(args.runs)
    by_row = load_runs(args.runs, args.rows, args.results / "resp_rate_runs.json")
    from pulmo.engine.train import cpu_model_name

    args.results.mkdir(parents=True, exist_ok=True)
    write_csv(by_row, args.results / "resp_rate.csv")
    write_run_summaries(by_row, args.results / "resp_rate_runs.json")
    plot_snr(by_row, dsp, args.results / "resp_rate_snr.png")
    command = "python benchmarks/resp_rate.py " + " ".join(sys.argv[1:])
    text = page(by_row, dsp, command, time.time() - started, f"CPU {cpu_model_name()}, 1 thread per run, {args.jobs} runs at a time")
    votes = vote_rows(by_row, args.runs, folds, args.cv_seeds)
    text += vote_section(votes, args.cv_seeds)
    bundles = ((args.bundle, BUNDLE_ROWS, "Heavy-capable vote (a breathing-member candidate for `benchmarks/resp_rate_composite.py`)",
                "the rows that learn the heavy and none classes"),
               (args.bundle_rate_only, RATE_ONLY_ROWS, "Rate-only vote (the rate member for `benchmarks/resp_rate_composite.py`)",
                "never trained above 20 bpm: it does not assess heavy breathing"))
    for dest, rows, what, why in bundles:
        if dest:
            row, among = bundle_vote(votes, rows, dest)
            text += (f"\n{what}: `{shown(dest)}` = the vote of {row}'s seeds "
                     f"{', '.join(map(str, votes[row]['seeds']))} (the lowest cross-validated vote MAE among {', '.join(among)}, "
                     f"{why}), fp16 weights, {dest.stat().st_size / 1e3:.0f} kB.\n")
    for rows, what in ((RATE_ONLY_ROWS, "rate-only rows"), (BUNDLE_ROWS, "heavy-capable rows")):
        checked = row_choice_outside_fold(args.runs, rows, folds, args.cv_seeds) if folds else None
        if checked:
            rep, chosen = checked
            text += (f"\nThe bundling rule without its optimism ({what}): with the row chosen per fold by the vote MAE on the"
                     f" other folds only (chosen: {', '.join(chosen)}), the votes score MAE {rep['mae']:.2f}, CCC {rep['ccc']:.3f}"
                     f" over all {rep['n']} recordings.\n")
    for row in args.cv_row or []:
        text += cross_validation(args.runs, row, folds, args.cv_seeds)
    if args.vote_study:
        text += vote_size_study(args.runs, args.vote_study, folds, args.vote_study_seeds)
    (args.results / "resp_rate.md").write_text(text)
    (args.runs / "dsp_selected.json").write_text(json.dumps(dsp["selected"]))
    print(text)


if __name__ == "__main__":
    main()
