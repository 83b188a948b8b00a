"""The OpenAI Videos adapter, over real HTTP: against the sandbox's emulation, and against a
scripted server for the error paths the emulation does not produce."""

from __future__ import annotations

import asyncio
import io
import json

import av
import httpx
import pytest

from tests.scripted import Scripted, scripted_server
from vidgate.catalog.loader import Catalog
from vidgate.errors import (
    AmbiguousSubmission,
    AuthFailed,
    CapabilityMismatch,
    ContentRejected,
    InvalidRequest,
    ProviderProtocolError,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
)
from vidgate.providers.base import ProviderJob, RemoteState
from vidgate.providers.openai_videos import STATUS, OpenAIVideos
from vidgate.sandbox.app import SandboxServer
from vidgate.sandbox.core import FaultConfig, FaultRule
from vidgate.settings import Credentials
from vidgate.types import VideoRequest

KEY = {"OPENAI_API_KEY": "sk-test-not-a-real-key"}


def adapter(http: httpx.AsyncClient, base_url: str) -> OpenAIVideos:
    return OpenAIVideos(client=http, credentials=Credentials(KEY), base_url=base_url)


def sandbox_base(sandbox: SandboxServer) -> str:
    return f"{sandbox.url}/openai-videos/v1"


async def poll_until_done(a: OpenAIVideos, job: ProviderJob) -> list[str]:
    seen = []
    for _ in range(400):
        status = await a.poll(job)
        seen.append(status.raw)
        if status.state.terminal:
            return seen
        await asyncio.sleep(status.poll_after_s or 0.02)
    raise AssertionError(f"job never finished: {seen[-5:]}")


async def test_submit_poll_fetch_decodes(http, sandbox, mini_catalog: Catalog) -> None:
    a = adapter(http, sandbox_base(sandbox))
    offering = mini_catalog.offering("alpha-openai")
    req = VideoRequest(prompt="a calico cat playing piano", duration_s=4, aspect_ratio="9:16")
    job = await a.submit(req, offering, idempotency_key="k1")
    assert job.remote_id.startswith("video_")
    assert job.base_url == sandbox_base(sandbox)
    assert job.credential_ref == ("OPENAI_API_KEY",)
    # The serialised job is all a later process needs to continue it.
    assert ProviderJob.model_validate_json(job.model_dump_json()) == job

    seen = await poll_until_done(a, job)
    assert seen[-1] == "completed"
    assert set(seen) <= {"queued", "in_progress", "completed"}

    [asset] = await a.fetch(job)
    assert asset.headers["Authorization"] == "Bearer sk-test-not-a-real-key"
    resp = await http.get(asset.url, headers=dict(asset.headers))
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(resp.content)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (720, 1280)
        assert sum(1 for _ in c.decode(video=0)) == 4 * 24
        assert len(c.streams.audio) == 1  # alpha's audio is "always"


async def test_request_body_uses_string_seconds_and_sizes(http, mini_catalog: Catalog) -> None:
    a = adapter(http, "http://unused")
    offering = mini_catalog.offering("alpha-openai")
    body = a.body(VideoRequest(prompt="x", duration_s=7.6, resolution="1080p"), offering)
    assert body["seconds"] == "8"  # the nearest allowed value, sent as a string
    assert body["size"] == "1920x1080"
    assert body["model"] == "alpha-1"


async def test_size_outside_declared_sizes_is_rejected_before_any_call(http, mini_catalog):
    offering = mini_catalog.offering("alpha-openai").model_copy(
        update={"adapter_options": {"sizes": "1280x720,720x1280"}}
    )
    a = adapter(http, "http://127.0.0.1:9")  # nothing listens there: no call may be made
    with pytest.raises(CapabilityMismatch, match="1920x1080"):
        a.check(VideoRequest(prompt="x", resolution="1080p"), offering)


