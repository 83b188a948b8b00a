from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from vidgate.catalog.loader import Catalog, load_catalog
from vidgate.errors import InvalidRequest
from vidgate.routing.policies import tier_priors
from vidgate.routing.router import Router, RouterEnv
from vidgate.routing.stats import LearnedStats
from vidgate.types import (
    Attempt,
    AttemptState,
    Job,
    JobState,
    PolicyWeights,
    VideoRequest,
)

NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)
CATALOG = load_catalog()


def router(cat: Catalog = CATALOG, stats: LearnedStats | None = None) -> Router:
    return Router(
        RouterEnv(
            catalog=cat,
            protocols=frozenset(o.protocol for o in cat.offerings.values()),
            has_credentials=lambda n: True,
            now=lambda: NOW,
            stats=stats,
        )
    )


def test_tier_priors_are_means_of_catalog_elos() -> None:
    priors = tier_priors(CATALOG)
    premium = [
        m.quality.elo
        for m in CATALOG.models.values()
        if m.quality.elo and m.quality.tier.value == "premium"
    ]
    assert priors[2] == pytest.approx(sum(premium) / len(premium))


def test_balanced_weights_move_the_choice() -> None:
    r = router()
    base = {"prompt": "x", "duration_s": 8, "resolution": "1080p"}
    cost_only = r.route(
        VideoRequest(**base, weights=PolicyWeights(quality=0, cost=1, latency=0)), policy="balanced"
    )
    cheapest = r.route(VideoRequest(**base), policy="cheapest")
    assert cost_only.choice.offering.id == cheapest.choice.offering.id
    quality_only = r.route(
        VideoRequest(**base, weights=PolicyWeights(quality=1, cost=0, latency=0)), policy="balanced"
    )
    best = r.route(VideoRequest(**base), policy="best-quality")
    assert quality_only.choice.model.id == best.choice.model.id
    assert quality_only.choice.cost_usd > cost_only.choice.cost_usd  # type: ignore[operator]
    # utilities are in [0, 1] and ranked in decreasing order
    utils = [c.utility for c in r.route(VideoRequest(**base), policy="balanced").ranked]
    assert all(u is not None and 0 <= u <= 1 for u in utils)
    assert utils == sorted(utils, reverse=True)  # type: ignore[type-var]


def test_hints_prefer_models_strong_at_the_content() -> None:
    r = router()
    base = {"prompt": "x", "duration_s": 8, "resolution": "1080p", "audio": "required"}
    plain = r.route(VideoRequest(**base), policy="best-quality").choice
    multi = r.route(VideoRequest(**base, hints=["multi-shot"]), policy="best-quality").choice
    assert "multi-shot" in multi.model.quality.strengths
    assert plain.model.id != multi.model.id or "multi-shot" in plain.model.quality.strengths


def test_unknown_hint_is_rejected_with_the_known_ones() -> None:
    with pytest.raises(InvalidRequest, match=r"unknown hint.*dialogue"):
        router().route(VideoRequest(prompt="x", hints=["telepathy"]))


def _job(offering_id: str, seconds: float, n: int, ok: bool = True) -> Job:
    start = NOW - timedelta(hours=1, seconds=n)
    return Job(
        id=f"job_{offering_id}_{n}",
        state=JobState.SUCCEEDED if ok else JobState.FAILED,
        request=VideoRequest(prompt="x", duration_s=5),
        created_at=start,
        updated_at=start,
        attempts=[
            Attempt(
                n=1,
                offering_id=offering_id,
                state=AttemptState.SUCCEEDED if ok else AttemptState.FAILED,
                idempotency_key="k",
                started_at=start,
                ended_at=start + timedelta(seconds=seconds),
                estimated_cost_usd=0.2,
            )
        ],
    )


def test_learned_latency_replaces_the_prior_once_enough_samples() -> None:
    oid = "luma-ray-3.14-luma"
    req = VideoRequest(prompt="x", duration_s=5)
    few = LearnedStats.from_jobs([_job(oid, 10.0, i) for i in range(5)], CATALOG, min_samples=20)
    cand = next(c for c in router(stats=few).route(req).ranked if c.offering.id == oid)
    assert cand.latency_source == "catalog"
    many = LearnedStats.from_jobs(
        [_job(oid, 10.0, i) for i in range(30)] + [_job(oid, 0, 99, ok=False)],
        CATALOG,
        min_samples=20,
    )
    plan = router(stats=many).route(req)
    cand = next(c for c in plan.ranked if c.offering.id == oid)
    assert cand.latency_source == "learned (n=30)"
    factor = CATALOG.offering(oid).latency.size_factor(cand.duration_s, 1280 * 720)
    assert cand.latency_s["p50"] == pytest.approx(10.0 / factor * factor, rel=1e-6)
    assert "learned" in plan.explain(runners_up=50)["estimates_from"]
    assert many.failure_rate(oid) == pytest.approx(1 / 31)


def test_sandbox_jobs_never_teach_latency() -> None:
    jobs = [
        _job("luma-ray-3.14-luma", 1.0, i).model_copy(update={"synthetic": True}) for i in range(50)
    ]
    assert LearnedStats.from_jobs(jobs, CATALOG).latency("luma-ray-3.14-luma") is None
