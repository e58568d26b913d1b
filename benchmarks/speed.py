"""Inference speed and accuracy per runtime: PyTorch eager, ONNX FP32, ONNX int8.

    python benchmarks/speed.py [--tasks lung-sounds detect] [--repeats 5] [--threads 2] [--limit 0]

Lung sounds: per-cycle latency and throughput at batch 1 and batch 64 (2.5 s cycles at the
model's rate, random but fixed waveforms), and the ICBHI score on the covered official test split.
Detector: per-tile latency and throughput of the network with its NMS at batch 1 and batch 8 (the
tiled pipeline's batch; 256-px tiles of the first SIXray test images), and tiled detection of the
SIXray test split (``xray_det``: precision, recall, F1 at IoU 0.5, and the pipeline's own tiles/s).
Timings are the median of ``--repeats`` timed passes after one warm-up; every runtime gets the
same number of threads; the largest output difference from PyTorch is on the same inputs.
Writes one section per task into ``results/speed.md`` (a task not run keeps its section from
the last run that had it) and ``results/speed.csv`` (lung sounds) / ``results/speed_detect.csv``.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("YOLO_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pulmo.config import default_data_root  # noqa: E402
from pulmo.export import OnnxClassifier, cached_export  # noqa: E402

RUNTIMES = ("PyTorch eager", "ONNX FP32 (onnxruntime)", "ONNX int8 convolutions, static (onnxruntime)")
Row = dict[str, Any]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def timed(run: Callable[[], Any], repeats: int) -> float:
    """Median seconds of ``run()`` (after a warm-up call)."""
    with torch.no_grad():
        run()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            run()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def speed_columns(row: Row, unit: str, batches: tuple[int, ...], run: Callable[[int], Any], repeats: int) -> None:
    """Add ``batch{b}_ms_per_{unit}`` and ``batch{b}_{unit}s_per_s`` to ``row``; ``run(b)`` runs a batch of ``b``."""
    for batch in batches:
        seconds = timed(lambda: run(batch), repeats)
        row[f"batch{batch}_ms_per_{unit}"] = round(1000 * seconds / batch, 2)
        row[f"batch{batch}_{unit}s_per_s"] = round(batch / seconds, 1)


def bench_lung_sounds(args: argparse.Namespace) -> list[Row]:
    from pulmo.inference.lung_sounds import LungSoundPipeline, evaluate_icbhi

    pipe = LungSoundPipeline.from_checkpoint()
    nets = [pipe.net.eval(), OnnxClassifier(cached_export(None), args.threads),
            OnnxClassifier(cached_export(None, int8=True), args.threads)]
    rng = np.random.default_rng(0)
    same_input = torch.from_numpy((0.1 * rng.standard_normal((64, pipe.audio.cycle_samples))).astype(np.float32))
    data = default_data_root() / "icbhi"
    rows, reference = [], None
    for name, net in zip(RUNTIMES, nets):
        row: Row = {"runtime": name}
        speed_columns(row, "cycle", (1, 64), lambda b: net(same_input[:b]), args.repeats)
        if (data / "annotations").is_dir():
            pipe.net = net
            report = evaluate_icbhi(pipe, data, "test", limit=args.limit, progress=True)
            row.update(icbhi_score=round(report["score"], 4), sensitivity=round(report["sensitivity"], 4),
                       specificity=round(report["specificity"], 4), n=report["n"])
        with torch.no_grad():
            probs = torch.softmax(net(same_input).float(), 1).numpy()
        reference = probs if reference is None else reference
        row["max_prob_diff_vs_torch"] = float(f"{np.abs(probs - reference).max():.2e}")
        rows.append(row)
        print(row, file=sys.stderr)
    return rows


def test_tiles(pipe: Any, root: Path, n: int = 8) -> torch.Tensor:
    """``(n, 3, tile, tile)``: the first ``n`` grid tiles of the first SIXray test images (noise without the data)."""
    from pulmo.data.adapters.voc_xml import read_voc_folder
    from pulmo.data.remap import apply_mapping
    from pulmo.data.tiling import crop_window
    from pulmo.data.xray_image import to_detector_input
    from pulmo.detect.infer import image_windows

    tile = pipe.tiling.tile
    if not root.is_dir():
        return torch.from_numpy(np.random.default_rng(0).random((n, 3, tile, tile), dtype=np.float32))
    tiles: list[np.ndarray] = []
    for record in apply_mapping(read_voc_folder(root, "test"), pipe.mapping):
        prep = pipe.prepare(record)
        tiles += [to_detector_input(crop_window(prep.image, w), prep.levels) for w in image_windows(prep, pipe.tiling)]
        if len(tiles) >= n:
            return torch.from_numpy(np.stack(tiles[:n]))
    raise SystemExit(f"{root}: fewer than {n} test tiles")


def bench_detect(args: argparse.Namespace) -> list[Row]:
    from pulmo.detect.export import OnnxNet
    from pulmo.inference.detect import DetectPipeline

    pipe = DetectPipeline.from_checkpoint()
    det = pipe.detector
    nets = [det.net, OnnxNet(cached_export(None, task="detect"), args.threads),
            OnnxNet(cached_export(None, int8=True, task="detect"), args.threads)]
    data = default_data_root() / "xray_det"
    tiles = test_tiles(pipe, data)
    conf, iou = pipe.inference.conf, pipe.inference.iou
    rows, reference = [], None
    for name, net in zip(RUNTIMES, nets):
        det.net = net
        row: Row = {"runtime": name}
        speed_columns(row, "tile", (1, 8), lambda b: det.predict(tiles[:b], conf=conf, iou=iou), args.repeats)
        if data.is_dir():
            report = pipe.evaluate_folder(data, "test", limit=args.limit, progress=True)
            row.update(precision=round(report["precision"], 4), recall=round(report["recall"], 4), f1=round(report["f1"], 4),
                       map50=round(report["map50"], 4), n=report["n"], tiled_tiles_per_s=round(report["tiles_per_s"], 1))
        with torch.no_grad():
            raw = net.eval()(tiles)
        raw = (raw[0] if isinstance(raw, (tuple, list)) else raw).numpy()
        reference = raw if reference is None else reference
        row["max_prob_diff_vs_torch"] = float(f"{np.abs(raw[:, 4:] - reference[:, 4:]).max():.2e}")
        row["max_box_diff_px_vs_torch"] = float(f"{np.abs(raw[:, :4] - reference[:, :4]).max():.2e}")
        rows.append(row)
        print(row, file=sys.stderr)
    return rows


SECTIONS: dict[str, tuple[str, str, list[str], Callable[[argparse.Namespace], list[Row]]]] = {
    "lung-sounds": ("Lung sounds", "speed.csv", ["runtime", "batch1_ms_per_cycle", "batch64_ms_per_cycle",
                                                 "batch64_cycles_per_s", "speedup_batch64", "icbhi_score", "sensitivity",
                                                 "specificity", "max_prob_diff_vs_torch"], bench_lung_sounds),
    "detect": ("Detector (YOLOv5n, tiled)", "speed_detect.csv",
               ["runtime", "batch1_ms_per_tile", "batch8_ms_per_tile", "batch8_tiles_per_s", "speedup_batch8",
                "tiled_tiles_per_s", "precision", "recall", "f1", "map50", "n", "max_prob_diff_vs_torch",
                "max_box_diff_px_vs_torch"], bench_detect),
}


def section(task: str, rows: list[Row], args: argparse.Namespace) -> list[str]:
    """The markdown section of one task's table, with the command, device and load that made it."""
    title, _, cols, _ = SECTIONS[task]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    limit = f" --limit {args.limit}" if args.limit else ""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [f"## {title}", "",
            f"`nice -n 10 python benchmarks/speed.py --tasks {task} --repeats {args.repeats} --threads {args.threads}{limit}` "
            f"({when}) on {cpu_name()}, {os.cpu_count()} cores, {args.threads} threads per runtime, load average "
            f"{load:.1f} when it finished (other jobs shared the CPU: compare rows of this table, not with other runs). "
            "Latency and throughput: median of the timed passes.", "",
            "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols),
            *("| " + " | ".join(str(r.get(c, "-")) for c in cols) + " |" for r in rows)]


