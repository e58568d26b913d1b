"""Respiratory rate through the air: the default model, its members and the DSP baseline on
simulated air-microphone breathing (settings held out from anything tuned), on RRuJO, and on
RRuJO resampled to 8/16/44.1 kHz; the air-band DSP settings and the air front end's estimator
chosen on validation only.

Simulator (``pulmo.data.adapters.synthetic_air``): ``--n-val`` clips drawn with the ``val``
settings group (8/32 kHz, hum and wind) choose the air-band DSP settings (lowest MAE) and then
the estimator the pipeline uses on air audio (networks, stethoscope-band DSP or air-band DSP:
lowest MAE); ``--n-test`` clips with the ``test`` group (11.025/22.05/44.1 kHz, traffic and
music, never seen in any choice) measure them, by SNR band and by rate band. RRuJO: the
validation subjects of fold 0 check the stethoscope front end's estimator (networks or a DSP);
the test subjects of fold 0 (the default's networks never saw them) score the default; every
recording scores the DSP estimators (no training, so all 250 are held out from them). Each
test recording is also resampled to 8, 16 and 44.1 kHz (written under a temporary folder,
never in the repository) and scored end to end through ``RespRatePipeline.estimate``.
Writes ``results/resp_rate_air.md|csv|png``.

Networks trained for air audio: ``--train ROW`` trains that experiment once per ``--seeds``
(RRuJO, the simulator's ``train`` settings and band-limited copies; epoch chosen on RRuJO
validation subjects and simulator ``val`` clips) and writes the seeds' vote to ``--air-nets``;
a vote given by ``--air-nets`` is scored beside the others, offered to the air front end's
choice with the median of it, the air band and the baseline, and with ``--bundle`` the choice
(and the vote, where chosen) is written into the default checkpoint.

    PULMO_DATA=../shared/data python benchmarks/resp_rate_air.py --train air_mix_window15_bins --air-nets runs/resp_rate_air/air_vote.pt --train-only
    PULMO_DATA=../shared/data python benchmarks/resp_rate_air.py --air-nets runs/resp_rate_air/air_vote.pt --bundle src/pulmo/assets/resp_rate_composite.pt

``--cv-section ROW`` cross-validates the air-trained networks on RRuJO's five subject folds:
fold 0 is the ``--train`` run of each seed, folds 1-4 are trained (one thread, one at a
time, through ``benchmarks/resp_rate.py``'s workers, finished runs kept) into
``--runs/cv/ROW/seed<k>/fold<f>``; then the section "RRuJO five-fold subject
cross-validation" of ``results/resp_rate_air.md`` is written (replaced if there, appended
otherwise; nothing else in the file changes), the default networks' and the DSP baseline's
cross-validated figures beside it read from the results files that hold them (not rerun):

    PULMO_DATA=../shared/data python benchmarks/resp_rate_air.py --cv-section air_mix_window15_bins --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_format import mean_std
from resp_rate import cv_dir, load_rr_config_folds, pooled_report, run_all, vote_predictions

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
CONFIG_DIR = ROOT / "configs" / "experiments" / "resp-rate"

SNR_BANDS = {"clean": None, "30-40 dB": (30, 40), "20-30 dB": (20, 30), "10-20 dB": (10, 20), "0-10 dB": (0, 10),
             "-5-0 dB": (-5, 0)}
RATE_BANDS = {"< 15 bpm": (2, 15), "15-30 bpm": (15, 30), "> 30 bpm": (30, 61)}
GRID = {"fmin_hz": (100.0, 200.0, 300.0), "sharpen": (0.0, 2.0, 4.0), "aggregate": ("whole", "median")}
BASELINE = "DSP baseline (2 kHz, 200-800 Hz)"
NETS = "default networks (vote of 5 composites)"
AIR_NETS = "air-trained networks (vote of 3)"
MEDIAN = "median of air-trained networks, air DSP and baseline"


def cpu_name() -> str:
    from pulmo.engine.train import cpu_model_name

    return cpu_model_name()


def air_name(fmin: float, sharpen: float, aggregate: str) -> str:
    return f"air DSP fmin={fmin:g} sharpen={sharpen:g} {aggregate}"


def score_clip(audio: np.ndarray, sr: int, pipe: Any) -> tuple[dict[str, float], str]:
    """Every estimator's rate (bpm) for one clip at ``sr``, and the pipeline's front end."""
    import soxr

    from pulmo.features.band_envelope import band_envelopes_np
    from pulmo.resp_rate.air import WIDE_RATE_HZ, AirDspConfig, air_doubt, estimate_from_envelopes, front_end
    from pulmo.resp_rate.dsp import estimate_rate_dsp

    x2 = soxr.resample(audio, sr, 2000) if sr != 2000 else audio
    wide_sr = min(sr, WIDE_RATE_HZ)
    wide = soxr.resample(audio, sr, wide_sr) if wide_sr != sr else audio
    out = {BASELINE: estimate_rate_dsp(x2, 2000), NETS: float(pipe.predictor.predict(x2).rate_bpm)}
    logs, _ = band_envelopes_np(wide, wide_sr, fmin_hz=AirDspConfig().fmin_hz)
    out["air_doubt"] = air_doubt(estimate_from_envelopes(logs, AirDspConfig()), out[BASELINE])
    for fmin in GRID["fmin_hz"]:
        logs, _ = band_envelopes_np(wide, wide_sr, fmin_hz=fmin)
        for sharpen, agg in itertools.product(GRID["sharpen"], GRID["aggregate"]):
            out[air_name(fmin, sharpen, agg)] = estimate_from_envelopes(logs, AirDspConfig(fmin_hz=fmin, sharpen=sharpen,
                                                                                           aggregate=agg)).rate_bpm
    return out, front_end(wide, wide_sr, sr)[0]


def simulate(group: str, n: int, seconds: float, seed: int, pipe: Any, air_nets: Any = None,
             stored: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """``n`` clips of the settings ``group``; rates log-uniform 4-60 bpm, SNR bands in turn.
    ``air_nets``: a predictor scored beside the others (:data:`AIR_NETS`). ``stored``: rows of
    an earlier run by id, whose estimates are kept (each clip is made again from the same seed
    and its baseline rate must match the stored one), so only ``air_nets`` is scored anew."""
    from pulmo.data.adapters.synthetic_air import draw_settings, synth_air

    rng = np.random.default_rng(seed)
    rows = []
    bands = list(SNR_BANDS)
    for i in range(n):
        rate = float(np.exp(rng.uniform(np.log(4), np.log(60))))
        s = draw_settings(rng, group, rate)
        band = bands[i % len(bands)]
        s.noise, s.snr_db = (None, None) if SNR_BANDS[band] is None else (s.noise or "hum", float(rng.uniform(*SNR_BANDS[band])))
        clip = synth_air(seconds, rate, s, rng)
        key = f"{group}{i:03d}"
        est, fe = (stored_estimates(clip.audio, s.sample_rate_hz, stored[key]) if stored and key in stored
                   else score_clip(clip.audio, s.sample_rate_hz, pipe))
        if air_nets is not None:
            est[AIR_NETS] = float(air_nets.predict(at_2khz(clip.audio, s.sample_rate_hz)).rate_bpm)
        rows.append({"set": f"sim_{group}", "id": key, "bpm": rate, "snr_band": band, "route": s.route,
                     "sample_rate_hz": s.sample_rate_hz, "gate": s.gate_db is not None, "front_end": fe, **est})
        if i % 20 == 0:
            print(f"  {group} {i}/{n}", flush=True)
    return rows


def at_2khz(audio: np.ndarray, sr: int) -> np.ndarray:
    import soxr

    return soxr.resample(audio, sr, 2000) if sr != 2000 else audio


def stored_estimates(audio: np.ndarray, sr: int, row: dict[str, Any]) -> tuple[dict[str, float], str]:
    """An earlier run's estimates of this clip and its front end, after checking that the clip is
    the same one (its baseline rate agrees with the stored one to the CSV's 3 decimals)."""
    from pulmo.resp_rate.dsp import estimate_rate_dsp

    baseline = estimate_rate_dsp(at_2khz(audio, sr), 2000)
    if abs(baseline - row[BASELINE]) > 2e-3:
        raise SystemExit(f"{row['id']}: the clip differs from the stored run's (baseline {baseline:.3f} vs "
                         f"{row[BASELINE]:.3f}); run without --reuse")
    keep = {k: v for k, v in row.items() if k == "air_doubt" or k in (NETS, BASELINE) or k.startswith("air DSP")}
    return keep, row["front_end"]


def rrujo_air_nets(rows: list[dict[str, Any]], air_nets: Any, pipe: Any) -> None:
    """Add :data:`AIR_NETS` to the rows of fold 0's validation and test subjects (recordings read at 2 kHz)."""
    from pulmo.data.adapters.breath_csv import load_breath_csv
    from pulmo.resp_rate.config import load_rr_config

    paths = {r.record_id: r.path for r in load_breath_csv(load_rr_config(CONFIG_DIR / "base.yaml").data.resolved_root())}
    for r in rows:
        r[AIR_NETS] = (float(air_nets.predict(pipe.load(paths[r["id"]])).rate_bpm) if r["set"] in ("rrujo_val", "rrujo_test")
                       else float("nan"))


def train_air_networks(row: str, seeds: list[int], runs: Path, dest: Path) -> Path:
    """Train experiment ``row`` once per seed (finished runs are kept) and write the vote of
    the seeds' networks (pooled rate distributions, fp16 weights) to ``dest``."""
    from pulmo.engine.checkpoint import half_precision, read_checkpoint
    from pulmo.resp_rate.config import load_rr_config
    from pulmo.resp_rate.predictor import save_vote
    from pulmo.resp_rate.train import run_rr_experiment

    members = []
    for seed in seeds:
        out = runs / row / f"seed{seed}"
        if not (out / "metrics.json").exists():
            run_rr_experiment(load_rr_config(CONFIG_DIR / f"{row}.yaml", {"train": {"seed": seed}}), out, progress=True)
        bundle = read_checkpoint(out / "model.pt")
        bundle["state_dict"] = half_precision(bundle["state_dict"])
        members.append(bundle)
    per_seed = {seed: {**{k: b["metrics"][k] for k in ("val", "val_air", "test") if k in b["metrics"]},
                       "train_seconds": json.loads((runs / row / f"seed{seed}" / "metrics.json").read_text())["train_seconds"]}
                for seed, b in zip(seeds, members)}
    command = (f"python benchmarks/resp_rate_air.py --train {row} --seeds {' '.join(map(str, seeds))} "
               f"--air-nets {shown_path(dest)} --train-only")
    return save_vote(dest, f"vote({row} seeds {', '.join(map(str, seeds))})", members,
                     {"members": per_seed, "command": command, "cpu": cpu_name()})


def num(v: str) -> Any:
    """A CSV cell back as a float, bool or string."""
    if v in ("True", "False"):
        return v == "True"
    try:
        return float(v)
    except ValueError:
        return v


def mae(rows: list[dict[str, Any]], key: str) -> float:
    return float(np.mean([abs(r[key] - r["bpm"]) for r in rows if np.isfinite(r[key])])) if rows else float("nan")


def report(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    from pulmo.metrics.regression import regression_report

    ok = [r for r in rows if np.isfinite(r[key])]
    rep = regression_report([r[key] for r in ok], [r["bpm"] for r in ok])
    rep["no_rate"] = len(rows) - len(ok)
    return rep


def rate_band(bpm: float) -> str:
    return next(b for b, (lo, hi) in RATE_BANDS.items() if lo <= bpm < hi)


def rrujo_rows(pipe: Any, air_key: str, resample_to: tuple[int, ...]) -> list[dict[str, Any]]:
    """Every RRuJO recording: DSP estimators at the file's rate; the networks on fold 0's
    validation and test subjects; test recordings also resampled and scored end to end."""
    import soundfile as sf
    import soxr

    from pulmo.data.adapters.breath_csv import load_breath_csv
    from pulmo.data.audio_io import read_audio
    from pulmo.resp_rate.config import load_rr_config
    from pulmo.resp_rate.data import subject_folds

    cfg = load_rr_config(ROOT / "configs/experiments/resp-rate/base.yaml")
    records = load_breath_csv(cfg.data.resolved_root())
    split = {r.record_id: name for name, rs in subject_folds(records, cfg.data).items() for r in rs}
    seen = pipe.seen_subjects
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="rrujo_resampled_"))
    for i, r in enumerate(records):
        native, sr = read_audio(r.path)
        x2 = pipe.load(r.path)
        est, fe = score_clip(native, sr, pipe) if split[r.record_id] != "train" else (score_dsp_only(native, sr, x2), "")
        row = {"set": f"rrujo_{split[r.record_id]}", "id": r.record_id, "bpm": float(r.rr_bpm), "device": r.device,
               "sample_rate_hz": sr, "front_end": fe, "seen_by_networks": r.patient_id in seen, **est}
        if split[r.record_id] == "test":
            for to in resample_to:
                path = tmp / f"{i}_{to}.flac"
                sf.write(path, soxr.resample(native, sr, to), to, subtype="PCM_16")
                e = pipe.estimate(path)
                row[f"pipeline@{to}"], row[f"front_end@{to}"] = e.rate_bpm, e.front_end
                path.unlink()
            row["pipeline@native"] = pipe.estimate(r.path).rate_bpm
        rows.append(row)
        if i % 25 == 0:
            print(f"  rrujo {i}/{len(records)}", flush=True)
    return rows


