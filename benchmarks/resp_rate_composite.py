"""The composite resp-rate model: a rate-only network for the rate, a heavy-capable network
for the breathing class (see ``pulmo.resp_rate.predictor``), on RRuJO and the synthetic set.

Members: ``--rate`` (never trained above 20 bpm) and ``--breathing`` (learned the none and
heavy classes), by default the two seed votes ``benchmarks/resp_rate.py`` bundled. Given
several ``--breathing`` candidates, each gets its own gate and check, and the one whose
composite ranks first by the same validation rule (below) is the breathing member. Their
networks are paired in order (seed k with seed k) into one composite per seed, and the
shipped model is the vote of those composites (``pulmo.resp_rate.predictor.vote_rate``: one
fit to their pooled rate distributions where every composite's rate comes from windows with
one, otherwise the median of their recording rates; the median vote is tabulated beside).
The gate (class only, or also the breathing member's rate above a threshold), whether the
recording rate gets the three-halves check, and who votes (the composites alone, or with the
breathing networks alone beside them) are chosen together, for all pairs at once, on
validation only: the lowest MAE on the RRuJO validation subjects (the recordings the targets
are about), then, among options equal there, the lowest MAE on a synthetic validation set
generated with its own seed (what real recordings lack: heavy breathing and silence); options
equal on both go to the one that hands the fewest windows to the breathing member. Then
scored once on the RRuJO test subjects and the held-out synthetic set, and over the five
subject folds (members = the cross-validation runs of the same rows and seeds, the gate chosen
per fold the same way; every option's cross-validated error is tabulated beside, unused). Writes
``results/resp_rate_composite.md|json`` and, with ``--bundle``, the checkpoint.

    python benchmarks/resp_rate_composite.py --bundle src/pulmo/assets/resp_rate_composite.pt
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from resp_rate import cv_dir, load_rr_config_folds, pooled_report

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

CONFIG_DIR = ROOT / "configs" / "experiments" / "resp-rate"
ASSETS = ROOT / "src" / "pulmo" / "assets"
# from the fewest windows handed to the breathing member to the most: ties go to the first
GATES: tuple[float | None, ...] = (None, 25.0, 22.0, 21.0)
SYNTHETIC_VAL_SEED = 777  # the held-out synthetic test set uses 12345; training draws its own clips
DOUBT_COVERAGE = 0.9  # the doubt threshold flags about a tenth of the RRuJO validation recordings


# None: as each rate network chose on its own validation (the only option for a rate network that fits a rate distribution)
CHECKS: tuple[bool | None, ...] = (None, False, True)
# who votes: the n composites, or the composites and the n breathing networks alone (the vote of 2n: on normal breathing
# the two rows outvote each other's slips; on heavy breathing and silence the composites hand over anyway)
MIXED_VOTE = "composite+breathing"
VOTES: tuple[str, ...] = ("composite", MIXED_VOTE)


def with_check(clip: Any, check: bool | None) -> Any:
    """A rate member's clip config with the three-halves check set to ``check``; unchanged for
    None (as the network chose) and for a network that fits a rate distribution (the check is
    never put after that fit: see ``select_post_processing``)."""
    from dataclasses import replace

    return clip if check is None or clip.posterior_weight is not None else replace(clip, three_halves_check=check)


def gate_name(gate: float | None, check: bool | None, vote: str = "composite") -> str:
    name = "class only" if gate is None else f"class or rate > {gate:g} bpm"
    name += ", 3/2 check " + ("as its rate network chose" if check is None else "on" if check else "off")
    return name + (", breathing networks in the vote" if vote == MIXED_VOTE else "")


class Scored:
    """The member pairs' window predictions of a list of labelled recordings, computed once;
    recording rates for the members alone or for any gate follow without the networks."""

    def __init__(self, items: list[Any], rate: list[Any], breathing: list[Any]) -> None:
        self.items, self.rate, self.breathing = items, rate, breathing
        self.w_rate = [[m.windows(it.samples) for m in rate] for it in items]
        self.w_breath = [[m.windows(it.samples) for m in breathing] for it in items]
        self._made: dict[tuple[Any, ...], float] = {}  # most gates leave a recording's window rates as they were

    def _recording_rate(self, item: int, pair: int, windows: Any, clip: Any) -> float:
        """:func:`pulmo.resp_rate.net.recording_rate`, computed once per recording, window rates, classes and post-processing."""
        from pulmo.resp_rate.net import recording_rate

        probs = None if windows.rate_probs is None else windows.rate_probs.tobytes()
        key = (item, pair, windows.rate_bpm.tobytes(), probs, windows.breath_probs.argmax(1).tobytes(), clip.aggregate,
               clip.refine_tolerance, clip.posterior_weight, clip.posterior_max_bpm, clip.three_halves_check)
        if key not in self._made:
            self._made[key] = recording_rate(self.items[item].samples, windows, clip)
        return self._made[key]

    def _pairs(self, who: str, gate: float | None, check: bool | None) -> list[list[tuple[Any, float, float, Any]]]:
        """Per recording, per member pair: ``who``'s window predictions, their aggregate, the
        recording rate (see :meth:`rates`) and the :class:`pulmo.resp_rate.net.RateDistribution`
        of the windows it came from (None: none); for ``composite+breathing``, the composites' and then the
        breathing members' alone."""
        from pulmo.resp_rate.net import aggregate_rate, recording_distribution
        from pulmo.resp_rate.predictor import composite_rate_source, gate_windows

        if who == MIXED_VOTE:
            return [c + b for c, b in zip(self._pairs("composite", gate, check), self._pairs("breathing", gate, check))]
        out = []
        for i, (wrs, wbs) in enumerate(zip(self.w_rate, self.w_breath)):
            per_pair = []
            for j, (r, b, wr, wb) in enumerate(zip(self.rate, self.breathing, wrs, wbs)):
                if who == "composite":
                    w = gate_windows(wr, wb, gate)
                    source, clip = composite_rate_source(w, wb, with_check(r.clip, check), b.clip)
                else:
                    w, clip = (wr, r.clip) if who == "rate" else (wb, b.clip)
                    source = w
                per_pair.append((w, aggregate_rate(source.rate_bpm, clip.aggregate), self._recording_rate(i, j, source, clip),
                                 recording_distribution(source, clip)))
            out.append(per_pair)
        return out

    def rates(self, who: str, gate: float | None = None, check: bool | None = None, pool: bool = True) -> list[float]:
        """Recording rates (bpm) of ``who`` = ``rate``, ``breathing``, ``composite`` (with
        ``gate``) or ``composite+breathing`` (the composites and the breathing members alone
        voting together): per recording, the vote (``pulmo.resp_rate.predictor.vote_rate``; with
        ``pool`` False always the median) of the member pairs' rates, each made with its own clip
        config (a composite's = its rate member's, with the three-halves check set to ``check``
        unless None)."""
        import numpy as np

        from pulmo.resp_rate.predictor import vote_rate

        sr = self.rate[0].clip.sample_rate_hz
        return [vote_rate(it.samples, sr, [p[2] for p in pairs], [p[3] for p in pairs]) if pool
                else float(np.median([p[2] for p in pairs])) for it, pairs in zip(self.items, self._pairs(who, gate, check))]

    def doubts(self, who: str, gate: float | None = None, check: bool | None = None) -> list[float]:
        """Each recording's :func:`pulmo.resp_rate.doubt.rate_doubt` over the member pairs (as :meth:`rates`)."""
        from pulmo.resp_rate.doubt import rate_doubt

        return [rate_doubt([p[2] for p in pairs], [p[0].rate_bpm for p in pairs], [p[1] for p in pairs])
                for pairs in self._pairs(who, gate, check)]

    def report(self, who: str, gate: float | None = None, check: bool | None = None) -> dict[str, Any]:
        return predictions_report(self.items, self.rates(who, gate, check))


