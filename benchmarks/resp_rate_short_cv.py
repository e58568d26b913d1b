"""Short clips (4-7 s) under five-fold subject cross-validation: one experiment row trained
once per subject fold and seed, its clip rule chosen per fold and seed on clips of that fold's
validation subjects, the seeds' median scored on clips of its test subjects; the DSP baseline
on the same clips.

The clips are those of ``benchmarks/resp_rate_short.py``'s cross-validation (``cut_clips``,
seed ``CLIP_SEED + 10 * fold`` for validation and ``+ 1`` for test), so the pooled scores stand
beside that page's (its recipe's per-fold networks are not kept, so only its pooled scores can
be compared). The clip rule: the network's window rate as it is, an envelope-spectrum
refinement within a tolerance, or (a network with a rate-distribution head) the spectrum peak
that best fits its distribution with a weight; the lowest validation-clip MAE wins.
Writes ``results/resp_rate_short_cv_<row>.md|json``.

    PULMO_DATA=../shared/data python benchmarks/resp_rate_short_cv.py --row short_bins --seeds 0
    PULMO_DATA=../shared/data python benchmarks/resp_rate_short_cv.py --bundle src/pulmo/assets/resp_rate_short.pt --heavy-rule 25
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from bench_format import mean_std
from resp_rate import pooled_report, shown
from resp_rate_composite import fold_items
from resp_rate_short import CLIP_SECONDS, CLIP_SEED, cut_clips

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
CONFIG_DIR = ROOT / "configs" / "experiments" / "resp-rate"
FOLDS = 5


def train_fold(row: str, fold: int, seed: int, runs: Path) -> Path:
    """``row`` trained with subject fold ``fold`` as test (kept where already trained); its model file."""
    from pulmo.resp_rate.config import load_rr_config
    from pulmo.resp_rate.train import run_rr_experiment

    out = runs / row / f"seed{seed}" / f"fold{fold}"
    if not (out / "metrics.json").exists():
        cfg = load_rr_config(CONFIG_DIR / f"{row}.yaml", {"train": {"seed": seed}, "data": {"test_fold": fold}})
        run_rr_experiment(cfg, out, progress=True)
    return out / "model.pt"


def clip_rules(clip: Any, has_bins: bool) -> dict[str, Any]:
    """Name -> clip config of every rule offered: the window rate as it is, each refinement
    tolerance of ``clip.refine_grid``, and with a rate-distribution head each weight of ``clip.posterior_grid``."""
    base = replace(clip, refine_tolerance=0.0, three_halves_check=False, posterior_weight=None)
    rules = {"window rate": base}
    rules.update({f"refined ±{100 * t:.0f} %": replace(base, refine_tolerance=t) for t in clip.refine_grid if t > 0})
    if has_bins:
        rules.update({f"distribution fit, weight {w:g}": replace(base, posterior_weight=w) for w in clip.posterior_grid})
    return rules


def fold_scores(model_paths: list[Path], fold: int) -> dict[str, Any]:
    """Per seed (one model file each), the fold's rule chosen on validation clips; the test
    clips' ``(key, true, predicted)`` of each seed with its rule, of their median (``vote``) and of the DSP."""
    from pulmo.engine.checkpoint import read_checkpoint
    from pulmo.resp_rate.dsp import estimate_rate_dsp
    from pulmo.resp_rate.evaluate import score_model
    from pulmo.resp_rate.net import build_from_rr_checkpoint
    from pulmo.resp_rate.predictor import NetPredictor

    items = fold_items(fold, None)
    val, test = cut_clips(items["val"], CLIP_SEED + 10 * fold), cut_clips(items["test"], CLIP_SEED + 10 * fold + 1)
    chosen, val_mae, seeds, val_rates = [], [], [], []
    for path in model_paths:
        net, clip = build_from_rr_checkpoint(read_checkpoint(path))
        rules = clip_rules(clip, getattr(net.model, "rate_bin_head", None) is not None)
        names = list(rules)
        maes = dict(zip(names, score_model(NetPredictor(net, rules[names[0]]), val, alternatives=list(rules.values()))
                        ["alternative_mae"]))
        chosen.append(min(names, key=lambda k: (maes[k], names.index(k))))
        val_mae.append(maes)
        val_rates.append([p for _, _, p in score_model(NetPredictor(net, rules[chosen[-1]]), val)["predictions"]])
        seeds.append(score_model(NetPredictor(net, rules[chosen[-1]]), test)["predictions"])
    vote = [(key, true, float(np.median([s[i][2] for s in seeds]))) for i, (key, true, _) in enumerate(seeds[0])]
    vote_val_mae = float(np.mean([abs(np.median(r) - c.rate_bpm) for c, r in zip(val, zip(*val_rates))]))
    dsp = [(c.key, c.rate_bpm, estimate_rate_dsp(c.samples, 2000)) for c in test]
    return {"fold": fold, "chosen": chosen, "val_mae": val_mae, "vote_val_mae": vote_val_mae, "seeds": seeds, "vote": vote,
            "dsp": dsp}


