"""The local-diffusers adapter against the sandbox's model-server emulator, over real HTTP:
create, poll, content and cancel; the least-loaded server among several; each server answer
mapped into the error tree; the server's adjustments kept on the job; the server's cost."""

from __future__ import annotations

import asyncio
import io
import socket
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import pytest
from fastapi import FastAPI

from vidgate.catalog.loader import load_catalog
from vidgate.catalog.schema import Offering
from vidgate.errors import (
    CapabilityMismatch,
    InvalidRequest,
    ProviderUnavailable,
    RateLimited,
)
from vidgate.providers.base import ProviderJob, RemoteState, RemoteStatus
from vidgate.providers.local_diffusers import LocalDiffusers, adjustments, refusal
from vidgate.providers.local_fleet import ENV, Fleet
from vidgate.sandbox.app import LoopbackServer, SandboxServer
from vidgate.sandbox.core import FaultConfig, FaultRule
from vidgate.settings import Credentials
from vidgate.types import Resolution, VideoRequest

CATALOG = load_catalog()
WAN = CATALOG.offering("wan-2.1-self-hosted")


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    Fleet.forget()  # every test reads the servers' queues afresh
    yield
    Fleet.forget()


def _server(tmp: Path, name: str, time_scale: float = 0.002) -> SandboxServer:
    return SandboxServer(tmp / name, CATALOG, time_scale=time_scale).start()


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[SandboxServer]:
    server = _server(tmp_path, "a")
    yield server
    server.stop()


def srv(sb: SandboxServer) -> str:
    """The emulated server as a user configures it (without /v1)."""
    return f"{sb.url}/local-diffusers"


def root(sb: SandboxServer) -> str:
    return f"{srv(sb)}/v1"


def adapter(http: httpx.AsyncClient, *servers: str) -> LocalDiffusers:
    return LocalDiffusers(
        client=http, credentials=Credentials({ENV: ",".join(servers)}), base_url=None
    )


def request(prompt: str = "a lighthouse in a storm", **kw: object) -> VideoRequest:
    return VideoRequest(
        prompt=prompt, duration_s=5, resolution=Resolution.R480P, aspect_ratio="16:9", **kw
    )


async def finish(a: LocalDiffusers, job: ProviderJob) -> RemoteStatus:
    for _ in range(400):
        status = await a.poll(job)
        if status.state.terminal:
            return status
        await asyncio.sleep(0.02)
    raise AssertionError("the job never finished")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_lifecycle_adjustments_cost_and_content(
    sb: SandboxServer, http: httpx.AsyncClient
) -> None:
    a = adapter(http, srv(sb))  # /v1 is added
    job = await a.submit(request(seed=7), WAN, idempotency_key="k-life")
    assert job.base_url == root(sb)
    assert job.extra["model"] == WAN.provider_model_id
    # 480p 16:9 is 854x480; Wan takes sides divisible by 16: the server rounds and says so
    assert adjustments(job) == [
        {
            "field": "width",
            "requested": 854,
            "used": 848,
            "why": "wan-2.1 takes sides divisible by 16",
        }
    ]
    sent = sb.core.store.get(job.remote_id)
    assert sent is not None
    assert sent.params["received"]["seed"] == 7
    assert sent.params["received"]["shape"] == "round"
    status = await finish(a, job)
    assert status.state is RemoteState.SUCCEEDED
    # the cost is the server's own figure, read back independently
    video = (await http.get(f"{root(sb)}/videos/{job.remote_id}")).json()
    assert video["cost_usd"] > 0
    assert status.reported_cost is not None
    assert status.reported_cost.unit == "usd"
    assert status.reported_cost.amount == video["cost_usd"]
    # priced at face value (the ledger keeps micro-dollars)
    assert status.reported_cost.usd(WAN) == round(video["cost_usd"], 6)
    [asset] = await a.fetch(job)
    resp = await http.get(asset.url)
    assert resp.status_code == 200
    with av.open(io.BytesIO(resp.content), mode="r") as c:
        stream = c.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (848, 480)
        frames = list(c.decode(video=0))
    assert len(frames) == 5 * WAN.capabilities.fps[0]


