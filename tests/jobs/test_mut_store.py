"""The job store as the worker, the gateway and operators rely on it: claims, leases and
fences, what each write does to the tenant's money, the outbox and the ledger, and every
limit and boundary a caller can see. Every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.jobs.conftest import make_job
from vidgate.billing.accounts import Accounts
from vidgate.errors import NotFound
from vidgate.jobs import db
from vidgate.jobs.store import (
    IdempotencyConflict,
    JobStore,
    LedgerEntry,
    OutboxEvent,
    StaleLease,
    pending_hold,
    request_hash,
)
from vidgate.types import Attempt, AttemptState, Job, JobState, QualityGate, VideoRequest

NOW = datetime.now(UTC)


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[JobStore]:
    """Row locks are PostgreSQL's (SQLite has one writer at a time): these run there only."""
    s = JobStore(pg_url)
    yield s
    s.close()


def _attempt(
    n: int,
    state: AttemptState,
    estimate: float,
    cost: float | None = None,
    provider_job: dict[str, Any] | None = None,
) -> Attempt:
    return Attempt(
        n=n,
        offering_id=f"o{n}",
        state=state,
        idempotency_key=f"k{n}",
        started_at=datetime.now(UTC),
        estimated_cost_usd=estimate,
        cost_usd=cost,
        provider_job=provider_job,
    )


def _money(store: JobStore, tenant: str = "default") -> tuple[float, float]:
    row = Accounts(store).tenant(tenant)
    assert row is not None
    return round(row["reserved_usd"], 9), round(row["spent_usd"], 9)


def _funded(store: JobStore, reserved: float, *, budget: float | None = None) -> Job:
    """A job created the way the gateway does: its reservation held on its tenant first."""
    accounts = Accounts(store)
    accounts.ensure_tenant("default", budget_usd=budget)
    assert accounts.reserve("default", reserved)
    job = make_job(reserved_usd=reserved)
    store.create(job)
    return job


def _row(store: JobStore, job_id: str) -> Any:
    with store.engine.connect() as c:
        return c.execute(sa.select(db.jobs).where(db.jobs.c.id == job_id)).one()


# -- request fingerprints ---------------------------------------------------------------------


def test_a_hash_stored_before_the_quality_gate_existed_still_matches() -> None:
    req = VideoRequest(prompt="a fox")
    body = req.model_dump(mode="json")
    del body["quality_gate"]  # what a stored job's request looked like before the field
    before = hashlib.sha256(json.dumps([body, {}], sort_keys=True).encode()).hexdigest()
    assert request_hash(req) == before
    extra = {"policy": "cheapest", "pinned": None}
    old = hashlib.sha256(json.dumps([body, extra], sort_keys=True).encode()).hexdigest()
    assert request_hash(req, extra) == old


def test_the_fingerprint_tells_requests_apart_and_ignores_key_order() -> None:
    req = VideoRequest(prompt="a fox")
    gated = VideoRequest(prompt="a fox", quality_gate=QualityGate(min_score=5))
    assert request_hash(gated) != request_hash(req)
    other = VideoRequest(prompt="a fox", quality_gate=QualityGate(min_score=6))
    assert request_hash(gated) != request_hash(other)
    assert request_hash(req, None) == request_hash(req, {})
    assert request_hash(req, {"policy": "a"}) != request_hash(req, {"policy": "b"})
    assert request_hash(req, {"a": 1, "b": 2}) == request_hash(req, {"b": 2, "a": 1})
    # values JSON cannot hold (a deadline, say) still fingerprint, by their text
    at = datetime(2030, 1, 1, tzinfo=UTC)
    assert request_hash(req, {"at": at}) == request_hash(req, {"at": str(at)})


# -- create -----------------------------------------------------------------------------------


def test_the_error_codes_callers_see() -> None:
    assert (IdempotencyConflict.code, IdempotencyConflict.http_status) == (
        "idempotency_conflict",
        422,
    )
    assert StaleLease.code == "stale_lease"


def test_the_same_job_id_twice_without_a_key_is_refused(store: JobStore) -> None:
    job = make_job()
    assert store.create(job) == (job, True)
    with pytest.raises(sa.exc.IntegrityError):
        store.create(job)


def test_a_given_fingerprint_decides_what_counts_as_the_same_request(store: JobStore) -> None:
    first, created = store.create(make_job("one"), idempotency_key="k", fingerprint="fp1")
    assert created
    # a different prompt, but the caller's fingerprint says it is the same request
    again, created = store.create(make_job("two"), idempotency_key="k", fingerprint="fp1")
    assert (again.id, again.request.prompt, created) == (first.id, "one", False)
    with pytest.raises(IdempotencyConflict, match="'k' was already used"):
        store.create(make_job("one"), idempotency_key="k", fingerprint="fp2")


def test_a_new_job_is_due_at_once_unfenced_and_not_cancelled(store: JobStore) -> None:
    job = make_job()
    store.create(job)
    [claim] = store.claim("w1")
    assert (claim.fence, claim.owner, claim.cancel_requested) == (1, "w1", False)
    assert claim.job.id == job.id


def test_a_job_created_for_later_is_not_due_before_then(store: JobStore) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    job = make_job().model_copy(update={"created_at": later, "updated_at": later})
    store.create(job)
    assert store.claim("w1") == []
    assert [c.job.id for c in store.claim("w1", job_id=job.id)] == [job.id]


def test_a_job_stored_finished_is_never_claimed(store: JobStore) -> None:
    job = make_job().model_copy(update={"state": JobState.FAILED})
    store.create(job)
    assert store.claim("w1") == []
    assert store.claim("w1", job_id=job.id) == []


# -- reading ----------------------------------------------------------------------------------


def test_get_names_the_missing_job(store: JobStore) -> None:
    with pytest.raises(NotFound, match="no job 'job_nope'"):
        store.get("job_nope")
    job = make_job(tenant="t1")
    store.create(job)
    assert store.get(job.id, tenant="t1").id == job.id


def _aged(store: JobStore, prompts: list[str], tenant: str = "default") -> list[Job]:
    """Jobs created a minute apart, oldest first (inserted in another order)."""
    base = datetime.now(UTC) - timedelta(hours=1)
    jobs = []
    for i, p in enumerate(prompts):
        at = base + timedelta(minutes=i)
        jobs.append(
            make_job(p, tenant=tenant).model_copy(update={"created_at": at, "updated_at": at})
        )
    for j in reversed(jobs):
        store.create(j)
    return jobs


def test_list_is_newest_first_filtered_limited_and_paged(store: JobStore) -> None:
    a, b, c = _aged(store, ["a", "b", "c"])
    (other,) = _aged(store, ["o"], tenant="t2")
    assert [j.id for j in store.list(tenant="default")] == [c.id, b.id, a.id]
    assert [j.id for j in store.list(tenant="default", limit=2)] == [c.id, b.id]
    # paging: strictly older than the last one seen
    assert [j.id for j in store.list(tenant="default", before=b.created_at)] == [a.id]
    assert {j.id for j in store.list()} == {a.id, b.id, c.id, other.id}
    [_claim] = store.claim("w1", job_id=b.id)
    assert [j.id for j in store.list(state=JobState.ROUTING)] == [b.id]
    assert [j.id for j in store.list(tenant="default", state=JobState.QUEUED)] == [c.id, a.id]


