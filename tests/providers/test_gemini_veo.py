"""The Gemini API Veo adapter, over real HTTP: against the sandbox's emulation, and against a
scripted server for the error bodies and operation shapes the emulation does not produce."""

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
)
from vidgate.providers.base import ProviderJob, RemoteState
from vidgate.providers.gemini_veo import STATUS, GeminiVeo
from vidgate.sandbox.app import SandboxServer
from vidgate.settings import Credentials
from vidgate.types import Mode, Reference, ReferenceKind, ReferenceRole, VideoRequest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "gemini"
CATALOG = load_catalog()
KEY = {"GEMINI_API_KEY": "AIza-test-not-a-real-key"}
PNG = "data:image/png;base64,iVBORw0KGgo="
JPG = "data:image/jpeg;base64,/9j/4AAQ"
MP4 = "data:video/mp4;base64,AAAAGGZ0eXA="
OP = "models/veo-3.1-generate-preview/operations/abc123"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def offering(oid: str = "veo-3.1-fast-gemini") -> Offering:
    return CATALOG.offering(oid)


def adapter(http: httpx.AsyncClient, base_url: str, env: dict[str, str] | None = None) -> GeminiVeo:
    return GeminiVeo(client=http, credentials=Credentials(env or KEY), base_url=base_url)


def job_at(base: str, remote_id: str = OP) -> ProviderJob:
    return ProviderJob(
        protocol="gemini-veo",
        offering_id="veo-3.1-gemini",
        remote_id=remote_id,
        base_url=base,
        credential_ref=("GEMINI_API_KEY",),
    )


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[SandboxServer]:
    server = SandboxServer(tmp_path / "sandbox", CATALOG, time_scale=0.002).start()
    yield server
    server.stop()


def base_of(sb: SandboxServer) -> str:
    return f"{sb.url}/gemini-veo/v1beta"


async def poll_until_done(a: GeminiVeo, job: ProviderJob) -> list[str]:
    seen: list[str] = []
    for _ in range(600):
        status = await a.poll(job)
        seen.append(status.raw)
        if status.state.terminal:
            return seen
        await asyncio.sleep(0.02)
    raise AssertionError(f"never finished: {seen[-5:]}")


# -- against the emulation ------------------------------------------------------------------


