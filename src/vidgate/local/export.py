"""Frames (and audio, when the model made it) → MP4 bytes: H.264 video, AAC audio, by PyAV."""

from __future__ import annotations

import io
from fractions import Fraction
from typing import Any

import av
import numpy as np


def to_uint8(frames: Any) -> np.ndarray:
    """(F, H, W, 3) floats in [0, 1] (diffusers' ``output_type="np"``) → uint8."""
    arr = np.asarray(frames)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return arr


def encode_mp4(
    frames: Any, fps: float, audio: Any | None = None, sample_rate: int | None = None
) -> bytes:
    """Encode in memory. ``audio`` is a (channels, samples) float waveform in [-1, 1]."""
    video = to_uint8(frames)
    n, height, width, _ = video.shape
    buf = io.BytesIO()
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(buf, mode="w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=rate)
        vs.width, vs.height = width, height
        # yuv420p is what every player decodes; it needs even sides (all families take them).
        vs.pix_fmt = "yuv420p"
        vs.options = {"crf": "18", "preset": "veryfast"}
        astream = None
        if audio is not None and sample_rate:
            wave = np.ascontiguousarray(np.asarray(audio, dtype=np.float32))
            if wave.ndim == 1:
                wave = wave[None, :]
            layout = "mono" if wave.shape[0] == 1 else "stereo"
            astream = out.add_stream("aac", rate=int(sample_rate), layout=layout)
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(video[i], format="rgb24")
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        if astream is not None:
            wave = np.clip(wave[:2], -1.0, 1.0)
            aframe = av.AudioFrame.from_ndarray(wave, format="fltp", layout=astream.layout.name)
            aframe.sample_rate = int(sample_rate or 0)
            aframe.pts = 0
            for packet in astream.encode(aframe):
                out.mux(packet)
            for packet in astream.encode():
                out.mux(packet)
    return buf.getvalue()
