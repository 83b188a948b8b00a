"""Latency and failure statistics per offering, learned from our own job history.

The catalog's latency figures are priors from articles (seed 000 measured them in February
2026). Once an offering has ``min_samples`` finished attempts of its own, the router uses the
observed percentiles instead, and says so in its explanation.

Observed latencies are normalised to the catalog's reference clip (dividing by the same size
factor the estimate multiplies by), so a history of 10 s 1080p clips still predicts a 5 s
720p one.

The history is the job store's, so processes that share a store (PostgreSQL) learn from
each other's attempts. A long-running process re-learns in the background
(:meth:`LearnedStats.refresh_every`): routing reads ``stats`` from memory and never waits for
the query.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from vidgate.catalog.loader import Catalog
from vidgate.types import AttemptState, Job

MIN_SAMPLES = 20
log = logging.getLogger("vidgate.stats")


@dataclass(frozen=True)
class OfferingStats:
    samples: int  # successful attempts with a measured latency
    p50: float
    p90: float
    p99: float
    attempts: int
    failures: int

    @property
    def failure_rate(self) -> float:
        return self.failures / self.attempts if self.attempts else 0.0


def _percentile(sorted_xs: list[float], q: float) -> float:
    if not sorted_xs:
        return 0.0
    k = (len(sorted_xs) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (k - lo)


class LearnedStats:
    def __init__(
        self, stats: dict[str, OfferingStats] | None = None, min_samples: int = MIN_SAMPLES
    ) -> None:
        self.stats = stats or {}
        self.min_samples = min_samples
        self._stop = threading.Event()

    def refresh_every(
        self, load: Callable[[], dict[str, OfferingStats]], every_s: float
    ) -> threading.Thread:
        """Replace ``stats`` with ``load()`` every ``every_s`` seconds on a daemon thread
        (one dict assignment: a routing decision sees the old table or the new one)."""

        def loop() -> None:
            while not self._stop.wait(every_s):
                try:
                    self.stats = load()
                except Exception as e:  # a database blip: keep what we learned last time
                    log.warning("could not refresh learned stats: %s", e)

        t = threading.Thread(target=loop, name="vidgate-stats", daemon=True)
        t.start()
        return t

    def stop(self) -> None:
        self._stop.set()

    @classmethod
    def from_jobs(
        cls, jobs: Iterable[Job], catalog: Catalog, min_samples: int = MIN_SAMPLES
    ) -> LearnedStats:
        latencies: dict[str, list[float]] = {}
        attempts: dict[str, int] = {}
        failures: dict[str, int] = {}
        for job in jobs:
            if job.synthetic:
                continue  # sandbox timings say nothing about the real provider
            w, h = job.request.frame_size
            for a in job.attempts:
                offering = catalog.offerings.get(a.offering_id)
                if offering is None or a.state in (
                    AttemptState.SUBMITTING,
                    AttemptState.SUBMITTED,
                    AttemptState.RUNNING,
                ):
                    continue
                attempts[a.offering_id] = attempts.get(a.offering_id, 0) + 1
                if a.state is AttemptState.SUCCEEDED and a.ended_at is not None:
                    duration = offering.capabilities.durations.nearest(job.request.duration_s)
                    factor = offering.latency.size_factor(duration, w * h)
                    seconds = (a.ended_at - a.started_at).total_seconds()
                    latencies.setdefault(a.offering_id, []).append(seconds / factor)
                elif a.state in (AttemptState.FAILED, AttemptState.AMBIGUOUS):
                    failures[a.offering_id] = failures.get(a.offering_id, 0) + 1
        out = {}
        for oid, n in attempts.items():
            xs = sorted(latencies.get(oid, []))
            out[oid] = OfferingStats(
                samples=len(xs),
                p50=_percentile(xs, 0.5),
                p90=_percentile(xs, 0.9),
                p99=_percentile(xs, 0.99),
                attempts=n,
                failures=failures.get(oid, 0),
            )
        return cls(out, min_samples)

    def latency(self, offering_id: str) -> tuple[float, float, float, int] | None:
        """Learned (p50, p90, p99, samples) for the reference clip, once there are enough."""
        s = self.stats.get(offering_id)
        if s is None or s.samples < self.min_samples:
            return None
        return (s.p50, s.p90, s.p99, s.samples)

    def failure_rate(self, offering_id: str) -> float | None:
        s = self.stats.get(offering_id)
        if s is None or s.attempts < self.min_samples:
            return None
        return s.failure_rate
