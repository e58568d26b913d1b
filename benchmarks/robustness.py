"""Bad inputs through the command line and the service: outcome, message, peak memory, time.

Every input is made by this script in a temporary folder (never in the project): audio
(digital silence, one sample, 1 s, white noise, a full-scale square wave, a pure tone, NaN
samples, truncated, corrupt, a PNG named .wav, 24-bit, 32-bit float, 8 channels, 192 kHz,
the issue's 599 s x 192 kHz x 8 channel silent FLAC, a breath clip under 4 s at 2 kHz),
images (a decompression-bomb header, one over the pixel limit, RGBA, CMYK JPEG, palette,
16-bit and 32-bit float TIFF, GIF, all black, constant gray, tiny content), other files
(DICOM, zip, text, a symlink to /etc/passwd named .wav: command line only), real samples
when the data folder is there (a SIXray baggage JPEG, a chest X-ray, a RRuJO recording and
the same resampled to 4.5 and 16 kHz), and the largest inputs the limits accept.
The well-formed audio and image variants are the bundled demo samples (for chest X-rays, a
synthetic film the chest gate accepts: the bundled demo drawing is refused) re-encoded, so a
row tests the format, not new content.

Each input goes through

- the command line: ``pulmo analyze FILE --json`` as a subprocess (in the input's folder, so
  messages name the file only); peak memory is the subprocess's ``ru_maxrss`` (``wait4``);
- the service: one ``pulmo serve`` subprocess on 127.0.0.1 (free port, temporary storage,
  one worker); multipart ``POST /analyses``, then ``GET /analyses/{id}`` until done or
  failed; peak memory is the server's ``VmHWM``, reset before each upload by writing 5 to
  ``/proc/PID/clear_refs``, so it counts this input plus every model the service has loaded
  by then (rows run in table order; the largest inputs come last).

Outcomes are read from what each surface answers; nothing here expects a particular one.

    python benchmarks/robustness.py [--out results/robustness.md] [--data DIR] [--only WORD]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from PIL import Image
from serve_load import multipart, request

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from frontdoor_fixtures import png_header_only  # noqa: E402  (the tests' decompression-bomb header)
ASSETS = ROOT / "src" / "pulmo" / "assets"
TARGET_MB = 2048


@dataclass
class Case:
    """One input: ``label`` (its class), ``path``, an optional forced ``task``, whether the
    service gets it too, and ``group`` (bad input / real sample / worst accepted)."""

    label: str
    path: Path
    task: str | None = None
    service: bool = True
    group: str = "bad input"
    shown: str = ""  # the file as the results show it (relative); default: its name

    @property
    def name(self) -> str:
        return self.shown or self.path.name


@dataclass
class Outcome:
    outcome: str  # refused / failed later / labelled (task) / labelled (task) with warning / ...
    status: str  # exit code (command line) or HTTP status (service)
    message: str
    peak_mb: float | None
    seconds: float


# ---------------------------------------------------------------- inputs

def demo_audio(rate: int, seconds: float | None = None) -> np.ndarray:
    """The bundled lung-sound demo (4 kHz) at ``rate``, repeated or cut to ``seconds``: ``(T,)`` float32."""
    x, sr = sf.read(str(ASSETS / "demo_lung_sounds.flac"), dtype="float32")
    if seconds is not None:
        x = np.resize(x, int(round(seconds * sr)))
    return x if rate == sr else soxr.resample(x, sr, rate, quality="HQ").astype(np.float32)


def chest_gray(size: tuple[int, int] | None = None) -> Image.Image:
    """A synthetic chest X-ray that passes the chest gate (:func:`pulmo.cxr.synthetic.chest_phantom`,
    8-bit gray, 512 px), resized to ``size`` (width, height) when given. (The bundled demo drawing
    is refused by the gate, so it would test the gate, not the file format.)"""
    from pulmo.cxr.synthetic import chest_phantom_image

    im = chest_phantom_image(512)
    return im if size is None else im.resize(size, Image.Resampling.BILINEAR)


def write_blocks(path: Path, rate: int, channels: int, seconds: float, block: Callable[[int, int], np.ndarray],
                 subtype: str = "PCM_16") -> Path:
    """Write ``seconds`` of audio 10 s at a time: ``block(start_frame, frames)`` -> ``(frames, channels)``."""
    total = int(round(seconds * rate))
    with sf.SoundFile(path, "w", rate, channels, subtype=subtype, format=path.suffix[1:].upper()) as f:
        for start in range(0, total, 10 * rate):
            f.write(block(start, min(10 * rate, total - start)))
    return path


def audio_cases(d: Path) -> list[Case]:
    rng = np.random.default_rng(0)
    demo = demo_audio(4000)
    t8 = np.arange(20 * 8000) / 8000
    sf.write(d / "silence.wav", np.zeros(20 * 4000, np.int16), 4000)
    sf.write(d / "one_sample.wav", demo[[int(np.argmax(np.abs(demo)))]], 4000)  # the loudest sample
    sf.write(d / "one_second.wav", demo[:4000], 4000)
    sf.write(d / "white_noise.wav", np.clip(0.3 * rng.standard_normal(len(t8)), -1, 1), 8000)
    sf.write(d / "square_full_scale.wav", np.sign(np.sin(2 * np.pi * 250 * t8)), 8000)
    sf.write(d / "pure_tone.wav", 0.5 * np.sin(2 * np.pi * 440 * t8), 8000)
    nan = demo.copy()
    nan[::997] = np.nan
    sf.write(d / "nan.wav", nan, 4000, subtype="FLOAT")
    sf.write(d / "truncated.wav", demo[:40_000], 4000)
    (d / "truncated.wav").write_bytes((d / "truncated.wav").read_bytes()[:48_000])
    (d / "random_bytes.wav").write_bytes(rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    (d / "riff_garbage.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + rng.integers(0, 256, 5000, np.uint8).tobytes())
    chest_gray().save(d / "png_named.wav", format="PNG")
    sf.write(d / "pcm24.wav", demo, 4000, subtype="PCM_24")
    sf.write(d / "float32.wav", demo, 4000, subtype="FLOAT")
    sf.write(d / "eight_channels.wav", np.stack([demo * (0.5 + 0.05 * c) for c in range(8)], 1), 4000)
    sf.write(d / "rate_192k.flac", demo_audio(192_000), 192_000)
    write_blocks(d / "silent_599s_192k_8ch.flac", 192_000, 8, 599.0, lambda s, n: np.zeros((n, 8), np.int16))
    breath, sr = sf.read(str(ASSETS / "demo_breath.flac"), dtype="float32")
    sf.write(d / "breath_3s_2k.flac", breath[: 3 * sr], sr)
    return [
        Case("digital silence (20 s, 4 kHz)", d / "silence.wav"),
        Case("1-sample file", d / "one_sample.wav"),
        Case("1 s of lung sounds", d / "one_second.wav"),
        Case("white noise (20 s, 8 kHz)", d / "white_noise.wav"),
        Case("full-scale square wave (250 Hz)", d / "square_full_scale.wav"),
        Case("pure tone (440 Hz)", d / "pure_tone.wav"),
        Case("NaN samples (float WAV)", d / "nan.wav"),
        Case("truncated WAV (header promises more)", d / "truncated.wav"),
        Case("random bytes named .wav", d / "random_bytes.wav"),
        Case("RIFF/WAVE header, garbage after", d / "riff_garbage.wav"),
        Case("PNG named .wav", d / "png_named.wav"),
        Case("24-bit WAV (demo lung sounds)", d / "pcm24.wav"),
        Case("32-bit float WAV (demo lung sounds)", d / "float32.wav"),
        Case("8-channel WAV (demo lung sounds)", d / "eight_channels.wav"),
        Case("192 kHz FLAC (demo lung sounds, 27 s)", d / "rate_192k.flac"),
        Case("599 s x 192 kHz x 8 ch silent FLAC (953 KB)", d / "silent_599s_192k_8ch.flac"),
        Case("breath clip under 4 s (3 s, 2 kHz)", d / "breath_3s_2k.flac"),
    ]


def image_cases(d: Path) -> list[Case]:
    gray = chest_gray((1024, 1024))
    g = np.asarray(gray)
    png_header_only(d / "bomb_header.png", 20_000, 20_000)
    png_header_only(d / "over_pixel_limit.png", 6000, 5000)
    alpha = np.tile(np.linspace(0, 255, 1024, dtype=np.uint8), (1024, 1))
    Image.fromarray(np.dstack([g, g, g, alpha]), "RGBA").save(d / "rgba.png")
    gray.convert("CMYK").save(d / "cmyk.jpg", quality=92)
    gray.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE).save(d / "palette.png")
    scan = np.asarray(Image.open(ASSETS / "demo_body_scan_16bit.png"), dtype=np.uint16)
    Image.fromarray(scan).save(d / "gray16.tif")
    Image.fromarray(g.astype(np.float32) / 255.0).save(d / "float32.tif")
    gray.save(d / "image.gif")
    Image.fromarray(np.zeros((1024, 1024), np.uint8)).save(d / "all_black.png")
    Image.fromarray(np.full((1024, 1024), 128, np.uint8)).save(d / "constant_gray.png")
    tiny = np.zeros((1024, 1024), np.uint8)
    tiny[500:512, 500:512] = 220
    Image.fromarray(tiny).save(d / "tiny_content.png")
    return [
        Case("decompression-bomb PNG header (20000 x 20000)", d / "bomb_header.png"),
        Case("PNG header over the pixel limit (6000 x 5000)", d / "over_pixel_limit.png"),
        Case("RGBA PNG (synthetic chest X-ray, alpha ramp)", d / "rgba.png"),
        Case("CMYK JPEG (synthetic chest X-ray)", d / "cmyk.jpg"),
        Case("palette PNG (synthetic chest X-ray)", d / "palette.png"),
        Case("16-bit TIFF (demo body scan)", d / "gray16.tif"),
        Case("32-bit float TIFF (synthetic chest X-ray)", d / "float32.tif"),
        Case("GIF (synthetic chest X-ray)", d / "image.gif"),
        Case("all-black image", d / "all_black.png"),
        Case("constant gray image", d / "constant_gray.png"),
        Case("tiny content (12 px square on black)", d / "tiny_content.png"),
    ]


def write_dicom(path: Path, gray: np.ndarray) -> bool:
    """A 12-bit MONOCHROME2 PA chest radiograph (CR) holding ``gray`` ``(H, W)`` uint8; False without pydicom."""
    try:
        from pydicom.dataset import FileDataset, FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    except ImportError:
        return False
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.ViewPosition, ds.BodyPartExamined = "CR", "PA", "CHEST"
    ds.Rows, ds.Columns = gray.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (gray.astype(np.uint16) * 16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return True


def other_cases(d: Path) -> list[Case]:
    cases = []
    if write_dicom(d / "chest.dcm", np.asarray(chest_gray((512, 512)))):
        cases.append(Case("DICOM chest X-ray (CR, 12-bit, pydicom-written synthetic)", d / "chest.dcm"))
    # what every DICOM Part 10 file starts with (128-byte preamble, "DICM", the transfer syntax), no image
    (d / "scan.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\x14\x001.2.840.10008.1.2.1\x00"
                                 + bytes(2000))
    with zipfile.ZipFile(d / "bundle.zip", "w") as z:
        z.write(ASSETS / "demo_lung_sounds.flac", "demo_lung_sounds.flac")
    (d / "notes.txt").write_text("patient breathing fine, no wheeze\n" * 20)
    link = d / "passwd.wav"
    if not link.exists():
        link.symlink_to("/etc/passwd")
    return cases + [
        Case("DICOM preamble and DICM, no data set", d / "scan.dcm"),
        Case("zip archive (holding a FLAC)", d / "bundle.zip"),
        Case("text file", d / "notes.txt"),
        Case("symlink to /etc/passwd named .wav", link, service=False),
    ]


def real_cases(d: Path, data: Path) -> list[Case]:
    """Real samples, read in place (the resampled copies go to the temporary folder); none when absent."""
    out: list[Case] = []
    sixray = sorted((data / "xray_det" / "sixray_subset" / "test" / "images").glob("*.jpg"))[:1]
    cxr = sorted((data / "cxr" / "adult_multisource" / "Normal").glob("*.png"))[:1]
    for p in sixray:
        out.append(Case("SIXray baggage JPEG (real)", p, group="real sample", shown=f"DATA/{p.relative_to(data)}"))
    for p in cxr:
        out.append(Case("chest X-ray PNG (real, NIH)", p, group="real sample", shown=f"DATA/{p.relative_to(data)}"))
    rrujo = [p for p in sorted((data / "rrujo" / "audio" / "ThinklabsO").glob("*/*.flac"))
             if sf.info(str(p)).samplerate == 2000][:1]
    if rrujo:
        p = rrujo[0]
        out.append(Case("RRuJO breath recording (real, 2 kHz)", p, group="real sample", shown=f"DATA/{p.relative_to(data)}"))
        x, sr = sf.read(str(p), dtype="float32")
        for rate in (4500, 16_000):
            q = d / f"rrujo_{rate // 100 / 10:g}k.flac"
            sf.write(q, soxr.resample(x, sr, rate, quality="HQ"), rate)
            out.append(Case(f"RRuJO recording resampled to {rate / 1000:g} kHz", q, group="real sample"))
    return out


def worst_cases(d: Path) -> list[Case]:
    """The largest inputs the front door's default limits accept (run last)."""
    from pulmo.frontdoor.inputs import Limits

    lim = Limits()
    seconds = lim.max_audio_seconds
    out = []
    for channels in (1, 2):
        rate = min(lim.max_sample_rate_hz, int(lim.max_decoded_samples // (seconds * channels)))
        path = d / f"worst_{seconds:.0f}s_{rate // 1000}k_{channels}ch.flac"
        write_blocks(path, rate, channels, seconds, upsampled_demo(rate, channels))
        out.append(Case(f"largest accepted audio: {seconds:.0f} s x {rate // 1000} kHz x {channels} ch "
                        f"({channels * rate * seconds / 1e6:.1f} M samples, demo lung sounds)", path,
                        group="worst accepted"))
    w, h = _fit_pixels(lim.max_image_pixels)
    chest_gray((w, h)).save(d / "worst_gray8.png", compress_level=3)
    w4, h4 = _fit_pixels(min(lim.max_image_pixels, lim.max_image_decoded_bytes // 4))
    g = np.asarray(chest_gray((w4, h4)))
    Image.fromarray(np.dstack([g, g, g, np.full_like(g, 255)]), "RGBA").save(d / "worst_rgba.png", compress_level=3)
    del g
    scan = Image.open(ASSETS / "demo_body_scan_16bit.png")
    w16, h16 = _fit_pixels(min(lim.max_image_pixels, lim.max_image_decoded_bytes // 2))
    big = np.asarray(Image.fromarray(np.asarray(scan, dtype=np.float32)).resize((w16, h16), Image.Resampling.BILINEAR))
    Image.fromarray(np.clip(big, 0, 65535).astype(np.uint16)).save(d / "worst_gray16.png", compress_level=3)
    del big
    gray8 = f"{w}x{h} 8-bit gray ({w * h / 1e6:.1f} M px, synthetic chest X-ray)"
    rgba = f"{w4}x{h4} RGBA ({w4 * h4 / 1e6:.1f} M px, {4 * w4 * h4 / 1e6:.0f} MB decoded)"
    gray16 = f"{w16}x{h16} 16-bit gray ({w16 * h16 / 1e6:.1f} M px, demo body scan)"
    return out + [
        Case(f"largest accepted image: {gray8}", d / "worst_gray8.png", group="worst accepted"),
        Case(f"largest accepted image: {gray8}, --task cxr", d / "worst_gray8.png", "cxr", group="worst accepted"),
        Case(f"largest accepted image: {gray8}, --task detect", d / "worst_gray8.png", "detect", group="worst accepted"),
        Case(f"largest accepted image: {rgba}, --task cxr", d / "worst_rgba.png", "cxr", group="worst accepted"),
        Case(f"largest accepted image: {rgba}, --task detect", d / "worst_rgba.png", "detect", group="worst accepted"),
        Case(f"largest accepted image: {gray16}, --task detect", d / "worst_gray16.png", "detect",
             group="worst accepted"),
    ]


def upsampled_demo(rate: int, channels: int) -> Callable[[int, int], np.ndarray]:
    """A ``block(start, n)`` for :func:`write_blocks`: the 4 kHz demo, repeated, streamed up to ``rate``."""
    source = demo_audio(4000)
    stream = soxr.ResampleStream(4000, rate, 1, dtype="float32", quality="HQ")
    state = {"pending": np.zeros(0, np.float32), "pos": 0}

    def block(start: int, n: int) -> np.ndarray:
        while len(state["pending"]) < n:
            chunk = source[np.arange(state["pos"], state["pos"] + 4000) % len(source)]
            state["pending"] = np.concatenate([state["pending"], stream.resample_chunk(chunk)])
            state["pos"] += 4000
        y, state["pending"] = state["pending"][:n], state["pending"][n:]
        return np.repeat(0.9 * y[:, None], channels, axis=1)

    return block


def _fit_pixels(pixels: int) -> tuple[int, int]:
    """``(width, height)`` at 3:2 with ``width * height <= pixels``."""
    h = int(np.sqrt(pixels * 2 / 3))
    return pixels // h, h


# ---------------------------------------------------------------- the command line

def pulmo_command() -> list[str]:
    script = Path(sys.executable).parent / "pulmo"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pulmo.cli"]


# A small go-between runs the command and reports its children's peak: a child's ru_maxrss
# starts at its parent's peak (Linux carries it over fork and exec), so measured straight from
# this script, which holds the large inputs it made, every row would read at least that.
MEASURE = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
           "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
           "sys.exit(rc if rc >= 0 else 128 - rc)")


def run_cli(case: Case, timeout_s: float) -> Outcome:
    """``pulmo analyze FILE --json`` run in the file's folder (so messages name the file only);
    peak memory: ``ru_maxrss`` of that process, through :data:`MEASURE`."""
    cmd = [*pulmo_command(), "analyze", case.path.name, "--json"] + (["--task", case.task] if case.task else [])
    with tempfile.TemporaryDirectory() as tmp:
        out, err, peak_file = Path(tmp) / "out", Path(tmp) / "err", Path(tmp) / "peak"
        t0 = time.perf_counter()
        with out.open("wb") as fo, err.open("wb") as fe:
            proc = subprocess.Popen([sys.executable, "-c", MEASURE, str(peak_file), *cmd], cwd=case.path.parent,
                                    stdout=fo, stderr=fe, env=_env(), start_new_session=True)
            try:
                rc = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                rc = proc.wait()
        seconds = time.perf_counter() - t0
        stdout, stderr = out.read_text(errors="replace"), err.read_text(errors="replace")
        peak = int(peak_file.read_text()) / 1024 if peak_file.exists() else None
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    if seconds >= timeout_s:
        return Outcome("timed out", str(rc), f"killed after {timeout_s:.0f} s", peak, seconds)
    if rc >= 128:
        return Outcome(f"killed (signal {rc - 128})", str(rc), lines[-1] if lines else "", peak, seconds)
    if any(ln.startswith("Traceback") for ln in lines):
        return Outcome(f"traceback ({len(lines)} lines)", str(rc), lines[-1], peak, seconds)
    try:
        entries = json.loads(stdout) if stdout.strip() else []
    except json.JSONDecodeError:
        entries = []
    entry = entries[0] if entries and isinstance(entries[0], dict) else {}
    said = " / ".join(lines) if lines else "(nothing on stderr)"
    if "refused" in entry:
        why = entry["refused"] or {}
        code = " ".join(str(why[k]) for k in ("status", "code") if why.get(k) is not None)
        return Outcome("refused" + (f" ({code})" if code else "") + (f", {len(lines)} lines" if len(lines) > 1 else ""),
                       str(rc), said, peak, seconds)
    if entry:
        outcome, message = summarise(entry)
        return Outcome(outcome, str(rc), message, peak, seconds)
    return Outcome("no result" + (f", {len(lines)} lines" if len(lines) > 1 else ""), str(rc), said, peak, seconds)


def summarise(result: dict) -> tuple[str, str]:
    """``(outcome, message)`` of one analysis envelope: the capabilities that ran, the headline, warnings."""
    also = result.get("also") or []
    failed = [f"{a.get('task')} failed: {a.get('error')}" for a in also if "error" in a]
    warnings = list(result.get("warnings") or []) + failed
    tasks = "+".join([str(result.get("task"))] + [str(a.get("task")) for a in also if "error" not in a])
    outcome = f"labelled ({tasks})" + (" with warning" if warnings else "")
    message = str(result.get("headline", ""))
    if warnings:
        message += " | warning: " + "; ".join(str(w) for w in warnings)
    return outcome, message


def _last_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HF_HUB_OFFLINE": "1"}


# ---------------------------------------------------------------- the service

class Service:
    """``pulmo serve`` on a free loopback port with its own storage; restarted if it dies."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.proc: subprocess.Popen[bytes] | None = None
        self.base = ""
        self.resettable = True
        self.starts = 0

    def start(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        storage = self.folder / f"storage{self.starts}"
        log = (self.folder / f"serve{self.starts}.log").open("wb")
        self.proc = subprocess.Popen([*pulmo_command(), "serve", "--port", str(port), "--storage", str(storage),
                                      "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, env=_env())
        self.starts += 1
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if request("GET", self.base + "/health")[0] == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"pulmo serve did not start; see {log.name}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def reset_peak(self) -> None:
        try:
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")  # type: ignore[union-attr]
        except OSError:
            self.resettable = False

    def peak_mb(self) -> float | None:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():  # type: ignore[union-attr]
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def limits(self) -> dict:
        return json.loads(request("GET", self.base + "/health")[1]).get("limits", {})

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()  # type: ignore[union-attr]
            self.proc.wait(timeout=60)  # type: ignore[union-attr]


def run_service(case: Case, service: Service, timeout_s: float) -> Outcome:
    if not service.alive():
        service.start()
    service.reset_peak()
    body, ctype = multipart(case.path.name, case.path.read_bytes(), case.task)
    t0 = time.perf_counter()
    try:
        status, out = request("POST", service.base + "/analyses", body, ctype)
    except OSError as err:
        return Outcome("no answer (service died?)", "-", str(err), service.peak_mb(), time.perf_counter() - t0)
    answer = _json(out)
    if status != 202:
        return Outcome("refused at upload", str(status), str(answer.get("detail", out[:200])), service.peak_mb(),
                       time.perf_counter() - t0)
    url = f"{service.base}/analyses/{answer['id']}"
    while time.perf_counter() - t0 < timeout_s:
        if not service.alive():
            return Outcome("service died", "202", "the server process exited during the analysis", None,
                           time.perf_counter() - t0)
        row = _json(request("GET", url)[1])
        if row.get("status") == "done":
            outcome, message = summarise(row.get("result") or {})
            return Outcome(outcome, "202", message, service.peak_mb(), time.perf_counter() - t0)
        if row.get("status") == "failed":
            return Outcome("failed later", "202", str(row.get("error")), service.peak_mb(), time.perf_counter() - t0)
        time.sleep(0.1)
    return Outcome("timed out", "202", f"not done after {timeout_s:.0f} s", service.peak_mb(), time.perf_counter() - t0)


def _json(raw: bytes) -> dict:
    try:
        out = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return out if isinstance(out, dict) else {}


# ---------------------------------------------------------------- the report

def clean(text: str, folder: Path, data: Path) -> str:
    """One line, with the temporary folder and the data folder replaced by relative names."""
    text = " ".join(text.split())
    for path, shown in ((str(folder) + "/", ""), (str(folder), "."), (str(data.resolve()) + "/", "DATA/"),
                        (str(data) + "/", "DATA/")):
        text = text.replace(path, shown)
    return text


def cell(text: str, limit: int = 260) -> str:
    text = text.replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def mb(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def write_report(out: Path, rows: list[tuple[Case, Outcome | None, Outcome | None]], header: list[str]) -> None:
    lines = header + ["", "## Command line: `pulmo analyze FILE --json`", "",
                      "| # | input | file | outcome | exit | message or headline | peak MB | s |", "|---|---|---|---|---|---|---|---|"]
    for i, (case, cli, _) in enumerate(rows, 1):
        if cli is not None:
            lines.append(f"| {i} | {cell(case.label)} | `{case.name}` | {cli.outcome} | {cli.status} | {cell(cli.message)} "
                         f"| {mb(cli.peak_mb)} | {cli.seconds:.1f} |")
    lines += ["", "## Service: `POST /analyses`, then `GET /analyses/{id}` until done or failed", "",
              "| # | input | outcome | HTTP | message or headline | peak MB | s |", "|---|---|---|---|---|---|---|"]
    for i, (case, _, srv) in enumerate(rows, 1):
        if srv is not None:
            lines.append(f"| {i} | {cell(case.label)} | {srv.outcome} | {srv.status} | {cell(srv.message)} "
                         f"| {mb(srv.peak_mb)} | {srv.seconds:.1f} |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    with out.with_suffix(".csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["n", "group", "input", "file", "task", "surface", "outcome", "status", "message", "peak_mb", "seconds"])
        for i, (case, cli, srv) in enumerate(rows, 1):
            for surface, o in (("cli", cli), ("service", srv)):
                if o is not None:
                    w.writerow([i, case.group, case.label, case.name, case.task or "", surface, o.outcome, o.status,
                                o.message, mb(o.peak_mb), f"{o.seconds:.2f}"])


def bound_lines(rows: list[tuple[Case, Outcome | None, Outcome | None]]) -> list[str]:
    """Per surface: the largest peak over all inputs, and over those that were labelled."""
    out = []
    for surface, k in (("command line", 1), ("service", 2)):
        measured = [(o.peak_mb, case.label, o.outcome) for case, *both in rows
                    if (o := both[k - 1]) is not None and o.peak_mb is not None]
        if not measured:
            continue
        top, label, _ = max(measured)
        line = f"- {surface}: largest peak {top:.0f} MB ({label})"
        labelled = [m for m in measured if m[2].startswith("labelled")]
        if labelled:
            ltop, llabel, _ = max(labelled)
            line += f"; largest of a labelled input {ltop:.0f} MB ({llabel})"
        out.append(line + f"; target {TARGET_MB} MB: {'met' if top <= TARGET_MB else 'NOT met'}.")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/robustness.md")
    ap.add_argument("--data", default=os.environ.get("PULMO_DATA", str(ROOT.parent / "shared" / "data")),
                    help="real data folder (default $PULMO_DATA or ../shared/data); its rows are skipped when absent")
    ap.add_argument("--only", action="append", default=[], metavar="WORD",
                    help="run only inputs whose class or file name holds WORD (repeatable)")
    ap.add_argument("--no-cli", action="store_true")
    ap.add_argument("--no-service", action="store_true")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per input and surface")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    import pulmo
    from pulmo.engine.train import cpu_model_name
    from pulmo.frontdoor.inputs import Limits

    data = Path(args.data)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pulmo-robustness-") as tmp:
        folder = Path(tmp)
        log(f"making inputs in {folder}")
        cases = audio_cases(folder) + image_cases(folder) + other_cases(folder)
        if data.is_dir():
            cases += real_cases(folder, data)
        else:
            log(f"no data folder at {data}: real samples skipped")
        cases += worst_cases(folder)
        if args.only:
            cases = [c for c in cases if any(w.lower() in (c.label + " " + c.name).lower() for w in args.only)]
        service = Service(folder)
        rows: list[tuple[Case, Outcome | None, Outcome | None]] = []
        service_limits: dict = {}
        try:
            if not args.no_service and any(c.service for c in cases):
                log("starting pulmo serve")
                service.start()
                service_limits = service.limits()
            for i, case in enumerate(cases, 1):
                cli = srv = None
                if not args.no_cli:
                    cli = run_cli(case, args.timeout)
                    cli.message = clean(cli.message, folder, data)
                    log(f"[{i}/{len(cases)}] cli     {case.name}: {cli.outcome}, {mb(cli.peak_mb)} MB, {cli.seconds:.1f} s"
                        f" - {cli.message[:140]}")
                if not args.no_service and case.service:
                    srv = run_service(case, service, args.timeout)
                    srv.message = clean(srv.message, folder, data)
                    log(f"[{i}/{len(cases)}] service {case.name}: {srv.outcome} ({srv.status}), {mb(srv.peak_mb)} MB, "
                        f"{srv.seconds:.1f} s - {srv.message[:140]}")
                rows.append((case, cli, srv))
        finally:
            service.stop()
    lim = Limits()
    bound = bound_lines(rows)
    command = " ".join(["python benchmarks/robustness.py",
                        *("DIR" if a.startswith("/") else shlex.quote(a) for a in sys.argv[1:])])
    header = [
        "# Robustness: bad inputs through the command line and the service",
        "",
        f"Command: `{command}` ({time.perf_counter() - t_start:.0f} s wall), pulmo {pulmo.__version__}, "
        f"{cpu_model_name()}, {os.cpu_count()} cores, no GPU. Every input is made by the script in a temporary folder; "
        "`DATA/` rows are real samples read in place (skipped when the data folder is absent).",
        "",
        "Peak memory: command line = `ru_maxrss` of the `pulmo analyze` process (it imports torch and loads one model "
        "before any input is read); service = `VmHWM` of the `pulmo serve` process, reset before each upload "
        + ("(`/proc/PID/clear_refs`), so each row counts that input plus every model the service had loaded by then "
           "(rows run in order, largest inputs last)." if service.resettable else
           "is not possible here: each row shows the running maximum since the server started."),
        "",
        f"Front-door limits (`pulmo.frontdoor.inputs.Limits` defaults): {lim.max_upload_bytes / 2**20:.0f} MiB a file, "
        f"{lim.max_audio_seconds:.0f} s of audio, {lim.min_sample_rate_hz}-{lim.max_sample_rate_hz} Hz, "
        f"{lim.max_decoded_samples:,} decoded samples (rate x channels x seconds), {lim.max_image_pixels:,} pixels and "
        f"{lim.max_image_decoded_bytes:,} bytes decoded an image."
        + (f" The service ran with: {json.dumps(service_limits)}." if service_limits else ""),
        "",
        "Bound on peak memory (target: any accepted input within 2 GB):",
        *bound,
    ]
    out = Path(args.out)
    write_report(out if out.is_absolute() else ROOT / out, rows, header)
    for line in bound:
        log(line)
    log(f"wrote {out} and {out.with_suffix('.csv')}")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
