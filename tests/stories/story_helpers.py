"""Shared by the story tests: a sandbox on the story catalog, a gateway on it, media files."""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from numpy.typing import NDArray
from PIL import Image

from vidgate.catalog.loader import Catalog, catalog_from_yaml

HERE = Path(__file__).resolve().parent


def story_catalog() -> Catalog:
    return catalog_from_yaml((HERE / "story_catalog.yaml").read_text(), "story_catalog.yaml")


def write_png(path: Path, colour: tuple[int, int, int]) -> Path:
    Image.new("RGB", (32, 32), colour).save(path)
    return path


def write_wav(path: Path, seconds: float, freq: float = 220.0, rate: int = 48_000) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return path


@dataclass(frozen=True)
class Probe:
    frames: int
    sizes: set[tuple[int, int]]
    fps: float | None
    #: (channels x samples as float64, sample rate), or None without an audio track
    audio: tuple[NDArray[np.float64], int] | None


def probe_video(path: Path) -> Probe:
    """What PyAV decodes from a film: frames, sizes, frame rate, audio samples."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        frames = 0
        sizes = set()
        for f in c.decode(video=0):
            frames += 1
            sizes.add((f.width, f.height))
        rate = vs.average_rate
    audio = None
    with av.open(str(path)) as c:
        if c.streams.audio:
            chunks = [f.to_ndarray() for f in c.decode(audio=0)]
            sr = int(c.streams.audio[0].rate)
            data = np.concatenate([x.reshape(x.shape[0], -1) for x in chunks], axis=1)
            audio = (data.astype(np.float64), sr)
    return Probe(frames, sizes, float(rate) if rate else None, audio)
