"""X-ray anomaly detection study (paper: xray-anomaly-yolov5-tiling): train the Fig. 5 / 7 / 9 / 11
configurations, then write ``results/xray_detect.md|csv`` (+ PNG) with the paper's values beside ours,
and measure tiled-inference throughput beside SAHI's sliced prediction with the same weights.

    python benchmarks/xray_detect.py run configs/experiments/xray-detect/baggage_fig11_ideal.yaml [...]
    python benchmarks/xray_detect.py sahi runs/xray_detect/baggage_fig11_ideal/seed0/model.pt
    python benchmarks/xray_detect.py report

Run on CPU with ``nice -n 10`` and ``OMP_NUM_THREADS=1``; each run writes ``runs/xray_detect/<name>/seed<k>/``.
Selection (best epoch, per-class score thresholds) uses validation images only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

RUNS = Path("runs/xray_detect")


def cmd_run(args: argparse.Namespace) -> None:
    import torch

    from pulmo.detect.config import load_detect_config
    from pulmo.detect.train import run_detect_experiment

    torch.set_num_threads(1)
    for path in args.configs:
        for seed in args.seeds:
            overrides: dict = {"train": {"seed": seed}}
            cfg = load_detect_config(path, overrides)
            if cfg.data.remap == "score" and not cfg.data.score_f1:
                source = RUNS / cfg.name.replace("fig9_score", "fig9_original") / f"seed{seed}" / "metrics.json"
                if not source.is_file():
                    print(f"skip {cfg.name}: needs per-class validation F1 from {source}", file=sys.stderr)
                    continue
                f1 = {c: v["f1"] for c, v in json.loads(source.read_text())["val"]["per_class"].items()}
                cfg = load_detect_config(path, {**overrides, "data": {"score_f1": f1}})
            out = RUNS / cfg.name / f"seed{seed}"
            if (out / "metrics.json").is_file() and not args.force:
                print(f"skip {out} (done)")
                continue
            t0 = time.time()
            m = run_detect_experiment(cfg, out, progress=True)
            (out / "command.txt").write_text(" ".join([sys.executable, *sys.argv]) + "\n")
            t = m["test"]
            print(f"{cfg.name} seed {seed}: test P {t['precision']:.4f} R {t['recall']:.4f} F1 {t['f1']:.4f} "
                  f"(val F1 {m['val']['f1']:.4f}, best epoch {m['best_epoch']}) {time.time() - t0:.0f} s -> {out}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run")
    p.add_argument("configs", nargs="+")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_run)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