async def test_numeric_seconds_is_a_400_like_the_real_api(http, sandbox) -> None:
    resp = await http.post(
        f"{sandbox_base(sandbox)}/videos",
        json={"prompt": "x", "model": "alpha-1", "seconds": 4},
        headers={"Authorization": "Bearer k"},
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "seconds"


async def test_missing_key_is_401_and_maps_to_auth_failed(http, sandbox, mini_catalog) -> None:
    resp = await http.get(f"{sandbox_base(sandbox)}/videos/video_x")
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "invalid_api_key"
    a = OpenAIVideos(client=http, credentials=Credentials({}), base_url=sandbox_base(sandbox))
    with pytest.raises(AuthFailed, match="OPENAI_API_KEY"):
        await a.submit(
            VideoRequest(prompt="x", duration_s=4),
            mini_catalog.offering("alpha-openai"),
            idempotency_key="k",
        )


async def test_idempotency_key_replays_the_same_job(http, sandbox, mini_catalog) -> None:
    a = adapter(http, sandbox_base(sandbox))
    req = VideoRequest(prompt="same", duration_s=4)
    offering = mini_catalog.offering("alpha-openai")
    first = await a.submit(req, offering, idempotency_key="once")
    second = await a.submit(req, offering, idempotency_key="once")
    assert first.remote_id == second.remote_id
    assert sandbox.core.store.stats()["creates"] == 1


async def test_moderation_failure_maps_to_content_rejected(http, sandbox, mini_catalog) -> None:
    a = adapter(http, sandbox_base(sandbox))
    job = await a.submit(
        VideoRequest(prompt="[unsafe] something", duration_s=4),
        mini_catalog.offering("alpha-openai"),
        idempotency_key="m",
    )
    await poll_until_done(a, job)
    status = await a.poll(job)
    assert status.state is RemoteState.FAILED
    assert isinstance(status.error, ContentRejected)
    assert not status.error.retryable


async def test_sandbox_rate_limit_fault_carries_retry_after(http, sandbox, mini_catalog) -> None:
    sandbox.core.faults = FaultConfig(
        rules=[FaultRule(kind="rate_limit", rate=1.0, retry_after_s=7)]
    )
    a = adapter(http, sandbox_base(sandbox))
    with pytest.raises(RateLimited) as info:
        await a.submit(
            VideoRequest(prompt="x", duration_s=4),
            mini_catalog.offering("alpha-openai"),
            idempotency_key="r",
        )
    assert info.value.retry_after == 7
    assert info.value.retryable
    assert info.value.request_id
    assert info.value.request_id.startswith("req_")
    assert sandbox.core.store.stats()["creates"] == 0


async def test_dropped_create_is_ambiguous_and_recorded_once(sandbox, mini_catalog) -> None:
    sandbox.core.faults = FaultConfig(rules=[FaultRule(kind="drop", rate=1.0)], hang_s=3)
    async with httpx.AsyncClient(timeout=httpx.Timeout(0.5)) as short:
        a = adapter(short, sandbox_base(sandbox))
        with pytest.raises(AmbiguousSubmission):
            await a.submit(
                VideoRequest(prompt="x", duration_s=4),
                mini_catalog.offering("alpha-openai"),
                idempotency_key="d",
            )
    stats = sandbox.core.store.stats()
    assert stats["creates"] == 1  # the job exists at the provider: resubmitting would pay twice
    assert stats["events"]["dropped_response"] == 1


async def test_connection_refused_is_retryable_unavailable(http, mini_catalog) -> None:
    a = adapter(http, "http://127.0.0.1:9/v1")
    with pytest.raises(ProviderUnavailable) as info:
        await a.submit(
            VideoRequest(prompt="x", duration_s=4),
            mini_catalog.offering("alpha-openai"),
            idempotency_key="c",
        )
    assert info.value.retryable


@pytest.mark.parametrize(
    ("reply", "error", "retryable"),
    [
        (
            Scripted(
                429,
                {"error": {"message": "slow down", "type": "requests"}},
                {"retry-after": "3", "x-request-id": "req_abc"},
            ),
            RateLimited,
            True,
        ),
        (Scripted(503, {"error": {"message": "overloaded"}}), ProviderUnavailable, True),
        (Scripted(401, {"error": {"message": "bad key"}}), AuthFailed, False),
        (
            Scripted(
                400,
                {"error": {"message": "Your request was blocked.", "code": "moderation_blocked"}},
            ),
            ContentRejected,
            False,
        ),
        (
            Scripted(
                429,
                {
                    "error": {
                        "message": "You exceeded your current quota.",
                        "code": "insufficient_quota",
                    }
                },
            ),
            QuotaExhausted,
            False,
        ),
        (
            Scripted(400, {"error": {"message": "Invalid size", "param": "size"}}),
            InvalidRequest,
            False,
        ),
        (Scripted(200, {"object": "video"}), ProviderProtocolError, False),
    ],
)
async def test_create_error_mapping(http, mini_catalog, reply, error, retryable) -> None:
    with scripted_server() as (sp, url):
        sp.script("POST", reply)
        a = adapter(http, url + "/v1")
        with pytest.raises(error) as info:
            await a.submit(
                VideoRequest(prompt="x", duration_s=4),
                mini_catalog.offering("alpha-openai"),
                idempotency_key="e",
            )
    assert info.value.retryable is retryable
    assert info.value.provider == "openai-videos"
    if reply.status == 429 and error is RateLimited:
        assert info.value.retry_after == 3
        assert info.value.request_id == "req_abc"
    # exactly one create was sent: nothing retried it
    assert [m for m, *_ in sp.seen] == ["POST"]
    sent = json.loads(sp.seen[0][3])
    assert sent["seconds"] == "4"
    assert sp.seen[0][2]["idempotency-key"] == "e"


async def test_unknown_status_is_an_error_not_queued(http) -> None:
    with scripted_server() as (sp, url):
        sp.script("GET", Scripted(200, {"id": "video_1", "status": "thinking", "progress": 3}))
        a = adapter(http, url + "/v1")
        job = ProviderJob(
            protocol="openai-videos",
            offering_id="alpha-openai",
            remote_id="video_1",
            base_url=url + "/v1",
            credential_ref=("OPENAI_API_KEY",),
        )
        with pytest.raises(ProviderProtocolError, match="thinking"):
            await a.poll(job)
        # the status call went to the stored base URL, to the stored id
        assert sp.seen[0][1] == "/v1/videos/video_1"


def test_status_table_is_exactly_the_documented_strings() -> None:
    assert set(STATUS) == {"queued", "in_progress", "completed", "failed"}