def test_list_shows_fifty_jobs_unless_told_otherwise(store: JobStore) -> None:
    _aged(store, [f"p{i}" for i in range(51)])
    assert len(store.list()) == 50
    assert len(store.list(limit=51)) == 51


def test_counts_are_per_state_and_per_tenant(store: JobStore) -> None:
    _aged(store, ["a", "b"])
    _aged(store, ["c"], tenant="t2")
    store.claim("w1", limit=1)  # the oldest (a default job) is picked up
    assert store.counts() == {"queued": 2, "routing": 1}
    assert store.counts("t2") == {"queued": 1}
    assert store.counts("nobody") == {}


# -- claims, leases and fences ------------------------------------------------------------------


def test_claims_take_the_longest_due_first_up_to_the_limit(store: JobStore) -> None:
    jobs = _aged(store, [f"p{i}" for i in range(12)])
    [first] = store.claim("w1", limit=1)
    assert first.job.id == jobs[0].id
    batch = store.claim("w1")  # ten at a time unless told otherwise
    assert [c.job.id for c in batch] == [j.id for j in jobs[1:11]]
    assert [c.job.id for c in store.claim("w1")] == [jobs[11].id]


def test_a_named_claim_takes_only_that_job(store: JobStore) -> None:
    a, b = _aged(store, ["a", "b"])
    assert [c.job.id for c in store.claim("w1", job_id=b.id)] == [b.id]
    assert store.claim("w2", job_id=b.id) == []  # leased
    assert [c.job.id for c in store.claim("w2")] == [a.id]


def test_a_claim_picks_a_queued_job_up_into_routing_and_keeps_other_states(
    store: JobStore,
) -> None:
    job = make_job()
    store.create(job)
    [claim] = store.claim("w1")
    assert store.get(job.id).state is JobState.ROUTING  # the stored record says so too
    claim.job.state = JobState.RUNNING
    store.save(claim, release=True)
    [again] = store.claim("w2")
    assert again.job.state is JobState.RUNNING
    assert again.fence == 2
    assert store.get(job.id).state is JobState.RUNNING


def test_a_cancel_asked_for_before_the_claim_reaches_the_claimer(store: JobStore) -> None:
    job = make_job()
    store.create(job)
    store.request_cancel(job.id)
    [claim] = store.claim("w1")
    assert claim.cancel_requested is True


def test_a_lease_holds_for_its_length_then_lapses(store: JobStore) -> None:
    job = make_job()
    store.create(job)
    [old] = store.claim("w1", lease_s=2.0)  # margins for a loaded machine
    time.sleep(0.2)
    assert store.claim("w2") == []  # still held
    time.sleep(2.0)
    [new] = store.claim("w2")
    assert new.fence == old.fence + 1


def test_a_default_lease_outlives_a_short_one(store: JobStore) -> None:
    _a, b = _aged(store, ["a", "b"])
    store.claim("w1", limit=1)  # a: the default lease
    store.claim("w1", limit=1, lease_s=0.2)  # b: a short one
    time.sleep(0.3)
    assert [c.job.id for c in store.claim("w2")] == [b.id]


def _unreadable(store: JobStore, job_id: str, doc: str) -> None:
    with store.engine.begin() as c:
        c.execute(sa.update(db.jobs).where(db.jobs.c.id == job_id).values(doc=doc))


def test_an_unreadable_row_is_set_aside_and_the_claim_goes_on(store: JobStore) -> None:
    bad, good = _aged(store, ["bad", "good"])
    store.claim("w0", job_id=bad.id, lease_s=0.1)  # its last worker's lease lapsed
    time.sleep(0.2)
    # a record with many broken attempts: its reason is long
    _unreadable(store, bad.id, json.dumps({"id": bad.id, "attempts": [{}] * 200}))
    claims = store.claim("w1")
    assert [c.job.id for c in claims] == [good.id]
    [q] = store.quarantined()
    assert (q["id"], q["tenant"], q["state"]) == (bad.id, "default", "routing")
    assert q["quarantine"].startswith("unreadable job record: ")
    assert len(q["quarantine"]) == len("unreadable job record: ") + 1500
    row = _row(store, bad.id)
    assert (row.terminal, row.lease_owner, row.lease_until, row.fence) == (True, None, None, 2)
    assert store.claim("w2", job_id=bad.id) == []  # never retried


def test_only_set_aside_rows_are_listed_as_quarantined(store: JobStore) -> None:
    store.create(make_job())
    assert store.quarantined() == []


def test_renewing_reports_cancel_and_hint_and_skips_what_is_not_ours(store: JobStore) -> None:
    a, b, c = _aged(store, ["a", "b", "c"])
    claims = {cl.job.id: cl for cl in store.claim("w1")}
    fences = {k: v.fence for k, v in claims.items()}
    held = store.renew("w1", fences)
    assert held == {
        a.id: {"cancel_requested": False, "poll_hint_at": None},
        b.id: {"cancel_requested": False, "poll_hint_at": None},
        c.id: {"cancel_requested": False, "poll_hint_at": None},
    }
    before = datetime.now(UTC)
    store.hint_poll(b.id)
    flags = store.renew("w1", fences)[b.id]
    assert flags["cancel_requested"] is False
    assert before - timedelta(seconds=1) <= flags["poll_hint_at"] <= datetime.now(UTC)
    assert store.renew("w2", fences) == {}  # another worker's leases are not its to renew
    assert store.renew("w1", {}) == {}
    claims[c.id].job.state = JobState.SUCCEEDED
    store.save(claims[c.id])
    assert set(store.renew("w1", fences)) == {a.id, b.id}  # a finished job is not held


def test_renewing_never_extends_another_workers_lease(store: JobStore) -> None:
    job = make_job()
    store.create(job)
    [old] = store.claim("w1", lease_s=0.2)
    time.sleep(0.3)
    [new] = store.claim("w2", lease_s=0.6)
    assert store.renew("w1", {job.id: old.fence}, lease_s=60) == {}
    assert store.renew("w1", {job.id: new.fence}, lease_s=60) == {}  # right fence, not ours
    time.sleep(0.7)
    assert [c.fence for c in store.claim("w3")] == [new.fence + 1]


def test_renewing_holds_every_lease_of_a_large_worker(store: JobStore) -> None:
    ids = []
    for i in range(1001):  # past two batches of 500
        job = make_job(f"p{i}")
        store.create(job)
        ids.append(job.id)
    claims = store.claim("w1", limit=2000, lease_s=0.5)
    assert len(claims) == 1001
    held = store.renew("w1", {c.job.id: c.fence for c in claims}, lease_s=60)
    assert set(held) == set(ids)
    time.sleep(0.6)
    assert store.claim("w2", limit=2000) == []  # every one renewed, none lapsed


