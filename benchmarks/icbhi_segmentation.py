"""Automatic respiratory-cycle segmentation against the ICBHI annotations.

For every recording of the chosen split whose whole audio is in the shared copy:

1. boundary precision / recall / F1 (pooled over recordings) of the segmenter's cycle
   boundaries against the annotated ones (every cycle start and end), at several tolerances,
   beside a fixed-length baseline (a boundary every 3 s);
2. the ICBHI score of a lung-sound model when each annotated cycle takes the prediction of
   the automatic cycle that overlaps it most, beside the same model on the annotated cycles
   and on sliding windows (what ``pulmo analyze`` does without annotations).

    python benchmarks/icbhi_segmentation.py [--split test] [--checkpoint PATH]

Writes ``results/icbhi_segmentation.md|csv`` and ``results/icbhi_segmentation.png``.
"""

from __future__ import annotations

import argparse
import csv
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pulmo.config import default_data_root  # noqa: E402
from pulmo.data.adapters.icbhi import load_icbhi  # noqa: E402
from pulmo.data.audio_io import read_audio  # noqa: E402
from pulmo.data.cycles import preprocess  # noqa: E402
from pulmo.data.segmentation import SegmenterConfig, segment_cycles  # noqa: E402
from pulmo.engine.evaluate import icbhi_report  # noqa: E402
from pulmo.engine.train import cpu_model_name  # noqa: E402
from pulmo.inference.lung_sounds import LungSoundPipeline, window_starts  # noqa: E402
from pulmo.metrics.segmentation import matched_boundaries  # noqa: E402

TOLERANCES_S = (0.25, 0.5, 1.0)
FIXED_CYCLE_S = 3.0


def reference_boundaries(cycles: list[tuple[float, float]]) -> list[float]:
    """Every annotated cycle start and end, merged when closer than 50 ms."""
    points = sorted({round(t, 3) for s, e in cycles for t in (s, e)})
    merged: list[float] = []
    for t in points:
        if not merged or t - merged[-1] > 0.05:
            merged.append(t)
    return merged


