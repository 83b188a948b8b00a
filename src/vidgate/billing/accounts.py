"""Tenants, API keys, budgets and stored idempotent responses.

* Keys are random 256-bit tokens shown once; only their SHA-256 is stored (a fast hash is
  right for high-entropy secrets: there is nothing to brute-force).
* A budget is enforced by **reserving** a job's worst-case cost when it is submitted, in one
  conditional UPDATE (``spent + reserved + amount <= budget``), so concurrent submits can
  never overspend; at the end the reservation is released and the actual cost booked, in the
  same transaction as the job's terminal state (see JobStore.save).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from vidgate.billing.reported import reported_vs_estimated
from vidgate.errors import BudgetExceeded, InvalidRequest
from vidgate.jobs import db
from vidgate.jobs.store import JobStore

KEY_PREFIX = "vg_"
#: an Idempotency-Key claimed this long ago and never finished belongs to a dead process
IDEMPOTENCY_STALE_S = 120.0


def _now() -> datetime:
    return datetime.now(UTC)


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class KeyInfo:
    id: str
    tenant: str
    rpm: int | None
    #: sees every tenant (dashboard): a property of the key, never of the tenant's name
    admin: bool = False


@dataclass(frozen=True)
class IdempotencyState:
    outcome: str  # "new", "replay", "in_progress", "conflict"
    status_code: int | None = None
    response: str | None = None


class Accounts:
    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.engine = store.engine

    # -- tenants ---------------------------------------------------------------------------

    def ensure_tenant(
        self,
        tenant: str,
        *,
        budget_usd: float | None = None,
        markup: float | None = None,
        max_concurrent_jobs: int | None = None,
    ) -> dict[str, Any]:
        if not tenant or len(tenant) > 64 or not all(c.isalnum() or c in "-_." for c in tenant):
            raise InvalidRequest("tenant ids are 1-64 letters, digits, '-', '_' or '.'")
        t = db.tenants
        with self.engine.begin() as conn:
            row = conn.execute(select(t).where(t.c.id == tenant)).first()
            if row is None:
                conn.execute(
                    insert(t).values(
                        id=tenant,
                        budget_usd=budget_usd,
                        reserved_usd=0.0,
                        spent_usd=0.0,
                        markup=markup if markup is not None else 1.0,
                        max_concurrent_jobs=max_concurrent_jobs,
                        created_at=_now(),
                    )
                )
            else:
                values: dict[str, Any] = {}
                if budget_usd is not None:
                    values["budget_usd"] = budget_usd
                if markup is not None:
                    values["markup"] = markup
                if max_concurrent_jobs is not None:
                    values["max_concurrent_jobs"] = max_concurrent_jobs
                if values:
                    conn.execute(update(t).where(t.c.id == tenant).values(**values))
            return dict(conn.execute(select(t).where(t.c.id == tenant)).one()._mapping)

    def tenant(self, tenant: str) -> dict[str, Any] | None:
        with self.engine.begin() as conn:
            row = conn.execute(select(db.tenants).where(db.tenants.c.id == tenant)).first()
        return dict(row._mapping) if row else None

    def reserve(self, tenant: str, amount: float) -> bool:
        """Atomically hold ``amount`` against the tenant's budget. False: no tenant row
        (no budget to enforce). Raises BudgetExceeded when it does not fit."""
        t = db.tenants
        with self.engine.begin() as conn:
            res = conn.execute(
                update(t)
                .where(
                    t.c.id == tenant,
                    (t.c.budget_usd.is_(None))
                    | (t.c.spent_usd + t.c.reserved_usd + amount <= t.c.budget_usd + 1e-9),
                )
                .values(reserved_usd=t.c.reserved_usd + amount)
            )
            if res.rowcount == 1:
                return True
            row = conn.execute(select(t).where(t.c.id == tenant)).first()
        if row is None:
            return False
        left = (row.budget_usd or 0) - row.spent_usd - row.reserved_usd
        raise BudgetExceeded(
            f"tenant {tenant} has ${max(0.0, left):.2f} of its ${row.budget_usd:.2f} budget "
            f"left; this job may cost up to ${amount:.2f}"
        )

    def release(self, tenant: str, amount: float) -> None:
        t = db.tenants
        with self.engine.begin() as conn:
            conn.execute(
                update(t)
                .where(t.c.id == tenant)
                .values(
                    reserved_usd=func.max(t.c.reserved_usd - amount, 0.0)
                    if self.engine.dialect.name == "sqlite"
                    else func.greatest(t.c.reserved_usd - amount, 0.0)
                )
            )

    def running_jobs(self, tenant: str) -> int:
        j = db.jobs
        with self.engine.begin() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(j.c.tenant == tenant, j.c.terminal.is_(False))
                ).scalar_one()
            )

    def spend(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Per tenant: budget, reserved, spent (provider cost), charged (× markup), by
        offering from the ledger."""
        t, led = db.tenants, db.ledger
        with self.engine.begin() as conn:
            q = select(t)
            if tenant is not None:
                q = q.where(t.c.id == tenant)
            tenants = {r.id: dict(r._mapping) for r in conn.execute(q).all()}
            lq = (
                select(led.c.tenant, led.c.offering_id, func.sum(led.c.amount_usd), func.count())
                .where(led.c.kind == "charge")
                .group_by(led.c.tenant, led.c.offering_id)
            )
            if tenant is not None:
                lq = lq.where(led.c.tenant == tenant)
            rows = conn.execute(lq).all()
        # every tenant's reports, then this tenant's picked below: the filter saves work only
        reported = reported_vs_estimated(self.engine, tenant)  # pragma: no mutate — see above
        out: dict[str, dict[str, Any]] = {}
        for tid, row in tenants.items():
            out[tid] = {
                "tenant": tid,
                "budget_usd": row["budget_usd"],
                "reserved_usd": round(row["reserved_usd"], 6),
                "markup": row["markup"],
                "by_offering": {},
                "spent_usd": 0.0,
            }
        for tid, oid, amount, n in rows:
            entry = out.setdefault(
                tid,
                {
                    "tenant": tid,
                    "budget_usd": None,
                    "reserved_usd": 0.0,
                    "markup": 1.0,
                    "by_offering": {},
                    "spent_usd": 0.0,
                },
            )
            entry["by_offering"][oid] = {
                "usd": round(float(amount), 6),
                "clips": int(n),
                # beside the charge: our estimate, and what the provider itself reported
                **reported.get(tid, {}).get(oid, {}),
            }
            entry["spent_usd"] += float(amount)
        # A pending row (an ambiguous or abandoned attempt that may have billed) counts at
        # its estimate until it is resolved: spend never reads low.
        # every tenant's pending rows, then only those of tenants shown: the filter saves work
        for tid, pend in self._pending(tenant).items():  # pragma: no mutate — see above
            if tid in out:
                out[tid]["pending_usd"] = round(pend, 6)
                out[tid]["spent_usd"] += pend
        for entry in out.values():
            entry.setdefault("pending_usd", 0.0)
            entry["spent_usd"] = round(entry["spent_usd"], 6)
            entry["charged_usd"] = round(entry["spent_usd"] * entry["markup"], 6)
        return sorted(out.values(), key=lambda e: e["tenant"])

    def _pending(self, tenant: str | None) -> dict[str, float]:
        led = db.ledger
        q = (
            select(led.c.tenant, func.sum(led.c.amount_usd))
            .where(led.c.kind == "pending")
            .group_by(led.c.tenant)
        )
        if tenant is not None:
            q = q.where(led.c.tenant == tenant)
        with self.engine.begin() as conn:
            return {tid: float(amount) for tid, amount in conn.execute(q).all()}

    # -- keys ------------------------------------------------------------------------------

    def create_key(
        self, tenant: str, *, rpm: int | None = None, admin: bool = False
    ) -> tuple[str, str]:
        """Create a key; returns (key id, the raw key — shown once, never stored)."""
        self.ensure_tenant(tenant)
        # 32 bytes is also token_urlsafe's default, so "None" is the same key (its length is
        # held by a test)
        raw = KEY_PREFIX + secrets.token_urlsafe(32)  # pragma: no mutate — see above
        kid = "key_" + uuid.uuid4().hex[:16]
        with self.engine.begin() as conn:
            conn.execute(
                insert(db.api_keys).values(
                    id=kid,
                    tenant=tenant,
                    key_hash=hash_key(raw),
                    prefix=raw[:10],
                    rpm=rpm,
                    revoked=False,  # pragma: no mutate — the column's default is False too
                    created_at=_now(),
                    admin=admin,
                )
            )
        return kid, raw

    def authenticate(self, raw: str) -> KeyInfo | None:
        k = db.api_keys
        with self.engine.begin() as conn:
            row = conn.execute(
                select(k.c.id, k.c.tenant, k.c.rpm, k.c.admin).where(
                    k.c.key_hash == hash_key(raw), k.c.revoked.is_(False)
                )
            ).first()
        return KeyInfo(row.id, row.tenant, row.rpm, bool(row.admin)) if row else None

    def revoke_key(self, key_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(db.api_keys).where(db.api_keys.c.id == key_id).values(revoked=True))

    def keys(self, tenant: str | None = None) -> list[dict[str, Any]]:
        k = db.api_keys
        q = select(k.c.id, k.c.tenant, k.c.prefix, k.c.rpm, k.c.admin, k.c.revoked, k.c.created_at)
        if tenant is not None:
            q = q.where(k.c.tenant == tenant)
        with self.engine.begin() as conn:
            return [dict(r._mapping) for r in conn.execute(q).all()]

    # -- idempotent responses --------------------------------------------------------------

    def idem_begin(self, tenant: str, key: str, request_hash: str) -> IdempotencyState:
        i = db.idempotency
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(i).values(
                        tenant=tenant,
                        key=key,
                        request_hash=request_hash,
                        state="in_progress",
                        created_at=_now(),
                    )
                )
            return IdempotencyState("new")
        except IntegrityError:
            pass
        with self.engine.begin() as conn:
            row = conn.execute(select(i).where(i.c.tenant == tenant, i.c.key == key)).one()
        if row.request_hash != request_hash:
            return IdempotencyState("conflict")
        if row.state != "done":
            started = (
                row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
            )
            # an age in microseconds: > and >= differ only at one instant no caller can hit
            if _now() - started > timedelta(seconds=IDEMPOTENCY_STALE_S):  # pragma: no mutate
                # The process handling it died. Taking the key over is safe: the job store
                # holds the same key, so re-running returns the job the first run made.
                with self.engine.begin() as conn:
                    res = conn.execute(
                        update(i)
                        # Race guards: of two processes taking the same stale key over, the
                        # second finds the row changed and waits. Run one at a time, the row
                        # read above meets every condition, so no sequential test can see one
                        # go (two concurrent takeovers are a timing race a test cannot pin).
                        .where(
                            i.c.tenant == tenant,  # pragma: no mutate — see above
                            i.c.key == key,  # pragma: no mutate — see above
                            i.c.state == "in_progress",  # pragma: no mutate — see above
                            i.c.created_at == row.created_at,  # pragma: no mutate — see above
                        )
                        .values(created_at=_now())
                    )
                if res.rowcount == 1:
                    return IdempotencyState("new")
            return IdempotencyState("in_progress")
        return IdempotencyState("replay", row.status_code, row.response)

    def idem_finish(self, tenant: str, key: str, status_code: int, response: str) -> None:
        i = db.idempotency
        with self.engine.begin() as conn:
            conn.execute(
                update(i)
                .where(i.c.tenant == tenant, i.c.key == key)
                .values(state="done", status_code=status_code, response=response)
            )

    def idem_abort(self, tenant: str, key: str) -> None:
        """Forget a key whose request failed before doing anything, so a retry can run."""
        i = db.idempotency
        with self.engine.begin() as conn:
            conn.execute(
                i.delete().where(i.c.tenant == tenant, i.c.key == key, i.c.state == "in_progress")
            )
