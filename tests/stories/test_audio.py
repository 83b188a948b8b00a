"""The film's sound, decoded back from real MP4s: continuity, loudness, silence, ducking."""

from __future__ import annotations

import itertools
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyloudnorm  # type: ignore[import-untyped]
import pytest

from vidgate.sandbox.render import render_mp4
from vidgate.stories.assemble import AssemblyError, AssemblySpec, ShotClip, VoiceOver, assemble
from vidgate.stories.audio import limit, normalise

RATE = 48_000


def clip(d: Path, dur: float, *, audio: bool = True, variant: int = 0, fps: int = 24) -> Path:
    path = d / f"c_{dur:g}_{int(audio)}_{variant}_{fps}.mp4"
    if not path.exists():
        render_mp4(path, width=32, height=32, fps=fps, duration_s=dur, audio=audio, variant=variant)
    return path


def tone_file(path: Path, freq: float, seconds: float, amp: float = 0.3) -> Path:
    """A WAV with a pure tone, written by PyAV: a soundtrack or a voice-over."""
    n = round(seconds * RATE)
    t = np.arange(n) / RATE
    samples = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    with av.open(str(path), "w", format="wav") as c:
        s = c.add_stream("pcm_s16le", rate=RATE, layout="mono")
        for i in range(0, n, 1024):
            f = av.AudioFrame.from_ndarray(samples[None, i : i + 1024], format="flt", layout="mono")
            f.sample_rate = RATE
            f.pts = i
            f.time_base = Fraction(1, RATE)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


def film_audio(path: Path) -> tuple[np.ndarray, list[tuple[int | None, int]]]:
    """The film's decoded audio (2, n) and each decoded frame's (pts, samples)."""
    chunks, spans = [], []
    with av.open(str(path)) as c:
        for f in c.decode(audio=0):
            chunks.append(f.to_ndarray())
            spans.append((f.pts, f.samples))
    return np.concatenate(chunks, axis=1), spans


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def level_at(x: np.ndarray, freq: float) -> float:
    """Amplitude of ``freq`` in mono ``x`` (a windowed FFT bin)."""
    win = np.hanning(len(x))
    spec = np.abs(np.fft.rfft(x * win)) / (win.sum() / 2)
    k = round(freq * len(x) / RATE)
    return float(spec[k - 2 : k + 3].max())


def sl(a: float, b: float) -> slice:
    return slice(round(a * RATE), round(b * RATE))


def test_track_is_continuous_and_at_the_loudness_target(tmp_path: Path) -> None:
    shots = [
        ShotClip(clip(tmp_path, 1.5)),
        ShotClip(clip(tmp_path, 1.0, audio=False, variant=1), transition_in="crossfade"),
        ShotClip(clip(tmp_path, 1.5, variant=2, fps=30), transition_in="crossfade"),
    ]
    for target in (-14.0, -23.0):
        spec = AssemblySpec(width=32, height=32, fps=24, loudness_lufs=target)
        r = assemble(shots, spec, tmp_path / f"film{target:g}.mp4")
        samples, spans = film_audio(r.path)
        # one frame follows the next with no gap or overlap, from the start to the end
        starts = [p for p, _ in spans]
        assert None not in starts
        assert all(
            p1 + n1 == p2 for (p1, n1), (p2, _) in itertools.pairwise(spans) if p1 is not None
        )
        assert abs(samples.shape[1] - r.duration_s * RATE) <= 1024
        measured = pyloudnorm.Meter(RATE).integrated_loudness(samples.T.astype(np.float64))
        assert abs(measured - target) <= 1.0
        assert r.loudness_lufs is not None
        assert abs(r.loudness_lufs - target) <= 0.2
        assert np.abs(samples).max() <= 1.0