def score_dsp_only(native: np.ndarray, sr: int, x2: np.ndarray) -> dict[str, float]:
    """The DSP estimators alone (training subjects: the networks saw them)."""
    from pulmo.features.band_envelope import band_envelopes_np
    from pulmo.resp_rate.air import AirDspConfig, estimate_from_envelopes
    from pulmo.resp_rate.dsp import estimate_rate_dsp

    out = {BASELINE: estimate_rate_dsp(x2, 2000), NETS: float("nan")}
    for fmin in GRID["fmin_hz"]:
        logs, _ = band_envelopes_np(native, sr, fmin_hz=fmin)
        for sharpen, agg in itertools.product(GRID["sharpen"], GRID["aggregate"]):
            out[air_name(fmin, sharpen, agg)] = estimate_from_envelopes(logs, AirDspConfig(fmin_hz=fmin, sharpen=sharpen,
                                                                                           aggregate=agg)).rate_bpm
    return out


def plot(test: list[dict[str, Any]], keys: list[str], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2, sharey=True)
    for key in keys:
        style = "k--s" if key == BASELINE else "o-"
        ax1.plot(list(SNR_BANDS), [mae([r for r in test if r["snr_band"] == b], key) for b in SNR_BANDS], style, label=key)
        ax2.plot(list(RATE_BANDS), [mae([r for r in test if rate_band(r["bpm"]) == b], key) for b in RATE_BANDS], style,
                 label=key)
    ax1.set_ylabel("MAE, breaths per minute")
    ax1.set_xlabel("SNR band")
    ax2.set_xlabel("rate band")
    ax1.set_title("simulated air microphone, held-out test settings")
    ax2.legend(fontsize=7)
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-val", type=int, default=120)
    ap.add_argument("--n-test", type=int, default=180)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--skip-rrujo", action="store_true")
    ap.add_argument("--reuse", action="store_true",
                    help="keep the estimates in the existing CSV (each simulated clip is made again and checked against it; "
                    "the RRuJO rows are taken as they are): only --air-nets is scored anew")
    ap.add_argument("--results", default="results/resp_rate_air")
    ap.add_argument("--train", metavar="ROW", help="first train this experiment (configs/experiments/resp-rate/ROW.yaml) "
                    "once per --seeds and write the seeds' vote to --air-nets")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "resp_rate_air")
    ap.add_argument("--air-nets", type=Path, help="a vote of networks trained for air audio: scored beside the default "
                    "and offered to the air front end's choice")
    ap.add_argument("--train-only", action="store_true", help="stop after --train")
    ap.add_argument("--bundle", type=Path, help="write the air front end's choice (and the --air-nets vote where it is "
                    "chosen) into this checkpoint, e.g. src/pulmo/assets/resp_rate_composite.pt")
    ap.add_argument("--cv-section", metavar="ROW", help="cross-validate ROW's networks (--seeds) over RRuJO's subject "
                    "folds and write that section of --results .md alone (see the module docstring)")
    args = ap.parse_args()
    if args.cv_section:
        text = cv_air_networks(args.cv_section, args.seeds, args.runs)
        write_cv_section(text, (ROOT / args.results).with_suffix(".md"))
        print(text)
        return
    import torch

    torch.set_num_threads(1)
    if args.train:
        if args.air_nets is None:
            ap.error("--train needs --air-nets (where the vote goes)")
        print("wrote", train_air_networks(args.train, args.seeds, args.runs, args.air_nets), flush=True)
        if args.train_only:
            return
    from pulmo.inference.resp_rate import RespRatePipeline

    t0 = time.time()
    pipe = RespRatePipeline()
    air_nets = RespRatePipeline(args.air_nets).predictor if args.air_nets else None
    csv_path = (ROOT / args.results).with_suffix(".csv")
    stored = ({r["id"]: {k: num(v) for k, v in r.items()} for r in csv.DictReader(csv_path.open())}
              if args.reuse else None)
    val = simulate("val", args.n_val, args.seconds, 1, pipe, air_nets, stored)
    air_keys = [air_name(*c) for c in itertools.product(*GRID.values())]
    best_air = min(air_keys, key=lambda k: mae(val, k))
    test = simulate("test", args.n_test, args.seconds, 2, pipe, air_nets, stored)
    candidates = [NETS, BASELINE, best_air]
    if air_nets is not None:
        for r in val + test:
            r[MEDIAN] = float(np.median([r[AIR_NETS], r[best_air], r[BASELINE]]))
        candidates += [AIR_NETS, MEDIAN]
    air_choice = min(candidates, key=lambda k: mae(val, k))
    print("val:", {k: round(mae(val, k), 2) for k in candidates}, "->", air_choice, flush=True)
    for r in val + test:  # what the pipeline returns: the chosen estimator on air audio, the networks otherwise
        r["pipeline"] = r[air_choice] if r["front_end"] == "air" else r[NETS]
    from pulmo.resp_rate.air import AIR_DOUBT_ABOVE, NETWORKS_DOUBT_ABOVE, AirDspConfig, doubt_threshold, networks_doubt

    if best_air != air_name(AirDspConfig().fmin_hz, AirDspConfig().sharpen, AirDspConfig().aggregate):
        print(f"WARNING: validation chose {best_air}, the pipeline's AirDspConfig differs: update it", flush=True)
    for r in val + test:  # the doubt of the rate the chosen rule returns (pulmo.resp_rate.air.air_uncertain)
        r["doubt"] = networks_doubt(r[AIR_NETS], r[best_air]) if air_choice == AIR_NETS else r["air_doubt"]
    threshold = doubt_threshold([r["doubt"] for r in val if r["front_end"] == "air"])
    stored_threshold = NETWORKS_DOUBT_ABOVE if air_choice == AIR_NETS else AIR_DOUBT_ABOVE
    if round(threshold, 3) != stored_threshold:
        print(f"WARNING: validation sets the doubt threshold at {threshold:.3f}, the pipeline uses {stored_threshold}: "
              "update pulmo.resp_rate.air", flush=True)
    for r in val + test:
        r["flagged"] = r["front_end"] == "air" and r["doubt"] > threshold
    if args.reuse:
        rr = [r for r in stored.values() if r["set"].startswith("rrujo")]
    else:
        rr = [] if args.skip_rrujo else rrujo_rows(pipe, best_air, (8000, 16000, 44100))
    if air_nets is not None and rr:
        rrujo_air_nets(rr, air_nets, pipe)
    wall = time.time() - t0
    out = ROOT / args.results
    fields = sorted({k for r in val + test + rr for k in r}, key=lambda k: (k not in ("set", "id", "bpm"), k))
    with out.with_suffix(".csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in val + test + rr)
    shown = ["pipeline", NETS, BASELINE, best_air] + ([AIR_NETS, MEDIAN] if air_nets is not None else [])
    plot(test, shown, out.with_suffix(".png"))
    text = page(val, test, rr, air_keys, best_air, air_choice, candidates, shown, args, wall) + doubt_section(test, threshold, air_choice)
    if args.air_nets:
        text += air_nets_section(args.air_nets)
    if args.bundle:
        rule = bundle_air(air_choice, args.air_nets, args.bundle, {k: round(mae(val, k), 3) for k in candidates})
        text += f"\nBundled: `{shown_path(args.bundle)}` now carries the air rule `{rule}` (chosen above on validation).\n"
    out.with_suffix(".md").write_text(text)
    print(text)


def bundle_air(choice: str, air_nets: Path, dest: Path, val_maes: dict[str, float]) -> str:
    """Write the air front end's choice into the checkpoint ``dest`` (key ``air``: the rule of
    :data:`pulmo.resp_rate.air.AIR_RULES`, the air-trained vote where the rule needs it, and
    the validation MAEs it was chosen by); returns the rule."""
    from pulmo.engine.checkpoint import read_checkpoint, save_checkpoint_dict

    rules = {best: "air_dsp" for best in val_maes if best.startswith("air DSP")} | {AIR_NETS: "air_networks",
                                                                                    MEDIAN: "median"}
    if choice not in rules:
        raise SystemExit(f"validation chose {choice}, which the pipeline has no air rule for")
    bundle = read_checkpoint(dest)
    bundle.pop("air", None)
    if rules[choice] != "air_dsp":
        bundle["air"] = {"rule": rules[choice], "networks": read_checkpoint(air_nets), "validation_mae": val_maes}
    save_checkpoint_dict(dest, bundle)
    return rules[choice]


def air_nets_section(path: Path) -> str:
    """How the air-trained vote was made and what each seed scored on its validation (RRuJO
    subjects, the simulator's ``val`` settings) and on RRuJO's fold-0 test subjects."""
    from pulmo.engine.checkpoint import read_checkpoint

    bundle = read_checkpoint(path)
    metrics = bundle["metrics"]
    row = bundle["name"].split("(")[1].split(" seeds")[0]
    minutes = sum(m["train_seconds"] for m in metrics["members"].values()) / 60
    lines = ["", "## Air-trained networks", "",
             f"`{shown_path(path)}`: {bundle['name']}, the pooled vote of one network per seed, made by "
             f"`PULMO_DATA=../shared/data {metrics['command']}` ({minutes:.0f} min of training in all, 1 thread, CPU "
             f"{metrics['cpu']}; config `configs/experiments/resp-rate/{row}.yaml`). Per seed, recording MAE (bpm):", "",
             "| seed | RRuJO val subjects | simulator val clips, seed 7 (epoch and post-processing chosen on these two) | "
             "RRuJO fold-0 test |", "|---|---|---|---|"]
    for seed, m in metrics["members"].items():
        lines.append(f"| {seed} | {m['val']['mae']:.2f} | {m.get('val_air', {}).get('mae', float('nan')):.2f} | "
                     f"{m['test']['mae']:.2f} |")
    return "\n".join(lines) + "\n"


CV_HEADING = "## RRuJO five-fold subject cross-validation"
# cross-validated figures already stored elsewhere, shown beside the air-trained networks' (not rerun):
# (label, results file, section heading it starts with, first cell of its row)
STORED_CV = [
    ("default networks: the shipped composite (vote of 5 composites, `src/pulmo/assets/resp_rate_composite.pt`)",
     "results/resp_rate_seeds5/resp_rate_composite.md", "## Five-fold subject cross-validation", "composite"),
    ("push_heavy_window15_bins (the row the air config extends), seeds 0, 1, 2: single seeds, mean ± std",
     "results/resp_rate_heavy_bins/resp_rate.md", "## Five-fold subject cross-validation: push_heavy_window15_bins",
     "push_heavy_window15_bins (refined), mean ± std over seeds"),
    ("push_heavy_window15_bins, seeds 0, 1, 2: vote (median of the seeds' rates)",
     "results/resp_rate_heavy_bins/resp_rate.md", "## Vote of seeds", "push_heavy_window15_bins"),
    ("push_window15 (the earlier default rate member), seeds 0, 1, 2: single seeds, mean ± std",
     "results/resp_rate.md", "## Five-fold subject cross-validation: push_window15,",
     "push_window15 (refined), mean ± std over seeds"),
    ("push_window15, seeds 0, 1, 2: vote (median of the seeds' rates)", "results/resp_rate.md", "## Vote of seeds",
     "push_window15"),
    ("DSP baseline: harmonic_sum, band and decay chosen per fold on training+validation", "results/resp_rate.md",
     "## Five-fold subject cross-validation: push_window15,", "DSP harmonic_sum (chosen per fold on training+validation)"),
]


def stored_cv(path: str, heading: str, first: str) -> dict[str, str]:
    """The row starting with ``first`` of the first table after the first heading starting with
    ``heading`` in ``path``, by column: n, MAE, CCC and within 1 bpm (cross-validated)."""
    lines = (ROOT / path).read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(heading))
    header = next(ln for ln in lines[start:] if ln.startswith("|"))
    names = [c.strip() for c in header.strip("|").split("|")]
    row = next((ln for ln in lines[start:] if ln.startswith(f"| {first} |")), None)
    if row is None:
        raise SystemExit(f"{path}: no row {first!r} under {heading!r}")
    cells = dict(zip(names, (c.strip().strip("*") for c in row.strip("|").split("|"))))
    if "cross-validated MAE" in cells:  # the vote-of-seeds table: n = every recording
        return {"n": "250", "MAE": cells["cross-validated MAE"], "CCC": cells["cross-validated CCC"],
                "within 1 bpm": cells["within 1 bpm"]}
    return {k: cells[k] for k in ("n", "MAE", "CCC", "within 1 bpm")}


