"""Fit and measure the "is this a frontal chest X-ray?" gate (``pulmo.cxr.gate``).

    python benchmarks/cxr_gate.py [--data DIR] [--bundle src/pulmo/assets/cxr_gate.npz]

Fitted on chest X-rays only: ``covid19_3class/train``, half of ``adult_multisource`` (a fixed
random half, seed 0) and the first 1,000 PneumoniaMNIST training images. Thresholds come from
those training images' own scores (99.5th percentile times a margin), so no refused image and
no held-out image sets them. Then measured on:

- held-out chest X-rays (acceptance): ``covid19_3class/val``, the other half of
  ``adult_multisource`` (per source), PneumoniaMNIST test;
- things that are not frontal chest X-rays (rejection): SIXray baggage test images turned gray
  (the colour check refuses them before the gate; the gray copies test the gate alone),
  synthetic 16-bit body scans, pulmo's synthetic chest drawings, the bundled demo images, chest
  X-rays rotated 90 degrees, the photographs and MRI slice that matplotlib ships, uniform
  noise, gradients.

Writes ``results/cxr_gate.md|csv``.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from pulmo.config import default_data_root  # noqa: E402
from pulmo.cxr.gate import MAX_MIRROR, ChestGate, gate_measures  # noqa: E402
from pulmo.cxr.synthetic import synth_xray  # noqa: E402
from pulmo.data.adapters.synthetic_xray import synthetic_body_scan  # noqa: E402
from pulmo.frontdoor.image_content import thumbnail  # noqa: E402


Scored = tuple[np.ndarray, np.ndarray, np.ndarray]  # gate features (N, D), detail (N,), mirror correlation (N,)


def scored(grays: Iterable[np.ndarray]) -> Scored:
    """Gate features, detail and mirror correlation of gray images ``(H, W)`` in [0, 1]."""
    features, details, mirrors = zip(*(gate_measures(g) for g in grays))
    return np.stack(features), np.array(details), np.array(mirrors)


def scored_files(files: Iterable[Path], desc: str) -> Scored:
    files = list(files)
    return scored(thumbnail(f)[1] for f in tqdm(files, desc=desc, file=sys.stderr, leave=False, disable=None))


def joined(*parts: Scored) -> Scored:
    return tuple(np.concatenate([p[k] for p in parts]) for k in range(3))


def matplotlib_samples() -> dict[str, Scored]:
    """Gray images matplotlib ships: two photographs, a logo, an MRI slice (16-bit raw)."""
    import matplotlib

    sample = Path(matplotlib.get_data_path()) / "sample_data"
    out = {name: scored([thumbnail(sample / name)[1]])
           for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png")}
    mri = np.frombuffer(gzip.open(sample / "s1045.ima.gz").read(), np.uint16)[-256 * 256:].reshape(256, 256)
    out["s1045.ima (MRI)"] = scored([mri.astype(np.float32) / mri.max()])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="data root (default $PULMO_DATA or ../shared/data)")
    ap.add_argument("--bundle", type=Path, help="write the fitted gate here (.npz)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "cxr_gate.md")
    args = ap.parse_args(argv)
    data = args.data or default_data_root()
    cxr = data / "cxr"
    if not cxr.is_dir():
        print(f"no chest X-ray data under {data}: nothing to fit", file=sys.stderr)
        return 0

    adult = sorted((cxr / "adult_multisource").glob("*/*.png"))
    order = np.random.default_rng(0).permutation(len(adult))
    adult_fit, adult_held = [adult[i] for i in order[::2]], [adult[i] for i in order[1::2]]
    mnist = np.load(cxr / "pneumoniamnist" / "pneumoniamnist.npz")
    fit = joined(
        scored_files(sorted((cxr / "covid19_3class" / "train").glob("*/*")), "covid19_3class train"),
        scored_files(adult_fit, "adult half"),
        scored(x / 255.0 for x in mnist["train_images"][:1000]),
    )
    gate = ChestGate.fit(*fit[:2])
    n_fit = len(fit[1])
    print(f"fitted on {n_fit} chest X-rays: max residual {gate.max_residual:.2f}, "
          f"max Mahalanobis {gate.max_mahalanobis:.2f}, min detail {gate.min_detail:.3f}", file=sys.stderr)

    source = {}
    import csv as _csv

    with open(cxr / "adult_multisource" / "manifest.csv", newline="") as fh:
        for row in _csv.DictReader(fh):
            repo = row["source_repo"].split("/")[-1]
            source[row["file"]] = f"{row['class']} ({repo})"
    held: dict[str, list[Path]] = {}
    for f in adult_held:
        held.setdefault(source.get(f"{f.parent.name}/{f.name}", f.parent.name), []).append(f)

    val_files = sorted((cxr / "covid19_3class" / "val").glob("*/*"))
    positives: dict[str, Scored] = {"covid19_3class val": scored_files(val_files, "val")}
    for name, files in sorted(held.items()):
        positives[f"adult_multisource held-out half: {name}"] = scored_files(files, name)
    positives["PneumoniaMNIST test"] = scored(x / 255.0 for x in mnist["test_images"])

    negatives: dict[str, Scored] = {}
    six = sorted((data / "xray_det" / "sixray_subset" / "test" / "images").glob("*.jpg"))
    if six:
        negatives["SIXray baggage test images, gray copies"] = scored_files(six, "SIXray")
    negatives["synthetic 16-bit body scans (20)"] = scored(
        synthetic_body_scan(np.random.default_rng(i), 600, 480)[0] / 65535.0 for i in range(20))
    drawings = np.random.default_rng(1)
    negatives["pulmo's synthetic chest drawings, random pose and exposure (30)"] = scored(
        synth_xray(label, 256, drawings) for label in ("Covid", "Normal", "Viral Pneumonia") * 10)
    negatives["chest X-rays rotated 90 degrees (covid19_3class val)"] = scored(
        np.rot90(thumbnail(f)[1]) for f in val_files)
    for name, sc in matplotlib_samples().items():
        negatives[f"matplotlib sample: {name}"] = sc
    rng = np.random.default_rng(0)
    negatives["uniform noise (10)"] = scored(rng.random((64, 64)) for _ in range(10))
    ramp = np.tile(np.linspace(0, 1, 64), (64, 1))
    negatives["horizontal gradient (5)"] = scored(ramp + 0.01 * rng.random((64, 64)) for _ in range(5))
    negatives["vertical gradient, dark at the top (5)"] = scored(ramp.T + 0.01 * rng.random((64, 64)) for _ in range(5))
    demo = ROOT / "src" / "pulmo" / "assets"
    demos = {"bundled demo_cxr.png (synthetic)": demo / "demo_cxr.png",
             "bundled demo_body_scan_16bit.png (synthetic)": demo / "demo_body_scan_16bit.png"}

    rows = []
    for group, sets in (("chest X-ray (should pass)", positives), ("not a chest X-ray (should be refused)", negatives)):
        for name, (feats, details, mirrors) in sets.items():
            ok = gate.accepts(*gate.distances(feats), details, mirrors)
            rows.append({"group": group, "set": name, "n": len(feats), "accepted": int(ok.sum()),
                         "rate": round(float(ok.mean()), 3)})
    for name, path in demos.items():
        s = gate.score(thumbnail(path)[1])
        rows.append({"group": "bundled demo", "set": name, "n": 1, "accepted": int(s.accepted), "rate": float(s.accepted)})

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.with_suffix(".csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = ["# Chest X-ray gate: is this a frontal chest X-ray?", "",
             f"Fitted on {n_fit} chest X-rays (covid19_3class train, a random half of adult_multisource, "
             "1,000 PneumoniaMNIST training images) as 8 principal components of 32x32 rank-equalised thumbnails; "
             f"thresholds: residual <= {gate.max_residual:.2f}, Mahalanobis <= {gate.max_mahalanobis:.2f} "
             "(99.5th percentile of the training images' own scores x 1.1 and x 1.2), "
             f"detail >= {gate.min_detail:.3f} (0.5th percentile x 0.5), left-right mirror correlation <= {MAX_MIRROR} "
             f"(fixed: a film's heart breaks the symmetry; the training images' highest is {fit[2].max():.3f}). "
             "Colour images (SIXray) are refused before the gate by the colour check; here the gray copies test the gate alone.",
             "", "`python benchmarks/cxr_gate.py --bundle src/pulmo/assets/cxr_gate.npz`", "",
             "| group | set | n | accepted | acceptance rate |", "|---|---|---:|---:|---:|"]
    lines += [f"| {r['group']} | {r['set']} | {r['n']} | {r['accepted']} | {r['rate']:.3f} |" for r in rows]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if args.bundle:
        gate.save(args.bundle)
        print(f"gate written to {args.bundle}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