def predictions_report(items: list[Any], pred: list[float]) -> dict[str, Any]:
    """Regression report (bpm) of rates ``pred`` for labelled ``items``, with MSE by rate range,
    the ``(key, true, predicted)`` triples and (items of several groups) a report per group."""
    from pulmo.metrics.regression import mse_by_range, regression_report
    from pulmo.resp_rate.evaluate import by_group

    true = [it.rate_bpm for it in items]
    rep: dict[str, Any] = regression_report(pred, true)
    rep["mse_by_range"] = mse_by_range(pred, true)
    rep["predictions"] = [(it.key, it.rate_bpm, p) for it, p in zip(items, pred)]
    if len({it.group for it in items}) > 1:
        rep["by_group"] = by_group(items, rep["predictions"])
    return rep


def networks(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """The single-network checkpoint dicts of a single-network or vote checkpoint (exits otherwise)."""
    members = bundle.get("vote", [bundle])
    if any("composite" in b or "vote" in b for b in members):
        sys.exit("--rate and --breathing must each be a single-network checkpoint or a vote of single networks")
    return members


def cv_members(runs: Path, members: list[dict[str, Any]], fold: int) -> list[Path] | None:
    """The cross-validation runs (fold ``fold``) of the same rows and seeds as ``members``, or None if any is missing."""
    paths = [cv_dir(runs, b["name"], int(b["config"]["train"]["seed"]), fold) / "model.pt" for b in members]
    return paths if all(p.is_file() for p in paths) else None


def fold_items(fold: int, subjects_test: list[str] | None) -> dict[str, list[Any]]:
    """RRuJO ``val`` and ``test`` recordings of subject fold ``fold`` (checked against the
    members' own test subjects when given)."""
    from pulmo.data.adapters.breath_csv import load_breath_csv
    from pulmo.resp_rate.config import load_rr_config
    from pulmo.resp_rate.data import load_recordings, subject_folds
    from pulmo.resp_rate.evaluate import labelled_recordings

    cfg = load_rr_config(CONFIG_DIR / "base.yaml", {"data": {"test_fold": fold}})
    splits = subject_folds(load_breath_csv(cfg.data.resolved_root()), cfg.data)
    if subjects_test is not None and sorted({r.patient_id for r in splits["test"]}) != sorted(subjects_test):
        sys.exit(f"fold {fold}: the members were tested on other subjects than this split's; retrain them on it")
    return {name: labelled_recordings(load_recordings(splits[name], cfg.clip)) for name in ("val", "test")}


def choose_gate(val_real: Scored, val_syn: Scored) -> tuple[str, float | None, bool | None, dict[str, dict[str, float]]]:
    """Who votes (:data:`VOTES`), the gate and the three-halves check, together: the option
    with the lowest RRuJO-validation MAE, then (among equals) the lowest synthetic-validation
    MAE; ties: the first of :data:`VOTES` x :data:`GATES` x :data:`CHECKS`.

    Real validation comes first because a gate can only cost accuracy on real recordings (none
    holds heavy breathing) and the targets are about them; an earlier rule (the sum of the two
    MAEs) let a 0.35 bpm gain on synthetic clips turn the three-halves check off at a 0.17 bpm
    loss on real ones, and cross-validated at 1.18 bpm instead of 0.90."""
    options = [(v, g, c) for v in VOTES for g in GATES for c in CHECKS]
    table = {gate_name(g, c, v): {"rrujo_val_mae": val_real.report(v, g, c)["mae"],
                                  "synthetic_val_mae": val_syn.report(v, g, c)["mae"]} for v, g, c in options}
    vote, gate, check = min(options, key=lambda o: validation_order(table[gate_name(o[1], o[2], o[0])]))
    return vote, gate, check, table


def validation_order(row: dict[str, float]) -> tuple[float, float]:
    """How an option's validation MAEs (bpm) rank it: RRuJO first, then synthetic."""
    return row["rrujo_val_mae"], row["synthetic_val_mae"]


def study_fold(fold: int, rate: list[dict[str, Any]], breathing: list[dict[str, Any]], syn_val: list[Any],
               syn_test: list[Any] | None) -> dict[str, Any]:
    """Gate chosen on validation, then every estimator scored on the fold's test subjects (and
    the synthetic test set). ``rate`` and ``breathing``: paired single-network checkpoint dicts."""
    from pulmo.resp_rate.doubt import doubt_threshold
    from pulmo.resp_rate.predictor import predictor_from_checkpoint

    if len(rate) != len(breathing):
        sys.exit(f"{len(rate)} rate networks and {len(breathing)} breathing networks cannot be paired")
    tested_on = {tuple(b["metrics"]["subjects"]["test"]) for b in rate + breathing}
    if len(tested_on) != 1:
        sys.exit(f"fold {fold}: the member networks were tested on different subjects")
    items = fold_items(fold, list(tested_on.pop()))
    nets = {k: [predictor_from_checkpoint(b) for b in bs] for k, bs in (("rate", rate), ("breathing", breathing))}
    scored = {name: Scored(its, nets["rate"], nets["breathing"]) for name, its in
              (("val", items["val"]), ("test", items["test"]), ("synthetic_val", syn_val))
              + ((("synthetic", syn_test),) if syn_test else ())}
    vote, gate, check, table = choose_gate(scored["val"], scored["synthetic_val"])
    out: dict[str, Any] = {"fold": fold, "vote": vote, "gate_above_bpm": gate, "three_halves_check": check,
                           "gate": gate_name(gate, check, vote),
                           "gate_selection": table,
                           "members": {k: {"name": bs[0]["name"], "seeds": [int(b["config"]["train"]["seed"]) for b in bs]}
                                       for k, bs in (("rate", rate), ("breathing", breathing))}}
    for split in scored:
        out[split] = {"composite": scored[split].report(vote, gate, check), "rate": scored[split].report("rate"),
                      "breathing": scored[split].report("breathing")}
    doubts = {split: scored[split].doubts(vote, gate, check) for split in scored}
    out["doubt_above"] = doubt_threshold(doubts["val"], DOUBT_COVERAGE)
    for split in scored:
        out[split]["doubt_flags"] = [d > out["doubt_above"] for d in doubts[split]]
        out[split]["doubt"] = doubt_summary(out[split]["composite"]["predictions"], out[split]["doubt_flags"])
    out["test_every_option"] = {gate_name(g, c, v): scored["test"].rates(v, g, c) for v in VOTES for g in GATES for c in CHECKS}
    out["test_median_vote"] = {"composite": scored["test"].rates(vote, gate, check, pool=False),
                               "rate": scored["test"].rates("rate", pool=False)}
    return out


def doubt_summary(predictions: list[tuple[str, float, float]], flags: list[bool]) -> dict[str, Any]:
    """:func:`pulmo.inference.resp_rate.split_by_doubt` of ``(key, true, predicted)`` triples, with
    how many of the misses (more than 1 bpm off) were flagged."""
    from pulmo.inference.resp_rate import split_by_doubt

    misses = [abs(p - t) > 1 for _, t, p in predictions]
    return {**split_by_doubt([p for _, _, p in predictions], [t for _, t, _ in predictions], flags),
            "misses": sum(misses), "misses_flagged": sum(m and f for m, f in zip(misses, flags))}


def pooled_doubt(folds: list[dict[str, Any]]) -> dict[str, Any]:
    """:func:`doubt_summary` of every fold's test predictions, each flagged by its fold's threshold."""
    return doubt_summary([p for f in folds for p in f["test"]["composite"]["predictions"]],
                         [x for f in folds for x in f["test"]["doubt_flags"]])


def pooled(folds: list[dict[str, Any]], who: str) -> dict[str, Any]:
    """``who``'s test predictions of every fold, scored together."""
    return pooled_report([p for f in folds for p in f["test"][who]["predictions"]])


def page(main: dict[str, Any], cv: list[dict[str, Any]], command: str, wall_s: float, device: str) -> str:
    from pulmo.resp_rate.evaluate import SNR_BANDS

    def seeds(k: str) -> str:
        m = main["members"][k]
        return f"{m['name']} seeds {', '.join(map(str, m['seeds']))}"

    who = (("composite", f"composite ({main['gate']})"), ("rate", f"rate member alone ({seeds('rate')})"),
           ("breathing", f"breathing member alone ({seeds('breathing')})"))
    L = ["# Composite resp-rate model: rate from the rate-only network, breathing class from the heavy-capable one", "",
         "Each window: the breathing member (trained with synthetic and time-compressed clips for the none and heavy"
         " classes) gives the class and the noise flag; where it calls the window none or heavy (or, per the gate, its rate"
         " lies above a threshold) its rate is used, elsewhere the rate member's (trained on real RRuJO breathing, 8-20 bpm,"
         " only). A composite's recording rate = median of its window rates, refined with its rate member's tolerance,"
         " then (if chosen) the three-halves check. Each member is a vote of seeds: seed k of one row is paired with seed k"
         " of the other, and the recording's rate is their vote (every row below is one; no seed is chosen): one fit to the"
         " pairs' pooled rate distributions where every pair's rate comes from windows with one, otherwise the median of the"
         " pairs' rates (`pulmo.resp_rate.predictor.vote_rate`).", "",
         "Gate, check and who votes (the composites alone, or with the breathing networks alone beside them: the median"
         " of twice as many rates) chosen on validation only (RRuJO validation subjects +"
         f" {len(main['synthetic_val']['composite']['predictions'])} synthetic validation recordings, seed {SYNTHETIC_VAL_SEED};"
         " the lowest RRuJO validation MAE, then the lowest synthetic validation MAE among equals, then the composites"
         " alone, then the fewest windows handed to the breathing member):"
         f" **{main['gate']}**.", "",
         "| gate, check, vote | RRuJO val MAE | synthetic val MAE |", "|---|---|---|"]
    L += [f"| {g} | {v['rrujo_val_mae']:.2f} | {v['synthetic_val_mae']:.2f} |" for g, v in main["gate_selection"].items()]
    L += ["", f"Device: {device}. Wall time: {wall_s / 60:.1f} min.", "", f"Reproduce: `{command}`", "",
          "## RRuJO test subjects (fold 0; per recording, bpm)", "",
          "| estimator | n | MAE | MSE | CCC | Pearson | val MAE | val CCC |", "|---|---|---|---|---|---|---|---|"]
    for k, label in who:
        t, v = main["test"][k], main["val"][k]
        L.append(f"| {label} | {t['n']} | {t['mae']:.2f} | {t['mse']:.2f} | {t['ccc']:.3f} | {t['pearson']:.3f} | "
                 f"{v['mae']:.2f} | {v['ccc']:.3f} |")
    if cv:
        L += ["", "## Five-fold subject cross-validation (every RRuJO recording scored once; the same rows and seeds per fold,"
              " gate chosen per fold on its validation)", "",
              "| estimator | n | MAE | MSE | CCC | Pearson | within 1 bpm |", "|---|---|---|---|---|---|---|"]
        for k, label in who:
            r = pooled(cv, k)
            L.append(f"| {label.split(' (')[0]} | {r['n']} | {r['mae']:.2f} | {r['mse']:.2f} | {r['ccc']:.3f} | "
                     f"{r['pearson']:.3f} | {r['within_1_bpm']:.2f} |")
        L += ["", "Per fold (test MAE composite / rate / breathing; gate): " + "; ".join(
            f"fold {f['fold']}: {f['test']['composite']['mae']:.2f} / {f['test']['rate']['mae']:.2f} / "
            f"{f['test']['breathing']['mae']:.2f}, {f['gate']}" for f in cv)]
        L += ["", "Every gate and check fixed for all folds, cross-validated (for reference only: the choice above never"
              " sees these):", "", "| gate, check, vote | MAE | CCC | within 1 bpm |", "|---|---|---|---|"]
        for name in cv[0]["test_every_option"]:
            r = stored_rates_report(cv, "test_every_option", name, "composite")
            L.append(f"| {name} | {r['mae']:.2f} | {r['ccc']:.3f} | {r['within_1_bpm']:.2f} |")
        L += median_vote_section(main, cv, who)
    L += doubt_section(main, cv)
    if "synthetic" in main:
        bands = list(SNR_BANDS)
        L += ["", "## Held-out synthetic set (0-60 bpm, noise by SNR band): MAE per recording", "",
              "| estimator | " + " | ".join(bands) + " | all MAE | all CCC | MSE > 25 bpm |", "|---|" + "---|" * (len(bands) + 3)]
        for k, label in who:
            s = main["synthetic"][k]
            L.append(f"| {label} | " + " | ".join(f"{s['by_group'][b]['mae']:.2f}" for b in bands)
                     + f" | {s['mae']:.2f} | {s['ccc']:.3f} | {s['mse_by_range']['above_25']:.2f} |")
    return "\n".join(L) + "\n"


def stored_rates_report(folds: list[dict[str, Any]], field: str, name: str, who: str) -> dict[str, Any]:
    """Fold studies' test rates stored under ``fold[field][name]`` (in the order of ``who``'s
    test predictions), scored together against the labels."""
    return pooled_report([(key, true, f[field][name][i])
                          for f in folds for i, (key, true, _) in enumerate(f["test"][who]["predictions"])])


def median_vote_section(main: dict[str, Any], cv: list[dict[str, Any]], who: tuple[tuple[str, str], ...]) -> list[str]:
    """The page's lines comparing the vote used (pooled fits where possible) with the median
    of the pairs' rates (the vote rule before 2026-12-03), same options, same folds."""
    L = ["", "Vote rule, the same members and options (for reference; `test_median_vote`): the vote used above against the"
         " median of the pairs' recording rates.", "",
         "| estimator | fold-0 test: vote used / median MAE | cross-validated: vote used MAE / CCC | cross-validated: median"
         " MAE / CCC |", "|---|---|---|---|"]
    for k, label in who[:2]:
        used, med = pooled(cv, k), stored_rates_report(cv, "test_median_vote", k, k)
        L.append(f"| {label.split(' (')[0]} | {main['test'][k]['mae']:.2f} / "
                 f"{stored_rates_report([main], 'test_median_vote', k, k)['mae']:.2f} | "
                 f"{used['mae']:.2f} / {used['ccc']:.3f} | {med['mae']:.2f} / {med['ccc']:.3f} |")
    return L


def doubt_section(main: dict[str, Any], cv: list[dict[str, Any]]) -> list[str]:
    """The page's lines on the doubt flag: what it flags and what the unflagged rates score."""
    def row(name: str, d: dict[str, Any]) -> str:
        c, f = d["confident"], d["flagged"]
        confident = f"{c['mae']:.2f} | {c['ccc']:.3f}" if c else "- | -"
        flagged = f"{f['mae']:.2f}" if f else "-"
        n = d["n_flagged"] + (c["n"] if c else 0)
        return (f"| {name} | {n} | {d['n_flagged']} ({100 * d['fraction']:.0f} %) | {confident} | {flagged} | "
                f"{d['misses_flagged']} of {d['misses']} |")

    L = ["", "## Doubt flag: which rates to check", "",
         "A recording's rate is flagged uncertain when its doubt score (`pulmo.resp_rate.doubt`: the member pairs'"
         " disagreement + how far the refinement and check moved each pair's rate + the spread of the window rates) exceeds"
         f" the {100 * DOUBT_COVERAGE:.0f}th percentile of the RRuJO validation recordings' scores (fold 0: {main['doubt_above']:.3f};"
         " each cross-validation fold its own). It flags the rate for a person to check; it changes no rate.", "",
         "| recordings | n | flagged | confident MAE | confident CCC | flagged MAE | misses > 1 bpm flagged |",
         "|---|---|---|---|---|---|---|", row("RRuJO test subjects (fold 0)", main["test"]["doubt"])]
    if cv:
        L.append(row("five-fold subject cross-validation", pooled_doubt(cv)))
    if "synthetic" in main:
        L.append(row("held-out synthetic set (fold-0 threshold)", main["synthetic"]["doubt"]))
    return L


def strip_predictions(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: strip_predictions(v) for k, v in d.items()
                if k not in ("predictions", "test_every_option", "test_median_vote", "doubt_flags")}
    return d


def validation_key(study: dict[str, Any]) -> tuple[float, float]:
    """A fold study's chosen option's :func:`validation_order`."""
    return validation_order(study["gate_selection"][study["gate"]])


def choose_breathing(studies: list[dict[str, Any]]) -> int:
    """Index of the breathing-member candidate whose fold study (:func:`study_fold`, its own
    gate chosen) ranks first by the rule that ranks the gates (:func:`choose_gate`): the lowest
    RRuJO-validation MAE, then the lowest synthetic-validation MAE; ties go to the first."""
    return min(range(len(studies)), key=lambda i: validation_key(studies[i]))


def cross_validate(runs: Path, rate: list[dict[str, Any]], breathing: list[dict[str, Any]], syn_val: list[Any],
                   folds: int) -> list[dict[str, Any]]:
    """:func:`study_fold` of every subject fold with the cross-validation runs of the members'
    rows and seeds; empty if any is missing."""
    from pulmo.engine.checkpoint import read_checkpoint

    members = {"rate": rate, "breathing": breathing}
    if not all(cv_members(runs, ms_, f) for ms_ in members.values() for f in range(folds)):
        return []
    cv = []
    for f in range(folds):
        pair = {k: [read_checkpoint(p) for p in cv_members(runs, ms_, f) or []] for k, ms_ in members.items()}
        cv.append(study_fold(f, pair["rate"], pair["breathing"], syn_val, None))
        print(f"  fold {f}: gate {cv[-1]['gate']}, test MAE {cv[-1]['test']['composite']['mae']:.2f}", flush=True)
    return cv


def breathing_candidates(paths: list[Path], studies: list[dict[str, Any]], cvs: list[list[dict[str, Any]]],
                         best: int) -> list[dict[str, Any]]:
    """One summary per breathing-member candidate: its members, gate, validation MAEs (what
    chose one), and its fold-0 test, synthetic test and cross-validated composite reports
    (shown, never used to choose; None where not run)."""
    return [{"path": str(path), "chosen": i == best, "members": st["members"]["breathing"], "gate": st["gate"],
             "validation_mae": dict(zip(("rrujo", "synthetic"), validation_key(st))),
             "test": strip_predictions(st["test"]["composite"]),
             "synthetic": strip_predictions(st["synthetic"]["composite"]) if "synthetic" in st else None,
             "cv": pooled(cv, "composite") if cv else None}
            for i, (path, st, cv) in enumerate(zip(paths, studies, cvs))]


def breathing_choice_section(candidates: list[dict[str, Any]]) -> list[str]:
    """The page's table of :func:`breathing_candidates`."""
    def pair(r: dict[str, Any] | None) -> str:
        return f"{r['mae']:.2f} / {r['ccc']:.3f}" if r else "-"

    L = ["", "## Breathing member: chosen among the candidates on validation", "",
         "Each candidate gets its own gate and check (chosen as above); the candidates are then ranked by the same rule:"
         " the chosen option's RRuJO validation MAE, then its synthetic validation MAE; ties go to the first given."
         " Test and cross-validated figures are for reference only.", "",
         "| breathing member | gate, check | RRuJO val MAE | synthetic val MAE | fold-0 test MAE / CCC | synthetic test MAE / CCC"
         " | cross-validated MAE / CCC |", "|---|---|---|---|---|---|---|"]
    for c in candidates:
        m, v = c["members"], c["validation_mae"]
        name = f"{m['name']} seeds {', '.join(map(str, m['seeds']))} (`{Path(c['path']).name}`)"
        L.append(f"| {'**' + name + '** (chosen)' if c['chosen'] else name} | {c['gate']} | {v['rrujo']:.2f} | "
                 f"{v['synthetic']:.2f} | {pair(c['test'])} | {pair(c['synthetic'])} | {pair(c['cv'])} |")
    return L


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=Path, default=ASSETS / "resp_rate_lstm_window15.pt",
                   help="rate member: a single-network checkpoint or a vote of them")
    p.add_argument("--breathing", type=Path, nargs="+", default=[ASSETS / "resp_rate_tc_lstm.pt"],
                   help="breathing member: a single-network checkpoint or a vote of as many networks as --rate's; "
                        "given several, the one whose composite does best on validation (see choose_breathing)")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "resp_rate",
                   help="runs of benchmarks/resp_rate.py; its cross-validation runs of the members' rows and seeds give "
                        "the cross-validation (skipped if absent)")
    p.add_argument("--results", type=Path, default=ROOT / "results")
    p.add_argument("--bundle", type=Path, help="write the composite checkpoint here")
    args = p.parse_args()
    import torch

    from pulmo.engine.checkpoint import read_checkpoint, save_checkpoint_dict
    from pulmo.engine.train import cpu_model_name
    from pulmo.resp_rate.evaluate import synthetic_test_set
    from pulmo.resp_rate.config import ClipConfig
    from pulmo.resp_rate.predictor import composite_checkpoint, vote_checkpoint

    torch.set_num_threads(1)
    folds = load_rr_config_folds()
    started = time.time()
    rate = networks(read_checkpoint(args.rate))
    candidates = [networks(read_checkpoint(p)) for p in args.breathing]
    sr = rate[0]["audio"]["sample_rate_hz"]
    syn_val, syn_test = synthetic_test_set(sr, n_per_band=20, seed=SYNTHETIC_VAL_SEED), synthetic_test_set(sr)
    studies, cvs = [], []
    for path, breathing in zip(args.breathing, candidates):
        studies.append(study_fold(0, rate, breathing, syn_val, syn_test))
        print(f"{path.name}: fold 0 gate {studies[-1]['gate']}, test MAE {studies[-1]['test']['composite']['mae']:.2f}", flush=True)
        cvs.append(cross_validate(args.runs, rate, breathing, syn_val, folds))
    best = choose_breathing(studies)
    candidate_summaries = breathing_candidates(args.breathing, studies, cvs, best)
    members, main_fold, cv = {"rate": rate, "breathing": candidates[best]}, studies[best], cvs[best]
    command = "python benchmarks/resp_rate_composite.py " + " ".join(sys.argv[1:])
    text = page(main_fold, cv, command, time.time() - started, f"CPU {cpu_model_name()}, 1 thread")
    if len(candidates) > 1:
        text += "\n".join(breathing_choice_section(candidate_summaries)) + "\n"
    if args.bundle:
        metrics = {k: strip_predictions(main_fold[k]["composite"]) for k in ("val", "test", "synthetic")}
        metrics["gate_selection"] = main_fold["gate_selection"]
        metrics["doubt"] = {"coverage_on_validation": DOUBT_COVERAGE, "test": main_fold["test"]["doubt"]}
        if cv:
            metrics["cross_validation"] = pooled(cv, "composite")
            metrics["doubt"]["cross_validation"] = pooled_doubt(cv)
        composites = []
        for rate_net, breathing_net in zip(members["rate"], members["breathing"]):
            rate_net = {**rate_net, "audio": {**rate_net["audio"], "three_halves_check": with_check(
                ClipConfig(**rate_net["audio"]), main_fold["three_halves_check"]).three_halves_check}}
            composites.append(composite_checkpoint(f"composite({rate_net['name']}+{breathing_net['name']})", rate_net,
                                                   breathing_net, main_fold["gate_above_bpm"], {}))
        mixed = main_fold["vote"] == MIXED_VOTE
        if len(composites) == 1 and not mixed:
            bundle = {**composites[0], "metrics": {**composites[0]["metrics"], **metrics}}
        else:
            names = {k: main_fold["members"][k] for k in members}
            bundle = vote_checkpoint(f"vote of composites({names['rate']['name']}+{names['breathing']['name']}, seeds "
                      + ", ".join(f"{a}+{b}" for a, b in zip(names["rate"]["seeds"], names["breathing"]["seeds"])) + ")"
                      + (f" and of {names['breathing']['name']} alone" if mixed else ""),
                      composites + (list(members["breathing"]) if mixed else []), metrics)
        save_checkpoint_dict(args.bundle, {**bundle, "doubt_above": main_fold["doubt_above"]})
        where = args.bundle.relative_to(ROOT) if args.bundle.is_relative_to(ROOT) else args.bundle
        text += f"\nBundled: `{where}` ({args.bundle.stat().st_size / 1e3:.0f} kB), the default resp-rate model.\n"
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "resp_rate_composite.md").write_text(text)
    (args.results / "resp_rate_composite.json").write_text(
        json.dumps({"fold0": strip_predictions(main_fold), "cv": [strip_predictions(f) for f in cv],
                    "cv_pooled": {k: pooled(cv, k) for k in ("composite", "rate", "breathing")} if cv else None,
                    "breathing_candidates": candidate_summaries}, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
