"""Lung sounds across stethoscopes: ICBHI + KAUH (MIL), stethoscope-response augmentation and
self-supervised pretraining, each as a row, under two protocols that are never mixed.

- official: ICBHI's train/test split (covered subset of the shared copy), seeds 0 1 2;
- pooled_cv: all covered ICBHI cycles in 5 patient-disjoint folds balanced by device and
  label (seeds 0 1 2 per fold), a second protocol that separates "the method cannot learn" from
  "the official training part holds almost no Littmann 3200".

Validation is always a patient-disjoint carve of the training part; the test fold is scored
once. KAUH is cut into 5 subject-disjoint folds; fold K is held out in fold K's runs (fold 0
in official runs) and scored at recording level for every row.

    python benchmarks/icbhi_multidataset.py pretrain            # encoder for the last row (~10 min)
    python benchmarks/icbhi_multidataset.py run --jobs 2        # every row x protocol x seed
    python benchmarks/icbhi_multidataset.py report [--bundle src/pulmo/assets/lung_sounds_small_cnn.pt]
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

import numpy as np
from bench_format import mean_std
from bench_jobs import run_logged

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
CONFIGS = ROOT / "configs/experiments/multidataset"
ROWS = ("icbhi_only", "kauh_mil", "kauh_mil_device_aug", "kauh_mil_device_aug_pretrained",
        # each adds one thing to the pretrained row (not to each other); added after the first four had run
        "kauh_mil_device_aug_pretrained_devbal", "kauh_mil_device_aug_pretrained_adv")
RUNS = ROOT / "runs/icbhi_multidataset"
FOLDS = 5
DEVICES = ("AKGC417L", "Litt3200", "LittC2SE", "Meditron")
DISPLAY_NAME = "compact CNN, ICBHI + KAUH"  # the bundled model's name in results and reports


def cmd_pretrain(args: argparse.Namespace) -> None:
    """Masked spectrogram pretraining on unlabelled RRuJO and KAUH audio (no ICBHI audio, so no
    test audio of either protocol), with the rows' features and encoder."""
    import torch

    from pulmo.config import default_data_root, load_config
    from pulmo.data.adapters.breath_csv import load_breath_csv
    from pulmo.data.adapters.kauh import load_kauh
    from pulmo.data.cycles import load_cycle_waveforms
    from pulmo.engine.pretrain import pretrain_encoder
    from pulmo.engine.train import build_net

    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = load_config(CONFIGS / "base.yaml")
    root = default_data_root()
    records = load_breath_csv(root / "rrujo") + load_kauh(root / "kauh")
    waves = load_cycle_waveforms(records, config.audio, progress=True)
    net = build_net(config, len(config.data.classes))
    out = RUNS / "pretrained_encoder.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    info = pretrain_encoder(net, waves, config.audio.cycle_samples, args.steps, out, seed=0)
    hours = sum(len(w) for w in waves) / config.audio.sample_rate_hz / 3600
    info.update(recordings=len(records), hours=round(hours, 2), steps=args.steps, device=_device())
    (RUNS / "pretrain.json").write_text(json.dumps(info, indent=2))
    print(f"pretrained on {len(records)} recordings ({hours:.1f} h) in {info['seconds']:.0f} s; "
          f"loss {info['loss_curve'][0]} -> {info['loss_curve'][-1]} -> {out.relative_to(ROOT)}")


def run_dir(protocol: str, row: str, seed: int) -> Path:
    return RUNS / protocol / row / f"seed{seed}"


def protocols() -> list[tuple[str, list[str], list[int]]]:
    """(folder, --set overrides, seeds) of every protocol part."""
    parts = [("official", [], [0, 1, 2])]
    parts += [(f"cv_fold{k}", ["data.protocol=pooled_cv", f"data.fold={k}"], [0, 1, 2]) for k in range(FOLDS)]
    return parts


