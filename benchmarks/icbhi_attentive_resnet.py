"""Yang et al. (Interspeech 2020) Table 2 on the ICBHI copy in ../shared/data: train, score, tabulate.

Runs every ``configs/experiments/attentive-resnet/table2_*.yaml`` for each seed (in
parallel worker processes, one CPU thread each), then writes
``results/icbhi_attentive_resnet.csv`` (one line per run) and ``.md`` (mean +- std per
row beside the paper). ``--bundle`` stores the run with the best *validation* score of
the row with the best mean validation score as the default lung-sound model (fp16).

    python benchmarks/icbhi_attentive_resnet.py --seeds 0 1 2 --jobs 2
    python benchmarks/icbhi_attentive_resnet.py --aggregate-only --bundle src/pulmo/assets/lung_sounds.pt
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs/experiments/attentive-resnet").glob("table2_*.yaml"))
ORDER = ["table2_resnet18", "table2_se", "table2_spatial", "table2_se_spatial", "table2_component"]


def run_all(seeds: list[int], jobs: int, out: Path, extra: list[str]) -> None:
    tasks = [(cfg, s) for s in seeds for cfg in CONFIGS]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

    def one(task: tuple[Path, int]) -> int:
        cfg, seed = task
        cmd = [sys.executable, "-m", "pulmo.cli", "reproduce", str(cfg), "--seeds", str(seed), "--out", str(out),
               "--threads", "1", "--quiet", *extra]
        log = out / f"{cfg.stem}_seed{seed}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as fh:
            rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
        print(f"{cfg.stem} seed {seed}: exit {rc} ({log})", flush=True)
        return rc

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        codes = list(pool.map(one, tasks))
    if any(codes):
        sys.exit("some runs failed; see their logs")


def load_runs(out: Path) -> list[dict]:
    runs = []
    for path in sorted(out.glob("table2_*/seed*/metrics.json")):
        m = json.loads(path.read_text())
        m["run_dir"] = str(path.parent)
        runs.append(m)
    return runs


def ms(values: list[float]) -> str:
    a = np.asarray(values, float)
    return f"{a.mean():.4f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.4f}"


def write_results(runs: list[dict], results: Path, command: str) -> dict[str, list[dict]]:
    import yaml

    from pulmo.engine.train import cpu_model_name

    results.mkdir(exist_ok=True)
    by_row: dict[str, list[dict]] = {}
    for r in runs:
        by_row.setdefault(r["name"], []).append(r)
    devices = sorted({d for r in runs for d in r["test"]["per_device"]})
    fields = ["experiment", "seed", "val_score", "test_sensitivity", "test_specificity", "test_score",
              *[f"test_score_{d}" for d in devices], "epochs", "best_val_epoch_score", "train_seconds", "device", "run_dir"]
    with (results / "icbhi_attentive_resnet.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in runs:
            w.writerow({
                "experiment": r["name"], "seed": r["seed"], "val_score": round(r["val"]["score"], 4),
                "test_sensitivity": round(r["test"]["sensitivity"], 4), "test_specificity": round(r["test"]["specificity"], 4),
                "test_score": round(r["test"]["score"], 4),
                **{f"test_score_{d}": round(r["test"]["per_device"].get(d, {}).get("score", float("nan")), 4) for d in devices},
                "epochs": r["epochs_run"] + 1, "best_val_epoch_score": r["best_epoch_val_score"],
                "train_seconds": r["train_seconds"], "device": r["device"], "run_dir": r["run_dir"],
            })
    lines = [
        "# ICBHI 2017: attentive ResNet-18 (Yang et al., Interspeech 2020, Table 2)",
        "",
        "Scores are fractions (paper: percent / 100). Validation = patient-disjoint 30 % of the official training",
        "part (selection and early stopping only). Test = official test split, **covered subset** of the shared copy",
        f"({runs[0]['test']['n']} of 2756 cycles have audio), scored once per run. Mean ± sample std over seeds",
        f"{sorted({r['seed'] for r in runs})}. Not comparable one-to-one with the paper's full test set, which is",
        "dominated by the AKGC417L microphone we mostly lack: see the per-device columns.",
        "",
        f"Reproduce: `{command}`",
        "",
        "| row | paper val AS | val score | paper test Se / Sp / AS | test Se | test Sp | test score | "
        + " | ".join(f"test score {d}" for d in devices) + " | s / run |",
        "|---|---|---|---|---|---|---|" + "---|" * len(devices) + "---|",
    ]
    for name in [n for n in ORDER if n in by_row]:
        rs = by_row[name]
        paper = yaml.safe_load((ROOT / "configs/experiments/attentive-resnet" / f"{name}.yaml").read_text())["paper"]
        per_dev = [ms([r["test"]["per_device"][d]["score"] for r in rs if d in r["test"]["per_device"]]) for d in devices]
        lines.append(
            f"| {name} | {paper['val_score'] / 100:.4f} | {ms([r['val']['score'] for r in rs])} | "
            f"{paper['test_sensitivity'] / 100:.4f} / {paper['test_specificity'] / 100:.4f} / {paper['test_score'] / 100:.4f} | "
            f"{ms([r['test']['sensitivity'] for r in rs])} | {ms([r['test']['specificity'] for r in rs])} | "
            f"{ms([r['test']['score'] for r in rs])} | " + " | ".join(per_dev)
            + f" | {np.mean([r['train_seconds'] for r in rs]):.0f} |"
        )
    lines += ["", f"Device: {cpu_model_name()} (2 cores, no GPU); each run used one CPU thread, two runs at a time.",
              "The trivial classifier that calls every cycle normal scores exactly 0.5 (Se 0, Sp 1).", ""]
    (results / "icbhi_attentive_resnet.md").write_text("\n".join(lines))
    plot_rows(by_row, results / "icbhi_attentive_resnet.png")
    print("\n".join(lines))
    return by_row


def plot_rows(by_row: dict[str, list[dict]], path: Path) -> None:
    """Validation and test score per row: our seeds (dots), their mean +- std (bar), the paper (star)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import yaml

    names = [n for n in ORDER if n in by_row]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for ax, split, paper_key in ((axes[0], "val", "val_score"), (axes[1], "test", "test_score")):
        for i, name in enumerate(names):
            vals = [r[split]["score"] for r in by_row[name]]
            ax.bar(i, np.mean(vals), yerr=np.std(vals, ddof=1) if len(vals) > 1 else 0, color="tab:blue", alpha=0.6, capsize=4)
            ax.scatter([i] * len(vals), vals, color="tab:blue", s=12, zorder=3)
            paper = yaml.safe_load((ROOT / "configs/experiments/attentive-resnet" / f"{name}.yaml").read_text())["paper"]
            ax.scatter(i, paper[paper_key] / 100, marker="*", s=160, color="tab:red", zorder=4, label="paper" if i == 0 else None)
        ax.set_xticks(range(len(names)), [n.replace("table2_", "") for n in names], rotation=20)
        ax.axhline(0.5, color="grey", lw=0.8, ls="--", label="always 'normal' (0.5)" if split == "val" else None)
        ax.set_ylim(0.3, 0.7)
        ax.set_title(f"{split} ICBHI score" + (" (covered subset of the official test split)" if split == "test" else ""))
    axes[0].legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bundle_best(by_row: dict[str, list[dict]], dest: Path, results: Path) -> None:
    """Ship the validation-best run of the validation-best row as fp16 (test numbers play no part).

    The fp16 copy is re-scored on the official test split, and those numbers (what the
    shipped file really does) are stored in it and drawn as a confusion matrix.
    """
    import torch

    from pulmo.config import default_data_root
    from pulmo.engine.checkpoint import half_precision
    from pulmo.inference.lung_sounds import LungSoundPipeline, evaluate_icbhi

    row = max(by_row, key=lambda n: np.mean([r["val"]["score"] for r in by_row[n]]))
    run = max(by_row[row], key=lambda r: r["val"]["score"])
    bundle = torch.load(Path(run["run_dir"]) / "model.pt", map_location="cpu", weights_only=True)
    bundle["state_dict"] = half_precision(bundle["state_dict"])
    bundle["metrics"]["selected_by"] = f"best mean val score over Table 2 rows ({row}), then best val score over seeds"
    bundle["metrics"]["run"] = {"row": row, "seed": run["seed"], "fp32_test_score": run["test"]["score"]}
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save(bundle, dest)
    report = evaluate_icbhi(LungSoundPipeline.from_checkpoint(dest), default_data_root() / "icbhi", "test")
    bundle["metrics"]["test"] = {k: report[k] for k in ("sensitivity", "specificity", "score", "n")}
    bundle["metrics"]["test_per_device"] = report["per_device"]
    torch.save(bundle, dest)
    plot_report(report, f"{row} seed {run['seed']} (bundled, fp16)", results / "icbhi_bundled_model.png")
    print(f"bundled {run['run_dir']} ({row}, seed {run['seed']}) -> {dest} ({dest.stat().st_size / 1e6:.1f} MB); "
          f"test Se {report['sensitivity']:.4f} Sp {report['specificity']:.4f} score {report['score']:.4f}")


