"""Hybrid routing in the sandbox, with the model-server emulator as the self-hosted route:
``auto:hybrid`` ranks APIs first and self-hosted last; an API failing falls back to the
self-hosted offering, billed once at the server's price; and when every route is down the job
waits in ``queued`` and completes when a route comes back before its deadline, or expires."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import sandbox_settings
from vidgate.catalog.loader import load_catalog
from vidgate.errors import NoRoute
from vidgate.gateway import Gateway
from vidgate.providers.local_fleet import ENV, SANDBOX, Fleet
from vidgate.sandbox.app import SandboxServer
from vidgate.sandbox.core import FaultConfig, FaultRule
from vidgate.settings import Credentials
from vidgate.types import AttemptState, Job, JobState, Resolution, VideoRequest

CATALOG = load_catalog()
SELF = "wan-2.1-self-hosted"
#: an API offering of the same shape (5 s, 480p, 16:9, text-to-video)
API = "wan-2.1-replicate"


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[SandboxServer]:
    Fleet.forget()
    server = SandboxServer(tmp_path / "sandbox", CATALOG, time_scale=0.004).start()
    yield server
    server.stop()


@pytest.fixture
def gw(tmp_path: Path, sb: SandboxServer) -> Iterator[Gateway]:
    # no catalog given: the gateway loads it and asks the configured server what it serves
    g = Gateway(
        # breakers open for half a second (not 30 s): a wait for one stays short
        sandbox_settings(tmp_path / "home", sb.url, breaker_open_s=0.5),
        credentials=Credentials({ENV: SANDBOX}, sandbox=True),
    )
    # the provider-wide breakers too (a 429 opens them, for as long as they are configured)
    g.health.provider_config = replace(g.health.provider_config, open_s=0.5)
    yield g
    g.close()


def request(deadline_s: float | None = None, **kw: object) -> VideoRequest:
    cons = {"deadline": datetime.now(UTC) + timedelta(seconds=deadline_s)} if deadline_s else {}
    return VideoRequest(
        prompt="a heron in the reeds",
        duration_s=5,
        resolution=Resolution.R480P,
        aspect_ratio="16:9",
        constraints=cons,
        **kw,
    )


async def run(gw: Gateway, job_id: str, seen: list[JobState] | None = None) -> Job:
    def progress(job: Job) -> None:
        if seen is not None:
            seen.append(job.state)

    try:
        return await gw.run(job_id, on_progress=progress)
    finally:
        await gw.aclose()


def test_the_served_offerings_become_routable(gw: Gateway) -> None:
    enabled = {
        o.id for o in gw.catalog.offerings.values() if o.provider == "self-hosted" and o.enabled
    }
    assert enabled == {
        "wan-2.2-self-hosted",
        SELF,
        "ltx-2-self-hosted",
        "cogvideox-5b-self-hosted",
        "cogvideox-2b-self-hosted",
        "hunyuanvideo-self-hosted",
    }
    wan26 = gw.catalog.offering("wan-2.6-self-hosted")
    assert not wan26.enabled
    assert "no diffusers pipeline" in wan26.adapter_options["unavailable"]
    assert "local-diffusers" in gw.catalog.offering(SELF).adapter_options["served_by"]
    # nothing measured yet: the seed's price stands
    assert gw.catalog.offering(SELF).price == CATALOG.offering(SELF).price


def test_hybrid_ranks_every_api_before_self_hosted(gw: Gateway) -> None:
    assert gw.catalog.aliases["auto:hybrid"].policy == "hybrid"
    req = request()
    cheapest = [c.offering.provider for c in gw.route(req, policy="cheapest").ranked]
    hybrid = [c.offering.provider for c in gw.route(req, policy="hybrid").ranked]
    # on price alone a self-hosted GPU beats some API: the policy is what moves it last
    first_self = cheapest.index("self-hosted")
    assert any(p != "self-hosted" for p in cheapest[first_self:])
    n_api = sum(p != "self-hosted" for p in hybrid)
    assert n_api > 0
    assert "self-hosted" in hybrid
    assert all(p != "self-hosted" for p in hybrid[:n_api])
    assert all(p == "self-hosted" for p in hybrid[n_api:])
    assert sorted(cheapest) == sorted(hybrid)  # the same feasible set, reordered


async def test_api_outage_falls_back_to_self_hosted_billed_once(
    gw: Gateway, sb: SandboxServer
) -> None:
    api = CATALOG.offering(API)
    sb.core.faults = FaultConfig(
        rules=[FaultRule(kind="unavailable", rate=1.0, protocol=api.protocol)]
    )
    job = gw.submit(request(), pinned=[API, SELF])
    done = await run(gw, job.id)
    assert done.state is JobState.SUCCEEDED, done.error
    first, second = done.attempts
    assert (first.offering_id, first.state) == (API, AttemptState.FAILED)
    assert (second.offering_id, second.state) == (SELF, AttemptState.SUCCEEDED)
    assert second.provider_job is not None
    assert second.provider_job["extra"]["adjustments"]  # 854 wide rounded to 848, kept
    # charged what the server reported, once
    video = sb.core.store.get(second.provider_job["remote_id"])
    assert video is not None
    reported = second.reported_cost or {}
    assert reported["field"] == "cost_usd"
    rows = gw.store.ledger(job_id=job.id)
    charged = [r for r in rows if r["kind"] == "charge"]
    assert len(charged) == 1
    assert charged[0]["amount_usd"] == pytest.approx(reported["usd"])
    assert done.cost_usd == pytest.approx(reported["usd"])
    # once it has measured a job, the server's stats price the offering
    Fleet.forget()
    g2 = Gateway(gw.settings, credentials=gw.credentials)
    try:
        price = g2.catalog.offering(SELF).price[0]
        [model] = [
            m
            for m in (await gw.client().get(f"{sb.url}/local-diffusers/v1/models")).json()["data"]
            if m["catalog_model"] == "wan-2.1"
        ]
        stats = model["stats"]
        assert stats["jobs"] == 1
        assert price.usd == pytest.approx(
            model["usd_per_hour"] / 3600 * stats["compute_s_per_video_s"], rel=1e-6
        )
        assert price.source.section == "model server /v1/models stats"
    finally:
        await gw.aclose()
        g2.close()


async def test_every_route_down_waits_then_completes(gw: Gateway, sb: SandboxServer) -> None:
    job = gw.submit(request(deadline_s=3600), pinned=[SELF])
    # the server's queue is full for the next moment: its 429 says to come back in 0.5 s
    now = datetime.now(UTC).timestamp()
    sb.core.faults = FaultConfig(
        rules=[FaultRule(kind="rate_limit", rate=1.0, retry_after_s=0.5, end=now + 1.0)]
    )
    seen: list[JobState] = []
    done = await run(gw, job.id, seen)
    assert done.state is JobState.SUCCEEDED, done.error
    assert JobState.QUEUED in seen  # it went back to queued rather than failing
    waits = (done.route or {})["waited"]
    assert waits
    assert all(SELF in w["down"] for w in waits)
    assert "queue is full" in waits[0]["down"][SELF]
    # the later of the server's Retry-After and the breaker that 429 opened
    assert waits[0]["seconds"] == pytest.approx(0.5, abs=0.05)
    # every refused create is a void attempt; one generation ran and one was charged
    states = [a.state for a in done.attempts]
    assert states[-1] is AttemptState.SUCCEEDED
    assert len(states) >= 2
    assert all(s is AttemptState.FAILED for s in states[:-1])
    assert all(a.error and a.error["code"] == "rate_limited" for a in done.attempts[:-1])
    kinds = [r["kind"] for r in gw.store.ledger(job_id=job.id)]
    assert kinds.count("charge") == 1
    assert sb.core.store.stats()["creates"] == 1


async def test_open_breaker_waits_for_half_open(gw: Gateway, sb: SandboxServer) -> None:
    job = gw.submit(request(deadline_s=3600), pinned=[API, SELF])
    # both routes go down after the job was routed: their breakers open for a moment
    gw.health.offering(API).force_open(3.0, "test outage")
    gw.health.offering(SELF).force_open(6.0, "test outage")
    done = await run(gw, job.id)
    assert done.state is JobState.SUCCEEDED, done.error
    [wait] = (done.route or {})["waited"]
    assert set(wait["down"]) == {API, SELF}
    assert "open" in wait["down"][API]
    # it waited for the first breaker to half-open, and took the route that came back
    assert 0 < wait["seconds"] <= 3.0  # the API's breaker, not the later one (6 s)
    assert [a.offering_id for a in done.attempts] == [API]


async def test_no_route_back_before_the_deadline_expires(gw: Gateway, sb: SandboxServer) -> None:
    job = gw.submit(request(deadline_s=3600), pinned=[SELF])
    # routing needed a deadline the catalog's latency meets; then time "passes" so that
    # little of it is left, and the route stays down past it
    [claim] = gw.store.claim("t", job_id=job.id)
    soon = datetime.now(UTC) + timedelta(seconds=1)
    cons = claim.job.request.constraints.model_copy(update={"deadline": soon})
    claim.job.request = claim.job.request.model_copy(update={"constraints": cons})
    gw.store.save(claim, release=True)
    gw.health.offering(SELF).force_open(600, "test outage")
    done = await run(gw, job.id)
    assert done.state is JobState.EXPIRED
    assert (done.error or {})["code"] == "deadline"
    [wait] = (done.route or {})["waited"]
    assert wait["seconds"] <= 1.0  # never past the deadline
    assert done.attempts == []
    assert sb.core.store.stats()["creates"] == 0


async def test_without_a_deadline_a_down_route_fails_as_before(gw: Gateway) -> None:
    job = gw.submit(request(), pinned=[SELF])
    gw.health.offering(SELF).force_open(600, "test outage")
    done = await run(gw, job.id)
    assert done.state is JobState.FAILED
    assert "waited" not in (done.route or {})


async def test_every_route_down_at_submit_is_queued_within_a_deadline(gw: Gateway) -> None:
    gw.router()  # loaded first (catalog, servers): the outage below starts now
    gw.health.offering(API).force_open(1.5, "test outage")
    gw.health.offering(SELF).force_open(1.5, "test outage")
    # no deadline, no bound to wait within: refused as before
    with pytest.raises(NoRoute):
        gw.submit(request(), pinned=[API, SELF])
    job = gw.submit(request(deadline_s=3600), pinned=[API, SELF])
    assert job.state is JobState.QUEUED
    done = await run(gw, job.id)
    assert done.state is JobState.SUCCEEDED, done.error
    [wait] = (done.route or {})["waited"]
    assert set(wait["down"]) == {API, SELF}
    assert done.attempts[-1].offering_id == API  # the first ranked, back first


async def test_a_job_lost_with_its_server_is_sent_once_more_to_another(tmp_path: Path) -> None:
    Fleet.forget()
    first = SandboxServer(tmp_path / "a", CATALOG, time_scale=0.02).start()
    second = SandboxServer(tmp_path / "b", CATALOG, time_scale=0.02).start()
    servers = f"{first.url}/local-diffusers,{second.url}/local-diffusers"
    g = Gateway(
        sandbox_settings(tmp_path / "home", second.url),
        credentials=Credentials({ENV: servers}, sandbox=True),
    )
    try:
        job = g.submit(request(), pinned=[SELF])  # no deadline: this is not waiting
        task = asyncio.create_task(g.run(job.id))
        for _ in range(300):
            if first.core.store.stats()["creates"]:
                break
            await asyncio.sleep(0.05)
        first.stop()  # the server goes, and its job with it
        done = await task
        assert done.state is JobState.SUCCEEDED, done.error
        gone, again = done.attempts
        assert (gone.offering_id, gone.state, gone.cost_usd) == (SELF, AttemptState.FAILED, 0.0)
        assert gone.error is not None
        assert gone.error["details"]["resend_safe"] is True
        assert again.offering_id == SELF
        assert again.provider_job is not None
        assert again.provider_job["base_url"] == f"{second.url}/local-diffusers/v1"
        charges = [r for r in g.store.ledger(job_id=job.id) if r["kind"] == "charge"]
        assert len(charges) == 1
    finally:
        await g.aclose()
        g.close()
        second.stop()
        first.stop()
