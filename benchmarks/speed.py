"""Inference speed and accuracy per runtime: PyTorch eager, ONNX FP32, ONNX int8.

    python benchmarks/speed.py [--tasks lung-sounds cxr detect serve] [--repeats 5] [--threads 2] [--limit 0]
    python benchmarks/speed.py --profile FILE.onnx [FILE.onnx ...] [--threads 1] [--repeats 10]  # per-op times only

Lung sounds: per-cycle latency and throughput at batch 1 and batch 64 (2.5 s cycles at the
model's rate, random but fixed waveforms), the ICBHI score on the covered official test split, and
where the ONNX time goes (onnxruntime's profiler, per operator type, at batch 64), in the notes.
Chest X-ray: the network per image at batch 1 and batch 64 (normalised inputs made from the
first validation images), accuracy and macro-F1 on ``covid19_3class`` validation images.
Detector: per-tile latency and throughput of the network with its NMS at batch 1, 8 (the tiled
pipeline's batch) and 64 (the model's tiles of the first SIXray test images), and tiled detection
of the SIXray test split (``xray_det``: precision, recall, F1 at IoU 0.5, the pipeline's tiles/s),
beside SAHI's sliced prediction with the same weights (the ``detect-bench`` extra).
Service: analyses per second of ``pulmo serve`` as one replica of two workers and as two
replicas of one worker on one local PostgreSQL, under the same client load, ``--repeats``
rounds (``benchmarks/serve_load.py``), with how many analyses ran twice or were lost.
Timings are the median of ``--repeats`` timed passes after one warm-up, the runtimes timed in
turn within each round (:func:`speed_rows`); every runtime gets the same number of threads; the
largest output difference from PyTorch, and the share of the same most likely class, are on the
same inputs.
Writes one section per task into ``results/speed.md`` (a task not run keeps its section from
the last run that had it) and ``results/speed.csv`` (lung sounds) / ``results/speed_<task>.csv``
(``speed_serve.csv`` for the service).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
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
LUNG_INT8 = "ONNX int8 CNN (convolutions, ReLUs, poolings), static (onnxruntime)"  # pulmo.export.quantize_int8
Row = dict[str, Any]
OP_PROFILES: dict[str, list[tuple[str, float]]] = {}  # runtime -> (operator type, ms a batch), by bench_lung_sounds


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def speed_rows(unit: str, batches: tuple[int, ...], runs: list[Callable[[int], Any]], repeats: int) -> list[Row]:
    """One row per runtime with ``batch{b}_ms_per_{unit}`` and ``batch{b}_{unit}s_per_s``;
    ``runs[i](b)`` runs a batch of ``b`` in runtime ``i``. Per batch size, after one warm-up
    call each, ``repeats`` rounds time every runtime once in turn, so that all of them see the
    same load of the other jobs on the machine; each gets the median of its times."""
    rows: list[Row] = [{"runtime": name} for name in RUNTIMES[:len(runs)]]
    with torch.no_grad():
        for batch in batches:
            times: list[list[float]] = [[] for _ in runs]
            for run in runs:
                run(batch)
            for _ in range(repeats):
                for run, spent in zip(runs, times):
                    t = time.perf_counter()
                    run(batch)
                    spent.append(time.perf_counter() - t)
            for row, spent in zip(rows, times):
                seconds = statistics.median(spent)
                row[f"batch{batch}_ms_per_{unit}"] = round(1000 * seconds / batch, 2)
                row[f"batch{batch}_{unit}s_per_s"] = round(batch / seconds, 1)
    return rows


def compared_with_torch(probs: np.ndarray, reference: np.ndarray) -> Row:
    """``(N, K)`` probabilities against PyTorch's on the same inputs: the largest difference and
    the share of inputs whose most likely class is the same."""
    return {"max_prob_diff_vs_torch": float(f"{np.abs(probs - reference).max():.2e}"),
            "same_class_as_torch": round(float((probs.argmax(1) == reference.argmax(1)).mean()), 3)}


def classifier_rows(unit: str, nets: list[Any], same_input: torch.Tensor, score: Callable[[Any], Row],
                    repeats: int) -> list[Row]:
    """Rows of a classifier per runtime (``nets``, PyTorch first): speed at batch 1 and 64 on
    ``same_input`` (64 inputs), ``score(net)`` (its metrics on the real evaluation set; ``{}``
    without the data), and its probabilities on ``same_input`` compared with PyTorch's."""
    rows = speed_rows(unit, (1, 64), [lambda b, net=net: net(same_input[:b]) for net in nets], repeats)
    reference = None
    for row, net in zip(rows, nets):
        row.update(score(net))
        with torch.no_grad():
            probs = torch.softmax(net(same_input).float(), 1).numpy()
        reference = probs if reference is None else reference
        row.update(compared_with_torch(probs, reference))
        print(row, file=sys.stderr)
    return rows


