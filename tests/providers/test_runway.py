"""The Runway adapter, over real HTTP: against the sandbox's emulation, against a scripted
server for the error paths and the recorded response shapes (tests/fixtures/runway, written
from provider-apis.md §3), and — only when RUNWAYML_API_SECRET is set — against Runway."""

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
from vidgate.catalog.loader import Catalog, load_catalog
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
from vidgate.providers.runway import STATUS, Runway
from vidgate.sandbox.app import SandboxServer
from vidgate.sandbox.core import FaultConfig, FaultRule
from vidgate.settings import Credentials
from vidgate.types import Mode, Reference, ReferenceRole, VideoRequest

KEY = {"RUNWAYML_API_SECRET": "key_test_not_a_real_key"}
CATALOG = load_catalog()
ALEPH = "runway-gen-4.5-aleph-runway"  # gen4.5: text- and image-to-video
TURBO = "runway-gen-4.5-turbo-runway"  # gen4_turbo: image-to-video only
PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP8z8DA"
    "wMDAxMDAwMDAAAANHQEDasKb6QAAAABJRU5ErkJggg=="
)
FIX = FIXTURES / "runway"
TASK_ID = "17f20503-6c24-4c16-946b-35dbbce2af2f"


def fixture(name: str) -> Any:
    return json.loads((FIX / f"{name}.json").read_text())


def off(offering_id: str, **caps: Any) -> Offering:
    o = CATALOG.offering(offering_id)
    if caps:
        o = o.model_copy(update={"capabilities": o.capabilities.model_copy(update=caps)})
    return o


def adapter(http: httpx.AsyncClient, base_url: str, env: dict[str, str] = KEY) -> Runway:
    return Runway(client=http, credentials=Credentials(env), base_url=base_url)


def i2v(prompt: str = "a paper boat on a stream", **kw: Any) -> VideoRequest:
    kw.setdefault("references", [Reference(role=ReferenceRole.FIRST_FRAME, url=PNG)])
    kw.setdefault("mode", Mode.IMAGE_TO_VIDEO)
    return VideoRequest(prompt=prompt, duration_s=2, **kw)


@pytest.fixture
def rw(tmp_path: Path) -> Iterator[SandboxServer]:
    server = SandboxServer(tmp_path / "sb", CATALOG, time_scale=0.002).start()
    yield server
    server.stop()


def base(sb: SandboxServer) -> str:
    return f"{sb.url}/runway"


def job_at(url: str, version: str = "2024-11-06") -> ProviderJob:
    return ProviderJob(
        protocol="runway",
        offering_id=ALEPH,
        remote_id=TASK_ID,
        base_url=url,
        credential_ref=("RUNWAYML_API_SECRET",),
        extra={"runway_version": version, "endpoint": "text_to_video"},
    )


async def poll_until_done(a: Runway, job: ProviderJob) -> list[str]:
    seen: list[str] = []
    for _ in range(600):
        status = await a.poll(job)
        if not seen or seen[-1] != status.raw:
            seen.append(status.raw)
        if status.state.terminal:
            return seen
        await asyncio.sleep(0.02)
    raise AssertionError(f"task never finished: {seen}")


# -- the whole lifecycle against the emulation ------------------------------------------------


