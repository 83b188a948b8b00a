"""The official OpenAI SDK, unchanged, against vidgate's /v1/videos over real HTTP."""

from __future__ import annotations

import base64

import openai
import pytest
from openai.types import Video

from tests.server.conftest import Server, Tenant
from tests.server.media import decode_mp4, png_bytes


def sdk(server: Server, tenant: Tenant | None = None, *, key: str | None = None) -> openai.OpenAI:
    # max_retries=0: a test sees exactly the server's first answer (no SDK retries)
    return openai.OpenAI(
        base_url=server.api,
        api_key=key if key is not None else (tenant.key if tenant else "none"),
        max_retries=0,
        timeout=30,
    )


def finish(client: openai.OpenAI, video_id: str) -> Video:
    video = client.videos.poll(video_id, poll_interval_ms=50)
    assert video.status == "completed", video.error
    return video


def test_create_poll_download_as_mp4(server: Server, tenant: Tenant) -> None:
    client = sdk(server, tenant)
    created = client.videos.create(
        prompt="a red fox trots through fresh snow", model="auto", seconds="4", size="1280x720"
    )
    assert created.object == "video"
    assert created.status == "queued"
    assert created.id.startswith("job_")
    assert created.model != "auto"  # the offering the router chose

    again = client.videos.retrieve(created.id)
    assert again.id == created.id
    assert again.prompt == "a red fox trots through fresh snow"

    done = finish(client, created.id)
    assert done.progress == 100
    assert done.completed_at is not None
    assert done.completed_at >= done.created_at
    assert done.size == "1280x720"

    content = client.videos.download_content(created.id)
    assert content.response.headers["content-type"] == "video/mp4"
    mp4 = decode_mp4(content.content)
    assert (mp4.width, mp4.height) == (1280, 720)
    assert mp4.frames > 0
    assert float(done.seconds) == pytest.approx(mp4.duration_s, abs=0.1)


def test_multipart_upload_of_a_first_frame(server: Server, tenant: Tenant) -> None:
    client = sdk(server, tenant)
    image = png_bytes(64, 36)
    created = client.videos.create(
        prompt="the red frame slowly comes to life",
        model="auto",
        size="1280x720",
        input_reference=("frame.png", image, "image/png"),
    )
    job = server.wait_job(tenant, created.id)
    assert job["state"] == "succeeded", job["error"]
    assert job["request"]["mode"] == "image-to-video"
    ref = job["request"]["references"][0]
    assert ref["role"] == "first_frame"
    assert ref["url"] == "data:image/png;base64," + base64.b64encode(image).decode()
    assert decode_mp4(client.videos.download_content(created.id).content).frames > 0


def test_extra_body_objects_in_multipart(server: Server, tenant: Tenant) -> None:
    """The SDK sends extra_body objects in multipart as bracketed fields (vidgate[policy],
    vidgate[metadata][order]); they mean what they mean in JSON."""
    client = sdk(server, tenant)
    created = client.videos.create(
        prompt="a lighthouse at dusk",
        model="auto",
        extra_body={"vidgate": {"policy": "fastest", "metadata": {"order": "42"}}},
    )
    job = server.wait_job(tenant, created.id)
    assert job["policy"] == "fastest"
    assert job["request"]["metadata"] == {"order": "42"}


def test_json_body_through_the_sdk(server: Server, tenant: Tenant) -> None:
    """A JSON create (the SDK's generic post) with input_reference as an image_url object
    (the SDK's create only uploads files in its multipart body)."""
    client = sdk(server, tenant)
    data_url = "data:image/png;base64," + base64.b64encode(png_bytes(36, 64)).decode()
    video = client.post(
        "/videos",
        cast_to=Video,
        body={
            "prompt": "waves on a pebble beach",
            "model": "auto",
            "seconds": "8",
            "size": "720x1280",
            "input_reference": {"image_url": data_url},
            "vidgate": {"policy": "cheapest"},
        },
    )
    assert video.status == "queued"
    assert video.size == "720x1280"
    done = finish(client, video.id)
    job = server.wait_job(tenant, video.id)
    assert job["request"]["mode"] == "image-to-video"
    assert job["request"]["aspect_ratio"] == "9:16"
    assert job["request"]["references"][0]["url"] == data_url
    # a finished video reports the size of the file it holds
    mp4 = decode_mp4(client.videos.download_content(video.id).content)
    assert done.size == f"{mp4.width}x{mp4.height}"
    assert float(done.seconds) == pytest.approx(mp4.duration_s, abs=0.1)


@pytest.mark.parametrize("kind", ["offering", "model", "auto:premium-audio"])
def test_model_as_offering_model_or_alias(server: Server, tenant: Tenant, kind: str) -> None:
    client = sdk(server, tenant)
    with server.client(tenant) as c:
        plan = c.post("/v1/route", json={"request": {"prompt": "x", "duration_s": 5}}).json()
    chosen = plan["chosen"]
    name = {"offering": chosen["offering"], "model": chosen["model"]}.get(kind, kind)
    video = client.videos.create(prompt="a chef flips a pancake", model=name)
    job = server.wait_job(tenant, video.id)
    assert job["state"] == "succeeded", job["error"]
    offering = server.gateway.catalog.offerings[job["offering_id"]]
    if kind == "offering":
        assert job["offering_id"] == chosen["offering"]
        assert job["route"]["ranked"] == [chosen["offering"]]
    elif kind == "model":
        assert offering.model == chosen["model"]
        assert all(
            server.gateway.catalog.offerings[o].model == chosen["model"]
            for o in job["route"]["ranked"]
        )
    else:
        assert job["policy"] == "best-quality"
        assert job["request"]["audio"] == "required"
        assert job["request"]["quality"] == "premium"
        assert offering.capabilities.audio in ("optional", "always")
        assert decode_mp4(client.videos.download_content(video.id).content).has_audio