async def test_submit_poll_fetch_downloads_with_the_key(http, sb) -> None:
    a = adapter(http, base_of(sb))
    req = VideoRequest(prompt="a paper boat on a river", duration_s=4, aspect_ratio="9:16")
    job = await a.submit(req, offering(), idempotency_key="k1")
    assert job.remote_id.startswith("models/veo-3.1-fast-generate-preview/operations/")
    assert job.base_url == base_of(sb)
    assert job.credential_ref == ("GEMINI_API_KEY",)
    assert ProviderJob.model_validate_json(job.model_dump_json()) == job

    seen = await poll_until_done(a, job)
    assert seen[-1] == "succeeded"
    assert set(seen) <= {"running", "succeeded"}

    [asset] = await a.fetch(job)
    assert asset.url.startswith(f"{base_of(sb)}/files/")
    assert asset.url.endswith(":download?alt=media")
    assert asset.headers == {"x-goog-api-key": "AIza-test-not-a-real-key"}
    resp = await http.get(asset.url, headers=dict(asset.headers))
    assert resp.status_code == 200
    with av.open(io.BytesIO(resp.content)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (720, 1280)
        assert sum(1 for _ in c.decode(video=0)) == 4 * 24
        assert len(c.streams.audio) == 1  # Veo 3.x on the Gemini API always adds audio
    # the download needs the key
    assert (await http.get(asset.url)).status_code == 403


async def test_moderation_is_a_filtered_response_with_reasons(http, sb) -> None:
    a = adapter(http, base_of(sb))
    job = await a.submit(
        VideoRequest(prompt="[unsafe] x", duration_s=4), offering(), idempotency_key="m"
    )
    seen = await poll_until_done(a, job)
    assert seen[-1] == "filtered"
    status = await a.poll(job)
    assert status.state is RemoteState.FAILED
    assert isinstance(status.error, ContentRejected)
    assert "usage guidelines" in status.error.message
    with pytest.raises(ProviderProtocolError, match="no video"):
        await a.fetch(job)


async def test_no_idempotency_key_exists_so_each_submit_creates(http, sb) -> None:
    a = adapter(http, base_of(sb))
    req = VideoRequest(prompt="same", duration_s=4)
    first = await a.submit(req, offering(), idempotency_key="once")
    second = await a.submit(req, offering(), idempotency_key="once")
    assert first.remote_id != second.remote_id
    assert sb.core.store.stats()["creates"] == 2


async def test_emulated_auth_errors_have_googles_shapes(http, sb) -> None:
    url = f"{base_of(sb)}/models/veo-3.1-generate-preview:predictLongRunning"
    body = {"instances": [{"prompt": "x"}]}
    bad = await http.post(url, json=body, headers={"x-goog-api-key": "invalid-key"})
    assert bad.status_code == 400  # Google answers a bad key with 400, not 401
    assert bad.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    missing = await http.post(url, json=body)
    assert missing.status_code == 403
    assert missing.json()["error"]["status"] == "PERMISSION_DENIED"
    a = adapter(http, base_of(sb), {"GEMINI_API_KEY": "invalid-key"})
    with pytest.raises(AuthFailed):
        await a.submit(VideoRequest(prompt="x", duration_s=4), offering(), idempotency_key="a")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"seed": 1}, "seed"),
        ({"generateAudio": True}, "generateAudio"),
        ({"durationSeconds": "8"}, "durationSeconds"),
        ({"durationSeconds": 5}, "durationSeconds"),
        ({"aspectRatio": "1:1"}, "aspectRatio"),
    ],
)
async def test_emulation_rejects_what_the_gemini_api_rejects(http, sb, params, message) -> None:
    resp = await http.post(
        f"{base_of(sb)}/models/veo-3.1-generate-preview:predictLongRunning",
        json={"instances": [{"prompt": "x"}], "parameters": params},
        headers={"x-goog-api-key": "k"},
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert message in resp.json()["error"]["message"]
    assert sb.core.store.stats()["creates"] == 0


# -- request mapping ------------------------------------------------------------------------


def test_text_to_video_body(http) -> None:
    a = adapter(http, "http://unused")
    req = VideoRequest(
        prompt="a fox", duration_s=7.2, resolution="1080p", negative_prompt="blurry", seed=7
    )
    assert a.body(req, offering("veo-3.1-gemini")) == {
        "instances": [{"prompt": "a fox"}],
        "parameters": {
            "aspectRatio": "16:9",
            "resolution": "1080p",
            "durationSeconds": 8,  # the nearest allowed value, an integer
            "sampleCount": 1,
            "negativePrompt": "blurry",
            # no seed: the Gemini API rejects it (the catalog says seed: false)
        },
    }


def test_4k_is_sent_as_4k(http) -> None:
    a = adapter(http, "http://unused")
    body = a.body(VideoRequest(prompt="x", resolution="4k"), offering("veo-3.1-gemini"))
    assert body["parameters"]["resolution"] == "4k"


def test_first_and_last_frames_are_inline_images(http) -> None:
    a = adapter(http, "http://unused")
    req = VideoRequest(
        prompt="x",
        mode=Mode.FIRST_LAST_FRAME,
        references=[
            Reference(role=ReferenceRole.FIRST_FRAME, url=PNG),
            Reference(role=ReferenceRole.LAST_FRAME, url=JPG),
        ],
    )
    inst = a.body(req, offering())["instances"][0]
    assert inst["image"] == {"bytesBase64Encoded": "iVBORw0KGgo=", "mimeType": "image/png"}
    assert inst["lastFrame"] == {"bytesBase64Encoded": "/9j/4AAQ", "mimeType": "image/jpeg"}


def test_subjects_become_asset_reference_images(http) -> None:
    a = adapter(http, "http://unused")
    req = VideoRequest(prompt="x", references=[Reference(role=ReferenceRole.SUBJECT, url=PNG)] * 2)
    inst = a.body(req, offering())["instances"][0]
    assert (
        inst["referenceImages"]
        == [
            {
                "image": {"bytesBase64Encoded": "iVBORw0KGgo=", "mimeType": "image/png"},
                "referenceType": "asset",
            }
        ]
        * 2
    )
    assert "image" not in inst


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://generativelanguage.googleapis.com/v1beta/files/abc:download?alt=media",
            {
                "uri": "https://generativelanguage.googleapis.com/v1beta/files/abc:download?alt=media"
            },
        ),
        (MP4, {"encodedVideo": "AAAAGGZ0eXA=", "encoding": "video/mp4"}),
    ],
)
def test_extension_video_is_a_uri_or_inline(http, url, expected) -> None:
    a = adapter(http, "http://unused")
    req = VideoRequest(
        prompt="x",
        mode=Mode.EXTEND,
        references=[Reference(role=ReferenceRole.SOURCE_VIDEO, kind=ReferenceKind.VIDEO, url=url)],
    )
    assert a.body(req, offering())["instances"][0]["video"] == expected


