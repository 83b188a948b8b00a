"""The Luma adapter (Dream Machine, and the Agents API behind ``adapter_options.api``), over
real HTTP: against the sandbox's emulation, and against a scripted server replaying the
response shapes in tests/fixtures/luma (recorded from provider-apis.md §4a/§4b and Luma's
error docs) for the paths the emulation does not produce."""

from __future__ import annotations

import asyncio
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from tests.conftest import FIXTURES
from tests.scripted import Scripted, scripted_server
from vidgate.catalog.loader import load_catalog
from vidgate.catalog.schema import DurationSpec, Offering
from vidgate.errors import (
    AmbiguousSubmission,
    AuthFailed,
    CapabilityMismatch,
    ConfigError,
    ContentRejected,
    InvalidRequest,
    ProviderProtocolError,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
)
from vidgate.providers.base import ProviderJob, RemoteState
from vidgate.providers.luma import AGENTS_STATUS, STATUS, Luma
from vidgate.sandbox.app import SandboxServer
from vidgate.sandbox.core import INVALID_CREDENTIAL, FaultConfig, FaultRule
from vidgate.settings import Credentials
from vidgate.types import Reference, ReferenceKind, ReferenceRole, VideoRequest

CATALOG = load_catalog()
KEY = {"LUMAAI_API_KEY": "luma-test-not-a-real-key", "LUMA_AGENTS_API_KEY": "luma-api-agents"}
PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP8z8DA"
    "wMDAxMDAwMDAAAANHQEDasKb6QAAAABJRU5ErkJggg=="
)
FIRST = Reference(role=ReferenceRole.FIRST_FRAME, url="https://example.com/start.png")
LAST = Reference(role=ReferenceRole.LAST_FRAME, url="https://example.com/end.png")


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / "luma" / name).read_text())


def ray314() -> Offering:
    return CATALOG.offering("luma-ray-3.14-luma")


def agents_offering() -> Offering:
    """A ray-3.2 offering on the Agents API (the catalog has none yet: no ray-3.2 model)."""
    return ray314().model_copy(
        update={
            "id": "luma-ray-3.2-agents",
            "provider_model_id": "ray-3.2",
            "credential_env": ["LUMA_AGENTS_API_KEY"],
            "adapter_options": {"api": "agents"},
            "capabilities": ray314().capabilities.model_copy(
                update={"durations": DurationSpec(values=[5, 10])}
            ),
        }
    )


def adapter(http: httpx.AsyncClient, base_url: str | None) -> Luma:
    return Luma(client=http, credentials=Credentials(KEY), base_url=base_url)


def job_at(url: str, remote_id: str = "gen-1", api: str = "dream-machine") -> ProviderJob:
    return ProviderJob(
        protocol="luma",
        offering_id="luma-ray-3.14-luma",
        remote_id=remote_id,
        base_url=url,
        credential_ref=("LUMA_AGENTS_API_KEY",) if api == "agents" else ("LUMAAI_API_KEY",),
        extra={"api": api},
    )


@pytest.fixture
def lsb(tmp_path: Path) -> Iterator[SandboxServer]:
    server = SandboxServer(tmp_path / "sandbox", CATALOG, time_scale=0.002).start()
    yield server
    server.stop()


def dm_base(sb: SandboxServer) -> str:
    return f"{sb.url}/luma/dream-machine/v1"


async def poll_until_done(a: Luma, job: ProviderJob) -> list[str]:
    seen: list[str] = []
    for _ in range(600):
        status = await a.poll(job)
        if not seen or seen[-1] != status.raw:
            seen.append(status.raw)
        if status.state.terminal:
            return seen
        await asyncio.sleep(0.02)
    raise AssertionError(f"job never finished: {seen}")


async def decode(http: httpx.AsyncClient, url: str) -> tuple[int, int, int, int]:
    resp = await http.get(url)
    assert resp.status_code == 200
    with av.open(io.BytesIO(resp.content)) as c:
        v = c.streams.video[0]
        size = (v.codec_context.width, v.codec_context.height)
        frames = sum(1 for _ in c.decode(video=0))
        return size[0], size[1], frames, len(c.streams.audio)


