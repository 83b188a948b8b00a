"""fal-client against the sandbox's fal queue emulation: submit, status/iter_events, result,
download, image-to-video with a data URI from fal_client.encode (no CDN upload: fal's storage
API is not emulated), cancel; every status parses with the SDK's own _parse_status.

fal-client only speaks https to fixed hosts (queue.fal.run): the harness gives it an httpx
transport that routes those requests to the sandbox; the emulator's wire format is unchanged."""

from __future__ import annotations

import httpx
import pytest
from fal_client import Completed, InProgress, Queued, SyncClient, encode
from fal_client.client import SyncRequestHandle

from tests.contract.conftest import KEY, PNG_BYTES
from vidgate.sandbox.app import SandboxServer

T2V = "fal-ai/kling-video/v3/pro/text-to-video"
I2V = "fal-ai/kling-video/v3/pro/image-to-video"


class ToSandbox(httpx.BaseTransport):
    """https://queue.fal.run/<path> -> <sandbox>/fal-queue/<path>; other URLs untouched."""

    def __init__(self, sandbox_url: str) -> None:
        self.base = httpx.URL(sandbox_url)
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "queue.fal.run":
            request.url = self.base.copy_with(
                path="/fal-queue" + request.url.path, query=request.url.query
            )
            request.headers["host"] = request.url.netloc.decode()
        return self.inner.handle_request(request)


def client(sb: SandboxServer) -> SyncClient:
    fal = SyncClient(key=KEY)
    fal.__dict__["_client"] = httpx.Client(  # the SDK's own client, with the routing transport
        transport=ToSandbox(sb.url),
        headers={"Authorization": f"Key {KEY}"},
        follow_redirects=True,
        timeout=30,
    )
    return fal


def test_fal_sdk_flow(sb: SandboxServer) -> None:
    fal = client(sb)
    handle = fal.submit(T2V, {"prompt": "a paper boat on a stream", "duration": "5"})
    statuses = list(handle.iter_events(interval=0.02))
    assert isinstance(statuses[-1], Completed)
    result = handle.get()
    assert httpx.get(result["video"]["url"], timeout=120).content[4:8] == b"ftyp"

    image = encode(PNG_BYTES, "image/png")
    out = fal.subscribe(I2V, {"prompt": "it drifts", "start_image_url": image}, interval=0.02)
    assert out["video"]["url"]

    sb.core.time_scale = 1.0  # still queued or running when cancelled
    slow = fal.submit(T2V, {"prompt": "a slow sunrise", "duration": "5"})
    slow.cancel()
    with pytest.raises(Exception, match=r"(?i)cancel"):
        slow.get()


def test_every_fal_response_parses_with_sdk_models(sb: SandboxServer) -> None:
    h = {"Authorization": f"Key {KEY}"}
    sub = httpx.post(f"{sb.url}/fal-queue/{T2V}", json={"prompt": "x"}, headers=h).json()
    handle = SyncRequestHandle(
        request_id=sub["request_id"],
        response_url=sub["response_url"],
        status_url=sub["status_url"],
        cancel_url=sub["cancel_url"],
        client=httpx.Client(),
    )
    kinds = set()
    for _ in range(5000):
        body = httpx.get(sub["status_url"], params={"logs": "1"}, headers=h).json()
        status = handle._parse_status(body)
        kinds.add(type(status))
        if isinstance(status, Completed):
            break
    assert Completed in kinds
    assert kinds <= {Queued, InProgress, Completed}
    assert "video" in httpx.get(sub["response_url"], headers=h).json()
