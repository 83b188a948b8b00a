"""A film's sound: one continuous track from the shots' own audio, a soundtrack and voice-overs.

Each shot's native audio is placed where the shot sits in the film and crossfaded (equal
power) where the pictures crossfade; cuts get a few milliseconds of fade so they do not click.
The soundtrack is looped to the film's length and mixed under, lowered wherever a shot's own
sound or a voice-over is sounding when ducking is asked. The mix is normalised to an integrated
loudness target (ITU-R BS.1770 via pyloudnorm) behind a brick-wall peak limiter, so a loud
target cannot clip. Where nothing sounds the track is digital silence, never a gap: the track
has exactly as many samples as the film is long.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyloudnorm  # type: ignore[import-untyped]  # ships no type hints
from numpy.typing import NDArray

Samples = NDArray[np.float32]

CHANNELS = 2
#: a cut still gets this much fade on each side: a step in the waveform is an audible click
DECLICK_S = 0.005
#: anything quieter than this (dBFS, RMS over 20 ms) is not "sounding" for ducking
_PRESENCE_DBFS = -50.0
_PEAK_CEILING = 10 ** (-1.0 / 20)  # -1 dBFS: AAC's own overshoot stays below full scale
#: pyloudnorm's gating block; a shorter mix has no integrated loudness
_MIN_MEASURE_S = 0.4


@dataclass(frozen=True)
class Placement:
    """A stretch of ``path``'s audio placed at film sample ``at`` for ``length`` samples,
    starting ``source_start_s`` into the file, with linear-in-power fades (samples)."""

    path: Path
    at: int
    length: int
    source_start_s: float = 0.0
    fade_in: int = 0
    fade_out: int = 0
    gain_db: float = 0.0


@dataclass(frozen=True)
class FilmAudio:
    """The finished mix: ``samples`` is (channels, n) float32 in [-1, 1]."""

    samples: Samples
    rate: int
    loudness_lufs: float | None
    has_sound: bool


def decode(path: Path, rate: int, start_at: float = 0.0) -> Samples | None:
    """``path``'s first audio stream as (2, n) float32 at ``rate`` Hz, time 0 = ``start_at``
    seconds of the file; None when the file has no audio stream."""
    try:
        return _decode(path, rate, start_at)
    except av.FFmpegError as e:
        raise ValueError(f"{path.name}: its audio does not decode ({e})") from None


def _decode(path: Path, rate: int, start_at: float) -> Samples | None:
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=rate)
        chunks: list[Samples] = []
        first: float | None = None
        for frame in container.decode(stream):
            if first is None and frame.time is not None:
                first = float(frame.time)
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().astype(np.float32, copy=False))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().astype(np.float32, copy=False))
    data = np.concatenate(chunks, axis=1) if chunks else np.zeros((CHANNELS, 0), np.float32)
    lead = round(((first or 0.0) - start_at) * rate)
    if lead > 0:
        data = np.concatenate([np.zeros((CHANNELS, lead), np.float32), data], axis=1)
    elif lead < 0:
        data = data[:, -lead:]
    return data


def _fade(n: int, rising: bool) -> Samples:
    # Equal power: sin/cos quarter waves sum to constant power over a crossfade.
    x = (np.arange(n, dtype=np.float32) + 0.5) / max(1, n)
    curve = np.sin(0.5 * np.pi * x) if rising else np.cos(0.5 * np.pi * x)
    return curve.astype(np.float32)


def place(bus: Samples, p: Placement, rate: int, source: Samples) -> None:
    """Add ``source`` (already decoded ``p.path``) into ``bus`` as ``p`` says."""
    start = round(p.source_start_s * rate)
    seg = source[:, start : start + p.length]
    if seg.shape[1] < p.length:  # a short track ends in silence, the film does not
        seg = np.pad(seg, ((0, 0), (0, p.length - seg.shape[1])))
    seg = seg * np.float32(10 ** (p.gain_db / 20))
    fi, fo = min(p.fade_in, p.length), min(p.fade_out, p.length)
    if fi:
        seg[:, :fi] *= _fade(fi, rising=True)
    if fo:
        seg[:, p.length - fo :] *= _fade(fo, rising=False)
    end = min(bus.shape[1], p.at + p.length)
    if end > p.at:
        bus[:, p.at : end] += seg[:, : end - p.at]


def _moving_average(x: NDArray[np.float64], w: int) -> NDArray[np.float64]:
    if w <= 1:
        return x
    pad = np.pad(x, (w // 2, w - 1 - w // 2), mode="edge")
    c = np.cumsum(np.concatenate([[0.0], pad]))
    out: NDArray[np.float64] = (c[w:] - c[:-w]) / w
    return out


def duck_gain(dialogue: Samples, rate: int, duck_db: float) -> Samples:
    """Per-sample gain for the soundtrack: ``duck_db`` where ``dialogue`` sounds, 1 elsewhere,
    held 250 ms past each word and ramped over 100 ms so the bed does not pump."""
    n = dialogue.shape[1]
    if n == 0:
        return np.ones(0, np.float32)
    block = max(1, rate // 50)  # 20 ms
    blocks = math.ceil(n / block)
    padded = np.pad(np.abs(dialogue).max(axis=0), (0, blocks * block - n))
    rms = np.sqrt(np.mean(padded.reshape(blocks, block).astype(np.float64) ** 2, axis=1))
    sounding = rms > 10 ** (_PRESENCE_DBFS / 20)
    hold = 13  # blocks: 260 ms
    held = np.convolve(sounding.astype(np.float64), np.ones(hold), mode="full")[:blocks] > 0
    target = np.where(held, 10 ** (duck_db / 20), 1.0)
    smooth = _moving_average(target, 5)  # 100 ms ramps
    per_sample = np.repeat(smooth, block)[:n]
    return per_sample.astype(np.float32)


def soundtrack_bed(source: Samples, total: int, rate: int, gain_db: float) -> Samples:
    """``source`` looped to ``total`` samples at ``gain_db``, faded in briefly and out at the
    end (one second, or a quarter of a short film)."""
    if source.shape[1] == 0 or total == 0:
        return np.zeros((CHANNELS, total), np.float32)
    reps = math.ceil(total / source.shape[1])
    bed = np.tile(source, (1, reps))[:, :total] * np.float32(10 ** (gain_db / 20))
    fi = min(total, round(DECLICK_S * 4 * rate))
    fo = min(total, round(min(1.0, total / rate / 4) * rate))
    bed[:, :fi] *= _fade(fi, rising=True)
    bed[:, total - fo :] *= _fade(fo, rising=False)
    return bed.astype(np.float32, copy=False)


def limit(mix: Samples, rate: int, ceiling: float = _PEAK_CEILING) -> Samples:
    """Brick-wall limiter: no sample above ``ceiling``; gain changes ramp over 5 ms.

    The required gain is min-filtered over twice the ramp and then averaged over the ramp, so
    every averaged value is at most the gain its own sample needed (never overshoots)."""
    peak = np.abs(mix).max(axis=0) if mix.size else np.zeros(0, np.float32)
    if peak.size == 0 or float(peak.max()) <= ceiling:
        return mix
    need = np.minimum(1.0, ceiling / np.maximum(peak.astype(np.float64), 1e-12))
    w = max(1, round(0.005 * rate))
    padded = np.pad(need, (w - 1, w - 1), mode="edge")
    floor = np.lib.stride_tricks.sliding_window_view(padded, 2 * w - 1).min(axis=1)
    gain = np.minimum(_moving_average(floor, w), need)
    return (mix * gain.astype(np.float32)).astype(np.float32)


def measure(mix: Samples, rate: int) -> float | None:
    """Integrated loudness (LUFS) of ``mix``; None for silence or under 0.4 s."""
    if mix.shape[1] < round(_MIN_MEASURE_S * rate) or not np.any(mix):
        return None
    lufs = float(pyloudnorm.Meter(rate).integrated_loudness(mix.T.astype(np.float64)))
    return lufs if math.isfinite(lufs) else None


def normalise(mix: Samples, rate: int, target_lufs: float) -> tuple[Samples, float | None]:
    """``mix`` brought to ``target_lufs`` (limited; re-measured, up to three passes, because
    limiting lowers loudness), and its measured loudness; silence is left as it is."""
    loudness = measure(mix, rate)
    for _ in range(3):
        if loudness is None or abs(loudness - target_lufs) < 0.2:
            break
        mix = limit(mix * np.float32(10 ** ((target_lufs - loudness) / 20)), rate)
        loudness = measure(mix, rate)
    return mix, loudness


def mix_film(
    total: int,
    rate: int,
    *,
    native: Sequence[Placement],
    voice_over: Sequence[Placement] = (),
    soundtrack: Path | None = None,
    soundtrack_gain_db: float = -6.0,
    soundtrack_mask: Samples | None = None,
    duck: bool = False,
    duck_db: float = -12.0,
    target_lufs: float = -14.0,
) -> FilmAudio:
    """The film's track of exactly ``total`` samples.

    ``native``: the shots' own audio (a placement whose file has no audio adds silence).
    ``soundtrack_mask``: optional per-sample 0..1 gain on the soundtrack (1 where it plays).
    """
    dialogue = np.zeros((CHANNELS, total), np.float32)
    cache: dict[Path, Samples | None] = {}
    for p in [*native, *voice_over]:
        if p.path not in cache:
            cache[p.path] = decode(p.path, rate)
        source = cache[p.path]
        if source is not None:
            place(dialogue, p, rate, source)
    mix = dialogue.copy()
    if soundtrack is not None:
        source = decode(soundtrack, rate)
        if source is None:
            raise ValueError(
                f"soundtrack {soundtrack.name}: has no audio stream; give an audio file"
            )
        bed = soundtrack_bed(source, total, rate, soundtrack_gain_db)
        if soundtrack_mask is not None:
            bed *= soundtrack_mask
        if duck:
            bed *= duck_gain(dialogue, rate, duck_db)
        mix += bed
    has_sound = bool(np.any(mix))
    mix, loudness = normalise(mix, rate, target_lufs)
    return FilmAudio(samples=mix, rate=rate, loudness_lufs=loudness, has_sound=has_sound)


class AacWriter:
    """Encode a :class:`FilmAudio` as AAC into ``container`` a piece at a time, so the caller
    can interleave it with video in time order."""

    FRAME = 1024

    def __init__(self, container: av.container.OutputContainer, audio: FilmAudio) -> None:
        self.container = container
        self.audio = audio
        self.stream = container.add_stream("aac", rate=audio.rate, layout="stereo")
        self.stream.bit_rate = 192_000
        self.pos = 0

    def write_until(self, t_s: float) -> None:
        """Encode and mux everything before film time ``t_s``."""
        total = self.audio.samples.shape[1]
        until = total if math.isinf(t_s) else min(total, round(t_s * self.audio.rate))
        while self.pos < until:
            n = min(self.FRAME, self.audio.samples.shape[1] - self.pos)
            chunk = np.ascontiguousarray(self.audio.samples[:, self.pos : self.pos + n])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            frame.sample_rate = self.audio.rate
            frame.pts = self.pos
            frame.time_base = Fraction(1, self.audio.rate)
            for packet in self.stream.encode(frame):
                self.container.mux(packet)
            self.pos += n

    def finish(self) -> None:
        """Encode the rest and flush the encoder."""
        self.write_until(math.inf)
        for packet in self.stream.encode(None):
            self.container.mux(packet)
