"""Measure a stored video with PyAV: what we report is what the file holds, not what the
provider said it would hold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO

import av

from vidgate.errors import ProviderProtocolError


@dataclass(frozen=True)
class MediaInfo:
    duration_s: float | None
    width: int | None
    height: int | None
    fps: float | None
    frames: int | None
    codec: str | None
    has_audio: bool
    audio_codec: str | None


def probe(fileobj: IO[bytes], *, count_frames: bool = True) -> MediaInfo:
    """Read container and stream metadata; count video packets when the header has no count."""
    try:
        container = av.open(fileobj, mode="r")
    except (av.FFmpegError, ValueError) as e:
        raise ProviderProtocolError(f"downloaded file is not a readable video: {e}") from e
    with container:
        video = next(iter(container.streams.video), None)
        audio = next(iter(container.streams.audio), None)
        duration = container.duration / 1_000_000 if container.duration else None
        frames = None
        if video is not None:
            frames = video.frames or None
            if frames is None and count_frames:
                frames = sum(1 for p in container.demux(video) if p.size)
            if video.duration and video.time_base:
                duration = float(video.duration * video.time_base)
        return MediaInfo(
            duration_s=round(duration, 3) if duration else None,
            width=video.codec_context.width if video else None,
            height=video.codec_context.height if video else None,
            fps=float(video.average_rate) if video is not None and video.average_rate else None,
            frames=frames,
            codec=video.codec_context.name if video else None,
            has_audio=audio is not None,
            audio_codec=audio.codec_context.name if audio else None,
        )
