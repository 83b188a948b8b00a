"""The stories table: a story's durable record, claimed with a lease and written fenced.

A story row holds the spec, the plan, the child job of every shot segment once it exists,
and what is still held of the budget reserved for the whole story at submit. Each child job
takes its share of that hold when it is created (its own reservation, released and booked by
the job store at its end), so the tenant's reserved total never counts a dollar twice; what
the story still holds is released in the same transaction as its terminal state.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from vidgate.errors import NotFound, VidgateError
from vidgate.jobs import db
from vidgate.jobs.store import IdempotencyConflict, StaleLease
from vidgate.stories.plan import StoryPlan


class StoryState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"  # shots are being generated
    ASSEMBLING = "assembling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    #: the deadline came (or could no longer be met) before every shot was made
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        return self in (
            StoryState.SUCCEEDED,
            StoryState.FAILED,
            StoryState.CANCELED,
            StoryState.EXPIRED,
        )


class StoryDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    tenant: str = "default"
    state: StoryState = StoryState.QUEUED
    title: str
    #: the story file as validated (Story.model_dump)
    story: dict[str, Any]
    plan: StoryPlan
    #: "shot.segment" -> child job id, recorded as each child is created
    children: dict[str, str] = Field(default_factory=dict)
    #: whether the tenant's budget holds a reservation for this story
    held: bool = False
    progress: float = 0.0
    #: continuity at each join of a segmented shot
    joins: list[dict[str, Any]] = Field(default_factory=list)
    #: shot index -> stored file (uri) of the shot as it enters the film
    shot_files: dict[str, str] = Field(default_factory=dict)
    film: dict[str, Any] | None = None
    record: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    #: set when no more shots may start (the story's budget or deadline): {state, error};
    #: the story ends in that state once the shots already running have ended
    halt: dict[str, Any] | None = None
    #: why the next shot waits (the tenant's cap on running jobs), while it does
    waiting: str | None = None
    synthetic: bool = False
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None


@dataclass
class StoryClaim:
    doc: StoryDoc
    fence: int
    owner: str
    cancel_requested: bool
    reserved_usd: float


def _now() -> datetime:
    return datetime.now(UTC)


class StoryStore:
    """Stories in the job store's database (same engine, same migrations)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    def create(
        self, doc: StoryDoc, *, idempotency_key: str | None, fingerprint: str, reserved_usd: float
    ) -> tuple[StoryDoc, bool]:
        """Insert a story; with an idempotency key, a repeat returns (existing, False)."""
        values = {
            "id": doc.id,
            "tenant": doc.tenant,
            "state": doc.state.value,
            "terminal": False,
            "idempotency_key": idempotency_key,
            "request_hash": fingerprint,
            "created_at": doc.created_at,
            "updated_at": doc.updated_at,
            "fence": 0,
            "next_run_at": doc.created_at,
            "cancel_requested": False,
            "reserved_usd": reserved_usd,
            "doc": doc.model_dump_json(),
        }
        try:
            with self._tx() as conn:
                conn.execute(insert(db.stories).values(**values))
            return doc, True
        except IntegrityError:
            if idempotency_key is None:
                raise
        s = db.stories
        with self._tx() as conn:
            row = conn.execute(
                select(s.c.doc, s.c.request_hash).where(
                    s.c.tenant == doc.tenant, s.c.idempotency_key == idempotency_key
                )
            ).first()
        if row is None:  # pragma: no cover - the row that collided cannot vanish
            raise VidgateError("idempotency key collided with a story that no longer exists")
        if row.request_hash != fingerprint:
            raise IdempotencyConflict(
                f"idempotency key {idempotency_key!r} was used for a different story; "
                "use a new key for a new story"
            )
        return StoryDoc.model_validate_json(row.doc), False

    def get(self, story_id: str, tenant: str | None = None) -> StoryDoc:
        s = db.stories
        q = select(s.c.doc).where(s.c.id == story_id)
        if tenant is not None:
            q = q.where(s.c.tenant == tenant)
        with self._tx() as conn:
            row = conn.execute(q).first()
        if row is None:
            raise NotFound(f"no story {story_id!r}")
        return StoryDoc.model_validate_json(row.doc)

    def list(self, tenant: str | None = None, limit: int = 50) -> builtins.list[StoryDoc]:
        s = db.stories
        q = select(s.c.doc).order_by(s.c.created_at.desc()).limit(limit)
        if tenant is not None:
            q = q.where(s.c.tenant == tenant)
        with self._tx() as conn:
            return [StoryDoc.model_validate_json(r.doc) for r in conn.execute(q).all()]

    def reserved(self, story_id: str) -> float:
        s = db.stories
        with self._tx() as conn:
            v = conn.execute(select(s.c.reserved_usd).where(s.c.id == story_id)).scalar()
        return float(v or 0.0)

    def claim(
        self, owner: str, *, lease_s: float = 30.0, story_id: str | None = None, limit: int = 10
    ) -> builtins.list[StoryClaim]:
        """Claim due stories for one step each. The lease is short, as a job's: a worker
        killed mid-step delays its story by at most that long. A step that outlives it
        (a long assembly) may be repeated by another worker; only one fenced write wins."""
        now = _now()
        s = db.stories
        cond = and_(s.c.terminal.is_(False), or_(s.c.lease_until.is_(None), s.c.lease_until < now))
        cond = and_(cond, s.c.id == story_id) if story_id else and_(cond, s.c.next_run_at <= now)
        q = (
            select(s.c.id, s.c.fence, s.c.doc, s.c.cancel_requested, s.c.reserved_usd)
            .where(cond)
            .order_by(s.c.next_run_at)
            .limit(limit)
        )
        # a row lock for PostgreSQL: SQLite renders no FOR UPDATE (BEGIN IMMEDIATE locks), and
        # without it PostgreSQL races only concurrent claims, which no sequential test can see
        if self.engine.dialect.name == "postgresql":  # pragma: no mutate - see above
            q = q.with_for_update(skip_locked=True)
        out = []
        with self._tx() as conn:
            for row in conn.execute(q).all():
                res = conn.execute(
                    update(s)
                    .where(s.c.id == row.id, s.c.fence == row.fence)
                    .values(
                        lease_owner=owner,
                        lease_until=now + timedelta(seconds=lease_s),
                        fence=row.fence + 1,
                    )
                )
                if res.rowcount == 1:
                    out.append(
                        StoryClaim(
                            StoryDoc.model_validate_json(row.doc),
                            row.fence + 1,
                            owner,
                            bool(row.cancel_requested),
                            float(row.reserved_usd),
                        )
                    )
        return out

    def save(
        self,
        claim: StoryClaim,
        *,
        next_run_s: float = 0.5,
        release: bool = True,
        take_usd: float = 0.0,
    ) -> StoryDoc:
        """Write the claimed story (fenced). ``take_usd`` moves that much of the story's hold
        to a child job just created (the tenant's total is unchanged). A terminal write
        releases what the story still holds from the tenant, in the same transaction."""
        doc = claim.doc
        now = _now()
        doc.updated_at = now
        s, t = db.stories, db.tenants
        values: dict[str, Any] = {
            "state": doc.state.value,
            "terminal": doc.state.terminal,
            "updated_at": now,
            "next_run_at": now + timedelta(seconds=next_run_s),
            "doc": doc.model_dump_json(),
        }
        if take_usd:
            values["reserved_usd"] = s.c.reserved_usd - take_usd
        if doc.state.terminal:
            values["reserved_usd"] = 0.0
        if release or doc.state.terminal:
            values["lease_owner"] = None
            values["lease_until"] = None
        with self._tx() as conn:
            q = select(s.c.reserved_usd).where(
                s.c.id == doc.id, s.c.fence == claim.fence, s.c.lease_owner == claim.owner
            )
            # SQLite's BEGIN IMMEDIATE already holds the lock (and renders no FOR UPDATE); on
            # PostgreSQL its absence races only concurrent writes, which no sequential test sees
            if self.engine.dialect.name == "postgresql":  # pragma: no mutate - see above
                q = q.with_for_update()
            left = conn.execute(q).first()
            if left is None:
                raise StaleLease(f"story {doc.id}: lease lost (fence {claim.fence})")
            conn.execute(update(s).where(s.c.id == doc.id).values(**values))
            # "> 0" saves an update of nothing (">= 0" subtracts 0); the tenant's reserved total
            # is never NULL (ensure_tenant writes 0.0): coalesce is a guard only
            if (
                doc.state.terminal
                and doc.held
                and left.reserved_usd > 0  # pragma: no mutate - see above
            ):
                tenant_held = func.coalesce(t.c.reserved_usd, 0.0)  # pragma: no mutate
                conn.execute(
                    update(t)
                    .where(t.c.id == doc.tenant)
                    .values(reserved_usd=tenant_held - left.reserved_usd)
                )
        claim.reserved_usd = 0.0 if doc.state.terminal else claim.reserved_usd - take_usd
        if release or doc.state.terminal:
            claim.owner = ""
        return doc

    def hand_back(self, claim: StoryClaim, *, retry_in_s: float = 1.0) -> bool:
        """Release a claim without writing the story (a step that raised): due again soon,
        from what is stored. False when the lease was already gone."""
        s = db.stories
        with self._tx() as conn:
            res = conn.execute(
                update(s)
                .where(
                    s.c.id == claim.doc.id,
                    s.c.fence == claim.fence,
                    s.c.lease_owner == claim.owner,
                )
                .values(
                    # clearing the owner is hygiene: with no lease_until the story is claimable,
                    # and the handed-back claim's owner is blanked, so no fenced write matches
                    lease_owner=None,  # pragma: no mutate - see above
                    lease_until=None,
                    next_run_at=_now() + timedelta(seconds=retry_in_s),
                )
            )
        claim.owner = ""
        return bool(res.rowcount)

    def request_cancel(self, story_id: str, tenant: str | None = None) -> StoryDoc:
        s = db.stories
        cond = [s.c.id == story_id]
        if tenant is not None:
            cond.append(s.c.tenant == tenant)
        with self._tx() as conn:
            res = conn.execute(
                update(s).where(*cond).values(cancel_requested=True, next_run_at=_now())
            )
        if res.rowcount != 1:
            raise NotFound(f"no story {story_id!r}")
        # the update matched this tenant's story (ids are unique): read back with or without
        # the tenant, it is the same row
        return self.get(story_id, tenant)  # pragma: no mutate - see above