def test_silence_where_no_shot_has_sound(tmp_path: Path) -> None:
    shots = [
        ShotClip(clip(tmp_path, 1.0)),
        ShotClip(clip(tmp_path, 1.0, audio=False, variant=1)),  # no audio stream
        ShotClip(clip(tmp_path, 1.0, variant=2), audio="none"),  # sound dropped on purpose
        ShotClip(clip(tmp_path, 1.0, variant=3)),
    ]
    r = assemble(shots, AssemblySpec(width=32, height=32, fps=24), tmp_path / "film.mp4")
    samples, _ = film_audio(r.path)
    mono = samples.mean(axis=0)
    assert rms(mono[sl(0.1, 0.9)]) > 0.05
    assert rms(mono[sl(1.05, 2.95)]) < 1e-4
    assert rms(mono[sl(3.1, 3.9)]) > 0.05
    # the shot's own tone (variant 0: about 330 Hz) is what sounds in the first second
    assert level_at(mono[sl(0.1, 0.9)], 330) > 5 * level_at(mono[sl(0.1, 0.9)], 660)


def test_all_silent_film_still_has_a_whole_silent_track(tmp_path: Path) -> None:
    shots = [
        ShotClip(clip(tmp_path, 1.0, audio=False)),
        ShotClip(clip(tmp_path, 1.0), audio="none"),
    ]
    r = assemble(shots, AssemblySpec(width=32, height=32, fps=24), tmp_path / "quiet.mp4")
    assert not r.has_audio
    assert r.loudness_lufs is None
    samples, _ = film_audio(r.path)
    assert abs(samples.shape[1] - 2 * RATE) <= 1024
    assert np.abs(samples).max() < 1e-4


@pytest.mark.parametrize("duck", [True, False])
def test_soundtrack_is_ducked_under_shot_sound_when_asked(tmp_path: Path, duck: bool) -> None:
    bed = tone_file(tmp_path / "bed.wav", 1000.0, 1.3)  # shorter than the film: looped
    shots = [ShotClip(clip(tmp_path, 2.0, audio=False)), ShotClip(clip(tmp_path, 2.0, variant=1))]
    spec = AssemblySpec(
        width=32, height=32, fps=24, soundtrack=bed, duck_under_dialogue=duck, duck_db=-12.0
    )
    r = assemble(shots, spec, tmp_path / "film.mp4")
    mono = film_audio(r.path)[0].mean(axis=0)
    alone = level_at(mono[sl(0.4, 1.6)], 1000)  # no shot sound: the bed at full level
    under = level_at(mono[sl(2.4, 3.6)], 1000)  # under the second shot's tone
    assert alone > 0.01
    ratio_db = 20 * np.log10(under / alone)
    if duck:
        assert -14.0 < ratio_db < -10.0
    else:
        assert abs(ratio_db) < 1.0
    # the bed plays over the silent shot and never stops where the loop wraps (1.3 s)
    assert rms(mono[sl(1.25, 1.35)]) > 0.01


def test_a_soundtrack_shot_drops_its_own_sound_for_the_bed(tmp_path: Path) -> None:
    bed = tone_file(tmp_path / "bed.wav", 1000.0, 3.0)
    shots = [
        ShotClip(clip(tmp_path, 1.5, variant=0)),  # its own tone (~330 Hz) over the bed
        ShotClip(clip(tmp_path, 1.5, variant=0), audio="soundtrack"),  # the bed alone
    ]
    spec = AssemblySpec(width=32, height=32, fps=24, soundtrack=bed)
    mono = film_audio(assemble(shots, spec, tmp_path / "st.mp4").path)[0].mean(axis=0)
    first, second = mono[sl(0.2, 1.3)], mono[sl(1.7, 2.8)]
    assert level_at(first, 330) > 0.005
    assert level_at(second, 330) < 0.05 * level_at(first, 330)
    assert level_at(second, 1000) > 0.02


