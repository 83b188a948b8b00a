"""The catalog compiled for routing: flat, precomputed records and a per-request view.

Routing runs on every request, over every offering, so it must be cheap (the target is
≤ 100 µs median over the whole catalog on two cores). Pydantic models are convenient but
slow to read in a hot loop; here each offering becomes a slotted record of plain sets,
tuples and floats, built once per catalog, and each request becomes a view holding the values
every check needs. The checks themselves are in ``constraints.py``, each defined once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime

from vidgate.catalog.loader import Catalog
from vidgate.catalog.schema import Model, Offering
from vidgate.types import (
    AudioMode,
    LatencyPercentile,
    Mode,
    ReferenceRole,
    Resolution,
    VideoRequest,
)

_PCT_INDEX = {LatencyPercentile.P50: 0, LatencyPercentile.P90: 1, LatencyPercentile.P99: 2}


@dataclass(slots=True, frozen=True)
class PriceLine:
    surcharge: bool
    per_second: bool
    rate: float  # USD per second, or per clip
    clip_seconds: float | None
    resolutions: frozenset[Resolution] | None
    durations: tuple[float, ...] | None
    audio: bool | None


@dataclass(slots=True)
class Compiled:
    offering: Offering
    model: Model
    id: str
    provider: str
    protocol: str
    enabled: bool
    available_from: date | None
    available_until: date | None
    modes: frozenset[Mode]
    resolutions: frozenset[Resolution]
    aspects: frozenset[str]
    fps: frozenset[int]
    dur_values: tuple[float, ...] | None
    dur_min: float
    dur_max: float
    dur_step: float
    audio: str
    roles: frozenset[ReferenceRole]
    max_refs: int
    negative_prompt: bool
    tier: int
    elo: float
    jurisdiction: str
    open_weights: bool
    commercial: bool
    credentials: tuple[str, ...]
    price: tuple[PriceLine, ...]
    #: catalog latency prior (p50, p90, p99) for the reference clip
    latency: tuple[float, float, float]
    ref_duration: float
    ref_pixels: float
    strengths: frozenset[str]
    # Memo tables for the pure functions below: requests repeat a handful of durations,
    # sizes and resolutions, and routing runs these for every offering on every request.
    _memo_duration: dict[float, float] = field(default_factory=dict)
    _memo_cost: dict[tuple[Resolution, float, bool], float | None] = field(default_factory=dict)
    _memo_latency: dict[tuple[float, int], tuple[float, float, float]] = field(default_factory=dict)

    def nearest_duration(self, want: float) -> float:
        hit = self._memo_duration.get(want)
        if hit is None:
            if len(self._memo_duration) > 4096:
                self._memo_duration.clear()
            hit = self._memo_duration[want] = self._nearest_duration(want)
        return hit

    def cost(self, resolution: Resolution, duration: float, audio: bool) -> float | None:
        key = (resolution, duration, audio)
        if key in self._memo_cost:
            return self._memo_cost[key]
        if len(self._memo_cost) > 4096:
            self._memo_cost.clear()
        value = self._memo_cost[key] = self._cost(resolution, duration, audio)
        return value

    def prior_latency(self, duration: float, pixels: int) -> tuple[float, float, float]:
        """The catalog's (p50, p90, p99) scaled to this clip size."""
        key = (duration, pixels)
        hit = self._memo_latency.get(key)
        if hit is None:
            if len(self._memo_latency) > 4096:
                self._memo_latency.clear()
            f = self.size_factor(duration, pixels)
            p50, p90, p99 = self.latency
            hit = self._memo_latency[key] = (p50 * f, p90 * f, p99 * f)
        return hit

    def _nearest_duration(self, want: float) -> float:
        if self.dur_values is not None:
            best = self.dur_values[0]
            for v in self.dur_values:
                d, bd = abs(v - want), abs(best - want)
                if d < bd or (d == bd and v > best):
                    best = v
            return best
        clamped = min(max(want, self.dur_min), self.dur_max)
        steps = round((clamped - self.dur_min) / self.dur_step)
        return min(self.dur_min + steps * self.dur_step, self.dur_max)

    def audio_generated(self, want: AudioMode) -> bool:
        return self.audio == "always" or (want is AudioMode.REQUIRED and self.audio != "never")

    def _cost(self, resolution: Resolution, duration: float, audio: bool) -> float | None:
        base: float | None = None
        extra = 0.0
        for p in self.price:
            if p.resolutions is not None and resolution not in p.resolutions:
                continue
            if p.durations is not None and not any(abs(d - duration) < 1e-6 for d in p.durations):
                continue
            if p.audio is not None and p.audio != audio:
                continue
            if p.per_second:
                amount = p.rate * duration
            else:
                amount = p.rate * (
                    math.ceil(duration / p.clip_seconds - 1e-9) if p.clip_seconds else 1
                )
            if p.surcharge:
                extra += amount
            elif base is None:
                base = amount
        return None if base is None else round(base + extra, 6)

    def size_factor(self, duration: float, pixels: int) -> float:
        # Same formula as LatencyProfile.size_factor (see its docstring for why).
        raw = (duration / self.ref_duration) * math.sqrt(pixels / self.ref_pixels)
        return min(4.0, max(0.5, raw))