def test_a_worker_may_renew_some_of_its_leases(store: JobStore) -> None:
    a, b = _aged(store, ["a", "b"])
    claims = {c.job.id: c for c in store.claim("w1", lease_s=0.3)}
    assert set(store.renew("w1", {a.id: claims[a.id].fence}, lease_s=60)) == {a.id}
    time.sleep(0.4)
    assert [c.job.id for c in store.claim("w2")] == [b.id]  # b was not renewed


def test_a_renewed_lease_lasts_the_default_thirty_seconds(store: JobStore) -> None:
    job = make_job()
    store.create(job)
    [claim] = store.claim("w1", lease_s=0.2)
    store.renew("w1", {job.id: claim.fence})
    time.sleep(0.3)
    assert store.claim("w2") == []


def test_claims_skip_rows_another_transaction_holds(pg_store: JobStore) -> None:
    """On PostgreSQL a worker never waits on rows another worker is claiming."""
    store = pg_store
    a, b = _aged(store, ["a", "b"])
    got: list[list[str]] = []
    with store.engine.connect() as other:
        tx = other.begin()
        other.execute(sa.select(db.jobs.c.id).where(db.jobs.c.id == a.id).with_for_update())
        t = threading.Thread(target=lambda: got.append([c.job.id for c in store.claim("w1")]))
        t.start()
        t.join(timeout=10)
        finished = not t.is_alive()
        tx.rollback()
    t.join(timeout=30)
    assert finished, "the claim waited on a row another transaction holds"
    assert got == [[b.id]]


# -- saving -----------------------------------------------------------------------------------


def test_a_save_stamps_the_job_and_bumps_its_row_version(store: JobStore) -> None:
    job = make_job()
    store.create(job)
    assert _row(store, job.id).version == 1
    [claim] = store.claim("w1")
    before = datetime.now(UTC)
    claim.job.state = JobState.RUNNING
    saved = store.save(claim)
    assert saved.updated_at >= before
    assert store.get(job.id).updated_at == saved.updated_at
    assert _row(store, job.id).version == 2


def test_a_save_without_release_keeps_the_lease(store: JobStore) -> None:
    job = make_job()
    store.create(job)
    [claim] = store.claim("w1", lease_s=30)
    claim.job.state = JobState.RUNNING
    store.save(claim)
    assert store.claim("w2", job_id=job.id) == []
    claim.job.progress = 0.5
    store.save(claim)  # the claim still writes
    assert store.get(job.id).progress == 0.5


def test_a_released_job_is_claimable_at_once_and_the_old_claim_is_void(store: JobStore) -> None:
    job = make_job()
    store.create(job)
    [claim] = store.claim("w1", lease_s=30)
    claim.job.state = JobState.RUNNING
    store.save(claim, release=True)
    with pytest.raises(StaleLease, match=f"job {job.id}: lease lost"):
        store.save(claim)
    assert [c.job.id for c in store.claim("w2")] == [job.id]


def test_a_finished_job_is_released_and_its_claim_void(store: JobStore) -> None:
    job = make_job()
    store.create(job)
    [claim] = store.claim("w1")
    claim.job.state = JobState.FAILED
    store.save(claim)
    row = _row(store, job.id)
    assert (row.terminal, row.lease_owner, row.lease_until) == (True, None, None)
    with pytest.raises(StaleLease):
        store.save(claim)


def test_an_earlier_claim_of_the_same_worker_cannot_write(store: JobStore) -> None:
    job = make_job()
    store.create(job)
    [old] = store.claim("w1", lease_s=0.2)
    time.sleep(0.3)
    [new] = store.claim("w1")  # the same worker takes it again: a new fence
    old.job.state = JobState.FAILED
    with pytest.raises(StaleLease):
        store.save(old)
    new.job.state = JobState.RUNNING
    store.save(new)
    assert store.get(job.id).state is JobState.RUNNING


def test_a_write_by_a_lease_owner_that_is_not_the_claimer_is_refused(store: JobStore) -> None:
    job = make_job()
    store.create(job)
    [claim] = store.claim("w1")
    claim.owner = "w2"  # same fence, another owner
    claim.job.state = JobState.RUNNING
    with pytest.raises(StaleLease):
        store.save(claim)
    assert store.get(job.id).state is JobState.ROUTING


def test_events_are_queued_for_delivery_at_once(store: JobStore) -> None:
    job = make_job(tenant="t1")
    store.create(job)
    [claim] = store.claim("w1")
    claim.job.state = JobState.RUNNING
    ev = OutboxEvent(
        url="https://example.com/h",
        event_type="job.running",
        payload={"at": datetime(2030, 1, 1, tzinfo=UTC)},
        endpoint_id="we_1",
    )
    assert ev.id.startswith("msg_")
    assert len(ev.id) == 36
    assert OutboxEvent(url="u", event_type="e", payload={}).id != ev.id
    store.save(claim, events=[ev])
    [item] = store.claim_outbox("d1")
    assert (item.id, item.job_id, item.tenant, item.endpoint_id) == (ev.id, job.id, "t1", "we_1")
    assert (item.url, item.event_type, item.attempts) == (ev.url, "job.running", 0)
    assert json.loads(item.payload) == {"at": "2030-01-01 00:00:00+00:00"}
    assert item.created_at.tzinfo is not None
    assert abs((item.created_at - datetime.now(UTC)).total_seconds()) < 5
    [row] = store.outbox(job.id)
    assert row["state"] == "pending"


def test_a_finished_job_books_its_cost_and_releases_its_hold(store: JobStore) -> None:
    job = _funded(store, 1.0)
    [claim] = store.claim("w1")
    claim.job.cost_usd = 0.25
    claim.job.state = JobState.SUCCEEDED
    saved = store.save(claim)
    assert saved.reserved_usd is None
    assert store.get(job.id).reserved_usd is None
    assert _money(store) == (0.0, 0.25)


def test_a_finished_job_without_a_cost_books_nothing(store: JobStore) -> None:
    _funded(store, 1.0)
    [claim] = store.claim("w1")
    claim.job.state = JobState.FAILED
    store.save(claim)
    assert _money(store) == (0.0, 0.0)


def test_a_running_job_keeps_its_hold_and_books_nothing(store: JobStore) -> None:
    job = _funded(store, 1.0)
    [claim] = store.claim("w1")
    claim.job.cost_usd = 0.25
    claim.job.state = JobState.RUNNING
    store.save(claim)
    assert _money(store) == (1.0, 0.0)
    assert store.get(job.id).reserved_usd == 1.0


def test_a_parked_job_keeps_what_its_pending_attempts_may_bill(store: JobStore) -> None:
    job = _funded(store, 1.0)
    [claim] = store.claim("w1")
    claim.job.attempts = [
        _attempt(1, AttemptState.FAILED, 0.5, cost=0.0),
        _attempt(2, AttemptState.AMBIGUOUS, 0.3),
    ]
    claim.job.cost_usd = 0.1
    claim.job.state = JobState.NEEDS_RECONCILIATION
    saved = store.save(claim)
    assert saved.reserved_usd == 0.3
    assert store.get(job.id).reserved_usd == 0.3
    assert _money(store) == (0.3, 0.1)


