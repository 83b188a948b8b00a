"""Assemble a story's shot files into one film with PyAV: normalise, join, mix, caption.

Every shot is brought to the story's resolution, frame rate and pixel format and joined by a
cut or a crossfade; the film is H.264 in MP4 with one continuous AAC track (see
:mod:`vidgate.stories.audio`) and, optionally, captions (see :mod:`vidgate.stories.captions`).
When every shot is already uniform (same H.264 parameters as the film, cuts only, no trims, no
burned captions) the video packets are copied, not re-encoded, and the copy is verified by
decoding it; otherwise every frame is decoded, normalised and encoded once.

Durations are exact to the frame: a shot contributes ``round((duration - trims) * fps)``
frames and a crossfade of ``k`` frames overlaps the two shots by ``k`` frames, so the film has
``sum(shot frames) - sum(crossfade frames)`` frames (:func:`planned_frames`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np
from numpy.typing import NDArray

from vidgate.stories.audio import DECLICK_S, AacWriter, FilmAudio, Placement, mix_film
from vidgate.stories.captions import active, burn, check_captions, write_sidecar

Transition = Literal["cut", "crossfade"]
ShotAudio = Literal["native", "none", "soundtrack"]
PixFmt = Literal["yuv420p", "yuv422p", "yuv444p"]


class AssemblyError(ValueError):
    """A clip or spec that cannot be assembled; the message is one line naming what and why."""


@dataclass(frozen=True)
class ShotClip:
    """One shot's file and how it enters the film.

    ``transition_in`` is how this shot joins the previous one (ignored for the first shot);
    a crossfade overlaps the two shots by ``round(crossfade_s * fps)`` frames. ``audio``:
    ``native`` keeps the file's own sound (silence if it has none), ``none`` drops it,
    ``soundtrack`` drops it and lets the soundtrack play unducked under this shot.
    ``trim_start_s`` / ``trim_end_s`` cut that much from the shot's start / end (frame chaining
    trims the overlap this way). ``label`` names the shot in joins and errors.
    """

    path: Path
    transition_in: Transition = "cut"
    crossfade_s: float = 0.5
    audio: ShotAudio = "native"
    trim_start_s: float = 0.0
    trim_end_s: float = 0.0
    label: str = ""


@dataclass(frozen=True)
class Caption:
    """A caption shown from ``start_s`` to ``end_s`` of the film (seconds)."""

    start_s: float
    end_s: float
    text: str


@dataclass(frozen=True)
class VoiceOver:
    """A voice-over audio file placed at ``start_s`` of the film; it counts as dialogue."""

    path: Path
    start_s: float = 0.0
    gain_db: float = 0.0


@dataclass(frozen=True)
class AssemblySpec:
    """The film's format and sound.

    ``loudness_lufs``: integrated loudness target of the final mix (pyloudnorm, BS.1770).
    ``soundtrack``: an audio (or video-with-audio) file mixed under the shots at
    ``soundtrack_gain_db``, looped if shorter than the film, faded out at the end.
    ``duck_under_dialogue``: lower the soundtrack by ``duck_db`` wherever native shot audio or a
    voice-over is sounding. ``captions`` are written as a sidecar (``caption_format``, next to
    the film) and, with ``burn_captions``, drawn onto the frames. ``crf``/``preset`` are libx264's.
    """

    width: int
    height: int
    fps: int
    pix_fmt: PixFmt = "yuv420p"
    loudness_lufs: float = -14.0
    soundtrack: Path | None = None
    soundtrack_gain_db: float = -6.0
    duck_under_dialogue: bool = False
    duck_db: float = -12.0
    voice_over: tuple[VoiceOver, ...] = ()
    captions: tuple[Caption, ...] = ()
    caption_format: Literal["vtt", "srt"] = "vtt"
    burn_captions: bool = False
    crf: int = 20
    preset: str = "veryfast"
    audio_rate: int = 48_000


@dataclass(frozen=True)
class Join:
    """Where shot ``index`` enters the film (``index`` ≥ 1): a cut at ``at_s``, or a crossfade
    of ``frames`` frames starting at ``at_s``."""

    index: int
    at_s: float
    transition: Transition
    frames: int
    label: str = ""


@dataclass(frozen=True)
class AssemblyResult:
    """What was written: the film, its length and format, how it was made.

    ``has_audio``: whether any sound is in the film's track (the track itself is always
    there, silent where nothing sounds). ``loudness_lufs``: the mix's measured integrated
    loudness, None for silence. ``stream_copied``: the video packets were copied, not
    re-encoded. ``notes``: anything that did not go as planned (a copy abandoned, and why)."""

    path: Path
    duration_s: float
    frames: int
    width: int
    height: int
    fps: int
    stream_copied: bool
    has_audio: bool
    loudness_lufs: float | None
    joins: tuple[Join, ...] = ()
    shot_starts_s: tuple[float, ...] = ()
    captions_path: Path | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
)
#: a frame timestamp this close to a target time counts as on it (well under a frame at 240 fps)
_EPS = 1e-4


@dataclass(frozen=True)
class _Probe:
    """What demuxing (no decoding) tells about a clip's video."""

    codec: str
    width: int
    height: int
    pix_fmt: str
    fps: Fraction
    time_base: Fraction
    extradata: bytes | None
    frames: int
    first_pts: int
    start_s: float
    duration_s: float
    has_audio: bool