def onnx_op_ms(paths: list[Path], inputs: np.ndarray, threads: int, runs: int = 10) -> list[list[tuple[str, float]]]:
    """onnxruntime's profiler on the models in ``paths``, timed in turn (after two warm-up runs each,
    ``runs`` rounds run every model once on ``inputs``): per model, ``(operator type, ms a run)``, the
    median over the runs of each type's time in a run, the largest first (types as onnxruntime runs
    them, after its graph optimisations: a ``Conv`` there includes the ReLU it fused)."""
    import json
    import tempfile

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        sessions = []
        for i, path in enumerate(paths):
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(tmp) / f"ort{i}")
            sessions.append(ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]))
        feeds = [{session.get_inputs()[0].name: inputs} for session in sessions]
        for _ in range(2 + runs):
            for session, feed in zip(sessions, feeds):
                session.run(None, feed)
        profiles = [json.loads(Path(session.end_profiling()).read_text()) for session in sessions]
    out = []
    for events in profiles:
        windows = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                         if e.get("cat") == "Session" and e["name"] == "model_run")[-runs:]
        per_run: dict[str, list[float]] = {}
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                at = next((i for i, (a, b) in enumerate(windows) if a <= e["ts"] <= b), None)
                if at is not None:
                    per_run.setdefault(e["args"]["op_name"], [0.0] * runs)[at] += e["dur"] / 1000
        out.append(sorted(((op, statistics.median(ms)) for op, ms in per_run.items()), key=lambda item: -item[1]))
    return out


def op_shares(ops: list[tuple[str, float]], most: int = 6) -> str:
    """``ops`` of :func:`onnx_op_ms` in words: the ``most`` largest with ms and share, then the rest."""
    total = sum(ms for _, ms in ops)
    words = [f"{op} {ms:.1f} ms ({100 * ms / total:.0f}%)" for op, ms in ops[:most]]
    rest = sum(ms for _, ms in ops[most:])
    others = f", the other {len(ops) - most} types {rest:.1f} ms" if rest else ""
    return f"{total:.1f} ms: " + ", ".join(words) + others


def bench_lung_sounds(args: argparse.Namespace) -> list[Row]:
    from pulmo.inference.lung_sounds import LungSoundPipeline, evaluate_icbhi

    pipe = LungSoundPipeline.from_checkpoint()
    paths = [cached_export(None), cached_export(None, int8=True)]
    nets = [pipe.net.eval(), *(OnnxClassifier(path, args.threads) for path in paths)]
    rng = np.random.default_rng(0)
    same_input = torch.from_numpy((0.1 * rng.standard_normal((64, pipe.audio.cycle_samples))).astype(np.float32))
    data = default_data_root() / "icbhi"

    def score(net: Any) -> Row:
        if not (data / "annotations").is_dir():
            return {}
        pipe.net = net
        report = evaluate_icbhi(pipe, data, "test", limit=args.limit, progress=True)
        return {"icbhi_score": round(report["score"], 4), "sensitivity": round(report["sensitivity"], 4),
                "specificity": round(report["specificity"], 4), "n": report["n"]}

    rows = classifier_rows("cycle", nets, same_input, score, args.repeats)
    rows[2]["runtime"] = LUNG_INT8
    for row, ops in zip(rows[1:], onnx_op_ms(paths, same_input.numpy(), args.threads)):
        OP_PROFILES[row["runtime"]] = ops
    return rows