# -- against the sandbox -------------------------------------------------------------------


async def test_dream_machine_lifecycle_and_download(http, lsb) -> None:
    a = adapter(http, dm_base(lsb))
    req = VideoRequest(prompt="a lighthouse in a storm", duration_s=5, resolution="720p")
    job = await a.submit(req, ray314(), idempotency_key="k1")
    assert job.base_url == dm_base(lsb)
    assert job.credential_ref == ("LUMAAI_API_KEY",)
    assert job.extra == {"api": "dream-machine"}
    assert ProviderJob.model_validate_json(job.model_dump_json()) == job

    seen = await poll_until_done(a, job)
    assert seen[-1] == "completed"
    assert set(seen) <= {"queued", "dreaming", "completed"}

    [asset] = await a.fetch(job)
    assert asset.url.startswith(lsb.url)
    assert "/sandbox/files/" in asset.url
    assert dict(asset.headers) == {}  # a presigned link: the Luma key never goes to the CDN
    assert await decode(http, asset.url) == (1280, 720, 5 * 24, 0)  # no native audio


async def test_agents_lifecycle_and_download(http, lsb) -> None:
    a = adapter(http, dm_base(lsb))
    req = VideoRequest(
        prompt="a paper boat on a lake",
        mode="image-to-video",
        duration_s=5,
        resolution="540p",
        aspect_ratio="9:16",
        references=[Reference(role=ReferenceRole.FIRST_FRAME, url=PNG)],
    )
    job = await a.submit(req, agents_offering(), idempotency_key="k2")
    assert job.base_url == f"{lsb.url}/luma/v1"  # the Agents API's own path, beside DM's
    assert job.extra == {"api": "agents"}
    seen = await poll_until_done(a, job)
    assert seen[-1] == "completed"
    assert set(seen) <= {"queued", "processing", "completed"}
    [asset] = await a.fetch(job)
    assert await decode(http, asset.url) == (540, 960, 5 * 24, 0)


async def test_moderation_in_both_apis_is_content_rejected(http, lsb) -> None:
    a = adapter(http, dm_base(lsb))
    for offering, reason in ((ray314(), "moderation"), (agents_offering(), "content guidelines")):
        job = await a.submit(
            VideoRequest(prompt="[unsafe] a lighthouse"), offering, idempotency_key="m"
        )
        await poll_until_done(a, job)
        status = await a.poll(job)
        assert status.state is RemoteState.FAILED
        assert isinstance(status.error, ContentRejected)
        assert reason in status.error.message


async def test_luma_has_no_idempotency_key_so_each_create_is_a_new_job(http, lsb) -> None:
    a = adapter(http, dm_base(lsb))
    req = VideoRequest(prompt="same prompt twice")
    first = await a.submit(req, ray314(), idempotency_key="once")
    second = await a.submit(req, ray314(), idempotency_key="once")
    # Like the real API: no dedup exists, which is why creates are never retried blindly.
    assert first.remote_id != second.remote_id
    assert lsb.core.store.stats()["creates"] == 2


async def test_dropped_create_is_ambiguous_and_recorded_once(lsb) -> None:
    lsb.core.faults = FaultConfig(rules=[FaultRule(kind="drop", rate=1.0)], hang_s=2)
    async with httpx.AsyncClient(timeout=0.4) as short:
        with pytest.raises(AmbiguousSubmission):
            await adapter(short, dm_base(lsb)).submit(
                VideoRequest(prompt="a lighthouse"), ray314(), idempotency_key="d"
            )
    assert lsb.core.store.stats()["creates"] == 1


async def test_sandbox_rate_limit_carries_retry_after_and_request_id(http, lsb) -> None:
    lsb.core.faults = FaultConfig(rules=[FaultRule(kind="rate_limit", rate=1.0, retry_after_s=7)])
    with pytest.raises(RateLimited) as info:
        await adapter(http, dm_base(lsb)).submit(
            VideoRequest(prompt="a lighthouse"), ray314(), idempotency_key="r"
        )
    assert info.value.retry_after == 7
    assert info.value.request_id


