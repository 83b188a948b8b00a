"""The fal.ai queue adapter: request mapping driven by catalog data, the pinned request URLs,
the error and status shapes recorded in tests/fixtures/fal, and the sandbox's emulation."""

from __future__ import annotations

import asyncio
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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
from vidgate.providers.fal_queue import STATUS, FalQueue, app_id, routes
from vidgate.sandbox.app import SandboxServer
from vidgate.sandbox.core import FaultConfig, FaultRule
from vidgate.settings import Credentials
from vidgate.types import AudioMode, Mode, Reference, ReferenceKind, ReferenceRole, VideoRequest

CATALOG = load_catalog()
KEY = {"FAL_KEY": "fal-test-not-a-real-key"}
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "fal"
PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4"
    "DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
)
OFFLINE = "http://127.0.0.1:9"  # nothing listens there: a call would fail loudly


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def at(url: str, body: Any) -> Any:
    """A recorded body with fal's host replaced by the scripted server's."""
    return json.loads(json.dumps(body).replace("https://queue.fal.run", url))


def offering(oid: str) -> Offering:
    return CATALOG.offering(oid)


def adapter(http: httpx.AsyncClient, base_url: str = OFFLINE) -> FalQueue:
    return FalQueue(client=http, credentials=Credentials(KEY), base_url=base_url)


def pinned_job(url: str, oid: str = "kling-3.0-fal", rid: str = "req-1") -> ProviderJob:
    req = f"{url}/fal-ai/kling-video/requests/{rid}"
    return ProviderJob(
        protocol="fal-queue",
        offering_id=oid,
        remote_id=rid,
        base_url=url,
        credential_ref=("FAL_KEY",),
        extra={
            "endpoint": "fal-ai/kling-video/v3/pro/text-to-video",
            "status_url": f"{req}/status",
            "response_url": req,
            "cancel_url": f"{req}/cancel",
        },
    )


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[SandboxServer]:
    server = SandboxServer(tmp_path / "sandbox", CATALOG, time_scale=0.002).start()
    yield server
    server.stop()


def base(sb: SandboxServer) -> str:
    return f"{sb.url}/fal-queue"


async def poll_until_done(a: FalQueue, job: ProviderJob) -> list[str]:
    seen: list[str] = []
    for _ in range(600):
        status = await a.poll(job)
        seen.append(f"{status.raw}:{status.state.value}")
        if status.state.terminal:
            return seen
        await asyncio.sleep(0.02)
    raise AssertionError(f"never finished: {seen[-5:]}")


# --- request mapping (no network) -------------------------------------------------------------


def test_kling_text_to_video_body(http) -> None:
    a = adapter(http)
    req = VideoRequest(prompt="a fox", duration_s=7.4, resolution="1080p", aspect_ratio="9:16")
    route, body = a.build(req, offering("kling-3.0-fal"))
    assert route.endpoint == "fal-ai/kling-video/v3/pro/text-to-video"
    # duration is a string on Kling's fal schema; audio defaults to on at fal, so "off" is sent
    assert body == {
        "prompt": "a fox",
        "duration": "7",
        "aspect_ratio": "9:16",
        "generate_audio": False,
    }
    _, body = a.build(
        req.model_copy(update={"audio": AudioMode.REQUIRED}), offering("kling-3.0-fal")
    )
    assert body["generate_audio"] is True


def test_kling_resolution_picks_the_endpoint(http) -> None:
    a = adapter(http)
    route, body = a.build(VideoRequest(prompt="x", resolution="720p"), offering("kling-3.0-fal"))
    assert route.endpoint == "fal-ai/kling-video/v3/standard/text-to-video"
    assert "resolution" not in body


def test_kling_image_to_video_uses_start_image_url_and_no_aspect(http) -> None:
    req = VideoRequest(
        prompt="x",
        mode=Mode.FIRST_LAST_FRAME,
        resolution="1080p",
        references=[
            Reference(role=ReferenceRole.FIRST_FRAME, url=PNG),
            Reference(role=ReferenceRole.LAST_FRAME, url="https://example.com/end.png"),
        ],
    )
    route, body = adapter(http).build(req, offering("kling-3.0-fal"))
    assert route.endpoint == "fal-ai/kling-video/v3/pro/image-to-video"
    assert body["start_image_url"] == PNG  # data: URLs go through as fal accepts them
    assert body["end_image_url"] == "https://example.com/end.png"
    assert "aspect_ratio" not in body


