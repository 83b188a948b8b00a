"""Waiting in ``queued`` while every route is down (jobs/waiting.py): which offerings may be
sent again after a wait, how long each wait is (Retry-After, breakers, backoff growth and its
bounds, the deadline), what the job records, and submitting while every route is down."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from vidgate.catalog.loader import Catalog, catalog_from_yaml
from vidgate.errors import NoRoute
from vidgate.jobs.waiting import (
    MIN_WAIT_S,
    Wait,
    floor,
    lost,
    plan,
    record,
    refused,
    route_when_down,
    tried,
)
from vidgate.routing.health import Health
from vidgate.routing.router import Router, RouterEnv
from vidgate.types import Attempt, AttemptState, Job, JobState, VideoRequest

NOW = datetime(2030, 1, 1, 12, tzinfo=UTC)
PROVIDERS = {"a": "pa", "b": "pb", "c": "pc"}


def _attempt(
    n: int,
    offering: str,
    state: AttemptState = AttemptState.FAILED,
    *,
    code: str | None = "rate_limited",
    message: str | None = None,
    details: dict[str, Any] | None = None,
    provider_job: dict[str, Any] | None = None,
    cost: float | None = None,
    operator_resubmit: bool = False,
) -> Attempt:
    error: dict[str, Any] | None = None
    if code is not None or details is not None or operator_resubmit:
        error = {"code": code}
        if message is not None:
            error["message"] = message
        if details is not None:
            error["details"] = details
        if operator_resubmit:
            error["operator_resubmit"] = True
    return Attempt(
        n=n,
        offering_id=offering,
        state=state,
        idempotency_key=f"k{n}",
        started_at=NOW,
        estimated_cost_usd=0.1,
        error=error,
        provider_job=provider_job,
        cost_usd=cost,
    )


def _job(
    *,
    deadline: datetime | None = NOW + timedelta(hours=1),
    ranked: list[str] | None = None,
    skipped: dict[str, str] | None = None,
    attempts: list[Attempt] | None = None,
    waits: list[int] | None = None,
) -> Job:
    route: dict[str, Any] = {
        "ranked": ranked or [],
        "skipped": [{"offering": o, "why": w} for o, w in (skipped or {}).items()],
    }
    if waits is not None:
        route["waited"] = [{"after_attempt": n} for n in waits]
    return Job(
        id="job_w",
        state=JobState.ROUTING,
        request=VideoRequest(prompt="x", constraints={"deadline": deadline}),
        created_at=NOW,
        updated_at=NOW,
        route=route,
        attempts=attempts or [],
    )


def _deadline(job: Job, deadline: datetime | None) -> None:
    job.request = VideoRequest(prompt="x", constraints={"deadline": deadline})


# -- a refused create, a lost job, the floor --------------------------------------------------


@pytest.mark.parametrize("code", ["rate_limited", "provider_unavailable", "provider_timeout"])
def test_a_create_refused_outright_may_be_sent_again(code: str) -> None:
    # a 429, a 503, a refused connection or a create that never got an answer: nothing ran
    assert refused(_attempt(1, "a", code=code))


@pytest.mark.parametrize(
    "attempt",
    [
        _attempt(1, "a", code="content_rejected"),  # the request itself was refused
        _attempt(1, "a", code=None),  # no error recorded
        _attempt(1, "a", AttemptState.CANCELED),
        _attempt(1, "a", AttemptState.AMBIGUOUS),
        # it got a provider job: the create ran (a sent create is never retried)
        _attempt(1, "a", provider_job={"remote_id": "r"}),
    ],
)
def test_what_is_not_a_refused_create(attempt: Attempt) -> None:
    assert not refused(attempt)


def test_the_floor_is_the_attempt_count_at_the_last_wait() -> None:
    assert floor(_job()) == 0
    assert floor(_job(waits=[1, 3])) == 3
    job = _job()
    job.route = {"waited": "garbage"}  # not a list: as if it never waited
    assert floor(job) == 0
    job.route = None
    assert floor(job) == 0


def test_a_job_lost_with_its_server_and_not_charged_is_lost() -> None:
    gone = {"resend_safe": True}
    assert lost(_attempt(1, "a", code="lost", details=gone))
    assert lost(_attempt(1, "a", code="lost", details=gone, cost=0.0))
    assert not lost(_attempt(1, "a", code="lost", details=gone, cost=0.2))  # it billed
    assert not lost(_attempt(1, "a", code="lost", details={"resend_safe": "yes"}))
    assert not lost(_attempt(1, "a", code="lost", details={}))
    assert not lost(_attempt(1, "a", code="lost"))
    assert not lost(_attempt(1, "a", AttemptState.CANCELED, code="lost", details=gone))


# -- which offerings stay out -------------------------------------------------------------------


def test_a_refused_create_is_tried_until_the_job_waits() -> None:
    job = _job(attempts=[_attempt(1, "a"), _attempt(2, "b")])
    assert tried(job) == {"a", "b"}
    job.route = {"waited": [{"after_attempt": 1}]}
    assert tried(job) == {"b"}  # a was refused before the wait; b after it
    job.route = {"waited": [{"after_attempt": 2}]}
    assert tried(job) == set()


def test_a_failed_generation_stays_out_even_after_a_wait() -> None:
    job = _job(
        attempts=[_attempt(1, "a", code="generation_failed"), _attempt(2, "b")],
        waits=[2],
    )
    assert tried(job) == {"a"}


def test_an_attempt_an_operator_declared_never_landed_does_not_count() -> None:
    job = _job(attempts=[_attempt(1, "a", AttemptState.AMBIGUOUS, operator_resubmit=True)])
    assert tried(job) == set()


def test_attempts_after_one_an_operator_resubmitted_still_count() -> None:
    job = _job(
        attempts=[
            _attempt(1, "a", AttemptState.AMBIGUOUS, operator_resubmit=True),
            _attempt(2, "b", code="generation_failed"),
        ]
    )
    assert tried(job) == {"b"}


def test_a_lost_job_is_sent_again_once_per_offering() -> None:
    gone = {"resend_safe": True}
    once = [_attempt(1, "a", code="x", details=gone), _attempt(2, "b", code="x", details=gone)]
    assert tried(_job(attempts=once)) == set()
    twice = [*once, _attempt(3, "a", code="x", details=gone)]
    assert tried(_job(attempts=twice)) == {"a"}


# -- whether to wait, and how long ----------------------------------------------------------------


def _refused_everywhere(**details: Any) -> Job:
    return _job(
        ranked=["a"],
        attempts=[_attempt(1, "a", message="queue is full", details=details or None)],
    )


def test_without_a_deadline_or_after_it_the_job_fails_now() -> None:
    job = _refused_everywhere()
    assert plan(job, NOW, None, PROVIDERS) is not None
    _deadline(job, None)
    assert plan(job, NOW, None, PROVIDERS) is None
    _deadline(job, NOW)
    assert plan(job, NOW, None, PROVIDERS) is None  # no time left at all
    _deadline(job, NOW - timedelta(seconds=1))
    assert plan(job, NOW, None, PROVIDERS) is None


def test_nothing_down_means_nothing_to_wait_for() -> None:
    assert plan(_job(ranked=["a"]), NOW, None, PROVIDERS) is None


def test_a_refused_create_is_waited_for_with_its_message() -> None:
    wait = plan(_refused_everywhere(), NOW, None, PROVIDERS)
    assert wait == Wait(MIN_WAIT_S, {"a": "queue is full"})
    # without a message, its code explains it
    job = _job(ranked=["a"], attempts=[_attempt(1, "a", code="provider_timeout")])
    assert plan(job, NOW, None, PROVIDERS) == Wait(0.5, {"a": "provider_timeout"})


def test_a_refusal_from_before_the_last_wait_is_not_waited_for_again() -> None:
    job = _refused_everywhere()
    job.route = {"ranked": ["a"], "waited": [{"after_attempt": 1}]}
    assert plan(job, NOW, None, PROVIDERS) is None


def test_the_wait_honours_retry_after_within_its_bounds() -> None:
    assert plan(_refused_everywhere(retry_after=7), NOW, None, PROVIDERS) == Wait(
        7.0, {"a": "queue is full"}
    )
    assert plan(_refused_everywhere(retry_after=2.5), NOW, None, PROVIDERS).seconds == 2.5  # type: ignore[union-attr]
    # never sooner than the minimum, never longer than the maximum
    assert plan(_refused_everywhere(retry_after=0.1), NOW, None, PROVIDERS).seconds == 0.5  # type: ignore[union-attr]
    assert plan(_refused_everywhere(retry_after=600), NOW, None, PROVIDERS).seconds == 60.0  # type: ignore[union-attr]


@pytest.mark.parametrize("bad", [0, -3, "5", None, "x"])
def test_a_retry_after_that_is_not_a_positive_number_is_ignored(bad: Any) -> None:
    wait = plan(_refused_everywhere(retry_after=bad), NOW, None, PROVIDERS)
    assert wait is not None
    assert wait.seconds == 0.5  # the first backoff


def test_the_backoff_doubles_with_each_wait_up_to_a_minute() -> None:
    def after(waits: int) -> float:
        job = _job(ranked=["a"], attempts=[_attempt(waits + 1, "a")], waits=[0] * waits)
        wait = plan(job, NOW, None, PROVIDERS)
        assert wait is not None
        return wait.seconds

    assert [after(n) for n in range(9)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]


def test_a_wait_never_runs_past_the_deadline() -> None:
    job = _refused_everywhere(retry_after=30)
    _deadline(job, NOW + timedelta(seconds=4))
    assert plan(job, NOW, None, PROVIDERS) == Wait(4.0, {"a": "queue is full"})
    _deadline(job, NOW + timedelta(seconds=0.2))
    assert plan(job, NOW, None, PROVIDERS).seconds == pytest.approx(0.2)  # type: ignore[union-attr]


def test_the_shortest_need_of_the_down_offerings_decides() -> None:
    job = _job(
        ranked=["a", "b"],
        attempts=[
            _attempt(1, "a", details={"retry_after": 9}),
            _attempt(2, "b", details={"retry_after": 3}),
        ],
    )
    assert plan(job, NOW, None, PROVIDERS).seconds == 3.0  # type: ignore[union-attr]
    job.attempts[1].error = {"code": "rate_limited"}  # b gave no hint: the backoff
    assert plan(job, NOW, None, PROVIDERS).seconds == 0.5  # type: ignore[union-attr]


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _health() -> Health:
    return Health(clock=_Clock())


def test_an_open_breaker_is_waited_for_the_later_of_it_and_retry_after() -> None:
    job = _job(ranked=["a"], skipped={"a": "circuit open"})
    h = _health()
    h.offering("a").force_open(12, "down")
    assert plan(job, NOW, h, PROVIDERS) == Wait(12.0, {"a": "circuit open"})
    h.provider("pa").force_open(20, "down")  # the provider-wide breaker is longer
    assert plan(job, NOW, h, PROVIDERS).seconds == 20.0  # type: ignore[union-attr]
    h.provider("pb").force_open(40, "down")  # another provider's breaker does not matter
    assert plan(job, NOW, h, PROVIDERS).seconds == 20.0  # type: ignore[union-attr]
    job = _refused_everywhere(retry_after=30)
    assert plan(job, NOW, h, PROVIDERS).seconds == 30.0  # type: ignore[union-attr]
    job = _refused_everywhere(retry_after=5)
    assert plan(job, NOW, h, PROVIDERS).seconds == 20.0  # type: ignore[union-attr]


def test_a_closed_breaker_leaves_the_backoff() -> None:
    job = _job(ranked=["a"], skipped={"a": "rate limit for pa reached"})
    assert plan(job, NOW, _health(), PROVIDERS) == Wait(0.5, {"a": "rate limit for pa reached"})
    assert plan(job, NOW, None, PROVIDERS) == Wait(0.5, {"a": "rate limit for pa reached"})


def test_offerings_skipped_for_money_or_unknown_or_tried_are_not_waited_for() -> None:
    for why in ("over the remaining budget", "above max_cost"):
        assert plan(_job(ranked=["a"], skipped={"a": why}), NOW, None, PROVIDERS) is None
    # ranked but not skipped: nothing says it is down
    assert plan(_job(ranked=["a"], skipped={"b": "down"}), NOW, None, PROVIDERS) is None
    # skipped, but no longer served (no provider for it)
    assert plan(_job(ranked=["z"], skipped={"z": "down"}), NOW, None, PROVIDERS) is None
    # skipped, but it already failed for good
    done = _job(
        ranked=["a"], skipped={"a": "down"}, attempts=[_attempt(1, "a", code="generation_failed")]
    )
    assert plan(done, NOW, None, PROVIDERS) is None
    mixed = _job(ranked=["a", "b"], skipped={"a": "over the remaining budget", "b": "down"})
    assert plan(mixed, NOW, None, PROVIDERS) == Wait(0.5, {"b": "down"})


# -- what the job records -----------------------------------------------------------------------


def test_a_wait_is_recorded_on_the_route_and_the_job_queued() -> None:
    job = _job(attempts=[_attempt(1, "a"), _attempt(2, "b")])
    record(job, Wait(1.23456, {"a": "queue is full"}), NOW)
    assert job.state is JobState.QUEUED
    assert job.route is not None
    assert job.route["waited"] == [
        {
            "at": NOW.isoformat(),
            "seconds": 1.235,
            "after_attempt": 2,
            "why": "every route is down; waiting for one to come back before the deadline",
            "down": {"a": "queue is full"},
        }
    ]
    assert floor(job) == 2
    record(job, Wait(2.0, {}), NOW)
    assert [w["seconds"] for w in job.route["waited"]] == [1.235, 2.0]
    bare = _job()
    bare.route = None
    record(bare, Wait(0.5, {}), NOW)
    assert bare.route is not None
    assert len(bare.route["waited"]) == 1


# -- submitting while every route is down ---------------------------------------------------------


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    fixtures = Path(__file__).resolve().parent.parent / "fixtures"
    return catalog_from_yaml((fixtures / "mini_catalog.yaml").read_text(), "mini_catalog.yaml")


def _router(catalog: Catalog, **env: Any) -> Router:
    return Router(
        RouterEnv(
            catalog=catalog,
            protocols=frozenset(o.protocol for o in catalog.offerings.values()),
            has_credentials=lambda names: True,
            **env,
        )
    )


def _request(deadline: bool = True, **kw: Any) -> VideoRequest:
    constraints = {"deadline": datetime.now(UTC) + timedelta(hours=1)} if deadline else {}
    return VideoRequest(prompt="x", constraints=constraints, **kw)


def _all_down() -> Health:
    h = Health()
    for provider in ("openai", "compat"):
        h.provider(provider).force_open(60, "down")
    return h


def test_with_a_deadline_a_submit_is_planned_as_if_every_route_were_up(catalog: Catalog) -> None:
    for env in ({"health": _all_down()}, {"headroom": lambda provider: False}):
        router = _router(catalog, **env)
        with pytest.raises(NoRoute) as e:
            router.route(_request())
        got = route_when_down(router, _request(), "cheapest", None, e.value)
        calm = _router(catalog).route(_request())
        assert [c.offering.id for c in got.ranked] == [c.offering.id for c in calm.ranked]
    both = _router(catalog, health=_all_down(), headroom=lambda provider: False)
    got = route_when_down(both, _request(), "cheapest", None, NoRoute("down"))
    assert got.ranked


def test_the_policy_and_pins_are_kept(catalog: Catalog) -> None:
    router = _router(catalog, health=_all_down())
    pinned = route_when_down(router, _request(), "cheapest", ["alpha-openai"], NoRoute("down"))
    assert [c.offering.id for c in pinned.ranked] == ["alpha-openai"]
    fastest = route_when_down(router, _request(), "fastest", None, NoRoute("down"))
    assert fastest.policy == "fastest"
    expected = _router(catalog).route(_request(), policy="fastest")
    assert [c.offering.id for c in fastest.ranked] == [c.offering.id for c in expected.ranked]


def test_without_a_deadline_or_live_state_the_submit_is_refused(catalog: Catalog) -> None:
    error = NoRoute("every route is down")
    with pytest.raises(NoRoute) as e:
        route_when_down(
            _router(catalog, health=_all_down()), _request(False), "cheapest", None, error
        )
    assert e.value is error
    # a router that watches nothing: live state is not why it found no route
    with pytest.raises(NoRoute) as e:
        route_when_down(_router(catalog), _request(), "cheapest", None, error)
    assert e.value is error


def test_a_request_no_offering_can_serve_is_refused_with_the_live_error(
    catalog: Catalog,
) -> None:
    error = NoRoute("every route is down")
    impossible = _request(resolution="4k")
    with pytest.raises(NoRoute) as e:
        route_when_down(_router(catalog, health=_all_down()), impossible, "cheapest", None, error)
    assert e.value is error
    assert e.value.__suppress_context__


def test_waits_under_a_second_are_kept_as_told() -> None:
    # a Retry-After or an open breaker between the minimum and one second is honoured as is
    wait = plan(_refused_everywhere(retry_after=0.8), NOW, None, PROVIDERS)
    assert wait == Wait(0.8, {"a": "queue is full"})
    h = _health()
    h.offering("a").force_open(0.75, "down")
    job = _job(ranked=["a"], skipped={"a": "circuit open"})
    assert plan(job, NOW, h, PROVIDERS) == Wait(0.75, {"a": "circuit open"})


def test_every_ranked_offering_is_looked_at_not_just_the_first() -> None:
    # the first ranked offering is no longer served, the second is down for now
    job = _job(ranked=["z", "a"], skipped={"z": "down", "a": "circuit open"})
    assert plan(job, NOW, None, PROVIDERS) == Wait(0.5, {"a": "circuit open"})
    job = _job(ranked=["a", "b"], skipped={"b": "circuit open"})  # a: nothing says it is down
    assert plan(job, NOW, None, PROVIDERS) == Wait(0.5, {"b": "circuit open"})


def test_a_route_without_a_ranking_still_waits_for_its_refusals() -> None:
    job = _refused_everywhere()
    job.route = {}
    assert plan(job, NOW, None, PROVIDERS) == Wait(0.5, {"a": "queue is full"})