async def test_invalid_key_is_auth_failed_in_luma_error_shape(http, lsb) -> None:
    resp = await http.get(
        f"{dm_base(lsb)}/generations/x", headers={"Authorization": f"Bearer {INVALID_CREDENTIAL}"}
    )
    assert resp.status_code == 401
    assert resp.json() == fixture("error_auth.json")
    bad = Luma(
        client=http,
        credentials=Credentials({"LUMAAI_API_KEY": INVALID_CREDENTIAL}),
        base_url=dm_base(lsb),
    )
    with pytest.raises(AuthFailed):
        await bad.submit(VideoRequest(prompt="a lighthouse"), ray314(), idempotency_key="a")


async def test_emulator_refuses_what_the_real_api_refuses(http, lsb) -> None:
    h = {"Authorization": "Bearer k"}
    url = f"{dm_base(lsb)}/generations/video"
    base = {"model": "ray-3-14", "prompt": "a lighthouse in a storm"}
    # duration is a string on the wire ("5s"); a number is a validation error
    resp = await http.post(url, json={**base, "duration": 5}, headers=h)
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["body", "duration"]
    resp = await http.post(
        url,
        json={**base, "loop": True, "keyframes": {"frame1": {"type": "image", "url": "https://x"}}},
        headers=h,
    )
    assert (resp.status_code, resp.json()) == (400, fixture("error_loop_end_frame.json"))
    resp = await http.post(url, json={**base, "prompt": "ab"}, headers=h)
    assert (resp.status_code, resp.json()) == (400, fixture("error_prompt_too_short.json"))


async def test_emulator_list_delete_and_legacy_create(http, lsb) -> None:
    h = {"Authorization": "Bearer k"}
    body = {"generation_type": "video", "model": "ray-2", "prompt": "a lighthouse in a storm"}
    created = await http.post(f"{dm_base(lsb)}/generations", json=body, headers=h)
    assert created.status_code == 201
    gen = created.json()
    assert set(gen) == set(fixture("dm_create.json"))
    assert gen["state"] == "queued"
    assert gen["assets"]["video"] is None
    listed = (await http.get(f"{dm_base(lsb)}/generations?limit=10", headers=h)).json()
    assert set(listed) == set(fixture("dm_list.json"))
    assert [g["id"] for g in listed["generations"]] == [gen["id"]]
    deleted = await http.delete(f"{dm_base(lsb)}/generations/{gen['id']}", headers=h)
    assert deleted.status_code == 204
    gone = await http.get(f"{dm_base(lsb)}/generations/{gen['id']}", headers=h)
    assert gone.status_code == 404


# -- request mapping -----------------------------------------------------------------------


def test_dream_machine_body(http) -> None:
    a = adapter(http, None)
    req = VideoRequest(
        prompt="a lighthouse",
        mode="first-last-frame",
        duration_s=8.6,
        resolution="1080p",
        aspect_ratio="21:9",
        seed=42,
        references=[FIRST, LAST],
        provider_options={
            "luma": {"concepts": ["dolly_zoom"], "callback_url": "https://me.example/hook"}
        },
    )
    assert a.body(req, ray314()) == {
        "generation_type": "video",
        "model": "ray-3-14",
        "prompt": "a lighthouse",
        "aspect_ratio": "21:9",
        "duration": "9s",  # the nearest allowed value, as a string
        "resolution": "1080p",
        "keyframes": {
            "frame0": {"type": "image", "url": "https://example.com/start.png"},
            "frame1": {"type": "image", "url": "https://example.com/end.png"},
        },
        "concepts": [{"key": "dolly_zoom"}],
        "callback_url": "https://me.example/hook",
    }