def plot_report(report: dict, title: str, path: Path) -> None:
    """Confusion matrix (row-normalised, with counts) and per-class recall / per-device score bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, cm = report["labels"], np.asarray(report["confusion_matrix"], float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4.2))
    a.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            a.text(j, i, f"{int(cm[i, j])}\n{norm[i, j]:.2f}", ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black")
    a.set_xticks(range(len(labels)), labels)
    a.set_yticks(range(len(labels)), labels)
    a.set_xlabel("predicted")
    a.set_ylabel("annotated")
    a.set_title("confusion (count, row fraction)")
    b.bar(labels, [report["recall"][k] for k in labels], color="tab:blue")
    b.set_ylim(0, 1)
    b.set_title("recall per class")
    devs = list(report["per_device"])
    c.bar(devs, [report["per_device"][d]["score"] for d in devs], color="tab:green")
    c.set_ylim(0, 1)
    c.set_title("ICBHI score per device")
    for d_i, d in enumerate(devs):
        c.text(d_i, report["per_device"][d]["score"] + 0.02, f"n={report['per_device'][d]['n']}", ha="center")
    fig.suptitle(f"{title}: official test, covered subset, Se {report['sensitivity']:.3f} Sp "
                 f"{report['specificity']:.3f} score {report['score']:.3f} (n={report['n']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "runs/attentive-resnet")
    ap.add_argument("--results", type=Path, default=ROOT / "results")
    ap.add_argument("--aggregate-only", action="store_true")
    ap.add_argument("--bundle", type=Path, help="write the selected checkpoint here (fp16)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to pulmo reproduce")
    args = ap.parse_args()
    started = time.time()
    if not args.aggregate_only:
        run_all(args.seeds, args.jobs, args.out, [x for s in args.set for x in ("--set", s)])
        print(f"all runs: {time.time() - started:.0f} s wall")
    runs = load_runs(args.out)
    if not runs:
        sys.exit(f"no finished runs under {args.out}")
    by_row = write_results(runs, args.results, f"python benchmarks/icbhi_attentive_resnet.py --seeds {' '.join(map(str, args.seeds))} --jobs {args.jobs}")
    if args.bundle:
        bundle_best(by_row, args.bundle, args.results)


if __name__ == "__main__":
    main()
