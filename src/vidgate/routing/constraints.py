"""Every routing constraint, defined once.

A :class:`Constraint` is one rule an offering must meet for a request: which request fields it
reads, the test itself, and the reason shown when it fails. The router has three consumers of
these rules, and all three read them from :data:`CONSTRAINTS` (nothing restates a rule):

* the **shape cache** — constraints of the ``SHAPE`` and ``ROUTER`` stages depend only on the
  request's shape (mode, resolution, fps, references...), the day, and the router's fixed
  world (adapters, keys); their verdicts are cached per shape. The cache key is
  :data:`SHAPE_FIELDS`, the union of what those constraints declare they read, so a rule cannot
  be left out of the key (a test holds each rule to reading only what it declares). ``SIZE``
  constraints (duration, price listed) are cached the same way one level down, keyed also by
  what they read and by :data:`SIZE_INPUTS`;
* the **fast path** — the remaining stages (budget, latency, live health) run per offering in
  stage order, each after the estimate it needs, and stop at the first failure, skipping the
  rules the request does not ask for (no budget: no budget rule);
* the **explanation** — every constraint over one offering, every failure listed, in the
  order of :data:`CONSTRAINTS`.

Checks take ``(view, offering, estimate, world)`` so they can be plain module-level functions:
cheap to call in the hot loop, and each one a unit a mutation tool can break in isolation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from operator import attrgetter
from typing import Protocol

from vidgate.routing.compiled import Compiled, RequestView

_PCTS = ("p50", "p90", "p99")
#: slack for float prices: a budget equal to the price (to the cent) must pass
COST_EPSILON = 1e-9


class Stage(IntEnum):
    """When a constraint can be decided, which is what the router caches or computes first."""

    #: the request's shape and the day only: cached per shape
    SHAPE = 0
    #: the router's own world (adapters, keys), fixed for the router's life: cached per shape
    ROUTER = 1
    #: needs the planned duration and price, which depend only on SIZE_INPUTS: cached per
    #: shape and size
    SIZE = 2
    #: needs the price and the request's budget
    BUDGET = 3
    #: needs the latency estimate
    LATENCY = 4
    #: live state (breakers, rate limits): never cached
    LIVE = 5


#: the stages whose verdicts the shape cache keeps
SHAPE_STAGES = frozenset({Stage.SHAPE, Stage.ROUTER})
#: the stages run per request and offering, never cached
PER_REQUEST_STAGES = frozenset({Stage.BUDGET, Stage.LATENCY, Stage.LIVE})
#: the view fields the size estimate (planned duration, audio, price) is computed from
SIZE_INPUTS = ("audio", "duration", "resolution")


@dataclass(slots=True)
class Estimate:
    """What the later stages need, filled in stage by stage by the fast path."""

    duration: float
    audio: bool = False
    cost: float | None = None
    latency: tuple[float, float, float] = (0.0, 0.0, 0.0)
    source: str = "catalog"


#: handed to cached-stage checks, which never read an estimate (a test holds them to it)
NO_ESTIMATE = Estimate(duration=math.nan)


class World(Protocol):
    """What the router knows beyond the request: adapters, keys, live health."""

    def serves(self, protocol: str) -> bool: ...

    def has_credentials(self, names: list[str]) -> bool: ...

    def blocked(self, c: Compiled) -> str | None: ...

    def watches_health(self) -> bool:
        """False when no live state (breakers, rate limits) can block any offering."""
        ...


Check = Callable[[RequestView, Compiled, Estimate, World], bool]
Reason = Callable[[RequestView, Compiled, Estimate, World], str]
Needed = Callable[[RequestView, World], bool]


@dataclass(frozen=True, slots=True)
class Constraint:
    #: the rejection code shown in explanations (several constraints may share one)
    code: str
    stage: Stage
    #: the RequestView fields ``ok`` reads; for cached stages these form the shape-cache key
    reads: tuple[str, ...]
    ok: Check
    why: Reason
    #: whether this request (in this world) asks for the rule at all; when not, ``ok`` holds
    #: for every offering, so the hot path leaves it out for the whole request
    needed: Needed | None = None

    def applies(self, v: RequestView, w: World) -> bool:
        # Only ever an optimisation (an unneeded rule passes anyway), so "always applies" is
        # an equivalent mutant: the property tests hold the needed() functions themselves.
        return self.needed is None or self.needed(v, w)  # pragma: no mutate — see above


# -- the shape of the request ------------------------------------------------------------------


def _enabled(v: RequestView, c: Compiled, e: Estimate, w: World) -> bool:
    return c.enabled


def _enabled_why(v: RequestView, c: Compiled, e: Estimate, w: World) -> str:
    return "disabled in the catalog configuration"


def _not_retired(v: RequestView, c: Compiled, e: Estimate, w: World) -> bool:
    # inclusive: an offering retired "after" a day still serves on that day
    return c.available_until is None or v.today <= c.available_until


def _not_retired_why(v: RequestView, c: Compiled, e: Estimate, w: World) -> str:
    return f"retired by the provider after {c.available_until}"


def _released(v: RequestView, c: Compiled, e: Estimate, w: World) -> bool:
    # inclusive: an offering available from a day serves on that day
    return c.available_from is None or v.today >= c.available_from


def _released_why(v: RequestView, c: Compiled, e: Estimate, w: World) -> str:
    return f"not available before {c.available_from}"


def _mode(v: RequestView, c: Compiled, e: Estimate, w: World) -> bool:
    return v.mode in c.modes


def _mode_why(v: RequestView, c: Compiled, e: Estimate, w: World) -> str:
    does = ", ".join(m.value for m in c.offering.capabilities.modes)
    return f"does not do {v.mode.value} (does {does})"


def _resolution(v: RequestView, c: Compiled, e: Estimate, w: World) -> bool:
    return v.resolution in c.resolutions


def _resolution_why(v: RequestView, c: Compiled, e: Estimate, w: World) -> str:
    has = ", ".join(r.value for r in c.offering.capabilities.resolutions)
    return f"no {v.resolution.value} (has {has})"


def _aspect(v: RequestView, c: Compiled, e: Estimate, w: World) -> bool:
    return v.aspect in c.aspects


def _aspect_why(v: RequestView, c: Compiled, e: Estimate, w: World) -> str:
    return f"no {v.aspect} (has {', '.join(c.offering.capabilities.aspect_ratios)})"


def _fps(v: RequestView, c: Compiled, e: Estimate, w: World) -> bool:
    return v.fps is None or v.fps in c.fps


def _fps_why(v: RequestView, c: Compiled, e: Estimate, w: World) -> str:
    has = ", ".join(str(f) for f in c.offering.capabilities.fps)
    return f"no {v.fps} fps (has {has})"


def _audio(v: RequestView, c: Compiled, e: Estimate, w: World) -> bool:
    return not v.audio_required or c.audio != "never"


def _audio_why(v: RequestView, c: Compiled, e: Estimate, w: World) -> str:
    return "no native audio"


def _ref_roles(v: RequestView, c: Compiled, e: Estimate, w: World) -> bool:
    return v.roles <= c.roles


def _ref_roles_why(v: RequestView, c: Compiled, e: Estimate, w: World) -> str:
    unsupported = ", ".join(sorted(r.value for r in v.roles - c.roles))
    return f"cannot take {unsupported} references"


def _ref_count(v: RequestView, c: Compiled, e: Estimate, w: World) -> bool:
    # Unsupported roles are reported by their own rule; this one counts only when every role
    # is supported, so one reference problem gives one reason.
    return v.n_refs <= c.max_refs or not v.roles <= c.roles


def _ref_count_why(v: RequestView, c: Compiled, e: Estimate, w: World) -> str:
    return f"takes at most {c.max_refs} references"


def _negative(v: RequestView, c: Compiled, e: Estimate, w: World) -> bool:
    return not v.negative or c.negative_prompt


def _negative_why(v: RequestView, c: Compiled, e: Estimate, w: World) -> str:
    return "takes no negative prompt"


def _quality(v: RequestView, c: Compiled, e: Estimate, w: World) -> bool:
    # min_tier is -1 when the request names no tier, so every offering passes.
    return c.tier >= v.min_tier


def _quality_why(v: RequestView, c: Compiled, e: Estimate, w: World) -> str:
    # asked only when the check failed, that is when the request named a tier (a StrEnum,
    # which formats as its value)
    return f"below the {v.request.quality} quality tier"


def _provider_allowed(v: RequestView, c: Compiled, e: Estimate, w: World) -> bool:
    return v.allowed_providers is None or c.provider in v.allowed_providers


def _provider_allowed_why(v: RequestView, c: Compiled, e: Estimate, w: World) -> str:
    return f"provider {c.provider} not in the allowed list"


def _provider_blocked(v: RequestView, c: Compiled, e: Estimate, w: World) -> bool:
    return c.provider not in v.blocked_providers


def _provider_blocked_why(v: RequestView, c: Compiled, e: Estimate, w: World) -> str:
    return f"provider {c.provider} is blocked"


def _jurisdiction(v: RequestView, c: Compiled, e: Estimate, w: World) -> bool:
    return v.allowed_jurisdictions is None or c.jurisdiction in v.allowed_jurisdictions


def _jurisdiction_why(v: RequestView, c: Compiled, e: Estimate, w: World) -> str:
    return f"vendor jurisdiction {c.jurisdiction} not allowed"


def _open_weights(v: RequestView, c: Compiled, e: Estimate, w: World) -> bool:
    return not v.open_weights_only or c.open_weights


def _open_weights_why(v: RequestView, c: Compiled, e: Estimate, w: World) -> str:
    return "weights are not open"


def _commercial(v: RequestView, c: Compiled, e: Estimate, w: World) -> bool:
    return not v.commercial_required or c.commercial


def _commercial_why(v: RequestView, c: Compiled, e: Estimate, w: World) -> str:
    return "licence does not clearly allow commercial use"


def _strengths(v: RequestView, c: Compiled, e: Estimate, w: World) -> bool:
    return v.required_strengths <= c.strengths


def _strengths_why(v: RequestView, c: Compiled, e: Estimate, w: World) -> str:
    return f"not known for {', '.join(sorted(v.required_strengths - c.strengths))}"


# -- the router's world --------------------------------------------------------------------------


def _adapter(v: RequestView, c: Compiled, e: Estimate, w: World) -> bool:
    return w.serves(c.protocol)


def _adapter_why(v: RequestView, c: Compiled, e: Estimate, w: World) -> str:
    return f"no adapter for protocol {c.protocol} yet"


def _credentials(v: RequestView, c: Compiled, e: Estimate, w: World) -> bool:
    return w.has_credentials(list(c.credentials))


def _credentials_why(v: RequestView, c: Compiled, e: Estimate, w: World) -> str:
    return f"credential {' + '.join(c.credentials)} not set"


# -- size, money and time ------------------------------------------------------------------------


def _duration(v: RequestView, c: Compiled, e: Estimate, w: World) -> bool:
    # v.tolerance already carries a float epsilon, so a miss of exactly the tolerance passes;
    # < and <= then differ only at a float no request produces (an equivalent mutant).
    return abs(e.duration - v.duration) <= v.tolerance  # pragma: no mutate — see above


def _duration_why(v: RequestView, c: Compiled, e: Estimate, w: World) -> str:
    longest = c.offering.capabilities.durations.maximum
    return f"{v.duration:g}s not available (nearest {e.duration:g}s, max {longest:g}s)"


def _priced(v: RequestView, c: Compiled, e: Estimate, w: World) -> bool:
    return e.cost is not None


def _priced_why(v: RequestView, c: Compiled, e: Estimate, w: World) -> str:
    return f"no price listed for {v.resolution.value} at {e.duration:g}s"


def _cost(v: RequestView, c: Compiled, e: Estimate, w: World) -> bool:
    # An unpriced offering is the "price" rule's failure, not this one's. With the epsilon,
    # < and <= differ only at a float no budget produces (an equivalent mutant), so the line
    # is left unmutated; the epsilon itself is held by the budget-equals-price test.
    if v.max_cost is None or e.cost is None:
        return True
    return e.cost <= v.max_cost + COST_EPSILON  # pragma: no mutate — see above


def _cost_why(v: RequestView, c: Compiled, e: Estimate, w: World) -> str:
    # asked only when the check failed: both the price and the budget are known
    return f"costs ${e.cost:.2f}, over the ${v.max_cost:.2f} limit"


def _cost_needed(v: RequestView, w: World) -> bool:
    return v.max_cost is not None


def _latency(v: RequestView, c: Compiled, e: Estimate, w: World) -> bool:
    return v.max_latency is None or e.latency[v.pct] <= v.max_latency


def _latency_why(v: RequestView, c: Compiled, e: Estimate, w: World) -> str:
    return f"{_PCTS[v.pct]} latency {e.latency[v.pct]:.0f}s over the {v.max_latency:g}s limit"


def _latency_needed(v: RequestView, w: World) -> bool:
    return v.max_latency is not None


def _deadline(v: RequestView, c: Compiled, e: Estimate, w: World) -> bool:
    return v.time_left is None or e.latency[v.pct] <= v.time_left


def _deadline_why(v: RequestView, c: Compiled, e: Estimate, w: World) -> str:
    left = max(0.0, v.time_left or 0.0)
    return (
        f"{_PCTS[v.pct]} latency {e.latency[v.pct]:.0f}s would miss the deadline ({left:.0f}s left)"
    )


def _deadline_needed(v: RequestView, w: World) -> bool:
    return v.time_left is not None


def _healthy(v: RequestView, c: Compiled, e: Estimate, w: World) -> bool:
    return w.blocked(c) is None


def _health_needed(v: RequestView, w: World) -> bool:
    return w.watches_health()


def _healthy_why(v: RequestView, c: Compiled, e: Estimate, w: World) -> str:
    # asked only when the check failed, that is when blocked() named a reason
    return str(w.blocked(c))


S, R = Stage.SHAPE, Stage.ROUTER

#: every constraint, in the order an explanation lists its failures
CONSTRAINTS: tuple[Constraint, ...] = (
    Constraint("disabled", S, (), _enabled, _enabled_why),
    Constraint("availability", S, ("today",), _not_retired, _not_retired_why),
    Constraint("availability", S, ("today",), _released, _released_why),
    Constraint("adapter", R, (), _adapter, _adapter_why),
    Constraint("credentials", R, (), _credentials, _credentials_why),
    Constraint("mode", S, ("mode",), _mode, _mode_why),
    Constraint("duration", Stage.SIZE, ("duration", "tolerance"), _duration, _duration_why),
    Constraint("resolution", S, ("resolution",), _resolution, _resolution_why),
    Constraint("aspect_ratio", S, ("aspect",), _aspect, _aspect_why),
    Constraint("fps", S, ("fps",), _fps, _fps_why),
    Constraint("audio", S, ("audio_required",), _audio, _audio_why),
    Constraint("references", S, ("roles",), _ref_roles, _ref_roles_why),
    Constraint("references", S, ("n_refs", "roles"), _ref_count, _ref_count_why),
    Constraint("negative_prompt", S, ("negative",), _negative, _negative_why),
    Constraint("quality", S, ("min_tier",), _quality, _quality_why),
    Constraint("provider", S, ("allowed_providers",), _provider_allowed, _provider_allowed_why),
    Constraint("provider", S, ("blocked_providers",), _provider_blocked, _provider_blocked_why),
    Constraint("jurisdiction", S, ("allowed_jurisdictions",), _jurisdiction, _jurisdiction_why),
    Constraint("open_weights", S, ("open_weights_only",), _open_weights, _open_weights_why),
    Constraint("commercial", S, ("commercial_required",), _commercial, _commercial_why),
    Constraint("strengths", S, ("required_strengths",), _strengths, _strengths_why),
    Constraint("price", Stage.SIZE, ("resolution",), _priced, _priced_why),
    Constraint("cost", Stage.BUDGET, ("max_cost",), _cost, _cost_why, _cost_needed),
    Constraint(
        "latency", Stage.LATENCY, ("max_latency", "pct"), _latency, _latency_why, _latency_needed
    ),
    Constraint(
        "deadline", Stage.LATENCY, ("time_left", "pct"), _deadline, _deadline_why, _deadline_needed
    ),
    Constraint("health", Stage.LIVE, (), _healthy, _healthy_why, _health_needed),
)


def _key_fields(constraints: tuple[Constraint, ...], stages: frozenset[Stage]) -> tuple[str, ...]:
    return tuple(sorted({f for k in constraints if k.stage in stages for f in k.reads}))


def shape_fields(constraints: tuple[Constraint, ...]) -> tuple[str, ...]:
    """The request fields the shape-stage constraints read: exactly what a shape is."""
    return _key_fields(constraints, SHAPE_STAGES)


def size_fields(constraints: tuple[Constraint, ...]) -> tuple[str, ...]:
    """The fields the shape- and size-stage verdicts depend on, estimate inputs included."""
    return tuple(sorted({*_key_fields(constraints, SHAPE_STAGES | {Stage.SIZE}), *SIZE_INPUTS}))


def _no_key(v: RequestView) -> object:
    return ()


def key_of(fields: tuple[str, ...]) -> Callable[[RequestView], object]:
    """A fast getter for a cache key over ``fields`` of a request view: a tuple of their
    values (the bare value for one field, which serves as a key just as well)."""
    return attrgetter(*fields) if fields else _no_key


def shape_key(constraints: tuple[Constraint, ...]) -> Callable[[RequestView], object]:
    return key_of(shape_fields(constraints))


SHAPE_FIELDS = shape_fields(CONSTRAINTS)
