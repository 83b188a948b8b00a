"""The Replicate adapter and its emulation, over real HTTP: request mapping from catalog data,
the recorded response shapes in tests/fixtures/replicate (written from provider-apis.md §8 and
Replicate's documented problem bodies), error translation through a scripted server, the
Cancel-After deadline, pinned follow-up URLs and the one-hour output lifetime."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import FIXTURES
from tests.scripted import Scripted, scripted_server
from vidgate.catalog.loader import load_catalog
from vidgate.catalog.schema import DurationSpec, Offering
from vidgate.errors import (
    AuthFailed,
    CapabilityMismatch,
    ConfigError,
    ContentRejected,
    InvalidRequest,
    NotFound,
    ProviderProtocolError,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
)
from vidgate.providers.base import ProviderJob, RemoteState
from vidgate.providers.replicate import (
    STATUS,
    Replicate,
    cancel_after_header,
    output_urls,
    progress_from_logs,
)
from vidgate.sandbox.app import SandboxServer
from vidgate.sandbox.emulators import replicate as emulator
from vidgate.settings import Credentials
from vidgate.types import Constraints, Mode, Reference, ReferenceRole, VideoRequest

CATALOG = load_catalog()
KEY = {"REPLICATE_API_TOKEN": "r8_test-not-a-real-token"}
REC = FIXTURES / "replicate"
PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP8z8DA"
    "wMDAxMDAwMDAAAANHQEDasKb6QAAAABJRU5ErkJggg=="
)


def recorded(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((REC / name).read_text("utf-8"))
    return data


def adapter(http: httpx.AsyncClient, base_url: str) -> Replicate:
    return Replicate(client=http, credentials=Credentials(KEY), base_url=base_url)


def offering(offering_id: str, **options: str) -> Offering:
    o = CATALOG.offering(offering_id)
    if options:
        o = o.model_copy(update={"adapter_options": {**o.adapter_options, **options}})
    return o


def job_at(url: str, **extra: str) -> ProviderJob:
    return ProviderJob(
        protocol="replicate",
        offering_id="veo-3-fast-replicate",
        remote_id="ufawqhfynnddngldkgtslldrkq",
        base_url=url + "/v1",
        credential_ref=("REPLICATE_API_TOKEN",),
        extra=extra,
    )


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[SandboxServer]:
    server = SandboxServer(tmp_path / "sandbox", CATALOG, time_scale=0.002).start()
    yield server
    server.stop()


def sandbox_base(sb: SandboxServer) -> str:
    return f"{sb.url}/replicate/v1"


async def poll_until_done(a: Replicate, job: ProviderJob) -> list[str]:
    seen: list[str] = []
    for _ in range(600):
        status = await a.poll(job)
        if not seen or seen[-1] != status.raw:
            seen.append(status.raw)
        if status.state.terminal:
            return seen
        await asyncio.sleep(0.02)
    raise AssertionError(f"prediction never finished: {seen}")


# -- request mapping (no network) -------------------------------------------------------------


def test_veo_input_uses_official_field_names(http) -> None:
    a = adapter(http, "http://127.0.0.1:9")
    o = offering("veo-3-fast-replicate")
    req = VideoRequest(
        prompt="a fox",
        mode=Mode.IMAGE_TO_VIDEO,
        duration_s=7,
        resolution="1080p",
        aspect_ratio="9:16",
        references=[Reference(role=ReferenceRole.FIRST_FRAME, url=PNG)],
    )
    assert a.build_input(req, o) == {
        "prompt": "a fox",
        "duration": 8,  # the nearest allowed value, an integer on the wire
        "aspect_ratio": "9:16",
        "resolution": "1080p",
        "image": PNG,  # data URLs are accepted for file inputs
    }
    assert a.create_path(a.model_ref(req, o), o) == ("/models/google/veo-3-fast/predictions", {})


def test_wan_input_sets_frames_not_seconds_and_picks_the_task_model(http) -> None:
    a = adapter(http, "http://127.0.0.1:9")
    o = offering("wan-2.2-replicate")
    t2v = VideoRequest(prompt="x", duration_s=5, resolution="480p", seed=7)
    assert a.build_input(t2v, o) == {
        "prompt": "x",
        "seed": 7,
        "num_frames": 120,
        "frames_per_second": 24,
        "aspect_ratio": "16:9",
        "resolution": "480p",
    }
    i2v = VideoRequest(
        prompt="x",
        mode=Mode.IMAGE_TO_VIDEO,
        references=[Reference(role=ReferenceRole.FIRST_FRAME, url="https://example.com/a.png")],
    )
    body = a.build_input(i2v, o)
    assert "aspect_ratio" not in body  # narrowed away for the image-to-video model
    assert body["image"] == "https://example.com/a.png"
    assert a.model_ref(i2v, o) == "wan-video/wan-2.2-i2v-fast"


@pytest.mark.parametrize(
    ("mode", "resolution", "model"),
    [
        (Mode.TEXT_TO_VIDEO, "720p", "wan-video/wan-2.1-t2v-720p"),
        (Mode.TEXT_TO_VIDEO, "480p", "wan-video/wan-2.1-t2v-480p"),
        (Mode.IMAGE_TO_VIDEO, "720p", "wan-video/wan-2.1-i2v-720p"),
        (Mode.IMAGE_TO_VIDEO, "480p", "wan-video/wan-2.1-i2v-480p"),
    ],
)
def test_models_split_by_task_and_resolution(http, mode, resolution, model) -> None:
    refs = (
        [Reference(role=ReferenceRole.FIRST_FRAME, url=PNG)] if mode is Mode.IMAGE_TO_VIDEO else []
    )
    req = VideoRequest(prompt="x", mode=mode, resolution=resolution, references=refs)
    a = adapter(http, "http://127.0.0.1:9")
    o = offering("wan-2.1-replicate")
    assert a.model_ref(req, o) == model
    assert "resolution" not in a.build_input(req, o)  # the model variant carries it


def test_versions_go_to_the_predictions_endpoint(http) -> None:
    a = adapter(http, "http://127.0.0.1:9")
    vid = "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa"
    pinned = offering("veo-3-replicate", version=vid)
    assert a.create_path("google/veo-3", pinned) == ("/predictions", {"version": vid})
    plain = offering("veo-3-replicate")
    assert a.create_path(f"owner/model:{vid}", plain) == (
        "/predictions",
        {"version": f"owner/model:{vid}"},
    )
    with pytest.raises(ConfigError, match="owner/name"):
        a.create_path("not-a-model", plain)


def test_catalog_data_shapes_new_models(http) -> None:
    """A new model is catalog data: field names, value formats and fixed inputs."""
    o = offering(
        "ltx-2-replicate",
        **{
            "input.duration": "seconds_total",
            "format.duration": "seconds",
            "format.resolution": "size",
            "const.enhance_prompt": "false",
            "const.style": "cinematic",
        },
    )
    body = adapter(http, "http://127.0.0.1:9").build_input(
        VideoRequest(prompt="x", duration_s=9, resolution="1080p"), o
    )
    assert body["seconds_total"] == "10s"
    assert body["resolution"] == "1920x1080"
    assert body["enhance_prompt"] is False
    assert body["style"] == "cinematic"


def test_optional_audio_is_switched_only_where_the_model_has_the_switch(http) -> None:
    a = adapter(http, "http://127.0.0.1:9")
    caps = CATALOG.offering("veo-3-fast-replicate").capabilities.model_copy(
        update={"audio": "optional"}
    )
    o = offering("veo-3-fast-replicate").model_copy(update={"capabilities": caps})
    assert a.build_input(VideoRequest(prompt="x", audio="required"), o)["generate_audio"] is True
    assert a.build_input(VideoRequest(prompt="x"), o)["generate_audio"] is False
    always = offering("veo-3-fast-replicate")
    assert "generate_audio" not in a.build_input(VideoRequest(prompt="x"), always)


def test_provider_options_pass_through_after_validation(http) -> None:
    a = adapter(http, "http://127.0.0.1:9")
    o = offering("veo-3-fast-replicate")
    req = VideoRequest(prompt="x", provider_options={"replicate": {"enhance_prompt": False}})
    assert a.build_input(req, o)["enhance_prompt"] is False
    clash = VideoRequest(prompt="x", provider_options={"replicate": {"duration": 4}})
    with pytest.raises(InvalidRequest, match="duration"):
        a.check(clash, o)
    bad_name = VideoRequest(prompt="x", provider_options={"replicate": {"a b": 1}})
    with pytest.raises(InvalidRequest, match="not an input name"):
        a.check(bad_name, o)


@pytest.mark.parametrize(
    ("offering_id", "request_kw", "match"),
    [
        ("cogvideox-5b-replicate", {"negative_prompt": "blur"}, "negative prompt"),
        (
            "veo-3-replicate",
            {
                "mode": Mode.FIRST_LAST_FRAME,
                "references": [
                    Reference(role=ReferenceRole.FIRST_FRAME, url=PNG),
                    Reference(role=ReferenceRole.LAST_FRAME, url=PNG),
                ],
            },
            "last_frame reference",
        ),
        (
            "veo-3-replicate",
            {"references": [Reference(role=ReferenceRole.STYLE, url=PNG)]},
            "style reference",
        ),
    ],
)
async def test_what_the_wire_cannot_express_fails_before_any_call(
    http, offering_id, request_kw, match
) -> None:
    with scripted_server() as (sp, url):
        a = adapter(http, url + "/v1")
        req = VideoRequest(prompt="x", **request_kw)
        with pytest.raises(CapabilityMismatch, match=match):
            a.check(req, offering(offering_id))
        with pytest.raises(CapabilityMismatch):
            await a.submit(req, offering(offering_id), idempotency_key="k")
    assert sp.seen == []  # nothing was sent


def test_a_duration_the_model_cannot_choose_is_a_mismatch(http) -> None:
    base = CATALOG.offering("cogvideox-5b-replicate")
    caps = base.capabilities.model_copy(update={"durations": DurationSpec(values=[5, 10])})
    o = base.model_copy(update={"capabilities": caps})
    a = adapter(http, "http://127.0.0.1:9")
    a.check(VideoRequest(prompt="x", duration_s=5), o)  # the model's only length
    with pytest.raises(CapabilityMismatch, match="duration"):
        a.check(VideoRequest(prompt="x", duration_s=10), o)


def test_cancel_after_comes_from_the_deadline_or_latency_limit() -> None:
    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    assert cancel_after_header(VideoRequest(prompt="x"), now) is None
    by_deadline = VideoRequest(
        prompt="x", constraints=Constraints(deadline=now + timedelta(seconds=90.2))
    )
    assert cancel_after_header(by_deadline, now) == "91s"
    both = VideoRequest(
        prompt="x",
        constraints=Constraints(deadline=now + timedelta(minutes=5), max_latency_s=120),
    )
    assert cancel_after_header(both, now) == "120s"
    past = VideoRequest(prompt="x", constraints=Constraints(deadline=now - timedelta(seconds=3)))
    assert cancel_after_header(past, now) == "1s"


def test_status_table_is_exactly_the_documented_strings() -> None:
    assert set(STATUS) == {"starting", "processing", "succeeded", "failed", "canceled", "aborted"}
    assert STATUS["aborted"] is RemoteState.CANCELED


# -- recorded shapes ----------------------------------------------------------------------------


def test_recorded_outputs_and_logs_parse() -> None:
    assert output_urls(recorded("status_succeeded.json")["output"]) == [
        recorded("status_succeeded.json")["output"]
    ]
    # a list output keeps the video, not the poster image
    assert output_urls(recorded("status_succeeded_list.json")["output"]) == [
        "https://replicate.delivery/xezq/abc/output.mp4"
    ]
    assert output_urls(recorded("status_data_removed.json")["output"]) == []
    assert progress_from_logs(recorded("status_processing.json")["logs"]) == 0.44
    assert progress_from_logs(recorded("status_starting.json")["logs"]) is None


@pytest.mark.parametrize(
    ("name", "state", "error"),
    [
        ("status_starting.json", RemoteState.QUEUED, None),
        ("status_processing.json", RemoteState.RUNNING, None),
        ("status_succeeded.json", RemoteState.SUCCEEDED, None),
        ("status_failed_nsfw.json", RemoteState.FAILED, ContentRejected),
        ("status_failed_internal.json", RemoteState.FAILED, ProviderUnavailable),
        ("status_canceled.json", RemoteState.CANCELED, None),
        ("status_aborted.json", RemoteState.CANCELED, None),
    ],
)
async def test_recorded_statuses_map(http, name, state, error) -> None:
    with scripted_server() as (sp, url):
        sp.script("GET", Scripted(200, recorded(name)))
        status = await adapter(http, url + "/v1").poll(job_at(url))
    assert status.state is state
    assert status.raw == recorded(name)["status"]
    if error is None:
        assert status.error is None
    else:
        assert isinstance(status.error, error)
        assert status.error.request_id == "ufawqhfynnddngldkgtslldrkq"
        assert str(recorded(name)["error"]) in status.error.message
    if name == "status_processing.json":
        assert status.progress == 0.44
    # no pinned URL: the status call is built from the stored base URL and id
    assert sp.seen[0][1] == "/v1/predictions/ufawqhfynnddngldkgtslldrkq"


async def test_create_pins_urls_on_the_api_host_and_follow_ups_use_them(http) -> None:
    with scripted_server() as (sp, url):
        created = recorded("create_response.json")
        created["urls"] = {
            "get": f"{url}/v1/predictions/pinned-get",
            "cancel": f"{url}/v1/predictions/pinned-get/cancel",
        }
        sp.script("POST", Scripted(201, created), Scripted(200, recorded("status_canceled.json")))
        sp.script("GET", Scripted(200, recorded("status_processing.json")))
        a = adapter(http, url + "/v1")
        job = await a.submit(
            VideoRequest(prompt="x", duration_s=8),
            offering("veo-3-fast-replicate"),
            idempotency_key="i",
        )
        assert job.remote_id == "ufawqhfynnddngldkgtslldrkq"
        assert job.extra["get"] == f"{url}/v1/predictions/pinned-get"
        assert job.extra["model"] == "google/veo-3-fast"
        await a.poll(job)
        await a.cancel(job)
    paths = [(m, p) for m, p, *_ in sp.seen]
    assert paths == [
        ("POST", "/v1/models/google/veo-3-fast/predictions"),
        ("GET", "/v1/predictions/pinned-get"),
        ("POST", "/v1/predictions/pinned-get/cancel"),
    ]
    headers = sp.seen[0][2]
    assert headers["authorization"] == "Bearer r8_test-not-a-real-token"
    assert "prefer" not in headers  # never a blocking create
    assert "idempotency-key" not in headers  # Replicate documents none
    assert "cancel-after" not in headers  # the request set no deadline
    sent = json.loads(sp.seen[0][3])
    assert sent == {
        "input": {"prompt": "x", "duration": 8, "aspect_ratio": "16:9", "resolution": "720p"}
    }


async def test_deadline_is_sent_and_urls_on_other_hosts_are_not_pinned(http) -> None:
    """The recorded create names api.replicate.com; the token must not follow it elsewhere."""
    with scripted_server() as (sp, url):
        sp.script("POST", Scripted(201, recorded("create_response.json")))
        req = VideoRequest(prompt="x", duration_s=8, constraints=Constraints(max_latency_s=300))
        job = await adapter(http, url + "/v1").submit(
            req, offering("veo-3-fast-replicate"), idempotency_key="d"
        )
    assert sp.seen[0][2]["cancel-after"] == "300s"
    assert "get" not in job.extra
    assert "cancel" not in job.extra


@pytest.mark.parametrize(
    ("reply", "error", "retryable"),
    [
        (Scripted(401, recorded("error_401.json")), AuthFailed, False),
        (Scripted(402, recorded("error_402.json")), QuotaExhausted, False),
        (Scripted(422, recorded("error_422_validation.json")), InvalidRequest, False),
        (Scripted(422, recorded("error_422_version.json")), InvalidRequest, False),
        (
            Scripted(
                422,
                {
                    "title": "Input validation failed",
                    "detail": "NSFW content detected in the prompt",
                    "status": 422,
                },
            ),
            ContentRejected,
            False,
        ),
        (
            Scripted(429, recorded("error_429.json"), {"retry-after": "30", "x-request-id": "rq1"}),
            RateLimited,
            True,
        ),
        (Scripted(503, {"detail": "unavailable", "status": 503}), ProviderUnavailable, True),
        (Scripted(201, {"status": "starting"}), ProviderProtocolError, False),
    ],
)
async def test_create_error_mapping(http, reply, error, retryable) -> None:
    with scripted_server() as (sp, url):
        sp.script("POST", reply)
        with pytest.raises(error) as info:
            await adapter(http, url + "/v1").submit(
                VideoRequest(prompt="x", duration_s=8),
                offering("veo-3-fast-replicate"),
                idempotency_key="e",
            )
    assert info.value.retryable is retryable
    assert info.value.provider == "replicate"
    assert [m for m, *_ in sp.seen] == ["POST"]  # sent once, never retried
    if error is RateLimited:
        assert info.value.retry_after == 30  # type: ignore[attr-defined]
        assert info.value.request_id == "rq1"
    if reply.status == 402:
        assert "Insufficient credit" in info.value.message


async def test_unknown_status_is_an_error_not_queued(http) -> None:
    with scripted_server() as (sp, url):
        sp.script("GET", Scripted(200, {**recorded("status_starting.json"), "status": "booting"}))
        with pytest.raises(ProviderProtocolError, match="booting"):
            await adapter(http, url + "/v1").poll(job_at(url))


async def test_fetch_sends_the_token_only_to_replicate_hosts(http) -> None:
    with scripted_server() as (sp, url):
        sp.script("GET", Scripted(200, recorded("status_succeeded.json")))
        sp.script(
            "GET",
            Scripted(
                200,
                {**recorded("status_succeeded.json"), "output": "https://cdn.example.com/v.mp4"},
            ),
        )
        a = adapter(http, url + "/v1")
        [asset] = await a.fetch(job_at(url))
        [foreign] = await a.fetch(job_at(url))
    assert asset.url.startswith("https://replicate.delivery/")
    assert asset.headers["Authorization"] == "Bearer r8_test-not-a-real-token"
    assert asset.content_type == "video/mp4"
    assert dict(foreign.headers) == {}


async def test_fetch_after_the_hour_says_the_output_is_gone(http) -> None:
    with scripted_server() as (sp, url):
        sp.script("GET", Scripted(200, recorded("status_data_removed.json")))
        with pytest.raises(NotFound, match="one hour"):
            await adapter(http, url + "/v1").fetch(job_at(url))


# -- against the emulation ---------------------------------------------------------------------


async def test_sandbox_lifecycle_statuses_and_download(http, sb) -> None:
    a = adapter(http, sandbox_base(sb))
    o = offering("wan-2.2-replicate")
    job = await a.submit(VideoRequest(prompt="a cat", resolution="480p"), o, idempotency_key="l")
    assert job.extra["get"] == f"{sandbox_base(sb)}/predictions/{job.remote_id}"
    seen = await poll_until_done(a, job)
    assert seen[-1] == "succeeded"
    assert set(seen) <= {"starting", "processing", "succeeded"}
    [asset] = await a.fetch(job)
    resp = await http.get(asset.url, headers=dict(asset.headers))
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "video/mp4"
    record = sb.core.store.get(job.remote_id)
    assert record is not None
    assert (record.params["width"], record.params["height"]) == (854, 480)
    assert record.params["duration_s"] == 5
    assert record.params["fps"] == 24


async def test_sandbox_rejects_what_the_model_schema_rejects(http, sb) -> None:
    resp = await http.post(
        f"{sandbox_base(sb)}/models/google/veo-3-fast/predictions",
        json={"input": {"prompt": "x", "aspect_ratio": "4:3"}, "model": "google/veo-3-fast"},
        headers={"Authorization": "Bearer k"},
    )
    assert resp.status_code == 422
    body = resp.json()
    assert body["title"] == "Input validation failed"
    kinds = {f["type"] for f in body["invalid_fields"]}
    assert kinds == {"enum", "additional_property_not_allowed"}
    missing = await http.post(
        f"{sandbox_base(sb)}/predictions",
        json={"version": "f" * 64, "input": {"prompt": "x"}},
        headers={"Authorization": "Bearer k"},
    )
    assert missing.json()["title"] == "Invalid version or not permitted"
    unauth = await http.get(f"{sandbox_base(sb)}/predictions/x")
    assert unauth.status_code == 401
    assert unauth.json() == recorded("error_401.json")


async def test_sandbox_prefer_wait_holds_the_create(http, sb) -> None:
    resp = await http.post(
        f"{sandbox_base(sb)}/models/google/veo-3-fast/predictions",
        json={"input": {"prompt": "x", "duration": 8}},
        headers={"Authorization": "Bearer k", "Prefer": "wait=10"},
    )
    assert resp.status_code == 201
    assert resp.json()["status"] == "succeeded"
    assert resp.json()["output"].startswith(sb.url)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    """Moves the emulator's clock forward without sleeping."""
    offset = {"s": 0.0}
    real = emulator._now
    monkeypatch.setattr(emulator, "_now", lambda: real() + offset["s"])
    return offset


