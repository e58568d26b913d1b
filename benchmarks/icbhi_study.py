"""Shared machinery of the ICBHI benchmark scripts: run configs x seeds, tabulate, plot, bundle.

A study is a folder of experiment configs (one per row) run for several seeds through
``pulmo reproduce`` in worker processes (one CPU thread each). Results: a CSV with one
line per run and a Markdown table with mean +- sample std per row beside the paper's
numbers (percent in the configs, fractions in the tables).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from bench_format import mean_std
from bench_jobs import run_logged

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


@dataclass
class Study:
    """``rows``: config stems under ``config_dir``, in table order; ``stem``: results file name."""

    title: str
    config_dir: Path
    rows: Sequence[str]
    stem: str

    def config(self, row: str) -> Path:
        return self.config_dir / f"{row}.yaml"

    def paper(self, row: str) -> dict[str, float]:
        return yaml.safe_load(self.config(row).read_text()).get("paper", {}) if self.config(row).is_file() else {}


def run_all(study: Study, rows: Sequence[str], seeds: Sequence[int], jobs: int, out: Path, extra: Sequence[str]) -> None:
    """Every row x seed through ``pulmo reproduce``, ``jobs`` at a time; a log per run under ``out``."""
    run_logged([(f"{row} seed {seed}",
                 [sys.executable, "-m", "pulmo.cli", "reproduce", str(study.config(row)), "--seeds", str(seed),
                  "--out", str(out), "--threads", "1", "--quiet", *extra],
                 out / f"{row}_seed{seed}.log") for seed in seeds for row in rows], jobs)


def load_runs(study: Study, out: Path, recorded: Path | None = None) -> dict[str, list[dict[str, Any]]]:
    """Finished runs by row, in the study's row order, seeds ascending; runs in the ``recorded``
    results CSV whose folders are gone are kept from it (see ``runs_from_csv``)."""
    found = runs_from_csv(recorded) if recorded else {}
    for row in study.rows:
        for path in out.glob(f"{row}/seed*/metrics.json"):
            m = json.loads(path.read_text())
            m["run_dir"] = os.path.relpath(path.parent.resolve(), ROOT)  # results files carry no machine's paths
            found[(row, int(m["seed"]))] = m
    by_row: dict[str, list[dict[str, Any]]] = {}
    for key in sorted(found, key=lambda k: k[1]):
        by_row.setdefault(key[0], []).append(found[key])
    return {row: by_row[row] for row in study.rows if row in by_row}


def runs_from_csv(path: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """Runs recorded in an earlier results CSV (``write_csv``'s columns), by ``(row, seed)``.

    For runs whose folders are gone (``runs/`` is not kept between machines): they hold the
    measured scores only, so they are tabulated and plotted but not ensembled or bundled.
    """
    if not path.is_file():
        return {}
    out = {}
    with path.open() as fh:
        for line in csv.DictReader(fh):
            devices = {k.removeprefix("test_score_"): {"score": float(v)} for k, v in line.items()
                       if k.startswith("test_score_") and v not in ("", "nan")}
            out[(line["experiment"], int(line["seed"]))] = {
                "name": line["experiment"], "seed": int(line["seed"]), "val": {"score": float(line["val_score"])},
                "test": {"sensitivity": float(line["test_sensitivity"]), "specificity": float(line["test_specificity"]),
                         "score": float(line["test_score"]), "n": int(line["test_n"]), "per_device": devices},
                "epochs_run": int(line["epochs"]) - 1, "best_epoch_val_score": float(line["best_val_epoch_score"]),
                "train_seconds": float(line["train_seconds"]), "device": line["device"], "run_dir": line["run_dir"],
                "from_csv": True,
            }
    return out


def devices_of(by_row: dict[str, list[dict[str, Any]]]) -> list[str]:
    return sorted({d for rs in by_row.values() for r in rs for d in r["test"]["per_device"]})


def write_csv(by_row: dict[str, list[dict[str, Any]]], path: Path) -> None:
    devices = devices_of(by_row)
    fields = ["experiment", "seed", "val_score", "test_sensitivity", "test_specificity", "test_score", "test_n",
              *[f"test_score_{d}" for d in devices], "epochs", "best_val_epoch_score", "train_seconds", "device", "run_dir"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for rs in by_row.values():
            for r in rs:
                w.writerow({
                    "experiment": r["name"], "seed": r["seed"], "val_score": round(r["val"]["score"], 4),
                    "test_sensitivity": round(r["test"]["sensitivity"], 4),
                    "test_specificity": round(r["test"]["specificity"], 4), "test_score": round(r["test"]["score"], 4),
                    "test_n": r["test"]["n"],
                    **{f"test_score_{d}": round(r["test"]["per_device"].get(d, {}).get("score", float("nan")), 4)
                       for d in devices},
                    "epochs": r.get("epochs_run", -1) + 1, "best_val_epoch_score": r.get("best_epoch_val_score"),
                    "train_seconds": r.get("train_seconds"), "device": r.get("device"), "run_dir": r.get("run_dir"),
                })


def preamble(study: Study, by_row: dict[str, list[dict[str, Any]]], command: str, notes: Sequence[str]) -> list[str]:
    """Title, protocol, ``notes`` and the command of a results page."""
    n_test = next(iter(by_row.values()))[0]["test"]["n"]
    return [
        f"# {study.title}",
        "",
        "Scores are fractions (paper: percent / 100). Validation = patient-disjoint 30 % of the official training",
        "part (selection and early stopping only). Test = official test split, **covered subset** of the shared copy",
        f"({n_test} of 2756 cycles have audio), scored once per run.",
        *notes,
        "",
        f"Reproduce: `{command}`",
        "",
    ]


def finish_page(study: Study, by_row: dict[str, list[dict[str, Any]]], lines: list[str], results: Path, how: str) -> None:
    """Append the runs' CPUs (``how``: how they ran) and the trivial baseline; write the page and its figure."""
    cpus = sorted({r["device"] for rs in by_row.values() for r in rs if r.get("device")})
    lines += ["", f"Device of the runs: {'; '.join(cpus)} ({how}).",
              "The trivial classifier that calls every cycle normal scores exactly 0.5 (Se 0, Sp 1).", ""]
    (results / f"{study.stem}.md").write_text("\n".join(lines))
    plot_rows(study, by_row, results / f"{study.stem}.png")
    print("\n".join(lines))


def row_cells(rs: list[dict[str, Any]], devices: Sequence[str]) -> list[str]:
    """val score, test Se, Sp, score and per-device test scores as mean ± std cells."""
    per_dev = [mean_std([r["test"]["per_device"][d]["score"] for r in rs if d in r["test"]["per_device"]], 4)
               for d in devices]
    return [mean_std([r["val"]["score"] for r in rs], 4), mean_std([r["test"]["sensitivity"] for r in rs], 4),
            mean_std([r["test"]["specificity"] for r in rs], 4), mean_std([r["test"]["score"] for r in rs], 4), *per_dev]


def plot_rows(study: Study, by_row: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Validation and test score per row: seeds (dots), mean +- std (bar), the paper where it has one (star)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(by_row)
    fig, axes = plt.subplots(1, 2, figsize=(max(12, 1.6 * len(names) * 2), 4.2), sharey=True)
    starred = False
    for ax, split in ((axes[0], "val"), (axes[1], "test")):
        for i, name in enumerate(names):
            vals = [r[split]["score"] for r in by_row[name]]
            ax.bar(i, np.mean(vals), yerr=np.std(vals, ddof=1) if len(vals) > 1 else 0, color="tab:blue", alpha=0.6, capsize=4)
            ax.scatter([i] * len(vals), vals, color="tab:blue", s=12, zorder=3)
            paper = study.paper(name).get(f"{split}_score")
            if paper is not None:
                ax.scatter(i, paper / 100, marker="*", s=160, color="tab:red", zorder=4, label=None if starred else "paper")
                starred = True
        ax.set_xticks(range(len(names)), [n.replace("table2_", "") for n in names], rotation=25, ha="right")
        ax.axhline(0.5, color="grey", lw=0.8, ls="--", label="always 'normal' (0.5)" if split == "val" else None)
        ax.set_ylim(0.3, 0.7)
        ax.set_title(f"{split} ICBHI score" + (" (covered subset of the official test split)" if split == "test" else ""))
    axes[0].legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_report(report: dict[str, Any], title: str, path: Path) -> None:
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


def bundle_run(
    run: dict[str, Any], selected_by: str, row: str, dest: Path, figure: Path, display_name: str | None = None
) -> dict[str, Any]:
    """Ship ``run``'s checkpoint as fp16, re-scored on the official test split; numbers stored in it.
    ``display_name`` replaces the experiment's name as the model's name that users see.

    The fp16 copy is what users get, so its own test numbers (not the fp32 run's) are stored
    and drawn as a confusion matrix. Returns the test report.
    """
    import torch

    from pulmo.config import default_data_root
    from pulmo.engine.checkpoint import half_precision
    from pulmo.inference.lung_sounds import LungSoundPipeline, evaluate_icbhi

    bundle = torch.load(ROOT / run["run_dir"] / "model.pt", map_location="cpu", weights_only=True)
    bundle["state_dict"] = half_precision(bundle["state_dict"])
    bundle["name"] = display_name or bundle["name"]
    bundle["metrics"]["selected_by"] = selected_by
    bundle["metrics"]["run"] = {"row": row, "seed": run["seed"], "fp32_test_score": run["test"]["score"]}
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save(bundle, dest)
    report = evaluate_icbhi(LungSoundPipeline.from_checkpoint(dest), default_data_root() / "icbhi", "test")
    bundle["metrics"]["test"] = {k: report[k] for k in ("sensitivity", "specificity", "score", "n")}
    bundle["metrics"]["test_per_device"] = report["per_device"]
    torch.save(bundle, dest)
    plot_report(report, f"{row} seed {run['seed']} (bundled, fp16)", figure)
    print(f"bundled {run['run_dir']} ({row}, seed {run['seed']}) -> {dest} ({dest.stat().st_size / 1e6:.1f} MB); "
          f"test Se {report['sensitivity']:.4f} Sp {report['specificity']:.4f} score {report['score']:.4f}")
    return report


def study_parser(doc: str | None, default_out: Path) -> argparse.ArgumentParser:
    """The options every study script takes (seeds, jobs, run and results folders, bundling)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=default_out)
    ap.add_argument("--results", type=Path, default=ROOT / "results")
    ap.add_argument("--aggregate-only", action="store_true")
    ap.add_argument("--fresh", action="store_true", help="tabulate only runs on disk, not those recorded in the results CSV")
    ap.add_argument("--bundle", type=Path, help="write the selected checkpoint here (fp16)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to pulmo reproduce")
    return ap


def run_and_load(study: Study, args: argparse.Namespace, rows: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Run ``rows`` x ``args.seeds`` unless ``--aggregate-only``, then load every finished run."""
    started = time.time()
    if not args.aggregate_only:
        run_all(study, rows, args.seeds, args.jobs, args.out, [x for s in args.set for x in ("--set", s)])
        print(f"all runs: {time.time() - started:.0f} s wall")
    by_row = load_runs(study, args.out, None if args.fresh else args.results / f"{study.stem}.csv")
    if not by_row:
        sys.exit(f"no finished runs under {args.out}")
    return by_row


def best_by_validation(by_row: dict[str, list[dict[str, Any]]]) -> tuple[str, dict[str, Any]]:
    """The row with the best mean val score, then its seed with the best val score (test plays no part)."""
    row = max(by_row, key=lambda n: np.mean([r["val"]["score"] for r in by_row[n]]))
    return row, max(by_row[row], key=lambda r: r["val"]["score"])


def on_disk(rs: list[dict[str, Any]]) -> bool:
    """All of these runs still have their folders (not only a line in a results CSV)."""
    return all(not r.get("from_csv") for r in rs)
