"""Ranking policies over feasible candidates.

* ``cheapest``: estimated cost, then p50 latency, then higher Elo, then id. For a request
  with a quality gate, once an offering's pass rate is learned the cost compared is the
  expected cost per passing clip (cost / pass rate): failures are regenerated and paid for.
* ``fastest``: latency at the request's percentile, then cost.
* ``best-quality``: quality score (with content hints), then cost.
* ``hybrid``: ``balanced``, then every self-hosted offering after every API (the
  ``auto:hybrid`` alias).
* ``balanced``: the utility

      U = w_q · Q + w_c · C + w_l · L

  over the feasible set, where each term is normalised to [0, 1] within that set:
  ``Q`` = quality score (below) min-max scaled; ``C`` = 1 − the log-cost position between the
  cheapest and dearest candidate (so halving cost is worth the same anywhere on the 10x price
  range the seeds describe); ``L`` likewise for latency at the request's percentile. Weights
  come from the request, else the tenant, else (quality 0.4, cost 0.4, latency 0.2).

Quality score: a model's Artificial Analysis Elo where the catalog has one; otherwise the mean
Elo of the catalog's models in the same tier (a data-derived prior, never a made-up number).
Once the quality gate has judged enough of an offering's clips, that prior blended with the
observed pass rate and mean score (routing.stats.blend) takes its place.
With content hints, the score blends in the share of the hints' strengths the model has:
``score' = (1 − α) · Q + α · H`` with α = 0.5, so a model strong at the asked-for content can
outrank a higher-Elo generalist, as the seeds advise ("Kling for human motion, Veo for
audio-heavy scenes", seed 001 "Design Principles").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from vidgate.catalog.loader import Catalog
from vidgate.types import PolicyWeights, VideoRequest

if TYPE_CHECKING:
    from vidgate.routing.router import Candidate

HINT_BLEND = 0.5
DEFAULT_WEIGHTS = PolicyWeights()
_PCT = ("p50", "p90", "p99")


def tier_priors(catalog: Catalog) -> dict[int, float]:
    """Mean Elo per tier rank over models that have an Elo; the overall mean otherwise."""
    by_tier: dict[int, list[float]] = {}
    for m in catalog.models.values():
        if m.quality.elo:
            by_tier.setdefault(m.quality.tier.rank, []).append(m.quality.elo)
    every = [e for xs in by_tier.values() for e in xs]
    overall = sum(every) / len(every) if every else 1000.0
    return {t: (sum(by_tier[t]) / len(by_tier[t]) if by_tier.get(t) else overall) for t in range(3)}


def hint_strengths(request: VideoRequest, catalog: Catalog) -> set[str]:
    wanted: set[str] = set()
    for h in request.hints:
        hint = catalog.hints.get(h)
        if hint is not None:
            wanted.update(hint.strengths)
    return wanted


def _norm(x: float, lo: float, hi: float) -> float:
    return 1.0 if hi - lo < 1e-12 else (x - lo) / (hi - lo)


def quality_scores(cands: list[Candidate], request: VideoRequest, catalog: Catalog) -> list[float]:
    priors = tier_priors(catalog)
    raw = [
        c.quality_elo if c.quality_elo is not None else (c.compiled.elo or priors[c.compiled.tier])
        for c in cands
    ]
    lo, hi = min(raw), max(raw)
    q = [_norm(r, lo, hi) for r in raw]
    wanted = hint_strengths(request, catalog)
    if not wanted:
        return q
    return [
        (1 - HINT_BLEND) * qi + HINT_BLEND * len(c.compiled.strengths & wanted) / len(wanted)
        for qi, c in zip(q, cands, strict=True)
    ]


def _cost(c: Candidate) -> float:
    return c.cost_usd if c.cost_usd is not None else float("inf")


def _per_pass(c: Candidate) -> float:
    """Expected cost of one clip that passes the gate, where the pass rate is learned."""
    if c.pass_rate is None:
        return _cost(c)
    return _cost(c) / c.pass_rate if c.pass_rate > 0 else float("inf")


def _cheapest(cands: list[Candidate], request: VideoRequest, catalog: Catalog) -> list[Candidate]:
    cost = _per_pass if request.quality_gate is not None else _cost
    return sorted(cands, key=lambda c: (cost(c), c.latency_s["p50"], -c.elo, c.offering.id))


def _fastest(cands: list[Candidate], request: VideoRequest, catalog: Catalog) -> list[Candidate]:
    pct = request.constraints.latency_percentile.value
    return sorted(cands, key=lambda c: (c.latency_s[pct], _cost(c), -c.elo, c.offering.id))


def _best_quality(
    cands: list[Candidate], request: VideoRequest, catalog: Catalog
) -> list[Candidate]:
    if not cands:
        return cands
    q = quality_scores(cands, request, catalog)
    order = sorted(
        range(len(cands)),
        key=lambda i: (-q[i], -cands[i].compiled.tier, _cost(cands[i]), cands[i].offering.id),
    )
    return [cands[i] for i in order]


def _log_pos(x: float, lo: float, hi: float) -> float:
    if hi <= lo or x <= 0 or lo <= 0:
        return 0.0
    return (math.log(x) - math.log(lo)) / (math.log(hi) - math.log(lo))


def _balanced(cands: list[Candidate], request: VideoRequest, catalog: Catalog) -> list[Candidate]:
    if not cands:
        return cands
    w = request.weights or DEFAULT_WEIGHTS
    total = w.quality + w.cost + w.latency
    pct = request.constraints.latency_percentile.value
    q = quality_scores(cands, request, catalog)
    costs = [max(_cost(c), 1e-6) for c in cands]
    lats = [max(c.latency_s[pct], 1e-3) for c in cands]
    clo, chi, llo, lhi = min(costs), max(costs), min(lats), max(lats)
    for i, c in enumerate(cands):
        c.utility = (
            w.quality * q[i]
            + w.cost * (1 - _log_pos(costs[i], clo, chi))
            + w.latency * (1 - _log_pos(lats[i], llo, lhi))
        ) / total
    return sorted(cands, key=lambda c: (-(c.utility or 0.0), _cost(c), c.offering.id))


#: who runs an offering on the operator's own hardware (catalog ``provider``)
SELF_HOSTED = "self-hosted"


def _hybrid(cands: list[Candidate], request: VideoRequest, catalog: Catalog) -> list[Candidate]:
    """The seeds' hybrid chain (seed 001: primary API → secondary API → self-hosted): the
    balanced order, with every self-hosted offering after every API. The operator's own GPU
    is the fallback no provider outage can take away, so it is kept for when the APIs fail."""
    ranked = _balanced(cands, request, catalog)
    return sorted(ranked, key=lambda c: c.offering.provider == SELF_HOSTED)  # stable


Policy = Callable[[list["Candidate"], VideoRequest, Catalog], list["Candidate"]]

POLICIES: dict[str, Policy] = {
    "cheapest": _cheapest,
    "fastest": _fastest,
    "best-quality": _best_quality,
    "balanced": _balanced,
    "hybrid": _hybrid,
}


def rank(
    policy: str, cands: list[Candidate], request: VideoRequest, catalog: Catalog
) -> list[Candidate]:
    return POLICIES[policy](cands, request, catalog)
