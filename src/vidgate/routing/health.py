"""Provider health: circuit breakers per offering and per provider, and Retry-After cooldowns.

A breaker is **closed** while calls succeed. When, within the last ``window`` outcomes, at
least ``min_calls`` were recorded and the failure ratio reaches ``failure_ratio``, it
**opens**: nothing is routed there for ``open_s`` seconds (longer if the provider said
Retry-After). Then it is **half-open**: at most ``max_probes`` calls go through at once; if
``probes_to_close`` succeed it closes, and any failure re-opens it with the open time doubled
(up to ``max_open_s``). The clock is injected so every transition is tested without sleeping.

Breakers live in the process that routes, and every routing decision reads them from local
memory. Without Redis, several gateway processes each learn on their own: each one sends a
provider a few more failing calls before its own breaker opens. With ``VIDGATE_REDIS_URL``
set, :class:`HealthSync` (in ``routing/shared_health.py``) shares the transitions: a breaker
that opens or closes in one process is published, and every other process applies it to its
local breaker within milliseconds (pub/sub), so the hot path never waits on Redis.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerConfig:
    window: int = 20
    min_calls: int = 5
    failure_ratio: float = 0.5
    open_s: float = 30.0
    max_open_s: float = 600.0
    max_probes: int = 1
    probes_to_close: int = 2


@dataclass
class CircuitBreaker:
    config: BreakerConfig = field(default_factory=BreakerConfig)
    clock: Callable[[], float] = time.monotonic
    _state: BreakerState = BreakerState.CLOSED
    _outcomes: deque[bool] = field(default_factory=deque)
    _open_until: float = 0.0
    _open_for: float = 0.0
    _probes_in_flight: int = 0
    _probe_successes: int = 0
    _reason: str = ""
    #: told of every transition this breaker makes on its own evidence (not of ones applied
    #: from another process), with the seconds it stays open (0 when it closed)
    listener: Callable[[BreakerState, float, str], None] | None = None

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self.clock() >= self._open_until:
            self._state = BreakerState.HALF_OPEN
            self._probes_in_flight = 0
            self._probe_successes = 0
        return self._state

    def retry_in(self) -> float:
        return max(0.0, self._open_until - self.clock())

    def available(self) -> bool:
        """Would a call be allowed now? (Does not reserve a probe.)"""
        s = self.state
        return s is BreakerState.CLOSED or (
            s is BreakerState.HALF_OPEN and self._probes_in_flight < self.config.max_probes
        )

    def acquire(self) -> bool:
        """Reserve the right to make a call; in half-open this takes one probe slot."""
        s = self.state
        if s is BreakerState.CLOSED:
            return True
        if s is BreakerState.HALF_OPEN and self._probes_in_flight < self.config.max_probes:
            self._probes_in_flight += 1
            return True
        return False

    def record_success(self) -> None:
        s = self.state
        if s is BreakerState.HALF_OPEN:
            self._probes_in_flight = max(0, self._probes_in_flight - 1)
            self._probe_successes += 1
            if self._probe_successes >= self.config.probes_to_close:
                self._close(notify=True)
            return
        self._push(True)

    def record_failure(self, retry_after: float | None = None, reason: str = "") -> None:
        s = self.state
        if s is BreakerState.HALF_OPEN:
            self._probes_in_flight = max(0, self._probes_in_flight - 1)
            self._open(max(self._open_for * 2, self.config.open_s), retry_after, reason)
            return
        if s is BreakerState.OPEN:
            # A late failure from a call made before opening: extend only for Retry-After.
            if retry_after:
                self._open_until = max(self._open_until, self.clock() + retry_after)
            return
        self._push(False)
        cfg = self.config
        failures = sum(1 for ok in self._outcomes if not ok)
        if retry_after:
            # The provider told us when to come back: honour it even before the ratio trips.
            self._open(cfg.open_s, retry_after, reason or "provider asked to retry later")
        elif len(self._outcomes) >= cfg.min_calls and failures / len(self._outcomes) >= (
            cfg.failure_ratio
        ):
            self._open(cfg.open_s, None, reason or f"{failures}/{len(self._outcomes)} failed")

    def force_open(self, seconds: float, reason: str) -> None:
        """Open for ``seconds`` because another process saw the failures (no notification)."""
        until = self.clock() + seconds
        if self._state is BreakerState.OPEN and self._open_until >= until:
            return
        self._open_for = max(self._open_for, min(seconds, self.config.max_open_s))
        self._open_until = until
        self._state = BreakerState.OPEN
        self._reason = reason
        self._outcomes.clear()

    def force_close(self) -> None:
        """Close because another process's probes succeeded (no notification)."""
        if self._state is not BreakerState.CLOSED:
            self._close()

    def describe(self) -> str:
        s = self.state
        if s is BreakerState.OPEN:
            return f"circuit open for {self.retry_in():.0f}s more ({self._reason})"
        if s is BreakerState.HALF_OPEN:
            return "circuit half-open: probe in flight"
        return "closed"

    def _push(self, ok: bool) -> None:
        self._outcomes.append(ok)
        while len(self._outcomes) > self.config.window:
            self._outcomes.popleft()

    def _open(self, duration: float, retry_after: float | None, reason: str) -> None:
        self._open_for = min(duration, self.config.max_open_s)
        self._open_until = self.clock() + max(self._open_for, retry_after or 0.0)
        self._state = BreakerState.OPEN
        self._reason = reason
        self._outcomes.clear()
        if self.listener is not None:
            self.listener(BreakerState.OPEN, self._open_until - self.clock(), reason)

    def _close(self, *, notify: bool = False) -> None:
        self._state = BreakerState.CLOSED
        self._outcomes.clear()
        self._open_for = 0.0
        self._probes_in_flight = 0
        self._probe_successes = 0
        if notify and self.listener is not None:
            self.listener(BreakerState.CLOSED, 0.0, "")