def overlap_labels(spans: list[tuple[float, float]], probs: np.ndarray, targets: list[tuple[float, float]]) -> list[int]:
    """For each target span, the argmax class of the span (of ``spans``) that overlaps it most."""
    out = []
    for s, e in targets:
        ov = [max(0.0, min(e, b) - max(s, a)) for a, b in spans]
        out.append(int(probs[int(np.argmax(ov))].argmax()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=default_data_root() / "icbhi")
    ap.add_argument("--split", default="test", choices=["train", "test"])
    ap.add_argument("--checkpoint", help="lung-sound checkpoint (default: the bundled model)")
    ap.add_argument("--results", type=Path, default=ROOT / "results")
    args = ap.parse_args()
    started = time.time()
    pipe = LungSoundPipeline.from_checkpoint(args.checkpoint)
    index = load_icbhi(args.data)
    by_rec: dict[str, list] = defaultdict(list)
    for r in index.records:
        if r.split == args.split and Path(r.path).parent.name == "audio" and r.label in pipe.labels:
            by_rec[r.recording_id].append(r)
    cfg = SegmenterConfig()
    counts = {(m, t): [0, 0, 0] for m in ("segmenter", f"every {FIXED_CYCLE_S:g} s") for t in TOLERANCES_S}
    recs, y_true, y_ann, y_seg, y_win, rows = [], [], [], [], [], []
    rate = pipe.audio.sample_rate_hz
    for rec_id in tqdm(sorted(by_rec), desc="recordings"):
        cycles = sorted(by_rec[rec_id], key=lambda r: r.cycle_index)
        raw, sr = read_audio(cycles[0].path)
        duration = len(raw) / sr
        seg = segment_cycles(raw, sr, cfg)
        ref = reference_boundaries([(c.annotated_start_s, c.annotated_end_s) for c in cycles])
        ref = [t for t in ref if 0.0 < t < duration]
        fixed = list(np.arange(FIXED_CYCLE_S, duration, FIXED_CYCLE_S))
        for method, pred in (("segmenter", seg.boundaries_s), (f"every {FIXED_CYCLE_S:g} s", fixed)):
            for tol in TOLERANCES_S:
                c = counts[(method, tol)]
                c[0] += matched_boundaries(pred, ref, tol)
                c[1] += len(pred)
                c[2] += len(ref)
        clean = preprocess(raw, sr, pipe.audio)
        cut = lambda spans: [clean[int(round(s * rate)) : int(round(e * rate))] for s, e in spans]  # noqa: E731
        targets = [(c.start_s, c.end_s) for c in cycles]
        win = pipe.audio.cycle_seconds
        windows = [(s, min(s + win, duration)) for s in window_starts(duration, win, win / 2)]
        p_ann, p_seg, p_win = (pipe.predict_cycles(cut(spans)) for spans in (targets, seg.cycles, windows))
        recs += cycles
        y_true += [pipe.labels.index(c.label) for c in cycles]
        y_ann += p_ann.argmax(1).tolist()
        y_seg += overlap_labels(seg.cycles, p_seg, targets)
        y_win += overlap_labels(windows, p_win, targets)
        rows.append({"recording": rec_id, "device": cycles[0].device, "seconds": round(duration, 2),
                     "annotated_cycles": len(cycles), "segmenter_cycles": len(seg.cycles),
                     "period_s": round(seg.period_s, 2) if seg.period_s else ""})
    if not recs:
        sys.exit(f"no {args.split} recordings with whole audio under {args.data}/audio")
    scores = {name: icbhi_report(recs, y_true, y, pipe.labels) for name, y in
              (("annotated cycles", y_ann), ("segmenter cycles", y_seg), ("sliding windows", y_win))}
    args.results.mkdir(parents=True, exist_ok=True)
    with (args.results / "icbhi_segmentation.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    boundary_lines = []
    for (method, tol), (hits, n_pred, n_ref) in counts.items():
        p, r = hits / max(n_pred, 1), hits / max(n_ref, 1)
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        boundary_lines.append(f"| {method} | {tol:g} | {p:.4f} | {r:.4f} | {f1:.4f} | {n_pred} | {n_ref} |")
    score_lines = [f"| {name} | {s['sensitivity']:.4f} | {s['specificity']:.4f} | {s['score']:.4f} | {s['n']} |"
                   for name, s in scores.items()]
    wall = time.time() - started
    md = [
        "# ICBHI 2017: automatic respiratory-cycle segmentation",
        "",
        f"Recordings: the {len(rows)} `{args.split}` recordings whose whole audio is in the shared copy "
        f"({len(recs)} annotated cycles). Model: {pipe.model_info['name']} ({pipe.model_info['checkpoint']}, "
        f"sha256 {pipe.model_info['sha256'][:12]}). Segmenter: `pulmo.data.segmentation` with its defaults "
        f"({cfg}).",
        "",
        f"Reproduce: `python benchmarks/icbhi_segmentation.py --split {args.split}`"
        + (f" --checkpoint {args.checkpoint}" if args.checkpoint else ""),
        "",
        "## Boundaries (pooled over recordings; reference = every annotated cycle start and end)",
        "",
        "| method | tolerance s | precision | recall | F1 | predicted | annotated |",
        "|---|---|---|---|---|---|---|",
        *boundary_lines,
        "",
        "## Classification when cycles come from the segmenter",
        "",
        "Each annotated cycle takes the prediction of the automatic cycle (or window) that overlaps it most.",
        "",
        "| cycles from | Se | Sp | ICBHI score | n |",
        "|---|---|---|---|---|",
        *score_lines,
        "",
        f"Device: {cpu_model_name()} ({platform.machine()}), {wall:.0f} s wall.",
        "",
    ]
    (args.results / "icbhi_segmentation.md").write_text("\n".join(md))
    plot_example(by_rec, cfg, args.results / "icbhi_segmentation.png")
    print("\n".join(md))


def plot_example(by_rec: dict[str, list], cfg: SegmenterConfig, path: Path) -> None:
    """Envelope of three recordings with annotated (green) and automatic (red) boundaries."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pulmo.data.segmentation import breath_envelope

    names = sorted(by_rec)[:: max(1, len(by_rec) // 3)][:3]
    fig, axes = plt.subplots(len(names), 1, figsize=(12, 2.4 * len(names)), squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        cycles = by_rec[name]
        raw, sr = read_audio(cycles[0].path)
        env = breath_envelope(raw, sr, cfg)
        t = np.arange(len(env)) * cfg.hop_s
        ax.plot(t, env, color="black", lw=0.8)
        for c in cycles:
            ax.axvline(c.annotated_start_s, color="tab:green", lw=1.5)
        for b in segment_cycles(raw, sr, cfg).boundaries_s:
            ax.axvline(b, color="tab:red", lw=1, ls="--")
        ax.set_title(f"{name}: breath-band loudness (dB); annotated cycle starts green, automatic boundaries red dashed",
                     fontsize=9)
        ax.set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