def cv_air_networks(row: str, seeds: list[int], runs: Path) -> str:
    """Train the folds 1-4 runs of ``row`` x ``seeds`` that are missing (fold 0 = the ``--train``
    runs) and return the section: per seed and the seeds' vote (median of their recording rates,
    as ``benchmarks/resp_rate.py`` scores votes), pooled over every RRuJO recording."""
    folds = load_rr_config_folds()
    missing = [s for s in seeds if not (runs / row / f"seed{s}" / "metrics.json").is_file()]
    if missing:
        raise SystemExit(f"no fold-0 run of seeds {missing}: run --train {row} first")
    run_all([(row, s, k) for s in seeds for k in range(1, folds)], 1, runs)
    dirs = {s: [runs / row / f"seed{s}"] + [cv_dir(runs, row, s, k) for k in range(1, folds)] for s in seeds}
    metrics = {s: [json.loads((d / "metrics.json").read_text()) for d in ds] for s, ds in dirs.items()}
    pooled = {s: pooled_report([p for m in ms for p in m["test_predictions"]]) for s, ms in metrics.items()}
    vote = pooled_report([v for k in range(folds) for v in vote_predictions([metrics[s][k]["test_predictions"]
                                                                               for s in seeds])])
    hours = sum(m["train_seconds"] for ms in metrics.values() for m in ms[1:]) / 3600
    shipped = shipped_vote_cv(dirs, metrics, runs / "cv" / row) if len(seeds) > 1 else None

    def line(name: str, r: dict[str, float]) -> str:
        return f"| {name} | {r['n']} | {r['mae']:.2f} | {r['ccc']:.3f} | {r['within_1_bpm']:.2f} | this run |"

    seeds_s = ", ".join(map(str, seeds))
    lines = ["", CV_HEADING, "",
             f"`PULMO_DATA=../shared/data python benchmarks/resp_rate_air.py --cv-section {row} --seeds "
             f"{' '.join(map(str, seeds))}` (config `configs/experiments/resp-rate/{row}.yaml`, seeds {seeds_s}). Each "
             f"subject fold in turn is the test set (the others train and validate, as on fold 0; the simulator's clips "
             f"are the same for every fold); every RRuJO recording is scored once per seed, by the network whose test "
             f"fold holds its subject. Fold 0 is each seed's network of the vote above; folds 1-{folds - 1} were trained "
             f"for this ({hours:.1f} h of training in all, 1 thread, CPU {cpu_name()}). The seeds' vote is scored two "
             f"ways: the median of their recording rates (as `benchmarks/resp_rate.py` scores votes), and as shipped "
             f"(`runs/resp_rate_air/air_vote.pt`: each fold's seeds' fp16 networks made into one vote that fits their "
             f"pooled rate distributions, `pulmo.resp_rate.predictor.VotePredictor`, run on each test recording). "
             f"Beside them, cross-validated figures as stored in the files named (not "
             f"rerun; the same five subject folds, every recording once).", "",
             "| estimator | n | MAE | CCC | within 1 bpm | from |", "|---|---|---|---|---|---|"]
    lines += [line(f"air-trained networks ({row}), seed {s}", r) for s, r in pooled.items()]
    if len(seeds) > 1:
        lines.append(f"| air-trained networks, mean ± std over seeds | {vote['n']} | "
                     + " | ".join(mean_std([r[k] for r in pooled.values()], d) for k, d in
                                  (("mae", 2), ("ccc", 3), ("within_1_bpm", 2))) + " | this run |")
        lines.append(line(f"air-trained networks, vote of seeds {seeds_s}: median of their rates", vote))
        lines.append(line(f"**air-trained networks, vote of seeds {seeds_s}: pooled, as shipped**",
                          pooled_report([p for fold in shipped for p in fold])))
    for label, path, heading, first in STORED_CV:
        c = stored_cv(path, heading, first)
        lines.append(f"| {label} | {c['n']} | {c['MAE']} | {c['CCC']} | {c['within 1 bpm']} | `{path}`, "
                     f"\"{heading.lstrip('# ').rstrip(',')}\" |")
    lines += ["", "Per fold, test MAE / CCC: " + "; ".join(
        f"seed {s} fold {k}: {m['test']['mae']:.2f} / {m['test']['ccc']:.3f}" for s, ms in metrics.items()
        for k, m in enumerate(ms))
              + ("".join(f"; shipped vote fold {k}: {pooled_report(f)['mae']:.2f} / {pooled_report(f)['ccc']:.3f}"
                         for k, f in enumerate(shipped)) if shipped else ""), ""]
    return "\n".join(lines)