@pytest.mark.parametrize(("limit_s", "raw"), [(5, "aborted"), (50, "canceled")])
async def test_sandbox_honours_cancel_after(http, sb, clock, monkeypatch, limit_s, raw) -> None:
    # every job takes 100 s and starts running at 10 s
    monkeypatch.setattr(sb.core, "draw_latency", lambda *_: 100.0)
    a = adapter(http, sandbox_base(sb))
    req = VideoRequest(prompt="x", duration_s=8, constraints=Constraints(max_latency_s=limit_s))
    job = await a.submit(req, offering("veo-3-fast-replicate"), idempotency_key="c")
    assert (await a.poll(job)).raw == "starting"
    clock["s"] = limit_s + 1
    status = await a.poll(job)
    assert status.raw == raw  # before it started: aborted (not billed); while running: canceled
    assert status.state is RemoteState.CANCELED
    assert sb.core.store.stats()["events"]["deadline_canceled"] == 1


async def test_sandbox_output_expires_after_an_hour(http, sb, clock) -> None:
    a = adapter(http, sandbox_base(sb))
    job = await a.submit(
        VideoRequest(prompt="x", duration_s=8),
        offering("veo-3-fast-replicate"),
        idempotency_key="h",
    )
    await poll_until_done(a, job)
    assert await a.fetch(job)
    clock["s"] = 3600 + 600
    with pytest.raises(NotFound, match="one hour"):
        await a.fetch(job)


# -- live ----------------------------------------------------------------------------------------


@pytest.mark.live
@pytest.mark.skipif(not os.environ.get("REPLICATE_API_TOKEN"), reason="REPLICATE_API_TOKEN unset")
async def test_live_submit_poll_cancel() -> None:
    """A real minimal call: create the cheapest clip, read its status, cancel it at once."""
    async with httpx.AsyncClient(timeout=60) as client:
        a = Replicate(client=client, credentials=Credentials())
        o = CATALOG.offering("wan-2.2-replicate")
        job = await a.submit(
            VideoRequest(prompt="a red ball rolling", resolution="480p", duration_s=5),
            o,
            idempotency_key="live",
        )
        first = await a.poll(job)
        assert first.raw in STATUS
        await a.cancel(job)
        for _ in range(60):
            status = await a.poll(job)
            if status.state.terminal:
                break
            await asyncio.sleep(2)
        assert status.state.terminal