def cmd_run(args: argparse.Namespace) -> None:
    """Train the runs not yet done: every row x protocol part x seed, or ``--only`` those named
    ``PART/ROW/SEED`` (e.g. ``official/kauh_mil/1``, ``cv_fold3/icbhi_only/0``), in that order."""
    plan = {f"{folder}/{row}/{seed}": (folder, sets, row, seed)
            for folder, sets, seeds in protocols() for seed in seeds for row in ROWS}
    names = args.only or [n for n in plan if n.split("/")[1] in args.rows]
    unknown = [n for n in names if n not in plan]
    if unknown:
        sys.exit(f"unknown runs {unknown}; runs are PART/ROW/SEED, e.g. {next(iter(plan))}")
    commands = []
    for name in names:
        folder, sets, row, seed = plan[name]
        if (run_dir(folder, row, seed) / "metrics.json").is_file():
            continue
        argv = [sys.executable, "-m", "pulmo.cli", "reproduce", str(CONFIGS / f"{row}.yaml"), "--seeds", str(seed),
                "--out", str(RUNS / folder), "--threads", "1", "--quiet", *[x for s in sets for x in ("--set", s)]]
        commands.append((name, argv, RUNS / "logs" / f"{folder}_{row}_seed{seed}.log"))
    print(f"{len(commands)} runs to go", flush=True)
    started = time.time()
    run_logged(commands, args.jobs)
    print(f"all runs: {time.time() - started:.0f} s wall")


