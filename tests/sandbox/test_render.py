from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from vidgate.sandbox.render import cached_render, render_mp4
from vidgate.storage.media import probe


def test_render_has_requested_size_frames_and_audio(tmp_path: Path) -> None:
    path = render_mp4(tmp_path / "a.mp4", width=320, height=240, fps=24, duration_s=2, audio=True)
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        assert v.codec_context.name == "h264"
        assert (v.codec_context.width, v.codec_context.height) == (320, 240)
        frames = [f.to_ndarray(format="gray") for f in c.decode(video=0)]
    assert len(frames) == 48
    # moving content: consecutive frames differ, first and last differ a lot
    assert np.abs(frames[0].astype(int) - frames[1].astype(int)).mean() > 1
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 10
    with av.open(str(path)) as c:
        [a] = c.streams.audio
        assert a.codec_context.name == "aac"
        samples = sum(f.samples for f in c.decode(audio=0))
    assert samples == pytest.approx(2 * 48_000, rel=0.05)


def test_render_without_audio_has_no_audio_stream(tmp_path: Path) -> None:
    path = render_mp4(tmp_path / "b.mp4", width=256, height=144, fps=30, duration_s=1, audio=False)
    with path.open("rb") as f:
        info = probe(f)
    assert not info.has_audio
    assert info.frames == 30
    assert info.fps == 30
    assert info.duration_s == pytest.approx(1.0)


def test_odd_sizes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        render_mp4(tmp_path / "c.mp4", width=321, height=240, fps=24, duration_s=1, audio=False)


def test_cached_render_reuses_the_file(tmp_path: Path) -> None:
    kw = {"width": 64, "height": 64, "fps": 8, "duration_s": 1.0, "audio": False}
    a = cached_render(tmp_path, **kw)
    mtime = a.stat().st_mtime_ns
    b = cached_render(tmp_path, **kw)
    assert a == b
    assert b.stat().st_mtime_ns == mtime
    assert not list(tmp_path.glob(".*.tmp"))
