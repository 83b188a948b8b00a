"""The BytePlus ModelArk (Seedance) adapter (provider-apis.md §9b), over real HTTP: against the
sandbox's emulation, a scripted server for error paths, and the recorded response shapes in
tests/fixtures/byteplus."""

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
from vidgate.providers.byteplus_ark import STATUS, BytePlusArk, region_of
from vidgate.sandbox.app import SandboxServer
from vidgate.sandbox.core import INVALID_CREDENTIAL, FaultConfig, FaultRule
from vidgate.settings import Credentials
from vidgate.types import AudioMode, Mode, Reference, ReferenceKind, ReferenceRole, VideoRequest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "byteplus"
CATALOG = load_catalog()
OFFERING = CATALOG.offering("seedance-2.0-byteplus")
MODEL = OFFERING.provider_model_id
KEY = {"ARK_API_KEY": "ark-test-not-a-real-key"}
PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGAAAAAF"
    "AAFJ7vY1AAAAAElFTkSuQmCC"
)
TASK_ID = "cgt-20260821093015-x7k2p"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def adapter(
    http: httpx.AsyncClient, base_url: str | None, env: dict[str, str] | None = None
) -> BytePlusArk:
    return BytePlusArk(
        client=http, credentials=Credentials(KEY if env is None else env), base_url=base_url
    )


def job_at(url: str) -> ProviderJob:
    return ProviderJob(
        protocol="byteplus-ark",
        offering_id=OFFERING.id,
        remote_id=TASK_ID,
        base_url=url + "/api/v3",
        credential_ref=("ARK_API_KEY",),
    )


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[SandboxServer]:
    server = SandboxServer(tmp_path / "sandbox", CATALOG, time_scale=0.002).start()
    yield server
    server.stop()


def base(sb: SandboxServer) -> str:
    return f"{sb.url}/byteplus-ark/api/v3"


async def poll_until_done(a: BytePlusArk, job: ProviderJob) -> list[str]:
    seen: list[str] = []
    for _ in range(600):
        status = await a.poll(job)
        seen.append(status.raw)
        if status.state.terminal:
            return seen
        await asyncio.sleep(0.02)
    raise AssertionError(f"task never finished: {seen[-5:]}")


# -- request mapping ------------------------------------------------------------------------


def test_body_uses_fields_and_the_content_array(http) -> None:
    body = adapter(http, None).body(
        VideoRequest(
            prompt="a kitten yawns",
            mode=Mode.FIRST_LAST_FRAME,
            duration_s=7.6,
            resolution="1080p",
            aspect_ratio="9:16",
            seed=11,
            audio=AudioMode.REQUIRED,
            references=[
                Reference(role=ReferenceRole.FIRST_FRAME, url=PNG),
                Reference(role=ReferenceRole.LAST_FRAME, url="https://example.com/l.png"),
            ],
        ),
        OFFERING,
    )
    assert body == {
        "model": MODEL,
        "content": [
            {"type": "text", "text": "a kitten yawns"},
            {"type": "image_url", "image_url": {"url": PNG}, "role": "first_frame"},
            {
                "type": "image_url",
                "image_url": {"url": "https://example.com/l.png"},
                "role": "last_frame",
            },
        ],
        "resolution": "1080p",
        "ratio": "9:16",
        "duration": 8,
        "seed": 11,
        "watermark": False,
        "generate_audio": True,
    }


def test_reference_inputs_and_options(http) -> None:
    body = adapter(http, None).body(
        VideoRequest(
            prompt="dance like this",
            audio=AudioMode.NONE,
            references=[
                Reference(role=ReferenceRole.SUBJECT, url="https://example.com/face.png"),
                Reference(
                    role=ReferenceRole.SOURCE_VIDEO,
                    kind=ReferenceKind.VIDEO,
                    url="https://example.com/moves.mp4",
                ),
                Reference(
                    role=ReferenceRole.AUDIO,
                    kind=ReferenceKind.AUDIO,
                    url="https://example.com/beat.mp3",
                ),
            ],
            provider_options={
                "byteplus": {
                    "watermark": True,
                    "return_last_frame": True,
                    "service_tier": "flex",
                    "execution_expires_after": 7200,
                    "callback_url": "https://example.com/hook",
                    "ratio": "adaptive",
                }
            },
        ),
        OFFERING,
    )
    assert [(c["type"], c.get("role")) for c in body["content"]] == [
        ("text", None),
        ("image_url", "reference_image"),
        ("video_url", "reference_video"),
        ("audio_url", "reference_audio"),
    ]
    assert body["content"][2]["video_url"] == {"url": "https://example.com/moves.mp4"}
    assert body["generate_audio"] is False  # no audio asked for: say so (it defaults to true)
    assert body["watermark"] is True
    assert body["ratio"] == "adaptive"
    assert body["service_tier"] == "flex"
    assert body["execution_expires_after"] == 7200
    assert body["callback_url"] == "https://example.com/hook"
    assert body["return_last_frame"] is True


