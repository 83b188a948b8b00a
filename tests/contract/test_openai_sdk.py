"""openai (Stainless, strict) against the sandbox's OpenAI Videos emulation: create_and_poll,
download_content, image-to-video from a file upload (the SDK's multipart input_reference),
list, delete; every Video parses with the SDK's own model."""

from __future__ import annotations

import io

import httpx
import pytest
from openai import NotFoundError, OpenAI
from openai.types import Video

from tests.contract.conftest import KEY, PNG_BYTES
from vidgate.sandbox.app import SandboxServer

# The SDK warns on every Sora call that the API shuts down on 2026-09-24 (the catalog's
# available_until); the wire contract is still what the emulator must speak.
pytestmark = pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")


def client(sb: SandboxServer) -> OpenAI:
    return OpenAI(
        api_key=KEY,
        base_url=f"{sb.url}/openai-videos/v1",
        max_retries=0,
        _strict_response_validation=True,
    )


def test_openai_sdk_flow(sb: SandboxServer) -> None:
    oa = client(sb)
    video = oa.videos.create_and_poll(
        model="sora-2", prompt="a paper boat on a stream", seconds="4", poll_interval_ms=20
    )
    assert video.status == "completed"
    content = oa.videos.download_content(video.id)
    assert content.read()[4:8] == b"ftyp"

    frame = io.BytesIO(PNG_BYTES)
    frame.name = "frame.png"
    i2v = oa.videos.create_and_poll(
        model="sora-2",
        prompt="it drifts",
        seconds="4",
        size="1280x720",
        input_reference=frame,
        poll_interval_ms=20,
    )
    assert i2v.status == "completed"

    listed = oa.videos.list(limit=10)
    assert {video.id, i2v.id} <= {v.id for v in listed.data}
    deleted = oa.videos.delete(video.id)
    assert deleted.deleted
    with pytest.raises(NotFoundError):
        oa.videos.retrieve(video.id)


def test_every_openai_response_parses_with_sdk_models(sb: SandboxServer) -> None:
    h = {"Authorization": f"Bearer {KEY}"}
    base = f"{sb.url}/openai-videos/v1/videos"
    created = httpx.post(base, json={"model": "sora-2", "prompt": "x", "seconds": "4"}, headers=h)
    Video.model_validate(created.json(), strict=False)
    seen = set()
    for _ in range(5000):
        body = httpx.get(f"{base}/{created.json()['id']}", headers=h).json()
        seen.add(_strict(body).status)
        if body["status"] == "completed":
            break
    assert "completed" in seen
    for v in httpx.get(base, headers=h).json()["data"]:
        _strict(v)


def _strict(body: dict) -> Video:
    """Stainless models are lenient by default; construct the way a strict client does."""
    from openai._models import validate_type

    return validate_type(type_=Video, value=body)
