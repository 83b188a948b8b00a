"""Decode an MP4 with PyAV: what a player would see."""

from __future__ import annotations

import io
from dataclasses import dataclass

import av


@dataclass(frozen=True)
class Decoded:
    frames: int
    width: int
    height: int
    codec: str
    audio_codec: str | None
    audio_frames: int


def decode(data: bytes) -> Decoded:
    with av.open(io.BytesIO(data), mode="r") as c:
        vs = c.streams.video[0]
        codec = vs.codec_context.name
        frames = [f for f in c.decode(video=0)]
        width, height = frames[0].width, frames[0].height
    audio_codec, audio_frames = None, 0
    with av.open(io.BytesIO(data), mode="r") as c:
        if c.streams.audio:
            audio_codec = c.streams.audio[0].codec_context.name
            audio_frames = len(list(c.decode(audio=0)))
    return Decoded(len(frames), width, height, codec, audio_codec, audio_frames)