def test_a_pending_hold_never_exceeds_the_reservation(store: JobStore) -> None:
    _funded(store, 1.0)
    [claim] = store.claim("w1")
    claim.job.attempts = [_attempt(1, AttemptState.ABANDONED, 2.0)]
    claim.job.state = JobState.FAILED
    saved = store.save(claim)
    assert saved.reserved_usd == 1.0
    assert _money(store) == (1.0, 0.0)


def test_what_a_job_must_keep_held_for_its_pending_attempts() -> None:
    job = make_job()
    job.attempts = [
        _attempt(1, AttemptState.AMBIGUOUS, 0.1234567),
        _attempt(2, AttemptState.ABANDONED, 0.2),
        _attempt(3, AttemptState.ABANDONED, 5.0, cost=4.0),  # settled: no longer pending
        _attempt(4, AttemptState.FAILED, 7.0),
        _attempt(5, AttemptState.RUNNING, 9.0),
        _attempt(6, AttemptState.SUCCEEDED, 11.0, cost=11.0),
    ]
    assert pending_hold(job) == 0.323457  # to the micro-dollar
    assert pending_hold(make_job()) == 0


# -- top-ups ------------------------------------------------------------------------------------


def test_a_top_up_grows_the_hold_on_the_tenant_and_the_job(store: JobStore) -> None:
    job = _funded(store, 0.5, budget=1.0)
    [claim] = store.claim("w1")
    assert store.top_up(claim, 0.25) is True
    assert claim.job.reserved_usd == 0.75
    assert store.get(job.id).reserved_usd == 0.75
    assert _money(store) == (0.75, 0.0)
    assert store.top_up(claim, 0.25) is True  # exactly the budget: fits
    assert _money(store) == (1.0, 0.0)
    assert store.top_up(claim, 0.01) is False  # a cent over: nothing written
    assert claim.job.reserved_usd == 1.0
    assert store.get(job.id).reserved_usd == 1.0
    assert _money(store) == (1.0, 0.0)


def test_a_top_up_from_a_zero_hold_holds_just_the_amount(store: JobStore) -> None:
    job = _funded(store, 0.0, budget=1.0)
    [claim] = store.claim("w1")
    before = datetime.now(UTC)
    assert store.top_up(claim, 0.2) is True
    assert claim.job.reserved_usd == 0.2
    assert store.get(job.id).reserved_usd == 0.2
    assert _aware(_row(store, job.id).updated_at) >= before
    assert _row(store, job.id).version == 2  # a write of the job's record


def test_a_top_up_rounds_the_hold_to_the_micro_dollar(store: JobStore) -> None:
    _funded(store, 0.1)
    [claim] = store.claim("w1")
    assert store.top_up(claim, 0.2)
    assert claim.job.reserved_usd == 0.3  # not 0.30000000000000004
    assert store.top_up(claim, 0.0000004)
    assert claim.job.reserved_usd == 0.3


def test_a_top_up_holds_against_the_jobs_own_tenant_only(store: JobStore) -> None:
    accounts = Accounts(store)
    accounts.ensure_tenant("other")
    job = _funded(store, 0.1)
    [claim] = store.claim("w1")
    assert store.top_up(claim, 0.2)
    assert _money(store) == (0.3, 0.0)
    assert _money(store, "other") == (0.0, 0.0)
    assert job.tenant == "default"


def test_a_top_up_counts_what_was_already_spent(store: JobStore) -> None:
    accounts = Accounts(store)
    accounts.ensure_tenant("default", budget_usd=1.0)
    with store.engine.begin() as c:
        c.execute(sa.update(db.tenants).values(spent_usd=0.6))
    job = make_job(reserved_usd=0.2)
    assert accounts.reserve("default", 0.2)
    store.create(job)
    [claim] = store.claim("w1")
    assert store.top_up(claim, 0.3) is False  # 0.6 + 0.2 + 0.3 > 1.0
    assert store.top_up(claim, 0.2) is True


def test_a_tenant_without_a_budget_can_always_top_up(store: JobStore) -> None:
    _funded(store, 5.0)
    [claim] = store.claim("w1")
    assert store.top_up(claim, 1000.0) is True
    assert _money(store) == (1005.0, 0.0)


def test_a_stale_top_up_holds_nothing(store: JobStore) -> None:
    job = _funded(store, 0.5, budget=10.0)
    [old] = store.claim("w1", lease_s=0.2)
    time.sleep(0.3)
    [new] = store.claim("w2")
    with pytest.raises(StaleLease, match=f"job {job.id}: lease lost"):
        store.top_up(old, 1.0)
    assert _money(store) == (0.5, 0.0)  # the tenant's hold rolled back with it
    assert old.job.reserved_usd == 0.5
    assert store.get(job.id).reserved_usd == 0.5
    assert new.fence == old.fence + 1


def test_a_top_up_writes_that_job_only(store: JobStore) -> None:
    Accounts(store).ensure_tenant("default")
    a, b = _aged(store, ["a", "b"])
    claims = {c.job.id: c for c in store.claim("w1")}
    assert store.top_up(claims[a.id], 0.2)
    assert store.get(a.id).reserved_usd == 0.2
    assert store.get(b.id).reserved_usd is None


def test_an_earlier_claim_of_the_same_worker_cannot_top_up(store: JobStore) -> None:
    job = _funded(store, 0.5)
    [old] = store.claim("w1", lease_s=0.2)
    time.sleep(0.3)
    store.claim("w1")  # taken again by the same worker: a new fence
    with pytest.raises(StaleLease):
        store.top_up(old, 0.1)
    assert _money(store) == (0.5, 0.0)
    assert store.get(job.id).reserved_usd == 0.5


def test_a_top_up_by_the_wrong_owner_is_stale(store: JobStore) -> None:
    _funded(store, 0.5)
    [claim] = store.claim("w1")
    claim.owner = "w2"
    with pytest.raises(StaleLease):
        store.top_up(claim, 1.0)


# -- hand back, crashes of the driving code -----------------------------------------------------


def test_a_handed_back_job_is_due_again_at_once(store: JobStore) -> None:
    job = make_job()
    store.create(job)
    [claim] = store.claim("w1")
    claim.job.state = JobState.RUNNING
    store.save(claim, next_run_at=datetime.now(UTC) + timedelta(hours=1))
    assert store.hand_back(claim) is True
    row = _row(store, job.id)
    assert (row.lease_owner, row.lease_until) == (None, None)
    assert store.hand_back(claim) is False  # already handed back
    with pytest.raises(StaleLease):
        store.save(claim)
    [again] = store.claim("w2")  # due now, not in an hour
    assert again.job.state is JobState.RUNNING  # the stored state is untouched