async def test_image_to_video_lifecycle_and_download(http, rw) -> None:
    a = adapter(http, base(rw))
    job = await a.submit(i2v(aspect_ratio="4:3"), off(TURBO), idempotency_key="k1")
    assert job.base_url == base(rw)
    assert job.credential_ref == ("RUNWAYML_API_SECRET",)
    assert job.extra == {"runway_version": "2024-11-06", "endpoint": "image_to_video"}
    assert ProviderJob.model_validate_json(job.model_dump_json()) == job

    seen = await poll_until_done(a, job)
    assert seen[-1] == "SUCCEEDED"
    assert set(seen) <= {"PENDING", "THROTTLED", "RUNNING", "SUCCEEDED"}

    [asset] = await a.fetch(job)
    assert not asset.headers  # a presigned URL: our key never goes to the CDN
    assert "expires=" in asset.url
    resp = await http.get(asset.url)
    assert resp.status_code == 200
    with av.open(io.BytesIO(resp.content)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (1104, 832)  # Runway's 4:3
        assert sum(1 for _ in c.decode(video=0)) == 2 * 24
        assert len(c.streams.audio) == 0  # Runway's Gen-4 family has no audio


async def test_cancel_in_flight_then_delete_finished(http, rw) -> None:
    a = adapter(http, base(rw))
    rw.core.time_scale = 1.0
    job = await a.submit(VideoRequest(prompt="x", duration_s=2), off(ALEPH), idempotency_key="c")
    await a.cancel(job)
    status = await a.poll(job)
    assert (status.state, status.raw) == (RemoteState.CANCELED, "CANCELLED")
    # A second DELETE removes the now-finished task; later reads are 404, and cancelling a
    # task that is already gone is not an error.
    await a.cancel(job)
    with pytest.raises(NotFound):
        await a.poll(job)
    await a.cancel(job)


async def test_throttled_when_over_concurrency(http, rw) -> None:
    a = adapter(http, base(rw))
    rw.core.time_scale = 1.0  # tasks stay queued long enough to look at them
    req = VideoRequest(prompt="a lighthouse", duration_s=2)
    jobs = [await a.submit(req, off(ALEPH), idempotency_key=f"t{i}") for i in range(3)]
    first, third = await a.poll(jobs[0]), await a.poll(jobs[2])
    assert (first.raw, first.state) == ("PENDING", RemoteState.QUEUED)
    assert (third.raw, third.state) == ("THROTTLED", RemoteState.QUEUED)


async def test_no_idempotency_key_so_each_create_is_a_new_task(http, rw) -> None:
    # Runway has no idempotency key (§3): the adapter sends none, and a repeated create is
    # a second, billed task. That is why an ambiguous create is parked, never resent.
    a = adapter(http, base(rw))
    req = VideoRequest(prompt="same", duration_s=2)
    one = await a.submit(req, off(ALEPH), idempotency_key="once")
    two = await a.submit(req, off(ALEPH), idempotency_key="once")
    assert one.remote_id != two.remote_id
    assert rw.core.store.stats()["duplicate_submissions"] == 1


async def test_dropped_create_is_ambiguous(rw) -> None:
    rw.core.faults = FaultConfig(rules=[FaultRule(kind="drop", rate=1.0)], hang_s=2)
    async with httpx.AsyncClient(timeout=0.4) as short:
        with pytest.raises(AmbiguousSubmission):
            await adapter(short, base(rw)).submit(
                VideoRequest(prompt="x", duration_s=2), off(ALEPH), idempotency_key="d"
            )
    assert rw.core.store.stats()["creates"] == 1


async def test_moderated_task_fails_with_safety_code(http, rw) -> None:
    a = adapter(http, base(rw))
    job = await a.submit(
        VideoRequest(prompt="[unsafe] x", duration_s=2), off(ALEPH), idempotency_key="m"
    )
    await poll_until_done(a, job)
    status = await a.poll(job)
    assert isinstance(status.error, ContentRejected)
    assert status.error.details["failure_code"] == "SAFETY.INPUT.TEXT"


# -- the emulation's wire traps ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "field"),
    [
        (
            "text_to_video",
            {"model": "gen4.5", "promptText": "x", "ratio": "1280:720", "duration": 5},
            {"X-Runway-Version": "2023-01-01"},
            400,
            None,
        ),
        (
            "text_to_video",
            {"model": "gen4.5", "promptText": "x", "ratio": "1280:720", "duration": 5.0},
            {},
            400,
            "duration",
        ),
        (
            "text_to_video",
            {"model": "gen4.5", "promptText": "x", "ratio": "16:9", "duration": 5},
            {},
            400,
            "ratio",
        ),
        (
            "text_to_video",
            {"model": "gen4.5", "promptText": "x", "ratio": "960:960", "duration": 5},
            {},
            400,
            "ratio",
        ),
        (
            "text_to_video",
            {"model": "gen4_turbo", "promptText": "x", "ratio": "1280:720", "duration": 5},
            {},
            400,
            "model",
        ),
        (
            "image_to_video",
            {
                "model": "gen4_turbo",
                "promptImage": "http://a.test/x.png",
                "ratio": "1280:720",
                "duration": 5,
            },
            {},
            400,
            "promptImage",
        ),
        (
            "image_to_video",
            {"model": "gen4.5", "promptImage": PNG, "ratio": "1280:720", "duration": 5},
            {},
            400,
            "promptText",
        ),
        (
            "text_to_video",
            {"model": "gen4.5", "promptText": "x", "ratio": "1280:720", "duration": 5},
            {"Authorization": "Bearer invalid-key"},
            401,
            None,
        ),
    ],
)
async def test_emulation_rejects_what_runway_rejects(http, rw, path, body, headers, status, field):
    h = {"Authorization": "Bearer k", "X-Runway-Version": "2024-11-06", **headers}
    resp = await http.post(f"{base(rw)}/v1/{path}", json=body, headers=h)
    assert resp.status_code == status
    data = resp.json()
    assert isinstance(data["error"], str)
    if field:
        assert data["issues"][0]["path"] == [field]
    assert rw.core.store.stats()["creates"] == 0


