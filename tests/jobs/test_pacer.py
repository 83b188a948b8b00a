from __future__ import annotations

import pytest

from vidgate.jobs.driver import Pacer


def test_pacer_honours_hints_and_clamps() -> None:
    p = Pacer(min_s=1.0, max_s=15.0, fraction=0.1)
    assert p.next(hint=None, elapsed=3) == 1.0  # never below the minimum
    assert p.next(hint=None, elapsed=60) == pytest.approx(6.0)  # a tenth of elapsed
    assert p.next(hint=None, elapsed=600) == 15.0  # capped
    assert p.next(hint=20.0, elapsed=60) == 20.0  # never sooner than the provider asked


def test_progress_pulls_the_next_poll_towards_the_finish() -> None:
    p = Pacer(min_s=1.0, max_s=15.0, fraction=0.1)
    # 90 s in and 96% done: about 3.75 s left, so poll then rather than in 9 s
    assert p.next(hint=None, elapsed=90, progress=0.96) == pytest.approx(3.75)
    assert p.next(hint=None, elapsed=90, progress=0.999) == 1.0  # floor at the minimum
    assert p.next(hint=None, elapsed=90, progress=0.01) == pytest.approx(9.0)  # too early to tell


def test_backoff_is_full_jitter_or_retry_after() -> None:
    p = Pacer(min_s=1.0)
    assert p.backoff(3, retry_after=7.0) == 7.0
    assert all(0 <= p.backoff(3, None) <= 8.0 for _ in range(100))