def test_handing_one_job_back_keeps_the_others_held(store: JobStore) -> None:
    a, _b = _aged(store, ["a", "b"])
    claims = {c.job.id: c for c in store.claim("w1")}
    assert store.hand_back(claims[a.id]) is True
    assert [c.job.id for c in store.claim("w2")] == [a.id]  # b is still w1's


def test_a_claim_the_same_worker_made_earlier_cannot_hand_back(store: JobStore) -> None:
    job = make_job()
    store.create(job)
    [old] = store.claim("w1", lease_s=0.2)
    time.sleep(0.3)
    [new] = store.claim("w1")  # the same worker takes it again: a new fence
    assert store.hand_back(old) is False
    assert store.claim("w2", job_id=job.id) == []
    assert store.hand_back(new) is True


def test_a_stale_claim_cannot_hand_back_the_new_holders_job(store: JobStore) -> None:
    job = make_job()
    store.create(job)
    [old] = store.claim("w1", lease_s=0.2)
    time.sleep(0.3)
    store.claim("w2")
    assert store.hand_back(old) is False
    assert store.claim("w3", job_id=job.id) == []  # still w2's


def test_a_finished_job_is_not_handed_back(store: JobStore) -> None:
    job = make_job()
    store.create(job)
    [claim] = store.claim("w1")
    fence, owner = claim.fence, claim.owner
    claim.job.state = JobState.SUCCEEDED
    store.save(claim)
    claim.owner, claim.fence = owner, fence
    assert store.hand_back(claim) is False
    assert store.get(job.id).state is JobState.SUCCEEDED


def test_a_foreign_owner_cannot_hand_a_job_back(store: JobStore) -> None:
    job = make_job()
    store.create(job)
    [claim] = store.claim("w1")
    claim.owner = "w9"
    assert store.hand_back(claim) is False
    assert store.claim("w2", job_id=job.id) == []


def test_crashes_are_counted_per_job(store: JobStore) -> None:
    a, b = _aged(store, ["a", "b"])
    claims = {c.job.id: c for c in store.claim("w1")}
    assert store.drive_failed(claims[a.id], "boom", 3) == 1
    assert store.drive_failed(claims[a.id], "boom", 3) == 2
    assert store.drive_failed(claims[b.id], "boom", 3) == 1


def test_a_stale_crash_on_a_job_without_crashes_counts_none(store: JobStore) -> None:
    job = make_job()
    store.create(job)
    [old] = store.claim("w1", lease_s=0.2)
    time.sleep(0.3)
    store.claim("w2")
    assert store.drive_failed(old, "late", 3) == 0


def test_crashes_of_the_driving_code_are_counted_across_claims(store: JobStore) -> None:
    job = make_job()
    store.create(job)
    [claim] = store.claim("w1", lease_s=0.2)
    assert store.drive_failed(claim, "boom", 3) == 1
    assert store.drive_failed(claim, "x" * 5000, 3) == 2
    assert _row(store, job.id).last_drive_error == "x" * 4000
    time.sleep(0.3)
    [again] = store.claim("w2")
    assert store.drive_failed(again, "again", 3) == 3
    assert store.drive_failed(claim, "stale", 3) == 3  # a stale claim's crash is not counted
    assert _row(store, job.id).last_drive_error == "again"


# -- an operator's decision on a parked job -----------------------------------------------------


def _parked(
    store: JobStore, *, reserved: float | None, cost: float | None, due: datetime | None = None
) -> Job:
    """A job parked in needs_reconciliation with an ambiguous attempt (est. $0.40)."""
    if reserved:
        job = _funded(store, reserved)
    else:
        Accounts(store).ensure_tenant("default")
        job = make_job()
        store.create(job)
    [claim] = store.claim("w1")
    claim.job.attempts = [_attempt(1, AttemptState.AMBIGUOUS, 0.4)]
    claim.job.cost_usd = cost
    claim.job.state = JobState.NEEDS_RECONCILIATION
    store.save(claim, ledger=[LedgerEntry(1, "o1", 0.4, kind="pending")], next_run_at=due)
    return store.get(job.id)


def _resolved(job: Job, state: JobState, *, cost: float | None) -> Job:
    job = job.model_copy(deep=True)
    job.attempts[0].state = AttemptState.SUCCEEDED
    job.attempts[0].cost_usd = 0.4
    job.cost_usd = cost
    job.state = state
    return job


def test_reopening_a_parked_job_as_finished_books_the_new_cost_once(store: JobStore) -> None:
    parked = _parked(store, reserved=1.0, cost=0.1)
    assert _money(store) == (0.4, 0.1)
    done = store.reopen(
        _resolved(parked, JobState.SUCCEEDED, cost=0.5),
        ledger=[LedgerEntry(1, "o1", 0.4, kind="charge")],
    )
    assert done.reserved_usd is None
    assert _money(store) == (0.0, 0.5)  # the parked 0.1 taken back, 0.5 booked
    assert [(r["kind"], r["amount_usd"]) for r in store.ledger(job_id=parked.id)] == [
        ("charge", 0.4)
    ]
    stored = store.get(parked.id)
    assert (stored.state, stored.reserved_usd) == (JobState.SUCCEEDED, None)
    assert store.claim("w1", job_id=parked.id) == []
    with pytest.raises(StaleLease, match="no longer needs_reconciliation"):
        store.reopen(_resolved(parked, JobState.SUCCEEDED, cost=0.5))


def test_reopening_a_parked_job_without_a_cost_so_far(store: JobStore) -> None:
    parked = _parked(store, reserved=1.0, cost=None)
    assert _money(store) == (0.4, 0.0)
    done = store.reopen(_resolved(parked, JobState.SUCCEEDED, cost=0.4))
    assert done.reserved_usd is None
    assert _money(store) == (0.0, 0.4)
    assert _row(store, parked.id).version == 3  # created, parked, reopened


def test_reopening_as_failed_with_nothing_billed_releases_the_hold(store: JobStore) -> None:
    parked = _parked(store, reserved=1.0, cost=None)
    done = _resolved(parked, JobState.FAILED, cost=None)
    done.attempts[0].cost_usd = 0.0
    done.offering_id = "o9"
    before = datetime.now(UTC)
    store.reopen(done)
    assert _money(store) == (0.0, 0.0)
    row = _row(store, parked.id)
    assert (row.state, row.offering_id) == ("failed", "o9")
    assert _aware(row.updated_at) >= before


def test_reopening_a_finished_job_replaces_its_booked_cost(store: JobStore) -> None:
    job = _funded(store, 1.0)
    [claim] = store.claim("w1")
    claim.job.cost_usd = 0.2
    claim.job.state = JobState.FAILED
    store.save(claim)
    assert _money(store) == (0.0, 0.2)
    finished = store.get(job.id)
    assert finished.reserved_usd is None  # nothing left held: only the cost says it booked
    finished.cost_usd = 0.3
    store.reopen(finished, expect_state=JobState.FAILED)
    assert _money(store) == (0.0, 0.3)


