"""What an ended attempt costs: one rule for every way an attempt can end.

The driver asks :func:`attempt_charge` and nothing else (design.md §6: one ledger row per
attempt, exactly). Kinds of row:

* ``charge`` — billed. A delivered clip is charged at the price of what was *delivered*
  (measured duration and resolution of the stored asset), never of what was asked, when the
  two differ beyond :data:`DURATION_TOLERANCE` / a resolution class; capped by what the job
  holds in reservation, with the difference recorded on the job (``job.billing``).
* ``pending`` — perhaps billed (an ambiguous create; an attempt given up on while its remote
  job may still run). Booked at the estimate, counted in spend until resolved.
* ``void`` — not billed (refused create, failed or cancelled generation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vidgate.catalog.schema import Offering
from vidgate.providers.base import ReportedCost
from vidgate.types import Asset, Attempt, AttemptState, Job, Resolution

#: relative duration difference tolerated before a delivery is re-priced (containers round
#: to frame boundaries; 8 % is well under one price step of every catalog offering)
DURATION_TOLERANCE = 0.08


@dataclass(frozen=True)
class Charge:
    kind: str  # charge | pending | void
    amount_usd: float
    note: dict[str, Any] | None = None


def _resolution_of(asset: Asset) -> Resolution | None:
    if not asset.width or not asset.height:
        return None
    short = min(asset.width, asset.height)
    # The largest class whose short side the clip reaches (a 1088-pixel encode is 1080p).
    fits = [r for r in Resolution if r.short_side <= short * 1.02]
    return max(fits, key=lambda r: r.short_side) if fits else min(Resolution, key=_short)


def _short(r: Resolution) -> int:
    return r.short_side


def price_of(offering: Offering, resolution: Resolution, duration: float, audio: bool) -> float:
    """The offering's list price for exactly this clip (no rounding to a supported
    duration: a provider that delivered 8 s bills 8 s). Unpriced shapes fall back to the
    largest matching rule's rate; with no rule at all the result is 0 and the caller keeps
    the estimate."""
    base: float | None = None
    total = 0.0
    for rule in offering.price:
        if not rule.matches(resolution, duration, audio):
            continue
        if rule.surcharge:
            total += rule.cost(duration, offering.usd_per_credit)
        elif base is None:
            base = rule.cost(duration, offering.usd_per_credit)
    return round((base or 0.0) + total, 6) if base is not None else 0.0


def delivered_charge(job: Job, attempt: Attempt, offering: Offering | None) -> Charge:
    """Charge for a delivered clip: the estimate, unless what was stored differs from what
    was priced; then the delivered price, capped by the job's reservation."""
    estimate = attempt.estimated_cost_usd
    video = next((a for a in job.assets if a.kind == "video"), None)
    if video is None or offering is None or video.duration_s is None:
        return Charge("charge", estimate)
    asked_res = job.request.resolution
    asked_dur = offering.capabilities.durations.nearest(job.request.duration_s)
    got_res = _resolution_of(video) or asked_res
    got_dur = float(video.duration_s)
    longer = got_dur > asked_dur * (1 + DURATION_TOLERANCE)
    # A class up only when the frame is clearly bigger: providers round 720p to 768p and
    # pad 1080 to 1088 on their own, and bill those as asked.
    larger = (
        got_res.short_side > asked_res.short_side
        and min(video.width or 0, video.height or 0) > asked_res.short_side * 1.1
    )
    if not (longer or larger):
        return Charge("charge", estimate)
    dur = got_dur if longer else asked_dur
    # A resolution the offering has no price for is billed at the asked one's rate.
    price = price_of(offering, got_res, dur, video.has_audio) or price_of(
        offering, asked_res, dur, video.has_audio
    )
    # What the other attempts already hold out of the reservation is not ours to take.
    held = job.reserved_usd
    others = sum(
        a.cost_usd or 0.0 for a in job.attempts if a.n != attempt.n and a.cost_usd is not None
    )
    cap = None if held is None else max(estimate, held - others)
    # Never below the estimate (the provider bills at least what was asked), never above
    # what the job holds; a clip priced the same either way (per-clip prices) is still noted.
    billed = round(max(estimate, price if cap is None else min(price, cap)), 6)
    note = {
        "attempt": attempt.n,
        "reason": "delivered differs from what was priced",
        "priced": {"duration_s": asked_dur, "resolution": asked_res.value, "usd": estimate},
        "delivered": {
            "duration_s": round(got_dur, 3),
            "resolution": got_res.value,
            "width": video.width,
            "height": video.height,
            "usd": price,
        },
        "charged_usd": billed,
        "uncovered_usd": round(max(0.0, price - billed), 6),
    }
    return Charge("charge", billed, note)


def reported_cost(reported: ReportedCost | None, offering: Offering) -> dict[str, Any] | None:
    """What the provider reported for an attempt, as stored on it (``Attempt.reported_cost``),
    with its dollar value where the offering's catalog rates convert the unit."""
    if reported is None:
        return None
    return {
        "amount": reported.amount,
        "unit": reported.unit,
        "field": reported.field,
        "usd": reported.usd(offering),
    }


def reported_charge(job: Job, attempt: Attempt) -> Charge | None:
    """Charge at what the provider reported, where it reported a cost we can price: the
    estimate stays on the attempt beside it. Above what the job holds in reservation (the
    estimate, where no budget holds anything) it is charged in full and flagged
    (``over_reservation``), never capped."""
    rep = attempt.reported_cost
    if rep is None or rep.get("usd") is None:
        return None
    usd = round(float(rep["usd"]), 6)
    held = job.reserved_usd
    others = sum(
        a.cost_usd or 0.0 for a in job.attempts if a.n != attempt.n and a.cost_usd is not None
    )
    # without a budget nothing is held: the estimate is what the job was promised to cost
    room = round(
        attempt.estimated_cost_usd
        if held is None
        else max(attempt.estimated_cost_usd, held - others),
        6,
    )
    over = usd > room + 1e-9
    note = {
        "attempt": attempt.n,
        "reason": "provider-reported cost",
        "reported": rep,
        "estimate_usd": attempt.estimated_cost_usd,
        "charged_usd": usd,
        "over_reservation": over,
        "reservation_room_usd": room,
    }
    return Charge("charge", usd, note)


def attempt_charge(
    job: Job,
    attempt: Attempt,
    state: AttemptState,
    offering: Offering | None,
    *,
    delivered: bool = True,
) -> Charge:
    """THE place where an ended attempt's bill is decided (every ending goes through it).

    ``delivered=False``: the remote job succeeded but its clip is not the one we stored (an
    abandoned attempt that finished after the job moved on): billed at its list price.
    A provider-reported cost, where an adapter reads one, belongs here too: it replaces the
    list price of a delivered clip."""
    if state is AttemptState.SUCCEEDED:
        seen = (
            delivered_charge(job, attempt, offering)
            if delivered
            else Charge("charge", attempt.estimated_cost_usd)
        )
        if (reported := reported_charge(job, attempt)) is not None:
            # What the provider says it billed wins, delivered or not; a delivery that differs
            # from what was priced is still flagged beside it.
            if seen.note is not None and reported.note is not None:
                return Charge(
                    "charge", reported.amount_usd, {**reported.note, "delivery": seen.note}
                )
            return reported
        return seen
    if state in (AttemptState.AMBIGUOUS, AttemptState.ABANDONED):
        return Charge("pending", attempt.estimated_cost_usd)
    # A refused create, a failed generation, a cancelled job: providers do not bill them.
    return Charge("void", 0.0)