def shipped_vote_cv(dirs: dict[int, list[Path]], metrics: dict[int, list[dict[str, Any]]], cache_dir: Path
                    ) -> list[list[tuple[str, float, float]]]:
    """Every RRuJO recording's rate from the vote of the seeds' networks of the fold whose test
    subjects hold it, made as :func:`train_air_networks` makes the shipped vote (fp16, pooled rate
    distributions); ``(key, true, predicted)`` per fold, cached in ``cache_dir`` per seed set. Fold 0's vote
    is the shipped one: its MAE there equals the RRuJO table's fold-0 test figure."""
    from pulmo.engine.checkpoint import half_precision, read_checkpoint
    from pulmo.resp_rate.config import load_rr_config
    from pulmo.resp_rate.data import load_recording
    from pulmo.resp_rate.predictor import predictor_from_checkpoint, vote_checkpoint

    seeds = list(dirs)
    cache = cache_dir / f"shipped_vote_seeds{''.join(map(str, seeds))}.json"
    if cache.is_file():
        return [[tuple(p) for p in fold] for fold in json.loads(cache.read_text())]  # type: ignore[misc]
    root = load_rr_config(CONFIG_DIR / "base.yaml").data.resolved_root()
    out = []
    for k in range(len(dirs[seeds[0]])):
        members = []
        for s in seeds:
            bundle = read_checkpoint(dirs[s][k] / "model.pt")
            bundle["state_dict"] = half_precision(bundle["state_dict"])
            members.append(bundle)
        vote = predictor_from_checkpoint(vote_checkpoint("vote", members, {}))
        out.append([])
        for key, true, _ in metrics[seeds[0]][k]["test_predictions"]:
            x = load_recording(str(root / key), vote.clip.sample_rate_hz, vote.clip.min_s)
            out[-1].append((key, float(true), float(vote.predict(x).rate_bpm)))
        print(f"  shipped vote, fold {k}: {len(out[-1])} recordings", flush=True)
    cache.write_text(json.dumps(out))
    return out


