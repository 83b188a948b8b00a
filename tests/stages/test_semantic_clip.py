"""CLIP prompt adherence through the real loading path: a tiny random CLIP saved with
save_pretrained, loaded from VIDGATE_CLIP_MODEL with HF_HUB_OFFLINE=1, scoring frames decoded
with PyAV from a sandbox render."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.stages.semantic_support import clip_file, context, job_for, save_tiny_clip
from vidgate.stages import _clip
from vidgate.stages._frames import FrameError, sample_frames
from vidgate.stages.base import REGISTRY, StageUnavailable, discover
from vidgate.stages.semantic import SemanticStage
from vidgate.types import QualityGate


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture
def env(clip_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VIDGATE_CLIP_MODEL", str(clip_dir))
    return clip_dir


def run(job_prompt: str, path: Path, tmp: Path, gate: QualityGate | None = None):  # type: ignore[no-untyped-def]
    job = job_for(job_prompt, gate or QualityGate(clip=True))
    return asyncio.run(SemanticStage().run(context(job, path, tmp)))


def test_registered_and_applies_only_when_asked() -> None:
    assert discover()["semantic"] is SemanticStage
    assert REGISTRY["semantic"].name == "semantic"
    s = SemanticStage()
    assert s.applies(job_for("x", QualityGate(clip=True)))
    assert s.applies(job_for("x", QualityGate(judge=True)))
    assert not s.applies(job_for("x", QualityGate()))


def test_score_is_0_to_10_and_repeatable(env: Path, tmp_path: Path) -> None:
    clip = clip_file(tmp_path / "a.mp4")
    first = run("a red fox running through snow", clip, tmp_path)
    again = run("a red fox running through snow", clip, tmp_path)
    [check] = first.checks
    assert check.name == "clip_adherence"
    assert first.score is not None
    assert 0.0 <= first.score <= 10.0
    # the same frames and prompt give the same score and the same cosine
    assert again.score == first.score
    assert again.checks[0].value == check.value
    assert first.data["clip"]["score"] == first.score
    assert len(first.data["clip"]["per_frame"]) == 8
    # the score is the documented mapping of the mean cosine
    assert first.score == _clip.score_of(float(check.value))  # type: ignore[arg-type]
    assert first.cost_usd == 0.0


def test_prompt_changes_the_similarity(env: Path, tmp_path: Path) -> None:
    clip = clip_file(tmp_path / "a.mp4")
    a = run("a red fox running through snow", clip, tmp_path)
    b = run("zzzz qqqq 1234 ####", clip, tmp_path)
    assert a.checks[0].value != b.checks[0].value


def test_verdict_follows_the_threshold(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = clip_file(tmp_path / "a.mp4")
    prompt = "a lighthouse in a storm"
    score = run(prompt, clip, tmp_path).score
    # the tiny model's weights are seeded: this prompt lands inside the scale, not clamped
    assert score is not None
    assert 0.0 < score < 10.0
    # a threshold just under the measured score passes; just over fails, flagging frames
    monkeypatch.setenv("VIDGATE_CLIP_MIN_SCORE", str(score - 0.01))
    ok = run(prompt, clip, tmp_path)
    monkeypatch.setenv("VIDGATE_CLIP_MIN_SCORE", str(score + 0.01))
    bad = run(prompt, clip, tmp_path)
    assert ok.verdict == "pass"
    assert bad.verdict == "fail"
    floor = float(bad.checks[0].threshold)  # type: ignore[arg-type]
    assert floor == pytest.approx(_clip.cosine_of(score + 0.01), abs=1e-4)
    flagged = [p["t"] for p in bad.data["clip"]["per_frame"] if p["cosine"] < floor]
    # some frames sit under the mean and some above it: exactly those under are flagged
    assert 0 < len(flagged) < 8
    assert bad.checks[0].frames_s == pytest.approx(flagged, abs=1e-3)


def test_score_mapping_pins() -> None:
    assert _clip.score_of(0.15) == 0.0
    assert _clip.score_of(0.0) == 0.0
    assert _clip.score_of(0.25) == 5.0
    assert _clip.score_of(0.35) == 10.0
    assert _clip.score_of(0.9) == 10.0
    assert _clip.cosine_of(5.0) == pytest.approx(0.25)


def test_missing_path_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIDGATE_CLIP_MODEL", raising=False)
    clip = clip_file(tmp_path / "a.mp4")
    with pytest.raises(StageUnavailable, match="set VIDGATE_CLIP_MODEL"):
        run("a fox", clip, tmp_path)
    monkeypatch.setenv("VIDGATE_CLIP_MODEL", str(tmp_path / "nowhere"))
    with pytest.raises(StageUnavailable, match=r"no config\.json"):
        SemanticStage().check_ready(None)
    with pytest.raises(StageUnavailable, match="is not a saved CLIP model"):
        run("a fox", clip, tmp_path)


def test_frames_sampled_evenly_and_small(tmp_path: Path) -> None:
    clip = clip_file(tmp_path / "a.mp4", seconds=2.0)
    frames = sample_frames(clip, count=4, short_side=24)
    assert [f.t for f in frames] == [0.25, 0.75, 1.25, 1.75]
    assert frames[0].rgb.shape == (24, 32, 3)
    picked = sample_frames(clip, [1.0])
    assert picked[0].rgb.shape == (48, 64, 3)


def test_not_a_video_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "x.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(FrameError, match="cannot open the video") as e:
        sample_frames(bad)
    assert "\n" not in str(e.value)


def test_seeking_gives_the_frames_decoding_through_gives(tmp_path: Path) -> None:
    import numpy as np

    clip = clip_file(tmp_path / "long.mp4", seconds=8.0)
    times = [0.3, 2.6, 2.7, 5.1, 7.9, 9.5]  # the last is past the end: the last frame
    through = sample_frames(clip, times, seek_gap_s=None)
    seeking = sample_frames(clip, times, seek_gap_s=0.5)
    assert [f.t for f in seeking] == times
    for a, b in zip(through, seeking, strict=True):
        assert np.array_equal(a.rgb, b.rgb), a.t
    # the frames differ along the clip (the sandbox's content moves)
    assert not np.array_equal(through[0].rgb, through[3].rgb)
    assert np.array_equal(through[-1].rgb, sample_frames(clip, [7.99])[0].rgb)
