"""Real breathing with known noise: the RRuJO test recordings (fold 0) once per SNR band, as they
are and with background noise mixed in (``pulmo.resp_rate.evaluate.with_noise_bands``), scored by
each ``--checkpoint`` and by the DSP baseline (settings chosen on the training and validation
recordings by ``benchmarks/resp_rate.py``). The synthetic set's SNR bands measure the same
thing on synthetic breathing; here the breathing is real and only the noise is made.
Writes ``results/resp_rate_noisy.md|json|png``.

    python benchmarks/resp_rate_noisy.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from resp_rate import dsp_baseline
from resp_rate_composite import fold_items

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
ASSETS = ROOT / "src" / "pulmo" / "assets"


def band_reports(items: list[Any], predictions: list[tuple[str, float, float]]) -> dict[str, Any]:
    """Per SNR band and over all copies: the regression report (bpm) of ``predictions``."""
    from pulmo.metrics.regression import regression_report
    from pulmo.resp_rate.evaluate import by_group

    return {"by_band": by_group(items, predictions), "all": regression_report([p for _, _, p in predictions],
                                                                              [t for _, t, _ in predictions])}


def plot_bands(scored: dict[str, dict[str, Any]], path: Path) -> None:
    """MAE per SNR band, one line per estimator (DSP dashed), as a PNG at ``path``."""
    from matplotlib.figure import Figure

    from pulmo.resp_rate.evaluate import SNR_BANDS

    bands = list(SNR_BANDS)
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    for name, rep in scored.items():
        dsp = name.startswith("DSP")  # models are named "<name> (`<file>`)": the file is the shorter label
        ax.plot(range(len(bands)), [rep["by_band"][b]["mae"] for b in bands], "k--s" if dsp else "o-",
                label="DSP harmonic sum" if dsp else name.split("`")[1])
    ax.set_xticks(range(len(bands)), bands)
    ax.set_xlabel("background noise mixed into the recording (SNR band)")
    ax.set_ylabel("MAE, breaths per minute (per recording)")
    ax.set_title("RRuJO test recordings (real breathing) with known noise: error against SNR")
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)


def page(scored: dict[str, dict[str, Any]], n_recordings: int, command: str, wall_s: float, device: str) -> str:
    from pulmo.resp_rate.evaluate import SNR_BANDS

    bands = list(SNR_BANDS)
    L = ["# Respiratory rate: real RRuJO breathing with known background noise", "",
         f"The {n_recordings} RRuJO test recordings (fold 0, subjects no model here was trained or validated on) once per"
         " SNR band: as recorded (`clean`) and with one of five generated noise types (hum, fan, traffic, wind, babble, in"
         " turn) mixed in at an SNR drawn uniformly within the band (seeded). Per recording, breaths per minute.", "",
         f"Device: {device}. Wall time: {wall_s / 60:.1f} min.", "", f"Reproduce: `{command}`", "",
         "| estimator | " + " | ".join(f"{b} MAE" for b in bands) + " | all MAE | all CCC |",
         "|---|" + "---|" * (len(bands) + 2)]
    for name, rep in scored.items():
        L.append(f"| {name} | " + " | ".join(f"{rep['by_band'][b]['mae']:.2f}" for b in bands)
                 + f" | {rep['all']['mae']:.2f} | {rep['all']['ccc']:.3f} |")
    L += ["", "CCC per band:", "", "| estimator | " + " | ".join(bands) + " |", "|---|" + "---|" * len(bands)]
    for name, rep in scored.items():
        L.append(f"| {name} | " + " | ".join(f"{rep['by_band'][b]['ccc']:.3f}" for b in bands) + " |")
    return "\n".join(L) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, nargs="+",
                   default=[ASSETS / "resp_rate_composite.pt", ASSETS / "resp_rate_lstm_window15.pt"],
                   help="resp-rate checkpoints to score (default: the bundled default and rate-only vote)")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "resp_rate",
                   help="runs of benchmarks/resp_rate.py (its dsp.json holds the DSP settings; made if absent)")
    p.add_argument("--seed", type=int, default=2024, help="seed of the noise")
    p.add_argument("--results", type=Path, default=ROOT / "results")
    args = p.parse_args()
    import torch

    from pulmo.engine.checkpoint import read_checkpoint
    from pulmo.engine.train import cpu_model_name
    from pulmo.resp_rate.config import ClipConfig
    from pulmo.resp_rate.dsp import DspConfig
    from pulmo.resp_rate.evaluate import score_dsp, score_model, with_noise_bands
    from pulmo.resp_rate.predictor import predictor_from_checkpoint, seen_subjects

    torch.set_num_threads(1)
    started = time.time()
    bundles = {path: read_checkpoint(path) for path in args.checkpoint}
    test = fold_items(0, None)["test"]
    for path, bundle in bundles.items():
        seen = set(sum(seen_subjects([bundle]).values(), []))
        if any(it.key.split("/")[-1].removesuffix(".flac") in seen for it in test):
            sys.exit(f"{path.name} was trained or validated on a fold-0 test subject")
    models = {path: predictor_from_checkpoint(bundle) for path, bundle in bundles.items()}
    sr = next(iter(models.values())).clip.sample_rate_hz
    items = with_noise_bands(test, sr, seed=args.seed)
    scored: dict[str, dict[str, Any]] = {}
    for path, bundle in bundles.items():
        res = score_model(models[path], items)
        scored[f"{bundle['name']} (`{path.name}`)"] = band_reports(items, res["predictions"])
        print(f"{path.name}: MAE {res['recording']['mae']:.2f}", flush=True)
    settings = dsp_baseline(args.runs)["selected"]
    res = score_dsp(ClipConfig(sample_rate_hz=sr), items, DspConfig(**settings))
    scored[f"DSP harmonic sum {json.dumps(settings)}"] = band_reports(items, res["predictions"])
    command = " ".join(["python benchmarks/resp_rate_noisy.py", *sys.argv[1:]])
    text = page(scored, len(test), command, time.time() - started, f"CPU {cpu_model_name()}, 1 thread")
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "resp_rate_noisy.md").write_text(text + "\n![MAE against SNR band](resp_rate_noisy.png)\n")
    plot_bands(scored, args.results / "resp_rate_noisy.png")
    (args.results / "resp_rate_noisy.json").write_text(json.dumps({"seed": args.seed, "n_recordings": len(test),
                                                                   "scored": scored}, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
