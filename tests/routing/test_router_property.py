"""Property: over random constrained requests routed by long-lived routers with WARM caches,
the router agrees with an independent oracle — the feasible set, the cheapest choice, and the
reasons given for every offering of the catalog.

Requests share shapes on purpose: a pool of random shapes plus "siblings" that differ from a
shape in exactly one field, drawn in random order, with sizes, budgets, latency limits and
deadlines varied per request. A shape-cache key that missed a field would hand a sibling the
cached verdicts of its neighbour, and the oracle would disagree. Nothing clears a cache.

The oracle is written from the catalog's own models (schema.py, estimate.py) and shares no
code with vidgate.routing.constraints or the compiled fast path. It returns, per offering, the
set of rejection codes; the router's explanation (``Router.check``) must list exactly those
codes for every offering, feasible or not — not just for the ones routing already rejected.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vidgate.catalog.loader import load_catalog
from vidgate.catalog.schema import Offering
from vidgate.errors import NoRoute
from vidgate.routing.constraints import CONSTRAINTS, Constraint
from vidgate.routing.estimate import estimate_cost, estimate_latency, planned_duration
from vidgate.routing.router import RoutePlan, Router, RouterEnv
from vidgate.types import (
    AudioMode,
    LatencyPercentile,
    Mode,
    QualityTier,
    Resolution,
    VideoRequest,
)

CATALOG = load_catalog()
OFFERINGS = list(CATALOG.offerings.values())
PROTOCOLS = sorted({o.protocol for o in OFFERINGS})
PROVIDERS = sorted({o.provider for o in OFFERINGS})
ENV_NAMES = sorted({n for o in OFFERINGS for n in o.credential_env})
PNG = "data:image/png;base64,iVBORw0KGgo="
#: around the shipped catalog's retirement date (2026-09-24): before, on it, the day after
DAYS = [date(2026, 6, 1), date(2026, 9, 24), date(2026, 9, 25), date(2027, 3, 1)]


#: rules the shipped catalog cannot break in these worlds, each proven by a unit test in
#: test_constraints.py instead
PROVEN_ELSEWHERE = {
    "health": "these worlds have no live state (breakers, rate limits)",
    "price": "every shipped offering lists a price for every size it offers",
}


# -- the oracle ----------------------------------------------------------------------------------


def oracle_reasons(
    req: VideoRequest, o: Offering, now: datetime, creds: set[str], protocols: set[str]
) -> set[str]:
    """Every rule ``o`` breaks for ``req``, by rejection code (empty: feasible)."""
    m = CATALOG.model_of(o)
    caps = o.capabilities
    c = req.constraints
    out: set[str] = set()
    if not o.enabled:
        out.add("disabled")
    if not o.available_on(now.date()):
        out.add("availability")
    if o.protocol not in protocols:
        out.add("adapter")
    if not set(o.credential_env) <= creds:
        out.add("credentials")
    if req.mode not in caps.modes:
        out.add("mode")
    if abs(planned_duration(req, o) - req.duration_s) > req.duration_tolerance_s + 1e-9:
        out.add("duration")
    if req.resolution not in caps.resolutions:
        out.add("resolution")
    if req.aspect_ratio not in caps.aspect_ratios:
        out.add("aspect_ratio")
    if req.fps is not None and req.fps not in caps.fps:
        out.add("fps")
    if req.audio is AudioMode.REQUIRED and caps.audio == "never":
        out.add("audio")
    roles = {r.role for r in req.references}
    if not roles <= set(caps.reference_roles) or len(req.references) > caps.max_references:
        out.add("references")
    if req.negative_prompt and not caps.negative_prompt:
        out.add("negative_prompt")
    if req.quality is not None and (o.tier or m.quality.tier).rank < req.quality.rank:
        out.add("quality")
    if c.allowed_providers is not None and o.provider not in c.allowed_providers:
        out.add("provider")
    if o.provider in c.blocked_providers:
        out.add("provider")
    if c.allowed_jurisdictions is not None and m.jurisdiction not in c.allowed_jurisdictions:
        out.add("jurisdiction")
    if c.open_weights_only and not m.open_weights:
        out.add("open_weights")
    if c.commercial_use_required and m.commercial_use is not True:
        out.add("commercial")
    if not set(c.required_strengths) <= set(m.quality.strengths):
        out.add("strengths")
    cost = estimate_cost(req, o)
    if cost is None:
        out.add("price")
    elif c.max_cost_usd is not None and cost > c.max_cost_usd + 1e-9:
        out.add("cost")
    lat = estimate_latency(req, o, c.latency_percentile)
    if c.max_latency_s is not None and lat > c.max_latency_s:
        out.add("latency")
    if c.deadline is not None and lat > (c.deadline - now).total_seconds():
        out.add("deadline")
    return out


def oracle_key(req: VideoRequest, o: Offering) -> tuple[float, float, float, str]:
    cost = estimate_cost(req, o)
    assert cost is not None
    return (
        cost,
        estimate_latency(req, o, LatencyPercentile.P50),
        -(CATALOG.model_of(o).quality.elo or 0.0),
        o.id,
    )


# -- random choices ------------------------------------------------------------------------------


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

    def rarely(self, make: Callable[[], Any]) -> Any:
        """``make()`` one time in four, else None: most requests leave most rules unasked."""
        return make() if self.integer(0, 3) == 0 else None


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


# -- shapes and requests -------------------------------------------------------------------------

#: every field of a request's shape, with how to draw a value for it (None is "not asked")
AXES: dict[str, Callable[[Draw], Any]] = {
    "day": lambda d: d.choice([DAYS[0], DAYS[0], *DAYS]),
    "mode": lambda d: d.choice(
        [Mode.TEXT_TO_VIDEO] * 3 + [Mode.IMAGE_TO_VIDEO, Mode.FIRST_LAST_FRAME]
    ),
    # a first frame is also allowed with text-to-video (the mode does not imply the roles)
    "first_frame": lambda d: d.coin(),
    "subjects": lambda d: d.choice([0, 0, 0, 0, 0, 1, 2, 3]),
    "resolution": lambda d: d.choice(
        [Resolution.R720P] * 4 + [Resolution.R1080P] * 2 + [*Resolution]
    ),
    "aspect_ratio": lambda d: d.choice(["16:9", "16:9", "16:9", "9:16", "1:1", "4:3", "21:9"]),
    "fps": lambda d: d.rarely(lambda: d.choice([16, 24, 25, 30, 50, 60])),
    "audio": lambda d: d.choice(list(AudioMode)),
    "negative_prompt": lambda d: d.rarely(lambda: "blurry"),
    "quality": lambda d: d.maybe(lambda: d.choice(list(QualityTier))),
    "allowed_providers": lambda d: d.rarely(lambda: d.subset(PROVIDERS, 8)),
    "blocked_providers": lambda d: d.rarely(lambda: d.subset(PROVIDERS, 3)) or [],
    "allowed_jurisdictions": lambda d: d.rarely(lambda: d.choice([["US"], ["CN"], ["US", "IL"]])),
    "open_weights_only": lambda d: bool(d.rarely(lambda: d.coin())),
    "commercial_use_required": lambda d: bool(d.rarely(lambda: True)),
    "required_strengths": lambda d: (
        d.rarely(lambda: d.subset(["audio", "multi-shot", "cost", "speed"], 1)) or []
    ),
}

Shape = dict[str, Any]


def draw_shape(d: Draw) -> Shape:
    return {axis: make(d) for axis, make in AXES.items()}


#: the commonest request: every rule passes for many offerings, so a sibling of it that
#: changes one field makes that field's rule the only reason some offering is refused
PLAIN: Shape = {
    "day": DAYS[0],
    "mode": Mode.TEXT_TO_VIDEO,
    "first_frame": False,
    "subjects": 0,
    "resolution": Resolution.R720P,
    "aspect_ratio": "16:9",
    "fps": None,
    "audio": AudioMode.NONE,
    "negative_prompt": None,
    "quality": None,
    "allowed_providers": None,
    "blocked_providers": [],
    "allowed_jurisdictions": None,
    "open_weights_only": False,
    "commercial_use_required": False,
    "required_strengths": [],
}
assert set(PLAIN) == set(AXES)


def sibling(d: Draw, shape: Shape, axis: str | None = None) -> Shape:
    """The same shape with exactly one field changed (where a few draws can change it)."""
    axis = axis or d.choice(sorted(AXES))
    for _ in range(8):
        value = AXES[axis](d)
        if value != shape[axis]:
            break
    return {**shape, axis: value}


def shape_pool(d: Draw, bases: int, siblings: int = 4) -> list[Shape]:
    """The plain shape with two siblings per field, then random shapes with their siblings."""
    pool = [PLAIN, *(sibling(d, PLAIN, axis) for axis in sorted(AXES) for _ in range(2))]
    for _ in range(bases):
        base = draw_shape(d)
        pool += [base, *(sibling(d, base) for _ in range(siblings))]
    return pool


def request_of(d: Draw, shape: Shape) -> tuple[VideoRequest, datetime]:
    """A request of ``shape`` with its size, budget, latency limit and deadline drawn anew."""
    now = datetime.combine(shape["day"], datetime.min.time(), UTC) + timedelta(
        seconds=d.integer(0, 86_399)
    )
    mode = shape["mode"]
    refs: list[dict[str, str]] = []
    if mode is not Mode.TEXT_TO_VIDEO or shape["first_frame"]:
        refs.append({"role": "first_frame", "url": PNG})
    if mode is Mode.FIRST_LAST_FRAME:
        refs.append({"role": "last_frame", "url": PNG})
    refs += [{"role": "subject", "url": PNG}] * shape["subjects"]
    cons = {
        "max_cost_usd": d.rarely(lambda: d.real(0.05, 6.0)),
        "max_latency_s": d.rarely(lambda: d.real(10, 900)),
        "latency_percentile": d.choice(list(LatencyPercentile)),
        "deadline": d.rarely(lambda: now + timedelta(seconds=d.integer(5, 2000))),
        **{
            k: shape[k]
            for k in (
                "blocked_providers",
                "open_weights_only",
                "commercial_use_required",
                "required_strengths",
            )
        },
        "allowed_providers": shape["allowed_providers"],
        "allowed_jurisdictions": shape["allowed_jurisdictions"],
    }
    req = VideoRequest(
        prompt="p",
        negative_prompt=shape["negative_prompt"],
        mode=mode,
        references=refs,
        duration_s=d.choice([5, 5, 8, 8, 10, 1, 2, 4, 5.5, 6, 9, 12, 15, 20, 25]),
        duration_tolerance_s=d.choice([0, 0.5, 1, 1, 2, 5]),
        resolution=shape["resolution"],
        aspect_ratio=shape["aspect_ratio"],
        fps=shape["fps"],
        audio=shape["audio"],
        quality=shape["quality"],
        constraints=cons,
    )
    return req, now


# -- routers that live through the whole run -----------------------------------------------------


@dataclass
class World:
    """One router with fixed adapters and keys (as in a gateway), routing at a settable time.
    Its caches are never cleared: every request after the first finds them warm."""

    creds: set[str]
    protocols: set[str]
    constraints: tuple[Constraint, ...] = CONSTRAINTS

    def __post_init__(self) -> None:
        self.now = datetime(2026, 6, 1, tzinfo=UTC)
        self.router = Router(
            RouterEnv(
                catalog=CATALOG,
                protocols=frozenset(self.protocols),
                has_credentials=lambda names: set(names) <= self.creds,
                now=lambda: self.now,
            ),
            self.constraints,
        )

    def check(self, req: VideoRequest, now: datetime) -> bool:
        """Route ``req`` at ``now`` and hold every answer to the oracle; True if routed."""
        self.now = now
        router = self.router
        expected = {
            o.id: oracle_reasons(req, o, now, self.creds, self.protocols) for o in OFFERINGS
        }
        # The explanation, for every offering of the catalog, names exactly the broken rules.
        view = router.view(req)
        for c in router.compiled:
            got = {r.code for r in router.check(view, c).rejections}
            assert got == expected[c.id], f"{c.id}: explained {sorted(got)}, oracle {expected}"
        feasible = [o for o in OFFERINGS if not expected[o.id]]
        try:
            plan: RoutePlan | None = router.route(req, policy="cheapest")
        except NoRoute as e:
            plan, explained = None, e.details["explanation"]
        if plan is None:
            assert feasible == [], f"router found none; oracle found {[o.id for o in feasible]}"
            assert len(explained["rejected"]) == len(OFFERINGS)
            return False
        assert feasible, f"router chose {plan.choice.offering.id}; the oracle rejects all"
        # exactly the feasible offerings, cheapest first, the oracle's best on top
        assert {c.offering.id for c in plan.ranked} == {o.id for o in feasible}
        best = min(feasible, key=lambda o: oracle_key(req, o))
        assert plan.choice.offering.id == best.id
        costs = [c.cost_usd for c in plan.ranked]
        assert costs == sorted(costs)
        # the plan's rejected list is every other offering, with the oracle's reasons
        rejected = {c.offering.id: {r.code for r in c.rejections} for c in plan.rejected}
        assert rejected == {k: v for k, v in expected.items() if v}
        return True


def worlds(rng: random.Random, constraints: tuple[Constraint, ...] = CONSTRAINTS) -> list[World]:
    """A gateway with every key and adapter (as in sandbox mode), and three with some missing."""
    every_key, every_protocol = set(ENV_NAMES), set(PROTOCOLS)
    some_keys = set(rng.sample(ENV_NAMES, len(ENV_NAMES) * 2 // 3))
    some_protocols = set(rng.sample(PROTOCOLS, len(PROTOCOLS) * 2 // 3))
    return [
        World(every_key, every_protocol, constraints),
        World(some_keys, every_protocol, constraints),
        World(every_key, some_protocols, constraints),
        World(some_keys, some_protocols, constraints),
    ]


def run_warm(
    cases: int, seed: int, constraints: tuple[Constraint, ...] = CONSTRAINTS
) -> tuple[int, int]:
    """Route ``cases`` requests drawn from a shared pool of shapes through warm routers
    (raises AssertionError on the first disagreement); return how many found a route and
    how many shapes the routers' caches hold at the end."""
    rng = random.Random(seed)
    d = RandomDraw(rng)
    pool = shape_pool(d, bases=30)
    ws = worlds(rng, constraints)
    routed = sum(w.check(*request_of(d, rng.choice(pool))) for w in rng.choices(ws, k=cases))
    return routed, sum(len(w.router._shape_cache) for w in ws)


