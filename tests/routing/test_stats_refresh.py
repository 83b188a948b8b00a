"""Learned stats keep up with the shared job store while a process runs."""

from __future__ import annotations

import threading

from vidgate.routing.stats import LearnedStats, OfferingStats


def _stats(p50: float) -> dict[str, OfferingStats]:
    return {
        "o": OfferingStats(samples=30, p50=p50, p90=p50 * 2, p99=p50 * 3, attempts=30, failures=3)
    }


def test_refresh_every_replaces_the_table_in_the_background() -> None:
    learned = LearnedStats(_stats(10.0), min_samples=20)
    loads: list[int] = []
    second = threading.Event()

    def load() -> dict[str, OfferingStats]:
        loads.append(1)
        if len(loads) == 1:
            raise RuntimeError("database blip")  # kept: the old table stays in use
        second.set()
        return _stats(42.0)

    assert learned.latency("o") == (10.0, 20.0, 30.0, 30)
    learned.refresh_every(load, every_s=0.01)
    try:
        assert second.wait(30)
        for _ in range(600):
            if learned.latency("o") == (42.0, 84.0, 126.0, 30):
                break
            second.wait(0.05)
        assert learned.latency("o") == (42.0, 84.0, 126.0, 30)
        assert learned.failure_rate("o") == 0.1
    finally:
        learned.stop()
