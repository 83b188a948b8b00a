"""Cost and latency estimates for one request on one offering, from catalog data alone."""

from __future__ import annotations

from vidgate.catalog.schema import Offering
from vidgate.types import LatencyPercentile, VideoRequest


def planned_duration(request: VideoRequest, offering: Offering) -> float:
    """The duration the offering will actually be asked for (its nearest supported value)."""
    return offering.capabilities.durations.nearest(request.duration_s)


def audio_generated(request: VideoRequest, offering: Offering) -> bool:
    return bool(offering.capabilities.audio_generated(request.audio))


def estimate_cost(request: VideoRequest, offering: Offering) -> float | None:
    """Price of one clip in USD, or None when no price rule covers the request."""
    duration = planned_duration(request, offering)
    audio = audio_generated(request, offering)
    base = None
    total = 0.0
    for rule in offering.price:
        if not rule.matches(request.resolution, duration, audio):
            continue
        if rule.surcharge:
            total += rule.cost(duration, offering.usd_per_credit)
        elif base is None:
            base = rule.cost(duration, offering.usd_per_credit)
    if base is None:
        return None
    return round(base + total, 6)


def estimate_latency(
    request: VideoRequest,
    offering: Offering,
    pct: LatencyPercentile = LatencyPercentile.P90,
) -> float:
    w, h = request.frame_size
    return offering.latency.estimate(pct, planned_duration(request, offering), w * h)
