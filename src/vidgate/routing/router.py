"""The router: filter every offering against the request's constraints, rank the feasible
ones by a policy, and explain the choice — including why each other offering was rejected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from vidgate.catalog.loader import Catalog
from vidgate.catalog.schema import Model, Offering
from vidgate.errors import InvalidRequest, NoRoute
from vidgate.routing.estimate import (
    audio_generated,
    estimate_cost,
    estimate_latency,
    planned_duration,
)
from vidgate.types import AudioMode, LatencyPercentile, Mode, VideoRequest

#: constraints a user can relax by spending more or waiting longer: the nearest miss is the
#: cheapest offering that fails only these
SOFT = frozenset({"cost", "latency", "deadline"})


@dataclass(frozen=True)
class Rejection:
    code: str
    message: str


@dataclass
class Candidate:
    offering: Offering
    model: Model
    cost_usd: float | None
    duration_s: float
    audio: bool
    latency_s: dict[str, float]
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def feasible(self) -> bool:
        return not self.rejections

    @property
    def elo(self) -> float:
        return self.model.quality.elo or 0.0

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "offering": self.offering.id,
            "model": self.model.id,
            "provider": self.offering.provider,
            "estimated_cost_usd": round(self.cost_usd, 4) if self.cost_usd is not None else None,
            "duration_s": self.duration_s,
            "audio": self.audio,
            "latency_s": {k: round(v, 1) for k, v in self.latency_s.items()},
            "quality": {
                "tier": (self.offering.tier or self.model.quality.tier).value,
                "elo": self.model.quality.elo,
            },
        }
        if self.rejections:
            out["rejected_because"] = [r.message for r in self.rejections]
        return out


@dataclass
class RoutePlan:
    request: VideoRequest
    policy: str
    ranked: list[Candidate]
    rejected: list[Candidate]

    @property
    def choice(self) -> Candidate:
        return self.ranked[0]

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
            "estimates_from": "catalog",
        }


@dataclass(frozen=True)
class RouterEnv:
    """What the router may know of the world beyond the request."""

    catalog: Catalog
    #: protocols with an adapter able to serve them (in sandbox mode: the emulated ones)
    protocols: frozenset[str]
    has_credentials: Callable[[list[str]], bool]
    now: Callable[[], datetime] = lambda: datetime.now(UTC)


def _tier(offering: Offering, model: Model) -> int:
    return (offering.tier or model.quality.tier).rank


def check(
    request: VideoRequest, offering: Offering, model: Model, env: RouterEnv, now: datetime
) -> Candidate:
    """Evaluate every constraint (not just the first failure) so explanations are complete."""
    caps = offering.capabilities
    cons = request.constraints
    bad: list[Rejection] = []

    def no(code: str, message: str) -> None:
        bad.append(Rejection(code, message))

    if not offering.enabled:
        no("disabled", "disabled in the catalog configuration")
    if not offering.available_on(now.date()):
        if offering.available_until and now.date() > offering.available_until:
            no("availability", f"retired by the provider after {offering.available_until}")
        else:
            no("availability", f"not available before {offering.available_from}")
    if offering.protocol not in env.protocols:
        no("adapter", f"no adapter for protocol {offering.protocol} yet")
    if not env.has_credentials(offering.credential_env):
        no("credentials", f"credential {' + '.join(offering.credential_env)} not set")
    if request.mode not in caps.modes:
        no(
            "mode",
            f"does not do {request.mode.value} (does {', '.join(m.value for m in caps.modes)})",
        )
    duration = planned_duration(request, offering)
    if abs(duration - request.duration_s) > request.duration_tolerance_s + 1e-9:
        no(
            "duration",
            f"{request.duration_s:g}s not available (nearest {duration:g}s, "
            f"max {caps.durations.maximum:g}s)",
        )
    if request.resolution not in caps.resolutions:
        no(
            "resolution",
            f"no {request.resolution.value} (has {', '.join(r.value for r in caps.resolutions)})",
        )
    if request.aspect_ratio not in caps.aspect_ratios:
        no("aspect_ratio", f"no {request.aspect_ratio} (has {', '.join(caps.aspect_ratios)})")
    if request.fps is not None and request.fps not in caps.fps:
        no("fps", f"no {request.fps} fps (has {', '.join(str(f) for f in caps.fps)})")
    if request.audio is AudioMode.REQUIRED and caps.audio == "never":
        no("audio", "no native audio")
    roles = request.reference_roles()
    unsupported = roles - set(caps.reference_roles)
    if unsupported:
        no(
            "references",
            f"cannot take {', '.join(sorted(r.value for r in unsupported))} references",
        )
    elif len(request.references) > caps.max_references:
        no("references", f"takes at most {caps.max_references} references")
    if request.quality is not None and _tier(offering, model) < request.quality.rank:
        no("quality", f"below the {request.quality.value} quality tier")
    if cons.allowed_providers is not None and offering.provider not in cons.allowed_providers:
        no("provider", f"provider {offering.provider} not in the allowed list")
    if offering.provider in cons.blocked_providers:
        no("provider", f"provider {offering.provider} is blocked")
    if (
        cons.allowed_jurisdictions is not None
        and model.jurisdiction not in cons.allowed_jurisdictions
    ):
        no("jurisdiction", f"vendor jurisdiction {model.jurisdiction} not allowed")
    if cons.open_weights_only and not model.open_weights:
        no("open_weights", "weights are not open")
    if cons.commercial_use_required and model.commercial_use is not True:
        no("commercial", "licence does not clearly allow commercial use")

    cost = estimate_cost(request, offering)
    if cost is None:
        no("price", f"no price listed for {request.resolution.value} at {duration:g}s")
    elif cons.max_cost_usd is not None and cost > cons.max_cost_usd + 1e-9:
        no("cost", f"costs ${cost:.2f}, over the ${cons.max_cost_usd:.2f} limit")
    latency = {p.value: estimate_latency(request, offering, p) for p in LatencyPercentile}
    pct = cons.latency_percentile.value
    if cons.max_latency_s is not None and latency[pct] > cons.max_latency_s:
        no("latency", f"{pct} latency {latency[pct]:.0f}s over the {cons.max_latency_s:g}s limit")
    if cons.deadline is not None:
        remaining = (cons.deadline - now).total_seconds()
        if latency[pct] > remaining:
            no(
                "deadline",
                f"{pct} latency {latency[pct]:.0f}s would miss the deadline "
                f"({max(0.0, remaining):.0f}s left)",
            )
    return Candidate(
        offering=offering,
        model=model,
        cost_usd=cost,
        duration_s=duration,
        audio=audio_generated(request, offering),
        latency_s=latency,
        rejections=bad,
    )


# --- policies ------------------------------------------------------------------------------


def _cost(c: Candidate) -> float:
    return c.cost_usd if c.cost_usd is not None else float("inf")


POLICIES: dict[str, Callable[[Candidate, LatencyPercentile], tuple[Any, ...]]] = {
    "cheapest": lambda c, p: (_cost(c), c.latency_s["p50"], -c.elo, c.offering.id),
    "fastest": lambda c, p: (c.latency_s[p.value], _cost(c), -c.elo, c.offering.id),
    "best-quality": lambda c, p: (-c.elo, -_tier(c.offering, c.model), _cost(c), c.offering.id),
}


class Router:
    def __init__(self, env: RouterEnv) -> None:
        self.env = env

    def evaluate(
        self, request: VideoRequest, offerings: Iterable[Offering] | None = None
    ) -> list[Candidate]:
        now = self.env.now()
        catalog = self.env.catalog
        pool = catalog.offerings.values() if offerings is None else offerings
        return [check(request, o, catalog.model_of(o), self.env, now) for o in pool]

    def route(
        self, request: VideoRequest, policy: str = "cheapest", pinned: list[str] | None = None
    ) -> RoutePlan:
        """Rank feasible offerings; raise :class:`NoRoute` with the nearest misses if none."""
        if pinned:
            offerings = [self.env.catalog.offering(oid) for oid in pinned]
            candidates = self.evaluate(request, offerings)
            ranked = [c for c in candidates if c.feasible]  # keep the pinned order
            policy = "pinned"
        else:
            if policy not in POLICIES:
                raise InvalidRequest(
                    f"unknown policy {policy!r}; use one of {', '.join(POLICIES)} "
                    "or pin offerings with --offering"
                )
            candidates = self.evaluate(request)
            key = POLICIES[policy]
            pct = request.constraints.latency_percentile
            ranked = sorted((c for c in candidates if c.feasible), key=lambda c: key(c, pct))
        rejected = sorted(
            (c for c in candidates if not c.feasible),
            key=lambda c: (len(c.rejections), _cost(c), c.offering.id),
        )
        plan = RoutePlan(request=request, policy=policy, ranked=ranked, rejected=rejected)
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
    4k 16:9 with native audio under $1.00; cheapest that meets the rest: kling-3.0 via kling
    (kling-3.0-kling) at $1.68"."""
    request = plan.request
    head = f"no offering gives {describe(request)}"
    soft_only = [
        c
        for c in plan.rejected
        if c.cost_usd is not None and all(r.code in SOFT for r in c.rejections)
    ]
    nearest: list[Candidate] = []
    unreachable = {"credentials", "adapter"}
    if plan.rejected and all(
        any(r.code in unreachable for r in c.rejections) for c in plan.rejected
    ):
        keys = sorted({k for c in plan.rejected for k in c.offering.credential_env})
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
    elif plan.rejected:
        fewest = min(len(c.rejections) for c in plan.rejected)
        close = [c for c in plan.rejected if len(c.rejections) == fewest]
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