class _CopyFailed(Exception):
    """The stream copy could not be made or did not decode as planned; re-encode instead."""


def shot_frames(
    duration_s: float, fps: int, trim_start_s: float = 0.0, trim_end_s: float = 0.0
) -> int:
    """How many film frames a shot of ``duration_s`` contributes after trims (at least 1)."""
    if trim_start_s < 0 or trim_end_s < 0:
        raise AssemblyError(f"trims {trim_start_s:g}s/{trim_end_s:g}s must be >= 0")
    n = round((duration_s - trim_start_s - trim_end_s) * fps + 1e-9)
    if n < 1:
        raise AssemblyError(
            f"a {duration_s:.3f}s shot trimmed by {trim_start_s:g}s + {trim_end_s:g}s leaves "
            f"no frame at {fps} fps; trim less"
        )
    return n


def _crossfades(
    transitions: Sequence[Transition], crossfade_s: Sequence[float], fps: int
) -> list[int]:
    out = [0]
    for i in range(1, len(transitions)):
        if transitions[i] != "crossfade":
            out.append(0)
            continue
        k = round(crossfade_s[i] * fps)
        if k < 1:
            raise AssemblyError(
                f"shot {i}: crossfade of {crossfade_s[i]:g}s is under one frame at {fps} fps; "
                f"give at least {1 / fps:.3f}s or use a cut"
            )
        out.append(k)
    return out


def _check_overlaps(counts: Sequence[int], xf: Sequence[int], names: Sequence[str]) -> None:
    for i, n in enumerate(counts):
        k_in = xf[i]
        k_out = xf[i + 1] if i + 1 < len(xf) else 0
        if k_in + k_out > n:
            raise AssemblyError(
                f"{names[i]}: {n} frames cannot hold crossfades of {k_in} in and {k_out} out; "
                "shorten the crossfades or use cuts"
            )


def planned_frames(
    durations_s: Sequence[float],
    transitions: Sequence[Transition],
    crossfade_s: Sequence[float],
    fps: int,
) -> int:
    """The film's frame count for shots of these durations (``transitions[i]`` and
    ``crossfade_s[i]`` are shot i's way in; entry 0 is ignored). Use it to plan a duration."""
    if not (len(durations_s) == len(transitions) == len(crossfade_s)) or not durations_s:
        raise AssemblyError("durations, transitions and crossfades must be equal, non-empty lists")
    counts = [shot_frames(d, fps) for d in durations_s]
    xf = _crossfades(transitions, crossfade_s, fps)
    _check_overlaps(counts, xf, [f"shot {i}" for i in range(len(counts))])
    return sum(counts) - sum(xf)


def _name(i: int, clip: ShotClip) -> str:
    return f"shot {i}" + (f" ({clip.label})" if clip.label else "")


