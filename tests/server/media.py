"""Real media for the server tests: a PNG made with PyAV, and MP4 inspection."""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np


def png_bytes(width: int = 64, height: int = 36) -> bytes:
    """A real PNG image (a red frame with a white bar), encoded by PyAV."""
    cc = av.CodecContext.create("png", "w")
    cc.width, cc.height, cc.pix_fmt = width, height, "rgb24"
    arr = np.zeros((height, width, 3), dtype=np.uint8)
    arr[..., 0] = 200
    arr[height // 3 : height // 2, :, :] = 255
    frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
    return b"".join(bytes(p) for p in [*cc.encode(frame), *cc.encode(None)])


@dataclass(frozen=True)
class Mp4Info:
    width: int
    height: int
    frames: int
    duration_s: float
    has_audio: bool


def decode_mp4(data: bytes) -> Mp4Info:
    """Decode every video frame of an MP4 held in memory."""
    with av.open(io.BytesIO(data), mode="r", format="mp4") as c:
        v = c.streams.video[0]
        has_audio = bool(c.streams.audio)
        frames = 0
        for _ in c.decode(video=0):
            frames += 1
        fps = float(v.average_rate or 0)
        return Mp4Info(
            width=v.codec_context.width,
            height=v.codec_context.height,
            frames=frames,
            duration_s=frames / fps if fps else 0.0,
            has_audio=has_audio,
        )