# -- request mapping ---------------------------------------------------------------------------


def test_text_to_video_body(http) -> None:
    a = adapter(http, "http://unused")
    req = VideoRequest(prompt="a fox", duration_s=7.6, aspect_ratio="9:16", seed=42)
    body = a.body(req, off(ALEPH))
    assert a.endpoint_for(req, off(ALEPH)) == "text_to_video"
    assert body == {
        "model": "gen4.5",
        "promptText": "a fox",
        "ratio": "720:1280",
        "duration": 8,  # the nearest allowed value, an int
        "seed": 42,
    }
    assert isinstance(body["duration"], int)


@pytest.mark.parametrize(
    ("aspect", "ratio"),
    [("16:9", "1280:720"), ("4:3", "1104:832"), ("1:1", "960:960"), ("21:9", "1584:672")],
)
def test_image_to_video_ratios_are_runways_pixel_strings(http, aspect, ratio) -> None:
    a = adapter(http, "http://unused")
    body = a.body(i2v(aspect_ratio=aspect), off(TURBO))
    assert body["ratio"] == ratio
    assert body["promptImage"] == PNG  # a data URI is taken as-is


def test_provider_options_pass_through_after_validation(http) -> None:
    a = adapter(http, "http://unused")
    opts = {"runway": {"contentModeration": {"publicFigureThreshold": "low"}}}
    body = a.body(VideoRequest(prompt="x", duration_s=5, provider_options=opts), off(ALEPH))
    assert body["contentModeration"] == {"publicFigureThreshold": "low"}
    for bad in ({"watermark": False}, {"contentModeration": {"publicFigureThreshold": "off"}}):
        with pytest.raises(InvalidRequest):
            a.check(VideoRequest(prompt="x", provider_options={"runway": bad}), off(ALEPH))


def test_adapter_options_can_name_the_ratios(http) -> None:
    a = adapter(http, "http://unused")
    o = off(TURBO).model_copy(update={"adapter_options": {"ratios": "960:960"}})
    assert a.body(i2v(aspect_ratio="1:1"), o)["ratio"] == "960:960"
    with pytest.raises(CapabilityMismatch, match="960:960"):
        a.check(i2v(aspect_ratio="16:9"), o)