def page(row: str, seeds: list[int], folds: list[dict[str, Any]], reference: dict[str, Any], command: str, wall: float,
         cpu: str) -> str:
    from pulmo.metrics.regression import regression_report

    def rep(preds: list[tuple[str, float, float]]) -> dict[str, Any]:
        return regression_report([p for _, _, p in preds], [t for _, t, _ in preds])

    lines = ["# Short clips (4-7 s), five-fold subject cross-validation", "",
             f"`{command}` ({wall / 60:.0f} min, 1 thread, CPU {cpu}). Row `{row}` "
             f"(`configs/experiments/resp-rate/{row}.yaml`), seeds {', '.join(map(str, seeds))}, trained once per fold; per "
             "fold and seed the clip rule with the lowest MAE on clips of that fold's validation subjects; the vote is the "
             "median of the seeds' rates (as the previous short-clip recipe's). MAE in breaths per minute, per clip.", "",
             "| fold | rules chosen on validation clips (per seed) | vote val MAE | test clips | vote MAE | vote CCC | DSP MAE "
             "| DSP CCC |", "|---|---|---|---|---|---|---|---|"]
    for f in folds:
        v, d = rep(f["vote"]), rep(f["dsp"])
        lines.append(f"| {f['fold']} | {'; '.join(f['chosen'])} | {f['vote_val_mae']:.2f} | {len(f['vote'])} | {v['mae']:.2f} | "
                     f"{v['ccc']:.3f} | {d['mae']:.2f} | {d['ccc']:.3f} |")
    lines += ["", "| all folds' test clips | n | pooled MAE | pooled CCC | within 1 bpm | per-fold CCC, mean ± std |",
              "|---|---|---|---|---|---|"]
    voted = f"{row}, vote of {len(seeds)} seeds" if len(seeds) > 1 else f"{row}, seed {seeds[0]}"
    for k, name in (("vote", voted), ("dsp", "DSP harmonic sum")):
        r = pooled_report([p for f in folds for p in f[k]])
        lines.append(f"| {name} | {r['n']} | {r['mae']:.2f} | {r['ccc']:.3f} | {r['within_1_bpm']:.2f} | "
                     f"{mean_std([rep(f[k])['ccc'] for f in folds], 3)} |")
    for i, seed in enumerate(seeds if len(seeds) > 1 else []):
        r = pooled_report([p for f in folds for p in f["seeds"][i]])
        lines.append(f"| {row}, seed {seed} alone | {r['n']} | {r['mae']:.2f} | {r['ccc']:.3f} | {r['within_1_bpm']:.2f} | "
                     f"{mean_std([rep(f['seeds'][i])['ccc'] for f in folds], 3)} |")
    for k, name in (("chosen", "previous short-clip recipe, vote of 3 seeds (results/resp_rate_short.md)"),
                    ("dsp", "DSP harmonic sum, as that page has it")):
        r = reference[k]
        lines.append(f"| {name} | {r['n']} | {r['mae']:.2f} | {r['ccc']:.3f} | {r['within_1_bpm']:.2f} | - |")
    if len(seeds) > 1:
        per_seed = [pooled_report([p for f in folds for p in f["seeds"][i]]) for i in range(len(seeds))]
        lines += ["", f"Single seeds, pooled over the folds: MAE {mean_std([r['mae'] for r in per_seed], 2)}, CCC "
                  f"{mean_std([r['ccc'] for r in per_seed], 3)} (mean ± std over seeds)."]
    lines += ["", "The two DSP rows score clips cut the same way with the same seeds; they agree where the clips are the "
              "same ones. The previous recipe's per-fold networks are not kept, so only its pooled scores are shown."]
    return "\n".join(lines) + "\n"


