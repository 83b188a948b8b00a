"""The last resort of every route: wait in ``queued`` while every route is down.

Seed 001's chain ends primary API → secondary API → self-hosted → *queued*. When every ranked
offering is down for now — its breaker open, its rate-limit window full, its model server's
queue full or not answering — and the job has a deadline that leaves time, the job does not
fail: it goes back to ``queued`` until the first breaker half-opens (or, for a refused create,
a backoff honouring the server's Retry-After), then routes again. Offerings that failed for
good (a failed generation, a final error) stay out; what was refused at create may be sent
again after the wait, since a refused create ran nothing and bills nothing (design.md §6: it
is not a retried create, which is what a *sent* create would be). A job without a deadline
fails as before: there is no bound to wait within. The same holds at submit: a request with
a deadline whose every route is down *now* is still accepted (:func:`route_when_down`).

Each wait is recorded on the job (``job.route["waited"]``): when, for how long, why (every
down offering and its reason) and how many attempts came before it. That count is what makes
refused offerings eligible again after the wait (:func:`tried`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from vidgate.errors import NoRoute
from vidgate.routing.health import Health
from vidgate.routing.router import RoutePlan, Router
from vidgate.types import Attempt, AttemptState, Job, JobState, VideoRequest

#: a create refused with one of these ran nothing on the provider's side
REFUSED_CODES = frozenset({"rate_limited", "provider_unavailable", "provider_timeout"})
#: bounds of one wait: short enough to notice a route coming back, long enough not to spin
MIN_WAIT_S = 0.5
MAX_WAIT_S = 60.0
#: reasons a route was skipped that waiting cannot fix (money is not a transient outage)
_NOT_TRANSIENT = ("budget", "max_cost")


def refused(a: Attempt) -> bool:
    """A create refused outright (429, 503, connection refused): safe to send again later."""
    return (
        a.state is AttemptState.FAILED
        and not a.provider_job
        and (a.error or {}).get("code") in REFUSED_CODES
    )


def _waits(job: Job) -> list[dict[str, Any]]:
    waited = (job.route or {}).get("waited")
    return waited if isinstance(waited, list) else []


def floor(job: Job) -> int:
    """How many attempts were made before the last wait (0: the job never waited)."""
    waits = _waits(job)
    return int(waits[-1]["after_attempt"]) if waits else 0


def lost(a: Attempt) -> bool:
    """A job that went with its server (the adapter says ``resend_safe``: a self-hosted
    server that restarted or is gone keeps no job and bills nothing), charged nothing."""
    details = (a.error or {}).get("details") or {}
    return a.state is AttemptState.FAILED and details.get("resend_safe") is True and not a.cost_usd


def tried(job: Job) -> set[str]:
    """Offerings the router's chain must not take again: every attempted one, except one an
    operator declared never landed, one whose create was refused before the last wait, and
    one whose job was lost with its server once (sent again once: another server may serve
    it; a second loss keeps it out, so a server that dies on every job cannot loop)."""
    last = floor(job)
    out: set[str] = set()
    losses: dict[str, int] = {}
    for a in job.attempts:
        if (a.error or {}).get("operator_resubmit"):
            continue
        if lost(a):
            losses[a.offering_id] = losses.get(a.offering_id, 0) + 1
            if losses[a.offering_id] > 1:
                out.add(a.offering_id)
        elif a.n > last or not refused(a):
            out.add(a.offering_id)
    return out


@dataclass(frozen=True)
class Wait:
    seconds: float
    #: every down offering with its reason, for the explanation
    down: dict[str, str]


def _skip_reasons(job: Job) -> dict[str, str]:
    out: dict[str, str] = {}
    for s in (job.route or {}).get("skipped", []):
        out[str(s.get("offering"))] = str(s.get("why"))
    return out


def _breaker_wait(health: Health | None, offering_id: str, provider: str) -> float | None:
    if health is None:
        return None
    waits = [health.offering(offering_id).retry_in(), health.provider(provider).retry_in()]
    longest = max(waits)
    return longest if longest > 0 else None


def plan(job: Job, now: datetime, health: Health | None, providers: dict[str, str]) -> Wait | None:
    """Whether the job should wait rather than fail, and for how long; None: fail now.

    ``providers`` maps offering id → provider (for the provider-wide breaker)."""
    deadline = job.request.constraints.deadline
    if deadline is None:
        return None
    left = (deadline - now).total_seconds()
    if left <= 0:
        return None
    done = tried(job)
    skips = _skip_reasons(job)
    #: each down offering → the seconds it said (Retry-After) or its breakers say it needs
    down: dict[str, str] = {}
    told: dict[str, float] = {}
    for oid in (job.route or {}).get("ranked", []):
        why = skips.get(oid)
        if oid in done or oid not in providers or why is None:
            continue
        if any(word in why for word in _NOT_TRANSIENT):
            continue
        down[oid] = why
    last = floor(job)
    for a in job.attempts:
        if a.n > last and refused(a):
            err = a.error or {}
            down[a.offering_id] = str(err.get("message") or err.get("code"))
            retry_after = (err.get("details") or {}).get("retry_after")
            if isinstance(retry_after, int | float) and retry_after > 0:
                told[a.offering_id] = float(retry_after)
    if not down:
        return None
    backoff = min(MAX_WAIT_S, MIN_WAIT_S * 2 ** len(_waits(job)))
    needs = []
    for oid in down:
        # the later of what the route said and what its breakers allow
        hint = max(told.get(oid, 0.0), _breaker_wait(health, oid, providers.get(oid, "")) or 0.0)
        needs.append(hint if hint > 0 else backoff)
    return Wait(min(max(MIN_WAIT_S, min(min(needs), MAX_WAIT_S)), left), down)


def record(job: Job, wait: Wait, now: datetime) -> None:
    """Put the job back in ``queued`` with the wait explained on its route."""
    route = job.route if job.route is not None else {}
    route.setdefault("waited", []).append(
        {
            "at": now.isoformat(),
            "seconds": round(wait.seconds, 3),
            "after_attempt": len(job.attempts),
            "why": "every route is down; waiting for one to come back before the deadline",
            "down": wait.down,
        }
    )
    job.route = route
    job.state = JobState.QUEUED


def route_when_down(
    router: Router,
    request: VideoRequest,
    policy: str,
    pinned: list[str] | None,
    error: NoRoute,
) -> RoutePlan:
    """At submit, when live state alone (open breakers, full rate windows) leaves no route:
    for a request with a deadline, the plan the router makes without live state, so the job
    is stored ``queued`` and waits for a route to come back. Raises ``error`` otherwise."""
    if request.constraints.deadline is None or not router.watches_health():
        raise error
    calm = Router(replace(router.env, health=None, headroom=None))
    try:
        return calm.route(request, policy=policy, pinned=pinned)
    except NoRoute:
        raise error from None