def test_reopening_takes_back_the_booking_of_that_job_only(store: JobStore) -> None:
    first = _parked(store, reserved=None, cost=0.1)
    second = _parked(store, reserved=None, cost=0.2)
    store.reopen(_resolved(second, JobState.SUCCEEDED, cost=0.5))
    # the parked jobs booked nothing (no hold); second's 0.2 is taken back, 0.5 booked
    assert _money(store) == (0.0, 0.3)
    assert store.get(first.id).state is JobState.NEEDS_RECONCILIATION


def test_reopening_keeps_a_hold_for_attempts_still_pending(store: JobStore) -> None:
    parked = _parked(store, reserved=1.0, cost=0.1)
    job = _resolved(parked, JobState.FAILED, cost=0.1)
    job.attempts.append(_attempt(2, AttemptState.ABANDONED, 0.25))
    done = store.reopen(job)
    assert done.reserved_usd == pytest.approx(0.25)
    assert _money(store) == (0.25, 0.1)  # 0.15 of the 0.40 held let go, 0.1 booked once


def test_reopening_a_parked_job_without_a_cost_books_its_new_one(store: JobStore) -> None:
    parked = _parked(store, reserved=None, cost=None)
    store.reopen(_resolved(parked, JobState.SUCCEEDED, cost=None))
    assert _money(store) == (0.0, 0.0)
    parked2 = _parked(store, reserved=None, cost=None)
    store.reopen(_resolved(parked2, JobState.FAILED, cost=0.3))
    assert _money(store) == (0.0, 0.3)


def test_a_reopened_live_job_is_due_at_once_and_books_at_its_end(store: JobStore) -> None:
    parked = _parked(store, reserved=1.0, cost=0.1, due=datetime.now(UTC) + timedelta(hours=1))
    live = parked.model_copy(deep=True)
    live.state = JobState.QUEUED
    live.error = None
    store.reopen(live)
    assert _money(store) == (0.4, 0.0)  # the parked booking undone, the hold kept
    assert store.get(parked.id).state is JobState.QUEUED
    [claim] = store.claim("w1")
    assert claim.job.id == parked.id
    assert claim.fence == 3  # a claim made before the reopen is stale
    claim.job.attempts[0].state = AttemptState.SUCCEEDED
    claim.job.attempts[0].cost_usd = 0.4
    claim.job.cost_usd = 0.4
    claim.job.state = JobState.SUCCEEDED
    store.save(claim)
    assert _money(store) == (0.0, 0.4)


def test_only_a_released_job_in_the_expected_state_can_be_reopened(store: JobStore) -> None:
    job = make_job()
    store.create(job)
    [claim] = store.claim("w1")
    claim.job.state = JobState.RUNNING
    store.save(claim)
    with pytest.raises(StaleLease, match="no longer running"):
        store.reopen(claim.job, expect_state=JobState.RUNNING)  # still leased
    with pytest.raises(StaleLease):
        store.reopen(claim.job)  # not parked
    store.save(claim, release=True)
    claim.job.state = JobState.FAILED
    store.reopen(claim.job, expect_state=JobState.RUNNING)
    assert store.get(job.id).state is JobState.FAILED


def test_reopen_settles_the_pending_row_of_an_attempt_only(store: JobStore) -> None:
    parked = _parked(store, reserved=1.0, cost=0.1)
    store.reopen(
        _resolved(parked, JobState.SUCCEEDED, cost=0.5),
        ledger=[LedgerEntry(1, "o1", 0.4), LedgerEntry(2, "o2", 0.0, kind="void")],
    )
    rows = [(r["attempt_n"], r["kind"], r["amount_usd"]) for r in store.ledger(job_id=parked.id)]
    assert rows == [(1, "charge", 0.4), (2, "void", 0.0)]


# -- finished jobs, cancels, hints, callbacks ---------------------------------------------------


def test_only_a_finished_job_is_rewritten_without_a_claim(store: JobStore) -> None:
    job = make_job()
    store.create(job)
    with pytest.raises(StaleLease, match=f"job {job.id} is not finished"):
        store.update_finished(job)
    [claim] = store.claim("w1")
    claim.job.state = JobState.SUCCEEDED
    store.save(claim)
    other = make_job()
    store.create(other)
    [oc] = store.claim("w1")
    oc.job.state = JobState.FAILED
    store.save(oc)
    gone = store.get(job.id)
    gone.deleted = True
    before = datetime.now(UTC)
    assert store.update_finished(gone) is gone
    assert store.get(job.id).deleted is True
    assert _aware(_row(store, job.id).updated_at) >= before
    assert store.get(other.id).deleted is False  # only that job's record
    assert _row(store, job.id).version == 3  # created, saved finished, rewritten


def test_a_cancel_is_scoped_to_the_tenant_and_makes_the_job_due(store: JobStore) -> None:
    job = make_job(tenant="t1")
    store.create(job)
    [claim] = store.claim("w1")
    store.save(claim, next_run_at=datetime.now(UTC) + timedelta(hours=1), release=True)
    with pytest.raises(NotFound, match="no job"):
        store.request_cancel(job.id, tenant="t2")
    with pytest.raises(NotFound):
        store.request_cancel("job_missing")
    assert store.claim("w2") == []
    assert store.request_cancel(job.id, tenant="t1").id == job.id
    [again] = store.claim("w2")  # due at once
    assert again.cancel_requested is True


def test_a_hint_makes_a_running_job_due_and_ignores_finished_ones(store: JobStore) -> None:
    a, b = _aged(store, ["a", "b"])
    claims = store.claim("w1")
    for c in claims:
        c.job.state = JobState.RUNNING if c.job.id == a.id else JobState.SUCCEEDED
        store.save(c, next_run_at=datetime.now(UTC) + timedelta(hours=1), release=True)
    assert store.hint_poll(b.id) is False
    assert store.hint_poll("job_missing") is False
    assert store.claim("w2") == []
    assert store.hint_poll(a.id) is True
    assert [c.job.id for c in store.claim("w2")] == [a.id]


def test_a_callback_finds_the_running_attempt_by_protocol_and_remote_id(store: JobStore) -> None:
    a, b = _aged(store, ["a", "b"])
    claims = {c.job.id: c for c in store.claim("w1")}
    claims[a.id].job.attempts = [
        _attempt(1, AttemptState.RUNNING, 0.1, provider_job={"protocol": "p1", "remote_id": "r1"})
    ]
    store.save(claims[a.id])
    claims[b.id].job.attempts = [
        _attempt(1, AttemptState.RUNNING, 0.1, provider_job={"protocol": "p2", "remote_id": "r1"})
    ]
    store.save(claims[b.id])
    assert store.find_by_remote_id("p1", "r1") == a.id
    assert store.find_by_remote_id("p2", "r1") == b.id
    assert store.find_by_remote_id("p3", "r1") is None
    assert store.find_by_remote_id("p1", "r2") is None
    claims[a.id].job.state = JobState.SUCCEEDED
    store.save(claims[a.id])
    assert store.find_by_remote_id("p1", "r1") is None  # finished: nothing to hint


# -- the ledger ---------------------------------------------------------------------------------


