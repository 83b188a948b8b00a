"""Plan a workload against the catalog: what each class costs, how fast it is, what one model
for everything would cost instead.

Planning is about the catalog, not this machine: every class is routed by a :class:`Router`
whose environment treats every protocol and credential as available, at a fixed date.
Money is computed in floats from the catalog's price rules (the router's compiled cost) or the
workload's price overrides, and rounded only when the report is written out: totals to the
cent, per-clip prices to a hundredth of a cent.

Latency is modelled per class as log-normal through the router's p50 and p90 estimates
(sigma = ln(p90/p50) / z(0.9), z(0.9) = 1.2816, the same model the sandbox draws from), which
gives each class's SLA hit rate and, for the share-weighted mixture of classes, workload-wide
percentiles found by bisection on the mixture CDF.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from vidgate.catalog.loader import Catalog
from vidgate.catalog.schema import CatalogData, PriceRule, Source
from vidgate.errors import InvalidRequest, NoRoute
from vidgate.planner.workload import Workload, WorkloadClass
from vidgate.routing.router import Candidate, Router, RouterEnv
from vidgate.types import VideoRequest

#: z such that Phi(z) = 0.9: the log-normal's p90 sits this many sigmas above its median
Z90 = 1.2815515655446004
PCTS = ("p50", "p90", "p99")
_Q = {"p50": 0.5, "p90": 0.9, "p99": 0.99}


# --- latency model ---------------------------------------------------------------------------


def lognormal_sigma(p50: float, p90: float) -> float:
    """The sigma of the log-normal whose median is ``p50`` and 90th percentile ``p90``."""
    if p50 <= 0 or p90 < p50:
        raise ValueError(f"need 0 < p50 ≤ p90 (got p50={p50}, p90={p90})")
    return math.log(p90 / p50) / Z90


def lognormal_cdf(x: float, p50: float, sigma: float) -> float:
    """P(L ≤ x) for L log-normal with median ``p50``; sigma 0 is a point mass at p50."""
    if x <= 0:
        return 0.0
    if sigma <= 0:
        return 1.0 if x >= p50 else 0.0
    z = (math.log(x) - math.log(p50)) / sigma
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def sla_hit_rate(max_latency_s: float, p50: float, p90: float) -> float:
    """Probability that a clip finishes within ``max_latency_s``."""
    return lognormal_cdf(max_latency_s, p50, lognormal_sigma(p50, p90))


@dataclass(frozen=True)
class Component:
    weight: float
    p50: float
    sigma: float


def mixture_cdf(x: float, parts: Sequence[Component]) -> float:
    total = sum(p.weight for p in parts)
    return sum(p.weight * lognormal_cdf(x, p.p50, p.sigma) for p in parts) / total


def mixture_quantile(q: float, parts: Sequence[Component]) -> float:
    """The smallest x with mixture CDF(x) ≥ q, by bisection in log space."""
    if not 0 < q < 1:
        raise ValueError("q must be strictly between 0 and 1")
    parts = [p for p in parts if p.weight > 0]
    if not parts:
        raise ValueError("the mixture has no weight")
    lo = min(math.log(p.p50) - 12 * p.sigma for p in parts) - 1.0
    hi = max(math.log(p.p50) + 12 * p.sigma for p in parts) + 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if mixture_cdf(math.exp(mid), parts) >= q:
            hi = mid
        else:
            lo = mid
        if hi - lo < 1e-12:
            break
    return math.exp(hi)


# --- the report -------------------------------------------------------------------------------


def _cents(x: float) -> float:
    return round(x + 0.0, 2)


def _clip(x: float) -> float:
    return round(x, 4)


@dataclass
class ClassPlan:
    name: str
    share: float
    policy: str
    offering: str
    model: str
    model_name: str
    provider: str
    tier: str
    elo: float | None
    clips_per_day: float
    requested_seconds: float
    billed_seconds: float
    usd_per_clip: float
    usd_per_day: float
    usd_per_month: float
    usd_per_year: float
    latency_s: dict[str, float]
    price_from: str
    fallbacks: list[str] = field(default_factory=list)
    sla_hit_rate: float | None = None
    sla_met: bool | None = None

    @property
    def sigma(self) -> float:
        return lognormal_sigma(self.latency_s["p50"], self.latency_s["p90"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "share": self.share,
            "policy": self.policy,
            "offering": self.offering,
            "model": self.model,
            "model_name": self.model_name,
            "provider": self.provider,
            "tier": self.tier,
            "elo": self.elo,
            "clips_per_day": round(self.clips_per_day, 3),
            "requested_seconds": self.requested_seconds,
            "billed_seconds": self.billed_seconds,
            "usd_per_clip": _clip(self.usd_per_clip),
            "usd_per_day": _cents(self.usd_per_day),
            "usd_per_month": _cents(self.usd_per_month),
            "usd_per_year": _cents(self.usd_per_year),
            "latency_s": {k: round(v, 1) for k, v in self.latency_s.items()},
            "sla_hit_rate": round(self.sla_hit_rate, 4) if self.sla_hit_rate is not None else None,
            "sla_met": self.sla_met,
            "price_from": self.price_from,
            "fallbacks": self.fallbacks,
        }


@dataclass
class Baseline:
    """One offering serving every class."""

    offering: str
    model_name: str
    feasible: bool
    usd_per_day: float | None = None
    usd_per_month: float | None = None
    usd_per_year: float | None = None
    #: why it cannot serve some class (when not feasible)
    reasons: list[str] = field(default_factory=list)
    named: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "offering": self.offering,
            "model_name": self.model_name,
            "feasible": self.feasible,
            "named": self.named,
            "usd_per_day": _cents(self.usd_per_day) if self.usd_per_day is not None else None,
            "usd_per_month": _cents(self.usd_per_month) if self.usd_per_month is not None else None,
            "usd_per_year": _cents(self.usd_per_year) if self.usd_per_year is not None else None,
            "reasons": self.reasons,
        }


@dataclass
class Saving:
    against: str
    kind: str  # "cheapest baseline", "named baseline" or "workload"
    other_usd_per_month: float
    plan_usd_per_month: float

    @property
    def usd_per_month(self) -> float:
        return self.other_usd_per_month - self.plan_usd_per_month

    @property
    def fraction(self) -> float:
        return self.usd_per_month / self.other_usd_per_month if self.other_usd_per_month else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "against": self.against,
            "kind": self.kind,
            "other_usd_per_month": _cents(self.other_usd_per_month),
            "plan_usd_per_month": _cents(self.plan_usd_per_month),
            "saving_usd_per_month": _cents(self.usd_per_month),
            "saving_usd_per_year": _cents(self.usd_per_month * 12),
            "saving_fraction": round(self.fraction, 4),
        }


@dataclass
class PlanReport:
    workload: str
    as_of: date
    billing: str
    daily_volume: float
    days_per_month: float
    classes: list[ClassPlan]
    baselines: list[Baseline]
    savings: list[Saving]
    sla: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)

    @property
    def usd_per_day(self) -> float:
        return sum(c.usd_per_day for c in self.classes)

    @property
    def usd_per_month(self) -> float:
        return self.usd_per_day * self.days_per_month

    @property
    def usd_per_year(self) -> float:
        return self.usd_per_month * 12

    def components(self) -> list[Component]:
        return [Component(c.share, c.latency_s["p50"], c.sigma) for c in self.classes]

    def latency_percentiles(self) -> dict[str, float]:
        """Workload-wide latency percentiles of the share-weighted mixture."""
        parts = self.components()
        return {p: mixture_quantile(_Q[p], parts) for p in PCTS}

    def class_named(self, name: str) -> ClassPlan:
        return next(c for c in self.classes if c.name == name)

    def to_dict(self) -> dict[str, Any]:
        clips = sum(c.clips_per_day for c in self.classes)
        return {
            "workload": self.workload,
            "as_of": self.as_of.isoformat(),
            "billing": self.billing,
            "daily_volume": self.daily_volume,
            "days_per_month": self.days_per_month,
            "classes": [c.to_dict() for c in self.classes],
            "totals": {
                "clips_per_day": round(clips, 3),
                "usd_per_clip": _clip(self.usd_per_day / clips) if clips else None,
                "usd_per_day": _cents(self.usd_per_day),
                "usd_per_month": _cents(self.usd_per_month),
                "usd_per_year": _cents(self.usd_per_year),
            },
            "latency_s": {k: round(v, 1) for k, v in self.latency_percentiles().items()},
            "sla": self.sla,
            "baselines": [b.to_dict() for b in self.baselines],
            "savings": [s.to_dict() for s in self.savings],
            "notes": self.notes,
        }


# --- planning ---------------------------------------------------------------------------------


def with_price_overrides(catalog: Catalog, workload: Workload, as_of: date) -> Catalog:
    """The catalog with each overridden offering priced at its override, per second."""
    if not workload.price_overrides:
        return catalog
    offerings = []
    for o in catalog.data.offerings:
        ov = workload.price_overrides.get(o.id)
        if ov is not None:
            rule = PriceRule(
                usd=ov.usd_per_second,
                source=Source(
                    doc="user-config",
                    section=f"{workload.where}: price_overrides",
                    as_of=as_of,
                    note=ov.note,
                ),
            )
            o = o.model_copy(update={"price": [rule], "usd_per_credit": None})
        offerings.append(o)
    return Catalog(CatalogData(**{**dict(catalog.data), "offerings": offerings}))


def planning_router(catalog: Catalog, now: datetime) -> Router:
    """A router that sees the whole catalog: every protocol served, every credential set."""
    return Router(
        RouterEnv(
            catalog=catalog,
            protocols=frozenset(o.protocol for o in catalog.offerings.values()),
            has_credentials=lambda _names: True,
            now=lambda: now,
        )
    )


def class_request(workload: Workload, index: int) -> VideoRequest:
    c = workload.classes[index]
    try:
        return c.request.to_request(workload.clip_seconds, f"{workload.name}: {c.name}")
    except ValueError as e:  # a pydantic ValidationError combining fields
        first = str(e).splitlines()
        raise workload.error(("classes", index, "request"), first[-1].strip()) from None


def route_class(router: Router, workload: Workload, index: int) -> list[Candidate]:
    """The ranked candidates for a class (pins in order, else by its policy)."""
    c = workload.classes[index]
    request = class_request(workload, index)
    path: tuple[str | int, ...] = ("classes", index, "offering" if c.pinned else "request")
    try:
        ranked = router.route(request, policy=c.policy, pinned=c.pinned).ranked
    except NoRoute as e:
        hint = ""
        if "retired" in e.message:
            hint = " (plan with an earlier --as-of date to price it while it was sold)"
        raise workload.error(
            path, f"class {c.name!r} cannot be routed: {e.message}{hint}"
        ) from None
    except InvalidRequest as e:
        raise workload.error(("classes", index, "request"), e.message) from None
    return ranked


def billed(workload: Workload, request: VideoRequest, cand: Candidate) -> tuple[float, float]:
    """(billed seconds, USD per clip) under the workload's billing mode."""
    cost = cand.cost_usd if cand.cost_usd is not None else math.nan
    if workload.billing == "planned" or cand.duration_s <= 0:
        return cand.duration_s, cost
    # requested: the offering's effective rate for the clip it makes, times the seconds
    # asked for, which is how the seed articles' tables multiply ($/s × 5 s)
    return request.duration_s, cost / cand.duration_s * request.duration_s


