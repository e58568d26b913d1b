"""The short-clip resp-rate model: breaths per minute from one clip of 4-7 s, the paper's setting.

The default model scores 15 s windows and refuses audio shorter than 12 s. For shorter clips
pulmo ships a vote of the seeds of one 7 s row that learned the heavy and none classes
(``SHORT_ROWS``, trained by ``benchmarks/resp_rate.py``). Its recording-level post-processing
(envelope-spectrum refinement and three-halves check, chosen on ~60 s recordings) may not suit a
clip of a few seconds, so the row and whether to keep that post-processing are chosen together
on clips cut from the RRuJO validation subjects' recordings (lowest MAE); then scored once on
clips cut from the test subjects' recordings, with the DSP baseline on the same clips beside it.
Clips: ``CLIPS_PER_RECORDING`` per recording, lengths uniform in 4-7 s, random starts (seeded).
Writes ``results/resp_rate_short.md|json`` and, with ``--bundle``, the checkpoint (fp16).

    python benchmarks/resp_rate_short.py --bundle src/pulmo/assets/resp_rate_short.pt
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from resp_rate_composite import fold_items

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

SHORT_ROWS = ("push_heavy", "push_heavy64")
SEEDS = (0, 1, 2)
CLIPS_PER_RECORDING = 6
CLIP_SECONDS = (4.0, 7.0)
CLIP_SEED = 5


def cut_clips(items: list[Any], seed: int) -> list[Any]:
    """``CLIPS_PER_RECORDING`` clips of each labelled recording, lengths uniform in ``CLIP_SECONDS``
    (at 2 kHz), random starts; each keeps its recording's label."""
    from pulmo.resp_rate.evaluate import LabelledAudio

    rng = np.random.default_rng(seed)
    out = []
    for it in items:
        for k in range(CLIPS_PER_RECORDING):
            n = int(rng.uniform(*CLIP_SECONDS) * 2000)
            start = int(rng.integers(0, len(it.samples) - n))
            out.append(LabelledAudio(f"{it.key}#{k}", it.samples[start:start + n], it.rate_bpm, it.noisy, it.group))
    return out


def member_bundles(runs: Path, row: str, post_processing: bool) -> list[dict[str, Any]]:
    """The fold-0 runs of ``row`` (``SEEDS``) as checkpoint dicts, with their own post-processing or none."""
    from pulmo.engine.checkpoint import read_checkpoint

    out = []
    for s in SEEDS:
        b = read_checkpoint(runs / row / f"seed{s}" / "model.pt")
        if not post_processing:
            b["audio"] = {**b["audio"], "refine_tolerance": 0.0, "three_halves_check": False}
        out.append(b)
    return out


def score(bundles: list[dict[str, Any]], clips: list[Any]) -> dict[str, Any]:
    """The vote of ``bundles`` on ``clips``: per-clip regression report (bpm) with the share within 2 bpm."""
    from pulmo.metrics.regression import regression_report
    from pulmo.resp_rate.predictor import VotePredictor, predictor_from_checkpoint

    vote = VotePredictor([predictor_from_checkpoint(b) for b in bundles])
    pred = [vote.predict(c.samples).rate_bpm for c in clips]
    rep: dict[str, Any] = regression_report(pred, [c.rate_bpm for c in clips])
    rep["within_2_bpm"] = float(np.mean([abs(p - c.rate_bpm) <= 2 for p, c in zip(pred, clips)]))
    return rep


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "resp_rate")
    p.add_argument("--results", type=Path, default=ROOT / "results")
    p.add_argument("--bundle", type=Path, help="write the chosen vote here (fp16)")
    args = p.parse_args()
    import torch

    from pulmo.engine.checkpoint import half_precision
    from pulmo.engine.train import cpu_model_name
    from pulmo.metrics.regression import regression_report
    from pulmo.resp_rate.dsp import estimate_rate_dsp
    from pulmo.resp_rate.predictor import save_vote

    torch.set_num_threads(1)
    started = time.time()
    missing = [r for r in SHORT_ROWS for s in SEEDS if not (args.runs / r / f"seed{s}" / "model.pt").is_file()]
    if missing:
        sys.exit(f"train {', '.join(sorted(set(missing)))} first (benchmarks/resp_rate.py --seeds {' '.join(map(str, SEEDS))})")
    items = fold_items(0, None)
    clips = {split: cut_clips(items[split], CLIP_SEED + i) for i, split in enumerate(("val", "test"))}
    options = [(row, pp) for row in SHORT_ROWS for pp in (True, False)]
    val = {o: score(member_bundles(args.runs, *o), clips["val"]) for o in options}
    row, pp = min(options, key=lambda o: val[o]["mae"])
    chosen = member_bundles(args.runs, row, pp)
    test = score(chosen, clips["test"])
    dsp = regression_report([estimate_rate_dsp(c.samples, 2000) for c in clips["test"]], [c.rate_bpm for c in clips["test"]])

    def name(o: tuple[str, bool]) -> str:
        return f"{o[0]} seeds {', '.join(map(str, SEEDS))}, " + ("refinement and check as trained" if o[1] else "window median only")

    command = "python benchmarks/resp_rate_short.py " + " ".join(sys.argv[1:])
    L = ["# Short-clip resp-rate model: one clip of 4-7 s (RRuJO, fold-0 subjects)", "",
         f"{CLIPS_PER_RECORDING} clips per recording, 4-7 s, random starts; validation subjects {len(clips['val'])} clips,"
         f" test subjects {len(clips['test'])} clips. Each row is the vote (median) of its seeds' clip rates. Chosen on"
         f" validation clips (lowest MAE): **{name((row, pp))}**.", "",
         "| option | validation clips MAE | CCC |", "|---|---|---|"]
    L += [f"| {name(o)} | {val[o]['mae']:.2f} | {val[o]['ccc']:.3f} |" for o in options]
    L += ["", "| test clips (bpm) | n | MAE | MSE | CCC | Pearson | within 2 bpm |", "|---|---|---|---|---|---|---|",
          f"| {name((row, pp))} | {test['n']} | **{test['mae']:.2f}** | {test['mse']:.2f} | {test['ccc']:.3f} | "
          f"{test['pearson']:.3f} | {test['within_2_bpm']:.2f} |",
          f"| DSP harmonic sum (default settings) | {dsp['n']} | {dsp['mae']:.2f} | {dsp['mse']:.2f} | {dsp['ccc']:.3f} | "
          f"{dsp['pearson']:.3f} | - |", "",
          f"Device: CPU {cpu_model_name()}, 1 thread. Wall time: {(time.time() - started) / 60:.1f} min.", "",
          f"Reproduce: `{command}`"]
    if args.bundle:
        for b in chosen:
            b["state_dict"] = half_precision(b["state_dict"])
        save_vote(args.bundle, f"vote({row} seeds {', '.join(map(str, SEEDS))}, short clips)", chosen,
                  {"val_clips": val[(row, pp)], "test_clips": test, "clip_seconds": list(CLIP_SECONDS)})
        where = args.bundle.relative_to(ROOT) if args.bundle.is_relative_to(ROOT) else args.bundle
        L += ["", f"Bundled: `{where}` ({args.bundle.stat().st_size / 1e3:.0f} kB): what `pulmo analyze` uses for audio"
              " shorter than the default model's shortest clip (12 s)."]
    text = "\n".join(L) + "\n"
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "resp_rate_short.md").write_text(text)
    (args.results / "resp_rate_short.json").write_text(json.dumps(
        {"chosen": {"row": row, "post_processing": pp}, "val": {name(o): val[o] for o in options}, "test": test,
         "dsp_test": dsp}, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
