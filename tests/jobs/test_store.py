"""The job-store conformance suite: every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import multiprocessing as mp
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tests.jobs.conftest import make_job
from vidgate.jobs import db
from vidgate.jobs.store import (
    IdempotencyConflict,
    JobStore,
    LedgerEntry,
    OutboxEvent,
    StaleLease,
)
from vidgate.types import JobState


def test_migrations_match_the_tables_and_rerun_cleanly(store: JobStore) -> None:
    db.upgrade(store.engine)  # a second upgrade is a no-op
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), db.metadata)
    assert diff == []


def test_create_get_list_counts(store: JobStore) -> None:
    a, b = make_job("a"), make_job("b", tenant="other")
    store.create(a)
    store.create(b)
    assert store.get(a.id) == a
    assert [j.id for j in store.list(tenant="default")] == [a.id]
    assert store.counts() == {"queued": 2}
    with pytest.raises(Exception, match="no job"):
        store.get(a.id, tenant="other")  # another tenant's id is simply not there


def test_idempotency_key_returns_the_same_job(store: JobStore) -> None:
    first, created = store.create(make_job("same"), idempotency_key="k1")
    assert created
    again, created = store.create(make_job("same"), idempotency_key="k1")
    assert not created
    assert again.id == first.id
    with pytest.raises(IdempotencyConflict, match="different request"):
        store.create(make_job("different"), idempotency_key="k1")
    # keys are scoped per tenant
    other, created = store.create(make_job("same", tenant="t2"), idempotency_key="k1")
    assert created
    assert other.id != first.id


def test_claim_is_exclusive_and_fenced(store: JobStore) -> None:
    job = make_job()
    store.create(job)
    [claim] = store.claim("w1", lease_s=30)
    assert claim.fence == 1
    assert claim.job.state is JobState.ROUTING
    assert store.claim("w2", lease_s=30) == []  # leased: nobody else gets it
    claim.job.state = JobState.SUBMITTING
    store.save(claim)
    assert store.get(job.id).state is JobState.SUBMITTING


def test_stale_worker_writes_are_rejected(store: JobStore) -> None:
    job = make_job()
    store.create(job)
    [old] = store.claim("w1", lease_s=0.2)
    time.sleep(0.3)  # the lease lapses (w1 "crashed")
    [new] = store.claim("w2", lease_s=30)
    assert new.fence == old.fence + 1
    old.job.state = JobState.FAILED
    with pytest.raises(StaleLease):
        store.save(old)
    new.job.state = JobState.RUNNING
    store.save(new)
    assert store.get(job.id).state is JobState.RUNNING


def test_renew_extends_only_leases_still_held(store: JobStore) -> None:
    a, b = make_job("a"), make_job("b")
    store.create(a)
    store.create(b)
    claims = {c.job.id: c for c in store.claim("w1", lease_s=0.3)}
    held = store.renew("w1", {a.id: claims[a.id].fence, b.id: 99}, lease_s=30)
    assert set(held) == {a.id}  # a wrong fence is not ours any more
    time.sleep(0.4)
    reclaimed = store.claim("w2", lease_s=30)
    assert [c.job.id for c in reclaimed] == [b.id]  # a kept its renewed lease


def test_save_is_atomic_with_outbox_and_ledger(store: JobStore) -> None:
    job = make_job()
    store.create(job)
    [claim] = store.claim("w1")
    claim.job.state = JobState.RUNNING
    store.save(
        claim,
        ledger=[LedgerEntry(1, "o", 0.5)],
        events=[
            OutboxEvent(url="https://example.com/h", event_type="job.running", payload={"a": 1})
        ],
    )
    assert [r["amount_usd"] for r in store.ledger(job_id=job.id)] == [0.5]
    # A second row for the same attempt violates the ledger's uniqueness: the whole
    # transaction (state change, event, row) must roll back together.
    claim.job.state = JobState.SUCCEEDED
    with pytest.raises(sa.exc.IntegrityError):
        store.save(
            claim,
            ledger=[LedgerEntry(1, "o", 0.5)],
            events=[
                OutboxEvent(url="https://example.com/h", event_type="job.succeeded", payload={})
            ],
        )
    assert store.get(job.id).state is JobState.RUNNING
    assert [e["event_type"] for e in store.outbox(job.id)] == ["job.running"]
    assert len(store.ledger(job_id=job.id)) == 1


def test_terminal_jobs_release_and_are_never_claimed(store: JobStore) -> None:
    job = make_job()
    store.create(job)
    [claim] = store.claim("w1")
    claim.job.state = JobState.SUCCEEDED
    store.save(claim)
    time.sleep(0.01)
    assert store.claim("w2") == []
    assert store.claim("w2", job_id=job.id) == []


def test_future_jobs_wait_and_cancel_and_hints_reach_the_holder(store: JobStore) -> None:
    job = make_job()
    store.create(job)
    [claim] = store.claim("w1", lease_s=30)
    store.save(claim, next_run_at=datetime.now(UTC) + timedelta(hours=1), release=True)
    assert store.claim("w2") == []  # not due yet
    [again] = store.claim("w2", job_id=job.id)  # but a named claim takes it
    store.request_cancel(job.id)
    assert store.hint_poll(job.id)
    flags = store.renew("w2", {job.id: again.fence})[job.id]
    assert flags["cancel_requested"] is True
    assert flags["poll_hint_at"] is not None


def test_outbox_claim_result_and_endpoint_disable(store: JobStore) -> None:
    job = make_job()
    store.create(job)
    eid = store.add_endpoint("default", "https://example.com/hook", "whsec_AAAA")
    [claim] = store.claim("w1")
    claim.job.state = JobState.SUCCEEDED
    store.save(
        claim,
        events=[
            OutboxEvent(
                url="https://example.com/hook",
                event_type="job.succeeded",
                payload={},
                endpoint_id=eid,
            ),
            OutboxEvent(url="https://example.com/other", event_type="job.succeeded", payload={}),
        ],
    )
    items = store.claim_outbox("d1")
    assert len(items) == 2
    assert store.claim_outbox("d2") == []  # leased
    store.outbox_result(items[1].id, state="delivered", status=200)
    store.disable_endpoint(eid, "410")
    states = {e["id"]: e["state"] for e in store.outbox(job.id)}
    assert states == {items[0].id: "disabled", items[1].id: "delivered"}
    assert store.endpoints("default") == []


def test_workers_heartbeat(store: JobStore) -> None:
    store.worker_heartbeat("w1", "host", 1, 10)
    assert [w["id"] for w in store.live_workers()] == ["w1"]
    store.worker_gone("w1")
    assert store.live_workers() == []


def _claimer(url: str, name: str, out: mp.Queue[list[str]], start: Any) -> None:
    s = JobStore(url, migrate=False)
    got: list[str] = []
    start.wait(timeout=60)  # all four start claiming at the same moment
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        claims = s.claim(name, limit=7, lease_s=600)
        if not claims:
            break
        got.extend(c.job.id for c in claims)
        # A real worker does work between claims; without this pause SQLite's writer lock
        # can let one process win every race, and the test would prove nothing about races.
        time.sleep(0.005)
    s.close()
    out.put(got)


def test_four_workers_never_claim_the_same_job(store: JobStore, store_url: str) -> None:
    ids = set()
    for i in range(300):
        job = make_job(f"p{i}")
        store.create(job)
        ids.add(job.id)
    ctx = mp.get_context("spawn")
    out: mp.Queue[list[str]] = ctx.Queue()
    start = ctx.Barrier(4)
    procs = [ctx.Process(target=_claimer, args=(store_url, f"w{i}", out, start)) for i in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    claimed = [j for r in results for j in r]
    assert len(claimed) == len(set(claimed)), "a job was claimed twice"
    assert set(claimed) == ids
    assert sum(1 for r in results if r) >= 2, "the claims were not actually concurrent"