@pytest.mark.parametrize(
    ("offering", "request_", "match"),
    [
        # gen4.5 text-to-video takes 1280:720 and 720:1280 only (§3)
        (
            off(ALEPH, aspect_ratios=["1:1"]),
            VideoRequest(prompt="x", aspect_ratio="1:1"),
            "1280:720, 720:1280",
        ),
        (off(ALEPH, resolutions=["1080p"]), VideoRequest(prompt="x", resolution="1080p"), "1080p"),
        # gen4_turbo has no text-to-video endpoint
        (off(TURBO), VideoRequest(prompt="x"), "no text_to_video"),
        # gen4.5 takes a first frame only
        (
            off(ALEPH),
            i2v(
                mode=Mode.FIRST_LAST_FRAME,
                references=[
                    Reference(role=ReferenceRole.FIRST_FRAME, url=PNG),
                    Reference(role=ReferenceRole.LAST_FRAME, url=PNG),
                ],
            ),
            "first frame only",
        ),
        (
            off(TURBO),
            i2v(
                references=[Reference(role=ReferenceRole.FIRST_FRAME, url="http://img.test/a.png")]
            ),
            "https://",
        ),
        (
            off(TURBO),
            i2v(
                references=[
                    Reference(role=ReferenceRole.FIRST_FRAME, url=PNG),
                    Reference(role=ReferenceRole.STYLE, url=PNG),
                ]
            ),
            "style",
        ),
        (off(ALEPH), VideoRequest(prompt="é" * 1001), "1000 UTF-16"),
    ],
)
async def test_capability_errors_come_before_any_call(http, offering, request_, match) -> None:
    with scripted_server() as (sp, url):
        a = adapter(http, url)
        with pytest.raises(CapabilityMismatch, match=match):
            a.check(request_, offering)
        with pytest.raises(CapabilityMismatch):
            await a.submit(request_, offering, idempotency_key="x")
    assert sp.seen == []


# -- error bodies (scripted provider) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "error", "retryable"),
    [
        (Scripted(400, fixture("error_400"), {"x-request-id": "req-1"}), InvalidRequest, False),
        (Scripted(401, fixture("error_401")), AuthFailed, False),
        (Scripted(429, {"error": "Too many requests."}, {"retry-after": "3"}), RateLimited, True),
        (Scripted(502, {"error": "Shedding load."}), ProviderUnavailable, True),
        (Scripted(504, {"error": "Overloaded."}), ProviderUnavailable, True),
        (
            Scripted(400, {"error": "Your prompt did not pass content moderation."}),
            ContentRejected,
            False,
        ),
        (
            Scripted(400, {"error": "You do not have enough credits to run this task."}),
            QuotaExhausted,
            False,
        ),
        (Scripted(200, {"status": "PENDING"}), ProviderProtocolError, False),
    ],
)
async def test_create_error_mapping(http, reply, error, retryable) -> None:
    with scripted_server() as (sp, url):
        sp.script("POST", reply)
        with pytest.raises(error) as info:
            await adapter(http, url).submit(
                VideoRequest(prompt="x", duration_s=5), off(ALEPH), idempotency_key="e"
            )
    assert info.value.retryable is retryable
    assert info.value.provider == "runway"
    if reply.status == 400 and error is InvalidRequest:
        assert info.value.request_id == "req-1"
        assert "1280:720" in info.value.message  # the provider's own explanation survives
    if error is RateLimited:
        assert info.value.retry_after == 3
    # exactly one create, with Runway's headers and no idempotency header
    [(method, path, headers, raw)] = sp.seen
    assert (method, path) == ("POST", "/v1/text_to_video")
    assert headers["x-runway-version"] == "2024-11-06"
    assert headers["authorization"] == "Bearer key_test_not_a_real_key"
    assert "idempotency-key" not in headers
    assert json.loads(raw)["ratio"] == "1280:720"


@pytest.mark.parametrize(
    ("name", "state", "progress"),
    [
        ("task_pending", RemoteState.QUEUED, None),
        ("task_throttled", RemoteState.QUEUED, None),
        ("task_running", RemoteState.RUNNING, 0.42),
        ("task_succeeded", RemoteState.SUCCEEDED, None),
        ("task_cancelled", RemoteState.CANCELED, None),
    ],
)
async def test_recorded_task_shapes(http, name, state, progress) -> None:
    with scripted_server() as (sp, url):
        sp.script("GET", Scripted(200, fixture(name)))
        status = await adapter(http, url).poll(job_at(url, version="2024-11-06"))
    assert status.state is state
    assert status.raw == fixture(name)["status"]
    assert status.progress == progress
    assert status.error is None
    # the stored base URL, the stored id, the pinned version
    assert sp.seen[0][1] == f"/v1/tasks/{TASK_ID}"
    assert sp.seen[0][2]["x-runway-version"] == "2024-11-06"


