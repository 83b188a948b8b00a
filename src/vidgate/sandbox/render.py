"""Render real, playable H.264 MP4s for the sandbox with PyAV.

The clip has the requested size, frame rate and duration, moving content (diagonal bands
drifting and a bright square crossing the frame, so frame-differencing quality checks see
motion), and an AAC tone when audio is asked for. Frames are built directly as YUV 4:2:0
planes with numpy, which avoids a colour conversion per frame and keeps 4K renders tolerable
on two cores. Keyframes come every ``gop_s`` seconds (1 s by default, as web-delivery encodes
do), so quality checks can sample a clip without decoding all of it.

A ``defect`` renders the failures generators really deliver, for the quality checks to catch
through the whole system: black (from 30% on), frozen (still from a fifth of the way in),
silent (an all-zero audio track), truncated (the file cut at 60% of its bytes, header
intact), hard_cut (a different shot from halfway), flicker (every other frame darker).
``short`` and ``off_prompt`` render a normal picture (the sandbox shortens the duration;
the VLM judge emulator reads the tag). Every defective clip names its defect in the
container's ``comment`` tag (``vidgate-sandbox-defect=<kind>``) so emulators that see only
the file (the judge) can react to it.
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
#: the defects :func:`render_mp4` can draw into a clip
DEFECTS = ("black", "frozen", "short", "silent", "truncated", "hard_cut", "flicker", "off_prompt")
DEFECT_TAG = "vidgate-sandbox-defect="


def render_mp4(
    path: Path,
    *,
    width: int,
    height: int,
    fps: int,
    duration_s: float,
    audio: bool,
    variant: int = 0,
    defect: str | None = None,
    gop_s: float = 1.0,
    preset: str = "ultrafast",
) -> Path:
    """Write an MP4 to ``path`` (atomically: a reader never sees a half-written file).

    ``gop_s`` and ``preset`` (x264's) let benchmarks render files shaped like other encoders'
    (``veryfast`` and up use B-frames)."""
    if width % 2 or height % 2 or width < 16 or height < 16:
        raise ValueError(f"frame size {width}x{height} must be even and at least 16x16")
    if defect is not None and defect not in DEFECTS:
        raise ValueError(f"unknown defect {defect!r}; known: {', '.join(DEFECTS)}")
    n_frames = max(1, round(duration_s * fps))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    # A truncated download keeps its header (moov first, as streaming encodes write it) and
    # loses the end of its data: it opens, then stops early.
    opts = {"movflags": "faststart"} if defect == "truncated" else {}
    container = av.open(str(tmp), mode="w", format="mp4", options=opts)
    if defect is not None:
        container.metadata["comment"] = DEFECT_TAG + defect
    try:
        vs = container.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        gop = max(1, round(gop_s * fps))
        vs.options = {"preset": preset, "crf": "30", "g": str(gop)}
        aus = container.add_stream("aac", rate=AUDIO_RATE) if audio else None

        yy, xx = np.mgrid[0:height, 0:width]
        ramp = ((xx + yy) * (256.0 / (width + height)) * 3).astype(np.int32)
        box = max(8, min(width, height) // 6)
        hue = variant % 4
        audio_pos = 0
        for i in range(n_frames):
            y, u, v = _picture(i, n_frames, ramp, box, hue, (width, height), defect)
            planes = np.concatenate([y, u.reshape(-1, width), v.reshape(-1, width)])
            frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in vs.encode(frame):
                container.mux(packet)
            if aus is not None:
                until = round((i + 1) / fps * AUDIO_RATE)
                while audio_pos + _AUDIO_FRAME <= until:
                    tone = _tone(audio_pos, variant, 0.0 if defect == "silent" else 0.2)
                    for packet in aus.encode(tone):
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
    if defect == "truncated":
        with tmp.open("r+b") as f:
            f.truncate(int(tmp.stat().st_size * 0.6))
    os.replace(tmp, path)
    return path


Planes = tuple[np.ndarray, np.ndarray, np.ndarray]


def _picture(
    i: int,
    n_frames: int,
    ramp: np.ndarray,
    box: int,
    hue: int,
    size: tuple[int, int],
    defect: str | None,
) -> Planes:
    """Frame ``i``'s Y, U and V planes, with the defect (if any) drawn in."""
    width, height = size
    ch, cw = height // 2, width // 2
    if defect == "frozen":
        # still from a fifth of the way in (a generator that stopped moving)
        i = min(i, max(1, n_frames // 5))
    if defect == "black" and i >= n_frames * 0.3:
        return (
            np.full((height, width), 16, np.uint8),
            np.full((ch, cw), 128, np.uint8),
            np.full((ch, cw), 128, np.uint8),
        )
    if defect == "hard_cut" and i >= n_frames // 2:
        # a second shot: dark, low-contrast, other colours — a different luma histogram
        y = ((ramp // 3 + i * 2) % 40 + 40).astype(np.uint8)
        return y, np.full((ch, cw), 150, np.uint8), np.full((ch, cw), 100, np.uint8)
    y = ((ramp + i * 6) % 200 + 28).astype(np.uint8)
    x0 = int((width - box) * (i / max(1, n_frames - 1)))
    y0 = (height - box) // 2
    y[y0 : y0 + box, x0 : x0 + box] = 235
    if defect == "flicker" and i % 2:
        y = (y.astype(np.uint16) * 5 // 9).astype(np.uint8)
    u = np.full((ch, cw), 96 + 32 * hue + (i % 32), np.uint8)
    v = np.full((ch, cw), 160 - 24 * hue, np.uint8)
    return y, u, v


def _tone(start: int, variant: int, amplitude: float = 0.2) -> av.AudioFrame:
    t = (np.arange(start, start + _AUDIO_FRAME) / AUDIO_RATE).astype(np.float32)
    freq = 330.0 + 110.0 * (variant % 4) + 40.0 * np.sin(2 * np.pi * 0.5 * t)
    samples = (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32).reshape(1, -1)
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
    defect: str | None = None,
) -> Path:
    """Render once per distinct parameter set; concurrent callers wait for one render."""
    key = f"{width}x{height}_{fps}fps_{duration_s:g}s_{'a' if audio else 'na'}_v{variant % 4}"
    if defect is not None:
        key += f"_{defect}"
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
                defect=defect,
            )
    return path
