"""google-genai in Vertex mode, with google-auth service-account credentials, against the
sandbox's Vertex emulation: the JWT-bearer token exchange exactly as google-auth signs it
(audience https://oauth2.googleapis.com/token, POSTed to the key's token_uri), generate_videos
(text and image), operations.get until done, the inline video bytes; every operation parses
with the SDK's own GenerateVideosOperation.

The Gemini-API mode is not exercised: google-genai 3.x refuses video generation there
(models.py ``_generate_videos``: "This method is only supported in Gemini Enterprise Agent
Platform mode, not in Gemini Developer API mode"), and the catalog retired the Gemini-API Veo
route (catalog/data/offerings/google-gemini.yaml)."""

from __future__ import annotations

import io
from pathlib import Path

import av
import google.auth.exceptions
import google.auth.transport.requests
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google import genai
from google.genai import types
from google.genai.models import _GenerateVideosOperation_from_vertex
from google.oauth2 import service_account

from tests.contract.conftest import PNG_BYTES
from vidgate.sandbox.app import SandboxServer

PROJECT, LOCATION = "proj-contract", "us-central1"
MODEL = "veo-3.1-fast-generate-001"


def key_info(token_uri: str, email: str = "veo@proj-contract.iam.gserviceaccount.com") -> dict:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "kid-contract",
        "private_key": pem,
        "client_email": email,
        "client_id": "1",
        "token_uri": token_uri,
    }


def client(sb: SandboxServer, info: dict) -> genai.Client:
    creds = service_account.Credentials.from_service_account_info(
        info, scopes=["https://www.googleapis.com/auth/cloud-platform"]
    )
    return genai.Client(
        vertexai=True,
        project=PROJECT,
        location=LOCATION,
        credentials=creds,
        http_options=types.HttpOptions(base_url=f"{sb.url}/vertex-veo/", api_version="v1"),
    )


def wait(g: genai.Client, op: types.GenerateVideosOperation) -> types.GenerateVideosOperation:
    for _ in range(5000):
        if op.done:
            return op
        op = g.operations.get(op)
    raise AssertionError("operation never finished")


def test_google_auth_token_exchange(sb: SandboxServer) -> None:
    creds = service_account.Credentials.from_service_account_info(
        key_info(f"{sb.url}/vertex-veo/token"),
        scopes=["https://www.googleapis.com/auth/cloud-platform"],
    )
    creds.refresh(google.auth.transport.requests.Request())
    assert creds.token.startswith("ya29.")
    refused = service_account.Credentials.from_service_account_info(
        key_info(f"{sb.url}/vertex-veo/token", email="invalid-key"),
        scopes=["https://www.googleapis.com/auth/cloud-platform"],
    )
    with pytest.raises(google.auth.exceptions.RefreshError, match="invalid_grant"):
        refused.refresh(google.auth.transport.requests.Request())


def test_google_genai_vertex_flow(sb: SandboxServer, tmp_path: Path) -> None:
    g = client(sb, key_info(f"{sb.url}/vertex-veo/token"))
    op = g.models.generate_videos(
        model=MODEL,
        source=types.GenerateVideosSource(prompt="a paper boat on a stream"),
        config=types.GenerateVideosConfig(
            duration_seconds=4, aspect_ratio="16:9", resolution="720p", generate_audio=False
        ),
    )
    assert op.name
    done = wait(g, op)
    assert done.error is None
    video = done.response.generated_videos[0].video
    assert video.video_bytes[4:8] == b"ftyp"
    out = tmp_path / "clip.mp4"
    video.save(str(out))
    with av.open(io.BytesIO(out.read_bytes())) as c:
        assert c.streams.video[0].codec_context.width == 1280

    image = types.Image(image_bytes=PNG_BYTES, mime_type="image/png")
    i2v = g.models.generate_videos(
        model=MODEL,
        source=types.GenerateVideosSource(prompt="it drifts", image=image),
        config=types.GenerateVideosConfig(duration_seconds=4, generate_audio=False),
    )
    assert wait(g, i2v).response.generated_videos


def test_every_vertex_response_parses_with_sdk_models(sb: SandboxServer) -> None:
    """Raw emulator bodies through the SDK's own converter and operation model."""
    creds = service_account.Credentials.from_service_account_info(
        key_info(f"{sb.url}/vertex-veo/token"),
        scopes=["https://www.googleapis.com/auth/cloud-platform"],
    )
    creds.refresh(google.auth.transport.requests.Request())
    h = {"Authorization": f"Bearer {creds.token}"}
    base = (
        f"{sb.url}/vertex-veo/v1/projects/{PROJECT}/locations/{LOCATION}/publishers/google/"
        f"models/{MODEL}"
    )
    body = {"instances": [{"prompt": "x"}], "parameters": {"durationSeconds": 4}}
    created = httpx.post(f"{base}:predictLongRunning", json=body, headers=h)
    assert created.status_code == 200, created.text
    bodies = [created.json()]
    for _ in range(5000):
        r = httpx.post(
            f"{base}:fetchPredictOperation",
            json={"operationName": created.json()["name"]},
            headers=h,
        )
        bodies.append(r.json())
        if r.json().get("done"):
            break
    assert bodies[-1].get("done")
    for raw in bodies:
        op = types.GenerateVideosOperation._from_response(
            response=_GenerateVideosOperation_from_vertex(raw, None, None), kwargs={}
        )
        assert op.name == created.json()["name"]
    assert op.response.generated_videos[0].video.video_bytes
