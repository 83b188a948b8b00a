"""The xAI Grok Imagine video adapter (provider-apis.md §9a), over real HTTP: against the
sandbox's emulation, a scripted server for error paths, and the recorded response shapes in
tests/fixtures/xai."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from tests.scripted import Scripted, scripted_server
from vidgate.catalog.loader import load_catalog
from vidgate.catalog.schema import Offering
from vidgate.errors import (
    AmbiguousSubmission,
    AuthFailed,
    CapabilityMismatch,
    ContentRejected,
    InvalidRequest,
    NotFound,
    ProviderProtocolError,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
)
from vidgate.providers.base import ProviderJob, RemoteState
from vidgate.providers.xai_video import STATUS, XAIVideo
from vidgate.sandbox.app import SandboxServer
from vidgate.sandbox.core import INVALID_CREDENTIAL, FaultConfig, FaultRule
from vidgate.settings import Credentials
from vidgate.types import Mode, Reference, ReferenceKind, ReferenceRole, VideoRequest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "xai"
CATALOG = load_catalog()
OFFERING = CATALOG.offering("grok-imagine-xai")
KEY = {"XAI_API_KEY": "xai-test-not-a-real-key"}
PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGAAAAAF"
    "AAFJ7vY1AAAAAElFTkSuQmCC"
)


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def adapter(http: httpx.AsyncClient, base_url: str, env: dict[str, str] | None = None) -> XAIVideo:
    return XAIVideo(
        client=http, credentials=Credentials(KEY if env is None else env), base_url=base_url
    )


def job_at(url: str, remote_id: str = "d97415a1") -> ProviderJob:
    return ProviderJob(
        protocol="xai-video",
        offering_id=OFFERING.id,
        remote_id=remote_id,
        base_url=url + "/v1",
        credential_ref=("XAI_API_KEY",),
    )


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[SandboxServer]:
    server = SandboxServer(tmp_path / "sandbox", CATALOG, time_scale=0.002).start()
    yield server
    server.stop()


def base(sb: SandboxServer) -> str:
    return f"{sb.url}/xai-video/v1"


async def poll_until_done(a: XAIVideo, job: ProviderJob) -> list[str]:
    seen: list[str] = []
    for _ in range(600):
        status = await a.poll(job)
        seen.append(status.raw)
        if status.state.terminal:
            return seen
        await asyncio.sleep(0.02)
    raise AssertionError(f"job never finished: {seen[-5:]}")


# -- request mapping ------------------------------------------------------------------------


def test_text_to_video_body(http) -> None:
    path, body = adapter(http, "http://unused").plan(
        VideoRequest(
            prompt="a fox", duration_s=6.4, resolution="720p", aspect_ratio="9:16", seed=7
        ),
        OFFERING,
    )
    assert path == "/videos/generations"
    assert body == {
        "model": "grok-imagine-video",
        "prompt": "a fox",
        "seed": 7,
        "duration": 6,  # an integer number of seconds, the nearest allowed
        "aspect_ratio": "9:16",
        "resolution": "720p",
    }


def test_image_and_reference_images_and_options(http) -> None:
    a = adapter(http, "http://unused")
    _, body = a.plan(
        VideoRequest(
            prompt="x",
            mode=Mode.IMAGE_TO_VIDEO,
            references=[Reference(role=ReferenceRole.FIRST_FRAME, url=PNG)],
            provider_options={"xai": {"reference_audios": [{"voice_id": "v1"}]}},
        ),
        OFFERING,
    )
    assert body["image"] == {"url": PNG}
    assert body["reference_audios"] == [{"voice_id": "v1"}]
    _, body = a.plan(
        VideoRequest(
            prompt="x",
            references=[
                Reference(role=ReferenceRole.SUBJECT, url="https://example.com/a.png"),
                Reference(role=ReferenceRole.SUBJECT, url="https://example.com/b.png"),
            ],
        ),
        OFFERING,
    )
    assert body["reference_images"] == [
        {"url": "https://example.com/a.png"},
        {"url": "https://example.com/b.png"},
    ]
    assert "image" not in body


def test_edit_and_extend_use_their_own_endpoints(http) -> None:
    a = adapter(http, "http://unused")
    src = Reference(
        role=ReferenceRole.SOURCE_VIDEO, kind=ReferenceKind.VIDEO, url="https://example.com/v.mp4"
    )
    path, body = a.plan(
        VideoRequest(prompt="make it snow", mode=Mode.VIDEO_TO_VIDEO, references=[src]), OFFERING
    )
    assert path == "/videos/edits"
    assert body == {
        "model": "grok-imagine-video",
        "prompt": "make it snow",
        "video": {"url": "https://example.com/v.mp4"},
    }
    path, body = a.plan(
        VideoRequest(prompt="go on", mode=Mode.EXTEND, duration_s=6, references=[src]), OFFERING
    )
    assert path == "/videos/extensions"
    assert body["duration"] == 6


SUBJECT = Reference(role=ReferenceRole.SUBJECT, url="https://example.com/s.png")
FIRST = Reference(role=ReferenceRole.FIRST_FRAME, url="https://example.com/f.png")
SOURCE = Reference(
    role=ReferenceRole.SOURCE_VIDEO, kind=ReferenceKind.VIDEO, url="https://example.com/v.mp4"
)


@pytest.mark.parametrize(
    ("request_kw", "match"),
    [
        ({"resolution": "1080p"}, "480p, 720p"),  # 1080p is for the 1.5 models only
        ({"aspect_ratio": "21:9"}, "21:9"),
        ({"negative_prompt": "blur"}, "negative"),
        ({"prompt": "x" * 4097}, "4096"),
        ({"references": [FIRST, SUBJECT], "mode": Mode.IMAGE_TO_VIDEO}, "cannot be combined"),
        ({"references": [SUBJECT] * 8}, "at most 7"),
        (
            {
                "references": [FIRST, Reference(role=ReferenceRole.LAST_FRAME, url=PNG)],
                "mode": Mode.FIRST_LAST_FRAME,
            },
            "last_frame",
        ),
        ({"references": [SOURCE], "mode": Mode.EXTEND, "duration_s": 12}, "at most 10"),
        ({"references": [SOURCE, FIRST], "mode": Mode.VIDEO_TO_VIDEO}, "no images"),
        ({"references": [SOURCE]}, "video-to-video or extend"),
    ],
)
async def test_what_the_wire_cannot_express_fails_before_any_call(http, request_kw, match) -> None:
    request = VideoRequest(**{"prompt": "x", **request_kw})
    with scripted_server() as (sp, url):
        a = adapter(http, url + "/v1")
        with pytest.raises(CapabilityMismatch, match=match):
            a.check(request, OFFERING)
        with pytest.raises(CapabilityMismatch):
            await a.submit(request, OFFERING, idempotency_key="k")
    assert sp.seen == []


def test_1080p_is_accepted_for_the_15_models(http) -> None:
    offering = OFFERING.model_copy(update={"provider_model_id": "grok-imagine-video-1.5"})
    _, body = adapter(http, "http://unused").plan(
        VideoRequest(prompt="x", resolution="1080p"), offering
    )
    assert body["resolution"] == "1080p"


@pytest.mark.parametrize(
    "options", [{"colour": "blue"}, {"seed": "7"}, {"seed": True}, {"reference_audios": ["v"]}]
)
def test_provider_options_are_validated(http, options) -> None:
    with pytest.raises(InvalidRequest):
        adapter(http, "http://unused").check(
            VideoRequest(prompt="x", provider_options={"xai": options}), OFFERING
        )


# -- against the sandbox --------------------------------------------------------------------


async def test_submit_poll_fetch_decodes(http, sb) -> None:
    a = adapter(http, base(sb))
    req = VideoRequest(prompt="a calico cat", duration_s=2, resolution="720p", aspect_ratio="16:9")
    job = await a.submit(req, OFFERING, idempotency_key="k1")
    assert job.base_url == base(sb)
    assert job.credential_ref == ("XAI_API_KEY",)
    assert ProviderJob.model_validate_json(job.model_dump_json()) == job
    seen = await poll_until_done(a, job)
    assert seen[-1] == "done"
    assert set(seen) <= {"pending", "done"}
    [asset] = await a.fetch(job)
    assert dict(asset.headers) == {}  # a plain expiring URL
    resp = await http.get(asset.url)
    assert resp.status_code == 200
    with av.open(io.BytesIO(resp.content)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (1280, 720)
        assert sum(1 for _ in c.decode(video=0)) == 2 * 24
        assert len(c.streams.audio) == 1  # Grok Imagine always makes audio


async def test_no_idempotency_key_so_each_submit_is_a_new_job(http, sb) -> None:
    a = adapter(http, base(sb))
    req = VideoRequest(prompt="same", duration_s=1, resolution="480p")
    first = await a.submit(req, OFFERING, idempotency_key="once")
    second = await a.submit(req, OFFERING, idempotency_key="once")
    assert first.remote_id != second.remote_id
    assert sb.core.store.stats()["creates"] == 2


async def test_moderation_is_done_without_url_and_maps_to_content_rejected(http, sb) -> None:
    a = adapter(http, base(sb))
    job = await a.submit(
        VideoRequest(prompt="[unsafe] x", duration_s=1, resolution="480p"),
        OFFERING,
        idempotency_key="m",
    )
    seen = await poll_until_done(a, job)
    assert seen[-1] == "done"  # the wire says done; respect_moderation says otherwise
    body = (await http.get(f"{base(sb)}/videos/{job.remote_id}", headers=a._headers(()))).json()
    assert body["video"]["respect_moderation"] is False
    assert "url" not in body["video"]
    status = await a.poll(job)
    assert status.state is RemoteState.FAILED
    assert isinstance(status.error, ContentRejected)


async def test_internal_failure_is_retryable(http, sb) -> None:
    sb.core.faults = FaultConfig(rules=[FaultRule(kind="fail", rate=1.0)])
    a = adapter(http, base(sb))
    job = await a.submit(VideoRequest(prompt="x", duration_s=1), OFFERING, idempotency_key="f")
    assert (await poll_until_done(a, job))[-1] == "failed"
    status = await a.poll(job)
    assert isinstance(status.error, ProviderUnavailable)
    assert status.error.request_id == job.remote_id


async def test_old_results_expire(http, sb) -> None:
    a = adapter(http, base(sb))
    job = await a.submit(VideoRequest(prompt="x", duration_s=1), OFFERING, idempotency_key="e")
    stored = sb.core.store.get(job.remote_id)
    assert stored is not None
    sb.core.store.insert(
        dataclasses.replace(stored, id="old-" + stored.id, created_at=time.time() - 2 * 86400)
    )
    status = await a.poll(job.model_copy(update={"remote_id": "old-" + stored.id}))
    assert (status.raw, status.state) == ("expired", RemoteState.FAILED)
    assert status.error is not None
    assert status.error.retryable


async def test_bad_key_is_a_400_in_xais_shape_and_maps_to_auth_failed(http, sb) -> None:
    resp = await http.post(
        f"{base(sb)}/videos/generations",
        json={"model": "grok-imagine-video", "prompt": "x"},
        headers={"Authorization": f"Bearer {INVALID_CREDENTIAL}"},
    )
    assert resp.status_code == 400
    assert set(resp.json()) == {"code", "error"}
    a = adapter(http, base(sb), env={"XAI_API_KEY": INVALID_CREDENTIAL})
    with pytest.raises(AuthFailed, match="Incorrect API key"):
        await a.submit(VideoRequest(prompt="x", duration_s=1), OFFERING, idempotency_key="a")
    assert sb.core.store.stats()["creates"] == 0


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"duration": 16}, "duration"),
        ({"duration": 4.5}, "duration"),
        ({"resolution": "1080p"}, "resolution"),
        ({"aspect_ratio": "21:9"}, "aspect_ratio"),
        ({"image": {"url": PNG}, "reference_images": [{"url": PNG}]}, "together"),
    ],
)
async def test_emulator_validates_like_the_api(http, sb, body, problem) -> None:
    resp = await http.post(
        f"{base(sb)}/videos/generations",
        json={"model": "grok-imagine-video", "prompt": "x", **body},
        headers={"Authorization": "Bearer k"},
    )
    assert resp.status_code == 400
    assert problem in resp.json()["error"]


async def test_dropped_create_is_ambiguous_and_recorded_once(sb) -> None:
    sb.core.faults = FaultConfig(rules=[FaultRule(kind="drop", rate=1.0)], hang_s=2)
    async with httpx.AsyncClient(timeout=httpx.Timeout(0.4)) as short:
        with pytest.raises(AmbiguousSubmission):
            await adapter(short, base(sb)).submit(
                VideoRequest(prompt="x", duration_s=1), OFFERING, idempotency_key="d"
            )
    assert sb.core.store.stats()["creates"] == 1


async def test_cancel_is_refused_without_a_call(http) -> None:
    with scripted_server() as (sp, url), pytest.raises(InvalidRequest, match="cannot cancel"):
        await adapter(http, url + "/v1").cancel(job_at(url))
    assert sp.seen == []


# -- error bodies and recorded shapes -------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "error", "retryable"),
    [
        (Scripted(400, fixture("error_bad_key")), AuthFailed, False),
        (Scripted(403, fixture("error_credits")), QuotaExhausted, False),
        (
            Scripted(400, {"code": "invalid-argument", "error": "Prompt violates content policy."}),
            ContentRejected,
            False,
        ),
        (
            Scripted(429, fixture("error_rate_limit"), {"retry-after": "3"}),
            RateLimited,
            True,
        ),
        (Scripted(400, fixture("error_invalid_argument")), InvalidRequest, False),
        (Scripted(503, {"code": "unavailable", "error": "down"}), ProviderUnavailable, True),
        (Scripted(200, {"status": "pending"}), ProviderProtocolError, False),
    ],
)
async def test_create_error_mapping(http, reply, error, retryable) -> None:
    with scripted_server() as (sp, url):
        sp.script("POST", reply)
        with pytest.raises(error) as info:
            await adapter(http, url + "/v1").submit(
                VideoRequest(prompt="x", duration_s=5), OFFERING, idempotency_key="e"
            )
    assert info.value.retryable is retryable
    assert info.value.provider == "xai-video"
    if error is RateLimited:
        assert info.value.retry_after == 3
    # exactly one create, to the documented path, with the key and no invented headers
    assert [(m, p) for m, p, *_ in sp.seen] == [("POST", "/v1/videos/generations")]
    headers = sp.seen[0][2]
    assert headers["authorization"] == "Bearer xai-test-not-a-real-key"
    assert "idempotency-key" not in headers
    assert json.loads(sp.seen[0][3])["duration"] == 5


async def test_create_fixture_gives_the_job_id(http) -> None:
    with scripted_server() as (sp, url):
        sp.script("POST", Scripted(200, fixture("create")))
        job = await adapter(http, url + "/v1").submit(
            VideoRequest(prompt="x"), OFFERING, idempotency_key="c"
        )
    assert job.remote_id == "d97415a1-5796-b7ec-379f-4e6819e08fdf"
    assert job.base_url == url + "/v1"


@pytest.mark.parametrize(
    ("name", "state", "error"),
    [
        ("status_pending", RemoteState.RUNNING, None),
        ("status_done", RemoteState.SUCCEEDED, None),
        ("status_moderated", RemoteState.FAILED, ContentRejected),
        ("status_failed", RemoteState.FAILED, ProviderUnavailable),
        ("status_expired", RemoteState.FAILED, ProviderUnavailable),
    ],
)
async def test_recorded_status_shapes(http, name, state, error) -> None:
    with scripted_server() as (sp, url):
        sp.script("GET", Scripted(200, fixture(name)))
        status = await adapter(http, "http://not-this-one").poll(job_at(url))
    assert status.state is state
    assert status.raw == fixture(name)["status"]
    if error is None:
        assert status.error is None
    else:
        assert isinstance(status.error, error)
        assert status.error.request_id == "d97415a1"
    if name == "status_pending":
        assert status.progress == pytest.approx(0.4)
    # the status call went to the job's stored base URL and id
    assert sp.seen[0][1] == "/v1/videos/d97415a1"


async def test_fetch_returns_the_video_url(http) -> None:
    with scripted_server() as (sp, url):
        sp.script(
            "GET", Scripted(200, fixture("status_done")), Scripted(200, fixture("status_moderated"))
        )
        a = adapter(http, url + "/v1")
        [asset] = await a.fetch(job_at(url))
        with pytest.raises(ProviderProtocolError):
            await a.fetch(job_at(url))
    assert asset.url == fixture("status_done")["video"]["url"]
    assert asset.content_type == "video/mp4"


async def test_poll_errors_keep_the_request_id(http) -> None:
    with scripted_server() as (sp, url):
        sp.script(
            "GET",
            Scripted(404, {"code": "not-found", "error": "no such request"}),
            Scripted(400, fixture("error_bad_key")),
        )
        a = adapter(http, url + "/v1")
        with pytest.raises(NotFound) as info:
            await a.poll(job_at(url))
        assert info.value.request_id == "d97415a1"
        with pytest.raises(AuthFailed):
            await a.poll(job_at(url))


async def test_unknown_status_is_an_error_not_queued(http) -> None:
    with scripted_server() as (sp, url):
        sp.script("GET", Scripted(200, {"status": "thinking"}))
        with pytest.raises(ProviderProtocolError, match="thinking"):
            await adapter(http, url + "/v1").poll(job_at(url))


def test_status_table_is_exactly_the_documented_strings() -> None:
    assert set(STATUS) == {"pending", "done", "failed", "expired"}


def test_the_offering_matches_the_wire() -> None:
    caps = OFFERING.capabilities
    assert isinstance(OFFERING, Offering)
    assert OFFERING.protocol == "xai-video"
    assert set(caps.aspect_ratios) == {"1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3"}
    assert (caps.durations.min, caps.durations.max) == (1, 15)


# -- live -----------------------------------------------------------------------------------


@pytest.mark.live
@pytest.mark.skipif(not os.environ.get("XAI_API_KEY"), reason="XAI_API_KEY is not set")
async def test_live_minimal_generation() -> None:
    async with httpx.AsyncClient(timeout=60, transport=httpx.AsyncHTTPTransport(retries=0)) as c:
        a = XAIVideo(client=c, credentials=Credentials())
        job = await a.submit(
            VideoRequest(prompt="a red ball rolls on grass", duration_s=1, resolution="480p"),
            OFFERING,
            idempotency_key="live",
        )
        deadline = time.monotonic() + 600
        status = await a.poll(job)
        while not status.state.terminal:
            assert time.monotonic() < deadline, "the live job did not finish in 10 minutes"
            await asyncio.sleep(5)
            status = await a.poll(job)
        assert status.state is RemoteState.SUCCEEDED, status.error
        [asset] = await a.fetch(job)
        assert asset.url.startswith("https://")