def _probe(i: int, clip: ShotClip) -> _Probe:
    if not clip.path.is_file():
        raise AssemblyError(f"{_name(i, clip)}: file {clip.path} does not exist")
    try:
        with av.open(str(clip.path)) as c:
            if not c.streams.video:
                raise AssemblyError(f"{_name(i, clip)}: {clip.path.name} has no video stream")
            s = c.streams.video[0]
            pts = [p.pts for p in c.demux(s) if p.pts is not None and p.size]
            rate = s.average_rate or s.guessed_rate
            if not pts or not rate or s.time_base is None:
                raise AssemblyError(f"{_name(i, clip)}: {clip.path.name} has no video frames")
            tb = Fraction(s.time_base)
            fps = Fraction(rate)
            first = min(pts)
            extradata = s.codec_context.extradata
            return _Probe(
                codec=s.codec_context.name,
                width=s.codec_context.width,
                height=s.codec_context.height,
                pix_fmt=s.codec_context.pix_fmt or "",
                fps=fps,
                time_base=tb,
                extradata=bytes(extradata) if extradata else None,
                frames=len(pts),
                first_pts=first,
                start_s=float(first * tb),
                duration_s=float((max(pts) - first) * tb + 1 / fps),
                has_audio=bool(c.streams.audio),
            )
    except av.FFmpegError as e:
        raise AssemblyError(
            f"{_name(i, clip)}: {clip.path.name} is not a video PyAV can read ({e})"
        ) from None


def _check_spec(spec: AssemblySpec) -> None:
    if spec.width % 2 or spec.height % 2 or spec.width < 16 or spec.height < 16:
        raise AssemblyError(
            f"film size {spec.width}x{spec.height}: width and height must be even and >= 16"
        )
    if not 1 <= spec.fps <= 240:
        raise AssemblyError(f"fps {spec.fps}: give a whole number from 1 to 240")
    if spec.pix_fmt not in ("yuv420p", "yuv422p", "yuv444p"):
        raise AssemblyError(f"pix_fmt {spec.pix_fmt!r}: use yuv420p, yuv422p or yuv444p")
    if not 0 <= spec.crf <= 51:
        raise AssemblyError(f"crf {spec.crf}: libx264 takes 0 to 51")
    if spec.preset not in _PRESETS:
        raise AssemblyError(f"preset {spec.preset!r}: use one of {', '.join(_PRESETS)}")
    if spec.audio_rate not in (44_100, 48_000):
        raise AssemblyError(f"audio_rate {spec.audio_rate}: use 48000 or 44100")
    if not -70.0 <= spec.loudness_lufs <= 0.0:
        raise AssemblyError(f"loudness {spec.loudness_lufs:g} LUFS: give -70 to 0 (e.g. -14)")
    if spec.soundtrack is not None and not spec.soundtrack.is_file():
        raise AssemblyError(f"soundtrack {spec.soundtrack} does not exist")
    for v in spec.voice_over:
        if not v.path.is_file():
            raise AssemblyError(f"voice-over {v.path} does not exist")
        if v.start_s < 0:
            raise AssemblyError(f"voice-over {v.path.name}: start {v.start_s:g}s must be >= 0")
    try:
        check_captions(spec.captions)
    except ValueError as e:
        raise AssemblyError(str(e)) from None


def _copyable(clips: Sequence[ShotClip], probes: Sequence[_Probe], spec: AssemblySpec) -> bool:
    """Whether the video packets can be copied: identical H.264 setup, in the film's format,
    cut together whole, with nothing drawn on them."""
    first = probes[0]
    step = 1 / (Fraction(spec.fps) * first.time_base)
    return (
        not (spec.burn_captions and spec.captions)
        and step.denominator == 1
        and all(c.transition_in == "cut" for c in clips[1:])
        and all(c.trim_start_s == 0 and c.trim_end_s == 0 for c in clips)
        and all(
            p.codec == "h264"
            and (p.width, p.height, p.pix_fmt) == (spec.width, spec.height, spec.pix_fmt)
            and p.fps == spec.fps
            and p.time_base == first.time_base
            and p.extradata == first.extradata
            for p in probes
        )
    )


