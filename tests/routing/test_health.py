"""Every circuit-breaker transition, on an injected clock (no sleeping)."""

from __future__ import annotations

import pytest

from vidgate.routing.health import BreakerConfig, BreakerState, CircuitBreaker, Health


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


CFG = BreakerConfig(
    window=10,
    min_calls=4,
    failure_ratio=0.5,
    open_s=30,
    max_open_s=100,
    max_probes=1,
    probes_to_close=2,
)


def breaker() -> tuple[CircuitBreaker, Clock]:
    clock = Clock()
    return CircuitBreaker(config=CFG, clock=clock), clock


def trip(b: CircuitBreaker) -> None:
    for _ in range(4):
        b.record_failure()


def test_closed_stays_closed_below_min_calls_and_ratio() -> None:
    b, _ = breaker()
    for _ in range(3):
        b.record_failure()
    assert b.state is BreakerState.CLOSED  # 3 calls < min_calls
    for _ in range(5):
        b.record_success()
    assert b.state is BreakerState.CLOSED  # 3/8 failed, under the 0.5 ratio
    assert b.available()
    b.record_failure()  # 4/9 still under
    assert b.state is BreakerState.CLOSED


def test_closed_to_open_when_ratio_reached() -> None:
    b, _ = breaker()
    b.record_success()
    b.record_success()
    b.record_failure()
    assert b.state is BreakerState.CLOSED
    b.record_failure()  # 2 of 4 failed = 0.5
    assert b.state is BreakerState.OPEN
    assert not b.available()
    assert not b.acquire()
    assert "circuit open for 30s" in b.describe()


def test_open_to_half_open_after_open_time() -> None:
    b, clock = breaker()
    trip(b)
    clock.t += 29.9
    assert b.state is BreakerState.OPEN
    clock.t += 0.2
    assert b.state is BreakerState.HALF_OPEN


def test_half_open_bounds_probes_and_closes_after_successes() -> None:
    b, clock = breaker()
    trip(b)
    clock.t += 31
    assert b.acquire()  # the one probe
    assert not b.acquire()  # max_probes = 1
    assert not b.available()
    b.record_success()
    assert b.state is BreakerState.HALF_OPEN  # needs 2 successful probes
    assert b.acquire()
    b.record_success()
    assert b.state is BreakerState.CLOSED
    assert b.available()


def test_half_open_failure_reopens_with_doubled_time_capped() -> None:
    b, clock = breaker()
    trip(b)
    clock.t += 31
    assert b.acquire()
    b.record_failure()
    assert b.state is BreakerState.OPEN
    assert b.retry_in() == pytest.approx(60)
    clock.t += 61
    assert b.acquire()
    b.record_failure()
    assert b.retry_in() == pytest.approx(100)  # 120 capped at max_open_s


def test_retry_after_opens_at_once_for_at_least_that_long() -> None:
    b, clock = breaker()
    b.record_failure(retry_after=90)
    assert b.state is BreakerState.OPEN
    assert b.retry_in() == pytest.approx(90)
    clock.t += 89
    assert b.state is BreakerState.OPEN
    clock.t += 2
    assert b.state is BreakerState.HALF_OPEN


def test_retry_after_shorter_than_open_time_keeps_open_time() -> None:
    b, _ = breaker()
    b.record_failure(retry_after=2)
    assert b.retry_in() == pytest.approx(30)


def test_late_failure_while_open_extends_only_for_retry_after() -> None:
    b, clock = breaker()
    trip(b)
    clock.t += 10
    b.record_failure()
    assert b.retry_in() == pytest.approx(20)
    b.record_failure(retry_after=50)
    assert b.retry_in() == pytest.approx(50)


def test_window_forgets_old_outcomes() -> None:
    b, _ = breaker()
    for _ in range(3):
        b.record_failure()
    for _ in range(10):
        b.record_success()  # the window (10) now holds only successes
    b.record_failure()
    assert b.state is BreakerState.CLOSED


def test_health_separates_offering_and_provider_breakers() -> None:
    clock = Clock()
    h = Health(
        CFG, BreakerConfig(window=10, min_calls=2, failure_ratio=0.5, open_s=30), clock=clock
    )
    # generation failures count against the offering only
    for _ in range(4):
        h.record("veo-fast", "google", False)
    assert h.blocked("veo-fast", "google") is not None
    assert h.blocked("veo-std", "google") is None
    # a provider-wide failure with Retry-After blocks every offering of the provider
    h.record("veo-std", "google", False, retry_after=45, provider_wide=True, reason="429")
    why = h.blocked("veo-std", "google")
    assert why is not None
    assert why.startswith("provider google: circuit open for 45s")
    assert h.blocked("kling", "kling") is None
    assert h.snapshot()["providers"]["google"] == "open"
    clock.t += 46
    assert h.acquire("veo-std", "google")