def test_legacy_flag_style_puts_parameters_in_the_text(http) -> None:
    offering = OFFERING.model_copy(update={"adapter_options": {"param_style": "flags"}})
    body = adapter(http, None).body(
        VideoRequest(
            prompt="a cat",
            duration_s=5,
            seed=3,
            provider_options={"byteplus": {"camera_fixed": True}},
        ),
        offering,
    )
    assert body["content"][0]["text"] == (
        "a cat --resolution 720p --ratio 16:9 --duration 5 --seed 3 --watermark false "
        "--camerafixed true"
    )
    assert not {"resolution", "ratio", "duration", "seed", "watermark"} & set(body)
    assert body["generate_audio"] is False


FIRST = Reference(role=ReferenceRole.FIRST_FRAME, url=PNG)
SUBJECT = Reference(role=ReferenceRole.SUBJECT, url="https://example.com/s.png")


@pytest.mark.parametrize(
    ("request_kw", "match"),
    [
        ({"references": [FIRST, SUBJECT], "mode": Mode.IMAGE_TO_VIDEO}, "cannot be mixed"),
        ({"references": [Reference(role=ReferenceRole.LAST_FRAME, url=PNG)]}, "needs a first"),
        ({"references": [FIRST, FIRST], "mode": Mode.IMAGE_TO_VIDEO}, "at most one"),
        ({"references": [Reference(role=ReferenceRole.STYLE, url=PNG)]}, "style"),
        (
            {
                "references": [
                    Reference(
                        role=ReferenceRole.SOURCE_VIDEO,
                        kind=ReferenceKind.VIDEO,
                        url="data:video/mp4;base64,AAAA",
                    )
                ]
            },
            "must be URLs",
        ),
        ({"resolution": "540p"}, "540p"),
        ({"aspect_ratio": "3:2"}, "3:2"),
        ({"negative_prompt": "blur"}, "negative"),
        (
            {
                "mode": Mode.EXTEND,
                "references": [
                    Reference(
                        role=ReferenceRole.SOURCE_VIDEO,
                        kind=ReferenceKind.VIDEO,
                        url="https://example.com/v.mp4",
                    )
                ],
            },
            "extend",
        ),
        ({"provider_options": {"byteplus": {"draft": True}}}, "480p"),
    ],
)
async def test_what_the_wire_cannot_express_fails_before_any_call(http, request_kw, match) -> None:
    request = VideoRequest(**{"prompt": "x", **request_kw})
    with scripted_server() as (sp, url):
        a = adapter(http, url + "/api/v3")
        with pytest.raises(CapabilityMismatch, match=match):
            a.check(request, OFFERING)
        with pytest.raises(CapabilityMismatch):
            await a.submit(request, OFFERING, idempotency_key="k")
    assert sp.seen == []


@pytest.mark.parametrize(
    "options",
    [
        {"colour": "blue"},
        {"watermark": "no"},
        {"service_tier": "fast"},
        {"execution_expires_after": 60},
        {"execution_expires_after": True},
        {"callback_url": "http://insecure.example.com"},
        {"ratio": "2:1"},
    ],
)
def test_provider_options_are_validated(http, options) -> None:
    with pytest.raises(InvalidRequest):
        adapter(http, None).check(
            VideoRequest(prompt="x", provider_options={"byteplus": options}), OFFERING
        )


async def test_the_offerings_regional_base_url_is_used_and_pinned(http) -> None:
    with scripted_server() as (sp, url):
        sp.script("POST", Scripted(200, fixture("create")))
        offering = OFFERING.model_copy(update={"adapter_options": {"base_url": url + "/api/v3/"}})
        job = await adapter(http, None).submit(
            VideoRequest(prompt="x"), offering, idempotency_key="r"
        )
    assert job.base_url == url + "/api/v3"
    assert job.remote_id == TASK_ID
    assert sp.seen[0][1] == "/api/v3/contents/generations/tasks"
    # an explicitly given base URL (sandbox, VIDGATE_BYTEPLUS_BASE_URL) wins
    assert (
        adapter(http, "http://elsewhere/api/v3").base_url_for(offering) == "http://elsewhere/api/v3"
    )
    assert region_of(OFFERING.adapter_options["base_url"]) == "ap-southeast"
    assert region_of(url) is None


