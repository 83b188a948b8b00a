"""The router: filter every offering against the request's constraints, rank the feasible
ones by a policy, and explain the choice — including why each other offering was rejected.

Two paths share one set of rules, each defined once in :mod:`vidgate.routing.constraints`.
:meth:`Router.feasible` is the hot path: shape-only verdicts come from a per-shape cache, and
the rest stop at the first failed constraint, computing cost and latency only for offerings
still in the running. :meth:`Router.check` evaluates every constraint so an explanation lists
every reason; it runs only for explanations and NoRoute errors. A property test holds both,
with a warm cache, to an independent oracle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from vidgate.catalog.loader import Catalog
from vidgate.catalog.schema import Model, Offering
from vidgate.errors import InvalidRequest, NoRoute
from vidgate.routing.compiled import Compiled, RequestView, compile_catalog
from vidgate.routing.constraints import (
    CONSTRAINTS,
    NO_ESTIMATE,
    PER_REQUEST_STAGES,
    SHAPE_STAGES,
    Constraint,
    Estimate,
    Stage,
    key_of,
    shape_fields,
    size_fields,
)
from vidgate.routing.health import Health
from vidgate.routing.policies import POLICIES, rank, tier_priors
from vidgate.routing.stats import LearnedStats
from vidgate.types import AudioMode, Mode, VideoRequest

#: constraints a user can relax by spending more or waiting longer: the nearest miss is the
#: cheapest offering that fails only these
SOFT = frozenset({"cost", "latency", "deadline"})
_PCTS = ("p50", "p90", "p99")
#: an offering past the cached stages, with its planned duration, audio and price
_Sized = tuple[Compiled, float, bool, float | None]


@dataclass(frozen=True)
class Rejection:
    code: str
    message: str


@dataclass(slots=True)
class Candidate:
    compiled: Compiled
    cost_usd: float | None
    duration_s: float
    audio: bool
    latency_s: dict[str, float]
    latency_source: str = "catalog"
    rejections: list[Rejection] = field(default_factory=list)
    utility: float | None = None
    #: the quality estimate learned from the gate's verdicts (None: the catalog's Elo alone)
    quality_elo: float | None = None
    #: the gate's observed pass rate, once enough clips were judged
    pass_rate: float | None = None
    quality_source: str = "catalog"

    @property
    def offering(self) -> Offering:
        return self.compiled.offering

    @property
    def model(self) -> Model:
        return self.compiled.model

    @property
    def feasible(self) -> bool:
        return not self.rejections

    @property
    def elo(self) -> float:
        return self.compiled.elo

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "offering": self.offering.id,
            "model": self.model.id,
            "provider": self.offering.provider,
            "estimated_cost_usd": round(self.cost_usd, 4) if self.cost_usd is not None else None,
            "duration_s": self.duration_s,
            "audio": self.audio,
            "latency_s": {k: round(v, 1) for k, v in self.latency_s.items()},
            "latency_from": self.latency_source,
            "quality": {
                "tier": (self.offering.tier or self.model.quality.tier).value,
                "elo": self.model.quality.elo,
                "strengths": list(self.model.quality.strengths),
                "from": self.quality_source,
            },
        }
        if self.quality_elo is not None:
            out["quality"]["learned_elo"] = round(self.quality_elo, 1)
            out["quality"]["pass_rate"] = round(self.pass_rate or 0.0, 4)
            if self.pass_rate and self.cost_usd is not None:
                # what a gate that regenerates failures expects to pay per passing clip
                out["expected_cost_per_pass_usd"] = round(self.cost_usd / self.pass_rate, 4)
        if self.utility is not None:
            out["utility"] = round(self.utility, 4)
        if self.rejections:
            out["rejected_because"] = [r.message for r in self.rejections]
        return out


@dataclass(frozen=True)
class RouterEnv:
    """What the router may know of the world beyond the request."""

    catalog: Catalog
    #: protocols with an adapter able to serve them (in sandbox mode: every one)
    protocols: frozenset[str]
    has_credentials: Callable[[list[str]], bool]
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    health: Health | None = None
    #: provider -> False when the credential's rate-limit window is full
    headroom: Callable[[str], bool] | None = None
    stats: LearnedStats | None = None


@dataclass
class RoutePlan:
    request: VideoRequest
    policy: str
    ranked: list[Candidate]
    _router: Router
    _view: RequestView
    _pool: list[Compiled]

    @property
    def choice(self) -> Candidate:
        return self.ranked[0]

    @cached_property
    def rejected(self) -> list[Candidate]:
        """Every infeasible offering with all of its reasons (computed on demand)."""
        ok = {c.offering.id for c in self.ranked}
        out = self._router.explain_all(self._view, [c for c in self._pool if c.id not in ok])
        out = [c for c in out if not c.feasible]
        out.sort(key=lambda c: (len(c.rejections), _cost(c), c.offering.id))
        return out

    def explain(self, runners_up: int = 3) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "chosen": self.ranked[0].summary() if self.ranked else None,
            "runners_up": [c.summary() for c in self.ranked[1 : 1 + runners_up]],
            "feasible": len(self.ranked),
            "rejected": [
                {"offering": c.offering.id, "reasons": [r.message for r in c.rejections]}
                for c in self.rejected
            ],
            "estimates_from": sorted({c.latency_source.split(" ")[0] for c in self.ranked}),
        }


def _cost(c: Candidate) -> float:
    return c.cost_usd if c.cost_usd is not None else float("inf")


def _candidate(c: Compiled, e: Estimate, rejections: list[Rejection]) -> Candidate:
    latency = dict(zip(_PCTS, e.latency, strict=True))
    return Candidate(c, e.cost, e.duration, e.audio, latency, e.source, rejections)


class Router:
    """Routes requests over one catalog in one fixed world (adapters, keys, health).

    The rules themselves live in :mod:`vidgate.routing.constraints`; this class only decides
    when each runs. ``constraints`` is injectable so a test can break one rule and watch the
    property tests catch it.
    """

    def __init__(self, env: RouterEnv, constraints: tuple[Constraint, ...] = CONSTRAINTS) -> None:
        self.env = env
        self.compiled = compile_catalog(env.catalog)
        self.by_id = {c.id: c for c in self.compiled}
        self._shape_checks = tuple(k.ok for k in constraints if k.stage in SHAPE_STAGES)
        self._size_checks = tuple(k.ok for k in constraints if k.stage is Stage.SIZE)
        self._later = tuple(k for k in constraints if k.stage in PER_REQUEST_STAGES)
        # Both keys are derived from what the cached constraints declare they read.
        self._shape_key = key_of(shape_fields(constraints))
        self._size_key = key_of(size_fields(constraints))
        self._shape_cache: dict[object, list[Compiled]] = {}
        self._size_cache: dict[object, list[_Sized]] = {}
        # The explanation keeps each rule's place in the list, to give reasons in that order.
        indexed = tuple(enumerate(constraints))
        self._by_shape = tuple((i, k) for i, k in indexed if k.stage in SHAPE_STAGES)
        self._not_by_shape = tuple((i, k) for i, k in indexed if k.stage not in SHAPE_STAGES)
        self._reasons: dict[tuple[object, str], list[tuple[int, Rejection]]] = {}

    # -- the world the constraints ask about (constraints.World) --------------------------------

    def serves(self, protocol: str) -> bool:
        return protocol in self.env.protocols

    def has_credentials(self, names: list[str]) -> bool:
        return self.env.has_credentials(names)

    def blocked(self, c: Compiled) -> str | None:
        """Why live state keeps this offering out now (open breaker, full rate window)."""
        if self.env.health is not None:
            why = self.env.health.blocked(c.id, c.provider)
            if why is not None:
                return why
        if self.env.headroom is not None and not self.env.headroom(c.provider):
            return f"rate limit for {c.provider} reached; no headroom"
        return None

    def watches_health(self) -> bool:
        return self.env.health is not None or self.env.headroom is not None

    def _latency(
        self, c: Compiled, duration: float, pixels: int
    ) -> tuple[tuple[float, float, float], str]:
        learned = self.env.stats.latency(c.id) if self.env.stats is not None else None
        if learned is not None:
            factor = c.size_factor(duration, pixels)
            p50, p90, p99, n = learned
            return (p50 * factor, p90 * factor, p99 * factor), f"learned (n={n})"
        return c.prior_latency(duration, pixels), "catalog"

    @cached_property
    def _tier_priors(self) -> dict[int, float]:
        return tier_priors(self.env.catalog)

    def _learned_quality(self, cands: list[Candidate]) -> None:
        """Attach the learned quality estimate to candidates whose offerings have enough
        gated clips (a dictionary lookup each; nothing when no gate has run)."""
        stats = self.env.stats
        if stats is None or not stats.quality_stats:
            return
        for cand in cands:
            c = cand.compiled
            learned = stats.quality(c.id, c.elo or self._tier_priors[c.tier])
            if learned is not None:
                cand.quality_elo = learned.elo
                cand.pass_rate = learned.pass_rate
                cand.quality_source = "learned: " + learned.describe()

    # -- the fast path --------------------------------------------------------------------------

    def _statically_feasible(self, v: RequestView) -> list[Compiled]:
        """Offerings passing every shape-stage constraint, cached per shape: real traffic has
        few shapes, so most routing decisions skip these checks entirely. The key holds every
        field those constraints read (constraints.SHAPE_FIELDS), the day included."""
        key = self._shape_key(v)
        # a cache: a miss recomputes the same answer, so no mutant of this line can show
        hit = self._shape_cache.get(key)  # pragma: no mutate
        if hit is None:
            # an eviction bound: any bound gives the same answers
            if len(self._shape_cache) >= 4096:  # pragma: no mutate
                self._shape_cache.clear()
            hit = self._shape_cache[key] = [c for c in self.compiled if self._static_ok(v, c)]
        return hit

    def _static_ok(self, v: RequestView, c: Compiled) -> bool:
        # plain loops rather than all(<generator>) here and below: this is the hot loop
        for ok in self._shape_checks:  # noqa: SIM110
            # shape rules never read the estimate (test_each_rule_reads_only_what_it_declares),
            # so which placeholder goes here cannot show
            if not ok(v, c, NO_ESTIMATE, self):  # pragma: no mutate
                return False
        return True

    def _sized(self, v: RequestView) -> list[_Sized]:
        """The shape's offerings that also meet the size-stage constraints (the duration is
        available, a price is listed), with their planned duration, audio and price — cached
        per shape and size, as traffic repeats a handful of lengths."""
        key = self._size_key(v)
        # a cache: a miss recomputes the same answer, so no mutant of this line can show
        hit = self._size_cache.get(key)  # pragma: no mutate
        if hit is None:
            # an eviction bound: any bound gives the same answers
            if len(self._size_cache) >= 16_384:  # pragma: no mutate
                self._size_cache.clear()
            hit = self._size_cache[key] = self._fit(v, self._statically_feasible(v))
        return hit

    def _size_estimate(self, v: RequestView, c: Compiled) -> Estimate:
        """Planned duration, audio and price: computed from constraints.SIZE_INPUTS only."""
        duration = c.nearest_duration(v.duration)
        audio = c.audio_generated(v.audio)
        return Estimate(duration, audio, c.cost(v.resolution, duration, audio))

    def _fit(self, v: RequestView, pool: list[Compiled]) -> list[_Sized]:
        """The offerings of ``pool`` (past the shape stage) that meet the size stage."""
        out = []
        for c in pool:
            e = self._size_estimate(v, c)
            for ok in self._size_checks:
                if not ok(v, c, e, self):
                    break
            else:
                out.append((c, e.duration, e.audio, e.cost))
        return out

    def _finish(self, v: RequestView, sized: list[_Sized]) -> list[Candidate]:
        """Apply the per-request constraints (budget, latency, deadline, live health) that
        this request asks for — a request with no budget never runs the budget rule — and
        estimate latency only for offerings within budget."""
        on = [k for k in self._later if k.applies(v, self)]
        at_budget = tuple(k.ok for k in on if k.stage is Stage.BUDGET)
        at_latency = tuple(k.ok for k in on if k.stage is not Stage.BUDGET)
        e = Estimate(0.0)  # scratch space; each candidate copies what it keeps
        out = []
        for c, duration, audio, cost in sized:
            e.duration, e.audio, e.cost = duration, audio, cost
            for ok in at_budget:
                if not ok(v, c, e, self):
                    break
            else:
                e.latency, e.source = self._latency(c, duration, v.pixels)
                for ok in at_latency:
                    if not ok(v, c, e, self):
                        break
                else:
                    out.append(_candidate(c, e, []))
        return out

    def _survivors(self, v: RequestView, pool: list[Compiled]) -> list[Candidate]:
        """Every offering of ``pool`` meeting every constraint, in pool order (uncached: for
        pinned offerings and explicit candidate lists)."""
        return self._finish(v, self._fit(v, [c for c in pool if self._static_ok(v, c)]))

    def feasible(self, v: RequestView, c: Compiled) -> Candidate | None:
        """The candidate if every constraint holds, else None."""
        found = self._survivors(v, [c])
        return found[0] if found else None

    # -- the explaining path -------------------------------------------------------------------

    def estimate(self, v: RequestView, c: Compiled) -> Estimate:
        duration = c.nearest_duration(v.duration)
        audio = c.audio_generated(v.audio)
        lat, source = self._latency(c, duration, v.pixels)
        return Estimate(duration, audio, c.cost(v.resolution, duration, audio), lat, source)

    def check(self, v: RequestView, c: Compiled) -> Candidate:
        """Evaluate every constraint (not just the first failure) for a complete explanation,
        reasons in the order of the constraint list."""
        [cand] = self.explain_all(v, [c])
        return cand

    def explain_all(self, v: RequestView, pool: list[Compiled]) -> list[Candidate]:
        """:meth:`check` for each offering of ``pool``, sharing the per-request work. Shape-stage
        reasons are cached per shape and offering, as their verdicts are: a NoRoute error
        explains every offering, and traffic repeats shapes. Rules the request does not ask
        for pass by definition (constraints.Constraint.needed) and are left out."""
        shape = self._shape_key(v)
        rest = tuple((i, k) for i, k in self._not_by_shape if k.applies(v, self))
        out = []
        for c in pool:
            e = self.estimate(v, c)
            key = (shape, c.id)
            # a cache: a miss recomputes the same answer, so no mutant of this line can show
            shaped = self._reasons.get(key)  # pragma: no mutate
            if shaped is None:
                # an eviction bound: any bound gives the same answers
                if len(self._reasons) >= 65_536:  # pragma: no mutate
                    self._reasons.clear()
                # as in _static_ok, shape rules never read the estimate: a mutant of the placeholder
                # here is equivalent (the one known survivor left unmarked: the line is too long)
                shaped = self._reasons[key] = self._failures(v, c, NO_ESTIMATE, self._by_shape)
            bad = self._failures(v, c, e, rest)
            if shaped:
                bad = sorted(shaped + bad)  # by rule index, unique: Rejections are never compared
            out.append(_candidate(c, e, [r for _, r in bad]))
        return out

    def _failures(
        self, v: RequestView, c: Compiled, e: Estimate, rules: tuple[tuple[int, Constraint], ...]
    ) -> list[tuple[int, Rejection]]:
        return [
            (i, Rejection(k.code, k.why(v, c, e, self)))
            for i, k in rules
            if not k.ok(v, c, e, self)
        ]

    # -- routing ---------------------------------------------------------------------------------

    def view(self, request: VideoRequest) -> RequestView:
        unknown = [h for h in request.hints if h not in self.env.catalog.hints]
        if unknown:
            raise InvalidRequest(
                f"unknown hint(s) {', '.join(unknown)}; use "
                f"{', '.join(sorted(self.env.catalog.hints))}"
            )
        return RequestView.of(request, self.env.now())

    def route(
        self,
        request: VideoRequest,
        policy: str = "cheapest",
        pinned: list[str] | None = None,
        among: list[str] | None = None,
    ) -> RoutePlan:
        """Rank feasible offerings; raise :class:`NoRoute` with the nearest misses if none."""
        v = self.view(request)
        if pinned:
            pool = []
            for oid in pinned:
                if oid not in self.by_id:
                    self.env.catalog.offering(oid)  # raises with a "did you mean"
                pool.append(self.by_id[oid])
            ranked = self._survivors(v, pool)
            policy = "pinned"  # keep the caller's order
        else:
            if policy not in POLICIES:
                raise InvalidRequest(
                    f"unknown policy {policy!r}; use one of {', '.join(POLICIES)} "
                    "or pin offerings with --offering"
                )
            if among is not None:
                pool = [self.by_id[oid] for oid in among if oid in self.by_id]
                found = self._survivors(v, pool)
            else:
                pool = self.compiled
                found = self._finish(v, self._sized(v))
            self._learned_quality(found)
            ranked = rank(policy, found, request, self.env.catalog)
        if policy == "pinned":
            self._learned_quality(ranked)
        plan = RoutePlan(
            request=request, policy=policy, ranked=ranked, _router=self, _view=v, _pool=pool
        )
        if not ranked:
            raise no_route_error(plan)
        return plan


def describe(request: VideoRequest) -> str:
    parts = [f"{request.duration_s:g}s {request.resolution.value} {request.aspect_ratio}"]
    if request.mode is not Mode.TEXT_TO_VIDEO:
        parts.append(request.mode.value)
    if request.audio is AudioMode.REQUIRED:
        parts.append("with native audio")
    if request.quality is not None:
        parts.append(f"at {request.quality.value} quality")
    cons = request.constraints
    if cons.max_cost_usd is not None:
        parts.append(f"under ${cons.max_cost_usd:.2f}")
    if cons.max_latency_s is not None:
        parts.append(f"within {cons.max_latency_s:g}s ({cons.latency_percentile.value})")
    return " ".join(parts)


def no_route_error(plan: RoutePlan) -> NoRoute:
    """One line naming what failed and the nearest alternative, e.g. "no offering gives 5s
    4k 16:9 with native audio under $1.00; cheapest that meets the rest: Kling 3.0 via kling
    (kling-3.0-kling) at $1.68 (...)"."""
    request = plan.request
    rejected = plan.rejected
    head = f"no offering gives {describe(request)}"
    soft_only = [
        c for c in rejected if c.cost_usd is not None and all(r.code in SOFT for r in c.rejections)
    ]
    nearest: list[Candidate] = []
    unreachable = {"credentials", "adapter", "disabled"}
    if rejected and all(any(r.code in unreachable for r in c.rejections) for c in rejected):
        keys = sorted({k for c in rejected for k in c.compiled.credentials})
        tail = (
            f"no provider key is set for any offering that could serve it "
            f"(e.g. {', '.join(keys[:4])}); export one, or use --sandbox to try offline"
        )
    elif soft_only:
        best = min(soft_only, key=lambda c: (_cost(c), c.latency_s["p50"]))
        why = "; ".join(r.message for r in best.rejections)
        tail = (
            f"cheapest that meets the rest: {best.model.name} via {best.offering.provider} "
            f"({best.offering.id}) at ${_cost(best):.2f} ({why})"
        )
        nearest = [best]
    elif rejected:
        fewest = min(len(c.rejections) for c in rejected)
        close = [c for c in rejected if len(c.rejections) == fewest]
        best = min(close, key=lambda c: (_cost(c), c.offering.id))
        why = "; ".join(r.message for r in best.rejections)
        tail = f"nearest: {best.offering.id} fails only on: {why}"
        nearest = close[:5]
    else:
        tail = "the catalog has no offerings"
    return NoRoute(
        f"{head}; {tail}",
        details={
            "nearest": [
                {
                    "offering": c.offering.id,
                    "estimated_cost_usd": c.cost_usd,
                    "reasons": [r.message for r in c.rejections],
                }
                for c in nearest
            ],
            "explanation": plan.explain(),
        },
    )
