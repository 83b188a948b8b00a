from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from vidgate.catalog.loader import Catalog
from vidgate.errors import InvalidRequest, NoRoute
from vidgate.routing.estimate import estimate_cost, estimate_latency
from vidgate.routing.router import Router, RouterEnv
from vidgate.types import AudioMode, LatencyPercentile, QualityTier, VideoRequest

NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)


def router(cat: Catalog, *, creds: bool = True, now: datetime = NOW) -> Router:
    return Router(
        RouterEnv(
            catalog=cat,
            protocols=frozenset({"openai-videos"}),
            has_credentials=lambda names: creds,
            now=lambda: now,
        )
    )


def test_cheapest_ranks_by_estimated_cost(mini_catalog: Catalog) -> None:
    plan = router(mini_catalog).route(VideoRequest(prompt="x", duration_s=5))
    assert [c.offering.id for c in plan.ranked] == ["beta-openai", "alpha-openai"]
    assert plan.ranked[0].cost_usd == pytest.approx(0.25)  # one 6 s clip
    assert plan.ranked[1].cost_usd == pytest.approx(0.40)  # 4 s (nearest to 5) x $0.10


def test_per_clip_pricing_counts_started_clips(mini_catalog: Catalog) -> None:
    beta = mini_catalog.offering("beta-openai")
    assert estimate_cost(VideoRequest(prompt="x", duration_s=6), beta) == pytest.approx(0.25)
    assert estimate_cost(VideoRequest(prompt="x", duration_s=7), beta) == pytest.approx(0.50)


def test_resolution_price_tiers(mini_catalog: Catalog) -> None:
    alpha = mini_catalog.offering("alpha-openai")
    assert estimate_cost(
        VideoRequest(prompt="x", duration_s=8, resolution="1080p"), alpha
    ) == pytest.approx(2.40)


def test_retired_offering_is_never_routed_after_its_end_date(mini_catalog: Catalog) -> None:
    req = VideoRequest(prompt="x", duration_s=4)
    after = router(mini_catalog).route(req)
    assert "gamma-retired" not in [c.offering.id for c in after.ranked]
    [rej] = [c for c in after.rejected if c.offering.id == "gamma-retired"]
    assert rej.rejections[0].message == "retired by the provider after 2026-09-24"
    # On its last day it is still routable (and, at $0.01/s, the cheapest).
    last_day = datetime(2026, 9, 24, 23, 59, tzinfo=UTC)
    assert router(mini_catalog, now=last_day).route(req).choice.offering.id == "gamma-retired"
    assert mini_catalog.offering("gamma-retired").available_on(date(2026, 9, 25)) is False


def test_duration_tolerance(mini_catalog: Catalog) -> None:
    # 12.6 s: alpha has 12 (within 1 s); beta tops out at 10.
    plan = router(mini_catalog).route(VideoRequest(prompt="x", duration_s=12.6))
    assert [c.offering.id for c in plan.ranked] == ["alpha-openai"]
    [beta] = [c for c in plan.rejected if c.offering.id == "beta-openai"]
    assert "nearest 10s" in beta.rejections[0].message


def test_every_failed_constraint_is_listed(mini_catalog: Catalog) -> None:
    req = VideoRequest(
        prompt="x",
        duration_s=5,
        resolution="1080p",
        audio=AudioMode.REQUIRED,
        quality=QualityTier.PREMIUM,
    )
    plan = router(mini_catalog).route(req)
    [beta] = [c for c in plan.rejected if c.offering.id == "beta-openai"]
    codes = {r.code for r in beta.rejections}
    assert {"resolution", "audio", "quality"} <= codes


def test_no_route_names_constraint_and_nearest_alternative(mini_catalog: Catalog) -> None:
    req = VideoRequest(
        prompt="x",
        duration_s=8,
        resolution="1080p",
        audio=AudioMode.REQUIRED,
        constraints={"max_cost_usd": 1.0},
    )
    with pytest.raises(NoRoute) as info:
        router(mini_catalog).route(req)
    msg = str(info.value)
    assert msg.startswith("no offering gives 8s 1080p 16:9 with native audio under $1.00")
    assert "cheapest that meets the rest: Alpha via openai (alpha-openai) at $2.40" in msg
    assert "\n" not in msg
    assert info.value.details["nearest"][0]["offering"] == "alpha-openai"


def test_no_route_without_a_soft_miss_names_the_fewest_failures(mini_catalog) -> None:
    with pytest.raises(NoRoute, match=r"nearest: .* fails only on"):
        router(mini_catalog).route(VideoRequest(prompt="x", duration_s=30))


def test_missing_credentials_reject(mini_catalog: Catalog) -> None:
    with pytest.raises(NoRoute, match=r"no provider key is set .* BETA_KEY"):
        router(mini_catalog, creds=False).route(VideoRequest(prompt="x"))


def test_constraints_on_providers_jurisdiction_weights(mini_catalog: Catalog) -> None:
    r = router(mini_catalog)
    only_us = VideoRequest(prompt="x", duration_s=4, constraints={"allowed_jurisdictions": ["us"]})
    assert [c.offering.id for c in r.route(only_us).ranked] == ["alpha-openai"]
    open_w = VideoRequest(prompt="x", duration_s=4, constraints={"open_weights_only": True})
    assert [c.offering.id for c in r.route(open_w).ranked] == ["beta-openai"]
    blocked = VideoRequest(prompt="x", duration_s=4, constraints={"blocked_providers": ["compat"]})
    assert [c.offering.id for c in r.route(blocked).ranked] == ["alpha-openai"]


def test_latency_limit_and_deadline(mini_catalog: Catalog) -> None:
    r = router(mini_catalog)
    fast = VideoRequest(prompt="x", duration_s=4, constraints={"max_latency_s": 60})
    assert [c.offering.id for c in r.route(fast).ranked] == ["beta-openai"]
    soon = VideoRequest(
        prompt="x", duration_s=4, constraints={"deadline": NOW + timedelta(seconds=60)}
    )
    assert [c.offering.id for c in r.route(soon).ranked] == ["beta-openai"]


def test_latency_scales_with_clip_size(mini_catalog: Catalog) -> None:
    alpha = mini_catalog.offering("alpha-openai")
    short = estimate_latency(VideoRequest(prompt="x", duration_s=4), alpha, LatencyPercentile.P50)
    long = estimate_latency(VideoRequest(prompt="x", duration_s=12), alpha, LatencyPercentile.P50)
    assert long > short
    assert short == pytest.approx(120 * 4 / 5)


def test_policies_and_pinning(mini_catalog: Catalog) -> None:
    r = router(mini_catalog)
    req = VideoRequest(prompt="x", duration_s=4)
    assert r.route(req, policy="best-quality").choice.offering.id == "alpha-openai"
    assert r.route(req, policy="fastest").choice.offering.id == "beta-openai"
    pinned = r.route(req, pinned=["alpha-openai", "beta-openai"])
    assert [c.offering.id for c in pinned.ranked] == ["alpha-openai", "beta-openai"]
    assert pinned.policy == "pinned"
    with pytest.raises(InvalidRequest, match="unknown policy 'smartest'"):
        r.route(req, policy="smartest")
