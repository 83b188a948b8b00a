"""The MiniMax (Hailuo) v1 adapter, over real HTTP: against the sandbox's emulation, against
a scripted server replaying the recorded shapes in tests/fixtures/minimax/, and (when
MINIMAX_API_KEY is set) against the real API."""

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
from vidgate.catalog.schema import Offering
from vidgate.errors import (
    AuthFailed,
    CapabilityMismatch,
    ContentRejected,
    InvalidRequest,
    ProviderProtocolError,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
    VidgateError,
)
from vidgate.providers.base import ProviderJob, RemoteState
from vidgate.providers.minimax import STATUS, MiniMax
from vidgate.sandbox.app import SandboxServer
from vidgate.settings import Credentials
from vidgate.types import Mode, Reference, ReferenceRole, VideoRequest

CATALOG = load_catalog()
KEY = {"MINIMAX_API_KEY": "mm-test-not-a-real-key"}
# A 2x2 PNG (square): image-to-video output keeps the image's aspect.
PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP8z8DA"
    "wMDAxMDAwMDAAAANHQEDasKb6QAAAABJRU5ErkJggg=="
)


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / "minimax" / f"{name}.json").read_text())


def hailuo() -> Offering:
    return CATALOG.offering("hailuo-2.3-minimax")


def hailuo_fast() -> Offering:
    return CATALOG.offering("hailuo-2.3-fast-minimax")


def adapter(http: httpx.AsyncClient, base_url: str | None) -> MiniMax:
    return MiniMax(client=http, credentials=Credentials(KEY), base_url=base_url)


def job_at(url: str, remote_id: str = "106916112212032") -> ProviderJob:
    return ProviderJob(
        protocol="minimax",
        offering_id="hailuo-2.3-minimax",
        remote_id=remote_id,
        base_url=url,
        credential_ref=("MINIMAX_API_KEY",),
    )


def t2v(prompt: str = "x", **kw: Any) -> VideoRequest:
    """A request Hailuo can serve: 6 s at 768p (VideoRequest's defaults are 5 s at 720p)."""
    return VideoRequest(**{"prompt": prompt, "duration_s": 6, "resolution": "768p", **kw})


def i2v(**kw: Any) -> VideoRequest:
    return t2v(
        "the cat turns its head",
        mode=Mode.IMAGE_TO_VIDEO,
        references=[Reference(role=ReferenceRole.FIRST_FRAME, url=PNG)],
        **kw,
    )


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[SandboxServer]:
    server = SandboxServer(tmp_path / "sandbox", CATALOG, time_scale=0.004).start()
    yield server
    server.stop()


def sandbox_base(sb: SandboxServer) -> str:
    return f"{sb.url}/minimax"


async def poll_until_done(a: MiniMax, job: ProviderJob) -> list[str]:
    seen: list[str] = []
    for _ in range(1000):
        status = await a.poll(job)
        if not seen or seen[-1] != status.raw:
            seen.append(status.raw)
        if status.state.terminal:
            return seen
        await asyncio.sleep(0.005)
    raise AssertionError(f"job never finished: {seen}")


# -- request mapping ---------------------------------------------------------------------


def test_body_maps_duration_resolution_and_model(http) -> None:
    a = adapter(http, "http://unused")
    body = a.body(VideoRequest(prompt="a lighthouse", duration_s=9, resolution="768p"), hailuo())
    assert body == {
        "model": "MiniMax-Hailuo-2.3",
        "prompt": "a lighthouse",
        "duration": 10,  # the nearest allowed value, an integer on the wire
        "resolution": "768P",
    }
    assert isinstance(body["duration"], int)
    body = a.body(VideoRequest(prompt="x", duration_s=5, resolution="1080p"), hailuo())
    assert (body["duration"], body["resolution"]) == (6, "1080P")


def test_first_frame_is_sent_as_given_and_options_pass_through(http) -> None:
    a = adapter(http, "http://unused")
    req = i2v(
        duration_s=6,
        resolution="768p",
        provider_options={"minimax": {"prompt_optimizer": False, "fast_pretreatment": True}},
    )
    body = a.body(req, hailuo_fast())
    assert body["model"] == "MiniMax-Hailuo-2.3-Fast"
    assert body["first_frame_image"] == PNG  # a data URL goes through unchanged
    assert body["prompt_optimizer"] is False
    assert body["fast_pretreatment"] is True


