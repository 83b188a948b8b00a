"""The VLM judge over real HTTP against the sandbox's Gemini generateContent emulation: an
on-prompt clip passes, a clip rendered with the sandbox's off_prompt defect fails prompt
adherence, the call's cost is priced from its usageMetadata, and the cost cap is enforced
before any call is made."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.stages.semantic_support import clip_file, context, job_for
from vidgate.catalog.loader import load_catalog
from vidgate.sandbox.app import SandboxServer
from vidgate.stages import _judge
from vidgate.stages.base import StageResult
from vidgate.stages.semantic import SemanticStage
from vidgate.types import QualityGate

JUDGED = ["judge_prompt_adherence", "judge_artifacts", "judge_physics", "judge_text"]


@pytest.fixture(scope="module")
def sb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    server = SandboxServer(tmp_path_factory.mktemp("sb"), load_catalog(), time_scale=0.002)
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VIDGATE_JUDGE_BASE_URL", "VIDGATE_JUDGE_MAX_USD", "VIDGATE_JUDGE_MODEL"):
        monkeypatch.delenv(name, raising=False)


def judge(prompt: str, clip: Path, tmp: Path, sb: SandboxServer, **request: object) -> StageResult:
    job = job_for(prompt, QualityGate(judge=True), **request)

    async def go() -> StageResult:
        async with httpx.AsyncClient() as client:
            ctx = context(job, clip, tmp, sandbox_url=sb.url, client=client)
            return await SemanticStage().run(ctx)

    return asyncio.run(go())


def judge_calls(sb: SandboxServer) -> int:
    return int(sb.core.store.stats()["events"].get("judge", 0))


def test_on_prompt_clip_passes_and_is_priced(sb: SandboxServer, tmp_path: Path) -> None:
    clip = clip_file(tmp_path / "ok.mp4")
    before = judge_calls(sb)
    r = judge("a red fox running through snow", clip, tmp_path, sb)
    assert judge_calls(sb) == before + 1
    assert r.verdict == "pass"
    assert [c.name for c in r.checks] == JUDGED
    for c in r.checks:
        assert c.verdict == "pass"
        assert 7 <= float(c.value) <= 9  # type: ignore[arg-type]
        assert c.threshold == 5
        assert c.detail
    assert r.score == pytest.approx(sum(float(c.value) for c in r.checks) / 4)  # type: ignore[arg-type]
    info = r.data["judge"]
    # 2 s of video at 258 tokens per sampled second (no audio track) plus the instruction
    assert info["prompt_tokens"] > 2 * 258
    price = _judge.price_of("gemini-2.5-flash")
    assert r.cost_usd == price.cost(info["prompt_tokens"], info["output_tokens"])
    assert 0 < r.cost_usd <= info["estimate_usd"]


def test_same_request_same_verdict(sb: SandboxServer, tmp_path: Path) -> None:
    clip = clip_file(tmp_path / "ok.mp4")
    a = judge("a kite over a beach", clip, tmp_path, sb)
    b = judge("a kite over a beach", clip, tmp_path, sb)
    assert [c.value for c in a.checks] == [c.value for c in b.checks]


def test_off_prompt_clip_fails_adherence(sb: SandboxServer, tmp_path: Path) -> None:
    clip = clip_file(tmp_path / "off.mp4", defect="off_prompt")
    r = judge("a red fox running through snow", clip, tmp_path, sb)
    assert r.verdict == "fail"
    by = {c.name: c for c in r.checks}
    assert by["judge_prompt_adherence"].verdict == "fail"
    assert by["judge_prompt_adherence"].value == 2
    assert "not what the prompt asks" in (by["judge_prompt_adherence"].detail or "")
    assert [c.name for c in r.failed_checks] == ["judge_prompt_adherence"]
    assert r.cost_usd > 0  # a verdict that fails the clip is still paid for


def test_scripted_rating_at_the_threshold(sb: SandboxServer, tmp_path: Path) -> None:
    clip = clip_file(tmp_path / "ok.mp4")
    at = judge("a ball bouncing [judge:physics=5]", clip, tmp_path, sb)
    under = judge("a ball bouncing [judge:physics=4]", clip, tmp_path, sb)
    assert {c.name: c.verdict for c in at.checks}["judge_physics"] == "pass"
    assert {c.name: c.verdict for c in under.checks}["judge_physics"] == "fail"
    assert under.verdict == "fail"


def test_cap_skips_before_calling(
    sb: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = clip_file(tmp_path / "ok.mp4")
    estimate = _judge.estimate_cost("gemini-2.5-flash", 2.0, "a fox", 1024)
    before = judge_calls(sb)
    monkeypatch.setenv("VIDGATE_JUDGE_MAX_USD", str(estimate * 0.99))
    r = judge("a fox", clip, tmp_path, sb)
    assert judge_calls(sb) == before
    assert r.verdict == "skipped"
    assert r.cost_usd == 0.0
    assert "over the" in (r.checks[0].detail or "")
    monkeypatch.setenv("VIDGATE_JUDGE_MAX_USD", str(estimate))
    assert judge("a fox", clip, tmp_path, sb).verdict == "pass"
    assert judge_calls(sb) == before + 1


def test_a_refused_key_is_an_error_verdict_with_nothing_booked(
    sb: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = clip_file(tmp_path / "ok.mp4")
    monkeypatch.setenv("VIDGATE_JUDGE_BASE_URL", f"{sb.url}/gemini-veo")
    monkeypatch.setenv("GEMINI_API_KEY", "invalid-key")
    r = judge("a fox", clip, tmp_path, sb)
    assert r.verdict == "error"
    assert r.cost_usd == 0.0
    assert "answered 400: API key not valid" in (r.checks[0].detail or "")


def test_unknown_judge_model_fails_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    from vidgate.stages.base import StageUnavailable

    monkeypatch.setenv("VIDGATE_JUDGE_MODEL", "gemini-9-ultra")
    with pytest.raises(StageUnavailable, match="no price for judge model 'gemini-9-ultra'"):
        SemanticStage().check_ready(None)


def test_engine_hooks_follow_the_gate_in_force() -> None:
    stage = SemanticStage()
    job = job_for("a fox", QualityGate())  # the request asks for nothing itself
    # a tenant default asking for the judge applies; one asking for neither does not
    assert stage.applies_to(job, QualityGate(judge=True))
    assert stage.applies_to(job, QualityGate(clip=True))
    assert not stage.applies_to(job, QualityGate())
    # the worst case the engine reserves: the judge call's estimate; CLIP alone is free
    assert stage.estimate_cost_usd(job, QualityGate(clip=True)) == 0.0
    want = _judge.estimate_cost("gemini-2.5-flash", 5.0, "a fox", 1024)
    assert stage.estimate_cost_usd(job, QualityGate(judge=True)) == want
    assert want > 0


def test_a_clip_over_the_inline_limit_is_not_sent(
    sb: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = clip_file(tmp_path / "ok.mp4")
    size = clip.stat().st_size
    before = judge_calls(sb)
    monkeypatch.setattr(_judge, "INLINE_LIMIT_BYTES", size - 1)
    r = judge("a fox", clip, tmp_path, sb)
    assert r.verdict == "skipped"
    assert "inline" in (r.checks[0].detail or "")
    assert judge_calls(sb) == before
    monkeypatch.setattr(_judge, "INLINE_LIMIT_BYTES", size)  # at the limit: sent
    assert judge("a fox", clip, tmp_path, sb).verdict == "pass"
    assert judge_calls(sb) == before + 1
