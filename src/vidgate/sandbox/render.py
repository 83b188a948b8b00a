"""Render real, playable H.264 MP4s for the sandbox with PyAV.

The clip has the requested size, frame rate and duration, moving content (diagonal bands
drifting and a bright square crossing the frame, so frame-differencing quality checks see
motion), and an AAC tone when audio is asked for. Frames are built directly as YUV 4:2:0
planes with numpy, which avoids a colour conversion per frame and keeps 4K renders tolerable
on two cores.
"""

from __future__ import annotations

import os
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

AUDIO_RATE = 48_000
_AUDIO_FRAME = 1024
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def render_mp4(
    path: Path,
    *,
    width: int,
    height: int,
    fps: int,
    duration_s: float,
    audio: bool,
    variant: int = 0,
) -> Path:
    """Write an MP4 to ``path`` (atomically: a reader never sees a half-written file)."""
    if width % 2 or height % 2 or width < 16 or height < 16:
        raise ValueError(f"frame size {width}x{height} must be even and at least 16x16")
    n_frames = max(1, round(duration_s * fps))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    container = av.open(str(tmp), mode="w", format="mp4")
    try:
        vs = container.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": "30"}
        aus = container.add_stream("aac", rate=AUDIO_RATE) if audio else None

        yy, xx = np.mgrid[0:height, 0:width]
        ramp = ((xx + yy) * (256.0 / (width + height)) * 3).astype(np.int32)
        cw, ch = width // 2, height // 2
        box = max(8, min(width, height) // 6)
        hue = variant % 4
        audio_pos = 0
        for i in range(n_frames):
            y = ((ramp + i * 6) % 200 + 28).astype(np.uint8)
            x0 = int((width - box) * (i / max(1, n_frames - 1)))
            y0 = (height - box) // 2
            y[y0 : y0 + box, x0 : x0 + box] = 235
            u = np.full((ch, cw), 96 + 32 * hue + (i % 32), np.uint8)
            v = np.full((ch, cw), 160 - 24 * hue, np.uint8)
            planes = np.concatenate([y, u.reshape(-1, width), v.reshape(-1, width)])
            frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in vs.encode(frame):
                container.mux(packet)
            if aus is not None:
                until = round((i + 1) / fps * AUDIO_RATE)
                while audio_pos + _AUDIO_FRAME <= until:
                    for packet in aus.encode(_tone(audio_pos, variant)):
                        container.mux(packet)
                    audio_pos += _AUDIO_FRAME
        for packet in vs.encode():
            container.mux(packet)
        if aus is not None:
            for packet in aus.encode():
                container.mux(packet)
    except BaseException:
        container.close()
        tmp.unlink(missing_ok=True)
        raise
    container.close()
    os.replace(tmp, path)
    return path


def _tone(start: int, variant: int) -> av.AudioFrame:
    t = (np.arange(start, start + _AUDIO_FRAME) / AUDIO_RATE).astype(np.float32)
    freq = 330.0 + 110.0 * (variant % 4) + 40.0 * np.sin(2 * np.pi * 0.5 * t)
    samples = (0.2 * np.sin(2 * np.pi * freq * t)).astype(np.float32).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
    frame.sample_rate = AUDIO_RATE
    frame.pts = start
    frame.time_base = Fraction(1, AUDIO_RATE)
    return frame


def cached_render(
    cache_dir: Path,
    *,
    width: int,
    height: int,
    fps: int,
    duration_s: float,
    audio: bool,
    variant: int = 0,
) -> Path:
    """Render once per distinct parameter set; concurrent callers wait for one render."""
    key = f"{width}x{height}_{fps}fps_{duration_s:g}s_{'a' if audio else 'na'}_v{variant % 4}"
    path = cache_dir / f"{key}.mp4"
    if path.exists():
        return path
    with _locks_guard:
        lock = _locks.setdefault(key, threading.Lock())
    with lock:
        if not path.exists():
            cache_dir.mkdir(parents=True, exist_ok=True)
            render_mp4(
                path,
                width=width,
                height=height,
                fps=fps,
                duration_s=duration_s,
                audio=audio,
                variant=variant,
            )
    return path
