"""Frames sampled from a stored video at reduced size, for the semantic checks and the
dashboard's strip of flagged frames.

Decoding stops at the last wanted timestamp, and frames are scaled down by the decoder's own
scaler, so a CLIP check on a 30 s 1080p clip decodes only as far as it must at a small size.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import av
import numpy as np
import numpy.typing as npt


class FrameError(ValueError):
    """The file is not a decodable video; the message says what was wrong."""


@dataclass(frozen=True)
class Frame:
    t: float  # seconds from the start
    rgb: npt.NDArray[np.uint8]  # height × width × 3


def evenly_spaced(duration_s: float, count: int) -> list[float]:
    """``count`` timestamps at the centres of equal slices of the clip (never the very first
    or last instant, where fades and black lead-ins sit)."""
    if count < 1 or duration_s <= 0:
        return []
    step = duration_s / count
    return [round(step * (i + 0.5), 3) for i in range(count)]


def _scaled(width: int, height: int, short_side: int) -> tuple[int, int]:
    if min(width, height) <= short_side:
        return width, height
    f = short_side / min(width, height)
    # even sides: the scaler and JPEG encoders prefer them
    return max(2, round(width * f / 2) * 2), max(2, round(height * f / 2) * 2)


#: wanted times further apart than this are reached by seeking to the keyframe before each
#: (decoding the gap would cost more than one GOP); closer ones are decoded through
SEEK_GAP_S = 2.0


def sample_frames(
    source: Path | IO[bytes],
    times_s: list[float] | None = None,
    *,
    count: int = 8,
    short_side: int = 224,
    seek_gap_s: float | None = SEEK_GAP_S,
) -> list[Frame]:
    """The frames nearest to ``times_s`` (default: ``count`` evenly spaced), RGB, scaled so
    the short side is at most ``short_side``. ``seek_gap_s=None`` decodes straight through
    (no seeking) up to the last wanted time."""
    try:
        container = av.open(str(source) if isinstance(source, Path) else source, mode="r")
    except (av.error.InvalidDataError, av.error.FileNotFoundError, OSError) as e:
        raise FrameError(f"cannot open the video ({e}); give an MP4/MOV/WebM file") from None
    with container:
        if not container.streams.video:
            raise FrameError("the file has no video stream; give a video file")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        duration = _duration(container, stream)
        wanted = sorted(times_s) if times_s is not None else evenly_spaced(duration, count)
        if not wanted:
            return []
        out: list[Frame] = []
        last: av.VideoFrame | None = None
        try:
            for k, run in enumerate(_runs(wanted, seek_gap_s)):
                if k > 0 and stream.time_base is not None:
                    # to the keyframe at or before the run's first time (a time past the end:
                    # a second before the end, so the last frames are decoded)
                    to = min(run[0], max(0.0, duration - 1.0)) if duration else run[0]
                    container.seek(int(to / stream.time_base), stream=stream, backward=True)
                got, seen = _decode_run(container, stream, run, short_side)
                last = seen or last
                out.extend(got)
                if len(got) < len(run):
                    # times past the last frame (a clip shorter than asked): its last frame,
                    # for the rest of this run and every later one
                    if last is not None:
                        rest = wanted[len(out) :]
                        out.extend(_to_frame(last, t, short_side) for t in rest)
                    break
        except av.error.InvalidDataError as e:
            raise FrameError(
                f"the video does not decode ({e}); the file may be truncated"
            ) from None
        if not out:
            raise FrameError("the video has no decodable frames; the file may be truncated")
        return out


def _runs(wanted: list[float], gap: float | None) -> list[list[float]]:
    """Sorted times split where consecutive ones are more than ``gap`` apart."""
    runs = [[wanted[0]]]
    for t in wanted[1:]:
        if gap is not None and t - runs[-1][-1] > gap:
            runs.append([t])
        else:
            runs[-1].append(t)
    return runs


def _decode_run(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    run: list[float],
    short_side: int,
) -> tuple[list[Frame], av.VideoFrame | None]:
    """Decode forward from where the container is, taking the frame nearest each time of
    ``run``; returns the frames found and the last frame decoded."""
    out: list[Frame] = []
    i = 0
    previous: av.VideoFrame | None = None
    for frame in container.decode(stream):
        t = float(frame.time) if frame.time is not None else 0.0
        # take the frame nearest each wanted time: the one before it if closer
        while i < len(run) and t >= run[i]:
            pick = frame
            if (
                previous is not None
                and previous.time is not None
                and run[i] - float(previous.time) < t - run[i]
            ):
                pick = previous
            out.append(_to_frame(pick, run[i], short_side))
            i += 1
        previous = frame
        if i >= len(run):
            break
    return out, previous


def _to_frame(frame: av.VideoFrame, t: float, short_side: int) -> Frame:
    w, h = _scaled(frame.width, frame.height, short_side)
    rgb: npt.NDArray[np.uint8] = np.asarray(
        frame.to_ndarray(format="rgb24", width=w, height=h), dtype=np.uint8
    )
    return Frame(t=t, rgb=rgb)


def _duration(container: av.container.InputContainer, stream: av.VideoStream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return 0.0


def jpeg(frame: Frame, quality: int = 80) -> bytes:
    """One frame as a JPEG (the dashboard's thumbnails)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame.rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