# -- against the sandbox --------------------------------------------------------------------


@pytest.mark.parametrize(("audio", "tracks"), [(AudioMode.NONE, 0), (AudioMode.REQUIRED, 1)])
async def test_submit_poll_fetch_decodes(http, sb, audio, tracks) -> None:
    a = adapter(http, base(sb))
    req = VideoRequest(prompt="a lighthouse", duration_s=5, resolution="720p", audio=audio)
    job = await a.submit(req, OFFERING, idempotency_key="k1")
    assert job.remote_id.startswith("cgt-")
    assert job.base_url == base(sb)
    assert ProviderJob.model_validate_json(job.model_dump_json()) == job
    seen = await poll_until_done(a, job)
    assert seen[-1] == "succeeded"
    assert set(seen) <= {"queued", "running", "succeeded"}
    [asset] = await a.fetch(job)
    assert dict(asset.headers) == {}
    resp = await http.get(asset.url)
    assert resp.status_code == 200
    with av.open(io.BytesIO(resp.content)) as c:
        v = c.streams.video[0]
        # the official 720p 16:9 size for Seedance 1.5 pro and newer
        assert (v.codec_context.width, v.codec_context.height) == (1280, 720)
        assert sum(1 for _ in c.decode(video=0)) == 5 * 24
        assert len(c.streams.audio) == tracks
    task = (
        await http.get(
            f"{base(sb)}/contents/generations/tasks/{job.remote_id}", headers=a._headers(())
        )
    ).json()
    assert task["framespersecond"] == 24
    assert task["usage"]["completion_tokens"] == 1280 * 720 * 24 * 5 // 1024
    assert task["generate_audio"] is bool(tracks)


async def test_cancel_a_queued_task(http, sb) -> None:
    sb.core.time_scale = 1.0  # keep it queued
    a = adapter(http, base(sb))
    job = await a.submit(VideoRequest(prompt="x"), OFFERING, idempotency_key="c")
    await a.cancel(job)
    status = await a.poll(job)
    assert (status.raw, status.state) == ("cancelled", RemoteState.CANCELED)
    # a second DELETE of a cancelled task is refused by the API; cancel() does not send one
    await a.cancel(job)


async def test_cancel_never_deletes_a_finished_task(http, sb) -> None:
    a = adapter(http, base(sb))
    job = await a.submit(VideoRequest(prompt="x"), OFFERING, idempotency_key="s")
    await poll_until_done(a, job)
    await a.cancel(job)
    assert (await a.poll(job)).state is RemoteState.SUCCEEDED
    assert await a.fetch(job)


async def test_cancel_of_a_running_task_is_refused_without_a_delete(http) -> None:
    with scripted_server() as (sp, url):
        sp.script("GET", Scripted(200, fixture("task_running")))
        with pytest.raises(InvalidRequest, match="running"):
            await adapter(http, url).cancel(job_at(url))
    assert [m for m, *_ in sp.seen] == ["GET"]


async def test_emulated_delete_semantics(http, sb) -> None:
    h = {"Authorization": "Bearer k"}
    a = adapter(http, base(sb))
    job = await a.submit(VideoRequest(prompt="x"), OFFERING, idempotency_key="d")
    await poll_until_done(a, job)
    url = f"{base(sb)}/contents/generations/tasks/{job.remote_id}"
    assert (await http.delete(url, headers=h)).status_code == 200  # deletes the record
    with pytest.raises(NotFound):
        await a.poll(job)
    sb.core.time_scale = 1.0
    job = await a.submit(VideoRequest(prompt="y"), OFFERING, idempotency_key="d2")
    stored = sb.core.store.get(job.remote_id)
    assert stored is not None
    running = dataclasses.replace(
        stored, id=stored.id + "-r", created_at=time.time() - 200, latency_s=1000
    )
    sb.core.store.insert(running)
    resp = await http.delete(f"{base(sb)}/contents/generations/tasks/{running.id}", headers=h)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "InvalidParameter"


