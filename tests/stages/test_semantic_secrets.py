"""The judge's API key goes only to the configured Gemini base, in the x-goog-api-key
header: never into the stage's result (what the job record stores), its errors or the logs,
whether the key is taken or refused."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.stages.semantic_support import clip_file, context, job_for
from vidgate.catalog.loader import load_catalog
from vidgate.sandbox.app import SandboxServer
from vidgate.stages.base import StageResult
from vidgate.stages.semantic import SemanticStage
from vidgate.types import QualityGate

SECRET = "AIzaSy-reviewer-secret-0123456789abcdef"
#: the key the sandbox's Gemini emulation refuses (400 API key not valid)
REFUSED = "invalid-key"


@pytest.fixture(scope="module")
def sb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    server = SandboxServer(tmp_path_factory.mktemp("sb"), load_catalog(), time_scale=0.002)
    server.start()
    yield server
    server.stop()


def _judged(clip: Path, tmp: Path, sent: list[httpx.Request]) -> StageResult:
    job = job_for("a fox", QualityGate(judge=True))

    async def record(request: httpx.Request) -> None:
        sent.append(request)

    async def go() -> StageResult:
        async with httpx.AsyncClient(event_hooks={"request": [record]}) as client:
            # no sandbox_url: the configured base and the environment's key are used
            return await SemanticStage().run(context(job, clip, tmp, client=client))

    return asyncio.run(go())


@pytest.mark.parametrize("key", [SECRET, REFUSED])
def test_the_judge_key_is_sent_only_in_its_header_and_stored_nowhere(
    key: str,
    sb: SandboxServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    base = f"{sb.url}/gemini-veo"
    monkeypatch.setenv("VIDGATE_JUDGE_BASE_URL", base)
    monkeypatch.setenv("GEMINI_API_KEY", key)
    monkeypatch.delenv("VIDGATE_JUDGE_MAX_USD", raising=False)
    monkeypatch.delenv("VIDGATE_JUDGE_MODEL", raising=False)
    sent: list[httpx.Request] = []
    with caplog.at_level(logging.DEBUG):
        result = _judged(clip_file(tmp_path / "clip.mp4"), tmp_path, sent)
    # taken (a verdict) or refused (an error verdict): either way one call, to the base
    assert result.verdict == ("error" if key == REFUSED else "pass"), result
    assert len(sent) == 1
    assert str(sent[0].url).startswith(base + "/v1beta/models/")
    assert sent[0].headers["x-goog-api-key"] == key
    assert key not in str(sent[0].url)
    stored = result.model_dump_json()  # what the job record keeps
    assert key not in stored
    assert key not in caplog.text
