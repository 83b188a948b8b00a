"""LiteLLM's video API (video_generation / video_status / video_content / video_list) as a
real client of vidgate's OpenAI-compatible /v1/videos."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network at import

import time
from typing import Any

import litellm
import openai
import pytest
from litellm.types.videos.utils import extract_original_video_id as original_id

from tests.server.conftest import POLL_S, Server, Tenant
from tests.server.media import decode_mp4, png_bytes


def opts(server: Server, tenant: Tenant) -> dict[str, Any]:
    return {"api_base": server.api, "api_key": tenant.key, "max_retries": 0}


def poll(server: Server, tenant: Tenant, video_id: str, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        video = litellm.video_status(video_id=video_id, **opts(server, tenant))
        if video.status in ("completed", "failed"):
            return video
        if time.monotonic() > deadline:
            pytest.fail(f"{video_id} still {video.status} after {timeout_s}s")
        time.sleep(POLL_S)


def test_generate_status_content(server: Server, tenant: Tenant) -> None:
    video = litellm.video_generation(
        model="openai/auto",
        prompt="a hot-air balloon over a valley at sunrise",
        seconds="4",
        size="1280x720",
        **opts(server, tenant),
    )
    assert video.status == "queued"
    # LiteLLM wraps our id with the provider it used; the id it sends back is ours
    job_id = original_id(video.id)
    assert job_id.startswith("job_")
    with server.client(tenant) as c:
        assert c.get(f"/v1/videos/{job_id}").json()["prompt"].startswith("a hot-air balloon")

    done = poll(server, tenant, video.id)
    assert done.status == "completed", done.error
    assert done.progress == 100
    data = litellm.video_content(video_id=video.id, **opts(server, tenant))
    mp4 = decode_mp4(data)
    assert (mp4.width, mp4.height) == (1280, 720)
    assert mp4.frames > 0

    page = litellm.video_list(limit=10, **opts(server, tenant))
    assert page["object"] == "list"
    ids = [original_id(v["id"]) for v in page["data"]]
    assert ids == [job_id]  # only this tenant's videos


def test_image_upload_and_alias(server: Server, tenant: Tenant) -> None:
    video = litellm.video_generation(
        model="openai/auto:fastest",
        prompt="the frame starts to move",
        input_reference=png_bytes(),
        **opts(server, tenant),
    )
    job_id = original_id(video.id)
    job = server.wait_job(tenant, job_id)
    assert job["state"] == "succeeded", job["error"]
    assert job["policy"] == "fastest"
    assert job["request"]["mode"] == "image-to-video"
    assert job["request"]["references"][0]["url"].startswith("data:image/png;base64,")


def test_errors_surface_as_litellm_exceptions(server: Server, tenant: Tenant) -> None:
    other = server.tenant()
    theirs = litellm.video_generation(model="openai/auto", prompt="mine", **opts(server, other))
    # What we assert is our wire: the status, code and words we send. Which subclass LiteLLM
    # maps a 404 to has changed between its releases (BadRequestError, then NotFoundError);
    # any error of the OpenAI family carrying our status is right.
    with pytest.raises(openai.APIStatusError) as nf:
        litellm.video_status(video_id=theirs.id, **opts(server, tenant))
    status: int = nf.value.status_code
    assert status == 404
    assert "not found" in str(nf.value)
    with pytest.raises(openai.APIStatusError) as e:
        litellm.video_generation(model="openai/not-a-model", prompt="x", **opts(server, tenant))
    assert "model_not_found" in str(e.value)
    assert "'not-a-model' is not an offering, a model or an alias" in str(e.value)
    with pytest.raises(openai.APIStatusError) as auth:
        litellm.video_generation(
            model="openai/auto", prompt="x", api_base=server.api, api_key="vg_wrong", max_retries=0
        )
    assert "invalid_api_key" in str(auth.value)


async def test_async_generation(server: Server, tenant: Tenant) -> None:
    video = await litellm.avideo_generation(
        model="openai/auto", prompt="a koi pond, top view", **opts(server, tenant)
    )
    status = await litellm.avideo_status(video_id=video.id, **opts(server, tenant))
    assert original_id(status.id) == original_id(video.id)
    assert status.status in ("queued", "in_progress", "completed")
