"""The Kling adapter, over real HTTP: against the sandbox's emulation (JWT checked there), and
against a scripted server for the error bodies and recorded response shapes (fixtures/kling)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import jwt
import pytest

from tests.conftest import FIXTURES
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
from vidgate.providers.kling import STATUS, Kling
from vidgate.sandbox.app import SandboxServer
from vidgate.sandbox.core import INVALID_CREDENTIAL, FaultConfig, FaultRule
from vidgate.settings import Credentials
from vidgate.types import AudioMode, Mode, Reference, ReferenceRole, VideoRequest

CATALOG = load_catalog()
OFFERING = CATALOG.offering("kling-3.0-kling")
KEYS = {"KLING_ACCESS_KEY": "ak-test", "KLING_SECRET_KEY": "sk-test-0123456789abcdef0123456789"}
SANDBOX = Credentials(sandbox=True)
# A 2x2 PNG and a 9:16 one (4x8), as data URLs.
PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP8z8DA"
    "wMDAxMDAwMDAAAANHQEDasKb6QAAAABJRU5ErkJggg=="
)
FIX = FIXTURES / "kling"


def fixture(name: str) -> Any:
    return json.loads((FIX / name).read_text())


def adapter(
    http: httpx.AsyncClient,
    base_url: str | None,
    credentials: Credentials | None = None,
    clock: Any = time.time,
) -> Kling:
    return Kling(
        client=http, credentials=credentials or Credentials(KEYS), base_url=base_url, clock=clock
    )


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[SandboxServer]:
    server = SandboxServer(tmp_path / "sandbox", CATALOG, time_scale=0.002).start()
    yield server
    server.stop()


def base(sb: SandboxServer) -> str:
    return f"{sb.url}/kling"


def job_at(url: str, endpoint: str = "text2video", task_id: str = "822953089408827433"):
    return ProviderJob(
        protocol="kling",
        offering_id=OFFERING.id,
        remote_id=task_id,
        base_url=url,
        credential_ref=("KLING_ACCESS_KEY", "KLING_SECRET_KEY"),
        extra={"endpoint": endpoint},
    )


async def finish(a: Kling, job: ProviderJob) -> list[str]:
    seen: list[str] = []
    for _ in range(500):
        status = await a.poll(job)
        if not seen or seen[-1] != status.raw:
            seen.append(status.raw)
        if status.state.terminal:
            return seen
        await asyncio.sleep(0.02)
    raise AssertionError(f"never finished: {seen}")


# -- auth ---------------------------------------------------------------------------------


async def test_token_is_hs256_jwt_with_documented_claims(http) -> None:
    a = adapter(http, None, clock=lambda: 1_700_000_000.0)
    token = a.token(("KLING_ACCESS_KEY", "KLING_SECRET_KEY"))
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    claims = jwt.decode(
        token,
        KEYS["KLING_SECRET_KEY"],
        algorithms=["HS256"],
        options={"verify_exp": False, "verify_nbf": False},
    )
    assert claims == {"iss": "ak-test", "exp": 1_700_001_800, "nbf": 1_699_999_995}


async def test_token_is_minted_per_request(http) -> None:
    now = [1_700_000_000.0]
    with scripted_server() as (sp, url):
        sp.script("GET", Scripted(200, fixture("task_processing.json")))
        sp.script("GET", Scripted(200, fixture("task_processing.json")))
        a = adapter(http, url, clock=lambda: now[0])
        await a.poll(job_at(url))
        now[0] += 1000
        await a.poll(job_at(url))
    tokens = [h["authorization"].removeprefix("Bearer ") for _, _, h, _ in sp.seen]
    exps = [jwt.decode(t, options={"verify_signature": False})["exp"] for t in tokens]
    assert exps == [1_700_001_800, 1_700_002_800]


async def test_sandbox_verifies_the_jwt_signature(http, sb) -> None:
    req = VideoRequest(prompt="x", duration_s=5)
    wrong = Credentials({"KLING_ACCESS_KEY": "ak", "KLING_SECRET_KEY": INVALID_CREDENTIAL})
    with pytest.raises(AuthFailed, match="1002") as info:
        await adapter(http, base(sb), wrong).submit(req, OFFERING, idempotency_key="a1")
    assert info.value.request_id
    assert info.value.status_code == 401
    # an expired token (minted an hour ago) is refused with 1004
    stale = adapter(http, base(sb), SANDBOX, clock=lambda: time.time() - 3600)
    with pytest.raises(AuthFailed, match="1004"):
        await stale.submit(req, OFFERING, idempotency_key="a2")
    # no header at all: 1001, in Kling's envelope
    resp = await http.post(f"{base(sb)}/v1/videos/text2video", json={"prompt": "x"})
    assert resp.status_code == 401
    assert resp.json()["code"] == 1001
    assert set(resp.json()) == {"code", "message", "request_id"}
    assert sb.core.store.stats()["creates"] == 0


async def test_missing_credential_names_the_variable(http) -> None:
    a = adapter(http, "http://127.0.0.1:9", Credentials({}))
    with pytest.raises(AuthFailed, match="KLING_ACCESS_KEY"):
        await a.submit(VideoRequest(prompt="x"), OFFERING, idempotency_key="k")


# -- request mapping ----------------------------------------------------------------------


async def test_text2video_body(http) -> None:
    a = adapter(http, None)
    req = VideoRequest(
        prompt="a fox",
        negative_prompt="blur",
        duration_s=7.6,
        resolution="1080p",
        aspect_ratio="9:16",
        audio=AudioMode.REQUIRED,
        provider_options={"kling": {"cfg_scale": 0.3}},
    )
    assert a.endpoint_for(req) == "text2video"
    body = a.body(req, OFFERING, idempotency_key="idem-1")
    assert body == {
        "model_name": "kling-v3",
        "prompt": "a fox",
        "negative_prompt": "blur",
        "mode": "pro",
        "duration": "8",  # nearest allowed, a string on the wire
        "sound": "on",
        "aspect_ratio": "9:16",
        "external_task_id": "idem-1",
        "cfg_scale": 0.3,
    }
    quiet = a.body(VideoRequest(prompt="x", audio=AudioMode.ANY), OFFERING)
    assert quiet["sound"] == "off"  # sound costs extra: ANY does not ask for it
    assert quiet["mode"] == "std"
    assert "external_task_id" not in quiet


async def test_image2video_body_strips_the_data_prefix(http) -> None:
    a = adapter(http, None)
    req = VideoRequest(
        prompt="move",
        mode=Mode.FIRST_LAST_FRAME,
        references=[
            Reference(role=ReferenceRole.FIRST_FRAME, url=PNG),
            Reference(role=ReferenceRole.LAST_FRAME, url="https://example.com/end.jpg"),
        ],
    )
    assert a.endpoint_for(req) == "image2video"
    body = a.body(req, OFFERING)
    assert body["image"] == PNG.split(",", 1)[1]
    assert body["image_tail"] == "https://example.com/end.jpg"
    assert "aspect_ratio" not in body  # the output follows the image


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"prompt": "x" * 2501}, CapabilityMismatch, "2500"),
        ({"resolution": "4k"}, CapabilityMismatch, "mode"),
        ({"aspect_ratio": "4:3"}, CapabilityMismatch, "aspect_ratio"),
        (
            {
                "mode": Mode.IMAGE_TO_VIDEO,
                "references": [
                    Reference(role=ReferenceRole.FIRST_FRAME, url="data:image/webp;base64,AAAA")
                ],
            },
            CapabilityMismatch,
            "image/webp",
        ),
        (
            {"references": [Reference(role=ReferenceRole.STYLE, url="https://e.com/s.png")]},
            CapabilityMismatch,
            "first frame",
        ),
        ({"provider_options": {"kling": {"seed": 3}}}, InvalidRequest, "unknown option"),
        ({"provider_options": {"kling": {"cfg_scale": 2}}}, InvalidRequest, "0..1"),
        ({"provider_options": {"kling": {"static_mask": "m"}}}, InvalidRequest, "image-to"),
        (
            {
                "mode": Mode.FIRST_LAST_FRAME,
                "references": [
                    Reference(role=ReferenceRole.FIRST_FRAME, url=PNG),
                    Reference(role=ReferenceRole.LAST_FRAME, url=PNG),
                ],
                "provider_options": {"kling": {"camera_control": {"type": "forward_up"}}},
            },
            InvalidRequest,
            "last frame",
        ),
    ],
)
async def test_wire_limits_are_refused_before_any_call(http, change, error, match) -> None:
    a = adapter(http, "http://127.0.0.1:9")  # nothing listens there: no call may be made
    req = VideoRequest.model_validate({"prompt": "x", **change})
    with pytest.raises(error, match=match):
        a.check(req, OFFERING)
    with pytest.raises(error):
        await a.submit(req, OFFERING, idempotency_key="never-sent")


async def test_offering_modes_come_from_adapter_options(http) -> None:
    a = adapter(http, None)
    off = OFFERING.model_copy(update={"adapter_options": {"modes": "720p=pro"}})
    assert a.body(VideoRequest(prompt="x"), off)["mode"] == "pro"
    with pytest.raises(CapabilityMismatch):
        a.check(VideoRequest(prompt="x", resolution="1080p"), off)


# -- against the emulation ----------------------------------------------------------------


async def test_submit_poll_fetch_decodes(http, sb) -> None:
    a = adapter(http, base(sb), SANDBOX)
    req = VideoRequest(prompt="a lighthouse", duration_s=3, audio=AudioMode.REQUIRED)
    job = await a.submit(req, OFFERING, idempotency_key="life-1")
    assert job.base_url == base(sb)
    assert job.credential_ref == ("KLING_ACCESS_KEY", "KLING_SECRET_KEY")
    assert job.extra == {"endpoint": "text2video", "external_task_id": "life-1"}
    assert ProviderJob.model_validate_json(job.model_dump_json()) == job
    seen = await finish(a, job)
    assert seen[-1] == "succeed"
    assert set(seen) <= {"submitted", "processing", "succeed"}
    [asset] = await a.fetch(job)
    assert not asset.headers  # a plain expiring CDN link
    resp = await http.get(asset.url)
    assert resp.status_code == 200
    with av.open(io.BytesIO(resp.content)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (1280, 720)  # std → 720p
        assert sum(1 for _ in c.decode(video=0)) == 3 * 24
        assert len(c.streams.audio) == 1  # sound "on"


async def test_image2video_polls_on_its_own_path(http, sb) -> None:
    a = adapter(http, base(sb), SANDBOX)
    req = VideoRequest(
        prompt="move",
        mode=Mode.IMAGE_TO_VIDEO,
        resolution="1080p",
        references=[Reference(role=ReferenceRole.FIRST_FRAME, url=PNG)],
    )
    job = await a.submit(req, OFFERING, idempotency_key="i2v-1")
    assert job.extra["endpoint"] == "image2video"
    assert (await finish(a, job))[-1] == "succeed"
    [asset] = await a.fetch(job)
    with av.open(io.BytesIO((await http.get(asset.url)).content)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (1080, 1080)  # 1:1 image, pro
    # the same id on the other create path is not found, as at Kling
    with pytest.raises(NotFound):
        await a.poll(job.model_copy(update={"extra": {"endpoint": "text2video"}}))


async def test_data_url_prefix_is_refused_by_the_emulation(http, sb) -> None:
    token = adapter(http, None, SANDBOX).token(())
    resp = await http.post(
        f"{base(sb)}/v1/videos/image2video",
        json={"model_name": "kling-v3", "image": PNG, "duration": "5"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status_code == 400
    assert resp.json()["code"] == 1201
    numeric = await http.post(
        f"{base(sb)}/v1/videos/text2video",
        json={"model_name": "kling-v3", "prompt": "x", "duration": 5},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert numeric.json()["code"] == 1201  # duration must be a string


async def test_external_task_id_dedupes_and_finds_the_task(http, sb) -> None:
    a = adapter(http, base(sb), SANDBOX)
    req = VideoRequest(prompt="same", duration_s=5)
    first = await a.submit(req, OFFERING, idempotency_key="once")
    with pytest.raises(InvalidRequest, match="external_task_id"):
        await a.submit(req, OFFERING, idempotency_key="once")
    assert sb.core.store.stats()["creates"] == 1
    # the external id reads the same task as the task id
    by_ext = await a.poll(first.model_copy(update={"remote_id": "once"}))
    assert by_ext.state in (RemoteState.QUEUED, RemoteState.RUNNING, RemoteState.SUCCEEDED)


async def test_moderation_failure_keeps_kling_reason(http, sb) -> None:
    a = adapter(http, base(sb), SANDBOX)
    job = await a.submit(VideoRequest(prompt="[unsafe] x"), OFFERING, idempotency_key="m")
    assert (await finish(a, job))[-1] == "failed"
    status = await a.poll(job)
    assert isinstance(status.error, ContentRejected)
    assert "risk control" in status.error.message


async def test_rate_limit_fault_is_1302_with_retry_after(http, sb) -> None:
    sb.core.faults = FaultConfig(rules=[FaultRule(kind="rate_limit", rate=1.0, retry_after_s=4)])
    with pytest.raises(RateLimited) as info:
        await adapter(http, base(sb), SANDBOX).submit(
            VideoRequest(prompt="x"), OFFERING, idempotency_key="r"
        )
    assert info.value.retry_after == 4
    assert info.value.details["kling_code"] == 1302
    assert info.value.request_id


async def test_dropped_create_is_ambiguous(sb) -> None:
    sb.core.faults = FaultConfig(rules=[FaultRule(kind="drop", rate=1.0)], hang_s=2)
    async with httpx.AsyncClient(timeout=0.4) as short:
        with pytest.raises(AmbiguousSubmission):
            await adapter(short, base(sb), SANDBOX).submit(
                VideoRequest(prompt="x"), OFFERING, idempotency_key="d"
            )
    assert sb.core.store.stats()["creates"] == 1


async def test_no_cancel(http, sb) -> None:
    a = adapter(http, base(sb), SANDBOX)
    assert not a.supports_cancel
    job = await a.submit(VideoRequest(prompt="x"), OFFERING, idempotency_key="c")
    with pytest.raises(InvalidRequest, match="cannot cancel"):
        await a.cancel(job)


# -- error bodies (scripted) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "error", "retryable"),
    [
        (Scripted(400, fixture("error_1301_content.json")), ContentRejected, False),
        # a non-zero code can come with HTTP 200
        (Scripted(200, fixture("error_1301_content.json")), ContentRejected, False),
        (Scripted(429, fixture("error_1102_quota.json")), QuotaExhausted, False),
        (
            Scripted(429, {"code": 1101, "message": "account in arrears", "request_id": "r"}),
            QuotaExhausted,
            False,
        ),
        (Scripted(429, fixture("error_1303_concurrency.json")), RateLimited, True),
        (
            Scripted(
                429,
                {"code": 1302, "message": "rate limit", "request_id": "r"},
                {"retry-after": "3"},
            ),
            RateLimited,
            True,
        ),
        (Scripted(401, fixture("error_1004_expired.json")), AuthFailed, False),
        (
            Scripted(403, {"code": 1103, "message": "no permission", "request_id": "r"}),
            AuthFailed,
            False,
        ),
        (
            Scripted(400, {"code": 1201, "message": "duration invalid", "request_id": "r"}),
            InvalidRequest,
            False,
        ),
        (
            Scripted(503, {"code": 5001, "message": "maintenance", "request_id": "r"}),
            ProviderUnavailable,
            True,
        ),
        (Scripted(502, "<html>bad gateway</html>"), ProviderUnavailable, True),
        (
            Scripted(200, {"code": 0, "message": "SUCCEED", "data": {}}),
            ProviderProtocolError,
            False,
        ),
        (Scripted(200, {"data": {"task_id": "1"}}), ProviderProtocolError, False),
    ],
)
async def test_create_error_mapping(http, reply, error, retryable) -> None:
    with scripted_server() as (sp, url):
        sp.script("POST", reply)
        with pytest.raises(error) as info:
            await adapter(http, url).submit(
                VideoRequest(prompt="x", duration_s=5), OFFERING, idempotency_key="e"
            )
    assert info.value.retryable is retryable
    assert info.value.provider == "kling"
    if isinstance(reply.body, dict) and reply.body.get("request_id"):
        assert info.value.request_id == reply.body["request_id"]
    if reply.headers.get("retry-after"):
        assert info.value.retry_after == 3  # type: ignore[attr-defined]
    # exactly one create was sent, on the text2video path, with a string duration
    assert [(m, p) for m, p, *_ in sp.seen] == [("POST", "/v1/videos/text2video")]
    sent = json.loads(sp.seen[0][3])
    assert sent["duration"] == "5"
    assert sent["external_task_id"] == "e"
    assert sp.seen[0][2]["authorization"].startswith("Bearer ey")


# -- recorded shapes (fixtures) -----------------------------------------------------------


async def test_create_fixture_parses(http) -> None:
    with scripted_server() as (sp, url):
        sp.script("POST", Scripted(200, fixture("create.json")))
        job = await adapter(http, url).submit(
            VideoRequest(prompt="x"), OFFERING, idempotency_key="job_1-a1-0f3c9d2e"
        )
    assert job.remote_id == "822953089408827433"
    assert job.extra["endpoint"] == "text2video"


@pytest.mark.parametrize(
    ("name", "state", "error"),
    [
        ("task_submitted.json", RemoteState.QUEUED, None),
        ("task_processing.json", RemoteState.RUNNING, None),
        ("task_succeed.json", RemoteState.SUCCEEDED, None),
        ("task_failed_moderation.json", RemoteState.FAILED, ContentRejected),
        ("task_failed_internal.json", RemoteState.FAILED, ProviderUnavailable),
    ],
)
async def test_status_fixtures_parse(http, name, state, error) -> None:
    body = fixture(name)
    with scripted_server() as (sp, url):
        sp.script("GET", Scripted(200, body))
        status = await adapter(http, url).poll(job_at(url, "image2video"))
    # the status call went to the stored base URL, on the pinned create path
    assert sp.seen[0][1] == "/v1/videos/image2video/822953089408827433"
    assert status.state is state
    assert status.raw == body["data"]["task_status"]
    if error is None:
        assert status.error is None
    else:
        assert isinstance(status.error, error)
        assert body["data"]["task_status_msg"] in status.error.message
        assert status.error.request_id == body["request_id"]


async def test_fetch_returns_the_video_url_not_the_watermarked_one(http) -> None:
    body = fixture("task_succeed.json")
    with scripted_server() as (sp, url):
        sp.script("GET", Scripted(200, body))
        [asset] = await adapter(http, url).fetch(job_at(url))
    assert asset.url == body["data"]["task_result"]["videos"][0]["url"]
    assert asset.content_type == "video/mp4"


async def test_fetch_without_videos_is_a_protocol_error(http) -> None:
    with scripted_server() as (sp, url):
        sp.script("GET", Scripted(200, fixture("task_processing.json")))
        with pytest.raises(ProviderProtocolError, match="no video url"):
            await adapter(http, url).fetch(job_at(url))


async def test_poll_error_envelope_at_http_200(http) -> None:
    with scripted_server() as (sp, url):
        sp.script("GET", Scripted(200, fixture("error_1004_expired.json")))
        with pytest.raises(AuthFailed) as info:
            await adapter(http, url).poll(job_at(url))
    assert info.value.request_id == fixture("error_1004_expired.json")["request_id"]


async def test_unknown_status_is_an_error_not_queued(http) -> None:
    body = fixture("task_processing.json")
    body["data"]["task_status"] = "succeeded"  # the trap: Kling says "succeed"
    with scripted_server() as (sp, url):
        sp.script("GET", Scripted(200, body))
        with pytest.raises(ProviderProtocolError, match="succeeded"):
            await adapter(http, url).poll(job_at(url))


async def test_job_without_pinned_endpoint_is_refused(http) -> None:
    job = job_at("http://127.0.0.1:9").model_copy(update={"extra": {}})
    with pytest.raises(ProviderProtocolError, match="endpoint"):
        await adapter(http, None).poll(job)


async def test_offering_base_url_pins_the_region(http) -> None:
    off = OFFERING.model_copy(update={"adapter_options": {"base_url": "http://127.0.0.1:9"}})
    a = Kling(client=http, credentials=Credentials(KEYS))  # not overridden: the offering's host
    assert a._base_for(off) == "http://127.0.0.1:9"
    assert adapter(http, "http://sandbox")._base_for(off) == "http://sandbox"


def test_status_table_is_exactly_the_documented_strings() -> None:
    assert set(STATUS) == {"submitted", "processing", "succeed", "failed"}


# -- live ---------------------------------------------------------------------------------


@pytest.mark.live
@pytest.mark.skipif(
    not (os.environ.get("KLING_ACCESS_KEY") and os.environ.get("KLING_SECRET_KEY")),
    reason="KLING_ACCESS_KEY and KLING_SECRET_KEY are not set",
)
async def test_live_minimal_submit_and_poll() -> None:
    async with httpx.AsyncClient(
        timeout=60, transport=httpx.AsyncHTTPTransport(retries=0)
    ) as client:
        a = Kling(client=client, credentials=Credentials(), base_url=None)
        job = await a.submit(
            VideoRequest(prompt="a paper boat on a calm pond", duration_s=3),
            OFFERING,
            idempotency_key=f"vidgate-live-{int(time.time())}",
        )
        assert job.remote_id
        status = await a.poll(job)
        assert status.state in STATUS.values()