def kept_sections(md: Path) -> dict[str, list[str]]:
    """``title -> lines`` of each ``## `` section of an earlier ``md`` (notes under a table included)."""
    out: dict[str, list[str]] = {}
    title = None
    for line in md.read_text().splitlines() if md.is_file() else []:
        if line.startswith("## "):
            title = line[3:]
            out[title] = []
        if title is not None:
            out[title].append(line)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    ap.add_argument("--repeats", type=int, default=5, help="timed passes per measurement (median reported)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for every runtime")
    ap.add_argument("--limit", type=int, default=0, help="only the first N test recordings / images (0: all)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "speed.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    sections = kept_sections(args.out)
    for task in args.tasks:
        title, csv_name, cols, bench = SECTIONS[task]
        rows = bench(args)
        throughput, speedup = cols[3], cols[4]  # at the larger batch, and its ratio to PyTorch eager's
        for row in rows:
            row[speedup] = round(float(row[throughput]) / float(rows[0][throughput]), 2)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with (args.out.parent / csv_name).open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        sections[title] = section(task, rows, args)
    lines = ["# Inference speed per runtime", ""]
    for title, _, _, _ in SECTIONS.values():
        if title in sections:
            lines += [*sections[title], ""]
    args.out.write_text("\n".join(lines).rstrip() + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