def assemble(clips: Sequence[ShotClip], spec: AssemblySpec, out: Path) -> AssemblyResult:
    """Write the film to ``out`` (atomically) and return what was made.

    Raises :class:`AssemblyError` for a missing or undecodable clip, a crossfade longer than
    either shot, trims that leave nothing, or a spec the encoder cannot take."""
    if not clips:
        raise AssemblyError("no shots to assemble; give at least one clip")
    _check_spec(spec)
    probes = [_probe(i, c) for i, c in enumerate(clips)]
    names = [_name(i, c) for i, c in enumerate(clips)]
    counts = []
    for i, (c, p) in enumerate(zip(clips, probes, strict=True)):
        try:
            counts.append(shot_frames(p.duration_s, spec.fps, c.trim_start_s, c.trim_end_s))
        except AssemblyError as e:
            raise AssemblyError(f"{names[i]}: {e}") from None
    xf = _crossfades([c.transition_in for c in clips], [c.crossfade_s for c in clips], spec.fps)
    _check_overlaps(counts, xf, names)
    starts = [0]
    for i in range(1, len(clips)):
        starts.append(starts[-1] + counts[i - 1] - xf[i])
    total = starts[-1] + counts[-1]
    film_s = total / spec.fps
    if spec.captions:
        try:
            check_captions(spec.captions, film_s)
        except ValueError as e:
            raise AssemblyError(str(e)) from None

    film_audio = _mix(clips, probes, spec, counts, starts, xf, total)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    notes: list[str] = []
    copied = _copyable(clips, probes, spec)
    try:
        if copied:
            try:
                _write_copy(tmp, clips, probes, spec, film_audio, total)
            except _CopyFailed as e:
                notes.append(f"stream copy abandoned ({e}); re-encoded")
                copied = False
        if not copied:
            _write_encoded(tmp, clips, probes, spec, film_audio, counts, xf)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    sidecar = write_sidecar(spec.captions, out, spec.caption_format) if spec.captions else None
    return AssemblyResult(
        path=out,
        duration_s=film_s,
        frames=total,
        width=spec.width,
        height=spec.height,
        fps=spec.fps,
        stream_copied=copied,
        has_audio=film_audio.has_sound,
        loudness_lufs=film_audio.loudness_lufs,
        joins=tuple(
            Join(
                i,
                starts[i] / spec.fps,
                clips[i].transition_in if xf[i] else "cut",
                xf[i],
                clips[i].label,
            )
            for i in range(1, len(clips))
        ),
        shot_starts_s=tuple(s / spec.fps for s in starts),
        captions_path=sidecar,
        notes=tuple(notes),
    )


def _mix(
    clips: Sequence[ShotClip],
    probes: Sequence[_Probe],
    spec: AssemblySpec,
    counts: Sequence[int],
    starts: Sequence[int],
    xf: Sequence[int],
    total: int,
) -> FilmAudio:
    rate, fps = spec.audio_rate, spec.fps

    def at(frame: int) -> int:
        return round(frame * rate / fps)

    declick = round(DECLICK_S * rate)
    native: list[Placement] = []
    for i, (c, p) in enumerate(zip(clips, probes, strict=True)):
        if c.audio != "native" or not p.has_audio:
            continue
        k_out = xf[i + 1] if i + 1 < len(clips) else 0
        native.append(
            Placement(
                path=c.path,
                at=at(starts[i]),
                length=at(starts[i] + counts[i]) - at(starts[i]),
                source_start_s=p.start_s + c.trim_start_s,
                fade_in=at(xf[i]) if xf[i] else declick,
                fade_out=at(k_out) if k_out else declick,
            )
        )
    voice = []
    for v in spec.voice_over:
        length = at(total) - round(v.start_s * rate)
        if length > 0:
            voice.append(
                Placement(v.path, round(v.start_s * rate), length, 0.0, declick, declick, v.gain_db)
            )
    try:
        return mix_film(
            at(total),
            rate,
            native=native,
            voice_over=voice,
            soundtrack=spec.soundtrack,
            soundtrack_gain_db=spec.soundtrack_gain_db,
            duck=spec.duck_under_dialogue,
            duck_db=spec.duck_db,
            target_lufs=spec.loudness_lufs,
        )
    except (ValueError, av.FFmpegError) as e:
        raise AssemblyError(f"audio: {e}") from None