@pytest.mark.parametrize(
    ("offering", "request_kw", "error", "match"),
    [
        (
            "hailuo-2.3-minimax",
            {"duration_s": 10, "resolution": "1080p"},
            CapabilityMismatch,
            "6 s",
        ),
        ("hailuo-2.3-minimax", {"aspect_ratio": "9:16"}, CapabilityMismatch, "16:9"),
        ("hailuo-2.3-minimax", {"resolution": "720p"}, CapabilityMismatch, "720p"),
        ("hailuo-2.3-minimax", {"negative_prompt": "blur"}, CapabilityMismatch, "negative"),
        ("hailuo-2.3-minimax", {"seed": 7}, CapabilityMismatch, "seed"),
        ("hailuo-2.3-minimax", {"audio": "required"}, CapabilityMismatch, "audio"),
        ("hailuo-2.3-minimax", {"prompt": "x" * 2001}, CapabilityMismatch, "2000"),
        ("hailuo-2.3-fast-minimax", {}, CapabilityMismatch, "text-to-video"),
        (
            "hailuo-2.3-minimax",
            {
                "mode": Mode.FIRST_LAST_FRAME,
                "references": [
                    Reference(role=ReferenceRole.FIRST_FRAME, url=PNG),
                    Reference(role=ReferenceRole.LAST_FRAME, url=PNG),
                ],
            },
            CapabilityMismatch,
            "first-last-frame",
        ),
        (
            "hailuo-2.3-minimax",
            {"references": [Reference(role=ReferenceRole.STYLE, url=PNG)]},
            CapabilityMismatch,
            "style",
        ),
        (
            "hailuo-2.3-minimax",
            {"provider_options": {"minimax": {"aigc_watermark": True}}},
            InvalidRequest,
            "prompt_optimizer",
        ),
        (
            "hailuo-2.3-minimax",
            {"provider_options": {"minimax": {"prompt_optimizer": "no"}}},
            InvalidRequest,
            "bool",
        ),
    ],
)
async def test_what_the_wire_cannot_express_fails_before_any_call(
    http, offering: str, request_kw: dict[str, Any], error: type[VidgateError], match: str
) -> None:
    kw = {"prompt": "a lighthouse", "duration_s": 6, "resolution": "768p", **request_kw}
    req = VideoRequest(**kw)
    a = adapter(http, "http://127.0.0.1:9")  # nothing listens there: no call may be made
    with pytest.raises(error, match=match):
        a.check(req, CATALOG.offering(offering))
    with pytest.raises(error, match=match):
        await a.submit(req, CATALOG.offering(offering), idempotency_key="k")


def test_offering_may_pin_its_region_host_unless_a_base_url_is_given(http) -> None:
    china = hailuo().model_copy(
        update={"adapter_options": {"base_url": "https://api.minimaxi.com/"}}
    )
    assert adapter(http, None).base_url_for(china) == "https://api.minimaxi.com"
    assert adapter(http, None).base_url_for(hailuo()) == "https://api.minimax.io"
    assert adapter(http, "http://sandbox/minimax").base_url_for(china) == "http://sandbox/minimax"


# -- against the sandbox -----------------------------------------------------------------


