"""The short-clip resp-rate model: breaths per minute from one clip of 4-7 s, the paper's setting.

The default model scores 15 s windows and refuses audio shorter than 12 s. For shorter clips
pulmo ships a model built from the 7 s rows ``benchmarks/resp_rate.py`` trains (fold 0, seeds
``SEEDS``), chosen on clips cut from the RRuJO validation subjects' recordings:

1. the breathing member: the heavy-capable 7 s row (``SHORT_ROWS``) whose seed vote has the lowest
   validation-clip MAE, with or without its recording-level post-processing (envelope-spectrum
   refinement and three-halves check, chosen on ~60 s recordings; a few seconds of envelope may
   not support it);
2. for each rate-only 7 s row (``RATE_ROWS``), the composite of that row and the breathing member
   (:mod:`pulmo.resp_rate.predictor`), seed k with seed k, without post-processing, its gate and
   check chosen as the default model's are (``resp_rate_composite.choose_gate``: real validation
   clips first, synthetic validation clips among equals);
3. the lowest validation-clip MAE among the breathing member alone and those composites.

Then scored once on clips cut from the test subjects' recordings and from the held-out synthetic
recordings, with the DSP baseline on the same clips, and (where ``benchmarks/resp_rate.py --cv-row``
trained the chosen rows on every subject fold) over all five folds. Clips: ``CLIPS_PER_RECORDING`` per real
recording (one per synthetic one), lengths uniform in 4-7 s, random starts (seeded). Writes
``results/resp_rate_short.md|json`` and, with ``--bundle``, the checkpoint (fp16).

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
from resp_rate import cv_dir, load_rr_config_folds, pooled_report
from resp_rate_composite import MIXED_VOTE, SYNTHETIC_VAL_SEED, Scored, choose_gate, fold_items, gate_name, predictions_report

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

SHORT_ROWS = ("push_heavy", "push_heavy64")  # 7 s windows, learned the heavy and none classes
RATE_ROWS = ("table1_lstm16", "table1_lstm32", "table1_lstm64", "table2_tc_lstm32", "table3_lstm_aug",
             "table3_tc_lstm_aug")  # 7 s windows, real paced breathing only
SEEDS = (0, 1, 2)
CLIPS_PER_RECORDING = 6
CLIP_SECONDS = (4.0, 7.0)
CLIP_SEED = 5


def cut_clips(items: list[Any], seed: int, per_recording: int = CLIPS_PER_RECORDING) -> list[Any]:
    """``per_recording`` clips of each labelled recording, lengths uniform in ``CLIP_SECONDS``
    (at 2 kHz), random starts; each keeps its recording's label and group."""
    from pulmo.resp_rate.evaluate import LabelledAudio

    rng = np.random.default_rng(seed)
    out = []
    for it in items:
        for k in range(per_recording):
            n = int(rng.uniform(*CLIP_SECONDS) * 2000)
            start = int(rng.integers(0, len(it.samples) - n))
            out.append(LabelledAudio(f"{it.key}#{k}", it.samples[start:start + n], it.rate_bpm, it.noisy, it.group))
    return out


def run_paths(runs: Path, row: str, fold: int | None = None) -> list[Path]:
    """``row``'s model files of ``SEEDS``: the fold-0 runs of the main table, or the cross-validation runs of ``fold``."""
    return [(runs / row / f"seed{s}" if fold is None else cv_dir(runs, row, s, fold)) / "model.pt" for s in SEEDS]


def member_bundles(paths: list[Path], post_processing: bool) -> list[dict[str, Any]]:
    """Checkpoint dicts of ``paths``, with their own post-processing or none."""
    from pulmo.engine.checkpoint import read_checkpoint

    out = []
    for path in paths:
        b = read_checkpoint(path)
        if not post_processing:
            b["audio"] = {**b["audio"], "refine_tolerance": 0.0, "three_halves_check": False}
        out.append(b)
    return out