def test_warm_router_agrees_with_the_oracle_on_4000_requests() -> None:
    routed, shapes = run_warm(4_000, seed=20261121)
    # a fair share of requests is routable, and the caches were warm: shapes repeat
    assert routed > 4_000 // 5
    assert shapes < 4_000 / 4


def test_the_corpus_reaches_every_verdict() -> None:
    """The property above only proves something if its requests make every rule the only
    reason some offering is refused (switching that rule off would then change the answer),
    and leave many requests routable: count that over the same corpus."""
    rng = random.Random(20261121)
    d = RandomDraw(rng)
    pool = shape_pool(d, bases=30)
    ws = worlds(rng)
    alone: dict[str, int] = {}
    routable = 0
    for world in rng.choices(ws, k=1_500):
        req, now = request_of(d, rng.choice(pool))
        codes = [oracle_reasons(req, o, now, world.creds, world.protocols) for o in OFFERINGS]
        routable += any(not c for c in codes)
        for c in codes:
            if len(c) == 1:
                [code] = c
                alone[code] = alone.get(code, 0) + 1
    expected = {k.code for k in CONSTRAINTS} - set(PROVEN_ELSEWHERE)
    assert {code for code, n in alone.items() if n >= 5} >= expected, alone
    assert routable >= 1_500 // 5


WARM = worlds(random.Random(7))
POOL = shape_pool(RandomDraw(random.Random(7)), bases=20)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_warm_router_agrees_with_the_oracle_hypothesis(data: st.DataObject) -> None:
    """The same property under Hypothesis: shapes from a shared pool or fresh, against routers
    whose caches persist across examples."""
    d = Draw(data.draw)
    shape = d.choice(POOL) if d.coin() else draw_shape(d)
    req, now = request_of(d, shape)
    d.choice(WARM).check(req, now)