def test_veo_seconds_suffix_resolution_and_audio(http) -> None:
    req = VideoRequest(prompt="x", duration_s=6, resolution="1080p")
    route, body = adapter(http).build(req, offering("veo-3.1-fal"))
    assert route.endpoint == "fal-ai/veo3.1"
    assert body["duration"] == "6s"
    assert body["resolution"] == "1080p"
    assert body["generate_audio"] is True  # the offering's audio is "always"


def test_ltx_integer_duration_resolution_map_and_fps(http) -> None:
    req = VideoRequest(prompt="x", duration_s=9, resolution="4k", fps=50)
    _, body = adapter(http).build(req, offering("ltx-2-fal"))
    assert body["duration"] == 10  # an integer on LTX-2's schema
    assert body["resolution"] == "2160p"
    assert body["fps"] == 50


def test_hailuo_pro_endpoint_has_no_duration_and_only_six_seconds(http) -> None:
    a = adapter(http)
    route, body = a.build(
        VideoRequest(prompt="x", duration_s=6, resolution="1080p"), offering("hailuo-2.3-fal")
    )
    assert route.endpoint == "fal-ai/minimax/hailuo-2.3/pro/text-to-video"
    assert body == {"prompt": "x"}
    with pytest.raises(CapabilityMismatch, match="makes 6 s, not 10 s"):
        a.check(
            VideoRequest(prompt="x", duration_s=10, resolution="1080p"), offering("hailuo-2.3-fal")
        )
    _, body = a.build(
        VideoRequest(prompt="x", duration_s=10, resolution="768p"), offering("hailuo-2.3-fal")
    )
    assert body == {"prompt": "x", "duration": "10"}


def test_pikaframes_take_both_frames_as_one_list(http) -> None:
    req = VideoRequest(
        prompt="x",
        mode=Mode.FIRST_LAST_FRAME,
        duration_s=5,
        references=[
            Reference(role=ReferenceRole.LAST_FRAME, url="https://example.com/b.png"),
            Reference(role=ReferenceRole.FIRST_FRAME, url="https://example.com/a.png"),
        ],
    )
    route, body = adapter(http).build(req, offering("pika-2.2-fal"))
    assert route.endpoint == "fal-ai/pika/v2.2/pikaframes"
    assert body["image_urls"] == ["https://example.com/a.png", "https://example.com/b.png"]
    assert "duration" not in body
    assert "aspect_ratio" not in body


def test_seedance_subject_and_audio_references_use_reference_endpoint(http) -> None:
    req = VideoRequest(
        prompt="x",
        duration_s=5,
        resolution="720p",
        references=[
            Reference(role=ReferenceRole.SUBJECT, url="https://example.com/hero.png"),
            Reference(
                role=ReferenceRole.AUDIO, kind=ReferenceKind.AUDIO, url="https://example.com/a.mp3"
            ),
        ],
    )
    route, body = adapter(http).build(req, offering("seedance-2.0-fal"))
    assert route.endpoint == "bytedance/seedance-2.0/reference-to-video"
    assert body["image_urls"] == ["https://example.com/hero.png"]
    assert body["audio_urls"] == ["https://example.com/a.mp3"]
    assert body["resolution"] == "720p"
    assert body["generate_audio"] is True


def test_provider_options_pass_through_and_are_validated(http) -> None:
    a = adapter(http)
    req = VideoRequest(prompt="x", provider_options={"fal": {"cfg_scale": 0.7}})
    _, body = a.build(req, offering("kling-3.0-fal"))
    assert body["cfg_scale"] == 0.7
    # sync_mode would return the video inline as a data URI instead of a URL
    with pytest.raises(InvalidRequest, match="sync_mode"):
        a.check(
            VideoRequest(prompt="x", provider_options={"fal": {"sync_mode": True}}),
            offering("kling-3.0-fal"),
        )


