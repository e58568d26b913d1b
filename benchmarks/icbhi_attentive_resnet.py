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
import sys
import time
from pathlib import Path

import numpy as np
from icbhi_study import ROOT, Study, bundle_run, devices_of, load_runs, plot_rows, row_cells, run_all, write_csv

STUDY = Study(
    title="ICBHI 2017: attentive ResNet-18 (Yang et al., Interspeech 2020, Table 2)",
    config_dir=ROOT / "configs/experiments/attentive-resnet",
    rows=["table2_resnet18", "table2_se", "table2_spatial", "table2_se_spatial", "table2_component"],
    stem="icbhi_attentive_resnet",
)


def write_results(by_row: dict[str, list[dict]], results: Path, command: str) -> None:
    from pulmo.engine.train import cpu_model_name

    devices = devices_of(by_row)
    write_csv(by_row, results / f"{STUDY.stem}.csv")
    first = next(iter(by_row.values()))[0]
    lines = [
        f"# {STUDY.title}",
        "",
        "Scores are fractions (paper: percent / 100). Validation = patient-disjoint 30 % of the official training",
        "part (selection and early stopping only). Test = official test split, **covered subset** of the shared copy",
        f"({first['test']['n']} of 2756 cycles have audio), scored once per run. Mean ± sample std over seeds",
        f"{sorted({r['seed'] for rs in by_row.values() for r in rs})}. Not comparable one-to-one with the paper's full test set, which is",
        "dominated by the AKGC417L microphone we mostly lack: see the per-device columns.",
        "",
        f"Reproduce: `{command}`",
        "",
        "| row | paper val AS | val score | paper test Se / Sp / AS | test Se | test Sp | test score | "
        + " | ".join(f"test score {d}" for d in devices) + " | s / run |",
        "|---|---|---|---|---|---|---|" + "---|" * len(devices) + "---|",
    ]
    for name, rs in by_row.items():
        paper = STUDY.paper(name)
        val, se, sp, score, *per_dev = row_cells(rs, devices)
        lines.append(
            f"| {name} | {paper['val_score'] / 100:.4f} | {val} | "
            f"{paper['test_sensitivity'] / 100:.4f} / {paper['test_specificity'] / 100:.4f} / {paper['test_score'] / 100:.4f} | "
            f"{se} | {sp} | {score} | " + " | ".join(per_dev) + f" | {np.mean([r['train_seconds'] for r in rs]):.0f} |"
        )
    lines += ["", f"Device: {cpu_model_name()} (2 cores, no GPU); each run used one CPU thread, two runs at a time.",
              "The trivial classifier that calls every cycle normal scores exactly 0.5 (Se 0, Sp 1).", ""]
    (results / f"{STUDY.stem}.md").write_text("\n".join(lines))
    plot_rows(STUDY, by_row, results / f"{STUDY.stem}.png")
    print("\n".join(lines))


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
        run_all(STUDY, STUDY.rows, args.seeds, args.jobs, args.out, [x for s in args.set for x in ("--set", s)])
        print(f"all runs: {time.time() - started:.0f} s wall")
    by_row = load_runs(STUDY, args.out)
    if not by_row:
        sys.exit(f"no finished runs under {args.out}")
    write_results(by_row, args.results, f"python benchmarks/icbhi_attentive_resnet.py --seeds {' '.join(map(str, args.seeds))} --jobs {args.jobs}")
    if args.bundle:
        row = max(by_row, key=lambda n: np.mean([r["val"]["score"] for r in by_row[n]]))
        run = max(by_row[row], key=lambda r: r["val"]["score"])
        bundle_run(run, f"best mean val score over Table 2 rows ({row}), then best val score over seeds", row,
                   args.bundle, args.results / "icbhi_bundled_model.png")


if __name__ == "__main__":
    main()