async def test_tasks_past_their_deadline_expire(http, sb) -> None:
    a = adapter(http, base(sb))
    job = await a.submit(
        VideoRequest(prompt="x", provider_options={"byteplus": {"execution_expires_after": 3600}}),
        OFFERING,
        idempotency_key="e",
    )
    stored = sb.core.store.get(job.remote_id)
    assert stored is not None
    assert stored.params["execution_expires_after"] == 3600
    # a task whose generation would outlast its (time-scaled) deadline
    late = dataclasses.replace(
        stored, id=stored.id + "-late", latency_s=stored.params["expires_after_s"] * 10
    )
    late = dataclasses.replace(late, created_at=time.time() - late.params["expires_after_s"] * 2)
    sb.core.store.insert(late)
    status = await a.poll(job.model_copy(update={"remote_id": late.id}))
    assert (status.raw, status.state) == ("expired", RemoteState.FAILED)
    assert isinstance(status.error, ProviderUnavailable)


async def test_emulator_reads_legacy_flags_leniently_and_fields_strictly(http, sb) -> None:
    sb.core.time_scale = 1000.0  # the task stays queued: its status cannot move under the test
    h = {"Authorization": "Bearer k"}
    tasks = f"{base(sb)}/contents/generations/tasks"
    legacy = {
        "model": MODEL,
        "content": [{"type": "text", "text": "a cat --rs 480p --rt 9:16 --dur 6 --wm bogus"}],
    }
    created = (await http.post(tasks, json=legacy, headers=h)).json()
    task = (await http.get(f"{tasks}/{created['id']}", headers=h)).json()
    assert (task["resolution"], task["ratio"], task["duration"]) == ("480p", "9:16", 6)
    strict = {**legacy, "duration": 3}
    resp = await http.post(tasks, json=strict, headers=h)
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "duration"
    assert "Request id:" in resp.json()["error"]["message"]
    listed = (await http.get(tasks, params={"filter.status": task["status"]}, headers=h)).json()
    assert [t["id"] for t in listed["items"]] == [created["id"]]
    assert listed["total"] == 1


async def test_bad_key_is_401_in_arks_shape_and_maps_to_auth_failed(http, sb) -> None:
    resp = await http.get(f"{base(sb)}/contents/generations/tasks/{TASK_ID}")
    assert resp.status_code == 401
    err = resp.json()["error"]
    assert (err["code"], err["type"]) == ("AuthenticationError", "Unauthorized")
    a = adapter(http, base(sb), env={"ARK_API_KEY": INVALID_CREDENTIAL})
    with pytest.raises(AuthFailed) as info:
        await a.submit(VideoRequest(prompt="x"), OFFERING, idempotency_key="a")
    assert info.value.request_id
    assert info.value.request_id.startswith("02")  # Ark's request-id form


async def test_moderation_failure_is_content_rejected(http, sb) -> None:
    a = adapter(http, base(sb))
    job = await a.submit(VideoRequest(prompt="[unsafe] x"), OFFERING, idempotency_key="m")
    assert (await poll_until_done(a, job))[-1] == "failed"
    status = await a.poll(job)
    assert isinstance(status.error, ContentRejected)
    assert "OutputVideoSensitiveContentDetected" in status.error.message


async def test_dropped_create_is_ambiguous_and_recorded_once(sb) -> None:
    sb.core.faults = FaultConfig(rules=[FaultRule(kind="drop", rate=1.0)], hang_s=2)
    async with httpx.AsyncClient(timeout=httpx.Timeout(0.4)) as short:
        with pytest.raises(AmbiguousSubmission):
            await adapter(short, base(sb)).submit(
                VideoRequest(prompt="x"), OFFERING, idempotency_key="d"
            )
    assert sb.core.store.stats()["creates"] == 1