async def test_exact_shape_is_refused_with_what_would_work(
    sb: SandboxServer, http: httpx.AsyncClient
) -> None:
    a = adapter(http, srv(sb))
    req = request(provider_options={"self-hosted": {"shape": "exact"}})
    with pytest.raises(InvalidRequest, match="width 854→848"):
        await a.submit(req, WAN, idempotency_key="k-exact")
    assert sb.core.store.stats()["creates"] == 0


async def test_cancel_between_steps(tmp_path: Path, http: httpx.AsyncClient) -> None:
    slow = _server(tmp_path, "slow", time_scale=1.0)
    try:
        a = adapter(http, srv(slow))
        job = await a.submit(request(), WAN, idempotency_key="k-cancel")
        assert (await a.poll(job)).state in (RemoteState.QUEUED, RemoteState.RUNNING)
        await a.cancel(job)
        assert (await a.poll(job)).state is RemoteState.CANCELED
        # content of a job that never completed: 404 from the server, not a file
        [asset] = await a.fetch(job)
        assert (await http.get(asset.url)).status_code == 404
    finally:
        slow.stop()


async def test_least_loaded_server_takes_the_job(tmp_path: Path, http: httpx.AsyncClient) -> None:
    busy, idle = _server(tmp_path, "busy", 1.0), _server(tmp_path, "idle", 1.0)
    try:
        # two jobs already wait on the first server (sent there directly)
        for i in range(2):
            r = await http.post(
                f"{root(busy)}/videos",
                json={"model": WAN.provider_model_id, "prompt": f"p{i}", "seconds": 5},
            )
            assert r.status_code == 200
        a = adapter(http, srv(busy), srv(idle))
        first = await a.submit(request(), WAN, idempotency_key="k-1")
        assert first.base_url == root(idle)
        # the fleet counts what it just sent: the next goes to the idle one again (1 < 2),
        # and the one after that, with both at 2, to the first listed
        second = await a.submit(request(), WAN, idempotency_key="k-2")
        assert second.base_url == root(idle)
        third = await a.submit(request(), WAN, idempotency_key="k-3")
        assert third.base_url == root(busy)
        # follow-up calls go where the job was created, whatever the load now
        assert (await a.poll(first)).state in (RemoteState.QUEUED, RemoteState.RUNNING)
        assert idle.core.store.get(first.remote_id) is not None
        assert busy.core.store.get(first.remote_id) is None
    finally:
        busy.stop()
        idle.stop()


async def test_a_silent_server_is_passed_over(sb: SandboxServer, http: httpx.AsyncClient) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    a = adapter(http, dead, srv(sb))
    job = await a.submit(request(), WAN, idempotency_key="k-dead")
    assert job.base_url == root(sb)


async def test_connection_refused_everywhere_is_unavailable(http: httpx.AsyncClient) -> None:
    a = adapter(http, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ProviderUnavailable, match="no model server answered") as info:
        await a.submit(request(), WAN, idempotency_key="k-refused")
    assert info.value.retryable


async def test_a_model_no_server_has_is_a_capability_mismatch(
    sb: SandboxServer, http: httpx.AsyncClient
) -> None:
    a = adapter(http, srv(sb))
    wan26 = CATALOG.offering("wan-2.6-self-hosted")
    with pytest.raises(CapabilityMismatch, match=r"no configured model server serves wan-2\.6"):
        await a.submit(request(), wan26, idempotency_key="k-26")
    # and the server's own 404 for a model it does not serve maps the same way
    resp = await http.post(f"{root(sb)}/videos", json={"model": "nope", "prompt": "x"})
    err = refusal(resp, root(sb))
    assert isinstance(err, CapabilityMismatch)
    assert err.status_code == 404
    assert not err.retryable