async def test_capability_errors_are_raised_before_any_network_call(http) -> None:
    a = adapter(http)  # OFFLINE: a network call would be ProviderUnavailable instead
    no_flf = VideoRequest(
        prompt="x",
        mode=Mode.FIRST_LAST_FRAME,
        references=[
            Reference(role=ReferenceRole.FIRST_FRAME, url=PNG),
            Reference(role=ReferenceRole.LAST_FRAME, url=PNG),
        ],
    )
    with pytest.raises(CapabilityMismatch, match="no fal endpoint for first-last-frame"):
        await a.submit(no_flf, offering("wan-2.6-fal"), idempotency_key="k")
    no_switch = offering("kling-3.0-fal").model_copy(
        update={"adapter_options": {"audio_field": ""}}
    )
    with pytest.raises(CapabilityMismatch, match="audio switch"):
        await a.submit(
            VideoRequest(prompt="x", audio=AudioMode.REQUIRED), no_switch, idempotency_key="k"
        )
    with pytest.raises(CapabilityMismatch, match="makes 1080p only"):
        a.check(
            VideoRequest(prompt="x", resolution="720p"),
            offering("kling-3.0-fal").model_copy(
                update={"adapter_options": {"resolution": "1080p"}}
            ),
        )


def test_every_catalogued_fal_offering_maps_its_smallest_request(http) -> None:
    """Catalog data alone must make a valid body for each offering's cheapest request."""
    a = adapter(http)
    for o in CATALOG.offerings.values():
        if o.protocol != "fal-queue":
            continue
        caps = o.capabilities
        refs = []
        mode = caps.modes[0]
        if mode is not Mode.TEXT_TO_VIDEO:
            refs = [Reference(role=ReferenceRole.FIRST_FRAME, url=PNG)]
        spec = caps.durations
        req = VideoRequest(
            prompt="x",
            mode=mode,
            references=refs,
            duration_s=min(spec.values) if spec.values else float(spec.min or 1),
            resolution=min(caps.resolutions, key=lambda r: r.short_side),
            aspect_ratio=caps.aspect_ratios[0],
        )
        route, body = a.build(req, o)
        assert route.endpoint in routes(o), o.id
        assert body["prompt"] == "x", o.id


def test_app_id_drops_the_sub_path() -> None:
    assert app_id("fal-ai/kling-video/v3/pro/text-to-video") == "fal-ai/kling-video"
    assert app_id("wan/v2.6/text-to-video") == "wan/v2.6"
    assert app_id("workflows/me/my-flow/run") == "workflows/me/my-flow"


def test_status_table_is_exactly_the_documented_strings() -> None:
    assert set(STATUS) == {"IN_QUEUE", "IN_PROGRESS", "COMPLETED"}


# --- against the sandbox ----------------------------------------------------------------------