# -- error bodies and recorded shapes -------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "error", "retryable"),
    [
        (Scripted(401, fixture("error_auth")), AuthFailed, False),
        (Scripted(403, fixture("error_account_overdue")), QuotaExhausted, False),
        (Scripted(429, fixture("error_quota_exceeded")), QuotaExhausted, False),
        (
            Scripted(429, fixture("error_rate_limit"), {"retry-after": "4"}),
            RateLimited,
            True,
        ),
        (Scripted(400, fixture("error_input_sensitive")), ContentRejected, False),
        (Scripted(400, fixture("error_invalid_parameter")), InvalidRequest, False),
        (
            Scripted(500, {"error": {"code": "InternalServiceError", "message": "oops"}}),
            ProviderUnavailable,
            True,
        ),
        (Scripted(200, {"status": "queued"}), ProviderProtocolError, False),
    ],
)
async def test_create_error_mapping(http, reply, error, retryable) -> None:
    with scripted_server() as (sp, url):
        sp.script("POST", reply)
        with pytest.raises(error) as info:
            await adapter(http, url + "/api/v3").submit(
                VideoRequest(prompt="x"), OFFERING, idempotency_key="e"
            )
    assert info.value.retryable is retryable
    assert info.value.provider == "byteplus-ark"
    if isinstance(reply.body.get("error"), dict) and "Request id:" in reply.body["error"].get(
        "message", ""
    ):
        # the request id Ark puts in its messages is kept for support tickets
        assert info.value.request_id
        assert info.value.request_id in reply.body["error"]["message"]
    if error is RateLimited:
        assert info.value.retry_after == 4
    assert [(m, p) for m, p, *_ in sp.seen] == [("POST", "/api/v3/contents/generations/tasks")]
    assert sp.seen[0][2]["authorization"] == "Bearer ark-test-not-a-real-key"
    assert json.loads(sp.seen[0][3])["model"] == MODEL


@pytest.mark.parametrize(
    ("name", "state", "error"),
    [
        ("task_queued", RemoteState.QUEUED, None),
        ("task_running", RemoteState.RUNNING, None),
        ("task_succeeded", RemoteState.SUCCEEDED, None),
        ("task_failed_moderation", RemoteState.FAILED, ContentRejected),
        ("task_failed_internal", RemoteState.FAILED, ProviderUnavailable),
        ("task_cancelled", RemoteState.CANCELED, None),
        ("task_expired", RemoteState.FAILED, ProviderUnavailable),
    ],
)
async def test_recorded_task_shapes(http, name, state, error) -> None:
    with scripted_server() as (sp, url):
        sp.script("GET", Scripted(200, fixture(name)))
        status = await adapter(http, "http://not-this-one/api/v3").poll(job_at(url))
    assert status.state is state
    assert status.raw == fixture(name)["status"]
    if error is None:
        assert status.error is None
    else:
        assert isinstance(status.error, error)
        assert status.error.request_id == TASK_ID
    assert sp.seen[0][1] == f"/api/v3/contents/generations/tasks/{TASK_ID}"


async def test_fetch_returns_the_video_url(http) -> None:
    with scripted_server() as (sp, url):
        sp.script(
            "GET", Scripted(200, fixture("task_succeeded")), Scripted(200, fixture("task_running"))
        )
        a = adapter(http, url + "/api/v3")
        [asset] = await a.fetch(job_at(url))
        with pytest.raises(ProviderProtocolError):
            await a.fetch(job_at(url))
    assert asset.url == fixture("task_succeeded")["content"]["video_url"]
    assert asset.content_type == "video/mp4"


async def test_unknown_status_is_an_error_not_queued(http) -> None:
    with scripted_server() as (sp, url):
        sp.script("GET", Scripted(200, {**fixture("task_queued"), "status": "paused"}))
        with pytest.raises(ProviderProtocolError, match="paused"):
            await adapter(http, url + "/api/v3").poll(job_at(url))


def test_status_table_is_exactly_the_documented_strings() -> None:
    assert set(STATUS) == {"queued", "running", "succeeded", "failed", "cancelled", "expired"}


# -- live -----------------------------------------------------------------------------------


@pytest.mark.live
@pytest.mark.skipif(not os.environ.get("ARK_API_KEY"), reason="ARK_API_KEY is not set")
async def test_live_minimal_generation() -> None:
    async with httpx.AsyncClient(timeout=60, transport=httpx.AsyncHTTPTransport(retries=0)) as c:
        a = BytePlusArk(client=c, credentials=Credentials())
        job = await a.submit(
            VideoRequest(prompt="a red ball rolls on grass", duration_s=5, resolution="480p"),
            OFFERING,
            idempotency_key="live",
        )
        assert job.region == "ap-southeast"
        deadline = time.monotonic() + 900
        status = await a.poll(job)
        while not status.state.terminal:
            assert time.monotonic() < deadline, "the live task did not finish in 15 minutes"
            await asyncio.sleep(10)
            status = await a.poll(job)
        assert status.state is RemoteState.SUCCEEDED, status.error
        [asset] = await a.fetch(job)
        assert asset.url.startswith("https://")