def test_the_ledger_lists_rows_in_order_by_job_and_tenant(store: JobStore) -> None:
    a = make_job(tenant="t1")
    b = make_job(tenant="t2")
    store.create(a)
    store.create(b)
    for job in (a, b):
        [claim] = store.claim("w1", job_id=job.id)
        store.save(claim, ledger=[LedgerEntry(2, "o2", 0.2), LedgerEntry(1, "o1", 0.1)])
    rows = store.ledger(job_id=a.id)
    assert [(r["attempt_n"], r["offering_id"], r["kind"]) for r in rows] == [
        (2, "o2", "charge"),
        (1, "o1", "charge"),
    ]
    assert {r["tenant"] for r in rows} == {"t1"}
    assert [r["job_id"] for r in store.ledger(tenant="t2")] == [b.id, b.id]
    assert len(store.ledger()) == 4


def test_settling_resolves_that_jobs_pending_row_only(store: JobStore) -> None:
    a, b = _aged(store, ["a", "b"])
    claims = {c.job.id: c for c in store.claim("w1")}
    for job_id in (a.id, b.id):
        store.save(claims[job_id], ledger=[LedgerEntry(1, "o1", 0.4, kind="pending")])
    store.save(claims[b.id], ledger=[LedgerEntry(1, "o1", 0.0, kind="void", settles=True)])
    assert [(r["kind"], r["amount_usd"]) for r in store.ledger(job_id=a.id)] == [("pending", 0.4)]
    assert [(r["kind"], r["amount_usd"]) for r in store.ledger(job_id=b.id)] == [("void", 0.0)]


def test_settling_resolves_the_pending_row_in_place(store: JobStore) -> None:
    job = make_job()
    store.create(job)
    [claim] = store.claim("w1")
    store.save(claim, ledger=[LedgerEntry(1, "o1", 0.4, kind="pending"), LedgerEntry(2, "o2", 0.1)])
    # a charge for attempt 2 that says it settles finds no pending row of its own: the
    # charged row stays as it was
    with pytest.raises(sa.exc.IntegrityError):
        store.save(claim, ledger=[LedgerEntry(2, "o2", 0.9, settles=True)])
    # settling is asked for: a plain second row for the attempt is refused
    with pytest.raises(sa.exc.IntegrityError):
        store.save(claim, ledger=[LedgerEntry(1, "o1", 0.3)])
    before = datetime.now(UTC)
    store.save(claim, ledger=[LedgerEntry(1, "o1", 0.3, settles=True)])
    rows = [(r["attempt_n"], r["kind"], r["amount_usd"]) for r in store.ledger(job_id=job.id)]
    assert rows == [(1, "charge", 0.3), (2, "charge", 0.1)]
    settled, kept = store.ledger(job_id=job.id)
    assert _aware(settled["created_at"]) >= before  # dated when it was resolved
    assert _aware(kept["created_at"]) < before


# -- the outbox ---------------------------------------------------------------------------------


def _events(store: JobStore, n: int) -> list[OutboxEvent]:
    job = make_job()
    store.create(job)
    [claim] = store.claim("w1")
    evs = [
        OutboxEvent(url=f"https://h/{i}", event_type="job.running", payload={}) for i in range(n)
    ]
    store.save(claim, events=evs)
    return evs


def test_the_outbox_hands_out_twenty_due_events_at_a_time(store: JobStore) -> None:
    _events(store, 21)
    assert len(store.claim_outbox("d1")) == 20
    assert len(store.claim_outbox("d1")) == 1
    assert store.claim_outbox("d1") == []


def test_the_outbox_hands_out_the_longest_due_first(store: JobStore) -> None:
    first, second = _events(store, 2)
    assert len(store.claim_outbox("d1")) == 2
    assert {r["lease_owner"] for r in store.outbox()} == {"d1"}
    now = datetime.now(UTC)
    store.outbox_result(first.id, state="pending", retry_at=now - timedelta(milliseconds=1))
    store.outbox_result(second.id, state="pending", retry_at=now - timedelta(hours=1))
    assert [i.id for i in store.claim_outbox("d2", limit=1)] == [second.id]
    assert [i.id for i in store.claim_outbox("d2", limit=1)] == [first.id]


def test_an_event_keeps_the_time_it_was_queued(store: JobStore) -> None:
    (ev,) = _events(store, 1)
    [row] = store.outbox()
    queued = _aware(row["created_at"])
    time.sleep(0.2)
    [item] = store.claim_outbox("d1")
    assert item.id == ev.id
    assert item.created_at == queued  # not the time it was handed out


def test_outbox_claims_skip_rows_another_transaction_holds(pg_store: JobStore) -> None:
    """On PostgreSQL a deliverer never waits on events another deliverer is claiming."""
    store = pg_store
    first, second = _events(store, 2)
    got: list[list[str]] = []
    with store.engine.connect() as other:
        tx = other.begin()
        other.execute(sa.select(db.outbox.c.id).where(db.outbox.c.id == first.id).with_for_update())
        t = threading.Thread(target=lambda: got.append([i.id for i in store.claim_outbox("d1")]))
        t.start()
        t.join(timeout=10)
        finished = not t.is_alive()
        tx.rollback()
    t.join(timeout=30)
    assert finished, "the outbox claim waited on a row another transaction holds"
    assert got == [[second.id]]


def test_an_outbox_lease_holds_for_a_minute_or_as_long_as_asked(store: JobStore) -> None:
    _first, second = _events(store, 2)
    store.claim_outbox("d1", limit=1)
    store.claim_outbox("d1", limit=1, lease_s=0.2)
    time.sleep(0.3)
    assert [i.id for i in store.claim_outbox("d2")] == [second.id]


def test_a_failed_delivery_is_retried_when_told_and_counted(store: JobStore) -> None:
    (ev,) = _events(store, 1)
    [item] = store.claim_outbox("d1")
    store.outbox_result(
        item.id,
        state="pending",
        status=500,
        error="boom",
        retry_at=datetime.now(UTC) + timedelta(hours=1),
    )
    assert store.claim_outbox("d2") == []  # not due for an hour
    [row] = store.outbox()
    assert (row["attempts"], row["last_status"], row["last_error"]) == (1, 500, "boom")
    assert (row["lease_owner"], row["lease_until"], row["delivered_at"]) == (None, None, None)
    store.outbox_result(item.id, state="pending", retry_at=datetime.now(UTC) - timedelta(seconds=1))
    [again] = store.claim_outbox("d2")  # due, and the first lease was let go
    assert (again.id, again.attempts) == (ev.id, 2)


def test_a_delivered_event_is_stamped_and_never_handed_out_again(store: JobStore) -> None:
    _events(store, 1)
    [item] = store.claim_outbox("d1", lease_s=0.0)
    before = datetime.now(UTC)
    store.outbox_result(item.id, state="delivered", status=200)
    [row] = store.outbox()
    delivered = row["delivered_at"]
    if delivered.tzinfo is None:
        delivered = delivered.replace(tzinfo=UTC)
    assert before - timedelta(seconds=1) <= delivered <= datetime.now(UTC)
    assert row["state"] == "delivered"
    assert store.claim_outbox("d2") == []


