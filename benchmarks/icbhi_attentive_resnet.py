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

import sys
from pathlib import Path

import numpy as np
from icbhi_study import (
    ROOT, Study, best_by_validation, bundle_run, devices_of, finish_page, on_disk, preamble, row_cells, run_and_load, study_parser,
    write_csv,
)

STUDY = Study(
    title="ICBHI 2017: attentive ResNet-18 (Yang et al., Interspeech 2020, Table 2)",
    config_dir=ROOT / "configs/experiments/attentive-resnet",
    rows=["table2_resnet18", "table2_se", "table2_spatial", "table2_se_spatial", "table2_component"],
    stem="icbhi_attentive_resnet",
)


def write_results(by_row: dict[str, list[dict]], results: Path, command: str) -> None:
    devices = devices_of(by_row)
    write_csv(by_row, results / f"{STUDY.stem}.csv")
    seeds = sorted({r["seed"] for rs in by_row.values() for r in rs})
    lines = [
        *preamble(STUDY, by_row, command, [
            f"Mean ± sample std over seeds {seeds}. Not comparable one-to-one with the paper's full test set, which is",
            "dominated by the AKGC417L microphone we mostly lack: see the per-device columns.",
        ]),
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
    finish_page(STUDY, by_row, lines, results, "2 cores, no GPU; each run used one CPU thread, two runs at a time")


def main() -> None:
    args = study_parser(__doc__, ROOT / "runs/attentive-resnet").parse_args()
    by_row = run_and_load(STUDY, args, STUDY.rows)
    write_results(by_row, args.results, f"python benchmarks/icbhi_attentive_resnet.py --seeds {' '.join(map(str, args.seeds))} --jobs {args.jobs}")
    if args.bundle:
        row, run = best_by_validation(by_row)
        if not on_disk([run]):
            sys.exit(f"cannot bundle: the selected run's folder {run['run_dir']} is gone (rerun it)")
        bundle_run(run, f"best mean val score over Table 2 rows ({row}), then best val score over seeds", row,
                   args.bundle, args.results / "icbhi_bundled_model.png")


if __name__ == "__main__":
    main()