def test_voice_over_is_placed_and_ducks_the_bed(tmp_path: Path) -> None:
    bed = tone_file(tmp_path / "bed.wav", 1000.0, 4.0)
    voice = tone_file(tmp_path / "vo.wav", 500.0, 1.0, amp=0.3)
    spec = AssemblySpec(
        width=32,
        height=32,
        fps=24,
        soundtrack=bed,
        duck_under_dialogue=True,
        voice_over=(VoiceOver(voice, start_s=1.5),),
    )
    r = assemble([ShotClip(clip(tmp_path, 3.0, audio=False))], spec, tmp_path / "vo.mp4")
    mono = film_audio(r.path)[0].mean(axis=0)
    assert level_at(mono[sl(0.2, 1.2)], 500) < 0.01 * level_at(mono[sl(1.7, 2.3)], 500)
    ducked = level_at(mono[sl(1.7, 2.3)], 1000) / level_at(mono[sl(0.2, 1.2)], 1000)
    assert -14.0 < 20 * np.log10(ducked) < -10.0


def test_native_audio_crossfades_without_a_gap(tmp_path: Path) -> None:
    shots = [
        ShotClip(clip(tmp_path, 2.0, variant=0)),
        ShotClip(clip(tmp_path, 2.0, variant=2), transition_in="crossfade", crossfade_s=1.0),
    ]
    r = assemble(shots, AssemblySpec(width=32, height=32, fps=24), tmp_path / "x.mp4")
    mono = film_audio(r.path)[0].mean(axis=0)
    assert r.duration_s == pytest.approx(3.0)
    # in the middle of the crossfade (1.5 s) both shots' tones sound at about equal power
    mid = mono[sl(1.3, 1.7)]
    low, high = level_at(mid, 330), level_at(mid, 550)
    assert 0.5 < low / high < 2.0
    assert level_at(mono[sl(0.2, 0.8)], 550) < 0.1 * level_at(mono[sl(0.2, 0.8)], 330)
    window = round(0.02 * RATE)
    steps = [rms(mono[i : i + window]) for i in range(0, len(mono) - window, window)]
    assert min(steps) > 0.02  # never a dip to silence across the join


def test_a_soundtrack_without_audio_is_an_assembly_error(tmp_path: Path) -> None:
    silent = clip(tmp_path, 1.0, audio=False)
    with pytest.raises(AssemblyError, match=r"soundtrack c_1_0_0_24\.mp4: has no audio stream"):
        assemble(
            [ShotClip(silent)],
            AssemblySpec(width=32, height=32, fps=24, soundtrack=silent),
            tmp_path / "f.mp4",
        )


def test_limiter_never_exceeds_the_ceiling_and_normalise_leaves_silence() -> None:
    rng = np.random.default_rng(7)
    loud = (rng.standard_normal((2, RATE)) * 0.8).astype(np.float32)
    out = limit(loud, RATE, ceiling=0.5)
    assert np.abs(out).max() <= 0.5 + 1e-6
    assert np.abs(out).max() > 0.45  # limited, not just turned down
    quiet = np.zeros((2, RATE), np.float32)
    same, loudness = normalise(quiet, RATE, -14.0)
    assert loudness is None
    assert not np.any(same)
    hot, lufs = normalise((loud * 0.05).astype(np.float32), RATE, -8.0)
    assert lufs is not None
    assert abs(lufs + 8.0) < 0.5
    assert np.abs(hot).max() < 0.9


def test_audio_that_does_not_decode_is_named(tmp_path: Path) -> None:
    whole = assemble(
        [ShotClip(clip(tmp_path, 2.0))],
        AssemblySpec(width=32, height=32, fps=24),
        tmp_path / "w.mp4",
    )
    data = whole.path.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(AssemblyError, match=r"^audio: cut\.mp4: its audio does not decode"):
        assemble(
            [ShotClip(tmp_path / "cut.mp4")],
            AssemblySpec(width=32, height=32, fps=24),
            tmp_path / "f.mp4",
        )