def _open_out(tmp: Path) -> av.container.OutputContainer:
    # faststart: the index goes first, so a browser plays the film while it downloads
    return av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"})


def _write_copy(
    tmp: Path,
    clips: Sequence[ShotClip],
    probes: Sequence[_Probe],
    spec: AssemblySpec,
    film_audio: FilmAudio,
    total: int,
) -> None:
    tb = probes[0].time_base
    step = int(1 / (Fraction(spec.fps) * tb))
    with av.open(str(clips[0].path)) as template, _open_out(tmp) as out:
        vs = out.add_stream_from_template(template.streams.video[0])
        aac = AacWriter(out, film_audio)
        offset = 0
        last_dts: int | None = None
        for clip, probe in zip(clips, probes, strict=True):
            with av.open(str(clip.path)) as src:
                for pkt in src.demux(src.streams.video[0]):
                    if pkt.dts is None or pkt.pts is None or not pkt.size:
                        continue
                    pkt.pts = pkt.pts - probe.first_pts + offset
                    pkt.dts = pkt.dts - probe.first_pts + offset
                    if last_dts is not None and pkt.dts <= last_dts:
                        raise _CopyFailed("decode timestamps would go backwards at a join")
                    last_dts = pkt.dts
                    aac.write_until(float(pkt.dts * tb))
                    pkt.stream = vs
                    out.mux(pkt)
            offset += probe.frames * step
        aac.finish()
    _verify(tmp, spec, total)


def _verify(path: Path, spec: AssemblySpec, total: int) -> None:
    """Decode the copied film: every frame must decode, in the film's size, and all be there."""
    try:
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            s.thread_type = "AUTO"
            n = 0
            for f in c.decode(s):
                if (f.width, f.height) != (spec.width, spec.height):
                    raise _CopyFailed(f"frame {n} decoded as {f.width}x{f.height}")
                n += 1
    except av.FFmpegError as e:
        raise _CopyFailed(f"the copy does not decode: {e}") from None
    if n != total:
        raise _CopyFailed(f"the copy decodes to {n} frames, not {total}")


def _planes(frame: av.VideoFrame) -> NDArray[np.uint8]:
    # yuv420p as one (h * 3/2, w) array: Y rows, then U and V each folded to width w
    return np.asarray(frame.to_ndarray(), dtype=np.uint8)