def ref(
    role: ReferenceRole, url: str = PNG, kind: ReferenceKind = ReferenceKind.IMAGE
) -> Reference:
    return Reference(role=role, url=url, kind=kind)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"aspect_ratio": "1:1"}, "aspect ratio"),
        ({"resolution": "480p"}, "resolution"),
        ({"references": [ref(ReferenceRole.FIRST_FRAME, "https://example.com/a.png")]}, "inline"),
        (
            {
                "references": [
                    ref(ReferenceRole.AUDIO, "data:audio/mpeg;base64,AA==", ReferenceKind.AUDIO)
                ]
            },
            "audio",
        ),
        ({"references": [ref(ReferenceRole.SUBJECT), ref(ReferenceRole.FIRST_FRAME)]}, "combined"),
        ({"references": [ref(ReferenceRole.SUBJECT), ref(ReferenceRole.STYLE)]}, "style"),
        ({"references": [ref(ReferenceRole.STYLE)] * 2}, "style"),
        ({"references": [ref(ReferenceRole.SUBJECT)] * 4}, "up to 3"),
        ({"references": [ref(ReferenceRole.LAST_FRAME)]}, "first frame"),
        ({"references": [ref(ReferenceRole.FIRST_FRAME, MP4)]}, "inline"),
    ],
)
async def test_what_the_wire_cannot_express_fails_before_any_call(http, changes, match) -> None:
    a = adapter(http, "http://127.0.0.1:9/v1beta")  # nothing listens: no call may be made
    req = VideoRequest.model_validate({"prompt": "x", "duration_s": 4, **changes})
    with pytest.raises(CapabilityMismatch, match=match):
        a.check(req, offering("veo-3.1-gemini"))
    with pytest.raises(CapabilityMismatch):
        await a.submit(req, offering("veo-3.1-gemini"), idempotency_key="c")


def test_provider_options_are_validated_and_passed_through(http) -> None:
    a = adapter(http, "http://unused")
    opts = {"google-gemini": {"personGeneration": "allow_adult", "enhancePrompt": False}}
    params = a.body(VideoRequest(prompt="x", provider_options=opts), offering())["parameters"]
    assert params["personGeneration"] == "allow_adult"
    assert params["enhancePrompt"] is False
    for bad, match in (
        ({"sampleCount": 4}, "unknown"),
        ({"personGeneration": "everyone"}, "personGeneration"),
        ({"enhancePrompt": "yes"}, "enhancePrompt"),
    ):
        req = VideoRequest(prompt="x", provider_options={"google-gemini": bad})
        with pytest.raises(InvalidRequest, match=match):
            a.check(req, offering())


# -- errors and shapes, scripted --------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "error", "retryable"),
    [
        (Scripted(429, fixture("error_rate_limit.json")), RateLimited, True),
        (Scripted(429, fixture("error_quota_daily.json")), QuotaExhausted, False),
        (Scripted(400, fixture("error_api_key_invalid.json")), AuthFailed, False),
        (
            Scripted(
                403, {"error": {"code": 403, "message": "denied", "status": "PERMISSION_DENIED"}}
            ),
            AuthFailed,
            False,
        ),
        (Scripted(400, fixture("error_invalid_argument.json")), InvalidRequest, False),
        (
            Scripted(
                400,
                {
                    "error": {
                        "code": 400,
                        "message": "The prompt contains sensitive words that violate Google's "
                        "Responsible AI practices.",
                        "status": "INVALID_ARGUMENT",
                    }
                },
            ),
            ContentRejected,
            False,
        ),
        (
            Scripted(
                400,
                {
                    "error": {
                        "code": 400,
                        "message": "Gemini API free tier is not available in your country. "
                        "Please enable billing on your project.",
                        "status": "FAILED_PRECONDITION",
                    }
                },
            ),
            QuotaExhausted,
            False,
        ),
        (
            Scripted(
                503,
                {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}},
                {"x-goog-request-id": "rid-1"},
            ),
            ProviderUnavailable,
            True,
        ),
        (Scripted(200, {"done": False}), ProviderProtocolError, False),
    ],
)
async def test_create_error_mapping(http, reply, error, retryable) -> None:
    with scripted_server() as (sp, url):
        sp.script("POST", reply)
        a = adapter(http, url + "/v1beta")
        with pytest.raises(error) as info:
            await a.submit(VideoRequest(prompt="x", duration_s=4), offering(), idempotency_key="e")
    assert info.value.retryable is retryable
    assert info.value.provider == "gemini-veo"
    if error is RateLimited:
        assert info.value.retry_after == 26  # from RetryInfo.retryDelay
    if reply.headers:
        assert info.value.request_id == "rid-1"
    # exactly one create was sent, to the documented path, with the key and no idempotency key
    [(method, path, headers, raw)] = sp.seen
    assert (method, path) == (
        "POST",
        "/v1beta/models/veo-3.1-fast-generate-preview:predictLongRunning",
    )
    assert headers["x-goog-api-key"] == "AIza-test-not-a-real-key"
    assert "idempotency-key" not in headers
    assert json.loads(raw)["parameters"]["durationSeconds"] == 4


