"""Lung-sound inference speed and accuracy per runtime: PyTorch eager, ONNX FP32, ONNX int8.

    python benchmarks/speed.py [--data DIR] [--repeats 5] [--threads 2]

For each runtime: per-cycle latency and throughput at batch 1 and batch 64 (2.5 s cycles at the
model's rate, random but fixed waveforms; median of ``--repeats`` timed passes after one warm-up),
and the ICBHI score on the covered official test split (the same cycles for every runtime), with
the largest probability difference from PyTorch. All runtimes get the same number of threads.
Writes ``results/speed.md|csv``.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pulmo.config import default_data_root  # noqa: E402
from pulmo.export import OnnxClassifier, cached_export  # noqa: E402
from pulmo.inference.lung_sounds import LungSoundPipeline, evaluate_icbhi  # noqa: E402


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def timed(net, x: torch.Tensor, repeats: int) -> float:
    """Median seconds of one forward pass over ``x`` (after a warm-up pass)."""
    with torch.no_grad():
        net(x)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="ICBHI folder (default: icbhi under $PULMO_DATA or ../shared/data)")
    ap.add_argument("--repeats", type=int, default=5, help="timed passes per measurement (median reported)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for every runtime")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "speed.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = LungSoundPipeline.from_checkpoint()
    eager = pipe.net.eval()
    runtimes = {"PyTorch eager": eager,
                "ONNX FP32 (onnxruntime)": OnnxClassifier(cached_export(None), args.threads),
                "ONNX int8 convolutions, static (onnxruntime)": OnnxClassifier(cached_export(None, int8=True), args.threads)}
    rng = np.random.default_rng(0)
    n = pipe.audio.cycle_samples
    data = args.data or default_data_root() / "icbhi"
    rows = []
    reference = None
    same_input = torch.from_numpy((0.1 * rng.standard_normal((64, n))).astype(np.float32))  # for the parity column
    for name, net in runtimes.items():
        row: dict[str, object] = {"runtime": name}
        for batch in (1, 64):
            x = same_input[:batch]
            seconds = timed(net, x, args.repeats)
            row[f"batch{batch}_ms_per_cycle"] = round(1000 * seconds / batch, 2)
            row[f"batch{batch}_cycles_per_s"] = round(batch / seconds, 1)
        if (data / "annotations").is_dir():
            pipe.net = net
            report = evaluate_icbhi(pipe, data, "test", progress=True)
            row.update(icbhi_score=round(report["score"], 4), sensitivity=round(report["sensitivity"], 4),
                       specificity=round(report["specificity"], 4), n=report["n"])
        with torch.no_grad():
            probs = torch.softmax(net(same_input).float(), 1).numpy()
        reference = probs if reference is None else reference
        row["max_prob_diff_vs_torch"] = float(f"{np.abs(probs - reference).max():.2e}")
        rows.append(row)
        print(row, file=sys.stderr)
    base = rows[0]["batch64_cycles_per_s"]
    for row in rows:
        row["speedup_batch64"] = round(float(row["batch64_cycles_per_s"]) / float(base), 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.with_suffix(".csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cols = ["runtime", "batch1_ms_per_cycle", "batch64_ms_per_cycle", "batch64_cycles_per_s", "speedup_batch64",
            "icbhi_score", "sensitivity", "specificity", "max_prob_diff_vs_torch"]
    lines = ["# Lung-sound inference speed per runtime", "",
             f"`python benchmarks/speed.py --repeats {args.repeats} --threads {args.threads}` on {cpu_name()}, "
             f"{os.cpu_count()} cores, {args.threads} threads per runtime, load average {load:.1f} when it finished "
             "(other jobs shared the CPU: compare rows of this table, not with other runs). Latency and throughput: "
             "median of the timed passes, 2.5 s cycles; ICBHI score on the covered official test split.", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "-")) for c in cols) + " |" for r in rows]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