async def test_sub_path_model_lifecycle_uses_the_returned_urls(http, sb) -> None:
    a = adapter(http, base(sb))
    req = VideoRequest(prompt="a calico cat", duration_s=3, resolution="1080p")
    job = await a.submit(req, offering("kling-3.0-fal"), idempotency_key="k1")
    assert ProviderJob.model_validate_json(job.model_dump_json()) == job
    assert job.credential_ref == ("FAL_KEY",)
    # fal's request URLs name the app only: no /v3/pro/text-to-video in them
    assert urlsplit(job.extra["status_url"]).path == (
        f"/fal-queue/fal-ai/kling-video/requests/{job.remote_id}/status"
    )
    assert job.extra["endpoint"] == "fal-ai/kling-video/v3/pro/text-to-video"
    # a client that rebuilds the URL from the model id gets a 404, as at fal
    wrong = f"{base(sb)}/{job.extra['endpoint']}/requests/{job.remote_id}/status"
    resp = await http.get(wrong, headers={"Authorization": "Key k"})
    assert resp.status_code == 404

    seen = await poll_until_done(a, job)
    assert seen[-1] == "COMPLETED:succeeded"
    assert {s.split(":")[0] for s in seen} <= {"IN_QUEUE", "IN_PROGRESS", "COMPLETED"}
    [asset] = await a.fetch(job)
    assert "Authorization" not in asset.headers  # the key never goes to the file host
    resp = await http.get(asset.url)
    assert resp.status_code == 200
    with av.open(io.BytesIO(resp.content)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (1920, 1080)  # pro: 1080p
        assert sum(1 for _ in c.decode(video=0)) == 3 * 24
        assert len(c.streams.audio) == 0  # generate_audio was false


async def test_emulator_reports_each_status_with_its_fields(http, sb) -> None:
    sb.core.time_scale = 1.0
    a = adapter(http, base(sb))
    job = await a.submit(
        VideoRequest(prompt="x", duration_s=6, resolution="768p"),
        offering("hailuo-2.3-fal"),
        idempotency_key="s",
    )
    resp = await http.get(job.extra["status_url"], headers={"Authorization": "Key k"})
    assert resp.json()["status"] == "IN_QUEUE"
    assert isinstance(resp.json()["queue_position"], int)
    assert resp.headers["x-fal-request-id"] == job.remote_id
    early = await http.get(job.extra["response_url"], headers={"Authorization": "Key k"})
    assert early.status_code == 400  # no result before COMPLETED


async def test_input_the_model_refuses_fails_at_run_time_as_invalid(http, sb) -> None:
    """fal validates the model input when the run starts: an integer duration for Kling (a
    string field) is queued, then COMPLETED with an error and a 422 result."""
    resp = await http.post(
        f"{base(sb)}/fal-ai/kling-video/v3/pro/text-to-video",
        json={"prompt": "x", "duration": 5, "generate_audio": False},
        headers={"Authorization": "Key k"},
    )
    assert resp.status_code == 200
    data = resp.json()
    job = pinned_job(base(sb), rid=data["request_id"]).model_copy(
        update={"extra": {k: data[k] for k in ("status_url", "response_url", "cancel_url")}}
    )
    a = adapter(http, base(sb))
    await poll_until_done(a, job)
    status = await a.poll(job)
    assert status.state is RemoteState.FAILED
    assert isinstance(status.error, InvalidRequest)
    assert "duration" in status.error.message
    assert status.error.request_id == job.remote_id


async def test_emulator_serves_any_model_id(http, sb) -> None:
    for model, app in [
        ("someone/new-model/v1/text-to-video", "someone/new-model"),
        ("workflows/me/my-flow/run", "workflows/me/my-flow"),
    ]:
        resp = await http.post(
            f"{base(sb)}/{model}", json={"prompt": "x"}, headers={"Authorization": "Key k"}
        )
        assert resp.status_code == 200, resp.text
        rid = resp.json()["request_id"]
        assert urlsplit(resp.json()["status_url"]).path == f"/fal-queue/{app}/requests/{rid}/status"


async def test_cancel_in_the_sandbox_and_cancel_after_the_end(http, sb) -> None:
    sb.core.time_scale = 1.0
    a = adapter(http, base(sb))
    job = await a.submit(VideoRequest(prompt="x"), offering("pika-2.2-fal"), idempotency_key="c")
    await a.cancel(job)
    status = await a.poll(job)
    assert status.state is RemoteState.CANCELED
    assert status.raw == "COMPLETED"
    await a.cancel(job)  # ALREADY_COMPLETED: nothing left to cancel, not an error


async def test_bad_key_is_fals_401_and_maps_to_auth_failed(http, sb) -> None:
    resp = await http.post(f"{base(sb)}/fal-ai/veo3.1", json={"prompt": "x"})
    assert resp.status_code == 401
    assert resp.json() == fixture("error_auth.json")
    a = FalQueue(client=http, credentials=Credentials({}), base_url=base(sb))
    with pytest.raises(AuthFailed, match="FAL_KEY"):
        await a.submit(VideoRequest(prompt="x"), offering("veo-3.1-fal"), idempotency_key="k")


async def test_rate_limit_fault_carries_retry_after_and_creates_nothing(http, sb) -> None:
    sb.core.faults = FaultConfig(rules=[FaultRule(kind="rate_limit", rate=1.0, retry_after_s=7)])
    with pytest.raises(RateLimited) as info:
        await adapter(http, base(sb)).submit(
            VideoRequest(prompt="x"), offering("wan-2.6-fal"), idempotency_key="r"
        )
    assert info.value.retry_after == 7
    assert info.value.request_id
    assert sb.core.store.stats()["creates"] == 0


# --- recorded shapes and error bodies (scripted server) ---------------------------------------


async def test_recorded_submit_status_and_result_shapes(http) -> None:
    with scripted_server() as (sp, url):
        sp.script("POST", Scripted(200, at(url, fixture("submit.json"))))
        sp.script(
            "GET",
            Scripted(200, at(url, fixture("status_in_queue.json"))),
            Scripted(200, at(url, fixture("status_in_progress.json"))),
            Scripted(200, at(url, fixture("status_completed.json"))),
            Scripted(200, fixture("result_video.json")),
            Scripted(200, fixture("result_video.json")),
        )
        a = adapter(http, url)
        job = await a.submit(
            VideoRequest(prompt="x", resolution="1080p"),
            offering("kling-3.0-fal"),
            idempotency_key="k",
        )
        assert job.remote_id == "80e732af-660e-45cd-bd63-580e4f2a94cc"
        assert job.extra["cancel_url"].endswith("/cancel")
        states = [(await a.poll(job)).state for _ in range(3)]
        [asset] = await a.fetch(job)
    assert states == [RemoteState.QUEUED, RemoteState.RUNNING, RemoteState.SUCCEEDED]
    assert asset.url == "https://v3.fal.media/files/rabbit/abc123/output.mp4"
    assert asset.content_type == "video/mp4"
    post, *gets = sp.seen
    assert post[1] == "/fal-ai/kling-video/v3/pro/text-to-video"  # submit: the full model id
    assert post[2]["authorization"] == "Key fal-test-not-a-real-key"
    assert not any("idempotency" in h for h in post[2])  # fal has no such header
    rid = job.remote_id
    # follow-ups: exactly the returned URLs (the app only, no sub-path)
    assert [g[1] for g in gets] == [f"/fal-ai/kling-video/requests/{rid}/status"] * 3 + [
        f"/fal-ai/kling-video/requests/{rid}"
    ] * 2


@pytest.mark.parametrize(
    ("reply", "error", "retryable"),
    [
        (
            Scripted(
                429,
                {"detail": "Too many requests"},
                {"retry-after": "3", "x-fal-request-id": "r-9"},
            ),
            RateLimited,
            True,
        ),
        (Scripted(503, {"detail": "Service Unavailable"}), ProviderUnavailable, True),
        (Scripted(401, fixture("error_auth.json")), AuthFailed, False),
        (Scripted(403, fixture("error_locked.json")), QuotaExhausted, False),
        (Scripted(403, {"detail": "User is locked. Reason: Admin lock."}), AuthFailed, False),
        (Scripted(422, fixture("error_content_policy.json")), ContentRejected, False),
        (Scripted(422, fixture("error_validation.json")), InvalidRequest, False),
        (Scripted(200, {"status": "IN_QUEUE"}), AmbiguousSubmission, False),
        (
            Scripted(
                200,
                {
                    "request_id": "r",
                    "status_url": "https://evil.example/s",
                    "response_url": "https://evil.example/r",
                    "cancel_url": "https://evil.example/c",
                },
            ),
            AmbiguousSubmission,
            False,
        ),
    ],
)
async def test_create_error_mapping(http, reply, error, retryable) -> None:
    with scripted_server() as (sp, url):
        sp.script("POST", reply)
        with pytest.raises(error) as info:
            await adapter(http, url).submit(
                VideoRequest(prompt="x"), offering("wan-2.6-fal"), idempotency_key="e"
            )
    assert info.value.retryable is retryable
    assert info.value.provider == "fal-queue"
    if error is RateLimited:
        assert info.value.retry_after == 3
        assert info.value.request_id == "r-9"
    assert [m for m, *_ in sp.seen] == ["POST"]  # sent once, never retried
    assert json.loads(sp.seen[0][3])["duration"] == "5"


@pytest.mark.parametrize(
    ("status", "result", "state", "error"),
    [
        (
            "status_completed_error.json",
            Scripted(422, fixture("error_content_policy.json")),
            RemoteState.FAILED,
            ContentRejected,
        ),
        (
            "status_completed_error.json",
            Scripted(422, fixture("error_validation.json")),
            RemoteState.FAILED,
            InvalidRequest,
        ),
        (
            "status_completed_error.json",
            Scripted(
                504,
                fixture("error_request_timeout.json"),
                {"x-fal-request-id": "r", "x-fal-error-type": "request_timeout"},
            ),
            RemoteState.FAILED,
            ProviderUnavailable,
        ),
        (
            "status_completed.json",
            Scripted(499, {"detail": "cancelled", "error_type": "client_cancelled"}),
            RemoteState.CANCELED,
            None,
        ),
        (
            "status_completed.json",
            Scripted(200, fixture("result_video.json")),
            RemoteState.SUCCEEDED,
            None,
        ),
    ],
)
async def test_completed_is_settled_by_the_result_endpoint(
    http, status, result, state, error
) -> None:
    with scripted_server() as (sp, url):
        sp.script("GET", Scripted(200, at(url, fixture(status))), result)
        got = await adapter(http, url).poll(pinned_job(url))
    assert got.state is state
    assert got.raw == "COMPLETED"
    if error is None:
        assert got.error is None
    else:
        assert isinstance(got.error, error)
        assert got.error.request_id == "req-1"
        assert got.error.retryable is (error is ProviderUnavailable)


async def test_cancelled_status_needs_no_result_call(http) -> None:
    with scripted_server() as (sp, url):
        sp.script("GET", Scripted(200, at(url, fixture("status_cancelled.json"))))
        got = await adapter(http, url).poll(pinned_job(url))
    assert got.state is RemoteState.CANCELED
    assert len(sp.seen) == 1


async def test_ingress_error_on_result_is_a_poll_error_not_a_failed_run(http) -> None:
    with scripted_server() as (sp, url):
        # 502/503/504 without x-fal-request-id come from the ingress, not from the run
        sp.script(
            "GET",
            Scripted(200, at(url, fixture("status_completed.json"))),
            Scripted(503, {"detail": "nginx"}),
        )
        with pytest.raises(ProviderUnavailable):
            await adapter(http, url).poll(pinned_job(url))


async def test_unknown_status_is_an_error_not_queued(http) -> None:
    with scripted_server() as (sp, url):
        sp.script("GET", Scripted(200, {"status": "CANCELLED"}))
        with pytest.raises(ProviderProtocolError, match="CANCELLED"):
            await adapter(http, url).poll(pinned_job(url))


async def test_foreign_pinned_url_never_gets_the_key(http) -> None:
    with scripted_server() as (sp, url):
        job = pinned_job(url).model_copy(update={"base_url": "http://127.0.0.1:9"})
        with pytest.raises(ProviderProtocolError, match="refusing to send the fal key"):
            await adapter(http, url).poll(job)
    assert sp.seen == []


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [
        (Scripted(202, fixture("cancel_requested.json")), None),
        (Scripted(400, fixture("cancel_already_completed.json")), None),
        (Scripted(404, fixture("cancel_not_found.json")), NotFound),
        (Scripted(200, {"status": "MAYBE"}), ProviderProtocolError),
        (Scripted(401, fixture("error_auth.json")), AuthFailed),
    ],
)
async def test_cancel_answers(http, reply, outcome) -> None:
    with scripted_server() as (sp, url):
        sp.script("PUT", reply)
        a = adapter(http, url)
        if outcome is None:
            await a.cancel(pinned_job(url))
        else:
            with pytest.raises(outcome):
                await a.cancel(pinned_job(url))
    assert [(m, p) for m, p, *_ in sp.seen] == [
        ("PUT", "/fal-ai/kling-video/requests/req-1/cancel")
    ]


# --- the real API -----------------------------------------------------------------------------


@pytest.mark.live
@pytest.mark.skipif(not os.environ.get("FAL_KEY"), reason="FAL_KEY is not set")
async def test_live_submit_poll_cancel() -> None:
    """A real submit and poll, cancelled at once so a queued request costs nothing."""
    async with httpx.AsyncClient(timeout=60) as client:
        a = FalQueue(client=client, credentials=Credentials())
        o = offering("pika-2.2-fal")
        job = await a.submit(
            VideoRequest(prompt="a paper boat on a pond", duration_s=5), o, idempotency_key="live"
        )
        assert urlsplit(job.extra["status_url"]).netloc == "queue.fal.run"
        first = await a.poll(job)
        assert first.raw in STATUS
        await a.cancel(job)
        for _ in range(180):
            status = await a.poll(job)
            if status.state.terminal:
                break
            await asyncio.sleep(5)
        assert status.state.terminal, status
        if status.state is RemoteState.SUCCEEDED:
            [asset] = await a.fetch(job)
            assert asset.url.startswith("https://")