def compile_offering(o: Offering, m: Model) -> Compiled:
    caps = o.capabilities
    spec = caps.durations
    lat = o.latency
    per_credit = o.usd_per_credit or 0.0
    return Compiled(
        offering=o,
        model=m,
        id=o.id,
        provider=o.provider,
        protocol=o.protocol,
        enabled=o.enabled,
        available_from=o.available_from,
        available_until=o.available_until,
        modes=frozenset(caps.modes),
        resolutions=frozenset(caps.resolutions),
        aspects=frozenset(caps.aspect_ratios),
        fps=frozenset(caps.fps),
        dur_values=tuple(spec.values) if spec.values is not None else None,
        dur_min=float(spec.min or 0),
        dur_max=float(spec.max or 0),
        dur_step=spec.step,
        audio=caps.audio,
        roles=frozenset(caps.reference_roles),
        max_refs=caps.max_references,
        negative_prompt=caps.negative_prompt,
        tier=(o.tier or m.quality.tier).rank,
        elo=m.quality.elo or 0.0,
        jurisdiction=m.jurisdiction,
        open_weights=m.open_weights,
        commercial=m.commercial_use is True,
        credentials=tuple(o.credential_env),
        price=tuple(
            PriceLine(
                surcharge=r.surcharge,
                per_second=r.unit == "second",
                rate=r.usd if r.usd is not None else (r.credits or 0.0) * per_credit,
                clip_seconds=r.clip_seconds,
                resolutions=frozenset(r.resolutions) if r.resolutions is not None else None,
                durations=tuple(r.durations) if r.durations is not None else None,
                audio=r.audio,
            )
            for r in o.price
        ),
        latency=(
            lat.p50,
            lat.at(LatencyPercentile.P90),
            lat.at(LatencyPercentile.P99),
        ),
        ref_duration=lat.ref_duration_s,
        ref_pixels=lat.ref_resolution.short_side**2 * 16 / 9,
        strengths=frozenset(m.quality.strengths),
    )


def compile_catalog(catalog: Catalog) -> list[Compiled]:
    return [compile_offering(o, catalog.model_of(o)) for o in catalog.offerings.values()]


@dataclass(slots=True)
class RequestView:
    """What every check needs from a request, computed once per routing decision."""

    request: VideoRequest
    today: date
    mode: Mode
    duration: float
    tolerance: float
    resolution: Resolution
    aspect: str
    fps: int | None
    audio: AudioMode
    audio_required: bool
    roles: frozenset[ReferenceRole]
    n_refs: int
    negative: bool
    min_tier: int
    allowed_providers: frozenset[str] | None
    blocked_providers: frozenset[str]
    allowed_jurisdictions: frozenset[str] | None
    open_weights_only: bool
    commercial_required: bool
    required_strengths: frozenset[str]
    max_cost: float | None
    max_latency: float | None
    pct: int
    #: seconds left before the deadline, if any
    time_left: float | None
    pixels: int

    def shape_key(self) -> object:
        """This request's shape-cache key: the fields the shape-only constraints read."""
        # Imported here: constraints.py builds on this module, and the key is derived from
        # the constraints themselves so that none can be left out of it.
        from vidgate.routing.constraints import CONSTRAINTS, shape_key

        return shape_key(CONSTRAINTS)(self)

    @classmethod
    def of(cls, request: VideoRequest, now: datetime) -> RequestView:
        c = request.constraints
        w, h = request.frame_size
        return cls(
            request=request,
            today=now.date(),
            mode=request.mode,
            duration=request.duration_s,
            tolerance=request.duration_tolerance_s + 1e-9,
            resolution=request.resolution,
            aspect=request.aspect_ratio,
            fps=request.fps,
            audio=request.audio,
            audio_required=request.audio is AudioMode.REQUIRED,
            roles=frozenset(r.role for r in request.references),
            n_refs=len(request.references),
            negative=bool(request.negative_prompt),
            min_tier=request.quality.rank if request.quality is not None else -1,
            allowed_providers=frozenset(c.allowed_providers)
            if c.allowed_providers is not None
            else None,
            blocked_providers=frozenset(c.blocked_providers),
            allowed_jurisdictions=frozenset(c.allowed_jurisdictions)
            if c.allowed_jurisdictions is not None
            else None,
            open_weights_only=c.open_weights_only,
            commercial_required=c.commercial_use_required,
            required_strengths=frozenset(c.required_strengths),
            max_cost=c.max_cost_usd,
            max_latency=c.max_latency_s,
            pct=_PCT_INDEX[c.latency_percentile],
            time_left=(c.deadline - now).total_seconds() if c.deadline is not None else None,
            pixels=w * h,
        )
