"""The Vertex AI Veo adapter: the service-account token flow (against the sandbox's emulated
token endpoint and a scripted one), regional endpoints, Vertex-only parameters, GCS and inline
outputs, and the fetchPredictOperation polling."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import av
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.scripted import Scripted, scripted_server
from vidgate.catalog.loader import load_catalog
from vidgate.catalog.schema import Offering
from vidgate.errors import (
    AuthFailed,
    CapabilityMismatch,
    ConfigError,
    ContentRejected,
    InvalidRequest,
    ProviderProtocolError,
    ProviderUnavailable,
    RateLimited,
)
from vidgate.providers.base import ProviderJob, RemoteState
from vidgate.providers.vertex_veo import SCOPE, TokenCache, VertexVeo, gcs_download_base
from vidgate.sandbox.app import SandboxServer
from vidgate.sandbox.core import INVALID_CREDENTIAL
from vidgate.settings import Credentials
from vidgate.types import AudioMode, Mode, Reference, ReferenceKind, ReferenceRole, VideoRequest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "vertex"
CATALOG = load_catalog()
PNG = "data:image/png;base64,iVBORw0KGgo="
OP = (
    "projects/my-project/locations/us-central1/publishers/google/models/veo-3.1-generate-001/"
    "operations/a1b2c3d4-0000-4e5f-8a9b-0123456789ab"
)
_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = _KEY.private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8,
    serialization.NoEncryption(),
).decode()


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def offering(oid: str = "veo-3.1-fast-vertex") -> Offering:
    return CATALOG.offering(oid)


def key_file(tmp_path: Path, token_uri: str, **over: Any) -> Path:
    data = {
        "type": "service_account",
        "project_id": "proj-from-file",
        "private_key_id": "kid-1",
        "private_key": PEM,
        "client_email": "veo@proj-from-file.iam.gserviceaccount.com",
        "token_uri": token_uri,
        **over,
    }
    path = tmp_path / "sa.json"
    path.write_text(json.dumps(data))
    return path


def sandboxed(http: httpx.AsyncClient, base: str, env: dict[str, str] | None = None) -> VertexVeo:
    return VertexVeo(
        client=http, credentials=Credentials(sandbox=True), base_url=base, env=env or {}
    )


def with_key(
    http: httpx.AsyncClient,
    base: str | None,
    path: Path,
    env: dict[str, str] | None = None,
    tokens: TokenCache | None = None,
) -> VertexVeo:
    return VertexVeo(
        client=http,
        credentials=Credentials({"GOOGLE_APPLICATION_CREDENTIALS": str(path)}),
        base_url=base,
        env=env or {},
        tokens=tokens or TokenCache(),
    )


def job_at(base: str, remote_id: str = OP) -> ProviderJob:
    return ProviderJob(
        protocol="vertex-veo",
        offering_id="veo-3.1-vertex",
        remote_id=remote_id,
        base_url=base,
        credential_ref=("GOOGLE_APPLICATION_CREDENTIALS",),
        region="us-central1",
        extra={"project": "my-project", "location": "us-central1", "gcs_base": base[:-3]},
    )


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[SandboxServer]:
    server = SandboxServer(tmp_path / "sandbox", CATALOG, time_scale=0.002).start()
    yield server
    server.stop()


def base_of(sb: SandboxServer) -> str:
    return f"{sb.url}/vertex-veo/v1"


async def finish(a: VertexVeo, job: ProviderJob) -> list[str]:
    seen: list[str] = []
    for _ in range(600):
        status = await a.poll(job)
        seen.append(status.raw)
        if status.state.terminal:
            return seen
        await asyncio.sleep(0.02)
    raise AssertionError(f"never finished: {seen[-5:]}")


def decode(content: bytes) -> tuple[int, int, int, int]:
    with av.open(io.BytesIO(content)) as c:
        v = c.streams.video[0]
        frames = sum(1 for _ in c.decode(video=0))
        return v.codec_context.width, v.codec_context.height, frames, len(c.streams.audio)


# -- against the emulation ------------------------------------------------------------------


async def test_sandbox_lifecycle_writes_to_gcs_and_downloads_with_the_token(http, sb) -> None:
    a = sandboxed(http, base_of(sb))
    req = VideoRequest(prompt="a lantern", duration_s=4, audio=AudioMode.REQUIRED)
    job = await a.submit(req, offering(), idempotency_key="k")
    prefix = "projects/vidgate-sandbox/locations/us-central1/publishers/google/models/"
    assert job.remote_id.startswith(prefix + "veo-3.1-fast-generate-001/operations/")
    assert job.region == "us-central1"
    assert job.extra["project"] == "vidgate-sandbox"
    assert ProviderJob.model_validate_json(job.model_dump_json()) == job

    seen = await finish(a, job)
    assert seen[-1] == "succeeded"
    assert set(seen) <= {"running", "succeeded"}
    [asset] = await a.fetch(job)
    assert asset.url.startswith(
        f"{sb.url}/vertex-veo/download/storage/v1/b/vidgate-sandbox/o/veo%2F"
    )
    assert asset.headers == {"Authorization": "Bearer sandbox-key"}
    resp = await http.get(asset.url, headers=dict(asset.headers))
    assert resp.status_code == 200, resp.text
    assert decode(resp.content) == (1280, 720, 4 * 24, 1)  # generateAudio: true was sent
    no_auth = await http.get(asset.url)
    assert no_auth.status_code == 401
    assert no_auth.json()["error"]["errors"][0]["reason"] == "authError"


async def test_service_account_flow_mints_once_and_pins_project_and_region(
    http, sb, tmp_path
) -> None:
    path = key_file(tmp_path, f"{sb.url}/vertex-veo/token")
    tokens = TokenCache()
    a = with_key(http, base_of(sb), path, {"VIDGATE_VERTEX_LOCATION": "europe-west4"}, tokens)
    req = VideoRequest(prompt="a kite", duration_s=4)  # audio not asked: generateAudio false
    job = await a.submit(req, offering(), idempotency_key="a")
    again = await a.submit(req, offering(), idempotency_key="b")
    assert sb.core.store.stats()["events"]["oauth_token"] == 1  # cached until expiry
    assert job.remote_id.startswith("projects/proj-from-file/locations/europe-west4/")
    assert (job.region, job.extra["location"]) == ("europe-west4", "europe-west4")
    assert again.remote_id != job.remote_id

    await finish(a, job)
    [asset] = await a.fetch(job)
    # no storageUri outside sandbox mode: Vertex answers inline base64
    assert asset.url.startswith("data:video/mp4;base64,")
    content = base64.b64decode(asset.url.split(",", 1)[1])
    assert decode(content) == (1280, 720, 4 * 24, 0)


async def test_google_cloud_project_overrides_the_key_file(http, sb, tmp_path) -> None:
    path = key_file(tmp_path, f"{sb.url}/vertex-veo/token")
    a = with_key(http, base_of(sb), path, {"GOOGLE_CLOUD_PROJECT": "other-proj"})
    job = await a.submit(VideoRequest(prompt="x", duration_s=4), offering(), idempotency_key="p")
    assert job.extra["project"] == "other-proj"
    assert job.remote_id.startswith("projects/other-proj/")


async def test_token_is_minted_again_after_it_expires(http, sb, tmp_path) -> None:
    # The emulated token endpoint refuses expired assertions, so the fake clock starts now.
    start = time.time()
    offset = [0.0]
    tokens = TokenCache(clock=lambda: start + offset[0])
    a = with_key(http, base_of(sb), key_file(tmp_path, f"{sb.url}/vertex-veo/token"), None, tokens)
    req = VideoRequest(prompt="x", duration_s=4)
    await a.submit(req, offering(), idempotency_key="1")
    offset[0] = 3000  # still valid: 3599 s minus the 60 s margin
    await a.submit(req, offering(), idempotency_key="2")
    assert sb.core.store.stats()["events"]["oauth_token"] == 1
    offset[0] = 3600  # expired
    await a.submit(req, offering(), idempotency_key="3")
    assert sb.core.store.stats()["events"]["oauth_token"] == 2


async def test_refused_assertion_is_auth_failed(http, sb, tmp_path) -> None:
    path = key_file(tmp_path, f"{sb.url}/vertex-veo/token", client_email=INVALID_CREDENTIAL)
    with pytest.raises(AuthFailed, match="invalid_grant"):
        await with_key(http, base_of(sb), path).submit(
            VideoRequest(prompt="x", duration_s=4), offering(), idempotency_key="x"
        )
    assert sb.core.store.stats()["creates"] == 0


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "cannot be read"),
        ("not json", "not a JSON key file"),
        (json.dumps({"type": "authorized_user", "refresh_token": "r"}), "service_account"),
        (json.dumps({"type": "service_account", "client_email": "a@b"}), "lacks"),
    ],
)
async def test_bad_key_files_are_auth_failed_before_any_call(http, tmp_path, content, match):
    path = tmp_path / "key.json"
    if content is not None:
        path.write_text(content)
    a = with_key(http, "http://127.0.0.1:9/v1", path)
    with pytest.raises(AuthFailed, match=match):
        await a.submit(VideoRequest(prompt="x", duration_s=4), offering(), idempotency_key="b")


async def test_unset_credential_names_the_variable(http) -> None:
    a = VertexVeo(client=http, credentials=Credentials({}), base_url="http://127.0.0.1:9/v1")
    with pytest.raises(AuthFailed, match="GOOGLE_APPLICATION_CREDENTIALS"):
        await a.submit(VideoRequest(prompt="x", duration_s=4), offering(), idempotency_key="u")


async def test_emulated_vertex_rejects_gemini_only_fields(http, sb) -> None:
    url = (
        f"{base_of(sb)}/projects/p/locations/us-central1/publishers/google/models/"
        "veo-3.1-generate-001:predictLongRunning"
    )
    headers = {"Authorization": "Bearer t"}
    hook = await http.post(
        url,
        json={"instances": [{"prompt": "x"}], "webhookConfig": {"uris": ["https://e.test"]}},
        headers=headers,
    )
    assert hook.status_code == 400
    bad = await http.post(url, json={"instances": [{"prompt": "x"}]}, headers={})
    assert bad.status_code == 401
    assert bad.json()["error"]["status"] == "UNAUTHENTICATED"


# -- the token exchange on the wire -------------------------------------------------------------


async def test_jwt_assertion_and_bearer_on_the_wire(http, tmp_path) -> None:
    with scripted_server() as (sp, url):
        sp.script(
            "POST",
            Scripted(200, fixture("token_response.json")),
            Scripted(200, fixture("create.json")),
        )
        token_uri = f"{url}/token"
        a = with_key(http, f"{url}/v1", key_file(tmp_path, token_uri))
        job = await a.submit(
            VideoRequest(prompt="x", duration_s=4), offering(), idempotency_key="j"
        )
    (_, tpath, theaders, traw), (_, cpath, cheaders, craw) = sp.seen
    assert tpath == "/token"
    assert theaders["content-type"] == "application/x-www-form-urlencoded"
    form = {k: v[0] for k, v in parse_qs(traw.decode()).items()}
    assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    public = _KEY.public_key()
    # google-auth's audience (Google's token endpoint), not the key file's token_uri
    audience = "https://oauth2.googleapis.com/token"
    claims = jwt.decode(form["assertion"], public, algorithms=["RS256"], audience=audience)
    assert claims["iss"] == "veo@proj-from-file.iam.gserviceaccount.com"
    assert claims["scope"] == SCOPE
    assert claims["exp"] - claims["iat"] == 3600
    assert jwt.get_unverified_header(form["assertion"])["kid"] == "kid-1"
    assert cpath == (
        "/v1/projects/proj-from-file/locations/us-central1/publishers/google/models/"
        "veo-3.1-fast-generate-001:predictLongRunning"
    )
    assert cheaders["authorization"] == "Bearer ya29.c.not-a-real-token"
    assert "idempotency-key" not in cheaders
    assert json.loads(craw)["parameters"]["generateAudio"] is False
    assert job.remote_id == OP


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (Scripted(400, fixture("token_error.json")), AuthFailed),
        (Scripted(503, {"error": "backend_error"}), ProviderUnavailable),
        (Scripted(200, {"token_type": "Bearer"}), ProviderProtocolError),
    ],
)
async def test_token_endpoint_errors(http, tmp_path, reply, error) -> None:
    with scripted_server() as (sp, url):
        sp.script("POST", reply)
        a = with_key(http, f"{url}/v1", key_file(tmp_path, f"{url}/token"))
        with pytest.raises(error):
            await a.submit(VideoRequest(prompt="x", duration_s=4), offering(), idempotency_key="t")
        assert len(sp.seen) == 1  # no create after a failed token exchange


# -- where the job lives --------------------------------------------------------------------


def test_regional_endpoint_follows_the_location(http) -> None:
    def make(env: dict[str, str], base: str | None = None) -> VertexVeo:
        return VertexVeo(client=http, credentials=Credentials({}), base_url=base, env=env)

    a = make({"VIDGATE_VERTEX_LOCATION": "asia-northeast1"})
    assert a.api_base(a.location()) == "https://asia-northeast1-aiplatform.googleapis.com/v1"
    assert make({}).api_base(make({}).location()) == (
        "https://us-central1-aiplatform.googleapis.com/v1"
    )
    g = make({"VIDGATE_VERTEX_LOCATION": "global"})
    assert g.api_base(g.location()) == "https://aiplatform.googleapis.com/v1"
    # an explicit base URL (sandbox, VIDGATE_GOOGLE_VERTEX_BASE_URL) wins
    assert make({}, "http://proxy.test/v1").api_base("europe-west4") == "http://proxy.test/v1"
    with pytest.raises(ConfigError):
        make({"VIDGATE_VERTEX_LOCATION": "evil.com/x"}).location()
    assert gcs_download_base("https://europe-west4-aiplatform.googleapis.com/v1") == (
        "https://storage.googleapis.com"
    )
    assert gcs_download_base("http://127.0.0.1:5/vertex-veo/v1") == "http://127.0.0.1:5/vertex-veo"


async def test_poll_is_fetch_predict_operation_at_the_pinned_base(http) -> None:
    with scripted_server() as (sp, url):
        sp.script("POST", Scripted(200, fixture("operation_running.json")))
        a = sandboxed(http, "http://elsewhere.invalid/v1")  # the adapter's own base is unused
        status = await a.poll(job_at(f"{url}/v1"))
    [(method, path, headers, raw)] = sp.seen
    assert method == "POST"
    assert path == (
        "/v1/projects/my-project/locations/us-central1/publishers/google/models/"
        "veo-3.1-generate-001:fetchPredictOperation"
    )
    assert json.loads(raw) == {"operationName": OP}
    assert headers["authorization"] == "Bearer sandbox-key"
    assert status.state is RemoteState.RUNNING


# -- request mapping ------------------------------------------------------------------------


def test_vertex_parameters(http) -> None:
    a = sandboxed(http, "http://unused/v1", {"VIDGATE_VERTEX_OUTPUT_URI": "gs://mine/out"})
    req = VideoRequest(
        prompt="x", duration_s=6, seed=42, fps=24, audio=AudioMode.REQUIRED, negative_prompt="n"
    )
    assert a.body(req, offering("veo-3.1-vertex"))["parameters"] == {
        "aspectRatio": "16:9",
        "resolution": "720p",
        "durationSeconds": 6,
        "sampleCount": 1,
        "negativePrompt": "n",
        "generateAudio": True,
        "seed": 42,
        "fps": 24,
        "storageUri": "gs://mine/out",
    }
    quiet = a.body(VideoRequest(prompt="x", audio=AudioMode.ANY), offering())["parameters"]
    assert quiet["generateAudio"] is False  # "optional" audio is not free: only on request
    opt = VideoRequest(
        prompt="x",
        provider_options={
            "google-vertex": {"storageUri": "gs://b/p", "compressionQuality": "lossless"}
        },
    )
    params = a.body(opt, offering())["parameters"]
    assert (params["storageUri"], params["compressionQuality"]) == ("gs://b/p", "lossless")


def test_no_output_location_outside_sandbox_means_inline(http, tmp_path) -> None:
    a = with_key(http, None, tmp_path / "unused.json")
    assert "storageUri" not in a.body(VideoRequest(prompt="x"), offering())["parameters"]


def test_images_as_inline_bytes_or_gcs_uris(http) -> None:
    a = sandboxed(http, "http://unused/v1")
    req = VideoRequest(
        prompt="x",
        mode=Mode.FIRST_LAST_FRAME,
        references=[
            Reference(role=ReferenceRole.FIRST_FRAME, url=PNG),
            Reference(
                role=ReferenceRole.LAST_FRAME,
                url="https://storage.googleapis.com/my-bucket/frames/last.png",
            ),
        ],
    )
    inst = a.body(req, offering())["instances"][0]
    assert inst["image"] == {"bytesBase64Encoded": "iVBORw0KGgo=", "mimeType": "image/png"}
    assert inst["lastFrame"] == {"gcsUri": "gs://my-bucket/frames/last.png"}
    ext = VideoRequest(
        prompt="x",
        mode=Mode.EXTEND,
        references=[
            Reference(
                role=ReferenceRole.SOURCE_VIDEO,
                kind=ReferenceKind.VIDEO,
                url="data:video/mp4;base64,AAAA",
            )
        ],
    )
    assert a.body(ext, offering())["instances"][0]["video"] == {
        "bytesBase64Encoded": "AAAA",
        "mimeType": "video/mp4",
    }


@pytest.mark.parametrize(
    ("request_data", "error", "match"),
    [
        (
            {"references": [{"role": "first_frame", "url": "https://example.com/a.png"}]},
            CapabilityMismatch,
            "storage.googleapis.com",
        ),
        ({"aspect_ratio": "4:3"}, CapabilityMismatch, "aspect"),
        (
            {"provider_options": {"google-vertex": {"storageUri": "s3://x"}}},
            InvalidRequest,
            "gs://",
        ),
        (
            {"provider_options": {"google-vertex": {"resizeMode": "stretch"}}},
            InvalidRequest,
            "resizeMode",
        ),
        ({"provider_options": {"google-vertex": {"labels": {}}}}, InvalidRequest, "unknown"),
    ],
)
async def test_rejected_before_any_call(http, request_data, error, match) -> None:
    a = sandboxed(http, "http://127.0.0.1:9/v1")
    req = VideoRequest.model_validate({"prompt": "x", "duration_s": 4, **request_data})
    with pytest.raises(error, match=match):
        a.check(req, offering())
    with pytest.raises(error):
        await a.submit(req, offering(), idempotency_key="r")


# -- recorded shapes and errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "state", "error"),
    [
        ("operation_running.json", RemoteState.RUNNING, None),
        ("operation_succeeded_gcs.json", RemoteState.SUCCEEDED, None),
        ("operation_succeeded_inline.json", RemoteState.SUCCEEDED, None),
        ("operation_filtered.json", RemoteState.FAILED, ContentRejected),
        ("operation_failed.json", RemoteState.FAILED, ProviderUnavailable),
        ("operation_failed_safety.json", RemoteState.FAILED, ContentRejected),
    ],
)
async def test_recorded_operation_shapes(http, name, state, error) -> None:
    with scripted_server() as (sp, url):
        sp.script("POST", Scripted(200, fixture(name)))
        status = await sandboxed(http, f"{url}/v1").poll(job_at(f"{url}/v1"))
    assert status.state is state
    assert (type(status.error) if status.error else None) is error


async def test_fetch_maps_gcs_and_inline_outputs(http) -> None:
    with scripted_server() as (sp, url):
        sp.script(
            "POST",
            Scripted(200, fixture("operation_succeeded_gcs.json")),
            Scripted(200, fixture("operation_succeeded_inline.json")),
        )
        a = sandboxed(http, f"{url}/v1")
        [gcs] = await a.fetch(job_at(f"{url}/v1"))
        [inline] = await a.fetch(job_at(f"{url}/v1"))
    assert (
        gcs.url
        == f"{url}/download/storage/v1/b/my-bucket/o/veo%2F1234567890%2Fsample_0.mp4?alt=media"
    )
    assert gcs.headers == {"Authorization": "Bearer sandbox-key"}
    assert inline.url == "data:video/mp4;base64,AAAAGGZ0eXBtcDQy"
    assert inline.headers == {}


@pytest.mark.parametrize(
    "op",
    [
        {"name": OP, "done": True, "response": {"generateVideoResponse": {}}},  # Gemini-shaped
        {"name": OP, "done": True},
        {"name": OP, "done": 1},
    ],
)
async def test_unrecognised_shapes_are_protocol_errors(http, op) -> None:
    with scripted_server() as (sp, url):
        sp.script("POST", Scripted(200, op))
        with pytest.raises(ProviderProtocolError):
            await sandboxed(http, f"{url}/v1").poll(job_at(f"{url}/v1"))


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (Scripted(401, fixture("error_unauthenticated.json")), AuthFailed),
        (
            Scripted(
                429,
                {
                    "error": {
                        "code": 429,
                        "message": "Resource exhausted.",
                        "status": "RESOURCE_EXHAUSTED",
                    }
                },
                {"retry-after": "5"},
            ),
            RateLimited,
        ),
        (Scripted(200, {}), ProviderProtocolError),
    ],
)
async def test_create_errors(http, reply, error) -> None:
    with scripted_server() as (sp, url):
        sp.script("POST", reply)
        with pytest.raises(error) as info:
            await sandboxed(http, f"{url}/v1").submit(
                VideoRequest(prompt="x", duration_s=4), offering(), idempotency_key="e"
            )
    assert info.value.provider == "vertex-veo"
    assert len(sp.seen) == 1
    if error is RateLimited:
        assert info.value.retry_after == 5


@pytest.mark.live
@pytest.mark.skipif(
    not os.path.isfile(os.environ.get("GOOGLE_APPLICATION_CREDENTIALS", "")),
    reason="GOOGLE_APPLICATION_CREDENTIALS does not name a key file",
)
async def test_live_submit_and_poll() -> None:
    """A real, minimal Veo job on Vertex (4 s, 720p, Fast, no audio): submitted once, polled
    once. Outputs go to VIDGATE_VERTEX_OUTPUT_URI when set, else inline."""
    async with httpx.AsyncClient(timeout=60) as client:
        a = VertexVeo(client=client, credentials=Credentials())
        job = await a.submit(
            VideoRequest(prompt="a slow pan over a calm lake at dawn", duration_s=4),
            offering("veo-3.1-fast-vertex"),
            idempotency_key="live",
        )
        assert "/operations/" in job.remote_id
        status = await a.poll(job)
        assert status.state in (RemoteState.RUNNING, RemoteState.SUCCEEDED)
