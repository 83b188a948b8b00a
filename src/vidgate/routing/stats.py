"""Latency and failure statistics per offering, learned from our own job history.

The catalog's latency figures are priors from articles (seed 000 measured them in February
2026). Once an offering has ``min_samples`` finished attempts of its own, the router uses the
observed percentiles instead, and says so in its explanation.

Observed latencies are normalised to the catalog's reference clip (dividing by the same size
factor the estimate multiplies by), so a history of 10 s 1080p clips still predicts a 5 s
720p one.

Quality is learned the same way, from the quality gate's verdicts stored on each job
(``job.quality``): per offering, how many clips the gate judged, the share that passed, the mean
score and the most common failed checks. Once an offering has ``quality_min_samples`` gated
clips, :meth:`LearnedStats.quality` blends the catalog's Elo prior with what was observed
(:func:`blend`), and the router says so in its explanation.

The history is the job store's, so processes that share a store (PostgreSQL) learn from
each other's attempts. A long-running process re-learns in the background
(:meth:`LearnedStats.refresh_every`): routing reads ``stats`` from memory and never waits for
the query.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from vidgate.catalog.loader import Catalog
from vidgate.types import AttemptState, Job

MIN_SAMPLES = 20
#: Elo lost by an offering whose every clip fails the gate (400 Elo is 10:1 odds in a
#: head-to-head, the scale the catalog's Elo uses: a clip that fails is rarely what you want)
FAIL_PENALTY_ELO = 400.0
#: Elo per point of mean gate score above or below TYPICAL_SCORE (a typical passing clip)
SCORE_ELO = 25.0
TYPICAL_SCORE = 7.0
log = logging.getLogger("vidgate.stats")


@dataclass(frozen=True)
class QualityStats:
    """What the quality gate concluded about an offering's clips."""

    samples: int  # clips the gate judged pass or fail
    passed: int
    mean_score: float | None  # over the clips that had a score
    failures: dict[str, int] = field(default_factory=dict)  # failed check -> clips

    @property
    def pass_rate(self) -> float:
        return self.passed / self.samples if self.samples else 0.0

    def top_failures(self, n: int = 3) -> list[tuple[str, int]]:
        return sorted(self.failures.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


@dataclass(frozen=True)
class LearnedQuality:
    """The router's quality estimate for one offering once enough clips were gated."""

    prior_elo: float
    elo: float
    pass_rate: float
    samples: int
    mean_score: float | None

    def describe(self) -> str:
        """e.g. "Elo 1180 prior blended with 23 gated clips, 61% pass -> 1092"."""
        score = f", mean score {self.mean_score:.1f}" if self.mean_score is not None else ""
        return (
            f"Elo {self.prior_elo:.0f} prior blended with {self.samples} gated clips, "
            f"{self.pass_rate:.0%} pass{score} -> {self.elo:.0f}"
        )


def blend(prior_elo: float, q: QualityStats, min_samples: int) -> LearnedQuality:
    """The Elo prior moved by what the gate saw, weighted by how much it saw.

        observed = prior − FAIL_PENALTY_ELO · (1 − pass rate) + SCORE_ELO · (mean − TYPICAL)
        w        = n / (n + min_samples)
        elo      = (1 − w) · prior + w · observed

    ``min_samples`` is how many clips the catalog's prior is worth: at exactly that many
    observations the two count equally, and the observed side dominates as history grows.
    """
    observed = prior_elo - FAIL_PENALTY_ELO * (1.0 - q.pass_rate)
    if q.mean_score is not None:
        observed += SCORE_ELO * (q.mean_score - TYPICAL_SCORE)
    w = q.samples / (q.samples + min_samples)
    elo = (1.0 - w) * prior_elo + w * observed
    return LearnedQuality(prior_elo, elo, q.pass_rate, q.samples, q.mean_score)


def gate_verdicts(job: Job) -> list[tuple[str, bool, float | None, list[str]]]:
    """(offering, passed, score, failed checks) for each clip the gate judged on ``job``.

    Reads ``job.quality["history"]`` (one entry per judged clip, regenerations included), else
    the top-level verdict for the delivered clip. "flagged" (delivered though it failed)
    counts as a fail; "skipped" and "error" say nothing about the offering."""
    q = job.quality
    if not q:
        return []
    entries: list[dict[str, Any]] = [e for e in q.get("history") or [] if isinstance(e, dict)]
    if not entries:
        entries = [{**q, "offering": job.offering_id}]
    by_n = {a.n: a.offering_id for a in job.attempts}
    out = []
    for e in entries:
        offering = e.get("offering") or by_n.get(e.get("attempt"))  # type: ignore[arg-type]
        verdict = e.get("verdict")
        if not offering or verdict not in ("pass", "fail", "flagged"):
            continue
        score = e.get("score")
        failed = [str(f) for f in e.get("failed") or [] if isinstance(f, str)]
        if verdict != "pass" and not failed and len(entries) == 1:
            failed = _failed_checks(job)
        out.append(
            (str(offering), verdict == "pass", float(score) if score is not None else None, failed)
        )
    return out


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


def quality_by_offering(
    jobs: Iterable[Job], *, synthetic: bool | None = None
) -> dict[str, QualityStats]:
    """What the gate saw per offering over ``jobs`` (only sandbox or only real jobs when
    ``synthetic`` says which)."""
    gated: dict[str, list[tuple[bool, float | None, list[str]]]] = {}
    for job in jobs:
        if synthetic is None or job.synthetic == synthetic:
            for oid, ok, score, failed in gate_verdicts(job):
                gated.setdefault(oid, []).append((ok, score, failed))
    out = {}
    for oid, clips in gated.items():
        scores = [sc for _, sc, _ in clips if sc is not None]
        out[oid] = QualityStats(
            samples=len(clips),
            passed=sum(1 for ok, _, _ in clips if ok),
            mean_score=sum(scores) / len(scores) if scores else None,
            failures=dict(Counter(f for ok, _, fs in clips if not ok for f in set(fs))),
        )
    return out


def _failed_checks(job: Job) -> list[str]:
    """The failed checks of the stage results stored on ``job`` (when the gate's verdict
    does not list them)."""
    names = []
    for result in job.stages.values():
        for check in result.get("checks") or []:
            if isinstance(check, dict) and check.get("verdict") == "fail":
                names.append(str(check.get("name")))
    return names


class LearnedStats:
    def __init__(
        self,
        stats: dict[str, OfferingStats] | None = None,
        min_samples: int = MIN_SAMPLES,
        quality: dict[str, QualityStats] | None = None,
        quality_min_samples: int | None = None,
    ) -> None:
        self.stats = stats or {}
        self.min_samples = min_samples
        #: per offering, what the quality gate saw (replaced whole on refresh, like stats)
        self.quality_stats = quality or {}
        self.quality_min_samples = quality_min_samples or min_samples
        self._stop = threading.Event()

    def refresh_every(
        self, load: Callable[[], dict[str, OfferingStats] | LearnedStats], every_s: float
    ) -> threading.Thread:
        """Replace ``stats`` with ``load()`` every ``every_s`` seconds on a daemon thread
        (one dict assignment each: a routing decision sees the old table or the new one).
        ``load`` may return a whole LearnedStats, whose quality table is taken too."""

        def loop() -> None:
            while not self._stop.wait(every_s):
                try:
                    fresh = load()
                    if isinstance(fresh, LearnedStats):
                        self.quality_stats = fresh.quality_stats
                        fresh = fresh.stats
                    self.stats = fresh
                except Exception as e:  # a database blip: keep what we learned last time
                    log.warning("could not refresh learned stats: %s", e)

        t = threading.Thread(target=loop, name="vidgate-stats", daemon=True)
        t.start()
        return t

    def stop(self) -> None:
        self._stop.set()

    @classmethod
    def from_jobs(
        cls,
        jobs: Iterable[Job],
        catalog: Catalog,
        min_samples: int = MIN_SAMPLES,
        *,
        quality_min_samples: int | None = None,
        synthetic_quality: bool = False,
    ) -> LearnedStats:
        """Learn from ``jobs``. Sandbox (synthetic) jobs never teach latency; they teach
        quality only when ``synthetic_quality`` (a sandbox gateway learning from the sandbox's
        defective clips), and then real jobs do not, so the two never mix."""
        latencies: dict[str, list[float]] = {}
        attempts: dict[str, int] = {}
        failures: dict[str, int] = {}
        jobs = list(jobs)
        quality = {
            oid: q
            for oid, q in quality_by_offering(jobs, synthetic=synthetic_quality).items()
            if oid in catalog.offerings
        }
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
        return cls(out, min_samples, quality, quality_min_samples)

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

    def quality(self, offering_id: str, prior_elo: float) -> LearnedQuality | None:
        """The blended quality estimate, once the offering has enough gated clips."""
        q = self.quality_stats.get(offering_id)
        if q is None or q.samples < self.quality_min_samples:
            return None
        return blend(prior_elo, q, self.quality_min_samples)
