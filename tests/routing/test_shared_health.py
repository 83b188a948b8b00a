"""Breakers shared between processes through a real Redis (VIDGATE_REDIS_URL)."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import IN_CI
from vidgate.routing.health import BreakerConfig, BreakerState, Health
from vidgate.routing.shared_health import HealthSync

REDIS_URL = os.environ.get("VIDGATE_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _redis_ok() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except Exception:
        return False


@pytest.fixture
def redis_url() -> str:
    if not _redis_ok():
        if IN_CI:
            pytest.fail(f"Redis is required in CI and is not reachable at {REDIS_URL}")
        pytest.skip("Redis not reachable (set VIDGATE_TEST_REDIS)")
    return REDIS_URL


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    import redis

    ns = f"vidgate:test:{uuid.uuid4().hex[:10]}"
    yield ns
    r = redis.Redis.from_url(redis_url)
    for key in r.scan_iter(match=ns + ":*"):
        r.delete(key)
    r.close()


def _health(clock: list[float] | None = None) -> Health:
    cfg = BreakerConfig(min_calls=2, open_s=60)
    if clock is None:
        return Health(cfg, cfg)
    return Health(cfg, cfg, clock=lambda: clock[0])


def _wait(cond: threading.Event | None, check: object) -> bool:
    """Wait (up to 10 s, generous on a loaded machine) for ``check()`` to hold."""
    ev = cond or threading.Event()
    for _ in range(200):
        if check():  # type: ignore[operator]
            return True
        ev.wait(0.05)
    return False


def test_an_open_breaker_reaches_the_other_process_and_so_does_its_close(
    redis_url: str, namespace: str
) -> None:
    now = [1000.0]
    a, b = _health(now), _health()
    sa, sb = HealthSync(a, redis_url, namespace), HealthSync(b, redis_url, namespace)
    try:
        assert sa.subscribed.wait(10)
        assert sb.subscribed.wait(10)
        for _ in range(2):
            a.record("off-1", "prov", False, reason="unavailable")
        assert a.blocked("off-1", "prov") is not None
        # b saw no failure of its own; the transition alone opens its breaker
        assert _wait(None, lambda: b.blocked("off-1", "prov") is not None)
        assert b.offering("off-1").state is BreakerState.OPEN
        assert "unavailable" in (b.blocked("off-1", "prov") or "")
        assert b.offering("off-1").retry_in() > 50  # a's open period, not a default
        assert b.blocked("off-2", "prov") is None  # only that offering
        # a's probes succeed later: its close is shared too
        now[0] += 61  # a's open period ends: half-open, its probes go through
        breaker = a.offering("off-1")
        assert a.acquire("off-1", "prov")
        a.record("off-1", "prov", True)
        assert a.acquire("off-1", "prov")
        a.record("off-1", "prov", True)
        assert breaker.state is BreakerState.CLOSED
        assert _wait(None, lambda: b.blocked("off-1", "prov") is None)
    finally:
        sa.close()
        sb.close()


def test_a_process_started_later_reads_what_is_open(redis_url: str, namespace: str) -> None:
    a = _health()
    sa = HealthSync(a, redis_url, namespace)
    late = _health()
    try:
        assert sa.subscribed.wait(10)
        for _ in range(2):
            a.record("off-1", "prov", False, reason="unavailable", provider_wide=True)
        assert a.blocked("off-1", "prov") is not None
        assert _wait(None, lambda: sa._outbox.empty())  # published
        sl = HealthSync(late, redis_url, namespace)
        try:
            assert _wait(None, lambda: late.blocked("off-1", "prov") is not None)
            assert late.provider("prov").state is BreakerState.OPEN
        finally:
            sl.close()
    finally:
        sa.close()


def test_without_redis_each_process_keeps_its_own_breakers(namespace: str) -> None:
    # An unreachable Redis: transitions cannot be shared, and nothing on the hot path waits.
    a = _health()
    sa = HealthSync(a, "redis://127.0.0.1:1/0", namespace)
    try:
        for _ in range(2):
            a.record("off-1", "prov", False, reason="unavailable")
        assert a.blocked("off-1", "prov") is not None
        assert not sa.subscribed.is_set()
    finally:
        sa.close()