def lung_notes(rows: list[Row]) -> list[str]:
    """Lines under the lung-sound table: the targets against this run's rows, where the ONNX time
    went in this run (:data:`OP_PROFILES`), and how the export came to be as it is."""
    fp32, int8 = (next(r for r in rows if r["runtime"] == name) for name in (RUNTIMES[1], LUNG_INT8))
    ratio = min(fp32["speedup_batch64"], int8["speedup_batch64"])
    lines = ["", "Bundled model: the compact CNN with the device adversary chosen in `results/icbhi_multidataset.md` "
             "(0.3 M parameters) on log-mel features (48 bands, 64 ms windows, 40 ms hop, 2.5 s cycles at 4 kHz). "
             "Earlier models' tables (attentive ResNet-18: FP32 1.41x, int8 3.2x) are in this file's git history.",
             "", f"Against the fast-and-scalable targets at batch 64: at most 5 ms a cycle in every runtime "
             f"(eager {rows[0]['batch64_ms_per_cycle']} ms); ONNX FP32 {fp32['speedup_batch64']}x and int8 "
             f"{int8['speedup_batch64']}x eager's throughput (2x: {'met' if ratio >= 2 else '**not met**'})"]
    if "icbhi_score" in rows[0]:
        diffs = [r["icbhi_score"] - rows[0]["icbhi_score"] for r in (fp32, int8)]
        lines[-1] += (f"; ICBHI score FP32 {diffs[0]:+.4f}, int8 {diffs[1]:+.4f} against PyTorch's (within 0.005: "
                      f"{'met' if max(map(abs, diffs)) <= 0.005 else '**not met**'})")
    lines[-1] += (". `same_class_as_torch` and `max_prob_diff_vs_torch` are on the 64 random waveforms of the "
                  "timing, not on ICBHI cycles.")
    if OP_PROFILES:
        lines += ["", "Where the ONNX time went in this run (onnxruntime's profiler, "
                  "`SessionOptions.enable_profiling`, "
                  "a batch of the same 64 waveforms, the two exports run in turn, median of 10 runs after 2 warm-ups, "
                  "operator types after onnxruntime's graph optimisations, ms a batch):", ""]
        lines += [f"- {name}: {op_shares(ops)}" for name, ops in OP_PROFILES.items()]
    return lines + LUNG_HISTORY


