"""Reported beside estimated spend, per tenant and offering, as `vidgate spend` and the
dashboard show it: only charged attempts count, a report without a dollar value counts no
clip, an over-reservation flag counts the attempt it names, and an unreadable job row is
skipped rather than failing the whole report."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import update

from tests.jobs.conftest import make_job
from vidgate.billing.reported import reported_vs_estimated
from vidgate.jobs import db
from vidgate.jobs.store import JobStore
from vidgate.types import Attempt, AttemptState


def _attempt(n: int, oid: str, estimate: float, cost: float | None, usd: float | None) -> Attempt:
    rep = None if usd is None else {"amount": 1, "unit": "credits", "field": "c", "usd": usd}
    return Attempt(
        n=n,
        offering_id=oid,
        state=AttemptState.SUCCEEDED,
        idempotency_key=f"k{n}",
        started_at=datetime.now(UTC),
        estimated_cost_usd=estimate,
        cost_usd=cost,
        reported_cost=rep,
    )


def _job(store: JobStore, tenant: str, *attempts: Attempt, billing: Any = None) -> str:
    job = make_job(tenant=tenant)
    job.attempts = list(attempts)
    job.billing = billing
    store.create(job)
    return job.id


def test_reported_and_estimated_spend_per_offering(store: JobStore) -> None:
    _job(
        store,
        "t",
        _attempt(1, "a", 0.5, 0.0, None),  # a void attempt: no charge, not counted
        _attempt(2, "a", 0.5, 0.7, 0.7),
        _attempt(3, "b", 0.25, 0.25, None),  # charged at the estimate: no report
        billing={"delivery": {"attempt": 2, "over_reservation": True}},
    )
    _job(
        store,
        "t",
        _attempt(1, "a", 0.5, 0.4, 0.4),
        _attempt(2, "b", 0.25, 0.3, 0.3),
        billing={"delivery": {"attempt": 1, "over_reservation": False}},
    )
    _job(store, "u", _attempt(1, "a", 1.0, 1.0, 1.0))
    out = reported_vs_estimated(store.engine, "t")
    assert out == {
        "t": {
            "a": {
                "estimated_usd": 1.0,
                "reported_usd": pytest.approx(1.1),
                "reported_clips": 2,
                "over_reservation": 1,
            },
            "b": {
                "estimated_usd": 0.5,
                "reported_usd": 0.3,
                "reported_clips": 1,
                "over_reservation": 0,
            },
        }
    }
    everyone = reported_vs_estimated(store.engine)
    assert set(everyone) == {"t", "u"}
    assert everyone["u"]["a"]["reported_usd"] == 1.0


def test_an_unreadable_job_row_is_skipped(store: JobStore) -> None:
    broken = _job(store, "t", _attempt(1, "a", 0.5, 0.5, 0.5))
    _job(store, "t", _attempt(1, "a", 0.5, 0.5, 0.25))
    with store.engine.begin() as conn:
        conn.execute(update(db.jobs).where(db.jobs.c.id == broken).values(doc="{not json"))
    out = reported_vs_estimated(store.engine, "t")
    assert out["t"]["a"]["reported_usd"] == 0.25
    assert out["t"]["a"]["reported_clips"] == 1


def test_sums_are_shown_to_the_millionth_of_a_dollar(store: JobStore) -> None:
    _job(store, "t", _attempt(1, "a", 0.1234567, 0.1234567, 0.7654321))
    row = reported_vs_estimated(store.engine, "t")["t"]["a"]
    assert (row["estimated_usd"], row["reported_usd"]) == (0.123457, 0.765432)


def test_each_flagged_attempt_is_counted(store: JobStore) -> None:
    for _ in range(2):
        _job(
            store,
            "t",
            _attempt(1, "a", 0.5, 0.9, 0.9),
            billing={"delivery": {"attempt": 1, "over_reservation": True}},
        )
    assert reported_vs_estimated(store.engine, "t")["t"]["a"]["over_reservation"] == 2