def _class_plan(
    workload: Workload,
    c: WorkloadClass,
    request: VideoRequest,
    ranked: list[Candidate],
) -> ClassPlan:
    cand = ranked[0]
    seconds, per_clip = billed(workload, request, cand)
    clips = workload.daily_volume * c.share
    day = clips * per_clip
    month = day * workload.days_per_month
    override = workload.price_overrides.get(cand.offering.id)
    price_from = "catalog"
    if override is not None:
        price_from = f"override ${override.usd_per_second:g}/s" + (
            f" ({override.note})" if override.note else ""
        )
    tier = cand.offering.tier or cand.model.quality.tier
    plan = ClassPlan(
        name=c.name,
        share=c.share,
        policy="pinned" if c.pinned else c.policy,
        offering=cand.offering.id,
        model=cand.model.id,
        model_name=cand.model.name,
        provider=cand.offering.provider,
        tier=tier.value,
        elo=cand.model.quality.elo,
        clips_per_day=clips,
        requested_seconds=request.duration_s,
        billed_seconds=seconds,
        usd_per_clip=per_clip,
        usd_per_day=day,
        usd_per_month=month,
        usd_per_year=month * 12,
        latency_s=dict(cand.latency_s),
        price_from=price_from,
        fallbacks=[x.offering.id for x in ranked[1:4]],
    )
    if workload.sla is not None:
        sla = workload.sla
        plan.sla_hit_rate = sla_hit_rate(
            sla.max_latency_s, cand.latency_s["p50"], cand.latency_s["p90"]
        )
        plan.sla_met = cand.latency_s[sla.percentile.value] <= sla.max_latency_s
    return plan


