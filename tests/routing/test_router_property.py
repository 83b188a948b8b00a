"""Property: for random constrained requests, the cheapest policy's choice equals an
exhaustive search over the catalog, and no ranked offering violates a hard constraint.

The oracle below is written from the catalog's own models (schema.py, estimate.py) and shares
no code with the router's compiled fast path.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vidgate.catalog.loader import load_catalog
from vidgate.catalog.schema import Offering
from vidgate.errors import NoRoute
from vidgate.routing.estimate import estimate_cost, estimate_latency, planned_duration
from vidgate.routing.router import Router, RouterEnv
from vidgate.types import (
    AudioMode,
    LatencyPercentile,
    Mode,
    QualityTier,
    Resolution,
    VideoRequest,
)

CATALOG = load_catalog()
PROTOCOLS = frozenset(o.protocol for o in CATALOG.offerings.values())
PROVIDERS = sorted({o.provider for o in CATALOG.offerings.values()})
ENV_NAMES = sorted({n for o in CATALOG.offerings.values() for n in o.credential_env})
PNG = "data:image/png;base64,iVBORw0KGgo="


def oracle_ok(req: VideoRequest, o: Offering, now: datetime, creds: set[str]) -> bool:
    m = CATALOG.model_of(o)
    caps = o.capabilities
    c = req.constraints
    if not o.enabled or not o.available_on(now.date()):
        return False
    if not set(o.credential_env) <= creds:
        return False
    if req.mode not in caps.modes or req.resolution not in caps.resolutions:
        return False
    if req.aspect_ratio not in caps.aspect_ratios:
        return False
    if req.fps is not None and req.fps not in caps.fps:
        return False
    if abs(planned_duration(req, o) - req.duration_s) > req.duration_tolerance_s + 1e-9:
        return False
    if req.audio is AudioMode.REQUIRED and caps.audio == "never":
        return False
    if req.negative_prompt and not caps.negative_prompt:
        return False
    roles = {r.role for r in req.references}
    if not roles <= set(caps.reference_roles) or len(req.references) > caps.max_references:
        return False
    if req.quality is not None and (o.tier or m.quality.tier).rank < req.quality.rank:
        return False
    if c.allowed_providers is not None and o.provider not in c.allowed_providers:
        return False
    if o.provider in c.blocked_providers:
        return False
    if c.allowed_jurisdictions is not None and m.jurisdiction not in c.allowed_jurisdictions:
        return False
    if c.open_weights_only and not m.open_weights:
        return False
    if c.commercial_use_required and m.commercial_use is not True:
        return False
    if not set(c.required_strengths) <= set(m.quality.strengths):
        return False
    cost = estimate_cost(req, o)
    if cost is None or (c.max_cost_usd is not None and cost > c.max_cost_usd + 1e-9):
        return False
    lat = estimate_latency(req, o, c.latency_percentile)
    if c.max_latency_s is not None and lat > c.max_latency_s:
        return False
    return not (c.deadline is not None and lat > (c.deadline - now).total_seconds())


def oracle_key(req: VideoRequest, o: Offering) -> tuple[float, float, float, str]:
    cost = estimate_cost(req, o)
    assert cost is not None
    return (
        cost,
        estimate_latency(req, o, LatencyPercentile.P50),
        -(CATALOG.model_of(o).quality.elo or 0.0),
        o.id,
    )


def draw_scenario(draw: Draw) -> tuple[VideoRequest, datetime, set[str]]:
    """One random constrained request, the day it is routed, and the keys configured."""
    now = datetime(2026, 6, 1, 12, tzinfo=UTC) + timedelta(days=draw.integer(0, 240))
    mode = draw.choice([Mode.TEXT_TO_VIDEO] * 3 + [Mode.IMAGE_TO_VIDEO, Mode.FIRST_LAST_FRAME])
    refs = []
    if mode is not Mode.TEXT_TO_VIDEO:
        refs.append({"role": "first_frame", "url": PNG})
    if mode is Mode.FIRST_LAST_FRAME:
        refs.append({"role": "last_frame", "url": PNG})
    maybe = draw.maybe
    cons = {
        "max_cost_usd": maybe(lambda: draw.real(0.05, 6.0)),
        "max_latency_s": maybe(lambda: draw.real(10, 900)),
        "latency_percentile": draw.choice(list(LatencyPercentile)),
        "deadline": maybe(lambda: now + timedelta(seconds=draw.integer(5, 2000))),
        "allowed_providers": maybe(lambda: draw.subset(PROVIDERS, 6)),
        "blocked_providers": draw.subset(PROVIDERS, 3),
        "allowed_jurisdictions": maybe(lambda: draw.choice([["US"], ["CN"], ["US", "IL"]])),
        "open_weights_only": draw.coin(),
        "commercial_use_required": draw.coin(),
        "required_strengths": draw.subset(["audio", "multi-shot", "cost", "speed"], 1),
    }
    req = VideoRequest(
        prompt="p",
        negative_prompt=maybe(lambda: "blurry"),
        mode=mode,
        references=refs,
        duration_s=draw.choice([1, 2, 4, 5, 5.5, 6, 8, 9, 10, 12, 15, 20, 25]),
        duration_tolerance_s=draw.choice([0, 0.5, 1, 2, 5]),
        resolution=draw.choice(list(Resolution)),
        aspect_ratio=draw.choice(["16:9", "9:16", "1:1", "4:3", "21:9"]),
        fps=maybe(lambda: draw.choice([16, 24, 25, 30, 60])),
        audio=draw.choice(list(AudioMode)),
        quality=maybe(lambda: draw.choice(list(QualityTier))),
        constraints=cons,
    )
    # often everything is configured (as in sandbox mode), else a random subset of keys
    creds = set(ENV_NAMES) if draw.coin() else set(draw.subset(ENV_NAMES, len(ENV_NAMES)))
    return req, now, creds


class Draw:
    """The few random choices a scenario needs, from either `random` or Hypothesis."""

    def __init__(self, pick: Callable[[st.SearchStrategy[Any]], Any]) -> None:
        self.pick = pick

    def integer(self, lo: int, hi: int) -> int:
        return int(self.pick(st.integers(lo, hi)))

    def real(self, lo: float, hi: float) -> float:
        return float(self.pick(st.floats(lo, hi)))

    def coin(self) -> bool:
        return bool(self.pick(st.booleans()))

    def choice(self, xs: list[Any]) -> Any:
        return self.pick(st.sampled_from(xs))

    def subset(self, xs: list[str], most: int) -> list[str]:
        return list(self.pick(st.lists(st.sampled_from(xs), max_size=most, unique=True)))

    def maybe(self, make: Callable[[], Any]) -> Any:
        return make() if self.coin() else None


class RandomDraw(Draw):
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def real(self, lo: float, hi: float) -> float:
        return self.rng.uniform(lo, hi)

    def coin(self) -> bool:
        return self.rng.random() < 0.5

    def choice(self, xs: list[Any]) -> Any:
        return self.rng.choice(xs)

    def subset(self, xs: list[str], most: int) -> list[str]:
        return self.rng.sample(xs, self.rng.randint(0, min(most, len(xs))))


class World:
    """One router for the whole run; each case sets the day and keys it routes under."""

    def __init__(self) -> None:
        self.now = datetime(2026, 6, 1, tzinfo=UTC)
        self.creds: set[str] = set()
        self.router = Router(
            RouterEnv(
                catalog=CATALOG,
                protocols=PROTOCOLS,
                has_credentials=lambda names: set(names) <= self.creds,
                now=lambda: self.now,
            )
        )

    def check(self, req: VideoRequest, now: datetime, creds: set[str]) -> None:
        self.now, self.creds = now, creds
        self.router._shape_cache.clear()  # the cached shapes assumed the previous keys
        feasible = [o for o in CATALOG.offerings.values() if oracle_ok(req, o, now, creds)]
        try:
            plan = self.router.route(req, policy="cheapest")
        except NoRoute:
            assert feasible == [], f"router found none; oracle found {[o.id for o in feasible]}"
            return
        assert feasible, "router chose an offering the oracle rejects"
        best = min(feasible, key=lambda o: oracle_key(req, o))
        assert plan.choice.offering.id == best.id
        # every ranked offering satisfies every hard constraint, in cheapest order
        assert {c.offering.id for c in plan.ranked} == {o.id for o in feasible}
        costs = [c.cost_usd for c in plan.ranked]
        assert costs == sorted(costs)
        # the explaining path agrees with the fast path on every rejected offering
        assert all(not r.feasible for r in plan.rejected)


def test_cheapest_equals_exhaustive_search_on_10000_requests() -> None:
    world = World()
    rng = random.Random(20261121)
    routed = 0
    for _ in range(10_000):
        req, now, creds = draw_scenario(RandomDraw(rng))
        world.check(req, now, creds)
        routed += 1
    assert routed == 10_000


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_cheapest_equals_exhaustive_search_hypothesis(data: st.DataObject) -> None:
    """The same property under Hypothesis, which shrinks a failure to a minimal request."""
    req, now, creds = draw_scenario(Draw(data.draw))
    WORLD.check(req, now, creds)


WORLD = World()
