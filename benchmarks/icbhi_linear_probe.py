"""Is anything in the shared ICBHI copy learnable across the official split? A linear probe.

The cycles and splits of the Conv-ViT study (``configs/experiments/conv-vit/base.yaml``:
official train/test, covered subset; validation = patient-disjoint 30 % of train; audio at
16 kHz, band-passed 50-2000 Hz), each cycle summarised by log-mel statistics (64 bands
50-2000 Hz, per-cycle gain removed: per-band mean, std and mean absolute frame-to-frame
change = 192 numbers). A class-balanced logistic regression, its ``C`` chosen on validation,
then scored once on test:

- normal vs adventitious: ROC AUC on train, validation, test and per test device;
- normal / crackle / wheeze / both: the official ICBHI score (argmax).

A deep model that does not beat this probe has learned nothing the statistics lack; a test
AUC near 0.5 says the covered test subset shares little learnable signal with the covered
training subset. Writes ``results/icbhi_linear_probe.md|json``.

With ``--encoder FILE`` (a masked-spectrogram pretrained encoder, see
``benchmarks/icbhi_multidataset.py pretrain``) each cycle is instead the encoder's pooled
embedding, with that study's cycles and preprocessing (4 kHz, 100-2000 Hz, 2.5 s); writes
``results/icbhi_linear_probe_pretrained.md|json``.

    PULMO_DATA=../shared/data python benchmarks/icbhi_linear_probe.py [--encoder FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

CONFIG = ROOT / "configs" / "experiments" / "conv-vit" / "base.yaml"
ENCODER_CONFIG = ROOT / "configs" / "experiments" / "multidataset" / "base.yaml"
C_GRID = (0.001, 0.01, 0.1, 1.0)
N_MELS, FMIN_HZ, FMAX_HZ = 64, 50.0, 2000.0


def cycle_statistics(wave: np.ndarray, sample_rate_hz: int) -> np.ndarray:
    """``(T,)`` cycle -> ``(3 * N_MELS,)``: per-band mean, std and mean |frame difference| of
    the log-mel spectrogram after removing the cycle's overall level."""
    import librosa

    n_fft = 1024 if sample_rate_hz >= 8000 else 512
    if len(wave) < n_fft:
        wave = np.pad(wave, (0, n_fft - len(wave)))
    mel = librosa.feature.melspectrogram(y=wave.astype(np.float32), sr=sample_rate_hz, n_fft=n_fft, hop_length=n_fft // 4,
                                         n_mels=N_MELS, fmin=FMIN_HZ, fmax=FMAX_HZ)
    logmel = np.log(mel + 1e-10)
    logmel -= logmel.mean()
    return np.concatenate([logmel.mean(1), logmel.std(1), np.abs(np.diff(logmel, axis=1)).mean(1)])


def encoder_embeddings(waves: list[np.ndarray], encoder: Path, config: Any) -> np.ndarray:
    """``(N, D)`` pooled embeddings of 2.5 s cycles (repeat-padded) from a pretrained encoder."""
    import torch

    from pulmo.engine.evaluate import fixed_length_batches
    from pulmo.engine.pretrain import load_pretrained_encoder
    from pulmo.engine.train import build_net

    net = build_net(config, len(config.data.classes)).eval()
    load_pretrained_encoder(net, encoder)
    with torch.no_grad():
        return np.concatenate([net.model.embed(net.features(batch)).numpy() for batch in
                               fixed_length_batches(waves, config.audio.cycle_samples, 64, "repeat", "embedding", False)])