def _fit(frame: av.VideoFrame, spec: AssemblySpec) -> av.VideoFrame:
    """``frame`` as yuv420p at the film's size: scaled to fit, letterboxed if the aspect
    differs by more than a pixel (never stretched, never cropped)."""
    w, h = spec.width, spec.height
    if (frame.width, frame.height) == (w, h):
        return frame if frame.format.name == "yuv420p" else frame.reformat(format="yuv420p")
    scale = min(w / frame.width, h / frame.height)
    nw = min(w, max(2, round(frame.width * scale / 2) * 2))
    nh = min(h, max(2, round(frame.height * scale / 2) * 2))
    if w - nw <= 2 and h - nh <= 2:
        return frame.reformat(w, h, "yuv420p")
    small = _planes(frame.reformat(nw, nh, "yuv420p"))
    y0, x0 = (h - nh) // 4 * 2, (w - nw) // 4 * 2
    y = np.full((h, w), 16, np.uint8)
    u = np.full((h // 2, w // 2), 128, np.uint8)
    v = np.full((h // 2, w // 2), 128, np.uint8)
    y[y0 : y0 + nh, x0 : x0 + nw] = small[:nh]
    chroma = small[nh:].reshape(2, nh // 2, nw // 2)
    u[y0 // 2 : (y0 + nh) // 2, x0 // 2 : (x0 + nw) // 2] = chroma[0]
    v[y0 // 2 : (y0 + nh) // 2, x0 // 2 : (x0 + nw) // 2] = chroma[1]
    planes = np.concatenate([y, u.reshape(-1, w), v.reshape(-1, w)])
    return av.VideoFrame.from_ndarray(planes, format="yuv420p")


def _frames(
    clip: ShotClip, probe: _Probe, count: int, spec: AssemblySpec
) -> Iterator[av.VideoFrame]:
    """Exactly ``count`` frames of ``clip`` at the film's rate and size: for film frame j,
    the source frame showing at ``trim_start + j / fps`` (dropped or repeated as rates differ)."""
    try:
        yield from _timed_frames(clip, probe, count, spec)
    except av.FFmpegError as e:
        raise AssemblyError(f"{clip.path.name} does not decode ({e})") from None


def _timed_frames(
    clip: ShotClip, probe: _Probe, count: int, spec: AssemblySpec
) -> Iterator[av.VideoFrame]:
    with av.open(str(clip.path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        j = 0
        prev: av.VideoFrame | None = None
        fitted: av.VideoFrame | None = None
        for f in c.decode(s):
            if f.time is None:
                continue
            t = f.time - probe.start_s
            while prev is not None and j < count and clip.trim_start_s + j / spec.fps < t - _EPS:
                fitted = fitted or _fit(prev, spec)
                yield fitted
                j += 1
            if j >= count:
                return
            prev, fitted = f, None
        while prev is not None and j < count:  # the last frame holds to the planned length
            fitted = fitted or _fit(prev, spec)
            yield fitted
            j += 1


def _blend(a: NDArray[np.uint8], b: NDArray[np.uint8], alpha: float) -> av.VideoFrame:
    w = round(alpha * 256)
    mixed = (a.astype(np.uint16) * (256 - w) + b.astype(np.uint16) * w + 128) >> 8
    return av.VideoFrame.from_ndarray(mixed.astype(np.uint8), format="yuv420p")


def _write_encoded(
    tmp: Path,
    clips: Sequence[ShotClip],
    probes: Sequence[_Probe],
    spec: AssemblySpec,
    film_audio: FilmAudio,
    counts: Sequence[int],
    xf: Sequence[int],
) -> None:
    fps = spec.fps
    with _open_out(tmp) as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = spec.width, spec.height, spec.pix_fmt
        vs.options = {"crf": str(spec.crf), "preset": spec.preset}
        aac = AacWriter(out, film_audio)
        burn_in = spec.captions if spec.burn_captions else ()
        idx = 0

        def emit(frame: av.VideoFrame) -> None:
            nonlocal idx
            text = active(burn_in, idx / fps) if burn_in else None
            if text is not None:
                frame = burn(frame, text)
            if frame.format.name != spec.pix_fmt:
                frame = frame.reformat(format=spec.pix_fmt)
            frame.pts = idx
            frame.time_base = Fraction(1, fps)
            aac.write_until((idx + 1) / fps)
            for pkt in vs.encode(frame):
                out.mux(pkt)
            idx += 1

        tail: list[NDArray[np.uint8]] = []  # the outgoing shot's last frames, to crossfade
        for i, (clip, probe) in enumerate(zip(clips, probes, strict=True)):
            k_in = len(tail)
            k_out = xf[i + 1] if i + 1 < len(clips) else 0
            held: list[NDArray[np.uint8]] = []
            made = 0
            for j, frame in enumerate(_frames(clip, probe, counts[i], spec)):
                if j < k_in:
                    frame = _blend(tail[j], _planes(frame), (j + 1) / (k_in + 1))
                if j >= counts[i] - k_out:
                    held.append(_planes(frame))
                else:
                    emit(frame)
                made += 1
            if made < counts[i]:  # frames without timestamps: the film would come up short
                raise AssemblyError(
                    f"{_name(i, clip)}: {clip.path.name} decoded to {made} of {counts[i]} "
                    "timed frames; re-encode it with timestamps"
                )
            tail = held
        for pkt in vs.encode(None):
            out.mux(pkt)
        aac.finish()
