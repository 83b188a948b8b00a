"""The stories table on SQLite and PostgreSQL: idempotent create, fenced writes, and the
whole-story budget hold shared out to children and released with the terminal state."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tests.jobs import conftest as jobs_fixtures
from vidgate.billing.accounts import Accounts
from vidgate.errors import NotFound
from vidgate.jobs.store import IdempotencyConflict, JobStore, StaleLease
from vidgate.stories.plan import StoryPlan
from vidgate.stories.store import StoryDoc, StoryState, StoryStore

# the job store's SQLite / PostgreSQL parametrisation, shared with the job-store suite
pg_url = jobs_fixtures.pg_url
store_url = jobs_fixtures.store_url


@pytest.fixture
def db(store_url: str) -> Iterator[JobStore]:
    s = JobStore(store_url)
    yield s
    s.close()


def _doc(sid: str, tenant: str = "acme", held: bool = True) -> StoryDoc:
    now = datetime.now(UTC)
    plan = StoryPlan(
        title="t", policy="cheapest", primary=None, width=854, height=480, fps=12, seed=1, shots=[]
    )
    return StoryDoc(
        id=sid,
        tenant=tenant,
        title="t",
        story={},
        plan=plan,
        held=held,
        created_at=now,
        updated_at=now,
    )


def test_create_is_idempotent_per_tenant_and_key(db: JobStore) -> None:
    stories = StoryStore(db.engine)
    _, created = stories.create(
        _doc("story_a"), idempotency_key="k", fingerprint="f1", reserved_usd=0
    )
    assert created
    again, created = stories.create(
        _doc("story_b"), idempotency_key="k", fingerprint="f1", reserved_usd=0
    )
    assert not created
    assert again.id == "story_a"
    with pytest.raises(IdempotencyConflict):
        stories.create(_doc("story_c"), idempotency_key="k", fingerprint="f2", reserved_usd=0)
    # another tenant's key space is its own; and it cannot read this tenant's story
    _, created = stories.create(
        _doc("story_d", tenant="other"), idempotency_key="k", fingerprint="f1", reserved_usd=0
    )
    assert created
    with pytest.raises(NotFound):
        stories.get("story_a", "other")


def test_a_stale_claim_cannot_write(db: JobStore) -> None:
    stories = StoryStore(db.engine)
    stories.create(_doc("story_s"), idempotency_key=None, fingerprint="f", reserved_usd=0)
    [old] = stories.claim("w1", lease_s=0)  # a lease that lapses at once
    [new] = stories.claim("w2", lease_s=30)
    assert new.fence == old.fence + 1
    old.doc.state = StoryState.FAILED
    with pytest.raises(StaleLease):
        stories.save(old)
    new.doc.state = StoryState.RUNNING
    stories.save(new)
    assert stories.get("story_s").state is StoryState.RUNNING


def test_the_story_hold_moves_to_children_and_the_rest_is_released_at_the_end(
    db: JobStore,
) -> None:
    accounts = Accounts(db)
    accounts.ensure_tenant("acme", budget_usd=1.0)
    assert accounts.reserve("acme", 0.6)
    stories = StoryStore(db.engine)
    stories.create(_doc("story_h"), idempotency_key=None, fingerprint="f", reserved_usd=0.6)
    [c] = stories.claim("w", lease_s=30)
    # a child takes 0.2 of the hold: the story holds 0.4, the tenant still 0.6 in all
    stories.save(c, release=False, take_usd=0.2)
    assert stories.reserved("story_h") == pytest.approx(0.4)
    tenant = accounts.tenant("acme")
    assert tenant is not None
    assert tenant["reserved_usd"] == pytest.approx(0.6)
    # the story ends: what it still holds (0.4) is released; the child's 0.2 stays with it
    c.doc.state = StoryState.SUCCEEDED
    stories.save(c)
    assert stories.reserved("story_h") == 0.0
    tenant = accounts.tenant("acme")
    assert tenant is not None
    assert tenant["reserved_usd"] == pytest.approx(0.2)
    # terminal stories are never claimed again
    assert stories.claim("w", story_id="story_h") == []
