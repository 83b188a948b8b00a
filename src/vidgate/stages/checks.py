"""Technical checks on a stored clip: each a measured value, its threshold and a verdict.

:func:`run_checks` works on any file (``vidgate check`` uses it); :class:`ChecksStage` runs it
in the job engine with the expectations taken from the request. The thresholds are data
(:data:`THRESHOLDS`), each with the reason it sits where it does. How frames are read cheaply
is :mod:`vidgate.stages._sampling`'s job.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scenedetect import FrameTimecode  # type: ignore[import-untyped]
from scenedetect.detectors import HistogramDetector  # type: ignore[import-untyped]

from vidgate.stages._sampling import MediaRead, NotAVideo, Sample, read
from vidgate.stages.base import CheckResult, Stage, StageContext, StageResult, now, register
from vidgate.types import TECHNICAL_CHECKS, AudioMode, Job, Resolution, VideoRequest, parse_aspect


@dataclass(frozen=True)
class Threshold:
    value: float
    unit: str
    why: str


THRESHOLDS: dict[str, Threshold] = {
    "duration": Threshold(
        0.08,
        "relative",
        "containers round to frame boundaries and providers snap to their supported "
        "durations; the request's duration_tolerance_s widens it (8% is billing's own "
        "tolerance before a clip is re-priced)",
    ),
    "resolution": Threshold(
        0.95,
        "ratio of short sides",
        "providers pad or round frame sizes (1080 to 1088, 720 to 704); a clip 5% below the "
        "asked tier is a different tier",
    ),
    "aspect": Threshold(
        0.03, "relative", "3% covers even-size rounding; a 16:9 request answered in 4:3 is 25% off"
    ),
    "fps": Threshold(
        0.02,
        "relative",
        "23.976 against 24 is the same rate; without an asked rate, at least 12 fps (below "
        "that motion visibly stutters; open models deliver 16)",
    ),
    "fps_floor": Threshold(12.0, "fps", "the rate a clip must reach when none was asked"),
    "audio_silence": Threshold(
        -60.0,
        "dBFS RMS",
        "a dialogue or ambience track sits around -20 to -30 dBFS; below -60 dBFS is "
        "inaudible (an encoder writing zeros)",
    ),
    "black_pixel": Threshold(
        38.0,
        "luma (0-255)",
        "ffmpeg blackdetect's pixel threshold (10% of the limited range above 16)",
    ),
    "black_frames": Threshold(
        0.2,
        "share of sampled frames",
        "a fade in or out takes a few frames; a clip a fifth black is broken (a frame is "
        "black when 98% of its pixels are, as in ffmpeg blackdetect)",
    ),
    "frozen_diff": Threshold(
        1.5,
        "mean abs luma difference (0-255)",
        "below this two frames are the same picture up to encoder noise: the same still "
        "picture coded once as a keyframe and once predicted differs by about 1 level at "
        "CRF 30; moving content sampled a second apart differs by far more",
    ),
    "frozen": Threshold(
        1.5,
        "seconds",
        "generated clips are 4-10 s, so a still stretch of 1.5 s is a visible freeze "
        "(ffmpeg freezedetect's default is 2 s for long-form video)",
    ),
    "flicker_jump": Threshold(
        10.0,
        "mean luma change between consecutive frames (0-255)",
        "lighting changes and fades move the mean a few levels a frame; 10 levels a frame "
        "is a visible pulse",
    ),
    "flicker": Threshold(
        0.25,
        "share of sampled frame pairs",
        "one cut or flash jumps once; a quarter of all pairs jumping is oscillation",
    ),
    "decode": Threshold(
        0.98,
        "readable share of the declared duration",
        "a file that stops before 98% of what its header declares was truncated",
    ),
    "hard_cuts": Threshold(
        0.5,
        "PySceneDetect HistogramDetector threshold (1 - correlation), 16 luma bins",
        "a single-shot request must come back as one shot; a coarse luma histogram keeps a "
        "correlation above 0.9 under motion between frames sampled a second apart (pixel "
        "differences do not), while a new shot drops it below 0.3",
    ),
}

#: luma histogram bins for cut detection (coarse: robust to motion, not to a new shot)
HIST_BINS = 16

#: every check, in the order they are reported
CHECKS = TECHNICAL_CHECKS


@dataclass(frozen=True)
class Expect:
    """What the clip was asked to be; None: not asked (the check is skipped or uses a floor)."""

    duration_s: float | None = None
    duration_tolerance_s: float = 0.0
    #: the asked short side (a tier) or an exact frame size
    short_side: int | None = None
    size: tuple[int, int] | None = None
    aspect: float | None = None
    fps: float | None = None
    #: True: audio required; False: none asked; None: unknown (check only what is there)
    audio: bool | None = None
    single_shot: bool = True
    only: frozenset[str] | None = None

    @classmethod
    def from_request(cls, req: VideoRequest, only: list[str] | None = None) -> Expect:
        w, h = parse_aspect(req.aspect_ratio)
        return cls(
            duration_s=req.duration_s,
            duration_tolerance_s=req.duration_tolerance_s,
            short_side=req.resolution.short_side,
            aspect=w / h,
            fps=float(req.fps) if req.fps else None,
            audio={AudioMode.REQUIRED: True, AudioMode.NONE: False}.get(req.audio),
            single_shot="multi-shot" not in req.hints,
            only=frozenset(only) if only is not None else None,
        )


def parse_resolution(value: str) -> tuple[int | None, tuple[int, int] | None]:
    """``720p`` (a tier: short side) or ``1280x720`` (exact); ValueError naming both forms."""
    v = value.strip().lower()
    if "x" in v:
        a, _, b = v.partition("x")
        if a.isdigit() and b.isdigit() and int(a) > 0 and int(b) > 0:
            return None, (int(a), int(b))
        raise ValueError(f"resolution {value!r} is not WxH; use e.g. 1280x720 or 720p")
    return Resolution.parse(v).short_side, None


def unknown_checks(names: list[str]) -> list[str]:
    return [n for n in names if n not in CHECKS]


def run_checks(path: Path, expect: Expect | None = None) -> list[CheckResult]:
    """Every technical check on ``path``; :class:`NotAVideo` when it is not a readable video."""
    expect = expect or Expect()
    if expect.only is not None and (bad := unknown_checks(sorted(expect.only))):
        raise ValueError(f"unknown check(s) {', '.join(bad)}; known: {', '.join(CHECKS)}")
    media = read(path)
    results = [
        _duration(media, expect),
        _resolution(media, expect),
        _aspect(media, expect),
        _fps(media, expect),
        *_audio(media, expect),
        *_frames(media, expect),
        _decode(media),
        _cuts(media, expect),
    ]
    if expect.only is not None:
        results = [r for r in results if r.name in expect.only]
    return results


def _r(name: str, ok: bool | None, value: Any, threshold: Any, unit: str, **kw: Any) -> CheckResult:
    verdict = "skipped" if ok is None else ("pass" if ok else "fail")
    return CheckResult(
        name=name, verdict=verdict, value=value, threshold=threshold, unit=unit, **kw
    )


def _duration(m: MediaRead, e: Expect) -> CheckResult:
    got = round(m.readable_s, 3)
    if e.duration_s is None:
        return _r("duration", None, got, None, "s", detail="no duration asked")
    tol = max(e.duration_tolerance_s, THRESHOLDS["duration"].value * e.duration_s)
    ok = abs(got - e.duration_s) <= tol + 1e-9
    return _r(
        "duration",
        ok,
        got,
        f"{e.duration_s:g} ± {tol:.2f}",
        "s",
        detail=None if ok else f"delivered {got:g} s where {e.duration_s:g} s was asked",
    )


def _resolution(m: MediaRead, e: Expect) -> CheckResult:
    got = f"{m.width}x{m.height}"
    if e.size is not None:
        ok = (m.width, m.height) == e.size
        return _r("resolution", ok, got, f"{e.size[0]}x{e.size[1]}", "px")
    if e.short_side is None:
        return _r("resolution", None, got, None, "px", detail="no resolution asked")
    need = THRESHOLDS["resolution"].value * e.short_side
    ok = min(m.width, m.height) >= need
    return _r("resolution", ok, got, f"short side ≥ {need:.0f}", "px")


def _aspect(m: MediaRead, e: Expect) -> CheckResult:
    got = round(m.width / m.height, 4) if m.height else 0.0
    want = e.aspect if e.aspect is not None else (e.size[0] / e.size[1] if e.size else None)
    if want is None:
        return _r("aspect", None, got, None, "w/h", detail="no aspect ratio asked")
    tol = THRESHOLDS["aspect"].value
    return _r("aspect", abs(got - want) <= tol * want, got, f"{want:.4f} ± {tol:.0%}", "w/h")


def _fps(m: MediaRead, e: Expect) -> CheckResult:
    got = round(m.fps, 3) if m.fps else 0.0
    if e.fps is None:
        floor = THRESHOLDS["fps_floor"].value
        return _r("fps", got >= floor, got, f"≥ {floor:g}", "fps")
    tol = THRESHOLDS["fps"].value * e.fps
    return _r("fps", abs(got - e.fps) <= tol, got, f"{e.fps:g} ± {tol:.2f}", "fps")


def _audio(m: MediaRead, e: Expect) -> list[CheckResult]:
    present = _r(
        "audio_present",
        None if not e.audio else m.has_audio,
        m.has_audio,
        True if e.audio else None,
        "bool",
        detail=None if e.audio else "audio not required",
    )
    limit = THRESHOLDS["audio_silence"].value
    if not m.has_audio or m.audio_rms_dbfs is None:
        silence = _r("audio_silence", None, None, limit, "dBFS", detail="no audio track")
    elif e.audio is False:
        silence = _r(
            "audio_silence",
            None,
            round(m.audio_rms_dbfs, 1),
            limit,
            "dBFS",
            detail="audio was not asked for",
        )
    else:
        silence = _r(
            "audio_silence", m.audio_rms_dbfs > limit, round(m.audio_rms_dbfs, 1), limit, "dBFS"
        )
    return [present, silence]


def _is_black(s: Sample) -> bool:
    return float((s.gray < THRESHOLDS["black_pixel"].value).mean()) >= 0.98


def _frames(m: MediaRead, e: Expect) -> list[CheckResult]:
    samples = m.samples
    if not samples:
        none = "no frame could be decoded"
        return [
            _r("black_frames", False, None, THRESHOLDS["black_frames"].value, "share", detail=none),
            _r("frozen", False, None, THRESHOLDS["frozen"].value, "s", detail=none),
            _r("flicker", False, None, THRESHOLDS["flicker"].value, "share", detail=none),
        ]
    black = [_is_black(s) for s in samples]
    share = sum(black) / len(samples)
    black_lim = THRESHOLDS["black_frames"].value
    black_r = _r(
        "black_frames",
        share <= black_lim,
        round(share, 3),
        black_lim,
        "share",
        frames_s=[round(s.t, 3) for s, b in zip(samples, black, strict=True) if b][:12],
        detail=f"{sum(black)} of {len(samples)} sampled frames black",
    )
    # Frozen: the longest run of consecutive (non-black) samples that are the same picture.
    same_lim = THRESHOLDS["frozen_diff"].value
    longest, run_start, best = 0.0, None, (0.0, 0.0)
    for i in range(1, len(samples)):
        a, b = samples[i - 1], samples[i]
        same = (
            not black[i]
            and not black[i - 1]
            and a.gray.shape == b.gray.shape
            and float(np.abs(a.gray.astype(np.int16) - b.gray).mean()) < same_lim
        )
        if same:
            run_start = a.t if run_start is None else run_start
            if b.t - run_start > longest:
                longest, best = b.t - run_start, (run_start, b.t)
        else:
            run_start = None
    frozen_lim = THRESHOLDS["frozen"].value
    frozen_r = _r(
        "frozen",
        longest < frozen_lim,
        round(longest, 3),
        frozen_lim,
        "s",
        frames_s=[round(best[0], 3), round(best[1], 3)] if longest else [],
        detail=f"still from {best[0]:.2f} s to {best[1]:.2f} s" if longest else None,
    )
    # Flicker: consecutive-frame pairs (a frame interval apart) whose mean luma jumps.
    step = 1.5 / m.fps if m.fps else 0.1
    pairs = [(a, b) for a, b in itertools.pairwise(samples) if 0 < b.t - a.t <= step]
    jump = THRESHOLDS["flicker_jump"].value
    jumps = [b for a, b in pairs if abs(b.mean - a.mean) >= jump]
    flick_share = len(jumps) / len(pairs) if pairs else 0.0
    flick_lim = THRESHOLDS["flicker"].value
    flicker_r = _r(
        "flicker",
        None if len(pairs) < 2 else flick_share < flick_lim,
        round(flick_share, 3),
        flick_lim,
        "share",
        frames_s=[round(s.t, 3) for s in jumps][:12],
        detail=f"{len(jumps)} of {len(pairs)} consecutive-frame pairs jump ≥ {jump:g} levels",
    )
    return [black_r, frozen_r, flicker_r]


def _decode(m: MediaRead) -> CheckResult:
    declared = m.declared_s or m.readable_s
    share = m.readable_s / declared if declared else 0.0
    if m.declared_frames:
        share = min(share, m.packets / m.declared_frames)
    lim = THRESHOLDS["decode"].value
    problems = []
    if m.demux_error:
        problems.append(f"stream error: {m.demux_error}")
    if m.decode_errors:
        problems.append(f"{m.decode_errors} decode error(s)")
    if share < lim:
        problems.append(f"readable to {m.readable_s:.2f} s of {declared:.2f} s declared")
    return _r(
        "decode",
        not problems,
        round(share, 4),
        lim,
        "share",
        detail="; ".join(problems) or None,
        frames_s=[round(m.readable_s, 3)] if share < lim else [],
    )


def _cuts(m: MediaRead, e: Expect) -> CheckResult:
    lim = THRESHOLDS["hard_cuts"].value
    if not e.single_shot:
        return _r("hard_cuts", None, None, 0, "cuts", detail="multi-shot request: cuts allowed")
    fps = m.fps or 24.0
    detector = HistogramDetector(threshold=lim, bins=HIST_BINS, min_scene_len=1)
    cuts: list[float] = []
    for s in m.samples:
        bgr = np.repeat(s.gray[:, :, None], 3, axis=2)
        tc = FrameTimecode(round(s.t * fps), fps=fps)
        cuts.extend(c.seconds for c in detector.process_frame(tc, bgr))
    return _r(
        "hard_cuts",
        not cuts,
        len(cuts),
        0,
        "cuts",
        frames_s=[round(c, 3) for c in cuts][:12],
        detail=f"histogram threshold {lim:g} over {len(m.samples)} sampled frames",
    )


@register
class ChecksStage(Stage):
    """The technical checks on every delivered clip (cheap: a sampled, reduced decode)."""

    name = "checks"
    needs = ("pyav", "scenedetect")

    async def run(self, ctx: StageContext) -> StageResult:
        started = now()
        gate = ctx.extra.get("gate")
        only = getattr(gate, "checks", None)
        expect = Expect.from_request(ctx.job.request, only)
        try:
            results = await asyncio.to_thread(run_checks, ctx.path, expect)
        except NotAVideo as e:
            results = [CheckResult(name="decode", verdict="fail", value=0.0, detail=str(e))]
        failed = any(r.verdict == "fail" for r in results)
        return StageResult(
            stage=self.name,
            asset_id=ctx.asset.id,
            verdict="fail" if failed else "pass",
            checks=results,
            started_at=started,
            finished_at=now(),
        )

    def applies(self, job: Job) -> bool:
        return any(a.kind == "video" for a in job.assets)


__all__ = ["CHECKS", "THRESHOLDS", "ChecksStage", "Expect", "NotAVideo", "run_checks"]