def write_cv_section(text: str, path: Path) -> None:
    """Put ``text`` in place of the section :data:`CV_HEADING` of ``path`` (up to the next
    ``## `` heading), or at the end; the rest of the file is left as it is."""
    old = path.read_text()
    start = old.find("\n" + CV_HEADING)
    if start < 0:
        path.write_text(old.rstrip("\n") + "\n" + text)
        return
    nxt = old.find("\n## ", start + 1)
    path.write_text(old[:start].rstrip("\n") + "\n" + text + (old[nxt:] if nxt >= 0 else ""))


def shown_path(path: Path) -> Path:
    path = path.resolve()
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def doubt_section(test: list[dict[str, Any]], threshold: float, air_choice: str) -> str:
    """Flagged against confident recordings of the test settings (air front end)."""
    air = [r for r in test if r["front_end"] == "air"]
    flagged, confident = [r for r in air if r["flagged"]], [r for r in air if not r["flagged"]]
    if air_choice == AIR_NETS:
        what = ("Doubt of the air-trained networks' rate = |ln(networks / air-band DSP rate)|, their disagreement with "
                "the DSP member (`pulmo.resp_rate.air.networks_doubt`, `NETWORKS_DOUBT_ABOVE`)")
    else:
        what = ("Doubt = IQR / median of the air-band DSP's 20 s window rates + |ln(air-band / baseline rate)| "
                "(`pulmo.resp_rate.air.air_doubt`, `AIR_DOUBT_ABOVE`)")
    return ("\n## Doubt flag on air audio\n\n"
            f"{what}; threshold {threshold:.3f} = the 90th percentile of the validation clips' doubts. Test clips the "
            f"front end called air: {len(flagged)} of {len(air)} flagged; pipeline MAE confident "
            f"{mae(confident, 'pipeline'):.2f}, flagged {mae(flagged, 'pipeline'):.2f}.\n")


