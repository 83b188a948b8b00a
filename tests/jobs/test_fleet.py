"""Fleet safety: the narrow ambiguity window, graceful hand-back, poison containment,
reservations that fit the job, and operators resolving parked jobs — against the sandbox over
real HTTP and real SQLite/PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import sandbox_settings
from tests.jobs.conftest import make_job
from vidgate.billing.accounts import Accounts
from vidgate.catalog.loader import Catalog, load_catalog
from vidgate.errors import AmbiguousSubmission, ProviderTimeout
from vidgate.gateway import Gateway
from vidgate.jobs import db
from vidgate.jobs.driver import SendPermit
from vidgate.jobs.reconcile import explain, reconcile
from vidgate.jobs.store import JobStore
from vidgate.jobs.worker import Worker, WorkerConfig
from vidgate.providers.base import ProviderJob
from vidgate.sandbox.app import SandboxServer
from vidgate.sandbox.core import FaultConfig, FaultRule
from vidgate.types import AttemptState, JobState, VideoRequest


@pytest.fixture
def real_sandbox(tmp_path: Path) -> Iterator[SandboxServer]:
    """The sandbox with the shipped catalog (providers with and without cancel)."""
    server = SandboxServer(tmp_path / "sandbox-real", load_catalog(), time_scale=0.004).start()
    yield server
    server.stop()


def _gw(tmp_path: Path, mini_catalog: Catalog, sandbox: SandboxServer, **kw: object) -> Gateway:
    return Gateway(sandbox_settings(tmp_path / "home", sandbox.url, **kw), catalog=mini_catalog)


async def _drain(gw: Gateway, **cfg: object) -> Worker:
    w = gw.worker(WorkerConfig(deliver_webhooks=False, **cfg))  # type: ignore[arg-type]
    try:
        await w.run(until_idle=True)
    finally:
        await gw.aclose()
    return w


# -- 1. the ambiguity window ------------------------------------------------------------


async def test_a_job_waiting_for_the_provider_slot_has_stored_no_intent(
    tmp_path, mini_catalog, sandbox
) -> None:
    """Another job holds the provider's only slot; ours waits for it. A crash then (the task
    dies) leaves no attempt behind: the next worker runs it with exactly one attempt."""
    gw = _gw(tmp_path, mini_catalog, sandbox)
    job = gw.submit(VideoRequest(prompt="waits", duration_s=4), pinned=["alpha-openai"])
    w = gw.worker(WorkerConfig(per_provider=1, deliver_webhooks=False))
    slot = w._slot("openai")
    await slot.acquire()  # a create of another job is on the wire
    task = asyncio.create_task(w.run())
    try:
        # ours is now queued on the slot (a semaphore offers no event for that)
        while not getattr(slot, "_waiters", None):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        stored = gw.store.get(job.id)
        assert stored.attempts == []
        assert stored.state is JobState.ROUTING
    finally:
        task.cancel()  # the worker dies while waiting
        await asyncio.gather(task, return_exceptions=True)
    stored = gw.store.get(job.id)
    assert stored.attempts == []
    assert not stored.state.terminal
    with gw.store.engine.begin() as c:  # hand the dead worker's lease back at once
        c.execute(sa.update(db.jobs).values(lease_owner=None, lease_until=None))
    await _drain(gw)
    done = gw.store.get(job.id)
    assert done.state is JobState.SUCCEEDED
    assert [a.n for a in done.attempts] == [1]
    assert sandbox.core.store.stats()["creates"] == 1
    gw.close()


async def test_an_intent_cannot_be_stored_without_a_held_send_permit(
    tmp_path, mini_catalog, sandbox
) -> None:
    gw = _gw(tmp_path, mini_catalog, sandbox)
    job = gw.submit(VideoRequest(prompt="guarded", duration_s=4), pinned=["alpha-openai"])
    w = gw.worker(WorkerConfig(deliver_webhooks=False))
    [claim] = gw.store.claim("t", job_id=job.id)
    offering = mini_catalog.offering("alpha-openai")
    with pytest.raises(RuntimeError, match="without a held send permit"):
        await w.driver._store_intent(claim, offering, SendPermit("openai", offering.id), None)
    other = SendPermit("compat", "beta-openai", live=True)
    with pytest.raises(RuntimeError, match="without a held send permit"):
        await w.driver._store_intent(claim, offering, other, None)
    async with w.driver._send_permit(offering) as permit:
        assert await w.driver._store_intent(claim, offering, permit, None) == 1
    assert not permit.live  # the proof dies with the slot
    assert gw.store.get(job.id).attempts[0].state is AttemptState.SUBMITTING
    await gw.aclose()
    gw.close()


# -- 5. poison ----------------------------------------------------------------------------


async def test_a_job_whose_driving_keeps_raising_fails_after_bounded_tries(
    tmp_path, mini_catalog, sandbox
) -> None:
    gw = _gw(tmp_path, mini_catalog, sandbox)
    good = gw.submit(VideoRequest(prompt="fine", duration_s=4), pinned=["alpha-openai"])
    # A route naming an offering without an estimate: the driver raises KeyError every time.
    bad = make_job("poison")
    bad.route = {"ranked": ["alpha-openai"], "estimates": {}}
    gw.store.create(bad)
    await _drain(gw, max_drive_errors=3)
    b = gw.store.get(bad.id)
    assert b.state is JobState.FAILED
    assert b.error
    assert b.error["code"] == "driver_error"
    assert "3 times" in b.error["message"]
    assert "KeyError" in b.error["message"]
    with gw.store.engine.begin() as c:
        n = c.execute(sa.select(db.jobs.c.drive_errors).where(db.jobs.c.id == bad.id)).scalar()
    assert n == 3
    assert gw.store.get(good.id).state is JobState.SUCCEEDED  # the worker kept working
    gw.close()


def test_an_unreadable_row_is_quarantined_not_fatal(store: JobStore) -> None:
    readable = make_job("ok")
    broken = make_job("broken")
    store.create(readable)
    store.create(broken)
    with store.engine.begin() as c:
        c.execute(sa.update(db.jobs).where(db.jobs.c.id == broken.id).values(doc='{"id": 1'))
    claims = store.claim("w1", limit=10)
    assert [c.job.id for c in claims] == [readable.id]
    [q] = store.quarantined()
    assert q["id"] == broken.id
    assert "unreadable job record" in q["quarantine"]
    assert store.claim("w2", limit=10) == []  # set aside for good, not retried


# -- 2. graceful hand-back ----------------------------------------------------------------


async def test_stop_hands_every_claim_back_without_parking(tmp_path, mini_catalog, sandbox):
    gw = _gw(tmp_path, mini_catalog, sandbox)
    ids = [gw.submit(VideoRequest(prompt=f"handed back {i}", duration_s=4)).id for i in range(12)]
    w = gw.worker(WorkerConfig(deliver_webhooks=False, lease_s=300, grace_s=5))
    task = asyncio.create_task(w.run())
    while not w.held:  # noqa: ASYNC110 - the worker offers no "claimed" event
        await asyncio.sleep(0.01)
    w.stop()
    await task
    with gw.store.engine.begin() as c:
        leased = c.execute(
            sa.select(sa.func.count()).where(
                db.jobs.c.lease_owner.is_not(None), db.jobs.c.terminal.is_(False)
            )
        ).scalar()
    assert leased == 0  # a 300 s lease, yet every unfinished job is free to claim now
    for i in ids:
        assert all(a.state is not AttemptState.SUBMITTING for a in gw.store.get(i).attempts)
    await _drain(gw)
    jobs = [gw.store.get(i) for i in ids]
    assert {j.state for j in jobs} == {JobState.SUCCEEDED}
    stats = sandbox.core.store.stats()
    assert stats["duplicate_submissions"] == 0
    assert stats["creates"] == 12
    gw.close()


# -- 12.6 reservations that fit the job ----------------------------------------------------


async def test_reserve_the_choice_and_top_up_for_a_dearer_fallback(
    tmp_path, mini_catalog, sandbox
) -> None:
    gw = _gw(tmp_path, mini_catalog, sandbox)
    gw.accounts.ensure_tenant("acme", budget_usd=1.0)
    sandbox.core.faults = FaultConfig(
        rules=[FaultRule(kind="unavailable", rate=1.0, model="beta-1")]
    )
    job = gw.submit(VideoRequest(prompt="top up", duration_s=4), tenant="acme")
    assert job.route
    assert job.route["ranked"] == ["beta-openai", "alpha-openai"]
    assert job.reserved_usd == pytest.approx(0.25)  # beta, the choice — not alpha's $0.40
    assert gw.accounts.tenant("acme")["reserved_usd"] == pytest.approx(0.25)
    await _drain(gw)
    done = gw.store.get(job.id)
    assert done.state is JobState.SUCCEEDED
    assert [a.offering_id for a in done.attempts] == ["beta-openai", "alpha-openai"]
    t = gw.accounts.tenant("acme")
    assert t["reserved_usd"] == pytest.approx(0.0)
    assert t["spent_usd"] == pytest.approx(0.40)
    gw.close()


async def test_fallback_stops_with_a_reason_when_the_budget_cannot_cover_it(
    tmp_path, mini_catalog, sandbox
) -> None:
    gw = _gw(tmp_path, mini_catalog, sandbox)
    gw.accounts.ensure_tenant("tight", budget_usd=0.30)
    sandbox.core.faults = FaultConfig(
        rules=[FaultRule(kind="unavailable", rate=1.0, model="beta-1")]
    )
    # $0.30 left: the $0.25 choice fits (the whole chain's $0.40 worst case would not)
    job = gw.submit(VideoRequest(prompt="tight", duration_s=4), tenant="tight")
    await _drain(gw)
    done = gw.store.get(job.id)
    assert done.state is JobState.FAILED
    assert [a.offering_id for a in done.attempts] == ["beta-openai"]
    assert done.error
    assert "budget cannot cover" in done.error["fallback_stopped"]
    assert any("budget cannot cover" in s["why"] for s in (done.route or {})["skipped"])
    t = gw.accounts.tenant("tight")
    assert (t["reserved_usd"], t["spent_usd"]) == (pytest.approx(0.0), pytest.approx(0.0))
    gw.close()


def test_concurrent_top_ups_never_overspend(store: JobStore) -> None:
    """Twenty jobs race to grow their holds by $0.25 against a $1.00 budget: exactly four
    win, on SQLite and PostgreSQL alike."""
    accounts = Accounts(store)
    accounts.ensure_tenant("race", budget_usd=1.0)
    for i in range(20):
        store.create(make_job(f"race {i}", tenant="race", reserved_usd=None))
    claims = store.claim("w", limit=20)
    assert len(claims) == 20
    wins: list[bool] = []
    lock = threading.Lock()
    barrier = threading.Barrier(20)

    def grow(c) -> None:  # type: ignore[no-untyped-def]
        c.job.reserved_usd = 0.0
        barrier.wait()
        ok = store.top_up(c, 0.25)
        with lock:
            wins.append(ok)

    threads = [threading.Thread(target=grow, args=(c,)) for c in claims]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins.count(True) == 4
    assert accounts.tenant("race")["reserved_usd"] == pytest.approx(1.0)
    held = [store.get(c.job.id).reserved_usd or 0.0 for c in claims]
    assert sum(held) == pytest.approx(1.0)  # each job's record agrees with the tenant's


# -- 6. operators resolve what stays parked -------------------------------------------------


async def _parked(gw: Gateway, prompt: str, tenant: str = "ops") -> str:
    """Park a job the way the driver does after an ambiguous create (our intent stored, the
    provider's answer lost)."""
    job = gw.submit(
        VideoRequest(prompt=prompt, duration_s=4), pinned=["alpha-openai"], tenant=tenant
    )
    w = gw.worker(WorkerConfig(deliver_webhooks=False))
    [claim] = gw.store.claim("op-test", job_id=job.id)
    offering = gw.catalog.offering("alpha-openai")
    async with w.driver._send_permit(offering) as permit:
        n = await w.driver._store_intent(claim, offering, permit, None)
    err = AmbiguousSubmission("the create's answer was lost", provider="openai")
    row = w.driver._end_attempt(claim.job, n - 1, AttemptState.AMBIGUOUS, err=err)
    await w.driver._park(claim, err, row)
    return job.id


async def test_reconcile_adopt_resubmit_abandon_keep_the_money_right(
    tmp_path, mini_catalog, sandbox
) -> None:
    gw = _gw(tmp_path, mini_catalog, sandbox)
    gw.accounts.ensure_tenant("ops", budget_usd=5.0)
    adopt_id = await _parked(gw, "adopt me")
    resubmit_id = await _parked(gw, "resubmit me")
    abandon_id = await _parked(gw, "abandon me")
    t = gw.accounts.tenant("ops")
    assert t["reserved_usd"] == pytest.approx(1.20)  # each parked job keeps its $0.40 hold
    [spend] = gw.accounts.spend("ops")
    assert spend["pending_usd"] == pytest.approx(1.20)  # and counts in spend until resolved
    assert spend["spent_usd"] == pytest.approx(1.20)
    assert [r["kind"] for r in gw.store.ledger(job_id=adopt_id)] == ["pending"]
    p = explain(gw.store.get(adopt_id), gw.catalog)
    assert p.provider == "openai"
    assert "--adopt" in p.check
    assert p.pending_usd == pytest.approx(0.40)

    # The operator finds the remote job in the provider's console (made here for real).
    adapter = gw.for_offering(gw.catalog.offering("alpha-openai"))
    remote = await adapter.submit(
        gw.store.get(adopt_id).request, gw.catalog.offering("alpha-openai"), idempotency_key="x"
    )
    reconcile(
        gw.store, gw.catalog, gw.for_offering, adopt_id, "adopt", provider_job_id=remote.remote_id
    )
    reconcile(gw.store, gw.catalog, gw.for_offering, resubmit_id, "resubmit")
    reconcile(gw.store, gw.catalog, gw.for_offering, abandon_id, "abandon")
    await _drain(gw)

    adopted = gw.store.get(adopt_id)
    assert adopted.state is JobState.SUCCEEDED
    assert [(r["attempt_n"], r["kind"]) for r in gw.store.ledger(job_id=adopt_id)] == [
        (1, "charge")
    ]
    resent = gw.store.get(resubmit_id)
    assert resent.state is JobState.SUCCEEDED
    assert [(r["attempt_n"], r["kind"]) for r in gw.store.ledger(job_id=resubmit_id)] == [
        (1, "void"),
        (2, "charge"),
    ]
    gone = gw.store.get(abandon_id)
    assert gone.state is JobState.FAILED
    assert gone.error
    assert gone.error["code"] == "abandoned"
    assert [r["kind"] for r in gw.store.ledger(job_id=abandon_id)] == ["charge"]
    t = gw.accounts.tenant("ops")
    assert t["reserved_usd"] == pytest.approx(0.0)
    assert t["spent_usd"] == pytest.approx(1.20)  # three clips' worth, each booked once
    [spend] = gw.accounts.spend("ops")
    assert spend["pending_usd"] == pytest.approx(0.0)
    assert spend["spent_usd"] == pytest.approx(1.20)
    charged = sum(r["amount_usd"] for r in gw.store.ledger(tenant="ops") if r["kind"] == "charge")
    assert charged == pytest.approx(1.20)
    with pytest.raises(Exception, match="not needs_reconciliation"):
        reconcile(gw.store, gw.catalog, gw.for_offering, abandon_id, "abandon")
    assert sandbox.core.store.stats()["creates"] == 2  # the adopted one and the resent one
    gw.close()


# -- 4. an abandoned attempt is never a free second job -----------------------------------


async def _submitted(gw: Gateway, offering_id: str, prompt: str):  # type: ignore[no-untyped-def]
    job = gw.submit(
        VideoRequest(prompt=prompt, duration_s=5, resolution="720p"), pinned=[offering_id]
    )
    w = gw.worker(WorkerConfig(deliver_webhooks=False))
    [claim] = gw.store.claim("stall-test", job_id=job.id)
    assert await w.driver._submit(claim, gw.catalog.offering(offering_id), None) is None
    a = claim.job.attempts[-1]
    pj = ProviderJob.model_validate(a.provider_job)
    return w.driver, claim, pj, gw.for_job(pj)


async def test_a_stalled_attempt_is_cancelled_where_the_provider_can(
    tmp_path, real_sandbox
) -> None:
    gw = Gateway(sandbox_settings(tmp_path / "h", real_sandbox.url))
    driver, claim, pj, adapter = await _submitted(gw, "wan-2.1-replicate", "stalls, cancelled")
    assert adapter.supports_cancel
    stall = ProviderTimeout("no progress within 1s")
    assert await driver._give_up(claim, 0, adapter, pj, stall) == (False, stall)
    a = claim.job.attempts[0]
    assert a.state is AttemptState.FAILED
    assert [(r["kind"], r["amount_usd"]) for r in gw.store.ledger(job_id=claim.job.id)] == [
        ("void", 0.0)
    ]
    assert real_sandbox.core.store.get(pj.remote_id).canceled_at is not None
    await gw.aclose()
    gw.close()


async def test_a_stalled_attempt_that_cannot_be_cancelled_is_followed_and_billed(
    tmp_path, real_sandbox
) -> None:
    gw = Gateway(sandbox_settings(tmp_path / "h", real_sandbox.url))
    driver, claim, pj, adapter = await _submitted(gw, "kling-3.0-kling", "stalls, followed")
    assert not adapter.supports_cancel
    driver.fallback_on_stall = False  # the policy says wait: nothing is given up
    assert await driver._give_up(claim, 0, adapter, pj, ProviderTimeout("slow")) is None
    assert claim.job.attempts[0].state is AttemptState.SUBMITTED
    driver.fallback_on_stall = True  # the policy says move on: abandoned, booked pending
    assert await driver._give_up(claim, 0, adapter, pj, ProviderTimeout("slow")) is not None
    a = claim.job.attempts[0]
    assert a.state is AttemptState.ABANDONED
    assert claim.job.state is JobState.ROUTING
    assert [r["kind"] for r in gw.store.ledger(job_id=claim.job.id)] == ["pending"]
    for _ in range(400):  # the remote job runs on; the driver follows it to its end
        await driver._trail(claim)
        if a.cost_usd is not None:
            break
        await asyncio.sleep(0.05)
    rows = gw.store.ledger(job_id=claim.job.id)
    # one remote job ran and succeeded: one row, now a charge at its price
    assert [(r["attempt_n"], r["kind"]) for r in rows] == [(1, "charge")]
    assert rows[0]["amount_usd"] == pytest.approx(a.estimated_cost_usd)
    assert real_sandbox.core.store.stats()["creates"] == 1
    await gw.aclose()
    gw.close()