def fold0_clips() -> dict[str, list[Any]]:
    """The clips every short-clip bundling decision is made (``val``, ``synthetic_val``) and
    reported (``test``, ``synthetic``) on: fold 0's RRuJO subjects, and held-out synthetic recordings."""
    from resp_rate_composite import SYNTHETIC_VAL_SEED

    from pulmo.resp_rate.evaluate import synthetic_test_set

    items = fold_items(0, None)
    return {"val": cut_clips(items["val"], CLIP_SEED), "test": cut_clips(items["test"], CLIP_SEED + 1),
            "synthetic_val": cut_clips(synthetic_test_set(2000, n_per_band=20, seed=SYNTHETIC_VAL_SEED), CLIP_SEED + 2, 1),
            "synthetic": cut_clips(synthetic_test_set(2000), CLIP_SEED + 3, 1)}


def stored_metrics(val_mae: float, reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What a bundled short-clip vote stores about itself: its validation-clip MAE, the clip
    lengths, and its reports on the clips of ``reports`` (``test``, ``synthetic``) without their predictions."""
    return {"val_clips": val_mae, "clip_seconds": list(CLIP_SECONDS),
            **{f"{k}_clips": {m: v for m, v in r.items() if m not in ("predictions", "by_group")} for k, r in reports.items()}}


def heavy_rule(dest: Path, heavy_above_bpm: float) -> str:
    """The bundled short-clip vote at ``dest`` with every heavy call of its composites' breathing
    members handing a window over, against the same vote with heavy calls counting only above
    ``heavy_above_bpm`` (:func:`pulmo.resp_rate.predictor.gate_windows`): the lower RRuJO
    validation-clip MAE wins, then the lower synthetic one (``resp_rate_composite.validation_order``);
    the winner is written to ``dest`` (so a rerun makes the same choice). Returns a paragraph for the page."""
    from resp_rate_composite import predictions_report, validation_order

    from pulmo.engine.checkpoint import read_checkpoint
    from pulmo.resp_rate.predictor import predictor_from_checkpoint, save_vote

    current = read_checkpoint(dest)
    variants = {name: [{**m, "composite": {**m["composite"], "heavy_above_bpm": bpm}} for m in current["vote"]]
                for name, bpm in (("every heavy call", None), (f"heavy calls above {heavy_above_bpm:g} bpm only", heavy_above_bpm))}
    clips = fold0_clips()
    reps = {}
    for name, members in variants.items():
        model = predictor_from_checkpoint({**current, "vote": members})
        reps[name] = {k: predictions_report(c, [model.predict(it.samples).rate_bpm for it in c]) for k, c in clips.items()}
    order = {n: validation_order({"rrujo_val_mae": r["val"]["mae"], "synthetic_val_mae": r["synthetic_val"]["mae"]})
             for n, r in reps.items()}
    chosen = min(order, key=order.get)
    lines = ["\n## Heavy calls in the bundled composites (fold 0)\n", "| composites' heavy calls | RRuJO val MAE | synthetic val "
             "MAE | RRuJO test MAE / CCC | synthetic test MAE / CCC |", "|---|---|---|---|---|"]
    lines += [f"| {n}{' (chosen)' if n == chosen else ''} | {r['val']['mae']:.2f} | {r['synthetic_val']['mae']:.2f} | "
              f"{r['test']['mae']:.2f} / {r['test']['ccc']:.3f} | {r['synthetic']['mae']:.2f} / {r['synthetic']['ccc']:.3f} |"
              for n, r in reps.items()]
    r = reps[chosen]
    metrics = stored_metrics(r["val"]["mae"], {k: r[k] for k in ("test", "synthetic")})
    base_name = current["name"].split(", heavy calls above")[0]
    rule = variants[chosen][0]["composite"]["heavy_above_bpm"]
    save_vote(dest, base_name + (f", heavy calls above {rule:g} bpm" if rule is not None else ""), variants[chosen], metrics)
    lines.append(f"\nChosen on validation clips ({len(clips['val'])} RRuJO, {len(clips['synthetic_val'])} synthetic): "
                 f"**{chosen}**; written to `{shown(dest)}` ({dest.stat().st_size / 1e3:.0f} kB).")
    return "\n".join(lines) + "\n"


def bundle_short(row: str, seeds: list[int], runs: Path, fold0: dict[str, Any], dest: Path) -> str:
    """Pair ``row``'s fold-0 networks (each with the clip rule it chose on fold-0 validation
    clips) with the breathing members of the short-clip model bundled at ``dest``, choose who
    votes, the gate and the check on validation clips as ``benchmarks/resp_rate_short.py`` does
    (``choose_gate``), and write the vote to ``dest`` only where its RRuJO validation-clip MAE
    is lower than the bundled model's on the same clips. Returns a paragraph for the page."""
    from dataclasses import asdict

    from resp_rate_composite import MIXED_VOTE, Scored, choose_gate, gate_name, predictions_report

    from pulmo.engine.checkpoint import half_precision, read_checkpoint
    from pulmo.resp_rate.net import build_from_rr_checkpoint
    from pulmo.resp_rate.predictor import composite_checkpoint, predictor_from_checkpoint, save_vote

    current = read_checkpoint(dest)
    b_bundles = [m["composite"]["breathing"] for m in current["vote"]]
    r_bundles = []
    for seed, rule in zip(seeds, fold0["chosen"]):
        b = read_checkpoint(runs / row / f"seed{seed}" / "fold0" / "model.pt")
        net, clip = build_from_rr_checkpoint(b)
        b["audio"] = asdict(clip_rules(clip, getattr(net.model, "rate_bin_head", None) is not None)[rule])
        b["state_dict"] = half_precision(b["state_dict"])
        r_bundles.append(b)
    r_nets, b_nets = ([predictor_from_checkpoint(b) for b in bs] for bs in (r_bundles, b_bundles))
    clips = fold0_clips()
    scored = {k: Scored(c, r_nets, b_nets) for k, c in clips.items()}
    vote, gate, check, table = choose_gate(scored["val"], scored["synthetic_val"])
    name = gate_name(gate, check, vote)
    new_val = table[name]["rrujo_val_mae"]
    old = predictor_from_checkpoint(current)
    old_val = float(np.mean([abs(old.predict(c.samples).rate_bpm - c.rate_bpm) for c in clips["val"]]))
    reps = {k: predictions_report(clips[k], scored[k].rates(vote, gate, check)) for k in ("test", "synthetic")}
    text = (f"\n## Bundling (fold 0)\n\nComposites of `{row}` seeds {', '.join(map(str, seeds))} (fold-0 networks, clip rules "
            f"{'; '.join(fold0['chosen'])}) with the bundled short-clip model's breathing members, chosen on "
            f"{len(clips['val'])} fold-0 validation clips: **{name}**, validation-clip MAE {new_val:.2f} against "
            f"{old_val:.2f} for the bundled model. Test clips: MAE {reps['test']['mae']:.2f}, CCC {reps['test']['ccc']:.3f} "
            f"(n={reps['test']['n']}); synthetic test clips: MAE {reps['synthetic']['mae']:.2f}, CCC "
            f"{reps['synthetic']['ccc']:.3f} (n={reps['synthetic']['n']}).")
    if new_val >= old_val:
        return text + " Not lower: the bundled model stays.\n"
    rate_row = r_bundles[0]["name"]
    members = [composite_checkpoint(f"composite({rate_row}+{b['name']})",
                                    {**r, "audio": {**r["audio"], "three_halves_check": check}} if check is not None else r,
                                    b, gate, {}) for r, b in zip(r_bundles, b_bundles)]
    members += b_bundles if vote == MIXED_VOTE else []
    metrics = stored_metrics(new_val, reps)
    save_vote(dest, f"vote(composite {rate_row} + {b_bundles[0]['name']}, seeds {', '.join(map(str, seeds))}, short clips)",
              members, metrics)
    return text + f" Lower: written to `{shown(dest)}` ({dest.stat().st_size / 1e3:.0f} kB).\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--row", default="short_bins")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "resp_rate_short_cv")
    ap.add_argument("--results", type=Path, help="page and predictions, .md and .json (default results/resp_rate_short_cv_ROW)")
    ap.add_argument("--train-only", action="store_true")
    ap.add_argument("--bundle", type=Path, help="the bundled short-clip model (src/pulmo/assets/resp_rate_short.pt): "
                    "replaced by composites of this row's fold-0 networks where they score lower on validation clips")
    ap.add_argument("--heavy-rule", type=float, metavar="BPM", help="with --bundle: only compare the bundled "
                    "vote with every heavy call handing a window over and with heavy calls counting above BPM only, write "
                    "the better on validation clips, and results/resp_rate_short_heavy_rule.md")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from pulmo.engine.train import cpu_model_name

    command = f"PULMO_DATA=../shared/data python benchmarks/resp_rate_short_cv.py {' '.join(sys.argv[1:])}"
    if args.heavy_rule is not None:
        if not args.bundle:
            ap.error("--heavy-rule needs --bundle")
        start = time.time()
        found = heavy_rule(args.bundle, args.heavy_rule)
        text = (f"# Short-clip model: heavy calls\n\n`{command}` ({time.time() - start:.0f} s, 1 thread, CPU "
                f"{cpu_model_name()})\n" + found)
        (ROOT / "results" / "resp_rate_short_heavy_rule.md").write_text(text)
        print(text)
        return
    args.results = args.results or ROOT / "results" / f"resp_rate_short_cv_{args.row}"
    t0 = time.time()
    models = [[train_fold(args.row, f, seed, args.runs) for seed in args.seeds] for f in range(FOLDS)]
    if args.train_only:
        return
    folds = [fold_scores(m, f) for f, m in enumerate(models)]
    reference = json.loads((ROOT / "results" / "resp_rate_short.json").read_text())["cross_validation"]
    text = page(args.row, args.seeds, folds, reference, command, time.time() - t0, cpu_model_name())
    if args.bundle:
        text += bundle_short(args.row, args.seeds, args.runs, folds[0], args.bundle)
    trained = sum(json.loads((m.parent / "metrics.json").read_text())["train_seconds"] for ms in models for m in ms)
    text += f"\nTraining time of the {FOLDS * len(args.seeds)} runs: {trained / 60:.0f} min in all (1 thread).\n"
    args.results.with_suffix(".md").write_text(text)
    args.results.with_suffix(".json").write_text(json.dumps(
        {"row": args.row, "runs": str(shown(args.runs)),
         "folds": [{k: f[k] for k in ("fold", "chosen", "val_mae", "vote_val_mae")} for f in folds],
         "predictions": {k: [p for f in folds for p in f[k]] for k in ("vote", "dsp")}}, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
