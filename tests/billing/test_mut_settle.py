"""What an ended attempt is billed, at the rule's edges: the duration tolerance, the
resolution class a clip reaches, the reservation cap, surcharges, what a provider reported,
and the kind of row each ending books. One offering with a price list of our own (so a catalog
price change cannot move the figures): $0.10/s at 720p, $0.20/s at 1080p, $0.05/s more with
audio, 5-15 s in whole seconds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tests.jobs.conftest import make_job
from vidgate.billing.settle import (
    DURATION_TOLERANCE,
    attempt_charge,
    delivered_charge,
    price_of,
    reported_charge,
)
from vidgate.catalog.loader import load_catalog
from vidgate.catalog.schema import Offering, PriceRule
from vidgate.types import Asset, Attempt, AttemptState, Job, Resolution, VideoRequest

R720, R1080 = Resolution.R720P, Resolution.R1080P
ESTIMATE = 0.5  # 5 s at 720p


def _offering() -> Offering:
    base = load_catalog().offering("seedance-2.0-byteplus")
    src = base.price[0].source
    price = [
        PriceRule(usd=0.10, resolutions=[R720], source=src),
        PriceRule(usd=0.20, resolutions=[R1080], source=src),
        PriceRule(usd=0.05, audio=True, surcharge=True, source=src),
    ]
    return base.model_copy(update={"price": price})


OFFERING = _offering()


def _attempt(n: int = 1, *, cost: float | None = None, **kw: Any) -> Attempt:
    return Attempt(
        n=n,
        offering_id=OFFERING.id,
        state=AttemptState.SUCCEEDED,
        idempotency_key=f"k{n}",
        started_at=datetime.now(UTC),
        estimated_cost_usd=ESTIMATE,
        cost_usd=cost,
        **kw,
    )


def _job(
    seconds: float | None = 5.0,
    size: tuple[int, int] | None = (1280, 720),
    *,
    audio: bool = False,
    reserved: float | None = None,
    others: tuple[Attempt, ...] = (),
) -> tuple[Job, Attempt]:
    """A 5 s 720p request whose attempt delivered a clip of ``seconds`` at ``size``."""
    job = make_job(reserved_usd=reserved)
    job.request = VideoRequest(prompt="x", duration_s=5, resolution=R720)
    attempt = _attempt(len(others) + 1)
    job.attempts = [*others, attempt]
    w, h = size or (None, None)
    job.assets = [
        Asset(id="a", kind="image", uri="mem://still", sha256="0", bytes=1, width=4000),
        Asset(
            id="v",
            uri="mem://v",
            sha256="0",
            bytes=1,
            duration_s=seconds,
            width=w,
            height=h,
            has_audio=audio,
        ),
    ]
    return job, attempt


def _billed(job: Job, attempt: Attempt) -> float:
    charge = delivered_charge(job, attempt, OFFERING)
    assert charge.kind == "charge"  # a delivered clip is billed, whatever it is priced at
    return charge.amount_usd


# -- list prices --------------------------------------------------------------------------------


def test_a_clip_is_priced_at_its_rule_plus_every_matching_surcharge() -> None:
    assert price_of(OFFERING, R720, 5, False) == pytest.approx(0.5)
    assert price_of(OFFERING, R1080, 8, False) == pytest.approx(1.6)
    assert price_of(OFFERING, R720, 5, True) == pytest.approx(0.75)  # + $0.05/s audio
    assert price_of(OFFERING, Resolution.R4K, 5, True) == 0.0  # no base rule: no price


def test_the_first_matching_base_rule_wins() -> None:
    src = OFFERING.price[0].source
    two = OFFERING.model_copy(
        update={"price": [PriceRule(usd=0.3, source=src), PriceRule(usd=0.9, source=src)]}
    )
    assert price_of(two, R720, 2, False) == pytest.approx(0.6)


def test_every_matching_surcharge_adds_and_rules_can_name_durations() -> None:
    src = OFFERING.price[0].source
    priced = OFFERING.model_copy(
        update={
            "price": [
                PriceRule(usd=1.0, unit="clip", durations=[8], source=src),  # 8 s: one clip
                PriceRule(usd=0.1, source=src),
                PriceRule(usd=0.05, audio=True, surcharge=True, source=src),
                PriceRule(usd=0.02, surcharge=True, source=src),
            ]
        }
    )
    assert price_of(priced, R720, 8, False) == pytest.approx(1.0 + 0.16)
    assert price_of(priced, R720, 5, True) == pytest.approx(0.5 + 0.25 + 0.1)


# -- a delivered clip ---------------------------------------------------------------------------


def test_a_clip_delivered_as_asked_is_charged_its_estimate() -> None:
    job, attempt = _job()
    charge = delivered_charge(job, attempt, OFFERING)
    assert (charge.kind, charge.amount_usd, charge.note) == ("charge", ESTIMATE, None)


@pytest.mark.parametrize(
    ("seconds", "billed"),
    [
        (5.2, ESTIMATE),  # a container rounding to frames: billed as asked
        (5.0 * (1 + DURATION_TOLERANCE) - 0.01, ESTIMATE),  # within the tolerance
        (5.0 * (1 + DURATION_TOLERANCE) + 0.01, 0.541),  # beyond it: what was delivered
        (8.0, 0.8),
        (3.0, ESTIMATE),  # shorter: never below the estimate
    ],
)
def test_a_longer_clip_is_charged_for_its_length(seconds: float, billed: float) -> None:
    assert _billed(*_job(seconds)) == pytest.approx(billed)


def test_the_tolerance_is_eight_percent_of_the_asked_length() -> None:
    # 5.3 s is 6 % over 5 s, 5.45 s is 9 % over: only the second is re-priced
    assert _billed(*_job(5.3)) == ESTIMATE
    assert _billed(*_job(5.45)) == pytest.approx(0.545)


@pytest.mark.parametrize(
    ("size", "billed"),
    [
        ((1920, 1080), 1.0),  # a class up: the 1080p rate
        ((1080, 1920), 1.0),  # portrait: the short side decides
        ((1884, 1060), 1.0),  # 1060 is within 2 % of 1080: still the 1080p class
        ((1366, 768), ESTIMATE),  # providers' 768p for 720p is billed as asked
        ((1280, 792), ESTIMATE),  # up to 10 % over the asked short side: as asked
        ((1296, 800), ESTIMATE),  # 800 px: no class above 720p reached (768p: no price)
        ((854, 480), ESTIMATE),  # smaller: never below the estimate
        ((320, 240), ESTIMATE),  # below every class
        (None, ESTIMATE),  # no size measured: as asked
    ],
)
def test_a_larger_frame_is_charged_at_its_class(
    size: tuple[int, int] | None, billed: float
) -> None:
    assert _billed(*_job(5.0, size)) == pytest.approx(billed)


def test_a_longer_and_larger_clip_with_audio_is_charged_for_all_of_it() -> None:
    job, attempt = _job(8.0, (1920, 1080), audio=True)
    charge = delivered_charge(job, attempt, OFFERING)
    assert charge.amount_usd == pytest.approx(8 * 0.25)
    assert charge.note == {
        "attempt": 1,
        "reason": "delivered differs from what was priced",
        "priced": {"duration_s": 5.0, "resolution": "720p", "usd": ESTIMATE},
        "delivered": {
            "duration_s": 8.0,
            "resolution": "1080p",
            "width": 1920,
            "height": 1080,
            "usd": pytest.approx(2.0),
        },
        "charged_usd": pytest.approx(2.0),
        "uncovered_usd": 0.0,
    }


def test_a_larger_frame_without_a_price_is_billed_at_the_asked_rate_for_its_length() -> None:
    # 1440p has no price: the asked resolution's rate for the delivered 8 s
    assert _billed(*_job(8.0, (2560, 1440))) == pytest.approx(0.8)


def test_the_reservation_caps_what_a_delivery_is_charged() -> None:
    job, attempt = _job(8.0, (1920, 1080), reserved=1.2)
    charge = delivered_charge(job, attempt, OFFERING)
    assert charge.amount_usd == pytest.approx(1.2)
    assert charge.note is not None
    assert charge.note["uncovered_usd"] == pytest.approx(0.4)
    assert charge.note["delivered"]["usd"] == pytest.approx(1.6)


def test_what_other_attempts_were_charged_is_not_taken_again() -> None:
    failed = _attempt(1, cost=0.0)
    ambiguous = _attempt(2, cost=0.3)
    unknown = _attempt(3)  # not yet booked: holds nothing
    job, attempt = _job(8.0, (1920, 1080), reserved=1.2, others=(failed, ambiguous, unknown))
    assert _billed(job, attempt) == pytest.approx(0.9)
    # however little is left, the estimate is charged
    job, attempt = _job(8.0, (1920, 1080), reserved=1.0, others=(_attempt(1, cost=0.9),))
    assert _billed(job, attempt) == pytest.approx(ESTIMATE)


def test_without_a_measured_clip_the_estimate_is_charged() -> None:
    job, attempt = _job(None)
    assert _billed(job, attempt) == ESTIMATE
    job, attempt = _job(9.0)
    job.assets = [a for a in job.assets if a.kind != "video"]
    assert _billed(job, attempt) == ESTIMATE
    job, attempt = _job(9.0)
    assert delivered_charge(job, attempt, None).amount_usd == ESTIMATE  # offering gone


# -- what the provider reported -----------------------------------------------------------------


def _reported(usd: float | None) -> dict[str, Any]:
    return {"amount": 1, "unit": "credits", "field": "cost", "usd": usd}


def test_a_reported_cost_is_charged_and_flagged_over_the_reservation() -> None:
    job, attempt = _job(reserved=1.0, others=(_attempt(1, cost=0.2),))
    attempt.reported_cost = _reported(0.75)
    charge = reported_charge(job, attempt)
    assert charge is not None
    assert charge.amount_usd == 0.75
    assert charge.note is not None
    assert (charge.note["over_reservation"], charge.note["reservation_room_usd"]) == (False, 0.8)
    attempt.reported_cost = _reported(0.85)
    charge = reported_charge(job, attempt)
    assert charge is not None
    assert charge.amount_usd == 0.85  # charged in full, never capped
    assert charge.note is not None
    assert charge.note["over_reservation"] is True
    assert charge.note["estimate_usd"] == ESTIMATE
    assert charge.note["reported"] == _reported(0.85)


def test_without_a_budget_the_estimate_is_the_room() -> None:
    job, attempt = _job()
    attempt.reported_cost = _reported(ESTIMATE)
    charge = reported_charge(job, attempt)
    assert charge is not None
    assert charge.note is not None
    assert (charge.note["over_reservation"], charge.note["reservation_room_usd"]) == (
        False,
        ESTIMATE,
    )
    attempt.reported_cost = _reported(ESTIMATE + 0.01)
    charge = reported_charge(job, attempt)
    assert charge is not None
    assert charge.note is not None
    assert charge.note["over_reservation"] is True


def test_a_report_without_a_dollar_value_leaves_the_list_price() -> None:
    job, attempt = _job(8.0)
    attempt.reported_cost = _reported(None)
    assert reported_charge(job, attempt) is None
    assert attempt_charge(job, attempt, AttemptState.SUCCEEDED, OFFERING).amount_usd == 0.8


# -- every ending -------------------------------------------------------------------------------


def test_a_success_is_charged_what_was_delivered_or_what_was_reported() -> None:
    job, attempt = _job(8.0)
    assert attempt_charge(job, attempt, AttemptState.SUCCEEDED, OFFERING).amount_usd == 0.8
    # the remote job finished after the job moved on: its list price, whatever we stored
    late = attempt_charge(job, attempt, AttemptState.SUCCEEDED, OFFERING, delivered=False)
    assert (late.kind, late.amount_usd, late.note) == ("charge", ESTIMATE, None)
    attempt.reported_cost = _reported(0.65)
    both = attempt_charge(job, attempt, AttemptState.SUCCEEDED, OFFERING)
    assert (both.kind, both.amount_usd) == ("charge", 0.65)  # the provider's figure wins
    assert both.note is not None
    assert both.note["reason"] == "provider-reported cost"
    assert both.note["delivery"]["delivered"]["duration_s"] == 8.0  # the difference beside it
    job, attempt = _job()
    attempt.reported_cost = _reported(0.45)
    alone = attempt_charge(job, attempt, AttemptState.SUCCEEDED, OFFERING)
    assert (alone.kind, alone.amount_usd) == ("charge", 0.45)
    assert alone.note is not None
    assert "delivery" not in alone.note


@pytest.mark.parametrize("state", [AttemptState.AMBIGUOUS, AttemptState.ABANDONED])
def test_an_attempt_that_may_have_billed_is_pending_at_its_estimate(state: AttemptState) -> None:
    job, attempt = _job()
    charge = attempt_charge(job, attempt, state, OFFERING)
    assert (charge.kind, charge.amount_usd) == ("pending", ESTIMATE)


@pytest.mark.parametrize(
    "state", [AttemptState.FAILED, AttemptState.CANCELED, AttemptState.SUBMITTING]
)
def test_an_attempt_providers_do_not_bill_is_void(state: AttemptState) -> None:
    job, attempt = _job()
    attempt.reported_cost = _reported(0.9)  # a failed job's report does not bill it
    charge = attempt_charge(job, attempt, state, OFFERING)
    assert (charge.kind, charge.amount_usd) == ("void", 0.0)
