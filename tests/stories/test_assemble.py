"""Assembly on real MP4s: sandbox renders of different sizes and rates, decoded back with PyAV."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from vidgate.sandbox.render import render_mp4
from vidgate.stories.assemble import (
    AssemblyError,
    AssemblySpec,
    Caption,
    ShotClip,
    assemble,
    planned_frames,
    shot_frames,
)


def clip(
    d: Path, w: int, h: int, fps: int, dur: float, *, audio: bool = True, variant: int = 0
) -> Path:
    path = d / f"{w}x{h}_{fps}_{dur:g}_{int(audio)}_{variant}.mp4"
    if not path.exists():
        render_mp4(path, width=w, height=h, fps=fps, duration_s=dur, audio=audio, variant=variant)
    return path


def frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray() for f in c.decode(video=0)]


def video_info(path: Path) -> tuple[int, int, Fraction, str, float]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        assert s.average_rate is not None
        assert s.duration is not None
        assert s.time_base is not None
        return (
            s.codec_context.width,
            s.codec_context.height,
            Fraction(s.average_rate),
            s.codec_context.name,
            float(s.duration * s.time_base),
        )


def v_mean(planes: np.ndarray, w: int, h: int) -> float:
    """Mean of the V plane: the sandbox paints it per variant (160 - 24 * variant)."""
    return float(planes[h + h // 4 :].mean())


def test_mixed_sizes_and_rates_are_normalised(tmp_path: Path) -> None:
    shots = [
        clip(tmp_path, 64, 48, 24, 1.0, variant=0),
        clip(tmp_path, 96, 56, 30, 1.0, audio=False, variant=1),  # wider: letterboxed
        clip(tmp_path, 32, 24, 12, 1.5, variant=2),  # smaller, slower: scaled up, repeated
    ]
    spec = AssemblySpec(width=64, height=48, fps=24)
    r = assemble([ShotClip(p) for p in shots], spec, tmp_path / "film.mp4")

    assert not r.stream_copied
    assert r.frames == 24 + 24 + 36
    w, h, rate, codec, dur = video_info(r.path)
    assert (w, h, rate, codec) == (64, 48, Fraction(24), "h264")
    assert abs(dur - r.frames / 24) < 1 / 24
    decoded = frames(r.path)
    assert len(decoded) == r.frames
    assert all(f.shape == (72, 64) for f in decoded)
    # the 96x56 shot is scaled to 64x37 (rounded to 38) and centred: black bars top and bottom
    luma = decoded[24 + 12][:48]
    assert luma[:4].mean() < 24
    assert luma[-4:].mean() < 24
    assert luma[20:28].mean() > 40
    # each shot's colour sits where its frames are (V plane: 160, 136, 112 for variants 0-2)
    assert [round(v_mean(decoded[i], 64, 48) / 8) * 8 for i in (12, 36, 70)] == [160, 136, 112]


def test_uniform_clips_are_stream_copied_packet_for_packet(tmp_path: Path) -> None:
    shots = [
        clip(tmp_path, 64, 48, 24, 1.0, variant=0),
        clip(tmp_path, 64, 48, 24, 0.5, audio=False, variant=1),
        clip(tmp_path, 64, 48, 24, 1.0, variant=2),
    ]
    spec = AssemblySpec(width=64, height=48, fps=24)
    r = assemble([ShotClip(p) for p in shots], spec, tmp_path / "film.mp4")

    assert r.stream_copied
    assert r.frames == 60
    assert r.duration_s == pytest.approx(2.5)

    def packets(path: Path) -> list[bytes]:
        with av.open(str(path)) as c:
            return [bytes(p) for p in c.demux(video=0) if p.size]

    assert packets(r.path) == [b for p in shots for b in packets(p)]
    assert len(frames(r.path)) == 60
    assert r.shot_starts_s == pytest.approx((0.0, 1.0, 1.5))


def b_frame_clip(path: Path, frames: int, shade: int) -> Path:
    """H.264 with B-frames (decode order differs from display order), written by PyAV."""
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.options = {"preset": "medium", "bf": "3", "crf": "23"}
        for i in range(frames):
            img = np.full((48, 64, 3), shade, np.uint8)
            img[:, (i * 3) % 64 :] = 200
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = i, Fraction(1, 24)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


def test_stream_copy_keeps_b_frame_clips_in_order(tmp_path: Path) -> None:
    a = b_frame_clip(tmp_path / "a.mp4", 30, 40)
    b = b_frame_clip(tmp_path / "b.mp4", 20, 120)
    with av.open(str(a)) as c:
        assert any(p.dts is not None and p.pts is not None and p.dts < p.pts for p in c.demux())
    r = assemble(
        [ShotClip(a), ShotClip(b)], AssemblySpec(width=64, height=48, fps=24), tmp_path / "f.mp4"
    )
    assert r.stream_copied
    with av.open(str(r.path)) as c:
        pts = [f.pts or 0 for f in c.decode(video=0)]
    assert len(pts) == 50
    assert pts == sorted(pts)  # presented in order across the join
    decoded = frames(r.path)
    # the left edge is each clip's own shade: darker in the first, lighter in the second
    first, second = decoded[10][:48, :4].mean(), decoded[40][:48, :4].mean()
    assert second - first > 50


def test_a_copy_that_does_not_decode_in_full_is_re_encoded(tmp_path: Path) -> None:
    # A shot cut off mid-file (its index, written first, promises frames that are not there):
    # the packets copy, but decoding the copy finds a frame missing, so the film is re-encoded
    # to the planned length with the last good frame held.
    whole = assemble(
        [ShotClip(clip(tmp_path, 64, 48, 24, 2.0, audio=False))],
        AssemblySpec(width=64, height=48, fps=24, crf=30),
        tmp_path / "whole.mp4",
    )
    data = whole.path.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    spec = AssemblySpec(width=64, height=48, fps=24)
    r = assemble([ShotClip(tmp_path / "cut.mp4")], spec, tmp_path / "film.mp4")
    assert not r.stream_copied
    assert len(r.notes) == 1
    assert r.notes[0].startswith("stream copy abandoned (the copy decodes to")
    assert len(frames(r.path)) == r.frames


@pytest.mark.parametrize(
    "change",
    [
        {"fps": 25},  # a different rate
        {"width": 80, "height": 60},  # a different size
    ],
)
def test_anything_non_uniform_is_re_encoded(tmp_path: Path, change: dict[str, int]) -> None:
    shots = [clip(tmp_path, 64, 48, 24, 1.0), clip(tmp_path, 64, 48, 24, 1.0, variant=1)]
    spec = AssemblySpec(**{"width": 64, "height": 48, "fps": 24, **change})  # type: ignore[arg-type]
    r = assemble([ShotClip(p) for p in shots], spec, tmp_path / "film.mp4")
    assert not r.stream_copied
    assert r.frames == 2 * spec.fps
    w, h, rate, _, _ = video_info(r.path)
    assert (w, h, rate) == (spec.width, spec.height, Fraction(spec.fps))


def test_trims_and_burned_captions_take_the_re_encode_path(tmp_path: Path) -> None:
    a, b = clip(tmp_path, 64, 48, 24, 1.0), clip(tmp_path, 64, 48, 24, 1.0, variant=1)
    spec = AssemblySpec(width=64, height=48, fps=24)
    r = assemble([ShotClip(a), ShotClip(b, trim_start_s=0.25)], spec, tmp_path / "t.mp4")
    assert not r.stream_copied
    assert r.frames == 24 + 18
    assert len(frames(r.path)) == 42


def test_crossfade_blends_exactly_its_length(tmp_path: Path) -> None:
    a = clip(tmp_path, 64, 48, 24, 2.0, variant=0)  # V = 160
    b = clip(tmp_path, 64, 48, 24, 2.0, variant=1)  # V = 136
    # lossless (crf 0), so what is measured is the blend, not the encoder's rounding
    spec = AssemblySpec(width=64, height=48, fps=24, crf=0)
    r = assemble(
        [ShotClip(a), ShotClip(b, transition_in="crossfade", crossfade_s=0.5)],
        spec,
        tmp_path / "x.mp4",
    )
    k = 12
    assert r.frames == 48 + 48 - k
    assert r.joins[0].frames == k
    assert r.joins[0].at_s == pytest.approx(36 / 24)
    v = [v_mean(f, 64, 48) for f in frames(r.path)]
    assert len(v) == r.frames
    va = [v_mean(f, 64, 48) for f in frames(a)]
    vb = [v_mean(f, 64, 48) for f in frames(b)]
    # frames 36..47 mix shot a's last 12 frames into shot b's first 12 by (j + 1) / (k + 1)
    expected = (
        va[:36] + [va[36 + j] + (vb[j] - va[36 + j]) * (j + 1) / (k + 1) for j in range(k)] + vb[k:]
    )
    assert np.abs(np.array(v) - np.array(expected)).max() < 0.6
    assert va[36] - vb[0] > 20  # the shots differ, so every blended frame is in between


def test_film_duration_is_the_plan_within_one_frame(tmp_path: Path) -> None:
    durations = [1.0, 1.5, 0.75]
    shots = [
        clip(tmp_path, 64, 48, 24, d, variant=i, audio=i != 1) for i, d in enumerate(durations)
    ]
    transitions = ["cut", "crossfade", "crossfade"]
    fades = [0.0, 0.25, 0.5]
    spec = AssemblySpec(width=64, height=48, fps=30)
    r = assemble(
        [
            ShotClip(p, transition_in=t, crossfade_s=f)  # type: ignore[arg-type]
            for p, t, f in zip(shots, transitions, fades, strict=True)
        ],
        spec,
        tmp_path / "film.mp4",
    )
    plan = planned_frames(durations, transitions, fades, 30)  # type: ignore[arg-type]
    assert plan == 30 + 45 + 23 - 8 - 15
    assert r.frames == plan
    expected_s = sum(durations) - 0.25 - 0.5
    _, _, _, _, dur = video_info(r.path)
    assert abs(dur - expected_s) <= 1 / 30
    assert len(frames(r.path)) == plan
    with av.open(str(r.path)) as c:
        a = c.streams.audio[0]
        assert a.duration is not None
        assert a.time_base is not None
        assert abs(float(a.duration * a.time_base) - expected_s) <= 1 / 30


def test_captions_sidecars_are_valid_and_burning_changes_only_captioned_frames(
    tmp_path: Path,
) -> None:
    a = clip(tmp_path, 128, 96, 24, 2.0)
    caps = (Caption(0.5, 1.25, "A red fox & <friends>"), Caption(0.0, 0.25, "Dawn\n\nmeadow"))
    plain = assemble(
        [ShotClip(a)],
        AssemblySpec(width=128, height=96, fps=24, crf=0, preset="ultrafast"),
        tmp_path / "plain.mp4",
    )
    burnt = assemble(
        [ShotClip(a)],
        AssemblySpec(
            width=128,
            height=96,
            fps=24,
            captions=caps,
            burn_captions=True,
            crf=0,  # lossless: a frame without a caption is the plain film's, exactly
            preset="ultrafast",
        ),
        tmp_path / "burnt.mp4",
    )
    assert not burnt.stream_copied
    assert burnt.captions_path == tmp_path / "burnt.vtt"
    vtt = burnt.captions_path.read_text()
    cue = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}$")
    blocks = vtt.strip().split("\n\n")
    assert blocks[0] == "WEBVTT"
    assert [b.split("\n")[0] for b in blocks[1:]] == ["1", "2"]
    assert all(cue.match(b.split("\n")[1]) for b in blocks[1:])
    assert blocks[1].split("\n")[1:] == ["00:00:00.000 --> 00:00:00.250", "Dawn", "meadow"]
    assert blocks[2].split("\n")[2] == "A red fox &amp; &lt;friends>"

    srt = assemble(
        [ShotClip(a)],
        AssemblySpec(width=128, height=96, fps=24, captions=caps, caption_format="srt"),
        tmp_path / "s.mp4",
    )
    assert srt.captions_path == tmp_path / "s.srt"
    assert srt.captions_path.read_text().split("\n")[:4] == [
        "1",
        "00:00:00,000 --> 00:00:00,250",
        "Dawn",
        "meadow",
    ]

    p, b = frames(plain.path), frames(burnt.path)
    bottom = slice(96 // 2, 96)  # captions sit in the lower half of the Y plane

    def diff(i: int) -> float:
        return float(np.abs(p[i][bottom].astype(int) - b[i][bottom].astype(int)).mean())

    assert diff(18) > 8
    assert diff(2) > 8
    assert diff(40) == 0  # 1.67 s: no caption, the same picture


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: [ShotClip(d / "nope.mp4")], "shot 0: file"),
        (
            lambda d: [
                ShotClip(clip(d, 64, 48, 24, 0.5)),
                ShotClip(clip(d, 64, 48, 24, 1.0), transition_in="crossfade", crossfade_s=0.75),
            ],
            "cannot hold crossfades of 0 in and 18 out",
        ),
        (
            lambda d: [ShotClip(clip(d, 64, 48, 24, 0.5), trim_start_s=0.3, trim_end_s=0.2)],
            "leaves no frame",
        ),
        (lambda d: [ShotClip(d / "text.mp4", label="intro")], "shot 0 (intro): text.mp4 is not"),
        (lambda d: [], "no shots"),
    ],
)
def test_bad_input_is_one_line_naming_the_shot(tmp_path: Path, make: object, message: str) -> None:
    (tmp_path / "text.mp4").write_text("not a video")
    clips = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(AssemblyError) as e:
        assemble(clips, AssemblySpec(width=64, height=48, fps=24), tmp_path / "out.mp4")
    assert message in str(e.value)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out.mp4").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.mp4")]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (AssemblySpec(width=63, height=48, fps=24), "must be even"),
        (AssemblySpec(width=64, height=48, fps=0), "fps 0"),
        (AssemblySpec(width=64, height=48, fps=24, crf=60), "crf 60"),
        (AssemblySpec(width=64, height=48, fps=24, preset="warp"), "preset 'warp'"),
        (AssemblySpec(width=64, height=48, fps=24, soundtrack=Path("/no/such.wav")), "soundtrack"),
        (
            AssemblySpec(width=64, height=48, fps=24, captions=(Caption(0.5, 0.5, "x"),)),
            "caption 0",
        ),
        (
            AssemblySpec(width=64, height=48, fps=24, captions=(Caption(9.0, 10.0, "x"),)),
            "after the film ends",
        ),
    ],
)
def test_bad_spec_is_named(tmp_path: Path, spec: AssemblySpec, message: str) -> None:
    with pytest.raises(AssemblyError, match=re.escape(message)):
        assemble([ShotClip(clip(tmp_path, 64, 48, 24, 0.5))], spec, tmp_path / "out.mp4")


def test_shot_frames_rounds_to_the_nearest_frame() -> None:
    assert shot_frames(1.0, 24) == 24
    assert shot_frames(1.02, 24) == 24
    assert shot_frames(1.03, 24) == 25
    assert shot_frames(2.0, 30, 0.5, 0.25) == 38
    with pytest.raises(AssemblyError):
        shot_frames(1.0, 24, -0.1)