class Health:
    """Breakers keyed by offering id and by provider; thread-safe."""

    def __init__(
        self,
        offering_config: BreakerConfig | None = None,
        provider_config: BreakerConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.offering_config = offering_config or BreakerConfig()
        # A provider-wide outage shows up across its offerings: trip on more evidence.
        self.provider_config = provider_config or BreakerConfig(window=40, min_calls=8)
        self.clock = clock
        self._offerings: dict[str, CircuitBreaker] = {}
        self._providers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()
        #: called (under the lock: it must not block) with (kind, key, state, open_s, reason)
        #: when a breaker changes state on this process's own evidence
        self.on_transition: Callable[[str, str, BreakerState, float, str], None] | None = None

    def _get(
        self, table: dict[str, CircuitBreaker], key: str, cfg: BreakerConfig
    ) -> CircuitBreaker:
        b = table.get(key)
        if b is None:
            b = table[key] = CircuitBreaker(config=cfg, clock=self.clock)
            kind = "provider" if table is self._providers else "offering"

            def listener(state: BreakerState, open_s: float, reason: str) -> None:
                if self.on_transition is not None:
                    self.on_transition(kind, key, state, open_s, reason)

            b.listener = listener
        return b

    def apply(self, kind: str, key: str, state: BreakerState, open_s: float, reason: str) -> None:
        """Apply a transition another process published (see ``shared_health``)."""
        with self._lock:
            if kind == "provider":
                b = self._get(self._providers, key, self.provider_config)
            else:
                b = self._get(self._offerings, key, self.offering_config)
            if state is BreakerState.OPEN:
                if open_s > 0:
                    b.force_open(open_s, reason)
            else:
                b.force_close()

    def offering(self, offering_id: str) -> CircuitBreaker:
        with self._lock:
            return self._get(self._offerings, offering_id, self.offering_config)

    def provider(self, provider: str) -> CircuitBreaker:
        with self._lock:
            return self._get(self._providers, provider, self.provider_config)

    def blocked(self, offering_id: str, provider: str) -> str | None:
        """Why nothing should be sent to this offering now, or None."""
        with self._lock:
            p = self._providers.get(provider)
            o = self._offerings.get(offering_id)
            if p is not None and not p.available():
                return f"provider {provider}: {p.describe()}"
            if o is not None and not o.available():
                return o.describe()
        return None

    def acquire(self, offering_id: str, provider: str) -> bool:
        with self._lock:
            p = self._get(self._providers, provider, self.provider_config)
            o = self._get(self._offerings, offering_id, self.offering_config)
            if not p.available() or not o.available():
                return False
            return p.acquire() and o.acquire()

    def record(
        self,
        offering_id: str,
        provider: str,
        ok: bool,
        *,
        retry_after: float | None = None,
        reason: str = "",
        provider_wide: bool = False,
    ) -> None:
        """Record an outcome. ``provider_wide`` (a 429 or an outage of the API itself) also
        counts against the provider; a failed generation counts against the offering."""
        with self._lock:
            o = self._get(self._offerings, offering_id, self.offering_config)
            p = self._get(self._providers, provider, self.provider_config)
            if ok:
                o.record_success()
                p.record_success()
            else:
                o.record_failure(None if provider_wide else retry_after, reason)
                if provider_wide:
                    p.record_failure(retry_after, reason)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "offerings": {k: b.state.value for k, b in self._offerings.items()},
                "providers": {k: b.state.value for k, b in self._providers.items()},
            }