@pytest.mark.parametrize(
    ("name", "error", "code"),
    [
        ("task_failed_safety", ContentRejected, "SAFETY.INPUT.TEXT"),
        ("task_failed_internal", ProviderUnavailable, "INTERNAL.BAD_OUTPUT.CODE01"),
    ],
)
async def test_recorded_failures(http, name, error, code) -> None:
    with scripted_server() as (sp, url):
        sp.script("GET", Scripted(200, fixture(name)))
        status = await adapter(http, url).poll(job_at(url))
    assert status.state is RemoteState.FAILED
    assert isinstance(status.error, error)
    assert status.error.details["failure_code"] == code
    assert fixture(name)["failure"] in status.error.message


async def test_fetch_reads_fresh_urls_from_the_task(http) -> None:
    create = fixture("create_response")
    assert create["id"] == TASK_ID
    with scripted_server() as (sp, url):
        sp.script("POST", Scripted(200, create))
        sp.script(
            "GET", Scripted(200, fixture("task_succeeded")), Scripted(200, fixture("task_running"))
        )
        a = adapter(http, url)
        job = await a.submit(
            VideoRequest(prompt="x", duration_s=5), off(ALEPH), idempotency_key="f"
        )
        assert job.remote_id == TASK_ID
        [asset] = await a.fetch(job)
        assert asset.url == fixture("task_succeeded")["output"][0]
        assert dict(asset.headers) == {}
        with pytest.raises(ProviderProtocolError, match="RUNNING"):
            await a.fetch(job)


async def test_unknown_status_is_an_error_not_queued(http) -> None:
    with scripted_server() as (sp, url):
        sp.script("GET", Scripted(200, {"id": TASK_ID, "status": "PROCESSING"}))
        with pytest.raises(ProviderProtocolError, match="PROCESSING"):
            await adapter(http, url).poll(job_at(url))


def test_status_table_is_exactly_the_documented_strings() -> None:
    assert set(STATUS) == {"PENDING", "THROTTLED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"}


def test_catalog_offerings_match_the_digest(http) -> None:
    aleph, turbo = off(ALEPH), off(TURBO)
    assert (aleph.provider_model_id, turbo.provider_model_id) == ("gen4.5", "gen4_turbo")
    assert [m.value for m in turbo.capabilities.modes] == ["image-to-video"]
    # gen4 is not a model of the §3 table: present for the record, never routed to
    assert CATALOG.offering("runway-gen-4-runway").enabled is False
    # every declared (resolution, aspect) maps onto an allowed ratio for every mode
    a = adapter(http, "http://unused")
    for o in (aleph, turbo):
        for aspect in o.capabilities.aspect_ratios:
            a.check(i2v(aspect_ratio=aspect), o)
            if Mode.TEXT_TO_VIDEO in o.capabilities.modes:
                a.check(VideoRequest(prompt="x", aspect_ratio=aspect), o)


# -- the real API ------------------------------------------------------------------------------


@pytest.mark.live
@pytest.mark.skipif(not os.environ.get("RUNWAYML_API_SECRET"), reason="RUNWAYML_API_SECRET unset")
async def test_live_minimal_generation() -> None:
    """A real 2-second gen4.5 text-to-video task: submit, poll to the end, fetch the URL."""
    catalog: Catalog = load_catalog()
    async with httpx.AsyncClient(timeout=60) as http:
        a = Runway(client=http, credentials=Credentials())
        offering = catalog.offering(ALEPH)
        job = await a.submit(
            VideoRequest(prompt="a calm sea at dawn, slow pan", duration_s=2),
            offering,
            idempotency_key="live",
        )
        status = await a.poll(job)
        for _ in range(120):  # up to 10 minutes, the SDK's own wait limit
            if status.state.terminal:
                break
            await asyncio.sleep(5)
            status = await a.poll(job)
        assert status.state is RemoteState.SUCCEEDED, status
        [asset] = await a.fetch(job)
        resp = await http.get(asset.url)
        assert resp.status_code == 200
        assert len(resp.content) > 1000