async def test_create_answer_is_the_operation_name(http) -> None:
    with scripted_server() as (sp, url):
        sp.script("POST", Scripted(200, fixture("create.json")))
        job = await adapter(http, url + "/v1beta").submit(
            VideoRequest(prompt="x"), offering("veo-3.1-gemini"), idempotency_key="n"
        )
    assert job.remote_id == OP


@pytest.mark.parametrize(
    ("name", "state", "error"),
    [
        ("operation_running.json", RemoteState.RUNNING, None),
        ("operation_running_metadata.json", RemoteState.RUNNING, None),
        ("operation_succeeded.json", RemoteState.SUCCEEDED, None),
        ("operation_filtered.json", RemoteState.FAILED, ContentRejected),
        ("operation_failed.json", RemoteState.FAILED, ProviderUnavailable),
    ],
)
async def test_recorded_operation_shapes(http, name, state, error) -> None:
    with scripted_server() as (sp, url):
        sp.script("GET", Scripted(200, fixture(name)))
        status = await adapter(http, url + "/v1beta").poll(job_at(url + "/v1beta"))
        # the status call went to the stored base URL, to the stored operation name
        assert sp.seen[0][1] == f"/v1beta/{OP}"
        assert sp.seen[0][2]["x-goog-api-key"] == "AIza-test-not-a-real-key"
    assert status.state is state
    assert (type(status.error) if status.error else None) is error
    if status.error is not None:
        assert status.error.request_id == OP


@pytest.mark.parametrize(
    "op",
    [
        {"name": OP, "done": True},  # done with neither response nor error
        {"name": OP, "done": "true"},  # done is not a bool
        {"name": OP, "done": True, "response": {"videos": []}},  # a Vertex-shaped response
        {"name": OP, "error": {"code": 13, "message": "x"}},  # a result while not done
        {"name": OP, "done": True, "error": {"code": 13}, "response": {}},
    ],
)
async def test_unrecognised_shapes_are_protocol_errors_not_running(http, op) -> None:
    with scripted_server() as (sp, url):
        sp.script("GET", Scripted(200, op))
        with pytest.raises(ProviderProtocolError, match="unknown status"):
            await adapter(http, url + "/v1beta").poll(job_at(url + "/v1beta"))


async def test_fetch_downloads_through_the_pinned_base_with_the_key(http) -> None:
    with scripted_server() as (sp, url):
        base = url + "/v1beta"
        sp.script("GET", Scripted(200, fixture("operation_succeeded.json")))
        [asset] = await adapter(http, base).fetch(job_at(base))
    # the recorded uri names the real host; the download goes where the job lives
    assert asset.url == f"{base}/files/abc123xyz:download?alt=media"
    assert asset.headers == {"x-goog-api-key": "AIza-test-not-a-real-key"}


async def test_foreign_download_hosts_never_get_the_key(http) -> None:
    op = {
        "name": OP,
        "done": True,
        "response": {
            "generateVideoResponse": {
                "generatedSamples": [{"video": {"uri": "https://cdn.example.com/v.mp4"}}]
            }
        },
    }
    with scripted_server() as (sp, url):
        sp.script("GET", Scripted(200, op))
        [asset] = await adapter(http, url + "/v1beta").fetch(job_at(url + "/v1beta"))
    assert asset.url == "https://cdn.example.com/v.mp4"
    assert asset.headers == {}


def test_cancel_is_not_supported() -> None:
    # No operations.cancel for Veo in the SDK (google/genai/operations.py): nothing to send.
    assert GeminiVeo.supports_cancel is False


def test_status_table_names_every_shape() -> None:
    assert set(STATUS) == {"running", "succeeded", "filtered", "empty", "failed", "cancelled"}


@pytest.mark.live
@pytest.mark.skipif(not os.environ.get("GEMINI_API_KEY"), reason="GEMINI_API_KEY is not set")
async def test_live_submit_and_poll() -> None:
    """A real, minimal Veo job (4 s, 720p, Fast): submitted once and polled once."""
    async with httpx.AsyncClient(timeout=60) as client:
        a = GeminiVeo(client=client, credentials=Credentials())
        job = await a.submit(
            VideoRequest(prompt="a slow pan over a calm lake at dawn", duration_s=4),
            offering("veo-3.1-fast-gemini"),
            idempotency_key="live",
        )
        assert job.remote_id.startswith("models/")
        status = await a.poll(job)
        assert status.state in (RemoteState.RUNNING, RemoteState.SUCCEEDED)
