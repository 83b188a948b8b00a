"""Captions for a film: WebVTT / SRT sidecars and burning text onto frames with Pillow.

A caption is shown from ``start_s`` to ``end_s`` of the film. Sidecars follow the WebVTT
(W3C) and SubRip formats exactly enough for players and validators: cue timings with
millisecond precision, cues in order, no blank lines inside a cue's text.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Literal, Protocol

import av
from PIL import ImageDraw, ImageFont


class TimedText(Protocol):
    """Anything with a start, an end and text (``assemble.Caption`` is one)."""

    @property
    def start_s(self) -> float: ...

    @property
    def end_s(self) -> float: ...

    @property
    def text(self) -> str: ...


def check_captions(captions: Sequence[TimedText], film_s: float | None = None) -> None:
    """Raise ValueError naming the first caption that cannot be shown, and why."""
    for i, c in enumerate(captions):
        if not c.text.strip():
            raise ValueError(f"caption {i}: text is empty; give the words to show")
        if c.start_s < 0 or c.end_s <= c.start_s:
            raise ValueError(
                f"caption {i}: start {c.start_s:g}s / end {c.end_s:g}s; "
                "start must be >= 0 and end after start"
            )
        if film_s is not None and c.start_s >= film_s:
            raise ValueError(
                f"caption {i}: starts at {c.start_s:g}s, after the film ends ({film_s:.3f}s)"
            )


def _stamp(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _cue_text(text: str) -> str:
    # A blank line ends a cue in both formats, so paragraphs collapse to single line breaks.
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return "\n".join(lines)


def to_vtt(captions: Sequence[TimedText]) -> str:
    """The captions as a WebVTT document (cues sorted by start)."""
    out = ["WEBVTT", ""]
    for i, c in enumerate(sorted(captions, key=lambda c: (c.start_s, c.end_s)), start=1):
        # "-->" inside cue text would end the timing line's meaning; WebVTT forbids it.
        text = _cue_text(c.text).replace("-->", "->").replace("&", "&amp;").replace("<", "&lt;")
        out += [str(i), f"{_stamp(c.start_s, '.')} --> {_stamp(c.end_s, '.')}", text, ""]
    return "\n".join(out)


def to_srt(captions: Sequence[TimedText]) -> str:
    """The captions as a SubRip document (cues numbered from 1, sorted by start)."""
    out: list[str] = []
    for i, c in enumerate(sorted(captions, key=lambda c: (c.start_s, c.end_s)), start=1):
        text = _cue_text(c.text)
        out += [str(i), f"{_stamp(c.start_s, ',')} --> {_stamp(c.end_s, ',')}", text, ""]
    return "\n".join(out)


def write_sidecar(
    captions: Sequence[TimedText], film: Path, fmt: Literal["vtt", "srt"] = "vtt"
) -> Path:
    """Write ``film``'s caption file next to it (same stem, ``.vtt`` or ``.srt``), atomically."""
    path = film.with_suffix(f".{fmt}")
    body = to_vtt(captions) if fmt == "vtt" else to_srt(captions)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(body, encoding="utf-8")
    os.replace(tmp, path)
    return path


def active(captions: Sequence[TimedText], t: float) -> str | None:
    """The text on screen at film time ``t`` (later captions win an overlap), else None."""
    shown = [c for c in captions if c.start_s <= t < c.end_s]
    return shown[-1].text if shown else None


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow's bundled font (FreeType build) scales; no font file has to be installed.
    return ImageFont.load_default(size=size)


def burn(frame: av.VideoFrame, text: str, out_format: str = "yuv420p") -> av.VideoFrame:
    """``frame`` with ``text`` drawn in white on a dark box, centred near the bottom."""
    img = frame.to_image()  # type: ignore[no-untyped-call]
    w, h = img.size
    size = max(10, h // 18)
    font = _font(size)
    draw = ImageDraw.Draw(img, "RGBA")
    lines = _cue_text(text).split("\n")
    boxes = [draw.textbbox((0, 0), ln, font=font) for ln in lines]
    line_h = max(b[3] - b[1] for b in boxes) + size // 4
    pad = size // 3
    y = h - h // 12 - line_h * len(lines)
    widest = max(b[2] - b[0] for b in boxes)
    x0 = (w - widest) // 2
    draw.rectangle(
        (x0 - pad, y - pad, x0 + widest + pad, y + line_h * len(lines) + pad), fill=(0, 0, 0, 160)
    )
    for ln, b in zip(lines, boxes, strict=True):
        draw.text(((w - (b[2] - b[0])) // 2, y), ln, font=font, fill=(255, 255, 255, 255))
        y += line_h
    out: av.VideoFrame = av.VideoFrame.from_image(img)  # type: ignore[no-untyped-call]
    return out.reformat(format=out_format)


__all__ = [
    "TimedText",
    "active",
    "burn",
    "check_captions",
    "to_srt",
    "to_vtt",
    "write_sidecar",
]
