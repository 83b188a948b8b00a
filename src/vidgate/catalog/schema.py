"""The catalog's data model: models, offerings, prices, latency profiles, sources.

The catalog is data shipped with the package (``catalog/data/*.yaml``) and validated here at
load. Every number carries a :class:`Source` naming the document and section it came from and
an as-of date, so a user can check it and a maintainer can tell when it is stale.
"""

from __future__ import annotations

import itertools
import math
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from vidgate.types import (
    AudioMode,
    LatencyPercentile,
    Mode,
    QualityTier,
    ReferenceRole,
    Resolution,
    parse_aspect,
)


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Data):
    """Where a number comes from.

    ``doc`` is ``seed:NNN`` (a file in shared/seeds whose name starts with NNN),
    ``provider-apis`` (shared/reference/provider-apis.md) or an https URL of an official page.
    ``section`` is a heading (or table caption) in that document, quoted exactly.
    """

    doc: str
    section: str
    as_of: date
    note: str | None = None

    @field_validator("doc")
    @classmethod
    def _doc(cls, v: str) -> str:
        if not (
            (v.startswith("seed:") and v[5:].isdigit())
            or v == "provider-apis"
            or v.startswith("https://")
            or v == "user-config"
        ):
            raise ValueError(
                f"source doc {v!r} must be seed:NNN, provider-apis, user-config or an https URL"
            )
        return v


class Quality(_Data):
    tier: QualityTier
    #: Artificial Analysis text-to-video Elo, where a seed gives it
    elo: float | None = None
    #: content kinds this model is known to be good at (e.g. audio, multi-shot, physics)
    strengths: list[str] = Field(default_factory=list)
    source: Source


class Model(_Data):
    """A generator, independent of who serves it."""

    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.\-]*$")]
    name: str
    vendor: str
    #: ISO country code of the vendor's home jurisdiction
    jurisdiction: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
    open_weights: bool = False
    license: str | None = None
    #: whether the licence or terms allow commercial use (None: unclear, treated as no)
    commercial_use: bool | None = True
    released: date | None = None
    quality: Quality
    #: GPU memory needed to self-host at full precision, where known
    self_host_vram_gb: float | None = None
    notes: str | None = None
    source: Source


class DurationSpec(_Data):
    """Allowed durations: a discrete set, or a range with a step."""

    values: list[float] | None = None
    min: float | None = None
    max: float | None = None
    step: float = 1.0

    @model_validator(mode="after")
    def _one_form(self) -> DurationSpec:
        if (self.values is None) == (self.min is None or self.max is None):
            raise ValueError("give either values: [...] or min/max (with optional step)")
        if self.values is not None and not self.values:
            raise ValueError("values must not be empty")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min is above max")
        return self

    @property
    def maximum(self) -> float:
        return max(self.values) if self.values is not None else float(self.max or 0)

    def nearest(self, want: float) -> float:
        """The supported duration closest to ``want`` (ties go to the longer one)."""
        if self.values is not None:
            return min(self.values, key=lambda v: (abs(v - want), -v))
        lo, hi = float(self.min or 0), float(self.max or 0)
        clamped = min(max(want, lo), hi)
        steps = round((clamped - lo) / self.step)
        return min(lo + steps * self.step, hi)


class PriceRule(_Data):
    """One line of a price list.

    ``unit: second`` bills ``usd`` per second of output; ``unit: clip`` bills ``usd`` per
    clip of up to ``clip_seconds`` (Hailuo's per-6-second price). Credits convert at the
    offering's ``usd_per_credit``. A rule applies when every ``when`` field it sets matches;
    the first matching base rule is used, then every matching surcharge is added on top.
    """

    unit: Literal["second", "clip"] = "second"
    usd: float | None = None
    credits: float | None = None
    clip_seconds: float | None = None
    resolutions: list[Resolution] | None = None
    durations: list[float] | None = None
    audio: bool | None = None
    surcharge: bool = False
    source: Source

    @model_validator(mode="after")
    def _amount(self) -> PriceRule:
        if (self.usd is None) == (self.credits is None):
            raise ValueError("a price rule gives exactly one of usd or credits")
        if (self.usd or 0) < 0 or (self.credits or 0) < 0:
            raise ValueError("prices are not negative")
        return self

    def matches(self, resolution: Resolution, duration: float, audio: bool) -> bool:
        return (
            (self.resolutions is None or resolution in self.resolutions)
            and (self.durations is None or any(abs(d - duration) < 1e-6 for d in self.durations))
            and (self.audio is None or self.audio == audio)
        )

    def cost(self, duration: float, usd_per_credit: float | None) -> float:
        rate = self.usd if self.usd is not None else (self.credits or 0) * (usd_per_credit or 0)
        if self.unit == "second":
            return rate * duration
        clips = math.ceil(duration / self.clip_seconds - 1e-9) if self.clip_seconds else 1
        return rate * clips


