"""The router: filter every offering against the request's constraints, rank the feasible
ones by a policy, and explain the choice — including why each other offering was rejected.

Two paths share one set of rules. :func:`feasible` is the hot path: it stops at the first
failed constraint and computes cost and latency only for offerings still in the running.
:func:`check` evaluates every constraint so an explanation lists every reason; it runs only
for explanations and NoRoute errors. A property test holds the two to the same verdicts.
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
from vidgate.routing.health import Health
from vidgate.routing.policies import POLICIES, rank
from vidgate.routing.stats import LearnedStats
from vidgate.types import AudioMode, Mode, VideoRequest

#: constraints a user can relax by spending more or waiting longer: the nearest miss is the
#: cheapest offering that fails only these
SOFT = frozenset({"cost", "latency", "deadline"})
_PCTS = ("p50", "p90", "p99")


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
            },
        }
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
        out = [self._router.check(self._view, c) for c in self._pool if c.id not in ok]
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


class Router:
    def __init__(self, env: RouterEnv) -> None:
        self.env = env
        self.compiled = compile_catalog(env.catalog)
        self.by_id = {c.id: c for c in self.compiled}
        self._shape_cache: dict[tuple[object, ...], list[Compiled]] = {}

    # -- shared pieces ------------------------------------------------------------------------

    def _latency(self, c: Compiled, duration: float, pixels: int) -> tuple[tuple[float, ...], str]:
        learned = self.env.stats.latency(c.id) if self.env.stats is not None else None
        if learned is not None:
            factor = c.size_factor(duration, pixels)
            p50, p90, p99, n = learned
            return (p50 * factor, p90 * factor, p99 * factor), f"learned (n={n})"
        return c.prior_latency(duration, pixels), "catalog"

    def _blocked(self, c: Compiled) -> str | None:
        if self.env.health is not None:
            why = self.env.health.blocked(c.id, c.provider)
            if why is not None:
                return why
        if self.env.headroom is not None and not self.env.headroom(c.provider):
            return f"rate limit for {c.provider} reached; no headroom"
        return None

    # -- the fast path --------------------------------------------------------------------------

    def _static_ok(self, v: RequestView, c: Compiled) -> bool:
        """The constraints that depend only on the request's shape, not its size or budget."""
        env = self.env
        if not c.enabled or v.mode not in c.modes or v.resolution not in c.resolutions:
            return False
        if v.aspect not in c.aspects or (v.fps is not None and v.fps not in c.fps):
            return False
        if v.audio_required and c.audio == "never":
            return False
        if c.available_until is not None and v.today > c.available_until:
            return False
        if c.available_from is not None and v.today < c.available_from:
            return False
        if v.roles and (not v.roles <= c.roles or v.n_refs > c.max_refs):
            return False
        if v.negative and not c.negative_prompt:
            return False
        if c.tier < v.min_tier or (v.open_weights_only and not c.open_weights):
            return False
        if v.commercial_required and not c.commercial:
            return False
        if v.required_strengths and not v.required_strengths <= c.strengths:
            return False
        if v.allowed_providers is not None and c.provider not in v.allowed_providers:
            return False
        if c.provider in v.blocked_providers:
            return False
        if v.allowed_jurisdictions is not None and c.jurisdiction not in v.allowed_jurisdictions:
            return False
        return c.protocol in env.protocols and env.has_credentials(list(c.credentials))

    def _statically_feasible(self, v: RequestView) -> list[Compiled]:
        """Offerings passing every shape-only constraint, cached per shape and day: real
        traffic has few shapes, so most routing decisions skip these checks entirely."""
        key = v.shape_key()
        hit = self._shape_cache.get(key)
        if hit is None:
            if len(self._shape_cache) >= 1024:
                self._shape_cache.clear()
            hit = self._shape_cache[key] = [c for c in self.compiled if self._static_ok(v, c)]
        return hit

    def feasible(self, v: RequestView, c: Compiled) -> Candidate | None:
        """The candidate if every constraint holds, else None (first failure wins)."""
        if not self._static_ok(v, c):
            return None
        return self._dynamic(v, c)

    def _dynamic(self, v: RequestView, c: Compiled) -> Candidate | None:
        """The constraints that depend on duration, budget, latency and live health."""
        duration = c.nearest_duration(v.duration)
        if abs(duration - v.duration) > v.tolerance:
            return None
        audio = c.audio_generated(v.audio)
        cost = c.cost(v.resolution, duration, audio)
        if cost is None or (v.max_cost is not None and cost > v.max_cost + 1e-9):
            return None
        lat, source = self._latency(c, duration, v.pixels)
        if v.max_latency is not None and lat[v.pct] > v.max_latency:
            return None
        if v.time_left is not None and lat[v.pct] > v.time_left:
            return None
        if self._blocked(c) is not None:
            return None
        return Candidate(c, cost, duration, audio, dict(zip(_PCTS, lat, strict=True)), source)

    # -- the explaining path -------------------------------------------------------------------

    def check(self, v: RequestView, c: Compiled) -> Candidate:
        """Evaluate every constraint (not just the first failure) for a complete explanation."""
        bad: list[Rejection] = []

        def no(code: str, message: str) -> None:
            bad.append(Rejection(code, message))

        caps = c.offering.capabilities
        if not c.enabled:
            no("disabled", "disabled in the catalog configuration")
        if c.available_until is not None and v.today > c.available_until:
            no("availability", f"retired by the provider after {c.available_until}")
        elif c.available_from is not None and v.today < c.available_from:
            no("availability", f"not available before {c.available_from}")
        if c.protocol not in self.env.protocols:
            no("adapter", f"no adapter for protocol {c.protocol} yet")
        if not self.env.has_credentials(list(c.credentials)):
            no("credentials", f"credential {' + '.join(c.credentials)} not set")
        if v.mode not in c.modes:
            no(
                "mode",
                f"does not do {v.mode.value} (does {', '.join(m.value for m in caps.modes)})",
            )
        duration = c.nearest_duration(v.duration)
        if abs(duration - v.duration) > v.tolerance:
            no(
                "duration",
                f"{v.duration:g}s not available (nearest {duration:g}s, "
                f"max {caps.durations.maximum:g}s)",
            )
        if v.resolution not in c.resolutions:
            no(
                "resolution",
                f"no {v.resolution.value} (has {', '.join(r.value for r in caps.resolutions)})",
            )
        if v.aspect not in c.aspects:
            no("aspect_ratio", f"no {v.aspect} (has {', '.join(caps.aspect_ratios)})")
        if v.fps is not None and v.fps not in c.fps:
            no("fps", f"no {v.fps} fps (has {', '.join(str(f) for f in caps.fps)})")
        if v.audio_required and c.audio == "never":
            no("audio", "no native audio")
        unsupported = v.roles - c.roles
        if unsupported:
            no(
                "references",
                f"cannot take {', '.join(sorted(r.value for r in unsupported))} references",
            )
        elif v.n_refs > c.max_refs:
            no("references", f"takes at most {c.max_refs} references")
        if v.negative and not c.negative_prompt:
            no("negative_prompt", "takes no negative prompt")
        if c.tier < v.min_tier and v.request.quality is not None:
            no("quality", f"below the {v.request.quality.value} quality tier")
        if v.allowed_providers is not None and c.provider not in v.allowed_providers:
            no("provider", f"provider {c.provider} not in the allowed list")
        if c.provider in v.blocked_providers:
            no("provider", f"provider {c.provider} is blocked")
        if v.allowed_jurisdictions is not None and c.jurisdiction not in v.allowed_jurisdictions:
            no("jurisdiction", f"vendor jurisdiction {c.jurisdiction} not allowed")
        if v.open_weights_only and not c.open_weights:
            no("open_weights", "weights are not open")
        if v.commercial_required and not c.commercial:
            no("commercial", "licence does not clearly allow commercial use")
        missing = v.required_strengths - c.strengths
        if missing:
            no("strengths", f"not known for {', '.join(sorted(missing))}")
        audio = c.audio_generated(v.audio)
        cost = c.cost(v.resolution, duration, audio)
        if cost is None:
            no("price", f"no price listed for {v.resolution.value} at {duration:g}s")
        elif v.max_cost is not None and cost > v.max_cost + 1e-9:
            no("cost", f"costs ${cost:.2f}, over the ${v.max_cost:.2f} limit")
        lat, source = self._latency(c, duration, v.pixels)
        pct = _PCTS[v.pct]
        if v.max_latency is not None and lat[v.pct] > v.max_latency:
            no("latency", f"{pct} latency {lat[v.pct]:.0f}s over the {v.max_latency:g}s limit")
        if v.time_left is not None and lat[v.pct] > v.time_left:
            no(
                "deadline",
                f"{pct} latency {lat[v.pct]:.0f}s would miss the deadline "
                f"({max(0.0, v.time_left):.0f}s left)",
            )
        blocked = self._blocked(c)
        if blocked is not None:
            no("health", blocked)
        return Candidate(c, cost, duration, audio, dict(zip(_PCTS, lat, strict=True)), source, bad)

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
            ranked = [cand for c in pool if (cand := self.feasible(v, c)) is not None]
            policy = "pinned"  # keep the caller's order
        else:
            if policy not in POLICIES:
                raise InvalidRequest(
                    f"unknown policy {policy!r}; use one of {', '.join(POLICIES)} "
                    "or pin offerings with --offering"
                )
            if among is not None:
                pool = [self.by_id[oid] for oid in among if oid in self.by_id]
                found = [cand for c in pool if (cand := self.feasible(v, c)) is not None]
            else:
                pool = self.compiled
                found = [
                    cand
                    for c in self._statically_feasible(v)
                    if (cand := self._dynamic(v, c)) is not None
                ]
            ranked = rank(policy, found, request, self.env.catalog)
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