def test_agents_body_and_base_url(http) -> None:
    a = adapter(http, None)
    req = VideoRequest(
        prompt="a lighthouse",
        mode="first-last-frame",
        duration_s=9,
        resolution="720p",
        references=[FIRST, Reference(role=ReferenceRole.LAST_FRAME, url=PNG)],
        provider_options={"luma": {"hdr": True, "user_id": "u-1"}},
    )
    assert a.body(req, agents_offering()) == {
        "model": "ray-3.2",
        "type": "video",
        "prompt": "a lighthouse",
        "aspect_ratio": "16:9",
        "user_id": "u-1",
        "video": {
            "duration": "10s",
            "resolution": "720p",
            "start_frame": {"url": "https://example.com/start.png"},
            "end_frame": {"data": PNG.split(",", 1)[1], "media_type": "image/png"},
            "hdr": True,
        },
    }
    assert a.base_url_for(a.api_for(agents_offering())) == "https://agents.lumalabs.ai/v1"
    assert a.base_url_for(a.api_for(ray314())) == "https://api.lumalabs.ai/dream-machine/v1"


def _with(offering: Offering, **caps: Any) -> Offering:
    return offering.model_copy(
        update={"capabilities": offering.capabilities.model_copy(update=caps)}
    )


@pytest.mark.parametrize(
    ("request_kw", "offering", "error", "match"),
    [
        ({"resolution": "480p"}, ray314, CapabilityMismatch, "480p"),
        ({"resolution": "4k"}, agents_offering, CapabilityMismatch, "4k"),
        ({"aspect_ratio": "2:1"}, ray314, CapabilityMismatch, "2:1"),
        ({"negative_prompt": "blur"}, ray314, CapabilityMismatch, "negative"),
        (
            {"mode": "image-to-video", "references": [Reference(role="first_frame", url=PNG)]},
            ray314,
            CapabilityMismatch,
            "by URL",
        ),
        ({"references": [Reference(role="style", url=PNG)]}, ray314, CapabilityMismatch, "style"),
        (
            {"references": [Reference(role="audio", kind=ReferenceKind.AUDIO, url=PNG)]},
            ray314,
            CapabilityMismatch,
            "audio",
        ),
        ({"duration_s": 9}, lambda: _with(agents_offering(), durations=DurationSpec(values=[5, 9])),
         CapabilityMismatch, "9s"),
        ({"duration_s": 5}, lambda: _with(ray314(), durations=DurationSpec(values=[5.5])),
         CapabilityMismatch, "5.5s"),
        ({"prompt": "ab"}, ray314, InvalidRequest, "3..5000"),
        ({"prompt": "x" * 5001}, ray314, InvalidRequest, "5001"),
        ({"provider_options": {"luma": {"seed": 1}}}, ray314, InvalidRequest, "seed"),
        ({"provider_options": {"luma": {"loop": "yes"}}}, ray314, InvalidRequest, "bool"),
        ({"provider_options": {"luma": {"hdr": True}}}, ray314, InvalidRequest, "hdr"),
        (
            {"mode": "first-last-frame", "references": [FIRST, LAST],
             "provider_options": {"luma": {"loop": True}}},
            ray314,
            InvalidRequest,
            "end frame",
        ),
        ({"duration_s": 10, "provider_options": {"luma": {"loop": True}}}, agents_offering,
         InvalidRequest, "10s"),
        ({"provider_options": {"luma": {"exr_export": True}}}, agents_offering, InvalidRequest,
         "hdr"),
        ({}, lambda: ray314().model_copy(update={"adapter_options": {"api": "v9"}}), ConfigError,
         "v9"),
    ],
)  # fmt: skip
async def test_wire_limits_are_refused_before_any_call(
    http, request_kw, offering, error, match
) -> None:
    with scripted_server() as (sp, url):
        a = adapter(http, url + "/dream-machine/v1")
        req = VideoRequest(**{"prompt": "a lighthouse", **request_kw})
        with pytest.raises(error, match=match):
            a.check(req, offering())
        with pytest.raises(error, match=match):
            await a.submit(req, offering(), idempotency_key="c")
    assert sp.seen == []  # nothing was sent


