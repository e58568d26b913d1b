"""Routing by content: decide from what a file holds which capabilities run on it, and refuse
what none of them was built for, before any label is given.

Audio is decoded once (mono, at most 16 kHz) and measured (:mod:`.audio_content`); images are
measured on a reduced copy (:mod:`.image_content`) and gray ones scored by the chest X-ray gate
(:mod:`pulmo.cxr.gate`). Then:

==============================  ===========================================================
content                          capabilities
==============================  ===========================================================
stethoscope recording, >= 4 kHz  lung sounds, and the breathing rate when >= 4 s long
air-microphone breathing         breathing rate
breathing below 4 kHz            breathing rate (too slow a rate to tell the device or to
                                 hear crackles and wheezes)
colour image                     anomaly detection (colour-coded baggage / body scans)
gray image passing the gate      chest X-ray (8-bit or deeper)
deeper-than-8-bit gray, no gate  anomaly detection (16-bit body scan)
8-bit gray, no gate              refused: not a frontal chest X-ray
==============================  ===========================================================

Refused before that, whatever ``task`` says: digital silence, audio quieter than
``MIN_LEVEL_DBFS``, shorter than a capability needs, a pure tone or other periodic signal,
stationary broadband noise, NaN samples; blank, all-black, constant or almost empty images.
With ``task`` the route is that capability alone, and its own scope checks still apply (the
chest X-ray gate refuses a baggage scan even under ``--task cxr``).

Thresholds were set on the shared real data (ICBHI, KAUH, RRuJO audio; chest X-ray and SIXray
images) so that none of those files is refused; the measured ranges are in the comments beside
each and in ``docs/front-door.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pulmo.errors import DataError
from pulmo.frontdoor.inputs import InputInfo, InputRejected

if TYPE_CHECKING:
    from pulmo.cxr.gate import ChestGate, GateScore

# -- audio ------------------------------------------------------------------------------
MIN_LEVEL_DBFS = -65.0  # quietest real recording measured: ICBHI -48 dBFS (RMS over non-silent frames)
# Seconds of sound each capability needs: one breathing cycle at up to 30 breaths/min for lung
# sounds; the shortest clip the rate models were trained on for the rate.
MIN_SECONDS = {"lung-sounds": 2.0, "resp-rate": 4.0}
WHAT = {"lung-sounds": "lung-sound analysis", "resp-rate": "the breathing rate"}
MAX_TONAL_FRACTION = 0.5  # real recordings: at most 0.26 of the power in spectral lines (mains hum) ...
STEADY_DB = 3.0  # ... and a tone is refused only at a steady level: a wheeze is tonal too, but comes and goes with breaths
NOISE_FLATNESS = 0.5  # stationary noise: spectrum this flat ...
NOISE_ENVELOPE_DB = 1.0  # ... and a level that varies less than this (real recordings: >= 1.6 dB)
WARN_CLIPPED = 0.01  # real ICBHI recordings reach 19 % clipped samples: a warning, never a refusal
AIR_HIGH_BAND = 0.35  # share of the 100 Hz-8 kHz power above 1 kHz: ICBHI 99th percentile 0.33, KAUH <= 0.005
LUNG_SOUNDS_MIN_RATE_HZ = 4000  # crackles and wheezes reach 2 kHz

# -- images -----------------------------------------------------------------------------
COLOUR_CHROMA = 0.035  # mean chroma: chest X-rays <= 0.017, SIXray baggage scans >= 0.056
MIN_STD = 0.01  # gray-level spread (0-1) below which an image is blank or constant
DARK_MAX = 0.02  # an image whose brightest reduced pixel is below this is all black
MIN_CONTENT_FRACTION = 0.05  # share of pixels off the background level: real images >= 0.19


@dataclass(frozen=True)
class Route:
    """Which capabilities run on one file, and why.

    ``content``: what the file holds, in words; ``tasks``: capability names, the first is the
    primary one; ``reason``: one sentence; ``warnings``: what a reader should know (in words);
    ``measurements``: the numbers the decision used.
    """

    content: str
    tasks: tuple[str, ...]
    reason: str
    warnings: tuple[str, ...] = ()
    measurements: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"content": self.content, "tasks": list(self.tasks), "reason": self.reason,
                "warnings": list(self.warnings), "measurements": self.measurements}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Route:
        return cls(data["content"], tuple(data["tasks"]), data["reason"], tuple(data.get("warnings", ())),
                   dict(data.get("measurements", {})))


def refuse(name: str, code: str, why: str, status: int = 422) -> InputRejected:
    """The one-line refusal for ``name``."""
    return InputRejected(status, code, f"{name}: {why}")


def route_file(path: str | Path, info: InputInfo, task: str | None = None) -> Route:
    """Route one file that passed :func:`pulmo.frontdoor.inputs.inspect_file`.

    Raises:
        InputRejected: the content is out of scope (422, or 400 for unreadable samples), or
        ``task`` is unknown or takes another kind of file.
    """
    from pulmo.frontdoor.capabilities import capability_names

    if task is not None and task not in capability_names():
        raise InputRejected(422, "unknown_task", f"unknown task {task!r}; choose one of: {', '.join(capability_names())}")
    if info.kind == "audio":
        return _route_audio(Path(path), info, task)
    return _route_image(Path(path), info, task)


# -- audio ------------------------------------------------------------------------------
def _route_audio(path: Path, info: InputInfo, task: str | None) -> Route:
    from pulmo.data.audio_io import read_audio
    from pulmo.frontdoor.audio_content import ANALYSIS_RATE_HZ, measure

    name, rate = info.name, int(info.details["sample_rate_hz"])
    _check_task_kind(task, info)
    try:
        samples, sr = read_audio(path, sample_rate_hz=min(rate, ANALYSIS_RATE_HZ))
    except DataError as err:
        reason = "contains NaN or infinite samples" if "NaN" in str(err) else "its samples could not be decoded"
        raise refuse(name, "unreadable_samples", f"the audio {reason}", 400) from None
    c = measure(samples, sr)
    facts = c.to_dict()
    if c.active_s == 0:
        raise refuse(name, "digital_silence", "digital silence (every sample is zero or within 2 steps of it): nothing to analyse")
    if c.rms_dbfs < MIN_LEVEL_DBFS:
        raise refuse(name, "too_quiet", f"level {c.rms_dbfs:.0f} dBFS, below the {MIN_LEVEL_DBFS:.0f} dBFS "
                     "a recording needs (check the microphone or the gain)")
    if c.tonal_fraction > MAX_TONAL_FRACTION and c.envelope_db_std < STEADY_DB:
        raise refuse(name, "tone", f"a steady tone: {100 * c.tonal_fraction:.0f} % of the power lies in pure tones at a "
                     "constant level (a test tone or other periodic signal), not respiratory sound")
    if c.flatness > NOISE_FLATNESS and c.envelope_db_std < NOISE_ENVELOPE_DB:
        raise refuse(name, "stationary_noise", "steady broadband noise (like white noise) with no breathing "
                     f"rhythm: the level varies by {c.envelope_db_std:.1f} dB, breathing varies by several dB")
    warnings = []
    if c.clipped_fraction > WARN_CLIPPED:
        warnings.append(f"{100 * c.clipped_fraction:.1f} % of the samples are clipped at full scale: "
                        "loud sounds are distorted, results may be less reliable")
    if c.silent_fraction > 0.1:
        warnings.append(f"{100 * c.silent_fraction:.0f} % of the recording is digital silence "
                        "(a noise gate or dropouts); only the rest was measured")

    if c.high_band_fraction is None:
        content = f"breathing recording at {rate} Hz (too low a sample rate to tell a stethoscope from a microphone)"
        routed = ["resp-rate"]
    elif c.high_band_fraction >= AIR_HIGH_BAND:
        content = "breathing through the air (air-microphone recording)"
        routed = ["resp-rate"]
    else:
        content = "stethoscope recording"
        routed = ["lung-sounds", "resp-rate"] if rate >= LUNG_SOUNDS_MIN_RATE_HZ else ["resp-rate"]
    why = "" if c.high_band_fraction is None else f": {100 * c.high_band_fraction:.0f} % of its power above 1 kHz"
    if task == "lung-sounds" and rate < LUNG_SOUNDS_MIN_RATE_HZ:
        raise refuse(name, "sample_rate", f"sample rate {rate} Hz is below the {LUNG_SOUNDS_MIN_RATE_HZ} Hz "
                     "lung-sound analysis needs (crackles and wheezes reach 2 kHz)")
    wanted = _registered(name, content, routed) if task is None else [task]
    tasks = tuple(t for t in wanted if c.active_s >= MIN_SECONDS.get(t, 0.0))
    if not tasks:
        raise refuse(name, "too_short", f"{c.active_s:.1f} s of sound; "
                     + "; ".join(f"{WHAT[t]} needs at least {MIN_SECONDS[t]:.0f} s" for t in wanted))
    skipped = [t for t in wanted if t not in tasks]
    if skipped:
        warnings.append(f"too short ({c.active_s:.1f} s) for " + ", ".join(
            f"{WHAT[t]} (needs {MIN_SECONDS[t]:.0f} s)" for t in skipped))
    reason = f"{content}{why}" if task is None else f"chosen with --task {task} (content: {content}{why})"
    return Route(content, tasks, reason, tuple(warnings), facts)


# -- images -----------------------------------------------------------------------------
def _route_image(path: Path, info: InputInfo, task: str | None) -> Route:
    from pulmo.cxr.gate import MAX_MIRROR, bundled_gate
    from pulmo.frontdoor.image_content import measure

    name = info.name
    _check_task_kind(task, info)
    try:
        c, gray = measure(path)
    except Exception:  # the header and one decode passed inspect_file; a second decode failing is the file's fault
        raise refuse(name, "unreadable_pixels", "the image's pixels could not be decoded", 400) from None
    facts = c.to_dict()
    if float(gray.max()) < DARK_MAX:
        raise refuse(name, "all_black", "the image is all black: nothing to analyse")
    if c.std < MIN_STD:
        raise refuse(name, "blank", f"the image is blank (one gray level, spread {c.std:.3f}): nothing to analyse")
    if c.content_fraction < MIN_CONTENT_FRACTION:
        raise refuse(name, "almost_empty", f"only {100 * c.content_fraction:.1f} % of the image differs from its "
                     "background: too little to analyse")
    deep = int(info.details.get("bits_per_sample", 8)) > 8
    colour = c.chroma >= COLOUR_CHROMA
    gate = bundled_gate()
    score = None if colour or gate is None else gate.score(gray)
    if score is not None:
        facts["chest_gate"] = {"residual": round(score.residual, 3), "max_residual": round(gate.max_residual, 3),
                               "mahalanobis": round(score.mahalanobis, 3),
                               "max_mahalanobis": round(gate.max_mahalanobis, 3), "detail": round(score.detail, 3),
                               "min_detail": round(gate.min_detail, 3), "mirror": round(score.mirror, 3),
                               "max_mirror": MAX_MIRROR, "accepted": score.accepted}
    chest = score is not None and score.accepted
    if colour:
        content = f"colour image (mean chroma {c.chroma:.2f}): a colour-coded scan such as a baggage X-ray"
    elif chest:
        content = f"frontal chest X-ray ({'deeper than 8-bit ' if deep else ''}gray; passes the chest X-ray gate)"
    else:
        content = f"{'16-bit ' if deep else ''}gray image that does not look like a frontal chest X-ray"
    if task == "cxr" and not chest:
        raise refuse(name, "not_chest_xray", _not_chest_why(colour, c.chroma, gate, score))
    if task is not None:
        return Route(content, (task,), f"chosen with --task {task} (content: {content})", (), facts)
    if chest:
        return Route(content, tuple(_registered(name, content, ["cxr"])), content, (), facts)
    if info.format == "DICOM":  # a DICOM file here is a medical image the detector cannot read: only the chest model could
        raise refuse(name, "not_chest_xray", _not_chest_why(False, c.chroma, gate, score) + " (DICOM)")
    if colour or deep:
        return Route(content, tuple(_registered(name, content, ["detect"])), f"{content}: anomaly detection on scans",
                     (), facts)
    raise refuse(name, "not_chest_xray", _not_chest_why(False, c.chroma, gate, score) + "; for a baggage or body scan use --task detect")


def _not_chest_why(colour: bool, chroma: float, gate: ChestGate | None, score: GateScore | None) -> str:
    if colour:
        return (f"a colour image (mean chroma {chroma:.2f}; X-rays are gray), not a frontal chest X-ray: "
                "the chest X-ray model refuses it")
    why = gate.why_refused(score) if gate is not None and score is not None else ""
    return f"not a frontal chest X-ray ({why or 'the chest X-ray gate is not installed'})"


def _registered(name: str, content: str, tasks: list[str]) -> list[str]:
    """``tasks`` that this installation has; refuses (415) when it has none of them."""
    from pulmo.frontdoor.capabilities import capability, capability_names

    have = [t for t in tasks if t in capability_names()]
    if not have:
        known = ", ".join(f"{n} ({'/'.join(sorted(capability(n).kinds))})" for n in capability_names())
        raise InputRejected(415, "no_capability", f"{name}: a {content}, and no capability in this version of pulmo "
                            f"takes that; available: {known}")
    return have


def _check_task_kind(task: str | None, info: InputInfo) -> None:
    if task is None:
        return
    from pulmo.frontdoor.capabilities import capability

    kinds = capability(task).kinds
    if info.kind not in kinds:
        raise InputRejected(415, "wrong_kind", f"{info.name}: task {task!r} takes {'/'.join(sorted(kinds))} files, "
                            f"this is {info.kind} ({info.format})")


__all__ = ["Route", "route_file"]