def page(val: list, test: list, rr: list, air_keys: list[str], best_air: str, air_choice: str, candidates: list[str],
         shown: list[str], args: argparse.Namespace, wall: float) -> str:
    lines = ["# Respiratory rate through the air", "",
             f"`PULMO_DATA=../shared/data python benchmarks/resp_rate_air.py {' '.join(sys.argv[1:])}` ({wall / 60:.0f} min, "
             f"1 thread, CPU {cpu_name()}). Per-clip rates in `resp_rate_air.csv`, "
             "plot `resp_rate_air.png`. MAE and CCC in breaths per minute, per recording.", "",
             *(["With `--reuse` every estimate but the air-trained networks' (and the median and pipeline made with them) "
                "is kept from the CSV as it was (each simulated clip was made again from its seed and its baseline rate "
                "checked against the stored one; the RRuJO rows are as stored).", ""] if args.reuse else []),
             f"## Chosen on validation (simulator `val` settings: {len(val)} clips, 8/32 kHz, hum and wind)", "",
             "| air-band DSP setting | val MAE |", "|---|---|"]
    lines += [f"| {k}{' (chosen)' if k == best_air else ''} | {mae(val, k):.2f} |" for k in sorted(air_keys, key=lambda k: mae(val, k))[:6]]
    lines += ["", f"Air front end's estimator, lowest val MAE among {len(candidates)} candidates: **{air_choice}** "
              f"({', '.join(f'{k} {mae(val, k):.2f}' for k in candidates)}).", ""]
    n_air = sum(r["front_end"] == "air" for r in test)
    lines += [f"## Held-out simulator settings (`test`: {len(test)} clips, 11.025/22.05/44.1 kHz, traffic and music; "
              f"front end said air for {n_air})", "",
              "| estimator | MAE | CCC | " + " | ".join(SNR_BANDS) + " | " + " | ".join(RATE_BANDS) + " |",
              "|---" * (3 + len(SNR_BANDS) + len(RATE_BANDS)) + "|"]
    for k in shown:
        rep = report(test, k)
        lines.append(f"| {k} | {rep['mae']:.2f} | {rep['ccc']:.3f} | "
                     + " | ".join(f"{mae([r for r in test if r['snr_band'] == b], k):.2f}" for b in SNR_BANDS) + " | "
                     + " | ".join(f"{mae([r for r in test if rate_band(r['bpm']) == b], k):.2f}" for b in RATE_BANDS) + " |")
    lines += ["", "`pipeline` = what `RespRatePipeline.estimate` returns: the chosen estimator where the front end says air, "
              "the networks elsewhere.", ""]
    if rr:
        nets = [NETS] + ([AIR_NETS] if AIR_NETS in shown else [])
        lines += ["## RRuJO (stethoscopes, 2/4/4.5 kHz)", "",
                  "| recordings | n | " + " | ".join(nets) + " | pipeline | " + BASELINE + f" | {best_air} |",
                  "|---" * (5 + len(nets)) + "|"]
        for name in ("rrujo_val", "rrujo_test", "rrujo_train"):
            rows = [r for r in rr if r["set"] == name]
            if not rows:
                continue
            net = " | ".join(f"{mae(rows, k):.2f}" if name != "rrujo_train" else "(seen in training)" for k in nets)
            pl = f"{mae(rows, 'pipeline@native'):.2f}" if name == "rrujo_test" else "-"
            lines.append(f"| {name.split('_')[1]} subjects of fold 0 | {len(rows)} | {net} | {pl} | {mae(rows, BASELINE):.2f} | "
                         f"{mae(rows, best_air):.2f} |")
        lines.append(f"| all 250 (DSP has no training: all held out) | {len(rr)} | " + " | ".join("-" for _ in nets)
                     + f" | - | {mae(rr, BASELINE):.2f} | {mae(rr, best_air):.2f} |")
        test_rr = [r for r in rr if r["set"] == "rrujo_test"]
        lines += ["", "Fold-0 test recordings resampled (band-limited to their own rate, stored at a higher one) and scored "
                  "end to end by `RespRatePipeline.estimate`:", "", "| stored at | MAE | front end said air |", "|---|---|---|"]
        lines.append(f"| as recorded | {mae(test_rr, 'pipeline@native'):.2f} | 0 |")
        for to in (8000, 16000, 44100):
            lines.append(f"| {to / 1000:g} kHz | {mae(test_rr, f'pipeline@{to}'):.2f} | "
                         f"{sum(r[f'front_end@{to}'] == 'air' for r in test_rr)} of {len(test_rr)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