# -- error bodies (scripted) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "error", "retryable"),
    [
        (
            Scripted(
                429,
                fixture("error_rate_limit.json"),
                {"retry-after": "3", "x-request-id": "req-429"},
            ),
            RateLimited,
            True,
        ),
        (Scripted(503, {"detail": "Service unavailable"}), ProviderUnavailable, True),
        (Scripted(502, {"detail": "Upstream service unavailable"}), ProviderUnavailable, True),
        (Scripted(401, fixture("error_auth.json")), AuthFailed, False),
        (Scripted(403, {"detail": "Access denied"}), AuthFailed, False),
        (Scripted(400, fixture("error_moderation.json")), ContentRejected, False),
        (Scripted(402, fixture("error_insufficient_credits.json")), QuotaExhausted, False),
        (Scripted(400, {"detail": "Insufficient credits for this request"}), QuotaExhausted, False),
        (Scripted(400, fixture("error_prompt_too_short.json")), InvalidRequest, False),
        (Scripted(422, fixture("error_validation.json")), InvalidRequest, False),
        (Scripted(201, {"state": "queued"}), ProviderProtocolError, False),
    ],
)
async def test_create_error_mapping(http, reply, error, retryable) -> None:
    with scripted_server() as (sp, url):
        sp.script("POST", reply)
        a = adapter(http, url + "/dream-machine/v1")
        with pytest.raises(error) as info:
            await a.submit(VideoRequest(prompt="a lighthouse"), ray314(), idempotency_key="e")
    assert info.value.retryable is retryable
    assert info.value.provider == "luma"
    if reply.status == 429:
        assert info.value.retry_after == 3
        assert info.value.request_id == "req-429"
    if reply.status == 422:
        assert "duration" in info.value.message  # FastAPI's list detail is made readable
    # exactly one create was sent, to the documented path, with no idempotency header
    assert [(m, p) for m, p, *_ in sp.seen] == [("POST", "/dream-machine/v1/generations/video")]
    assert "idempotency-key" not in sp.seen[0][2]
    assert sp.seen[0][2]["authorization"] == "Bearer luma-test-not-a-real-key"
    assert json.loads(sp.seen[0][3])["duration"] == "5s"


async def test_create_keeps_the_id_and_the_agents_path(http) -> None:
    with scripted_server() as (sp, url):
        sp.script("POST", Scripted(201, fixture("dm_create.json")))
        sp.script("POST", Scripted(201, fixture("agents_create.json")))
        a = adapter(http, url + "/dream-machine/v1")
        dm = await a.submit(VideoRequest(prompt="a lighthouse"), ray314(), idempotency_key="1")
        ag = await a.submit(
            VideoRequest(prompt="a lighthouse"), agents_offering(), idempotency_key="2"
        )
    assert dm.remote_id == fixture("dm_create.json")["id"]
    assert ag.remote_id == fixture("agents_create.json")["id"]
    assert ag.base_url == url + "/v1"
    assert [p for _, p, *_ in sp.seen] == ["/dream-machine/v1/generations/video", "/v1/generations"]
    assert sp.seen[1][2]["authorization"] == "Bearer luma-api-agents"


# -- recorded response shapes --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "api", "state", "error"),
    [
        ("dm_queued.json", "dream-machine", RemoteState.QUEUED, None),
        ("dm_dreaming.json", "dream-machine", RemoteState.RUNNING, None),
        ("dm_completed.json", "dream-machine", RemoteState.SUCCEEDED, None),
        ("dm_failed_moderation.json", "dream-machine", RemoteState.FAILED, ContentRejected),
        ("dm_failed_blacklisted.json", "dream-machine", RemoteState.FAILED, ContentRejected),
        ("dm_failed_frames.json", "dream-machine", RemoteState.FAILED, ProviderUnavailable),
        ("agents_create.json", "agents", RemoteState.QUEUED, None),
        ("agents_processing.json", "agents", RemoteState.RUNNING, None),
        ("agents_completed.json", "agents", RemoteState.SUCCEEDED, None),
        ("agents_failed_moderated.json", "agents", RemoteState.FAILED, ContentRejected),
        ("agents_failed_budget.json", "agents", RemoteState.FAILED, QuotaExhausted),
        ("agents_failed_generation.json", "agents", RemoteState.FAILED, ProviderUnavailable),
        ("agents_failed_corrupt.json", "agents", RemoteState.FAILED, InvalidRequest),
    ],
)
async def test_poll_parses_recorded_shapes(http, name, api, state, error) -> None:
    data = fixture(name)
    with scripted_server() as (sp, url):
        sp.script("GET", Scripted(200, data, {"x-request-id": "req-poll"}))
        status = await adapter(http, "http://unused").poll(job_at(url, data["id"], api))
    # the status call went to the stored base URL and id, never the adapter's own base
    assert sp.seen[0][1] == f"/generations/{data['id']}"
    assert status.state is state
    assert status.raw == data["state"]
    if error is None:
        assert status.error is None
    else:
        assert type(status.error) is error
        assert data["failure_reason"] in status.error.message
        assert status.error.request_id == "req-poll"


