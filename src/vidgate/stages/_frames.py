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


def sample_frames(
    source: Path | IO[bytes],
    times_s: list[float] | None = None,
    *,
    count: int = 8,
    short_side: int = 224,
) -> list[Frame]:
    """The frames nearest to ``times_s`` (default: ``count`` evenly spaced), RGB, scaled so
    the short side is at most ``short_side``."""
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
        i = 0
        previous: av.VideoFrame | None = None
        try:
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else 0.0
                # take the frame nearest each wanted time: the one before it if closer
                while i < len(wanted) and t >= wanted[i]:
                    pick = frame
                    if (
                        previous is not None
                        and previous.time is not None
                        and wanted[i] - float(previous.time) < t - wanted[i]
                    ):
                        pick = previous
                    out.append(_to_frame(pick, wanted[i], short_side))
                    i += 1
                if i >= len(wanted):
                    break
                previous = frame
        except av.error.InvalidDataError as e:
            raise FrameError(
                f"the video does not decode ({e}); the file may be truncated"
            ) from None
        if i < len(wanted) and previous is not None:
            # times past the last frame (a clip shorter than asked): its last frame
            out.extend(_to_frame(previous, t, short_side) for t in wanted[i:])
        if not out:
            raise FrameError("the video has no decodable frames; the file may be truncated")
        return out


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
