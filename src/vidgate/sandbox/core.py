"""What every emulated protocol shares: latency draws, fault injection, the durable record,
and rendering. Each protocol's wire format lives in its own module under ``emulators/``."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import random
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vidgate.catalog.loader import Catalog
from vidgate.catalog.schema import Offering
from vidgate.sandbox.render import cached_render
from vidgate.sandbox.store import SandboxJob, SandboxStore
from vidgate.types import LatencyPercentile

FaultKind = Literal[
    "rate_limit",  # 429 with Retry-After on create
    "unavailable",  # 503 on create
    "timeout",  # create hangs without recording a job; the client times out
    "drop",  # create is recorded, then the response never comes (an ambiguous create)
    "content_rejected",  # the job fails with a moderation error
    "fail",  # the job fails with an internal error at the end
    "poll_unavailable",  # 503 on status calls
    "oversize",  # the clip delivered is longer and larger than asked (billing must follow)
    # defective clips (the quality checks must catch them; see sandbox.render.DEFECTS)
    "black",  # black from 30% of the clip on
    "frozen",  # still from a fifth of the way in
    "short",  # half the asked duration
    "silent",  # an all-zero audio track
    "truncated",  # the file stops at 60% of its bytes (header intact)
    "hard_cut",  # a second shot from halfway
    "flicker",  # every other frame darker
    "off_prompt",  # a normal picture tagged off-prompt for the VLM judge emulator
]
#: the one credential every emulator refuses (401/403 in the provider's own error shape)
INVALID_CREDENTIAL = "invalid-key"
CREATE_FAULTS = {"rate_limit", "unavailable", "timeout", "drop"}
#: faults that change what is rendered, drawn once per job at create (one per job at most)
DEFECT_FAULTS = {
    "black",
    "frozen",
    "short",
    "silent",
    "truncated",
    "hard_cut",
    "flicker",
    "off_prompt",
}


class FaultRule(BaseModel):
    """Inject ``kind`` with probability ``rate`` into calls matching the filters."""

    model_config = ConfigDict(extra="forbid")

    kind: FaultKind
    rate: float = Field(ge=0, le=1)
    protocol: str | None = None
    model: str | None = None
    #: a catalog offering id (e.g. "alpha-openai"): only that offering's jobs
    offering: str | None = None
    #: active only within this window (unix seconds), for "provider down for a period"
    start: float | None = None
    end: float | None = None
    retry_after_s: float = 1.0

    def applies(self, protocol: str, model: str, now: float, offering: str | None = None) -> bool:
        return (
            (self.protocol is None or self.protocol == protocol)
            and (self.model is None or self.model == model)
            and (self.offering is None or self.offering == offering)
            and (self.start is None or now >= self.start)
            and (self.end is None or now < self.end)
        )


class FaultConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[FaultRule] = Field(default_factory=list)
    #: how long a "drop"/"timeout" create hangs before giving up (the client should time out)
    hang_s: float = 30.0


@dataclass
class SandboxCore:
    home: Path
    catalog: Catalog
    time_scale: float = 0.02
    faults: FaultConfig = field(default_factory=FaultConfig)
    seed: int | None = None
    #: jobs per list page at most, in every emulator's list endpoint (None: each provider's
    #: own maximum); scriptable so tests page through a handful of jobs
    list_page_size: int | None = None

    def __post_init__(self) -> None:
        self.store = SandboxStore(self.home / "sandbox.db")
        self.cache = self.home / "renders"
        self._rng = random.Random(self.seed)
        self._rng_lock = threading.Lock()
        self._secret = secrets.token_bytes(32)

    def page_size(self, asked: int) -> int:
        """The page size a list endpoint serves when the client asks for ``asked``."""
        return min(asked, self.list_page_size) if self.list_page_size else asked

    # -- catalog lookups ---------------------------------------------------------------------

    def offering_for(self, protocol: str, model: str) -> Offering | None:
        """The catalog offering a provider model id belongs to (own protocol first)."""
        fallback = None
        for o in self.catalog.offerings.values():
            if o.provider_model_id == model or o.id == model:
                if o.protocol == protocol:
                    return o
                fallback = fallback or o
        return fallback

    # -- randomness --------------------------------------------------------------------------

    def _random(self) -> float:
        with self._rng_lock:
            return self._rng.random()

    def draw_latency(self, offering: Offering | None, duration_s: float, pixels: int) -> float:
        """A log-normal draw matching the offering's p50 and p90, scaled to the clip size
        and by the time scale (so a demo finishes in seconds)."""
        if offering is None:
            p50, p90, size = 30.0, 60.0, 1.0
        else:
            lat = offering.latency
            p50 = lat.p50
            p90 = lat.at(LatencyPercentile.P90)
            size = lat.size_factor(duration_s, pixels)
        sigma = math.log(max(p90, p50 * 1.0001) / p50) / 1.2816
        with self._rng_lock:
            z = self._rng.gauss(0.0, 1.0)
        return p50 * math.exp(sigma * z) * size * self.time_scale

    def pick_fault(self, protocol: str, model: str, kinds: set[str]) -> FaultRule | None:
        now = time.time()
        offering: str | None = None
        if any(r.offering is not None for r in self.faults.rules):
            found = self.offering_for(protocol, model)
            offering = found.id if found is not None else None
        for rule in self.faults.rules:
            hit = rule.kind in kinds and rule.applies(protocol, model, now, offering)
            if hit and self._random() < rule.rate:
                self.store.event(f"fault:{rule.kind}", f"{protocol}/{model}")
                return rule
        return None

    # -- jobs --------------------------------------------------------------------------------

    def create_job(
        self,
        *,
        protocol: str,
        model: str,
        body: dict[str, Any],
        params: dict[str, Any],
        idempotency_key: str | None,
        id_prefix: str = "",
    ) -> tuple[SandboxJob, bool]:
        """Record a new job (or return the one this idempotency key already made).

        Returns (job, replayed). ``params`` holds what the renderer needs: width, height,
        fps, duration_s, audio.
        """
        if idempotency_key:
            existing = self.store.find_by_key(protocol, idempotency_key)
            if existing is not None:
                self.store.event("idempotent_replay", existing.id)
                return existing, True
        offering = self.offering_for(protocol, model)
        latency = self.draw_latency(
            offering, float(params["duration_s"]), int(params["width"]) * int(params["height"])
        )
        if self.pick_fault(protocol, model, {"oversize"}) is not None:
            # 1.6x the duration and ~1.5x the frame (multiples of 16): what a provider does
            # when a pass-through option overrides what was asked (and priced).
            params = {
                **params,
                "duration_s": round(float(params["duration_s"]) * 1.6, 3),
                "width": int(params["width"]) * 3 // 32 * 16,
                "height": int(params["height"]) * 3 // 32 * 16,
            }
        defect = self.pick_fault(protocol, model, DEFECT_FAULTS)
        if defect is not None:
            params = {**params, "defect": defect.kind}
            if defect.kind == "short":
                params["duration_s"] = round(float(params["duration_s"]) * 0.5, 3)
        fault = self.pick_fault(protocol, model, {"content_rejected", "fail"})
        outcome = f"fail:{fault.kind}" if fault else "ok"
        if _looks_unsafe(str(body.get("prompt", ""))):
            outcome = "fail:content_rejected"
        fingerprint = hashlib.sha256(
            json.dumps([protocol, body], sort_keys=True, default=str).encode()
        ).hexdigest()
        job = SandboxJob(
            id=id_prefix + uuid.uuid4().hex[:24],
            protocol=protocol,
            model=model,
            offering_id=offering.id if offering else None,
            fingerprint=fingerprint,
            idempotency_key=idempotency_key,
            created_at=time.time(),
            latency_s=latency,
            outcome=outcome,
            # the create body as received, for tests that check what reached the provider
            params={**params, "variant": int(fingerprint[:8], 16) % 4, "received": body},
            canceled_at=None,
            deleted=False,
        )
        self.store.insert(job)
        return job, False

    # -- downloads -------------------------------------------------------------------------

    def signed_file_url(self, base_url: str, job: SandboxJob, ttl_s: float = 3600.0) -> str:
        """A presigned-style URL to the job's MP4 that stops working after ``ttl_s`` seconds,
        like the expiring links most providers return (Replicate: 1 h; Runway: ~1 day)."""
        expires = int(time.time() + ttl_s)
        sig = hmac.new(self._secret, f"{job.id}:{expires}".encode(), hashlib.sha256).hexdigest()
        return f"{base_url.rstrip('/')}/sandbox/files/{job.id}.mp4?expires={expires}&sig={sig}"

    def check_file_signature(self, job_id: str, expires: int, sig: str) -> str | None:
        """None when valid, else why not ("expired" or "bad signature")."""
        want = hmac.new(self._secret, f"{job_id}:{expires}".encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, sig):
            return "bad signature"
        if time.time() > expires:
            return "expired"
        return None

    def render(self, job: SandboxJob) -> Path:
        p = job.params
        self.store.event("download", job.id)
        return cached_render(
            self.cache,
            width=int(p["width"]),
            height=int(p["height"]),
            fps=int(p["fps"]),
            duration_s=float(p["duration_s"]),
            audio=bool(p["audio"]),
            variant=int(p.get("variant", 0)),
            defect=p.get("defect"),
        )


def credential_ok(value: str | None) -> bool:
    """Emulators accept any non-empty credential except :data:`INVALID_CREDENTIAL`, so tests
    can exercise each provider's auth-error shape."""
    return bool(value) and value != INVALID_CREDENTIAL


def _looks_unsafe(prompt: str) -> bool:
    """A deterministic moderation trigger so tests and demos can exercise content rejection."""
    return "[unsafe]" in prompt.lower()