async def test_submit_poll_fetch_decodes(http, sb: SandboxServer) -> None:
    a = adapter(http, sandbox_base(sb))
    req = VideoRequest(prompt="a calico cat playing piano", duration_s=6, resolution="768p")
    job = await a.submit(req, hailuo(), idempotency_key="k1")
    assert job.remote_id.isdigit()  # MiniMax task ids are long decimal strings
    assert job.base_url == sandbox_base(sb)
    assert job.credential_ref == ("MINIMAX_API_KEY",)
    assert ProviderJob.model_validate_json(job.model_dump_json()) == job

    seen = await poll_until_done(a, job)
    assert seen[-1] == "Success"
    order = ["Preparing", "Queueing", "Processing", "Success"]
    assert seen == sorted(seen, key=order.index)  # statuses only move forward

    [asset] = await a.fetch(job)
    assert "Authorization" not in asset.headers  # a presigned link: the key must not travel
    resp = await http.get(asset.url, headers=dict(asset.headers))
    assert resp.status_code == 200
    with av.open(io.BytesIO(resp.content)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (1366, 768)
        assert sum(1 for _ in c.decode(video=0)) == 6 * 24
        assert len(c.streams.audio) == 0  # Hailuo 2.3 makes no audio


async def test_image_to_video_keeps_the_image_aspect(http, sb: SandboxServer) -> None:
    a = adapter(http, sandbox_base(sb))
    job = await a.submit(i2v(), hailuo_fast(), idempotency_key="k2")
    await poll_until_done(a, job)
    [asset] = await a.fetch(job)
    resp = await http.get(asset.url)
    with av.open(io.BytesIO(resp.content)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (768, 768)


async def test_emulator_speaks_the_documented_shapes(http, sb: SandboxServer) -> None:
    base = sandbox_base(sb)
    auth = {"Authorization": "Bearer mm-key"}
    resp = await http.post(
        f"{base}/v1/video_generation",
        json={"model": "MiniMax-Hailuo-2.3", "prompt": "x", "duration": 6, "resolution": "768P"},
        headers=auth,
    )
    created = resp.json()
    assert resp.status_code == 200
    assert resp.headers["trace-id"]
    assert created["base_resp"] == {"status_code": 0, "status_msg": "success"}
    assert isinstance(created["task_id"], str)
    assert created["task_id"].isdigit()

    query = f"{base}/v1/query/video_generation"
    first = (await http.get(query, params={"task_id": created["task_id"]}, headers=auth)).json()
    assert first["status"] in ("Preparing", "Queueing", "Processing")
    assert "file_id" not in first  # only on success
    for _ in range(1000):
        done = (await http.get(query, params={"task_id": created["task_id"]}, headers=auth)).json()
        if done["status"] == "Success":
            break
        await asyncio.sleep(0.005)
    assert isinstance(done["file_id"], str)  # a string in the query...
    assert (done["video_width"], done["video_height"]) == (1366, 768)
    got = await http.get(
        f"{base}/v1/files/retrieve", params={"file_id": done["file_id"]}, headers=auth
    )
    file = got.json()["file"]
    assert file["file_id"] == int(done["file_id"])  # ...an integer in files/retrieve
    assert file["purpose"] == "video_generation"
    assert file["download_url"].startswith(sb.url)

    # 1080P is 6 s only: an HTTP 200 with a 2013 base_resp, like the real API
    bad = await http.post(
        f"{base}/v1/video_generation",
        json={"model": "MiniMax-Hailuo-2.3", "prompt": "x", "duration": 10, "resolution": "1080P"},
        headers=auth,
    )
    assert bad.status_code == 200
    assert bad.json()["base_resp"]["status_code"] == 2013
    assert sb.core.store.stats()["creates"] == 1


async def test_emulator_auth_errors_are_base_resp_codes(http, sb: SandboxServer) -> None:
    url = f"{sandbox_base(sb)}/v1/query/video_generation?task_id=1"
    missing = await http.get(url)
    assert (missing.status_code, missing.json()["base_resp"]["status_code"]) == (200, 1004)
    wrong = await http.get(url, headers={"Authorization": "Bearer invalid-key"})
    assert wrong.json()["base_resp"]["status_code"] == 2049
    a = MiniMax(client=http, credentials=Credentials({}), base_url=sandbox_base(sb))
    with pytest.raises(AuthFailed, match="MINIMAX_API_KEY"):
        await a.submit(t2v(), hailuo(), idempotency_key="k")


async def test_moderation_failure_is_content_rejected(http, sb: SandboxServer) -> None:
    a = adapter(http, sandbox_base(sb))
    job = await a.submit(t2v("[unsafe] something"), hailuo(), idempotency_key="m")
    seen = await poll_until_done(a, job)
    assert seen[-1] == "Fail"
    status = await a.poll(job)
    assert isinstance(status.error, ContentRejected)
    assert "1027" in status.error.message


# -- recorded shapes, replayed by a scripted server --------------------------------------


@pytest.mark.parametrize(
    ("reply", "error", "retryable"),
    [
        (Scripted(200, fixture("error_input_sensitive")), ContentRejected, False),
        (Scripted(200, fixture("error_insufficient_balance")), QuotaExhausted, False),
        (Scripted(200, fixture("error_model_not_in_plan")), QuotaExhausted, False),
        (Scripted(200, fixture("error_rate_limit")), RateLimited, True),
        (Scripted(200, fixture("error_invalid_api_key")), AuthFailed, False),
        (Scripted(200, fixture("error_login_fail")), AuthFailed, False),
        (Scripted(401, fixture("error_login_fail")), AuthFailed, False),
        (Scripted(200, fixture("error_invalid_params")), InvalidRequest, False),
        (Scripted(429, {"message": "too many"}, {"retry-after": "3"}), RateLimited, True),
        (Scripted(503, {"message": "overloaded"}), ProviderUnavailable, True),
        (Scripted(200, {"base_resp": {"status_code": 1013}}), ProviderUnavailable, True),
        (Scripted(200, {"base_resp": {"status_code": 0}}), ProviderProtocolError, False),
    ],
)
async def test_create_error_mapping(http, reply: Scripted, error, retryable: bool) -> None:
    reply.headers.setdefault("Trace-Id", "trace-abc")
    with scripted_server() as (sp, url):
        sp.script("POST", reply)
        a = adapter(http, url)
        with pytest.raises(error) as info:
            await a.submit(t2v(), hailuo(), idempotency_key="e")
    assert info.value.retryable is retryable
    assert info.value.provider == "minimax"
    assert info.value.request_id == "trace-abc"
    if reply.status == 429:
        assert info.value.retry_after == 3  # type: ignore[attr-defined]
    # exactly one create, to the documented path, with bearer auth and no idempotency key
    [(method, path, headers, raw)] = sp.seen
    assert (method, path) == ("POST", "/v1/video_generation")
    assert headers["authorization"] == "Bearer mm-test-not-a-real-key"
    assert "idempotency-key" not in headers
    assert json.loads(raw)["duration"] == 6


async def test_create_parses_the_recorded_response(http) -> None:
    with scripted_server() as (sp, url):
        sp.script("POST", Scripted(200, fixture("create")))
        job = await adapter(http, url).submit(t2v(), hailuo(), idempotency_key="c")
    assert job.remote_id == "106916112212032"
    assert job.base_url == url


@pytest.mark.parametrize(
    ("name", "state"),
    [
        ("query_preparing", RemoteState.QUEUED),
        ("query_queueing", RemoteState.QUEUED),
        ("query_processing", RemoteState.RUNNING),
        ("query_success", RemoteState.SUCCEEDED),
    ],
)
async def test_poll_parses_each_recorded_status(http, name: str, state: RemoteState) -> None:
    with scripted_server() as (sp, url):
        sp.script("GET", Scripted(200, fixture(name)))
        status = await adapter(http, url).poll(job_at(url))
    assert status.state is state
    assert status.raw == fixture(name)["status"]
    assert status.error is None
    # the status call went to the stored base URL, for the stored task id
    [(_, path, headers, _)] = sp.seen
    assert path == "/v1/query/video_generation"
    assert headers["authorization"] == "Bearer mm-test-not-a-real-key"


@pytest.mark.parametrize(
    ("name", "error", "retryable"),
    [
        ("query_fail_output_moderation", ContentRejected, False),
        ("query_fail_input_moderation", ContentRejected, False),
        ("query_fail_internal", ProviderUnavailable, True),
        ("query_failed_cli_spelling", ProviderUnavailable, True),
    ],
)
async def test_failed_tasks_carry_the_right_error(http, name: str, error, retryable) -> None:
    with scripted_server() as (sp, url):
        sp.script("GET", Scripted(200, fixture(name), {"Trace-Id": "trace-q"}))
        status = await adapter(http, url).poll(job_at(url))
    assert status.state is RemoteState.FAILED
    assert isinstance(status.error, error)
    assert status.error.retryable is retryable
    assert status.error.request_id == "trace-q"


async def test_unknown_status_is_an_error_not_queued(http) -> None:
    with scripted_server() as (sp, url):
        body = {**fixture("query_processing"), "status": "Thinking"}
        sp.script("GET", Scripted(200, body))
        with pytest.raises(ProviderProtocolError, match="Thinking"):
            await adapter(http, url).poll(job_at(url))


async def test_query_errors_and_broken_success_raise(http) -> None:
    with scripted_server() as (sp, url):
        a = adapter(http, url)
        sp.script(
            "GET",
            Scripted(200, fixture("error_invalid_params")),
            Scripted(200, fixture("error_rate_limit")),
            Scripted(503, {"base_resp": {"status_code": 1013, "status_msg": "busy"}}),
            Scripted(200, {**fixture("query_success"), "file_id": ""}),
        )
        with pytest.raises(InvalidRequest):
            await a.poll(job_at(url))
        with pytest.raises(RateLimited):
            await a.poll(job_at(url))
        with pytest.raises(ProviderUnavailable):
            await a.poll(job_at(url))
        with pytest.raises(ProviderProtocolError, match="file_id"):
            await a.poll(job_at(url))


async def test_fetch_looks_up_the_file_and_keeps_big_ids_exact(http) -> None:
    big = "9007199254740993123"  # beyond 2**53: a float would round it
    with scripted_server() as (sp, url):
        sp.script(
            "GET",
            Scripted(200, {**fixture("query_success"), "file_id": int(big)}),
            Scripted(200, fixture("files_retrieve")),
        )
        [asset] = await adapter(http, url).fetch(job_at(url))
    assert asset.url == fixture("files_retrieve")["file"]["download_url"]
    assert asset.content_type == "video/mp4"
    assert dict(asset.headers) == {}  # the download takes no auth
    (_, q_path, _, _), (_, f_path, f_headers, _) = sp.seen
    assert (q_path, f_path) == ("/v1/query/video_generation", "/v1/files/retrieve")
    assert f_headers["authorization"] == "Bearer mm-test-not-a-real-key"  # retrieve does


async def test_fetch_sends_the_file_id_as_given(http) -> None:
    seen_query: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen_query.append(request.url.query.decode())
        if request.url.path.endswith("/files/retrieve"):
            return httpx.Response(200, json=fixture("files_retrieve"))
        return httpx.Response(200, json={**fixture("query_success"), "file_id": 2**70 + 1})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        await adapter(client, "http://mm").fetch(job_at("http://mm"))
    assert seen_query == ["task_id=106916112212032", f"file_id={2**70 + 1}"]


async def test_fetch_translates_retrieve_errors(http) -> None:
    with scripted_server() as (sp, url):
        sp.script(
            "GET",
            Scripted(200, fixture("query_success")),
            Scripted(200, fixture("error_login_fail")),
            Scripted(200, fixture("query_processing")),
        )
        a = adapter(http, url)
        with pytest.raises(AuthFailed):
            await a.fetch(job_at(url))
        with pytest.raises(ProviderProtocolError, match="Processing"):
            await a.fetch(job_at(url))


async def test_there_is_no_cancel(http) -> None:
    assert MiniMax.supports_cancel is False
    with pytest.raises(InvalidRequest, match="cannot cancel"):
        await adapter(http, "http://127.0.0.1:9").cancel(job_at("http://127.0.0.1:9"))


def test_status_table_is_exactly_the_documented_strings() -> None:
    assert set(STATUS) == {"Preparing", "Queueing", "Processing", "Success", "Fail", "Failed"}


# -- the real API --------------------------------------------------------------------------


@pytest.mark.live
@pytest.mark.skipif(not os.environ.get("MINIMAX_API_KEY"), reason="MINIMAX_API_KEY is not set")
async def test_live_submit_and_poll() -> None:
    """One real 6 s 768P clip (billed), submitted once and polled once."""
    async with httpx.AsyncClient(timeout=60, transport=httpx.AsyncHTTPTransport(retries=0)) as c:
        a = MiniMax(client=c, credentials=Credentials(), base_url=None)
        req = t2v("a paper boat on a calm lake, static shot")
        job = await a.submit(req, hailuo(), idempotency_key="live")
        assert job.remote_id
        status = await a.poll(job)
        assert status.raw in STATUS