def test_list_paginates_with_after_limit_has_more(idle_server: Server) -> None:
    tenant = idle_server.tenant()
    other = idle_server.tenant()
    client = sdk(idle_server, tenant)
    ids = [client.videos.create(prompt=f"clip {i}", model="auto").id for i in range(5)]
    sdk(idle_server, other).videos.create(prompt="someone else's", model="auto")

    first = client.videos.list(limit=2)
    assert [v.id for v in first.data] == ids[::-1][:2]
    assert first.has_more is True
    assert first.last_id == ids[3]
    second = client.videos.list(limit=2, after=first.last_id)
    assert [v.id for v in second.data] == [ids[2], ids[1]]
    last = client.videos.list(limit=2, after=ids[1])
    assert [v.id for v in last.data] == [ids[0]]
    assert last.has_more is False

    # the SDK's own auto-pagination, both orders, sees each video exactly once
    assert [v.id for v in client.videos.list(limit=2)] == ids[::-1]
    assert [v.id for v in client.videos.list(limit=2, order="asc")] == ids


def test_delete_only_when_finished(server: Server, idle_server: Server, tenant: Tenant) -> None:
    waiting = idle_server.tenant()
    queued = sdk(idle_server, waiting).videos.create(prompt="still queued", model="auto")
    with pytest.raises(openai.BadRequestError) as e:
        sdk(idle_server, waiting).videos.delete(queued.id)
    assert "only completed or failed videos can be deleted" in e.value.message
    assert sdk(idle_server, waiting).videos.retrieve(queued.id).status == "queued"

    client = sdk(server, tenant)
    video = client.videos.create(prompt="a short clip to delete", model="auto")
    finish(client, video.id)
    deleted = client.videos.delete(video.id)
    assert deleted.deleted is True
    assert deleted.id == video.id
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video.id)
    with pytest.raises(openai.NotFoundError):
        client.videos.download_content(video.id)
    assert video.id not in [v.id for v in client.videos.list()]


def test_errors_map_to_the_sdk_exceptions(server: Server, tenant: Tenant) -> None:
    client = sdk(server, tenant)
    other = server.tenant()
    theirs = sdk(server, other).videos.create(prompt="not yours", model="auto")

    with pytest.raises(openai.NotFoundError) as nf:
        client.videos.retrieve(theirs.id)
    assert nf.value.status_code == 404
    assert nf.value.code == "not_found"

    with pytest.raises(openai.BadRequestError) as bad_model:
        client.videos.create(prompt="x", model="no-such-model")
    assert bad_model.value.code == "model_not_found"
    assert "auto" in bad_model.value.message  # names what would work

    with pytest.raises(openai.BadRequestError) as bad_size:
        client.videos.create(prompt="x", model="auto", size="1280 by 720")  # type: ignore[arg-type]
    assert bad_size.value.code == "invalid_size"
    assert bad_size.value.param == "size"

    with pytest.raises(openai.BadRequestError) as no_route:
        client.videos.create(
            prompt="x",
            model="auto",
            extra_body={"vidgate": {"constraints": {"max_cost_usd": 0.001}}},
        )
    assert no_route.value.code == "no_route"

    with pytest.raises(openai.BadRequestError) as bad_ref:
        client.post(
            "/videos",
            cast_to=Video,
            body={"prompt": "x", "input_reference": {"image_url": "ftp://example.com/a.png"}},
        )
    assert bad_ref.value.param == "references.0.url"

    with pytest.raises(openai.AuthenticationError) as no_key:
        client.videos.list(extra_headers={"Authorization": openai.Omit()})
    assert no_key.value.code == "missing_api_key"
    with pytest.raises(openai.AuthenticationError) as wrong_key:
        sdk(server, key="vg_not-a-real-key").videos.list()
    assert wrong_key.value.code == "invalid_api_key"


def test_rate_limited_key_gets_rate_limit_error(server: Server) -> None:
    limited = server.tenant(rpm=3)
    client = sdk(server, limited)
    for _ in range(3):
        client.videos.list()
    with pytest.raises(openai.RateLimitError) as e:
        client.videos.list()
    assert e.value.status_code == 429
    assert e.value.response.headers["retry-after"]
    assert "3 requests/minute" in e.value.message
    # the limit is per key: another key of the same tenant is not limited by it
    _, raw = server.gateway.accounts.create_key(limited.name)
    assert sdk(server, key=raw).videos.list().data == []


def test_create_and_poll_helper(server: Server, tenant: Tenant) -> None:
    video = sdk(server, tenant).videos.create_and_poll(
        prompt="a paper boat in the rain", model="auto:fastest", poll_interval_ms=50
    )
    assert video.status == "completed"
    assert video.progress == 100
