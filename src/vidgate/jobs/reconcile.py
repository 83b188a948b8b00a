"""An operator's decision on a parked job (``needs_reconciliation``), with the money kept right.

A job is parked when a create may or may not have reached the provider and nothing could
tell which. Its ambiguous attempt holds a ``pending`` ledger row (counted in spend) and the
job keeps that much reserved. Three ways out, each one transaction (:meth:`JobStore.reopen`):

* ``adopt PROVIDER_JOB_ID`` — the operator found the remote job: the attempt takes that id,
  the job goes back to ``submitted`` and a worker follows it; its pending row is settled by
  what the clip costs when it ends (charge) or void if it fails.
* ``resubmit`` — the operator checked the provider has no such job: the pending row becomes
  ``void`` $0 and the job goes back to ``routing``; the same offering may be tried again.
* ``abandon`` — stop here: the job ends ``failed`` and the pending row becomes a ``charge``
  at the estimate (the provider may have billed and we chose not to find out: the tenant's
  spend shows the worst case, never less).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from vidgate.catalog.loader import Catalog
from vidgate.errors import InvalidRequest
from vidgate.jobs.store import JobStore, LedgerEntry
from vidgate.providers.base import Provider, ProviderJob
from vidgate.types import AttemptState, Job, JobState

ACTIONS = ("adopt", "resubmit", "abandon")


@dataclass(frozen=True)
class Parked:
    """Why a job is parked and what an operator should check."""

    job_id: str
    tenant: str
    attempt: int
    offering_id: str
    provider: str
    reason: str
    idempotency_key: str
    window: tuple[datetime, datetime | None]
    pending_usd: float
    check: str


def _ambiguous(job: Job) -> int:
    for i in range(len(job.attempts) - 1, -1, -1):
        a = job.attempts[i]
        if a.state is AttemptState.AMBIGUOUS and a.cost_usd is None:
            return i
    raise InvalidRequest(f"job {job.id} has no unresolved ambiguous attempt")


def explain(job: Job, catalog: Catalog) -> Parked:
    idx = _ambiguous(job)
    a = job.attempts[idx]
    offering = catalog.offerings.get(a.offering_id)
    provider = offering.provider if offering else "?"
    start, end = a.started_at, a.ended_at
    span = f"{start:%Y-%m-%d %H:%M:%S}" + (f"–{end:%H:%M:%S} UTC" if end else " UTC onwards")
    check = (
        f"look in {provider}'s console for a {a.offering_id} job created {span} with the "
        f"prompt {job.request.prompt[:60]!r} (our key {a.idempotency_key}); found: "
        f"`vidgate reconcile {job.id} --adopt ID`; none: `--resubmit`; give up: `--abandon`"
    )
    return Parked(
        job_id=job.id,
        tenant=job.tenant,
        attempt=a.n,
        offering_id=a.offering_id,
        provider=provider,
        reason=str((a.error or job.error or {}).get("message", "ambiguous create")),
        idempotency_key=a.idempotency_key,
        window=(start, end),
        pending_usd=a.estimated_cost_usd,
        check=check,
    )


def reconcile(
    store: JobStore,
    catalog: Catalog,
    adapter_for: Any,
    job_id: str,
    action: str,
    *,
    provider_job_id: str | None = None,
    operator: str = "operator",
    tenant: str | None = None,
) -> Job:
    """Apply one operator decision to a parked job; returns the job as stored."""
    if action not in ACTIONS:
        raise InvalidRequest(f"action must be one of {', '.join(ACTIONS)}")
    if (action == "adopt") != bool(provider_job_id):
        raise InvalidRequest("adopt needs the provider's job id, and only adopt takes one")
    job = store.get(job_id, tenant)
    if job.state is not JobState.NEEDS_RECONCILIATION:
        raise InvalidRequest(f"job {job_id} is {job.state.value}, not needs_reconciliation")
    idx = _ambiguous(job)
    a = job.attempts[idx]
    now = datetime.now(UTC)
    note: dict[str, Any] = {"action": action, "attempt": a.n, "by": operator, "at": now.isoformat()}
    ledger: list[LedgerEntry] = []
    if action == "adopt":
        assert provider_job_id is not None
        offering = catalog.offering(a.offering_id)
        adapter: Provider = adapter_for(offering)
        pj = ProviderJob(
            protocol=offering.protocol,
            offering_id=offering.id,
            remote_id=provider_job_id,
            base_url=str(getattr(adapter, "base_url", "") or ""),
            credential_ref=tuple(offering.credential_env or ()),
        )
        a.provider_job = pj.model_dump(mode="json")
        a.state = AttemptState.SUBMITTED
        a.ended_at = None
        note["provider_job_id"] = provider_job_id
        job.state = JobState.SUBMITTED
        job.offering_id = a.offering_id
        job.error = None
        job.finished_at = None
        job.cost_usd = None
        # The pending row stays: the driver settles it when the adopted job ends.
    elif action == "resubmit":
        a.cost_usd = 0.0
        a.error = {**(a.error or {}), "operator_resubmit": True}
        ledger.append(LedgerEntry(a.n, a.offering_id, 0.0, kind="void", settles=True))
        job.state = JobState.ROUTING
        job.error = None
        job.finished_at = None
        job.cost_usd = None
    else:
        a.cost_usd = a.estimated_cost_usd
        ledger.append(
            LedgerEntry(a.n, a.offering_id, a.estimated_cost_usd, kind="charge", settles=True)
        )
        job.state = JobState.FAILED
        job.error = {
            "code": "abandoned",
            "message": f"abandoned by {operator} after an ambiguous create; charged the "
            f"estimate ${a.estimated_cost_usd:.2f} as the worst case",
        }
        job.finished_at = now
        job.cost_usd = round(sum(x.cost_usd or 0.0 for x in job.attempts), 6)
    billing = dict(job.billing or {})
    billing["reconciled"] = [*billing.get("reconciled", []), note]
    job.billing = billing
    return store.reopen(job, ledger=ledger)
