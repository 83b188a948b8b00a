"""Budgets hold under concurrency: 100 simultaneous submits against a budget that covers
exactly 10 jobs accept exactly 10, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.server.conftest import Server, ServerFactory, Tenant, drain, pg_schema

REQUEST = {"prompt": "a lantern festival over a river", "duration_s": 5}
N_REQUESTS = 100
FITS = 10


@pytest.fixture(params=["sqlite", "postgresql"])
def api_only(request: pytest.FixtureRequest, make_server: ServerFactory) -> Iterator[Server]:
    """A service without a worker (jobs wait, so holds can be observed), on either store."""
    if request.param == "sqlite":
        yield make_server(run_worker=False)
        return
    with pg_schema() as url:
        srv = make_server(run_worker=False, database_url=url)
        try:
            yield srv
        finally:
            srv.stop()  # before the schema is dropped


def reservation(server: Server, tenant: Tenant) -> tuple[str, float]:
    """The offering the router picks and what one job holds against the budget there."""
    with server.client(tenant) as c:
        plan = c.post("/v1/route", json={"request": REQUEST}).json()
        offering = plan["chosen"]["offering"]
        pinned = c.post("/v1/route", json={"request": REQUEST, "offerings": [offering]}).json()
    # a job holds the worst case over the offerings it may fall back to
    return offering, max(r["estimated_cost_usd"] for r in pinned["ranked"])


async def test_concurrent_submits_never_overspend(api_only: Server) -> None:
    server = api_only
    tenant = server.tenant("racer")
    offering, hold = reservation(server, tenant)
    assert hold > 0
    budget = FITS * hold
    server.gateway.accounts.ensure_tenant(tenant.name, budget_usd=budget)

    body = {"request": REQUEST, "offerings": [offering]}
    limits = httpx.Limits(max_connections=N_REQUESTS)
    async with httpx.AsyncClient(
        base_url=server.url, headers=tenant.headers, limits=limits, timeout=60
    ) as c:
        answers = await asyncio.gather(*(c.post("/v1/jobs", json=body) for _ in range(N_REQUESTS)))

    counts = Counter(r.status_code for r in answers)
    assert counts == {202: FITS, 402: N_REQUESTS - FITS}, counts
    accepted = [r.json() for r in answers if r.status_code == 202]
    assert all(j["reserved_usd"] == pytest.approx(hold) for j in accepted)
    for refused in (r for r in answers if r.status_code == 402):
        assert refused.headers["content-type"] == "application/problem+json"
        problem = refused.json()
        assert problem["status"] == 402
        assert problem["code"] == "budget_exceeded"
        assert (
            f"tenant {tenant.name} has $0.00 of its ${budget:.2f} budget left" in problem["detail"]
        )
        assert f"this job may cost up to ${hold:.2f}" in problem["detail"]

    with server.client(tenant) as c:
        spend = c.get("/v1/spend").json()
    assert spend["reserved_usd"] == pytest.approx(FITS * hold)
    assert spend["spent_usd"] == 0
    assert spend["budget_usd"] == pytest.approx(budget)

    await drain(server.gateway.settings)

    jobs = [server.gateway.store.get(j["id"], tenant.name) for j in accepted]
    assert {j.state.value for j in jobs} == {"succeeded"}
    costs = [j.cost_usd or 0.0 for j in jobs]
    with server.client(tenant) as c:
        spend = c.get("/v1/spend").json()
    assert spend["reserved_usd"] == pytest.approx(0, abs=1e-9)
    assert spend["spent_usd"] == pytest.approx(sum(costs))
    [(oid, entry)] = spend["by_offering"].items()  # beside usd/clips: reported vs estimated
    assert oid == offering
    assert (entry["usd"], entry["clips"]) == (pytest.approx(sum(costs)), FITS)
    row = server.gateway.accounts.tenant(tenant.name)
    assert row is not None
    assert row["spent_usd"] == pytest.approx(sum(costs))
    assert row["spent_usd"] <= budget + 1e-9
    ledger = server.gateway.store.ledger(tenant=tenant.name)
    assert len([e for e in ledger if e["kind"] == "charge"]) == FITS


def test_budget_refusal_on_the_openai_route(server: Server) -> None:
    tenant = server.tenant("poor", budget_usd=0.001)
    client = openai.OpenAI(base_url=server.api, api_key=tenant.key, max_retries=0)
    with pytest.raises(openai.APIStatusError) as e:
        client.videos.create(prompt="anything at all", model="auto")
    assert e.value.status_code == 402
    assert e.value.code == "budget_exceeded"
    assert e.value.type == "insufficient_quota"
    assert "budget" in e.value.message
    assert client.videos.list().data == []  # nothing was queued


async def test_job_cap_holds_under_concurrent_submits(make_server: ServerFactory) -> None:
    """A tenant capped at 3 running jobs sends 30 submits at once: 3 are accepted."""
    server = make_server(run_worker=False)  # accepted jobs stay running (queued)
    tenant = server.tenant("capped", max_jobs=3)
    async with httpx.AsyncClient(base_url=server.url, headers=tenant.headers, timeout=60) as c:
        answers = await asyncio.gather(
            *(c.post("/v1/jobs", json={"request": REQUEST}) for _ in range(30))
        )
    counts = Counter(r.status_code for r in answers)
    assert counts == {202: 3, 429: 27}, counts
    refused = next(r for r in answers if r.status_code == 429)
    assert refused.headers["retry-after"]
    assert f"tenant {tenant.name} already has 3 jobs running" in refused.json()["detail"]
    assert server.gateway.accounts.running_jobs(tenant.name) == 3