LUNG_HISTORY = """
The export (`src/pulmo/export_stft.py: MatmulMel`, format v3): the log-mel features as two MatMuls, frames
(a reshape of the reflect-padded waveform into hop-long rows, each frame its row joined to the start of the next)
times the Hann-windowed real DFT of the bins the mel filters use (cosine and sine columns, 256 x 254), squared,
times the mel matrix stacked for the cosine and the sine columns (254 x 48). The DFT and mel matrices cannot be
folded into one MatMul: the power between them is quadratic. Features within 1e-4 of PyTorch's (four mel and
MFCC settings), the bundled model's probabilities within 1e-5 (tests/test_export.py). int8 (`pulmo.export.quantize_int8`, lung sounds): static QDQ of the
convolutions and ReLUs, the 2x2 average poolings rewritten as depthwise 2x2 convolutions by 0.25 so that the CNN
stays in int8 from its second convolution to its head; the DFT and mel MatMuls and the first (one-channel)
convolution stay FP32. Batch norm is folded into the convolutions at export (their biases), and onnxruntime
already runs at `ORT_ENABLE_ALL` (its default): FP32 convolutions in NCHWc with the ReLU fused.

How it came to this: `nice -n 10 python benchmarks/speed.py --profile v2.onnx v2-int8.onnx v3.onnx ...
--threads 1 --repeats 15` (2026-12-06 10:01 UTC, load average 4.7: all times about twice a quiet machine's,
compare within this list; the files run in turn, median of 15 runs, ms a batch of 64):

- v2 FP32 (the previous export, onnxruntime's `STFT`; 1.62x eager in its own table): 101.0 ms, `Conv` 57.3
  (57%), `STFT` 28.0 (28%), `ReduceL2` (the magnitude) 6.4 (6%), `AveragePool` 5.8 (6%).
- v2 int8 (convolutions only; 1.66x): 91.8 ms, `QLinearConv` 37.5 (41%), `STFT` 25.8 (28%), and 19.2 ms (21%)
  between the quantised convolutions: `DequantizeLinear` 8.4, NCHWc reorders 3.7, `QuantizeLinear` 2.5, FP32
  `Relu` 1.6, `AveragePool` 1.5, `Transpose` 1.5.
- v3 FP32 (this export): 72.8 ms, `Conv` 58.6 (80%), `MatMul` 7.7 (11%), framing (`Pad`, `Slice`, `Concat`)
  2.2: the front end from about 36 to 11 ms.
- v3 with frames cut by one `Gather` of precomputed indices instead: 79.2 ms (`Gather` alone 7.2).
- v3 int8 of the convolutions only: 70.9 ms (`DequantizeLinear` 7.7, `ReorderInput` 6.9 between them).
- v3 int8 of convolutions and ReLUs: 68.6 ms, of which `QLinearAveragePool` (what onnxruntime makes of a pooling
  between quantised tensors) 17.1 (25%).
- v3 int8 with the poolings as depthwise convolutions, first convolution int8 too: 52.7 ms (`QLinearConv` 39.7).
- v3 int8 (this export: the first convolution FP32, one input channel being slower in int8): 44.9 ms,
  `QLinearConv` 27.9, `MatMul` 7.7, the FP32 first `Conv` 1.6, its `ReorderOutput` 1.7 and `QuantizeLinear` 1.1.

What is left in FP32 is the eight convolutions (about 80%: 2.4 G multiply-adds a batch, the 16-channel first
stage the slowest per operation) and the DFT MatMul.""".split("\n")