def load_runs() -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Finished runs by (protocol, row): ``official`` seeds, or ``pooled_cv`` folds."""
    found: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for folder, _, seeds in protocols():
        protocol = "official" if folder == "official" else "pooled_cv"
        for row in ROWS:
            for seed in seeds:
                path = run_dir(folder, row, seed) / "metrics.json"
                if path.is_file():
                    m = json.loads(path.read_text())
                    m["run_dir"] = os.path.relpath(path.parent, ROOT)
                    found.setdefault((protocol, row), []).append(m)
    return found


def csv_rows(runs: dict[tuple[str, str], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for (protocol, row), rs in runs.items():
        for m in rs:
            kauh = m.get("kauh_test", {})
            out.append({
                "protocol": protocol, "row": row, "seed": m["seed"], "fold": m["data"].get("protocol", ""),
                "val_score": round(m["val"]["score"], 4), "test_se": round(m["test"]["sensitivity"], 4),
                "test_sp": round(m["test"]["specificity"], 4), "test_score": round(m["test"]["score"], 4),
                "test_n": m["test"]["n"],
                **{f"test_score_{d}": round(m["test"]["per_device"].get(d, {}).get("score", float("nan")), 4) for d in DEVICES},
                **{f"kauh_auc_{k}": round(kauh.get(k, {}).get("auc", float("nan")), 4)
                   for k in ("adventitious", "crackle", "wheeze")},
                "epochs": m["epochs_run"] + 1, "train_seconds": m["train_seconds"], "device": m["device"], "run_dir": m["run_dir"],
            })
    return out


def cmd_report(args: argparse.Namespace) -> None:
    runs = load_runs()
    if not runs:
        sys.exit(f"no finished runs under {os.path.relpath(RUNS, ROOT)}")
    rows = csv_rows(runs)
    args.results.mkdir(parents=True, exist_ok=True)
    with (args.results / "icbhi_multidataset.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = [
        "# Lung sounds across stethoscopes: ICBHI + KAUH, stethoscope-response augmentation, pretraining",
        "",
        "Each of the first four rows adds one thing to the row above it; the last two each add one thing to the"
        " pretrained row (device-balanced sampling; a device adversary). Two protocols, never mixed:",
        "",
        "- **official**: ICBHI's train/test split, covered subset of the shared copy (1,071 test cycles, 461 of them",
        "  Littmann 3200, against 41 Littmann 3200 cycles in the covered training part); mean ± sample std over seeds 0, 1, 2.",
        "- **pooled 5-fold** (a second protocol, not comparable with published official-split scores): all 2,985 covered",
        "  cycles in 5 patient-disjoint folds balanced by device and label (scikit-learn `StratifiedGroupKFold`);",
        "  mean ± sample std over every finished (fold, seed) run, `runs` of them (15 = 5 folds x seeds 0, 1, 2).",
        "",
        "Validation (model selection, early stopping) is a patient-disjoint 30 % carve of each run's training part; the test",
        "split or fold is scored once. KAUH (Littmann 3200, 112 subjects, 3 filter modes, 8 conflicting files left out) is cut",
        "into 5 subject-disjoint folds: fold K is held out in fold K's runs (fold 0 in official runs), so the KAUH columns are",
        "subject-disjoint cross-validation for rows that train on KAUH and a cross-dataset check for the first row.",
        "KAUH AUC: recording-level ROC AUC, a recording's score being its highest window's (multiple-instance rule).",
        "The trivial classifier that calls every cycle normal scores 0.500.",
        "",
        "Reproduce: `python benchmarks/icbhi_multidataset.py pretrain && python benchmarks/icbhi_multidataset.py run --jobs 2"
        " && python benchmarks/icbhi_multidataset.py report"
        + (f" --bundle {os.path.relpath(args.bundle, ROOT)}`" if args.bundle else "`"),
        "",
    ]
    for protocol, title in (("official", "Official split (covered test)"), ("pooled_cv", "Pooled 5-fold, patient-disjoint")):
        lines += [f"## {title}", "",
                  "| row | runs | val score | test Se | test Sp | **test score** | " + " | ".join(DEVICES)
                  + " | KAUH AUC adventitious | crackle | wheeze | s / run |",
                  "|---|---|---|---|---|---|" + "---|" * len(DEVICES) + "---|---|---|---|"]
        for row in ROWS:
            rs = runs.get((protocol, row), [])
            if not rs:
                lines.append(f"| {row} | 0 | not run |" + " |" * (7 + len(DEVICES)))
                continue
            kauh = [m.get("kauh_test", {}) for m in rs]
            lines.append("| " + " | ".join([
                row, str(len(rs)), mean_std([m["val"]["score"] for m in rs]), mean_std([m["test"]["sensitivity"] for m in rs]),
                mean_std([m["test"]["specificity"] for m in rs]), f"**{mean_std([m['test']['score'] for m in rs])}**",
                *[mean_std([m["test"]["per_device"].get(d, {}).get("score", float("nan")) for m in rs]) for d in DEVICES],
                *[mean_std([k.get(c, {}).get("auc", float("nan")) for k in kauh]) for c in ("adventitious", "crackle", "wheeze")],
                f"{np.mean([m['train_seconds'] for m in rs]):.0f}",
            ]) + " |")
        lines.append("")
    lines += _descriptions() + _pretrain_lines() + [f"Device: {rows[0]['device']}; runs shared the 2 cores with other jobs."]
    if args.bundle:
        lines += ["", *bundle_selected(runs, args.bundle)]
    (args.results / "icbhi_multidataset.md").write_text("\n".join(lines) + "\n")
    plot(runs, args.results / "icbhi_multidataset.png")
    print("\n".join(lines))


def _descriptions() -> list[str]:
    import yaml

    out = ["Rows:", ""]
    for row in ROWS:
        out.append(f"- `{row}`: {yaml.safe_load((CONFIGS / f'{row}.yaml').read_text())['description']}")
    return [*out, ""]


def _pretrain_lines() -> list[str]:
    path = RUNS / "pretrain.json"
    if not path.is_file():
        return []
    from pulmo.engine.checkpoint import file_hash

    info = json.loads(path.read_text())
    encoder = RUNS / "pretrained_encoder.pt"
    digest = f" Encoder file SHA-256 {file_hash(encoder)[:16]}... (every pretrained row read this one)." if encoder.is_file() else ""
    return [f"Pretraining: {info['recordings']} unlabelled recordings ({info['hours']} h of RRuJO and KAUH audio; no ICBHI audio,"
            f" so no test audio of either protocol), {info['steps']} steps of 32 crops, masked-patch reconstruction loss"
            f" {info['loss_curve'][0]} -> {info['loss_curve'][-1]}, {info['seconds'] / 60:.0f} min on {info['device']}."
            " KAUH audio was seen unlabelled, so the pretrained rows' KAUH columns are not independent of it." + digest, ""]


def plot(runs: dict[tuple[str, str], list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, protocol, title in ((axes[0], "official", "official split (covered test)"),
                                (axes[1], "pooled_cv", "pooled 5-fold, patient-disjoint")):
        for i, row in enumerate(ROWS):
            rs = runs.get((protocol, row), [])
            if not rs:
                continue
            score = [m["test"]["score"] for m in rs]
            ax.bar(i, np.mean(score), yerr=np.std(score, ddof=1) if len(score) > 1 else 0, color="#9bbbd4", capsize=3)
            for j, d in enumerate(DEVICES):
                v = [m["test"]["per_device"].get(d, {}).get("score", np.nan) for m in rs]
                if not np.all(np.isnan(v)):
                    ax.plot(i - 0.3 + 0.2 * j, np.nanmean(v), "o^sD"[j], color=f"C{j}", label=d if i == 0 else None)
        ax.axhline(0.5, color="k", ls="--", lw=0.8, label="all normal (0.5)")
        ax.set_xticks(range(len(ROWS)), ["ICBHI", "+KAUH", "+device\naug.", "+pre-\ntrained", "pretr.\n+dev. bal.",
                                         "pretr.\n+dev. adv."], fontsize=8)
        ax.set_title(title)
        ax.set_ylim(0.3, 0.75)
    axes[0].set_ylabel("ICBHI score (mean of Se and Sp)")
    axes[1].legend(fontsize=8, loc="upper left")  # the pooled folds hold every device
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bundle_selected(runs: dict[tuple[str, str], list[dict[str, Any]]], dest: Path) -> list[str]:
    """Ship the official run chosen by validation alone (best row by mean val score, then its best
    seed) if its validation score beats the present bundled model's on the same validation cycles.
    Where that run is already the bundled model, its stored (fp16, re-scored) numbers are reported."""
    import torch

    from pulmo.catalog import ASSETS, BUNDLED

    official = {row: rs for (protocol, row), rs in runs.items() if protocol == "official"}
    row = max(official, key=lambda r: np.mean([m["val"]["score"] for m in official[r]]))
    run = max(official[row], key=lambda m: m["val"]["score"])
    present = torch.load(ASSETS / BUNDLED["lung-sounds"][0], map_location="cpu", weights_only=False)["metrics"]
    chosen = f"{row}, seed {run['seed']} (val {run['val']['score']:.3f})"
    if present.get("run", {}).get("row") == row and present["run"].get("seed") == run["seed"]:
        return [_bundled_line(chosen, BUNDLED["lung-sounds"][0], present["test"], present["test_per_device"])]
    if run["val"]["score"] <= present["val"]["score"]:
        return [f"Not bundled: the validation-chosen run ({chosen}) does not beat the present model's validation score "
                f"({present['val']['score']:.3f})."]
    from icbhi_study import bundle_run

    report = bundle_run(run, "best mean val score over the rows of benchmarks/icbhi_multidataset.py (official protocol), "
                        "then best val score over seeds", row, dest, ROOT / "results" / "icbhi_bundled_model.png",
                        display_name=DISPLAY_NAME)
    return [_bundled_line(f"{chosen}, replacing a model of val {present['val']['score']:.3f}", dest.name, report,
                          report["per_device"])]


def _bundled_line(chosen: str, file: str, test: dict[str, Any], per_device: dict[str, Any]) -> str:
    devices = ", ".join(f"{d} {v['score']:.3f} (n={v['n']})" for d, v in sorted(per_device.items()))
    return (f"Bundled model (`src/pulmo/assets/{file}`, fp16), chosen by validation only: {chosen}. Official covered test,"
            f" as shipped: Se {test['sensitivity']:.3f}, Sp {test['specificity']:.3f}, **score {test['score']:.3f}**"
            f" (n={test['n']}); per device {devices}.")


def _device() -> str:
    from pulmo.engine.train import cpu_model_name

    return f"CPU {cpu_model_name()}, 1 thread"


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pretrain", help="pretrain the encoder of the last row")
    p.add_argument("--steps", type=int, default=1500)
    p = sub.add_parser("run", help="train every row x protocol x seed not yet done")
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    p.add_argument("--only", nargs="+", metavar="PART/ROW/SEED", help="just these runs, in this order")
    p.add_argument("--jobs", type=int, default=2)
    p = sub.add_parser("report", help="write results/icbhi_multidataset.md|csv|png")
    p.add_argument("--results", type=Path, default=ROOT / "results")
    p.add_argument("--bundle", type=Path, help="ship the validation-chosen official run here (fp16)")
    args = ap.parse_args()
    {"pretrain": cmd_pretrain, "run": cmd_run, "report": lambda a: cmd_report(a)}[args.command](args)
