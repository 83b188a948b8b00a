"""Reported vs estimated spend: what providers said they charged beside what we estimated.

The ledger holds one row per attempt at the amount charged (the provider-reported cost where
one was read, see :func:`vidgate.billing.settle.reported_charge`); the estimate and the
provider's own report live on the attempt in the job document. This reads them back per tenant
and offering for ``vidgate spend`` and the dashboard.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine, select

from vidgate.jobs import db


def reported_vs_estimated(engine: Engine, tenant: str | None = None) -> dict[str, dict[str, Any]]:
    """``{tenant: {offering: {estimated_usd, reported_usd, reported_clips, over_reservation}}}``
    over charged attempts. ``reported_usd`` sums only the attempts a provider reported a
    priced cost for; ``estimated_usd`` sums every charged attempt's estimate."""
    q = select(db.jobs.c.tenant, db.jobs.c.doc)
    if tenant is not None:
        q = q.where(db.jobs.c.tenant == tenant)
    out: dict[str, dict[str, Any]] = {}
    with engine.connect() as conn:
        for tid, doc in conn.execute(q):
            try:
                job = json.loads(doc)
            except ValueError:
                continue  # an unreadable row is the quarantine's business, not spend's
            delivery = (job.get("billing") or {}).get("delivery") or {}
            over_n = delivery.get("attempt") if delivery.get("over_reservation") else None
            for a in job.get("attempts") or []:
                if not a.get("cost_usd"):
                    continue
                row = out.setdefault(tid, {}).setdefault(
                    a["offering_id"],
                    {
                        "estimated_usd": 0.0,
                        "reported_usd": 0.0,
                        "reported_clips": 0,
                        "over_reservation": 0,
                    },
                )
                row["estimated_usd"] = round(row["estimated_usd"] + a["estimated_cost_usd"], 6)
                rep = a.get("reported_cost") or {}
                if rep.get("usd") is not None:
                    row["reported_usd"] = round(row["reported_usd"] + float(rep["usd"]), 6)
                    row["reported_clips"] += 1
                if over_n is not None and a.get("n") == over_n:
                    row["over_reservation"] += 1
    return out
