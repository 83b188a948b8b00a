"""The durable job store: jobs, claims with leases and fencing, the outbox and the ledger.

* **Claims.** A worker claims due jobs; each claim sets the lease owner and expiry and bumps
  the job's fencing token. On PostgreSQL the candidates are read ``FOR UPDATE SKIP LOCKED``
  so concurrent workers never contend on the same rows; on SQLite the claim transaction
  starts with ``BEGIN IMMEDIATE`` (one writer at a time), which gives the same guarantee.
* **Fenced writes.** Every write a worker makes names the fence it claimed with. Once
  another worker has claimed the job (a new fence), the stale worker's write matches no row
  and raises :class:`StaleLease`: it must drop the job.
* **One transaction per transition.** Webhook events (outbox) and ledger rows are written in
  the same transaction as the state change they belong to, so neither can be lost or doubled.
* **Idempotent create.** ``(tenant, idempotency_key)`` is unique: the same key returns the
  same job; the same key with a different request is an error.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from vidgate.errors import InvalidRequest, NotFound, VidgateError
from vidgate.jobs import db
from vidgate.types import AttemptState, Job, JobState, VideoRequest


class StaleLease(VidgateError):
    """Another worker claimed this job since we did: our writes are void."""

    code = "stale_lease"


class IdempotencyConflict(InvalidRequest):
    """The idempotency key was used before with a different request."""

    code = "idempotency_conflict"
    http_status = 422


def _now() -> datetime:
    return datetime.now(UTC)


def request_hash(request: VideoRequest, extra: dict[str, Any] | None = None) -> str:
    body = request.model_dump(mode="json")
    # Fields added after jobs were stored leave the hash as it was while unset, so a retried
    # create with the same idempotency key still matches across an upgrade.
    for added in ("quality_gate",):
        if body.get(added) is None:
            body.pop(added, None)
    return hashlib.sha256(
        json.dumps([body, extra or {}], sort_keys=True, default=str).encode()
    ).hexdigest()


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes even for timezone-aware columns.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@dataclass
class Claim:
    """A job this worker holds: the fence it must present on every write."""

    job: Job
    fence: int
    owner: str
    cancel_requested: bool = False


@dataclass
class OutboxEvent:
    url: str
    event_type: str
    payload: dict[str, Any]
    endpoint_id: str | None = None
    id: str = field(default_factory=lambda: "msg_" + uuid.uuid4().hex)


@dataclass
class LedgerEntry:
    attempt_n: int
    offering_id: str
    amount_usd: float
    kind: str = "charge"
    #: resolves this attempt's ``pending`` row in place (one row per attempt, always)
    settles: bool = False


def pending_hold(job: Job) -> float:
    """What a job must keep reserved while it has attempts that may still bill (pending)."""
    return round(
        sum(
            a.estimated_cost_usd
            for a in job.attempts
            if a.cost_usd is None and a.state in (AttemptState.AMBIGUOUS, AttemptState.ABANDONED)
        ),
        6,
    )


@dataclass
class OutboxItem:
    id: str
    job_id: str
    tenant: str
    endpoint_id: str | None
    url: str
    event_type: str
    payload: str
    attempts: int
    created_at: datetime


class JobStore:
    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        self.engine = db.make_engine(url)
        self.is_postgres = self.engine.dialect.name == "postgresql"
        if migrate:
            db.upgrade(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    # -- create and read -------------------------------------------------------------------

    def create(
        self,
        job: Job,
        *,
        idempotency_key: str | None = None,
        fingerprint: str | None = None,
    ) -> tuple[Job, bool]:
        """Insert a job; with an idempotency key, return (existing job, False) on replay."""
        fp = fingerprint or request_hash(job.request)
        values = {
            "id": job.id,
            "tenant": job.tenant,
            "state": job.state.value,
            "terminal": job.state.terminal,
            "offering_id": job.offering_id,
            "idempotency_key": idempotency_key,
            "request_hash": fp,
            "created_at": job.created_at,
            "updated_at": job.updated_at,
            "version": 1,
            "fence": 0,
            "next_run_at": job.created_at,
            "cancel_requested": False,
            "doc": job.model_dump_json(),
        }
        try:
            with self._tx() as conn:
                conn.execute(insert(db.jobs).values(**values))
            return job, True
        except IntegrityError:
            if idempotency_key is None:
                raise
        with self._tx() as conn:
            row = conn.execute(
                select(db.jobs.c.doc, db.jobs.c.request_hash).where(
                    db.jobs.c.tenant == job.tenant, db.jobs.c.idempotency_key == idempotency_key
                )
            ).first()
        if row is None:  # pragma: no cover - the row that collided cannot vanish
            raise VidgateError("idempotency key collided with a job that no longer exists")
        if row.request_hash != fp:
            raise IdempotencyConflict(
                f"idempotency key {idempotency_key!r} was already used with a different "
                "request; use a new key for a new request"
            )
        return Job.model_validate_json(row.doc), False

    def get(self, job_id: str, tenant: str | None = None) -> Job:
        q = select(db.jobs.c.doc).where(db.jobs.c.id == job_id)
        if tenant is not None:
            q = q.where(db.jobs.c.tenant == tenant)
        with self._tx() as conn:
            row = conn.execute(q).first()
        if row is None:
            raise NotFound(f"no job {job_id!r}; list jobs with `vidgate jobs`")
        return Job.model_validate_json(row.doc)

    def list(
        self,
        *,
        tenant: str | None = None,
        state: JobState | None = None,
        limit: int = 50,
        before: datetime | None = None,
    ) -> builtins.list[Job]:
        q = select(db.jobs.c.doc).order_by(db.jobs.c.created_at.desc()).limit(limit)
        if tenant is not None:
            q = q.where(db.jobs.c.tenant == tenant)
        if state is not None:
            q = q.where(db.jobs.c.state == state.value)
        if before is not None:
            q = q.where(db.jobs.c.created_at < before)
        with self._tx() as conn:
            rows = conn.execute(q).all()
        return [Job.model_validate_json(r.doc) for r in rows]

    def counts(self, tenant: str | None = None) -> dict[str, int]:
        q = select(db.jobs.c.state, func.count()).group_by(db.jobs.c.state)
        if tenant is not None:
            q = q.where(db.jobs.c.tenant == tenant)
        with self._tx() as conn:
            return {s: n for s, n in conn.execute(q).all()}

    # -- claims ----------------------------------------------------------------------------

    def claim(
        self,
        owner: str,
        *,
        limit: int = 10,
        lease_s: float = 30.0,
        job_id: str | None = None,
    ) -> builtins.list[Claim]:
        """Claim up to ``limit`` due, unleased, non-terminal jobs (or one given job)."""
        now = _now()
        j = db.jobs
        # times in microseconds: < and <= differ only at one instant no caller can hit
        cond = and_(
            j.c.terminal.is_(False),
            or_(
                j.c.lease_until.is_(None),
                j.c.lease_until < now,  # pragma: no mutate — see above
            ),
        )
        if job_id is not None:
            cond = and_(cond, j.c.id == job_id)
        else:
            cond = and_(
                cond,
                # a time in microseconds: <= and < differ only at one instant no caller can hit
                j.c.next_run_at <= now,  # pragma: no mutate — see above
            )
        q = select(j.c.id, j.c.fence, j.c.state, j.c.doc, j.c.cancel_requested).where(cond)
        q = q.order_by(j.c.next_run_at).limit(limit)
        if self.is_postgres:
            q = q.with_for_update(skip_locked=True)
        claims: builtins.list[Claim] = []
        with self._tx() as conn:
            for row in conn.execute(q).all():
                fence = row.fence + 1
                try:
                    job = Job.model_validate_json(row.doc)
                except ValueError as e:
                    # A row this code cannot read must not take the worker down (nor be
                    # retried forever): set it aside, terminal, with the reason kept.
                    conn.execute(
                        update(j)
                        .where(
                            j.c.id == row.id,
                            # a race guard: the row was read (and on PostgreSQL locked) in
                            # this transaction; no sequential caller can move its fence
                            j.c.fence == row.fence,  # pragma: no mutate — see above
                        )
                        .values(
                            terminal=True,
                            quarantine=f"unreadable job record: {str(e)[:1500]}",
                            lease_owner=None,
                            lease_until=None,
                            fence=fence,
                        )
                    )
                    continue
                state = row.state
                if state == JobState.QUEUED.value:
                    state = JobState.ROUTING.value  # picked up: choosing where to submit
                    job.state = JobState.ROUTING
                res = conn.execute(
                    update(j)
                    .where(
                        j.c.id == row.id,
                        # a race guard, as above: no sequential caller can move the fence
                        j.c.fence == row.fence,  # pragma: no mutate — see above
                    )
                    .values(
                        lease_owner=owner,
                        lease_until=now + timedelta(seconds=lease_s),
                        fence=fence,
                        state=state,
                        doc=job.model_dump_json(),
                    )
                )
                if res.rowcount == 1:
                    claims.append(Claim(job, fence, owner, bool(row.cancel_requested)))
        return claims

    def renew(
        self, owner: str, fences: dict[str, int], lease_s: float = 30.0
    ) -> dict[str, dict[str, Any]]:
        """Extend the leases still held; returns {job_id: flags} for those (cancel, hint)."""
        if not fences:
            return {}
        now = _now()
        j = db.jobs
        held: dict[str, dict[str, Any]] = {}
        ids = list(fences)
        with self._tx() as conn:
            for chunk in (ids[i : i + 500] for i in range(0, len(ids), 500)):
                rows = conn.execute(
                    select(j.c.id, j.c.fence, j.c.cancel_requested, j.c.poll_hint_at).where(
                        j.c.id.in_(chunk),
                        j.c.lease_owner == owner,
                        # every terminal write clears the lease owner: the owner test above
                        # already leaves finished rows out
                        j.c.terminal.is_(False),  # pragma: no mutate — see above
                    )
                ).all()
                mine = [r for r in rows if r.fence == fences[r.id]]
                if mine:
                    conn.execute(
                        update(j)
                        .where(
                            j.c.id.in_([r.id for r in mine]),
                            # a race guard: these rows were read as this owner's in this same
                            # transaction (a concurrent takeover is a timing race a test
                            # cannot pin)
                            j.c.lease_owner == owner,  # pragma: no mutate — see above
                        )
                        .values(lease_until=now + timedelta(seconds=lease_s))
                    )
                for r in mine:
                    held[r.id] = {
                        "cancel_requested": bool(r.cancel_requested),
                        "poll_hint_at": _utc(r.poll_hint_at),
                    }
        return held

    def save(
        self,
        claim: Claim,
        *,
        next_run_at: datetime | None = None,
        events: Sequence[OutboxEvent] = (),
        ledger: Sequence[LedgerEntry] = (),
        release: bool = False,
    ) -> Job:
        """Write the claimed job (fenced) with its events and ledger rows, atomically."""
        job = claim.job
        now = _now()
        job.updated_at = now
        j = db.jobs
        # read only where ``book`` holds, and set there first
        release_usd = 0.0  # pragma: no mutate — see above
        book = bool(job.state.terminal and job.reserved_usd)
        if book and job.reserved_usd:
            # A parked job (or one with an abandoned attempt still running) keeps what its
            # pending rows may bill reserved until an operator or the driver resolves them.
            keep = min(job.reserved_usd, pending_hold(job))
            release_usd = job.reserved_usd - keep
            job.reserved_usd = keep or None
        values: dict[str, Any] = {
            "state": job.state.value,
            "terminal": job.state.terminal,
            "offering_id": job.offering_id,
            "updated_at": now,
            "version": j.c.version + 1,
            "doc": job.model_dump_json(),
        }
        if next_run_at is not None:
            values["next_run_at"] = next_run_at
        if release or job.state.terminal:
            values["lease_owner"] = None
            values["lease_until"] = None
        with self._tx() as conn:
            res = conn.execute(
                update(j)
                .where(j.c.id == job.id, j.c.fence == claim.fence, j.c.lease_owner == claim.owner)
                .values(**values)
            )
            if res.rowcount != 1:
                raise StaleLease(f"job {job.id}: lease lost (fence {claim.fence})")
            for ev in events:
                conn.execute(
                    insert(db.outbox).values(
                        id=ev.id,
                        job_id=job.id,
                        tenant=job.tenant,
                        endpoint_id=ev.endpoint_id,
                        url=ev.url,
                        event_type=ev.event_type,
                        payload=json.dumps(ev.payload, default=str),
                        created_at=now,
                        state="pending",
                        attempts=0,  # pragma: no mutate — the column's default is 0 too
                        next_attempt_at=now,
                    )
                )
            if book:
                # Release the hold and book what was actually billed, atomically with the
                # terminal state (so a crash can neither double-book nor leak a hold).
                t = db.tenants
                conn.execute(
                    update(t)
                    .where(t.c.id == job.tenant)
                    .values(
                        reserved_usd=t.c.reserved_usd - release_usd,
                        spent_usd=t.c.spent_usd + (job.cost_usd or 0.0),
                    )
                )
            for le in ledger:
                _book(conn, job, le, now, settle=le.settles)
        # the row's lease was cleared above, so this claim's writes are stale either way
        if release or job.state.terminal:  # pragma: no mutate — see above
            claim.owner = ""  # further writes through this claim are stale by construction
        return job

    def top_up(self, claim: Claim, amount: float) -> bool:
        """Grow the claimed job's reservation by ``amount`` against its tenant's budget, in
        one transaction with the job's (fenced) record, so the two can never disagree.
        False (nothing written) when the budget cannot cover it."""
        job = claim.job
        t, j = db.tenants, db.jobs
        new_hold = round((job.reserved_usd or 0.0) + amount, 6)
        doc = job.model_copy(update={"reserved_usd": new_hold}).model_dump_json()
        with self._tx() as conn:
            res = conn.execute(
                update(t)
                .where(
                    t.c.id == job.tenant,
                    (t.c.budget_usd.is_(None))
                    | (t.c.spent_usd + t.c.reserved_usd + amount <= t.c.budget_usd + 1e-9),
                )
                .values(reserved_usd=t.c.reserved_usd + amount)
            )
            if res.rowcount != 1:
                return False
            res = conn.execute(
                update(j)
                .where(j.c.id == job.id, j.c.fence == claim.fence, j.c.lease_owner == claim.owner)
                .values(doc=doc, updated_at=_now(), version=j.c.version + 1)
            )
            if res.rowcount != 1:
                raise StaleLease(f"job {job.id}: lease lost (fence {claim.fence})")
        job.reserved_usd = new_hold
        return True

    def hand_back(self, claim: Claim) -> bool:
        """Release a claim without touching the job's stored state (graceful shutdown): the
        job is due again at once for any worker. False when the lease was already gone."""
        j = db.jobs
        with self._tx() as conn:
            res = conn.execute(
                update(j)
                .where(
                    j.c.id == claim.job.id,
                    j.c.fence == claim.fence,
                    j.c.lease_owner == claim.owner,
                    # every terminal write clears the lease owner: the owner test above
                    # already leaves finished rows out
                    j.c.terminal.is_(False),  # pragma: no mutate — see above
                )
                .values(lease_owner=None, lease_until=None, next_run_at=_now())
            )
        claim.owner = ""
        return bool(res.rowcount)

    def drive_failed(self, claim: Claim, error: str, max_errors: int) -> int:
        """Count one crash of the code driving this job (the count survives restarts and
        other workers). Returns the count; at ``max_errors`` the caller fails the job."""
        j = db.jobs
        with self._tx() as conn:
            conn.execute(
                update(j)
                .where(j.c.id == claim.job.id, j.c.fence == claim.fence)
                .values(drive_errors=j.c.drive_errors + 1, last_drive_error=error[:4000])
            )
            n = conn.execute(select(j.c.drive_errors).where(j.c.id == claim.job.id)).scalar()
        return int(n or 0)

    def quarantined(self) -> builtins.list[dict[str, Any]]:
        """Rows set aside because they could not be read (id, state, reason)."""
        j = db.jobs
        with self._tx() as conn:
            rows = conn.execute(
                select(j.c.id, j.c.tenant, j.c.state, j.c.quarantine).where(
                    j.c.quarantine.is_not(None)
                )
            ).all()
        return [dict(r._mapping) for r in rows]

    def reopen(
        self,
        job: Job,
        *,
        ledger: Sequence[LedgerEntry] = (),
        expect_state: JobState = JobState.NEEDS_RECONCILIATION,
    ) -> Job:
        """An operator's decision on a parked job: rewrite it (terminal or live again) with
        its ledger rows, undoing the parked state's booking so the next terminal write books
        the whole cost exactly once. Only a job still in ``expect_state`` qualifies."""
        j, t = db.jobs, db.tenants
        now = _now()
        with self._tx() as conn:
            row = conn.execute(
                select(j.c.doc, j.c.fence).where(
                    j.c.id == job.id,
                    j.c.state == expect_state.value,
                    j.c.lease_owner.is_(None),
                )
            ).first()
            if row is None:
                raise StaleLease(f"job {job.id} is no longer {expect_state.value}")
            before = Job.model_validate_json(row.doc)
            if before.reserved_usd or before.cost_usd:
                # The parked write booked its cost and kept a hold; take both back here
                # and book the new outcome below (or at the job's next terminal write).
                conn.execute(
                    update(t)
                    .where(t.c.id == job.tenant)
                    .values(spent_usd=t.c.spent_usd - (before.cost_usd or 0.0))
                )
            book = job.state.terminal and job.reserved_usd
            release = (job.reserved_usd or 0.0) - min(job.reserved_usd or 0.0, pending_hold(job))
            if book:
                conn.execute(
                    update(t)
                    .where(t.c.id == job.tenant)
                    .values(
                        reserved_usd=t.c.reserved_usd - release,
                        spent_usd=t.c.spent_usd + (job.cost_usd or 0.0),
                    )
                )
                job.reserved_usd = (job.reserved_usd or 0.0) - release or None
            elif job.state.terminal:
                conn.execute(
                    update(t)
                    .where(t.c.id == job.tenant)
                    .values(spent_usd=t.c.spent_usd + (job.cost_usd or 0.0))
                )
            job.updated_at = now
            conn.execute(
                update(j)
                .where(
                    j.c.id == job.id,
                    # a race guard: the row was read above in this transaction, unleased, so no
                    # sequential caller can change its fence in between (a concurrent claim is a
                    # timing race a test cannot pin)
                    j.c.fence == row.fence,  # pragma: no mutate — see above
                )
                .values(
                    state=job.state.value,
                    terminal=job.state.terminal,
                    offering_id=job.offering_id,
                    updated_at=now,
                    version=j.c.version + 1,
                    fence=row.fence + 1,
                    next_run_at=now,
                    doc=job.model_dump_json(),
                )
            )
            for le in ledger:
                _book(conn, job, le, now, settle=True)
        return job

    def update_finished(self, job: Job) -> Job:
        """Rewrite a terminal job's record (e.g. marking it deleted). Terminal jobs are
        never claimed again, so no fence is needed — but only terminal rows qualify."""
        j = db.jobs
        with self._tx() as conn:
            res = conn.execute(
                update(j)
                .where(j.c.id == job.id, j.c.terminal.is_(True))
                .values(doc=job.model_dump_json(), updated_at=_now(), version=j.c.version + 1)
            )
        if res.rowcount != 1:
            raise StaleLease(f"job {job.id} is not finished")
        return job

    def request_cancel(self, job_id: str, tenant: str | None = None) -> Job:
        """Flag a job for cancellation; its worker acts on it at its next heartbeat."""
        j = db.jobs
        cond = [j.c.id == job_id]
        if tenant is not None:
            cond.append(j.c.tenant == tenant)
        with self._tx() as conn:
            res = conn.execute(
                update(j).where(*cond).values(cancel_requested=True, next_run_at=_now())
            )
        if res.rowcount != 1:
            raise NotFound(f"no job {job_id!r}")
        # the update above matched the tenant already: reading without it finds the same job
        return self.get(job_id, tenant)  # pragma: no mutate — see above

    def hint_poll(self, job_id: str) -> bool:
        """A provider callback says something changed: poll this job soon (never trusted
        as state). Returns whether the job exists and is still running."""
        j = db.jobs
        with self._tx() as conn:
            res = conn.execute(
                update(j)
                .where(j.c.id == job_id, j.c.terminal.is_(False))
                .values(poll_hint_at=_now(), next_run_at=_now())
            )
        return bool(res.rowcount)

    def find_by_remote_id(self, protocol: str, remote_id: str) -> str | None:
        """The job whose live attempt has this provider job id (for callbacks)."""
        needle = f'"remote_id":"{remote_id}"'
        with self._tx() as conn:
            rows = conn.execute(
                select(db.jobs.c.id, db.jobs.c.doc).where(
                    db.jobs.c.terminal.is_(False),
                    # every row is checked below: the text filter only saves work
                    db.jobs.c.doc.contains(needle),  # pragma: no mutate — see above
                )
            ).all()
        for row in rows:
            job = Job.model_validate_json(row.doc)
            for a in job.attempts:
                pj = a.provider_job or {}
                if pj.get("remote_id") == remote_id and pj.get("protocol") == protocol:
                    return str(row.id)
        return None

    # -- ledger ----------------------------------------------------------------------------

    def ledger(
        self, *, job_id: str | None = None, tenant: str | None = None
    ) -> builtins.list[dict[str, Any]]:
        q = select(db.ledger).order_by(db.ledger.c.id)
        if job_id is not None:
            q = q.where(db.ledger.c.job_id == job_id)
        if tenant is not None:
            q = q.where(db.ledger.c.tenant == tenant)
        with self._tx() as conn:
            return [dict(r._mapping) for r in conn.execute(q).all()]

    # -- outbox ----------------------------------------------------------------------------

    def claim_outbox(
        self, owner: str, *, limit: int = 20, lease_s: float = 60.0
    ) -> builtins.list[OutboxItem]:
        now = _now()
        o = db.outbox
        q = (
            select(o)
            .where(
                o.c.state == "pending",
                # times in microseconds: < and <= differ only at one instant no caller can hit
                o.c.next_attempt_at <= now,  # pragma: no mutate — see above
                or_(
                    o.c.lease_until.is_(None),
                    o.c.lease_until < now,  # pragma: no mutate — see above
                ),
            )
            .order_by(o.c.next_attempt_at)
            .limit(limit)
        )
        if self.is_postgres:
            q = q.with_for_update(skip_locked=True)
        items = []
        with self._tx() as conn:
            for r in conn.execute(q).all():
                conn.execute(
                    update(o)
                    .where(o.c.id == r.id)
                    .values(lease_owner=owner, lease_until=now + timedelta(seconds=lease_s))
                )
                items.append(
                    OutboxItem(
                        id=r.id,
                        job_id=r.job_id,
                        tenant=r.tenant,
                        endpoint_id=r.endpoint_id,
                        url=r.url,
                        event_type=r.event_type,
                        payload=r.payload,
                        attempts=r.attempts,
                        created_at=_utc(r.created_at) or now,
                    )
                )
        return items

    def outbox_result(
        self,
        item_id: str,
        *,
        state: str,
        status: int | None = None,
        error: str | None = None,
        retry_at: datetime | None = None,
    ) -> None:
        o = db.outbox
        values: dict[str, Any] = {
            "state": state,
            "attempts": o.c.attempts + 1,
            "last_status": status,
            "last_error": error,
            "lease_owner": None,
            "lease_until": None,
        }
        if retry_at is not None:
            values["next_attempt_at"] = retry_at
        if state == "delivered":
            values["delivered_at"] = _now()
        with self._tx() as conn:
            conn.execute(update(o).where(o.c.id == item_id).values(**values))

    def outbox(self, job_id: str | None = None) -> builtins.list[dict[str, Any]]:
        q = select(db.outbox).order_by(db.outbox.c.created_at)
        if job_id is not None:
            q = q.where(db.outbox.c.job_id == job_id)
        with self._tx() as conn:
            return [dict(r._mapping) for r in conn.execute(q).all()]

    # -- webhook endpoints -----------------------------------------------------------------

    def add_endpoint(self, tenant: str, url: str, secret: str) -> str:
        eid = "we_" + uuid.uuid4().hex[:16]
        with self._tx() as conn:
            conn.execute(
                insert(db.webhook_endpoints).values(
                    id=eid,
                    tenant=tenant,
                    url=url,
                    secret=secret,
                    enabled=True,  # pragma: no mutate — the column's default is True too
                    created_at=_now(),
                )
            )
        return eid

    def endpoints(self, tenant: str, *, enabled_only: bool = True) -> builtins.list[dict[str, Any]]:
        w = db.webhook_endpoints
        q = select(w).where(w.c.tenant == tenant)
        if enabled_only:
            q = q.where(w.c.enabled.is_(True))
        with self._tx() as conn:
            return [dict(r._mapping) for r in conn.execute(q).all()]

    def endpoint(self, endpoint_id: str) -> dict[str, Any] | None:
        w = db.webhook_endpoints
        with self._tx() as conn:
            row = conn.execute(select(w).where(w.c.id == endpoint_id)).first()
        return dict(row._mapping) if row else None

    def disable_endpoint(self, endpoint_id: str, reason: str) -> None:
        """A 410 Gone: stop sending to this endpoint, and drop what was queued for it."""
        w, o = db.webhook_endpoints, db.outbox
        with self._tx() as conn:
            conn.execute(
                update(w).where(w.c.id == endpoint_id).values(enabled=False, disabled_reason=reason)
            )
            conn.execute(
                update(o)
                .where(o.c.endpoint_id == endpoint_id, o.c.state == "pending")
                .values(state="disabled")
            )

    # -- workers ---------------------------------------------------------------------------

    def worker_heartbeat(self, worker_id: str, host: str, pid: int, capacity: int) -> None:
        w = db.workers
        now = _now()
        with self._tx() as conn:
            res = conn.execute(update(w).where(w.c.id == worker_id).values(last_seen=now))
            if res.rowcount == 0:
                conn.execute(
                    insert(w).values(
                        id=worker_id,
                        host=host,
                        pid=pid,
                        capacity=capacity,
                        started_at=now,
                        last_seen=now,
                    )
                )

    def worker_gone(self, worker_id: str) -> None:
        with self._tx() as conn:
            conn.execute(db.workers.delete().where(db.workers.c.id == worker_id))

    def live_workers(self, within_s: float = 15.0) -> builtins.list[dict[str, Any]]:
        since = _now() - timedelta(seconds=within_s)
        with self._tx() as conn:
            rows = conn.execute(
                # an age in microseconds: > and >= differ only at one instant no caller can hit
                select(db.workers).where(db.workers.c.last_seen >= since)  # pragma: no mutate
            ).all()
        return [dict(r._mapping) for r in rows]


def _book(conn: Connection, job: Job, le: LedgerEntry, now: datetime, *, settle: bool) -> None:
    """Write an attempt's ledger row. Settling turns its ``pending`` row (an ambiguous or
    abandoned attempt booked at its estimate) into the final one in place, so every attempt
    keeps exactly one row; with no pending row there, the row is inserted."""
    if settle:
        res = conn.execute(
            update(db.ledger)
            .where(
                db.ledger.c.job_id == job.id,
                db.ledger.c.attempt_n == le.attempt_n,
                db.ledger.c.kind == "pending",
            )
            .values(kind=le.kind, amount_usd=le.amount_usd, created_at=now)
        )
        if res.rowcount:
            return
    conn.execute(
        insert(db.ledger).values(
            job_id=job.id,
            attempt_n=le.attempt_n,
            tenant=job.tenant,
            offering_id=le.offering_id,
            kind=le.kind,
            amount_usd=le.amount_usd,
            created_at=now,
        )
    )