def _baseline(
    router: Router,
    workload: Workload,
    requests: list[VideoRequest],
    offering_id: str,
    named: bool,
) -> Baseline:
    compiled = router.by_id[offering_id]
    reasons: list[str] = []
    day = 0.0
    for c, request in zip(workload.classes, requests, strict=True):
        cand = router.check(router.view(request), compiled)
        why = [r.message for r in cand.rejections]
        if why:
            reasons.append(f"{c.name}: {'; '.join(why)}")
            continue
        _, per_clip = billed(workload, request, cand)
        day += workload.daily_volume * c.share * per_clip
    if reasons:
        return Baseline(offering_id, compiled.model.name, False, reasons=reasons, named=named)
    month = day * workload.days_per_month
    return Baseline(offering_id, compiled.model.name, True, day, month, month * 12, named=named)


def plan(workload: Workload, catalog: Catalog, now: datetime | None = None) -> PlanReport:
    """Route every class, cost it, and compare with single-model baselines."""
    now = now or datetime.now(UTC)
    workload.checked(catalog)
    cat = with_price_overrides(catalog, workload, now.date())
    router = planning_router(cat, now)
    requests = [class_request(workload, i) for i in range(len(workload.classes))]
    classes = [
        _class_plan(workload, c, requests[i], route_class(router, workload, i))
        for i, c in enumerate(workload.classes)
    ]

    named = list(dict.fromkeys(workload.baselines or []))
    pool = named or [
        oid for oid, o in cat.offerings.items() if o.enabled and o.available_on(now.date())
    ]
    found = [_baseline(router, workload, requests, oid, oid in named) for oid in pool]
    feasible = sorted(
        (b for b in found if b.feasible), key=lambda b: (b.usd_per_month or 0.0, b.offering)
    )
    # named baselines stay in the report with the reasons they cannot serve; by default the
    # baselines are only the offerings that can serve every class
    baselines = feasible + [b for b in found if not b.feasible and b.named]

    report = PlanReport(
        workload=workload.name,
        as_of=now.date(),
        billing=workload.billing,
        daily_volume=workload.daily_volume,
        days_per_month=workload.days_per_month,
        classes=classes,
        baselines=baselines,
        savings=[],
        sla=None,
    )
    total = report.usd_per_month
    if feasible:
        best = feasible[0]
        report.savings.append(
            Saving(best.offering, "cheapest baseline", best.usd_per_month or 0.0, total)
        )
    for b in feasible:
        if b.named and b is not (feasible[0] if feasible else None):
            report.savings.append(Saving(b.offering, "named baseline", b.usd_per_month or 0, total))
    if not feasible:
        report.notes.append(
            "no single offering can serve every class"
            + (" among the named baselines" if named else "")
        )
    if workload.sla is not None:
        sla = workload.sla
        overall = sum(c.share * (c.sla_hit_rate or 0.0) for c in classes)
        mixed = mixture_quantile(_Q[sla.percentile.value], report.components())
        report.sla = {
            "max_latency_s": sla.max_latency_s,
            "percentile": sla.percentile.value,
            "hit_rate": round(overall, 4),
            "workload_latency_at_percentile_s": round(mixed, 1),
            "met": mixed <= sla.max_latency_s,
        }
    if workload.billing == "requested":
        report.notes.append(
            "billing: requested — rate × requested seconds, as the seed articles compute; "
            "providers bill the duration they produce (billing: planned)"
        )
    return report


def compare(report: PlanReport, other: PlanReport) -> Saving:
    """What ``report`` saves per month against ``other`` (e.g. a fixed-pick workload)."""
    return Saving(other.workload, "workload", other.usd_per_month, report.usd_per_month)
