"""lumaai (Stainless, strict) against the sandbox's Dream Machine emulation: create, get until
completed, download, image-to-video from an image URL keyframe (the SDK takes URLs only; it has
no upload), list, delete; every Generation parses with the SDK's own model. The SDK's `model`
Literal (ray-2 | ray-flash-2) is what the catalog may send on this API."""

from __future__ import annotations

import typing

import httpx
import pytest
from lumaai import LumaAI, NotFoundError
from lumaai._models import validate_type
from lumaai.types import Generation, GenerationListResponse
from lumaai.types.generations import video_create_params

from tests.contract.conftest import KEY
from vidgate.catalog.loader import Catalog
from vidgate.sandbox.app import SandboxServer

#: what a Dream Machine create may name (lumaai types/generations/video_create_params.py)
SDK_MODELS = set(
    typing.get_args(typing.get_type_hints(video_create_params.VideoCreateParams)["model"])
)


def client(sb: SandboxServer) -> LumaAI:
    return LumaAI(
        auth_token=KEY,
        base_url=f"{sb.url}/luma/dream-machine/v1",
        max_retries=0,
        _strict_response_validation=True,
    )


def wait(luma: LumaAI, gid: str) -> Generation:
    for _ in range(5000):
        g = luma.generations.get(gid)
        if g.state in ("completed", "failed"):
            return g
    raise AssertionError("generation never finished")


def test_luma_sdk_flow(sb: SandboxServer) -> None:
    luma = client(sb)
    created = luma.generations.video.create(
        model="ray-flash-2", prompt="a paper boat on a stream", duration="5s", resolution="540p"
    )
    done = wait(luma, created.id)
    assert done.state == "completed"
    assert done.assets is not None
    assert httpx.get(done.assets.video, timeout=120).content[4:8] == b"ftyp"

    i2v = luma.generations.video.create(
        model="ray-2",
        prompt="it drifts",
        keyframes={"frame0": {"type": "image", "url": "https://example.com/frame.png"}},
    )
    assert wait(luma, i2v.id).state == "completed"

    listed = luma.generations.list(limit=10)
    assert {created.id, i2v.id} <= {g.id for g in listed.generations}
    luma.generations.delete(created.id)
    with pytest.raises(NotFoundError):
        luma.generations.get(created.id)


#: Dream Machine ids the catalog sends that no lumaai release names (catalog luma.yaml header:
#: UNCONFIRMED, kept for the sandbox suites; to be disabled before a live call)
UNCONFIRMED_DM_IDS = {"ray-3", "ray-3-14"}


def test_catalog_sends_only_sdk_models_on_dream_machine(catalog: Catalog) -> None:
    assert {"ray-2", "ray-flash-2"} <= SDK_MODELS
    sent = {
        o.provider_model_id
        for o in catalog.offerings.values()
        if o.protocol == "luma" and o.enabled and o.adapter_options.get("api") != "agents"
    }
    assert sent - SDK_MODELS <= UNCONFIRMED_DM_IDS, sent - SDK_MODELS
    assert not UNCONFIRMED_DM_IDS & SDK_MODELS, "an SDK release names it now: drop the exception"


def test_every_luma_response_parses_with_sdk_models(sb: SandboxServer) -> None:
    h = {"Authorization": f"Bearer {KEY}"}
    base = f"{sb.url}/luma/dream-machine/v1/generations"
    created = httpx.post(
        f"{base}/video", json={"model": "ray-2", "prompt": "a paper boat"}, headers=h
    )
    assert created.status_code == 201, created.text
    # what a strict client does with every body (lumaai._base_client: validate_type)
    assert validate_type(type_=Generation, value=created.json()).id
    seen = set()
    for _ in range(5000):
        body = httpx.get(f"{base}/{created.json()['id']}", headers=h).json()
        seen.add(validate_type(type_=Generation, value=body).state)
        if body["state"] == "completed":
            break
    assert "completed" in seen
    validate_type(type_=GenerationListResponse, value=httpx.get(base, headers=h).json())