def auc(y: np.ndarray, p: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if len(set(y.tolist())) == 2 else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=ROOT / "results")
    p.add_argument("--encoder", type=Path, help="probe this pretrained encoder's embeddings instead of log-mel statistics")
    args = p.parse_args()
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from pulmo.config import load_config
    from pulmo.data.cycles import load_cycle_waveforms
    from pulmo.engine.train import cpu_model_name, make_splits
    from pulmo.metrics.icbhi import icbhi_scores

    started = time.time()
    cfg = load_config(ENCODER_CONFIG if args.encoder else CONFIG)
    splits, _ = make_splits(cfg)
    labels = list(cfg.data.classes)
    sr = cfg.audio.sample_rate_hz
    data: dict[str, dict[str, Any]] = {}
    for name in ("train", "val", "test"):
        recs = getattr(splits, name)
        waves = load_cycle_waveforms(recs, cfg.audio, progress=True)
        X = encoder_embeddings(waves, args.encoder, cfg) if args.encoder else np.array([cycle_statistics(w, sr) for w in waves])
        data[name] = {"X": X,
                      "y": np.array([labels.index(r.label) for r in recs]), "device": np.array([r.device for r in recs])}
    scale = StandardScaler().fit(data["train"]["X"])
    X = {k: scale.transform(d["X"]) for k, d in data.items()}
    abnormal = {k: d["y"] != labels.index("normal") for k, d in data.items()}

    def fit(c: float, multi: bool) -> Any:
        target = data["train"]["y"] if multi else abnormal["train"]
        return LogisticRegression(C=c, class_weight="balanced", max_iter=5000).fit(X["train"], target)

    binaries = {c: fit(c, False) for c in C_GRID}
    multis = {c: fit(c, True) for c in C_GRID}
    val_auc = {c: auc(abnormal["val"], m.predict_proba(X["val"])[:, 1]) for c, m in binaries.items()}
    val_score = {c: icbhi_scores(data["val"]["y"], m.predict(X["val"]))["score"] for c, m in multis.items()}
    c_bin, c_multi = max(C_GRID, key=lambda c: val_auc[c]), max(C_GRID, key=lambda c: val_score[c])
    binary, multi = binaries[c_bin], multis[c_multi]
    out: dict[str, Any] = {"config": str((ENCODER_CONFIG if args.encoder else CONFIG).relative_to(ROOT)), "sample_rate_hz": sr,
                           "features": f"pretrained encoder {args.encoder.name}" if args.encoder else "log-mel statistics", "C_grid": list(C_GRID),
                           "binary": {"val_auc_by_C": val_auc, "C": c_bin}, "four_class": {"val_score_by_C": val_score, "C": c_multi},
                           "n": {k: int(len(d["y"])) for k, d in data.items()}}
    for name, d in data.items():
        prob = binary.predict_proba(X[name])[:, 1]
        out["binary"][name] = {"auc": auc(abnormal[name], prob),
                               "per_device": {dev: auc(abnormal[name][d["device"] == dev], prob[d["device"] == dev])
                                              for dev in sorted(set(d["device"].tolist()))}}
        out["four_class"][name] = icbhi_scores(d["y"], multi.predict(X[name]))
    out["wall_s"] = round(time.time() - started, 1)
    out["device"] = f"CPU {cpu_model_name()}"
    args.results.mkdir(parents=True, exist_ok=True)
    stem = "icbhi_linear_probe_pretrained" if args.encoder else "icbhi_linear_probe"
    (args.results / f"{stem}.json").write_text(json.dumps(out, indent=1) + "\n")
    text = page(out, args.encoder)
    (args.results / f"{stem}.md").write_text(text)
    print(text)


def page(out: dict[str, Any], encoder: Path | None = None) -> str:
    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    b, m = out["binary"], out["four_class"]
    devices = sorted(set(b["test"]["per_device"]) | set(b["train"]["per_device"]))
    what = ("the pooled embedding of an encoder pretrained by masked spectrogram modelling on unlabelled RRuJO and KAUH "
            "audio (`benchmarks/icbhi_multidataset.py pretrain`; no ICBHI audio), with that study's cycles and preprocessing"
            if encoder else "per-cycle log-mel statistics, with the Conv-ViT study's splits and preprocessing")
    L = [f"# ICBHI 2017: linear probe ({'pretrained encoder' if encoder else 'log-mel statistics'} + logistic regression)", "",
         f"What a linear model on {what} learns across the official split of the shared copy "
         "(covered subset). C chosen on validation "
         f"(binary: {b['C']}, by AUC; four classes: {m['C']}, by ICBHI score). Cycles: "
         + ", ".join(f"{k} {v}" for k, v in out["n"].items()) + ".", "",
         "| split | AUC normal vs adventitious | " + " | ".join(f"AUC {d}" for d in devices) + " | 4-class Se | Sp | ICBHI score |",
         "|---|---|" + "---|" * len(devices) + "---|---|---|"]
    for name in ("train", "val", "test"):
        s = m[name]
        L.append(f"| {name} | {f(b[name]['auc'])} | " + " | ".join(f(b[name]["per_device"].get(d)) for d in devices)
                 + f" | {s['sensitivity']:.3f} | {s['specificity']:.3f} | {s['score']:.3f} |")
    L += ["", "A device's AUC is '-' where that split holds only one class of its cycles (or none of them).", "",
          f"Device: {out['device']}; wall time {out['wall_s'] / 60:.1f} min.", "",
          "Reproduce: `PULMO_DATA=../shared/data python benchmarks/icbhi_linear_probe.py"
          + (f" --encoder runs/icbhi_multidataset/{encoder.name}`" if encoder else "`"), ""]
    return "\n".join(L)


if __name__ == "__main__":
    main()
