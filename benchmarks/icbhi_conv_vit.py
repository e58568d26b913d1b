"""Conv-ViT (Neto et al., 2022) on the ICBHI copy in ../shared/data: Table II and our sensitivity steps.

Runs ``configs/experiments/conv-vit/{tiny_*,push_*}.yaml`` for each seed (worker
processes, one CPU thread each; every row gets seed 0 before any row gets seed 1), then
writes ``results/icbhi_conv_vit.csv`` (one line per run) and ``.md`` (mean +- std per row
beside the paper's Table II), a figure per row, and the confusion matrix / per-class
recall of the validation-selected model. The ``ensemble`` row averages the class
probabilities of the last row's seeds (no selection involved). Runs recorded in the
results CSV whose folders are gone are kept in the tables (``--fresh`` drops them). DeiT-Small / -Base rows
(``table2_*.yaml``) run only when named with ``--rows``: a 2-core CPU cannot train them
in a session.

    python benchmarks/icbhi_conv_vit.py --seeds 0 1 2 --jobs 2
    python benchmarks/icbhi_conv_vit.py --aggregate-only [--bundle src/pulmo/assets/lung_sounds_conv_vit.pt]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
from icbhi_study import (
    ROOT, Study, best_by_validation, bundle_run, devices_of, finish_page, on_disk, plot_report, preamble, row_cells, run_and_load,
    study_parser,
    write_csv,
)

CONFIGS = ROOT / "configs/experiments/conv-vit"
TINY_AND_PUSH = ["tiny_deit", "tiny_deit_cnn", "tiny_deit_cnn_att", "push_1_repeat_pad", "push_2_device_norm", "push_3_augment",
                 "push_4_device_balanced", "push_5_scratch_cnn", "push_5_imagenet_cnn"]
TABLE2 = ["table2_deit_small", "table2_deit_base", "table2_deit_base_cnn", "table2_deit_base_cnn_att"]
STUDY = Study("ICBHI 2017: Conv-ViT (Neto et al., 2022)", CONFIGS, [*TABLE2, *TINY_AND_PUSH], "icbhi_conv_vit")
PAPER_ROW = {"tiny_deit": "table2_deit_small", "tiny_deit_cnn": "table2_deit_base_cnn", "tiny_deit_cnn_att": "table2_deit_base_cnn_att"}


def ensemble(rs: list[dict[str, Any]]) -> dict[str, Any]:
    """Average the runs' class probabilities (same splits: same records in the same order) and score."""
    from pulmo.data.records import load_manifest
    from pulmo.engine.evaluate import icbhi_report

    out: dict[str, Any] = {"name": "ensemble", "seed": "+".join(str(r["seed"]) for r in rs)}
    for split in ("val", "test"):
        records = load_manifest(Path(rs[0]["run_dir"]) / "splits" / f"{split}.jsonl")
        for r in rs[1:]:
            if [x.record_id for x in load_manifest(Path(r["run_dir"]) / "splits" / f"{split}.jsonl")] != [x.record_id for x in records]:
                sys.exit(f"runs of {rs[0]['name']} differ in their {split} split: cannot ensemble")
        probs = np.mean([np.load(Path(r["run_dir"]) / "probabilities.npz")[split] for r in rs], axis=0)
        labels = rs[0][split]["labels"]
        out[split] = icbhi_report(records, [labels.index(x.label) for x in records], probs.argmax(1).tolist(), labels)
    return out


def write_results(by_row: dict[str, list[dict]], results: Path, command: str) -> None:
    devices = devices_of(by_row)
    write_csv(by_row, results / f"{STUDY.stem}.csv")
    lines = [
        *preamble(STUDY, by_row, command, [
            "Mean ± sample std over the seeds listed. The paper's DeiT was ImageNet-pretrained; no DeiT weights can be",
            "fetched here, so every transformer below starts from scratch (`pulmo reproduce --pretrained PATH` uses a file",
            "you have). Paper column: the Table II row of the same architecture at DeiT-Small/Base size.",
        ]),
        "| row | seeds | paper test Se / Sp / score | val score | test Se | test Sp | test_score | "
        + " | ".join(f"test score {d}" for d in devices) + " | s / run |",
        "|---|---|---|---|---|---|---|" + "---|" * len(devices) + "---|",
    ]
    for name in STUDY.rows:
        paper = STUDY.paper(PAPER_ROW.get(name, name))
        ref = (f"{paper['test_sensitivity'] / 100:.4f} / {paper['test_specificity'] / 100:.4f} / {paper['test_score'] / 100:.4f}"
               if paper else "—")
        if name not in by_row:
            if name in TABLE2:
                lines.append(f"| {name} | not run (DeiT-Small/Base on a 2-core CPU) | {ref} |" + " |" * (5 + len(devices)))
            continue
        rs = by_row[name]
        lines.append(f"| {name} | {','.join(str(r['seed']) for r in rs)} | {ref} | " + " | ".join(row_cells(rs, devices))
                     + f" | {np.mean([r['train_seconds'] for r in rs]):.0f} |")
    last = TINY_AND_PUSH[-1]
    if len(by_row.get(last, [])) > 1 and on_disk(by_row[last]):
        ens = ensemble(by_row[last])
        lines.append(f"| ensemble of {last} | {ens['seed']} | — | " + " | ".join(row_cells([ens], devices)).replace(" ± 0.0000", "")
                     + " | — |")
        by_row = {**by_row, "ensemble": [ens]}
    finish_page(STUDY, by_row, lines, results, "2-core machines shared with other jobs, no GPU")


def main() -> None:
    ap = study_parser(__doc__, ROOT / "runs/conv-vit")
    ap.add_argument("--rows", nargs="+", default=TINY_AND_PUSH, choices=STUDY.rows)
    args = ap.parse_args()  # --bundle ships the selected run only if it beats the bundled ResNet on validation
    by_row = run_and_load(STUDY, args, args.rows)
    seeds = sorted({r["seed"] for rs in by_row.values() for r in rs})  # every run on disk is tabulated, not only this call's
    write_results(by_row, args.results, f"python benchmarks/icbhi_conv_vit.py --seeds {' '.join(map(str, seeds))} --jobs {args.jobs}")
    row, run = best_by_validation(by_row)
    report = run["test"]
    print(f"validation-selected: {row} seed {run['seed']}, val {run['val']['score']:.4f}, test {report['score']:.4f}")
    if not on_disk([run]):
        print(f"its run folder {run['run_dir']} is gone: figure and bundle left as they are")
        return
    plot_report(report, f"{row} seed {run['seed']} (validation-selected)", args.results / "icbhi_conv_vit_best.png")
    if args.bundle:
        from pulmo.engine.checkpoint import read_checkpoint
        from pulmo.inference.bundled import default_checkpoint

        resnet_val = read_checkpoint(default_checkpoint("lung-sounds"))["metrics"]["val"]["score"]
        if run["val"]["score"] > resnet_val:
            bundle_run(run, f"best mean val score over Conv-ViT rows ({row}), then best val score over seeds; beats the "
                       f"ResNet's val score {resnet_val:.4f}", row, args.bundle, args.results / "icbhi_bundled_model.png")
        else:
            print(f"not bundled: its val score {run['val']['score']:.4f} does not beat the bundled ResNet's {resnet_val:.4f}")


if __name__ == "__main__":
    main()
