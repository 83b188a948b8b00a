"""Operators resolve parked jobs over the native API (admin keys only).

``GET  /v1/admin/jobs/needs_reconciliation`` — every parked job, why, and what to check.
``POST /v1/admin/jobs/{id}/reconcile`` with ``{"action": "adopt", "provider_job_id": …}``,
``{"action": "resubmit"}`` or ``{"action": "abandon"}`` — the same decisions as
``vidgate reconcile``, each one transaction with the ledger row that keeps the money right
(see :mod:`vidgate.jobs.reconcile`). A key that is not admin gets 404, as for any route it
may not see.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field

from vidgate.billing.accounts import KeyInfo
from vidgate.gateway import Gateway
from vidgate.jobs.reconcile import explain, reconcile
from vidgate.server.deps import caller, gateway
from vidgate.server.errors import ApiError
from vidgate.types import JobState

router = APIRouter(prefix="/v1/admin", tags=["admin"])

JobId = Annotated[str, Path(max_length=64)]


class ReconcileBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["adopt", "resubmit", "abandon"]
    provider_job_id: Annotated[str | None, Field(min_length=1, max_length=256)] = None


def _admin(key: KeyInfo) -> KeyInfo:
    if not getattr(key, "admin", False):
        raise ApiError(404, "not_found", "no such route for this key")
    return key


@router.get("/jobs/needs_reconciliation")
async def parked(
    key: Annotated[KeyInfo, Depends(caller)], gw: Annotated[Gateway, Depends(gateway)]
) -> dict[str, Any]:
    _admin(key)
    jobs = await asyncio.to_thread(gw.store.list, state=JobState.NEEDS_RECONCILIATION, limit=1000)
    out = []
    for j in jobs:
        p = explain(j, gw.catalog)
        out.append(
            {
                "job_id": p.job_id,
                "tenant": p.tenant,
                "attempt": p.attempt,
                "offering_id": p.offering_id,
                "provider": p.provider,
                "reason": p.reason,
                "idempotency_key": p.idempotency_key,
                "window": [t.isoformat() if t else None for t in p.window],
                "pending_usd": p.pending_usd,
                "check": p.check,
            }
        )
    return {"data": out}


@router.post("/jobs/{job_id}/reconcile")
async def reconcile_job(
    job_id: JobId,
    body: ReconcileBody,
    key: Annotated[KeyInfo, Depends(caller)],
    gw: Annotated[Gateway, Depends(gateway)],
) -> dict[str, Any]:
    _admin(key)
    job = await asyncio.to_thread(
        reconcile,
        gw.store,
        gw.catalog,
        gw.for_offering,
        job_id,
        body.action,
        provider_job_id=body.provider_job_id,
        operator=f"key {key.id}",
    )
    return job.model_dump(mode="json")