async def test_queue_full_is_rate_limited_with_retry_after(
    sb: SandboxServer, http: httpx.AsyncClient
) -> None:
    sb.core.faults = FaultConfig(rules=[FaultRule(kind="rate_limit", rate=1.0, retry_after_s=3)])
    with pytest.raises(RateLimited, match="queue is full") as info:
        await adapter(http, srv(sb)).submit(request(), WAN, idempotency_key="k-full")
    assert info.value.retry_after == 3
    assert info.value.details["code"] == "queue_full"


async def test_loading_server_is_unavailable(sb: SandboxServer, http: httpx.AsyncClient) -> None:
    sb.core.faults = FaultConfig(rules=[FaultRule(kind="unavailable", rate=1.0)])
    with pytest.raises(ProviderUnavailable, match="still loading"):
        await adapter(http, srv(sb)).submit(request(), WAN, idempotency_key="k-load")


async def test_out_of_memory_is_a_retryable_capacity_failure(
    sb: SandboxServer, http: httpx.AsyncClient
) -> None:
    a = adapter(http, srv(sb))
    job = await a.submit(request("[oom] a very long shot"), WAN, idempotency_key="k-oom")
    status = await finish(a, job)
    assert status.state is RemoteState.FAILED
    assert isinstance(status.error, ProviderUnavailable)
    assert status.error.retryable
    assert status.error.details["code"] == "out_of_memory"
    assert status.reported_cost is None  # a failed job is not billed


async def test_pipeline_error_is_retryable(sb: SandboxServer, http: httpx.AsyncClient) -> None:
    sb.core.faults = FaultConfig(rules=[FaultRule(kind="fail", rate=1.0)])
    a = adapter(http, srv(sb))
    status = await finish(a, await a.submit(request(), WAN, idempotency_key="k-fail"))
    assert isinstance(status.error, ProviderUnavailable)
    assert status.error.details["code"] == "pipeline_error"


def test_check_refuses_a_first_frame_by_url() -> None:
    a = LocalDiffusers(client=httpx.AsyncClient(), credentials=Credentials({}))
    i2v: Offering = CATALOG.offering("ltx-2-self-hosted")
    req = VideoRequest(
        prompt="x",
        mode="image-to-video",
        references=[{"role": "first_frame", "url": "https://example.com/a.png"}],
    )
    with pytest.raises(CapabilityMismatch, match="data: URL"):
        a.check(req, i2v)


async def test_a_job_the_server_lost_has_failed_retryably(
    sb: SandboxServer, http: httpx.AsyncClient
) -> None:
    # a restarted server answers, but without the job it held in its old process
    lost = ProviderJob(
        protocol="local-diffusers", offering_id=WAN.id, remote_id="vid_gone", base_url=root(sb)
    )
    status = await adapter(http, srv(sb)).poll(lost)
    assert status.state is RemoteState.FAILED
    assert isinstance(status.error, ProviderUnavailable)
    assert "no longer has job vid_gone" in status.error.message
    # cancelling it is done already: nothing is left to run
    await adapter(http, srv(sb)).cancel(lost)


async def test_cancel_on_a_server_that_is_gone_is_done(http: httpx.AsyncClient) -> None:
    gone = f"http://127.0.0.1:{free_port()}/v1"
    job = ProviderJob(protocol="local-diffusers", offering_id=WAN.id, remote_id="v", base_url=gone)
    a = adapter(http, gone)
    await a.cancel(job)  # nothing listens: its jobs went with the process
    with pytest.raises(ProviderUnavailable):
        await a.poll(job)  # while polling, a refused connection is an outage to ride out


async def test_a_loading_server_is_unavailable_not_a_mismatch(http: httpx.AsyncClient) -> None:
    # what a model server answers while its pipeline loads (docs/model-server-protocol.md)
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict[str, object]:
        return {"object": "list", "data": [{"id": "wan", "object": "model", "loaded": False}]}

    loading = LoopbackServer(app).start()
    try:
        with pytest.raises(ProviderUnavailable, match="still loading its pipeline") as info:
            await adapter(http, loading.url).submit(request(), WAN, idempotency_key="k-loading")
        assert info.value.retryable  # it may serve the model once loaded: never final
    finally:
        loading.stop()