def test_a_dead_event_keeps_its_schedule_and_is_not_stamped_delivered(store: JobStore) -> None:
    _events(store, 1)
    [item] = store.claim_outbox("d1")
    store.outbox_result(item.id, state="dead", status=400)
    [row] = store.outbox()
    assert (row["state"], row["delivered_at"], row["attempts"]) == ("dead", None, 1)


def test_the_outbox_is_listed_oldest_first_and_per_job(store: JobStore) -> None:
    first = _events(store, 1)
    second = _events(store, 1)
    assert [r["id"] for r in store.outbox()] == [first[0].id, second[0].id]
    job_of_second = store.outbox()[1]["job_id"]
    assert [r["id"] for r in store.outbox(job_of_second)] == [second[0].id]


# -- webhook endpoints --------------------------------------------------------------------------


def test_endpoints_are_per_tenant_and_a_disabled_one_drops_only_its_pending_events(
    store: JobStore,
) -> None:
    eid = store.add_endpoint("t1", "https://example.com/a", "whsec_A")
    other = store.add_endpoint("t1", "https://example.com/b", "whsec_B")
    assert eid.startswith("we_")
    assert len(eid) == 19
    assert eid != other
    store.add_endpoint("t2", "https://example.com/c", "whsec_C")
    ep = store.endpoint(eid)
    assert ep is not None
    assert (ep["tenant"], ep["url"], ep["secret"], ep["enabled"]) == (
        "t1",
        "https://example.com/a",
        "whsec_A",
        True,
    )
    assert store.endpoint("we_missing") is None
    assert {e["id"] for e in store.endpoints("t1")} == {eid, other}
    job = make_job(tenant="t1")
    store.create(job)
    [claim] = store.claim("w1")
    store.save(
        claim,
        events=[
            OutboxEvent(url="https://example.com/a", event_type="a", payload={}, endpoint_id=eid),
            OutboxEvent(url="https://example.com/a", event_type="b", payload={}, endpoint_id=eid),
            OutboxEvent(url="https://example.com/b", event_type="c", payload={}, endpoint_id=other),
        ],
    )
    delivered = next(i for i in store.claim_outbox("d1") if i.event_type == "a")
    store.outbox_result(delivered.id, state="delivered", status=200)
    store.disable_endpoint(eid, "410 Gone")
    states = {e["event_type"]: e["state"] for e in store.outbox(job.id)}
    assert states == {"a": "delivered", "b": "disabled", "c": "pending"}
    assert [e["id"] for e in store.endpoints("t1")] == [other]
    assert {e["id"] for e in store.endpoints("t1", enabled_only=False)} == {eid, other}
    gone = store.endpoint(eid)
    assert gone is not None
    assert (gone["enabled"], gone["disabled_reason"]) == (False, "410 Gone")


# -- workers ------------------------------------------------------------------------------------


def test_a_worker_is_registered_once_and_kept_alive_by_heartbeats(store: JobStore) -> None:
    store.worker_heartbeat("w1", "host-a", 42, 8)
    store.worker_heartbeat("w2", "host-b", 43, 4)
    [w] = [w for w in store.live_workers() if w["id"] == "w1"]
    assert (w["host"], w["pid"], w["capacity"]) == ("host-a", 42, 8)
    time.sleep(1.5)
    store.worker_heartbeat("w1", "host-a", 42, 8)  # a second beat: no duplicate row
    assert sorted(w["id"] for w in store.live_workers(within_s=1.2)) == ["w1"]
    assert sorted(w["id"] for w in store.live_workers()) == ["w1", "w2"]
    store.worker_gone("w2")
    assert [w["id"] for w in store.live_workers()] == ["w1"]


def test_a_worker_is_live_for_fifteen_seconds_after_its_last_beat(store: JobStore) -> None:
    store.worker_heartbeat("w1", "h", 1, 1)
    with store.engine.begin() as c:
        c.execute(
            sa.update(db.workers).values(last_seen=datetime.now(UTC) - timedelta(seconds=13.5))
        )
    assert [w["id"] for w in store.live_workers()] == ["w1"]
    with store.engine.begin() as c:
        c.execute(
            sa.update(db.workers).values(last_seen=datetime.now(UTC) - timedelta(seconds=15.5))
        )
    assert store.live_workers() == []


def test_the_store_migrates_unless_told_not_to(store_url: str, tmp_path: Path) -> None:
    bare = JobStore(f"sqlite:///{tmp_path / 'bare.db'}", migrate=False)
    try:
        with pytest.raises(sa.exc.OperationalError):
            bare.get("job_x")  # no tables
    finally:
        bare.close()
    s = JobStore(store_url)
    try:
        with pytest.raises(NotFound):
            s.get("job_x")  # the tables are there, the job is not
    finally:
        s.close()


# -- how long each lease lasts ------------------------------------------------------------------


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _lease_until(store: JobStore, table: sa.Table, row_id: str) -> datetime:
    with store.engine.connect() as c:
        value = c.execute(sa.select(table.c.lease_until).where(table.c.id == row_id)).scalar_one()
    return _aware(value)


def test_job_leases_last_thirty_seconds_unless_told_otherwise(store: JobStore) -> None:
    a, b = _aged(store, ["a", "b"])
    before = datetime.now(UTC)
    store.claim("w1", limit=1)
    after = datetime.now(UTC)
    s30 = timedelta(seconds=30)
    assert before + s30 <= _lease_until(store, db.jobs, a.id) <= after + s30
    before = datetime.now(UTC)
    [claim] = store.claim("w1", lease_s=90)
    after = datetime.now(UTC)
    s90 = timedelta(seconds=90)
    assert before + s90 <= _lease_until(store, db.jobs, b.id) <= after + s90
    before = datetime.now(UTC)
    store.renew("w1", {b.id: claim.fence})  # a renewal: thirty seconds again
    after = datetime.now(UTC)
    assert before + s30 <= _lease_until(store, db.jobs, b.id) <= after + s30


def test_outbox_leases_last_a_minute_unless_told_otherwise(store: JobStore) -> None:
    first, second = _events(store, 2)
    before = datetime.now(UTC)
    store.claim_outbox("d1", limit=1)
    after = datetime.now(UTC)
    minute = timedelta(seconds=60)
    assert before + minute <= _lease_until(store, db.outbox, first.id) <= after + minute
    before = datetime.now(UTC)
    store.claim_outbox("d1", lease_s=5)
    after = datetime.now(UTC)
    s5 = timedelta(seconds=5)
    assert before + s5 <= _lease_until(store, db.outbox, second.id) <= after + s5


def test_the_outbox_stays_oldest_first_after_its_rows_change(store: JobStore) -> None:
    first = _events(store, 1)
    second = _events(store, 1)
    # a row rewritten after a newer one was written (PostgreSQL moves it in the table)
    store.outbox_result(first[0].id, state="dead", status=400)
    assert [r["id"] for r in store.outbox()] == [first[0].id, second[0].id]