class LatencyProfile(_Data):
    """Wall-clock seconds from create to a downloadable video, for a reference clip."""

    p50: float
    p90: float | None = None
    p99: float | None = None
    ref_duration_s: float = 5.0
    ref_resolution: Resolution = Resolution.R720P
    source: Source

    @model_validator(mode="after")
    def _ordered(self) -> LatencyProfile:
        seq = [x for x in (self.p50, self.p90, self.p99) if x is not None]
        if any(b < a for a, b in itertools.pairwise(seq)):
            raise ValueError("latency percentiles must not decrease (p50 ≤ p90 ≤ p99)")
        return self

    def at(self, pct: LatencyPercentile) -> float:
        # Missing tail percentiles are filled with the ratios seed 000 measured across
        # providers (p90 ≈ 1.55×p50, p99 ≈ 2.5×p50 in "Measured Latency Ranges").
        if pct is LatencyPercentile.P50:
            return self.p50
        if pct is LatencyPercentile.P90:
            return self.p90 if self.p90 is not None else self.p50 * 1.55
        return self.p99 if self.p99 is not None else (self.p90 or self.p50 * 1.55) * 1.6

    def size_factor(self, duration_s: float, pixels: int) -> float:
        """How much longer than the reference clip a clip of this size takes.

        Compute grows with the number of latent tokens, i.e. seconds × pixels (seed 001, "How
        Resolution and Duration Scale Compute"), but queueing and fixed overheads do not, so
        duration counts linearly, pixels by their square root, and the factor stays in
        [0.5, 4] rather than extrapolating far beyond the measured clips.
        """
        ref_px = self.ref_resolution.short_side**2 * 16 / 9
        raw = (duration_s / self.ref_duration_s) * math.sqrt(pixels / ref_px)
        return min(4.0, max(0.5, raw))

    def estimate(self, pct: LatencyPercentile, duration_s: float, pixels: int) -> float:
        return self.at(pct) * self.size_factor(duration_s, pixels)


class Capabilities(_Data):
    modes: list[Mode]
    durations: DurationSpec
    resolutions: list[Resolution]
    aspect_ratios: list[str]
    fps: list[int] = Field(default_factory=lambda: [24])
    #: "never": no audio track; "optional": on request; "always": every clip has audio
    audio: Literal["never", "optional", "always"] = "never"
    reference_roles: list[ReferenceRole] = Field(default_factory=list)
    max_references: int = 0
    negative_prompt: bool = False
    seed: bool = False
    source: Source

    @field_validator("aspect_ratios")
    @classmethod
    def _ratios(cls, v: list[str]) -> list[str]:
        for r in v:
            parse_aspect(r)
        return v

    def audio_generated(self, want: AudioMode) -> bool | None:
        """Whether a clip will carry audio for this request; None if it cannot comply."""
        if want is AudioMode.REQUIRED:
            return True if self.audio != "never" else None
        return self.audio == "always"


class Offering(_Data):
    """One way to reach a model: a provider route with its own prices, limits and latency."""

    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.\-]*$")]
    model: str
    #: who runs it (google, openai, fal, replicate, self-hosted...)
    provider: str
    #: which adapter speaks its wire protocol (a key of the provider registry)
    protocol: str
    provider_model_id: str
    capabilities: Capabilities
    price: list[PriceRule]
    usd_per_credit: float | None = None
    #: rates that turn a provider-reported usage into dollars (providers/base.ReportedCost):
    #: token-priced models (BytePlus Seedance) and time-priced hardware (Replicate)
    usd_per_million_tokens: float | None = None
    usd_per_hardware_second: float | None = None
    latency: LatencyProfile
    #: quality tier of this route when it differs from the model's (e.g. a fast variant)
    tier: QualityTier | None = None
    available_from: date | None = None
    available_until: date | None = None  # last day on which the offering may be routed to
    enabled: bool = True
    #: environment variables that must all be set for the offering to be routable
    credential_env: list[str] = Field(default_factory=list)
    #: extra key/values the adapter needs (e.g. an API version header), never secrets
    adapter_options: dict[str, str] = Field(default_factory=dict)
    #: provider_options fields the adapter does not declare are passed through (never priced
    #: ones: see providers/options.py); off by default, so unknown fields are refused
    free_form_options: bool = False
    notes: str | None = None

    @model_validator(mode="after")
    def _prices(self) -> Offering:
        if not any(not r.surcharge for r in self.price):
            raise ValueError(f"offering {self.id}: at least one base (non-surcharge) price rule")
        if any(r.credits is not None for r in self.price) and self.usd_per_credit is None:
            raise ValueError(f"offering {self.id}: credit prices need usd_per_credit")
        if (
            self.available_from
            and self.available_until
            and self.available_until < self.available_from
        ):
            raise ValueError(f"offering {self.id}: available_until is before available_from")
        return self

    def available_on(self, day: date) -> bool:
        if self.available_from and day < self.available_from:
            return False
        return not (self.available_until and day > self.available_until)


class Hint(_Data):
    """A content hint (e.g. "dialogue") and the model strengths it rewards in ranking."""

    strengths: list[str]
    source: Source


class ProviderInfo(_Data):
    """Facts shared by all of a provider's offerings."""

    #: requests one credential may send, in the `limits` notation ("30/minute")
    rate_limit: Annotated[str | None, Field(pattern=r"^\d+\s*/\s*\w+$")] = None
    source: Source


class RoutingAlias(_Data):
    """A name a client can use as ``model``: a policy plus request defaults."""

    policy: str = "cheapest"
    defaults: dict[str, Any] = Field(default_factory=dict)


class CatalogData(_Data):
    """The whole catalog as loaded from data files (and user overrides)."""

    models: list[Model]
    offerings: list[Offering]
    hints: dict[str, Hint] = Field(default_factory=dict)
    providers: dict[str, ProviderInfo] = Field(default_factory=dict)
    aliases: dict[str, RoutingAlias] = Field(default_factory=dict)