def clip_predictions(clips: list[Any], rate_nets: list[Any], breathing_nets: list[Any],
                     gate_check: tuple[str, float | None, bool | None] | None) -> dict[str, list[float]]:
    """Per-clip rates (bpm) of ``chosen`` (with ``gate_check`` = who votes, the gate and the check as
    ``choose_gate`` returns them; the breathing vote alone when None), of ``breathing`` alone and
    of the ``dsp`` baseline."""
    from pulmo.resp_rate.dsp import estimate_rate_dsp

    scored = Scored(clips, rate_nets, breathing_nets)
    breathing = scored.rates("breathing")
    return {"chosen": scored.rates(*gate_check) if gate_check else breathing, "breathing": breathing,
            "dsp": [estimate_rate_dsp(c.samples, 2000) for c in clips]}


def cross_validate(runs: Path, rate_row: str | None, breathing: tuple[str, bool], syn_val: list[Any],
                   folds: int) -> dict[str, Any] | None:
    """The chosen recipe over all subject folds (None unless every cross-validation run exists):
    per fold, clips of its validation and test subjects, the gate and check chosen on the
    validation clips as in :func:`main`, the test clips scored; the DSP on the same clips.
    Returns pooled reports of ``chosen``, ``breathing`` and ``dsp`` and the gates chosen."""
    from pulmo.resp_rate.predictor import predictor_from_checkpoint

    rows = [breathing[0]] + ([rate_row] if rate_row else [])
    if not all(p.is_file() for r in rows for f in range(folds) for p in run_paths(runs, r, f)):
        return None
    preds: dict[str, list[tuple[str, float, float]]] = {"chosen": [], "breathing": [], "dsp": []}
    gates = []
    for fold in range(folds):
        items = fold_items(fold, None)
        val, test = cut_clips(items["val"], CLIP_SEED + 10 * fold), cut_clips(items["test"], CLIP_SEED + 10 * fold + 1)
        b_nets = [predictor_from_checkpoint(b) for b in member_bundles(run_paths(runs, breathing[0], fold), breathing[1])]
        r_nets = [predictor_from_checkpoint(b) for b in member_bundles(run_paths(runs, rate_row, fold), False)] if rate_row else b_nets
        gate_check = None
        if rate_row:
            vote, gate, check, _ = choose_gate(Scored(val, r_nets, b_nets), Scored(syn_val, r_nets, b_nets))
            gates.append(gate_name(gate, check, vote))
            gate_check = (vote, gate, check)
        for who, rates in clip_predictions(test, r_nets, b_nets, gate_check).items():
            preds[who] += [(c.key, c.rate_bpm, r) for c, r in zip(test, rates)]
        print(f"fold {fold}: {len(test)} test clips", flush=True)
    return {**{k: pooled_report(v) for k, v in preds.items()}, "gates": gates}