def bench_resp_rate(args: argparse.Namespace) -> list[Row]:
    """The bundled rate model in PyTorch and ONNX FP32 (one file per network, swapped into the
    same pipeline): one network's windows at batch 1 and 64, a whole recording through the whole
    vote (every network and the NumPy between them), and MAE / CCC on RRuJO subjects the model
    never saw (``evaluate_folder``, split test)."""
    from pulmo.data.audio_io import read_audio
    from pulmo.export import use_runtime
    from pulmo.inference.resp_rate import RespRatePipeline, evaluate_folder
    from pulmo.resp_rate.export import pipeline_networks

    pipes = [RespRatePipeline.from_checkpoint(),
             use_runtime("resp-rate", RespRatePipeline.from_checkpoint(), None, "onnx")]
    first = [pipeline_networks(p)[0] for p in pipes]
    clip = first[0].clip
    samples = clip.window_samples
    data = default_data_root() / "rrujo"
    labels = data / "labels.csv"
    recording = next((data / "audio").rglob("*.wav"), None) if labels.is_file() else None
    if recording is not None:
        audio, _ = read_audio(recording, sample_rate_hz=clip.sample_rate_hz)
        hop = max((len(audio) - samples) // 63, 1)
        windows = np.stack([np.resize(audio[i * hop:i * hop + samples], samples) for i in range(64)]).astype(np.float32)
    else:
        audio = np.random.default_rng(0).standard_normal(60 * clip.sample_rate_hz).astype(np.float32) * 0.1
        windows = np.random.default_rng(1).standard_normal((64, samples)).astype(np.float32) * 0.1
    same_input = torch.from_numpy(windows)
    rows = speed_rows("window", (1, 64), [lambda b, n=node: n.net(same_input[:b]) for node in first], args.repeats)
    whole = speed_rows("recording", (1,), [lambda _b, p=pipe: p.predictor.predict(audio) for pipe in pipes],
                       max(args.repeats // 3, 3))
    def window_rates_bpm(pipe: Any) -> list[torch.Tensor]:
        with torch.no_grad():
            return [node.net(same_input)["rate"] * node.net.rate_scale_bpm for node in pipeline_networks(pipe)]

    reference = window_rates_bpm(pipes[0])
    for row, extra, pipe in zip(rows, whole, pipes):
        row["recording_s"] = round(extra["batch1_ms_per_recording"] / 1000, 2)
        row["recording_seconds_of_audio"] = round(len(audio) / clip.sample_rate_hz)
        row["networks"] = len(reference)
        diff = max(float((a - b).abs().max()) for a, b in zip(window_rates_bpm(pipe), reference))
        row["max_rate_diff_bpm_vs_torch"] = float(f"{diff:.2e}")
        if labels.is_file():
            report = evaluate_folder(pipe, data)
            row.update(mae_bpm=round(report["mae"], 3), ccc=round(report["ccc"], 3), n=report["n"])
        print(row, file=sys.stderr)
    return rows


def resp_rate_notes(rows: list[Row]) -> list[str]:
    """What the resp-rate table measures, and where ONNX stands against PyTorch."""
    if len(rows) < 2:
        return []
    window = rows[1]["batch64_windows_per_s"] / rows[0]["batch64_windows_per_s"]
    recording = rows[0]["recording_s"] / rows[1]["recording_s"]
    return ["", f"Notes: the bundled model is {rows[0]['networks']} networks with NumPy between them; ONNX runs "
            "each network from its own file (`pulmo export --task resp-rate --out FOLDER`; the runtime swaps them into "
            "the same pipeline). Windows: 64 windows of the first network's length from the first RRuJO recording. "
            f"At batch 64 ONNX FP32 runs {window:.2f}x PyTorch's windows per second; a whole recording of "
            f"{rows[0]['recording_seconds_of_audio']} s through the whole vote (every network, the gating, fits and "
            f"refinement) {recording:.2f}x. MAE and CCC: recordings of RRuJO subjects the model never saw, per "
            "runtime. int8 is not offered for this model (not measured): FP32 gives PyTorch's rates (largest window "
            "difference in the table) at a modest gain, and quantising the recurrent layers would need its own "
            "accuracy study."]


def bench_cxr(args: argparse.Namespace) -> list[Row]:
    from pulmo.cxr.preprocess import normalize_tensor, prepare_gray
    from pulmo.data.image_io import read_image
    from pulmo.inference.cxr import CxrPipeline

    pipe = CxrPipeline.from_checkpoint()
    nets = [pipe.model.eval(), OnnxClassifier(cached_export(None, task="cxr"), args.threads),
            OnnxClassifier(cached_export(None, int8=True, task="cxr"), args.threads)]
    data = default_data_root() / "cxr" / "covid19_3class"
    size = pipe.cfg.image.size_px
    files = sorted((data / "val").glob("*/*"))[:64]
    grays = (np.stack([prepare_gray(read_image(f), pipe.cfg.image) for f in files]) if len(files) == 64
             else np.random.default_rng(0).random((64, size, size), dtype=np.float32))
    same_input = normalize_tensor(torch.from_numpy(grays)[:, None], pipe.cfg.image)

    def score(net: Any) -> Row:
        if not (data / "val").is_dir():
            return {}
        pipe.model = net
        report = pipe.evaluate_folder(data, "val")
        return {"accuracy": round(report["accuracy"], 4), "macro_f1": round(report["macro_f1"], 4), "n": report["n"]}

    return classifier_rows("image", nets, same_input, score, args.repeats)


def test_tiles(pipe: Any, root: Path, n: int = 64) -> torch.Tensor:
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


def scores(report: dict[str, Any]) -> Row:
    """A detection report's precision, recall, F1 (IoU 0.5, per-class thresholds), mAP50 and n."""
    return {k: round(report[k], 4) for k in ("precision", "recall", "f1", "map50")} | {"n": report["n"]}


def sahi_row(pipe: Any, root: Path, limit: int) -> Row:
    """SAHI's sliced prediction (``get_sliced_prediction``) with the pipeline's PyTorch weights, tile
    geometry and thresholds on the SIXray test split, as ``benchmarks/xray_detect.py sahi`` runs it:
    its tiles per second (images decoded before timing, as the pipeline's own count leaves out
    decoding) and its scores."""
    import logging

    from PIL import Image
    from sahi import AutoDetectionModel
    from sahi.predict import get_sliced_prediction
    from sahi.slicing import get_slice_bboxes
    from xray_detect import ultralytics_yolo  # benchmarks/ is this script's folder

    from pulmo.data.adapters.voc_xml import read_voc_folder
    from pulmo.data.remap import apply_mapping
    from pulmo.metrics.detection import ImageDetections, detection_report

    logging.getLogger("sahi").setLevel(logging.ERROR)
    records = apply_mapping(read_voc_folder(root, "test"), pipe.mapping)[: limit or None]
    tile = int(round(pipe.tiling.tile / pipe.data_cfg.image_scale))  # in the original image's pixels
    overlap = pipe.tiling.overlap / pipe.tiling.tile
    model = AutoDetectionModel.from_pretrained(model_type="ultralytics", model=ultralytics_yolo(pipe), device="cpu",
                                               confidence_threshold=pipe.inference.conf, image_size=pipe.tiling.tile)
    images = [np.asarray(Image.open(r.path).convert("RGB")) for r in records]
    found, t0 = [], time.perf_counter()
    for image in images:
        found.append(get_sliced_prediction(image, model, slice_height=tile, slice_width=tile, overlap_height_ratio=overlap,
                                           overlap_width_ratio=overlap, perform_standard_pred=False, verbose=0,
                                           postprocess_type="GREEDYNMM", postprocess_match_metric="IOS",
                                           postprocess_match_threshold=0.5).object_prediction_list)
    seconds = time.perf_counter() - t0
    n_tiles = sum(len(get_slice_bboxes(im.shape[0], im.shape[1], tile, tile, True, overlap, overlap)) for im in images)
    dets = [ImageDetections(np.array([p.bbox.to_xyxy() for p in preds], dtype=float).reshape(-1, 4),
                            np.array([p.score.value for p in preds], dtype=float),
                            np.array([p.category.name for p in preds], dtype=object), r.boxes,
                            np.array(r.labels, dtype=object)) for r, preds in zip(records, found)]
    return {"runtime": "SAHI get_sliced_prediction (PyTorch eager, same weights)", "tiled_tiles_per_s": round(n_tiles / seconds, 1),
            **scores(detection_report(dets, pipe.thresholds, classes=pipe.labels))}


def bench_detect(args: argparse.Namespace) -> list[Row]:
    from pulmo.inference.onnx import OnnxModule
    from pulmo.inference.detect import DetectPipeline

    pipe = DetectPipeline.from_checkpoint()
    det = pipe.detector
    nets = [det.net, OnnxModule(cached_export(None, task="detect"), threads=args.threads),
            OnnxModule(cached_export(None, int8=True, task="detect"), threads=args.threads)]
    data = default_data_root() / "xray_det"
    tiles = test_tiles(pipe, data)
    conf, iou = pipe.inference.conf, pipe.inference.iou

    def run(batch: int, net: torch.nn.Module) -> Any:
        det.net = net
        return det.predict(tiles[:batch], conf=conf, iou=iou)

    rows = speed_rows("tile", (1, 8, 64), [lambda b, net=net: run(b, net) for net in nets], args.repeats)
    reference = None
    for row, net in zip(rows, nets):
        det.net = net
        if data.is_dir():
            report = pipe.evaluate_folder(data, "test", limit=args.limit, progress=True)
            row.update(scores(report), tiled_tiles_per_s=round(report["tiles_per_s"], 1))
        with torch.no_grad():
            raw = net.eval()(tiles[:8])
        raw = (raw[0] if isinstance(raw, (tuple, list)) else raw).numpy()
        reference = raw if reference is None else reference
        row["max_prob_diff_vs_torch"] = float(f"{np.abs(raw[:, 4:] - reference[:, 4:]).max():.2e}")
        row["max_box_diff_px_vs_torch"] = float(f"{np.abs(raw[:, :4] - reference[:, :4]).max():.2e}")
        print(row, file=sys.stderr)
    if not importlib.util.find_spec("sahi"):
        print("SAHI left out: pip install 'pulmo[detect-bench]'", file=sys.stderr)
    elif data.is_dir():
        det.net = nets[0]
        rows.append(sahi_row(pipe, data, args.limit))
        for row in rows:
            row["tiled_vs_sahi"] = round(row["tiled_tiles_per_s"] / rows[-1]["tiled_tiles_per_s"], 2)
        print(rows[-1], file=sys.stderr)
    return rows


def bench_serve(args: argparse.Namespace) -> list[Row]:
    """``pulmo serve`` as one replica of two workers and as two replicas of one worker, on one
    local PostgreSQL, under the same client load (``benchmarks/serve_load.py``)."""
    from serve_load import replica_rows

    load = os.getloadavg()[0]
    return [{**row, "load_at_start": round(load, 1)} for row in replica_rows(rounds=args.repeats, threads=args.threads)]


def serve_notes(rows: list[Row]) -> list[str]:
    """The ratio of two replicas to one (target at least 0.9x) and the duplicate and loss checks."""
    ratio = float(rows[-1]["analyses_per_s"]) / float(rows[0]["analyses_per_s"])
    twice, lost = sum(int(r["run_twice"]) for r in rows), sum(int(r["lost"]) for r in rows)
    return ["", f"Two replicas of one worker hold {ratio:.2f}x the throughput of one replica of two workers "
            f"(target: at least 0.9x, {'met' if ratio >= 0.9 else 'not met'}). Analyses claimed more than once: "
            f"{twice}; without a result: {lost} (every analysis of both set-ups, warm-ups included, from the "
            f"service databases' audit trail). Each set-up: {rows[0]['per_round']} synthetic "
            f"{rows[0]['recording_s']:.0f} s stethoscope-like recordings (lung sounds and breathing rate each) in each "
            f"of {rows[0]['rounds']} rounds from {rows[0]['clients']} client threads (spread over the replicas), one "
            "PostgreSQL 15 cluster made for the run (fsync off), one storage folder per set-up; the set-ups take turns in each round after every replica has loaded "
            f"its model. The machine was shared (load average {rows[0]['load_at_start']} at the start): both "
            "set-ups saw the same load, so their ratio holds, not their absolute rates."]


TIMED_IN_TURN = "Latency and throughput: median of the timed passes, the runtimes timed in turn in each round."


@dataclass(frozen=True)
class Section:
    """One task's table: its title, csv file, columns, benchmark, the throughput column its
    speed-up is of, how it was timed (one sentence), and lines under the table made from its rows."""

    title: str
    csv: str
    cols: list[str]
    bench: Callable[[argparse.Namespace], list[Row]]
    throughput: str
    how: str = TIMED_IN_TURN
    notes: Callable[[list[Row]], list[str]] = lambda rows: []


SECTIONS = {
    "lung-sounds": Section("Lung sounds", "speed.csv",
                           ["runtime", "batch1_ms_per_cycle", "batch64_ms_per_cycle", "batch64_cycles_per_s",
                            "speedup_batch64", "icbhi_score", "sensitivity", "specificity", "max_prob_diff_vs_torch",
                            "same_class_as_torch"],
                           bench_lung_sounds, "batch64_cycles_per_s", notes=lung_notes),
    "resp-rate": Section("Respiratory rate (vote of networks)", "speed_resp_rate.csv",
                         ["runtime", "batch1_ms_per_window", "batch64_ms_per_window", "batch64_windows_per_s",
                          "speedup_batch64", "recording_s", "mae_bpm", "ccc", "n", "max_rate_diff_bpm_vs_torch"],
                         bench_resp_rate, "batch64_windows_per_s", notes=resp_rate_notes),
    "cxr": Section("Chest X-ray (EfficientNet-Lite0 + head)", "speed_cxr.csv",
                   ["runtime", "batch1_ms_per_image", "batch64_ms_per_image", "batch64_images_per_s", "speedup_batch64",
                    "accuracy", "macro_f1", "n", "max_prob_diff_vs_torch", "same_class_as_torch"], bench_cxr, "batch64_images_per_s"),
    "detect": Section("Detector (YOLOv5n, tiled)", "speed_detect.csv",
                      ["runtime", "batch1_ms_per_tile", "batch8_ms_per_tile", "batch64_ms_per_tile", "batch8_tiles_per_s",
                       "speedup_batch8", "tiled_tiles_per_s", "tiled_vs_sahi", "precision", "recall", "f1", "map50", "n",
                       "max_prob_diff_vs_torch", "max_box_diff_px_vs_torch"], bench_detect, "batch8_tiles_per_s"),
    "serve": Section("Service: two replicas against two workers (PostgreSQL)", "speed_serve.csv",
                     ["service", "replicas", "workers_per_replica", "clients", "analyses", "analyses_per_s",
                      "speedup_analyses", "rounds_per_s", "p50_ms", "p95_ms", "run_twice", "lost",
                      "replicas_that_finished"], bench_serve, "analyses_per_s",
                     how="Throughput: analyses finished per second with every client busy, median of the rounds "
                     "(--repeats), the set-ups loaded in turn in each round; latency: upload to result.",
                     notes=serve_notes),
}


def section(task: str, rows: list[Row], args: argparse.Namespace) -> list[str]:
    """The markdown section of one task's table, with the command, device and load that made it."""
    title, cols = SECTIONS[task].title, SECTIONS[task].cols
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    limit = f" --limit {args.limit}" if args.limit else ""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [f"## {title}", "",
            f"`nice -n 10 python benchmarks/speed.py --tasks {' '.join(args.tasks)} --repeats {args.repeats} --threads {args.threads}{limit}` "
            f"({when}) on {cpu_name()}, {os.cpu_count()} cores, {args.threads} threads per runtime, load average "
            f"{load:.1f} when it finished (other jobs shared the CPU: compare rows of this table, not with other runs). "
            f"{SECTIONS[task].how}", "",
            "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols),
            *("| " + " | ".join(str(r.get(c, "-")) for c in cols) + " |" for r in rows), *SECTIONS[task].notes(rows)]


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
    for lines in out.values():  # main() puts one blank line between sections
        while lines and not lines[-1].strip():
            lines.pop()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    ap.add_argument("--repeats", type=int, default=5, help="timed passes per measurement (median reported)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for every runtime")
    ap.add_argument("--limit", type=int, default=0, help="only the first N test recordings / images (0: all)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "speed.md")
    ap.add_argument("--profile", type=Path, nargs="+", metavar="FILE.onnx",
                    help="only print onnxruntime's per-operator times of these lung-sound exports at batch 64, "
                    "run in turn, median of --repeats runs")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.profile:
        from pulmo.inference.lung_sounds import LungSoundPipeline

        samples = LungSoundPipeline.from_checkpoint().audio.cycle_samples
        inputs = (0.1 * np.random.default_rng(0).standard_normal((64, samples))).astype(np.float32)
        for path, ops in zip(args.profile, onnx_op_ms(args.profile, inputs, args.threads, runs=args.repeats)):
            print(f"{path.name}: {op_shares(ops, most=len(ops))}")
        return 0
    sections = kept_sections(args.out)
    for task in args.tasks:
        spec = SECTIONS[task]
        rows = spec.bench(args)
        speedup = "speedup_" + spec.throughput.split("_")[0]  # the throughput's ratio to PyTorch eager's
        for row in rows:
            if spec.throughput in row:  # not in a row of another tool (SAHI)
                row[speedup] = round(float(row[spec.throughput]) / float(rows[0][spec.throughput]), 2)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with (args.out.parent / spec.csv).open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
            w.writeheader()
            w.writerows(rows)
        sections[spec.title] = section(task, rows, args)
    lines = ["# Inference speed per runtime", ""]
    for spec in SECTIONS.values():
        if spec.title in sections:
            lines += [*sections[spec.title], ""]
    args.out.write_text("\n".join(lines).rstrip() + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