@pytest.mark.parametrize(
    ("api", "raw"), [("dream-machine", "thinking"), ("dream-machine", "processing"),
                     ("agents", "dreaming")]
)  # fmt: skip
async def test_unknown_status_is_an_error_not_queued(http, api, raw) -> None:
    with scripted_server() as (sp, url):
        sp.script("GET", Scripted(200, {"id": "gen-1", "state": raw}))
        with pytest.raises(ProviderProtocolError, match=raw):
            await adapter(http, url).poll(job_at(url, api=api))


async def test_fetch_returns_the_presigned_video_without_auth(http) -> None:
    with scripted_server() as (sp, url):
        sp.script(
            "GET",
            Scripted(200, fixture("dm_completed.json")),
            Scripted(200, fixture("agents_completed.json")),
        )
        a = adapter(http, url)
        [dm] = await a.fetch(job_at(url))
        [ag] = await a.fetch(job_at(url, api="agents"))
    assert dm.url == fixture("dm_completed.json")["assets"]["video"]
    assert ag.url == fixture("agents_completed.json")["output"][0]["url"]
    assert dict(dm.headers) == {}
    assert dict(ag.headers) == {}
    assert dm.content_type == "video/mp4"


async def test_fetch_refuses_unfinished_or_empty_generations(http) -> None:
    empty = {**fixture("dm_completed.json"), "assets": {"video": None}}
    with scripted_server() as (sp, url):
        sp.script("GET", Scripted(200, fixture("dm_dreaming.json")), Scripted(200, empty))
        a = adapter(http, url)
        with pytest.raises(InvalidRequest, match="dreaming"):
            await a.fetch(job_at(url))
        with pytest.raises(ProviderProtocolError, match="no video"):
            await a.fetch(job_at(url))


async def test_there_is_no_cancel(http) -> None:
    assert Luma.supports_cancel is False
    with pytest.raises(InvalidRequest, match="cannot cancel"):
        await adapter(http, "http://127.0.0.1:9").cancel(job_at("http://127.0.0.1:9"))


def test_status_tables_are_exactly_the_documented_strings() -> None:
    assert set(STATUS) == {"queued", "dreaming", "completed", "failed"}
    assert set(AGENTS_STATUS) == {"queued", "processing", "completed", "failed"}


# -- the real API --------------------------------------------------------------------------


@pytest.mark.live
@pytest.mark.skipif(not os.environ.get("LUMAAI_API_KEY"), reason="LUMAAI_API_KEY is not set")
async def test_live_submit_and_poll() -> None:
    """One real 5 s 540p clip (billed) of the shipped Ray3.14 offering, whose model id is
    unconfirmed: submitted once and polled once."""
    async with httpx.AsyncClient(timeout=60, transport=httpx.AsyncHTTPTransport(retries=0)) as c:
        a = Luma(client=c, credentials=Credentials(), base_url=None)
        req = VideoRequest(prompt="a paper boat on a calm lake", duration_s=5, resolution="540p")
        job = await a.submit(req, ray314(), idempotency_key="live")
        assert job.remote_id
        status = await a.poll(job)
        assert status.raw in STATUS