def mae(scored: Scored, who: str, gate: float | None = None, check: bool | None = None) -> float:
    return float(scored.report(who, gate, check)["mae"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "resp_rate")
    p.add_argument("--results", type=Path, default=ROOT / "results")
    p.add_argument("--bundle", type=Path, help="write the chosen model here (fp16)")
    args = p.parse_args()
    import torch

    from pulmo.engine.checkpoint import half_precision
    from pulmo.engine.train import cpu_model_name
    from pulmo.resp_rate.evaluate import SNR_BANDS, synthetic_test_set
    from pulmo.resp_rate.predictor import composite_checkpoint, predictor_from_checkpoint, save_vote

    torch.set_num_threads(1)
    started = time.time()
    missing = sorted({r for r in SHORT_ROWS + RATE_ROWS for p in run_paths(args.runs, r) if not p.is_file()})
    if missing:
        sys.exit(f"train {', '.join(missing)} first (benchmarks/resp_rate.py --seeds {' '.join(map(str, SEEDS))})")
    items = fold_items(0, None)
    clips = {"val": cut_clips(items["val"], CLIP_SEED), "test": cut_clips(items["test"], CLIP_SEED + 1),
             "synthetic_val": cut_clips(synthetic_test_set(2000, n_per_band=20, seed=SYNTHETIC_VAL_SEED), CLIP_SEED + 2, 1),
             "synthetic": cut_clips(synthetic_test_set(2000), CLIP_SEED + 3, 1)}

    def nets(row: str, pp: bool) -> tuple[list[dict[str, Any]], list[Any]]:
        bundles = member_bundles(run_paths(args.runs, row), pp)
        return bundles, [predictor_from_checkpoint(b) for b in bundles]

    # 1. the breathing member
    breathing_options = {(row, pp): nets(row, pp) for row in SHORT_ROWS for pp in (True, False)}
    breathing_val = {o: mae(Scored(clips["val"], m, m), "breathing") for o, (_, m) in breathing_options.items()}
    b_row, b_pp = min(breathing_options, key=lambda o: breathing_val[o])
    b_bundles, b_nets = breathing_options[(b_row, b_pp)]
    # 2. composites with each rate-only row
    candidates: dict[str, dict[str, Any]] = {
        f"{b_row} alone, " + ("refinement and check as trained" if b_pp else "window median only"):
            {"val": breathing_val[(b_row, b_pp)], "rate": None, "gate": None, "check": None}}
    for row in RATE_ROWS:
        r_bundles, r_nets = nets(row, False)
        sc = {split: Scored(clips[split], r_nets, b_nets) for split in ("val", "synthetic_val")}
        vote, gate, check, table = choose_gate(sc["val"], sc["synthetic_val"])
        name = f"composite {row} + {b_row}, {gate_name(gate, check, vote)}"
        candidates[name] = {"val": table[gate_name(gate, check, vote)]["rrujo_val_mae"],
                            "synthetic_val": table[gate_name(gate, check, vote)]["synthetic_val_mae"], "vote": vote,
                            "rate": (row, r_bundles, r_nets), "gate": gate, "check": check}
    # 3. the choice, then the test clips
    chosen_name = min(candidates, key=lambda n: candidates[n]["val"])
    chosen = candidates[chosen_name]
    rate_nets = chosen["rate"][2] if chosen["rate"] else b_nets
    test: dict[str, dict[str, Any]] = {}
    for split in ("test", "synthetic"):
        rates = clip_predictions(clips[split], rate_nets, b_nets,
                                 (chosen["vote"], chosen["gate"], chosen["check"]) if chosen["rate"] else None)
        test[split] = {who: predictions_report(clips[split], r) for who, r in rates.items()}
        for rep in test[split].values():
            rep.pop("predictions")
    command = "python benchmarks/resp_rate_short.py " + " ".join(sys.argv[1:])
    L = ["# Short-clip resp-rate model: one clip of 4-7 s", "",
         f"RRuJO fold-0 subjects, {CLIPS_PER_RECORDING} clips per recording (4-7 s, random starts): validation"
         f" {len(clips['val'])} clips, test {len(clips['test'])}; synthetic: one clip per recording of the validation"
         f" set (seed {SYNTHETIC_VAL_SEED}, {len(clips['synthetic_val'])}) and of the held-out set ({len(clips['synthetic'])},"
         " 0-60 bpm, clean to 0-10 dB SNR). Every model is a vote (median) of seeds " + ", ".join(map(str, SEEDS))
         + f". Breathing member chosen on validation clips: **{b_row}**, "
         + ("refinement and check as trained" if b_pp else "window median only (no refinement, no check)") + ".", "",
         "| breathing member option | RRuJO validation clips MAE |", "|---|---|"]
    L += [f"| {row}, {'refinement and check as trained' if pp else 'window median only'} | {v:.2f} |"
          for (row, pp), v in breathing_val.items()]
    L += ["", f"Chosen on validation clips (lowest RRuJO MAE): **{chosen_name}**.", "",
          "| candidate | RRuJO validation clips MAE | synthetic validation clips MAE |", "|---|---|---|"]
    L += [f"| {n} | {c['val']:.2f} | {c['synthetic_val']:.2f} |" if "synthetic_val" in c else f"| {n} | {c['val']:.2f} | - |"
          for n, c in candidates.items()]
    L += ["", "| test clips (bpm) | RRuJO n | MAE | MSE | CCC | Pearson | synthetic n | MAE | CCC |",
          "|---|---|---|---|---|---|---|---|---|"]
    for who, label in (("chosen", f"**chosen**: {chosen_name}"), ("breathing", f"{b_row} alone"), ("dsp", "DSP harmonic sum")):
        t, s = test["test"][who], test["synthetic"][who]
        L.append(f"| {label} | {t['n']} | {t['mae']:.2f} | {t['mse']:.2f} | {t['ccc']:.3f} | {t['pearson']:.3f} | "
                 f"{s['n']} | {s['mae']:.2f} | {s['ccc']:.3f} |")
    cv = cross_validate(args.runs, chosen["rate"][0] if chosen["rate"] else None, (b_row, b_pp), clips["synthetic_val"],
                        load_rr_config_folds())
    if cv:
        L += ["", "Five-fold subject cross-validation (the same rows and seeds, trained on each fold by `benchmarks/resp_rate.py"
              " --cv-row`; per fold, clips cut from its validation and test subjects' recordings, the gate chosen on its"
              " validation clips; every test clip pooled):", "",
              "| test clips, all folds (bpm) | n | MAE | MSE | CCC | Pearson | within 1 bpm |", "|---|---|---|---|---|---|---|"]
        for who, label in (("chosen", "chosen recipe"), ("breathing", f"{b_row} alone"), ("dsp", "DSP harmonic sum")):
            r = cv[who]
            L.append(f"| {label} | {r['n']} | {r['mae']:.2f} | {r['mse']:.2f} | {r['ccc']:.3f} | {r['pearson']:.3f} | "
                     f"{r['within_1_bpm']:.2f} |")
        if cv["gates"]:
            L += ["", "Gates chosen per fold: " + "; ".join(cv["gates"]) + "."]
    bands = list(SNR_BANDS)
    L += ["", "Synthetic test clips by background noise (MAE, bpm):", "", "| model | " + " | ".join(bands) + " |",
          "|---|" + "---|" * len(bands)]
    for who, label in (("chosen", "chosen"), ("breathing", f"{b_row} alone"), ("dsp", "DSP harmonic sum")):
        L.append(f"| {label} | " + " | ".join(f"{test['synthetic'][who]['by_group'][b]['mae']:.2f}" for b in bands) + " |")
    L += ["", f"Device: CPU {cpu_model_name()}, 1 thread. Wall time: {(time.time() - started) / 60:.1f} min.", "",
          f"Reproduce: `{command}`"]
    if args.bundle:
        metrics = {"val_clips": chosen["val"], "test_clips": test["test"]["chosen"], "synthetic_clips": test["synthetic"]["chosen"],
                   "clip_seconds": list(CLIP_SECONDS)}
        if cv:
            metrics["cross_validation_clips"] = cv["chosen"]
        for b in b_bundles:
            b["state_dict"] = half_precision(b["state_dict"])
        members = b_bundles
        if chosen["rate"]:
            row, r_bundles, _ = chosen["rate"]
            for b in r_bundles:
                b["state_dict"] = half_precision(b["state_dict"])
            if chosen["check"] is not None:
                r_bundles = [{**b, "audio": {**b["audio"], "three_halves_check": chosen["check"]}} for b in r_bundles]
            members = [composite_checkpoint(f"composite({row}+{b_row})", r, b, chosen["gate"], {})
                       for r, b in zip(r_bundles, b_bundles)] + (b_bundles if chosen["vote"] == MIXED_VOTE else [])
        save_vote(args.bundle, f"vote({chosen_name.split(',')[0]}, seeds {', '.join(map(str, SEEDS))}, short clips)", members, metrics)
        where = args.bundle.relative_to(ROOT) if args.bundle.is_relative_to(ROOT) else args.bundle
        L += ["", f"Bundled: `{where}` ({args.bundle.stat().st_size / 1e3:.0f} kB): what `pulmo analyze` uses for audio"
              " shorter than the default model's shortest clip (12 s)."]
    text = "\n".join(L) + "\n"
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "resp_rate_short.md").write_text(text)
    (args.results / "resp_rate_short.json").write_text(json.dumps(
        {"breathing_member": {"row": b_row, "post_processing": b_pp},
         "breathing_val_mae": {f"{r}, post-processing {'on' if pp else 'off'}": v for (r, pp), v in breathing_val.items()},
         "candidates": {n: {k: v for k, v in c.items() if k in ("val", "synthetic_val", "gate", "check")} for n, c in candidates.items()},
         "chosen": chosen_name, "test": test, "cross_validation": cv}, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
