"""Read a video cheaply for the technical checks: an index of every packet, the audio's
loudness, and a sample of small grey frames.

Cost is the point (the checks must cost a small fraction of one full decode):

* **Index pass** — every packet is demuxed (no decoding): timestamps, keyframes, sizes, and
  where the stream stops. Demuxing a 30 s 1080p clip takes milliseconds. Audio packets of the
  first :data:`AUDIO_WINDOW_S` of every second are decoded in the same pass for loudness.
* **Sample pass** — a video frame can only be decoded from the keyframe before it, so samples
  sit on keyframes (plus the frame after each, so consecutive-frame measures such as flicker
  have pairs). Where keyframes are further apart than :data:`MAX_KEY_GAP_S`, extra samples
  every :data:`GAP_SPACING_S` fill the gap — those cost decoding the gap up to them, which is
  why a long-GOP file costs more to check than a web-delivery encode with 1–2 s GOPs. Packets
  no sample needs are demuxed and dropped without being decoded; nothing is seeked; on the
  way to a sample, frames no other frame refers to (most B-frames) are skipped by the decoder.
* **Small grey frames** — the luma plane is read in place and strided down to about
  :data:`SAMPLE_WIDTH` pixels wide (no colour conversion, no scaler), unless the pixel format
  is not 8-bit planar, where PyAV's scaler does it.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
from numpy.typing import NDArray

#: samples every this many seconds inside a longer stretch without keyframes
GAP_SPACING_S = 0.5
#: keyframes closer than this are sampled on their own (no extra samples between them)
MAX_KEY_GAP_S = 1.0
#: seconds of audio decoded out of every second (loudness is measured on these windows)
AUDIO_WINDOW_S = 0.25
#: the width sampled frames are reduced to (enough to see black, frozen and cut frames)
SAMPLE_WIDTH = 160
#: pixel formats whose first plane is 8-bit luma that can be read in place
_LUMA_FIRST = frozenset(
    {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "gray"}
)


class NotAVideo(ValueError):
    """The file cannot be opened as a video (missing, not media, or no video stream)."""


@dataclass
class Sample:
    t: float  # presentation time (s)
    gray: NDArray[np.uint8]
    mean: float


@dataclass
class MediaRead:
    width: int
    height: int
    fps: float | None
    #: what the container declares (s), and the time the last readable packet ends at
    declared_s: float | None
    readable_s: float
    declared_frames: int
    packets: int
    keyframes: int
    demux_error: str | None
    decode_errors: int
    has_audio: bool
    audio_rms_dbfs: float | None
    samples: list[Sample] = field(default_factory=list)
    decoded_frames: int = 0


@dataclass(frozen=True)
class _Packet:
    pts: int | None
    key: bool
    end_s: float


def read(path: Path, *, sample_width: int = SAMPLE_WIDTH) -> MediaRead:
    """Index ``path``, measure its audio and sample its frames; :class:`NotAVideo` when it
    cannot be opened as a video at all."""
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as e:
        raise NotAVideo(f"{path} is not a readable video ({_why(e)})") from None
    with container:
        if not container.streams.video:
            raise NotAVideo(f"{path} has no video stream")
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        fps = float(video.average_rate) if video.average_rate else None
        tb = float(video.time_base) if video.time_base else 1 / 90000
        declared = _declared_s(container, video)
        packets, demux_error, rms = _index(container, video, audio, tb, fps)
        out = MediaRead(
            width=video.codec_context.width,
            height=video.codec_context.height,
            fps=fps,
            declared_s=declared,
            readable_s=max((p.end_s for p in packets), default=0.0),
            declared_frames=int(video.frames or 0),
            packets=len(packets),
            keyframes=sum(p.key for p in packets),
            demux_error=demux_error,
            decode_errors=0,
            has_audio=audio is not None,
            audio_rms_dbfs=rms,
        )
    if packets:
        _sample(path, packets, out, sample_width)
    return out


def _why(e: BaseException) -> str:
    return str(e).splitlines()[0][:160] if str(e) else type(e).__name__


def _declared_s(container: av.container.InputContainer, video: av.VideoStream) -> float | None:
    if video.duration and video.time_base:
        return float(video.duration * video.time_base)
    if container.duration:
        return container.duration / 1_000_000
    return None


def _index(
    container: av.container.InputContainer,
    video: av.VideoStream,
    audio: av.AudioStream | None,
    tb: float,
    fps: float | None,
) -> tuple[list[_Packet], str | None, float | None]:
    packets: list[_Packet] = []
    frame_s = 1 / fps if fps else 0.0
    start = (
        float(video.start_time * video.time_base) if video.start_time and video.time_base else 0.0
    )
    sq, n = 0.0, 0
    error: str | None = None
    streams = [video] if audio is None else [video, audio]
    try:
        for pkt in container.demux(streams):
            if pkt.size == 0:
                continue
            if pkt.stream is video:
                dur = float(pkt.duration) * tb if pkt.duration else frame_s
                pts_s = (pkt.pts * tb - start) if pkt.pts is not None else len(packets) * frame_s
                packets.append(_Packet(pkt.pts, bool(pkt.is_keyframe), pts_s + dur))
            elif audio is not None:
                # loudness from a window of each second (a silent track is silent throughout;
                # a quarter of the audio decoded is a quarter of its cost)
                t = (
                    float(pkt.pts * audio.time_base)
                    if pkt.pts is not None and audio.time_base
                    else 0.0
                )
                if t % 1.0 >= AUDIO_WINDOW_S:
                    continue
                try:
                    for frame in pkt.decode():
                        if isinstance(frame, av.AudioFrame):
                            fsq, fn = _energy(frame)
                            sq, n = sq + fsq, n + fn
                except av.FFmpegError:
                    pass  # a damaged audio packet lowers nothing; the video index matters
    except av.FFmpegError as e:
        error = _why(e)
    rms = None
    if audio is not None:
        rms = -120.0 if n == 0 or sq == 0 else max(-120.0, 10 * math.log10(sq / n))
    return packets, error, rms


#: sample formats read straight from the frame's planes: numpy type, full scale
_AUDIO_FORMATS: dict[str, tuple[type[np.generic], float]] = {
    "flt": (np.float32, 1.0),
    "fltp": (np.float32, 1.0),
    "dbl": (np.float64, 1.0),
    "dblp": (np.float64, 1.0),
    "s16": (np.int16, 32768.0),
    "s16p": (np.int16, 32768.0),
    "s32": (np.int32, 2147483648.0),
    "s32p": (np.int32, 2147483648.0),
}


def _energy(frame: av.AudioFrame) -> tuple[float, int]:
    """(sum of squared samples at full scale 1.0, sample count) of one audio frame, read in
    place from its planes (no per-frame array conversion: AAC gives ~47 frames a second)."""
    fmt = _AUDIO_FORMATS.get(frame.format.name)
    if fmt is None:
        raw = np.asarray(frame.to_ndarray())
        a = raw.astype(np.float64)
        if raw.dtype.kind in "iu":
            a /= float(2 ** (8 * raw.dtype.itemsize - 1))
        return float(np.square(a).sum()), int(a.size)
    dtype, scale = fmt
    per_plane = frame.samples * (1 if frame.format.is_planar else len(frame.layout.channels))
    sq, n = 0.0, 0
    for plane in frame.planes:
        x = np.frombuffer(memoryview(plane), dtype, count=per_plane).astype(np.float64)
        sq += float(np.dot(x, x)) / (scale * scale)
        n += per_plane
    return sq, n


def plan(packets: list[_Packet]) -> tuple[set[int], set[int]]:
    """(packet indices to decode, packet indices whose frames are samples), in decode order.

    Each keyframe and the packet after it are samples; in a stretch longer than
    :data:`MAX_KEY_GAP_S` without a keyframe, one more sample pair every
    :data:`GAP_SPACING_S`. A sample needs every packet from its keyframe up to it decoded."""
    keys = [i for i, p in enumerate(packets) if p.key] or [0]
    wanted: set[int] = set()
    bounds = [*keys, len(packets)]
    for k, nxt in itertools.pairwise(bounds):
        wanted.update((k, k + 1))
        if packets[nxt - 1].end_s - packets[k].end_s <= MAX_KEY_GAP_S:
            continue
        next_t = packets[k].end_s + GAP_SPACING_S
        for i in range(k + 2, nxt):
            if packets[i].end_s >= next_t:
                wanted.update((i, i + 1))
                next_t += GAP_SPACING_S
    wanted = {i for i in wanted if i < len(packets)}
    decode: set[int] = set()
    last_key = 0
    key_of = []
    for i, p in enumerate(packets):
        if p.key:
            last_key = i
        key_of.append(last_key)
    covered = -1
    for i in sorted(wanted):
        lo = max(key_of[i], covered + 1)
        decode.update(range(lo, i + 1))
        covered = max(covered, i)
    return decode, wanted


def _sample(path: Path, packets: list[_Packet], out: MediaRead, width: int) -> None:
    decode, wanted = plan(packets)
    want_pts = {packets[i].pts for i in wanted}
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        tb = float(video.time_base) if video.time_base else 1 / 90000
        start = float(video.start_time * tb) if video.start_time else 0.0
        i = -1
        try:
            for pkt in container.demux(video):
                if pkt.size == 0:
                    continue
                i += 1
                if i not in decode:
                    continue
                # Frames decoded only to reach a sample need not be decoded when nothing
                # refers to them (B-frames of most encodes: about half of a long GOP).
                video.codec_context.skip_frame = "DEFAULT" if i in wanted else "NONREF"
                _decode_into(pkt, out, want_pts, tb, start, width)
            _decode_into(None, out, want_pts, tb, start, width, codec=video.codec_context)
        except av.FFmpegError:
            out.decode_errors += 1
    out.samples.sort(key=lambda s: s.t)


def _decode_into(
    pkt: Any,
    out: MediaRead,
    want_pts: set[int | None],
    tb: float,
    start: float,
    width: int,
    codec: av.VideoCodecContext | None = None,
) -> None:
    try:
        frames = pkt.decode() if pkt is not None else (codec.decode(None) if codec else [])
        for frame in frames:
            out.decoded_frames += 1
            if frame.pts in want_pts and isinstance(frame, av.VideoFrame):
                gray = small_gray(frame, width)
                t = frame.pts * tb - start if frame.pts is not None else 0.0
                out.samples.append(Sample(t, gray, float(gray.mean())))
    except av.FFmpegError:
        out.decode_errors += 1


def small_gray(frame: av.VideoFrame, width: int = SAMPLE_WIDTH) -> NDArray[np.uint8]:
    """The frame's luma, about ``width`` pixels wide: read in place and strided where the
    format allows (no conversion), else through PyAV's scaler."""
    if frame.format.name in _LUMA_FIRST:
        plane = frame.planes[0]
        y = np.frombuffer(memoryview(plane), np.uint8).reshape(-1, plane.line_size)
        step = max(1, frame.width // width)
        return np.ascontiguousarray(y[: frame.height : step, : frame.width : step])
    h = max(2, round(frame.height * width / max(1, frame.width)))
    small = frame.reformat(width=width, height=h, format="gray").to_ndarray()
    return np.asarray(small, dtype=np.uint8)
