"""Core value types: the request, jobs, attempts, assets and results.

Everything here is a pydantic model that round-trips through JSON unchanged, so the same
values travel through the CLI, the HTTP API, the job store and webhooks. Validation messages
name the field and the values that would work, because they are shown to users verbatim.
"""

from __future__ import annotations

import re
import typing
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AnyUrl,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

MAX_PROMPT_CHARS = 8000
MAX_REFERENCES = 12  # Seedance accepts 12 reference files, the most of any model in the seeds
MAX_METADATA_KEYS = 32


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


def _leaf_types(annotation: Any) -> set[Any]:
    args = typing.get_args(annotation)
    return set().union(*map(_leaf_types, args)) if args else {annotation}


class _Input(_Strict):
    """A model users fill in: a boolean is never taken as a number (pydantic's lax mode
    reads ``true`` as 1, so ``duration_s: true`` was a one-second clip)."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, v: Any, info: ValidationInfo) -> Any:
        if isinstance(v, bool) and info.field_name in cls.model_fields:
            leaves = _leaf_types(cls.model_fields[info.field_name].annotation)
            if bool not in leaves and leaves & {int, float}:
                raise ValueError(f"a number is expected, not {str(v).lower()}")
        return v


# --- enums -------------------------------------------------------------------------------


class Mode(StrEnum):
    TEXT_TO_VIDEO = "text-to-video"
    IMAGE_TO_VIDEO = "image-to-video"
    FIRST_LAST_FRAME = "first-last-frame"
    EXTEND = "extend"
    VIDEO_TO_VIDEO = "video-to-video"


class Resolution(StrEnum):
    """Resolution tiers, named by the short side of the frame."""

    R480P = "480p"
    R540P = "540p"
    R720P = "720p"
    R768P = "768p"
    R1080P = "1080p"
    R1440P = "1440p"
    R4K = "4k"

    @property
    def short_side(self) -> int:
        return _SHORT_SIDE[self]

    @classmethod
    def parse(cls, value: str) -> Resolution:
        v = value.strip().lower()
        v = _RES_ALIASES.get(v, v)
        try:
            return cls(v)
        except ValueError:
            raise ValueError(
                f"unknown resolution {value!r}; use one of {', '.join(r.value for r in cls)}"
            ) from None


_SHORT_SIDE = {
    Resolution.R480P: 480,
    Resolution.R540P: 540,
    Resolution.R720P: 720,
    Resolution.R768P: 768,
    Resolution.R1080P: 1080,
    Resolution.R1440P: 1440,
    Resolution.R4K: 2160,
}
_RES_ALIASES = {"2160p": "4k", "uhd": "4k", "2k": "1440p", "hd": "720p", "fullhd": "1080p"}
RESOLUTION_ORDER = list(Resolution)


class AudioMode(StrEnum):
    NONE = "none"  # no audio wanted; offerings with optional audio are asked for silence
    REQUIRED = "required"  # native audio must be generated with the video
    ANY = "any"  # audio welcome; take it where it comes at no extra cost


class QualityTier(StrEnum):
    DRAFT = "draft"
    STANDARD = "standard"
    PREMIUM = "premium"

    @property
    def rank(self) -> int:
        return {"draft": 0, "standard": 1, "premium": 2}[self.value]


class ReferenceRole(StrEnum):
    FIRST_FRAME = "first_frame"
    LAST_FRAME = "last_frame"
    SUBJECT = "subject"  # a character or object whose identity must be kept
    STYLE = "style"
    SOURCE_VIDEO = "source_video"  # the video to extend or transform
    AUDIO = "audio"  # a soundtrack or voice to follow


class ReferenceKind(StrEnum):
    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"


class LatencyPercentile(StrEnum):
    P50 = "p50"
    P90 = "p90"
    P99 = "p99"


ASPECT_RATIO_RE = re.compile(r"^(\d{1,2}):(\d{1,2})$")


def parse_aspect(value: str) -> tuple[int, int]:
    m = ASPECT_RATIO_RE.match(value.strip())
    if not m or int(m.group(1)) == 0 or int(m.group(2)) == 0:
        raise ValueError(f"aspect ratio {value!r} is not W:H; use e.g. 16:9, 9:16 or 1:1")
    return int(m.group(1)), int(m.group(2))


def frame_size(resolution: Resolution, aspect_ratio: str) -> tuple[int, int]:
    """Pixel size for a resolution tier and aspect ratio: the short side is the tier's.

    Sizes are rounded to even numbers because H.264 with 4:2:0 chroma needs them.
    """
    w, h = parse_aspect(aspect_ratio)
    short = resolution.short_side
    if w >= h:
        return _even(short * w / h), short
    return short, _even(short * h / w)


def _even(x: float) -> int:
    return round(x / 2.0) * 2


# --- the request -------------------------------------------------------------------------


class Reference(_Strict):
    """An input the model must follow: an image, a video or a sound, with its role.

    ``url`` is an http(s) URL (fetched only through the SSRF-safe fetcher) or a ``data:`` URL.
    Local paths are turned into data URLs by the CLI; the API never reads the server's disk.
    """

    role: ReferenceRole
    kind: ReferenceKind = ReferenceKind.IMAGE
    url: Annotated[str, Field(max_length=28_000_000)]

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if v.startswith("data:"):
            if ";base64," not in v[:100]:
                raise ValueError("a data: reference must be base64 (data:<mime>;base64,...)")
            return v
        if not (v.startswith("https://") or v.startswith("http://")):
            raise ValueError("a reference url must be http(s):// or a data: URL")
        AnyUrl(v)  # raises on a malformed URL
        return v

    @model_validator(mode="after")
    def _kind_fits_role(self) -> Reference:
        need = {
            ReferenceRole.FIRST_FRAME: ReferenceKind.IMAGE,
            ReferenceRole.LAST_FRAME: ReferenceKind.IMAGE,
            ReferenceRole.SOURCE_VIDEO: ReferenceKind.VIDEO,
            ReferenceRole.AUDIO: ReferenceKind.AUDIO,
        }.get(self.role)
        if need is not None and self.kind != need:
            raise ValueError(f"a {self.role.value} reference must be a {need.value}")
        return self


class Constraints(_Input):
    max_cost_usd: Annotated[float | None, Field(gt=0, le=10_000)] = None
    max_latency_s: Annotated[float | None, Field(gt=0, le=86_400)] = None
    #: which latency percentile must fit under ``max_latency_s``
    latency_percentile: LatencyPercentile = LatencyPercentile.P90
    deadline: datetime | None = None
    #: give up on an attempt (cancel it, try the next offering) if the provider shows no
    #: progress within this many seconds of accepting it
    first_progress_s: Annotated[float | None, Field(gt=0, le=86_400)] = None
    allowed_providers: list[str] | None = None
    blocked_providers: list[str] = Field(default_factory=list)
    #: ISO country codes of the model vendor's home jurisdiction (e.g. US, CN, GB)
    allowed_jurisdictions: list[str] | None = None
    open_weights_only: bool = False
    commercial_use_required: bool = False
    #: model strengths that must all be present (e.g. ["multi-shot"]), from catalog data
    required_strengths: Annotated[list[str], Field(max_length=8)] = Field(default_factory=list)

    @field_validator("allowed_jurisdictions")
    @classmethod
    def _upper(cls, v: list[str] | None) -> list[str] | None:
        return [j.strip().upper() for j in v] if v is not None else None


class PolicyWeights(_Input):
    """Weights of the balanced policy's utility (normalised quality, cost and latency)."""

    quality: Annotated[float, Field(ge=0, le=1)] = 0.4
    cost: Annotated[float, Field(ge=0, le=1)] = 0.4
    latency: Annotated[float, Field(ge=0, le=1)] = 0.2

    @model_validator(mode="after")
    def _not_all_zero(self) -> PolicyWeights:
        if self.quality + self.cost + self.latency <= 0:
            raise ValueError("policy weights cannot all be zero")
        return self


GateAction = Literal["regenerate", "fallback", "deliver_flagged", "fail"]
#: the technical checks a gate may name (vidgate.stages.checks measures them)
TECHNICAL_CHECKS = (
    "duration",
    "resolution",
    "aspect",
    "fps",
    "audio_present",
    "audio_silence",
    "black_frames",
    "frozen",
    "flicker",
    "decode",
    "hard_cuts",
)


class QualityGate(_Input):
    """What a delivered clip must pass, and what happens when it does not.

    Given on a request as ``quality: {min_score, checks, on_fail, ...}`` (a plain tier string
    there keeps meaning the model tier), or as a tenant default."""

    #: the lowest acceptable composite score, 0–10 (the mean of the scored stages)
    min_score: Annotated[float | None, Field(ge=0, le=10)] = None
    #: technical checks to run (names from ``vidgate check --list``); None runs every one
    #: that applies to the request
    checks: Annotated[list[str] | None, Field(max_length=32)] = None
    #: prompt adherence by CLIP similarity (needs a configured local CLIP model)
    clip: bool = False
    #: a VLM judge scores adherence, artifacts, physics and text (billed on the ledger)
    judge: bool = False
    on_fail: GateAction = "deliver_flagged"
    #: extra generations the gate may start for this job (each budgeted and counted)
    max_extra_attempts: Annotated[int, Field(ge=0, le=5)] = 2

    @field_validator("checks")
    @classmethod
    def _known_checks(cls, v: list[str] | None) -> list[str] | None:
        unknown = [c for c in v or [] if c not in TECHNICAL_CHECKS]
        if unknown:
            raise ValueError(
                f"unknown check(s) {', '.join(unknown)}; use any of {', '.join(TECHNICAL_CHECKS)}"
            )
        return v


class VideoRequest(_Input):
    """What the user wants. Provider-neutral; the router maps it onto offerings."""

    prompt: Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS)]
    negative_prompt: Annotated[str | None, Field(max_length=MAX_PROMPT_CHARS)] = None
    mode: Mode = Mode.TEXT_TO_VIDEO
    duration_s: Annotated[float, Field(gt=0, le=120)] = 5.0
    #: accepted distance to the nearest duration an offering supports (seconds)
    duration_tolerance_s: Annotated[float, Field(ge=0, le=60)] = 1.0
    resolution: Resolution = Resolution.R720P
    aspect_ratio: str = "16:9"
    fps: Annotated[int | None, Field(ge=1, le=120)] = None
    audio: AudioMode = AudioMode.NONE
    seed: Annotated[int | None, Field(ge=0, le=2**32 - 1)] = None
    references: Annotated[list[Reference], Field(max_length=MAX_REFERENCES)] = Field(
        default_factory=list
    )
    quality: QualityTier | None = None
    #: the quality gate (``quality`` given as an object on the wire); None: tenant default
    quality_gate: QualityGate | None = None
    constraints: Constraints = Field(default_factory=Constraints)
    #: what the content is (dialogue, human-motion, stylized, product, multi-shot...): ranks
    #: offerings whose models are strong at it higher (balanced and best-quality policies)
    hints: Annotated[list[str], Field(max_length=8)] = Field(default_factory=list)
    #: weights for the balanced policy; the tenant's or the defaults when unset
    weights: PolicyWeights | None = None
    #: after a moderation refusal, try the next offering from a *different* vendor
    fallback_on_content_rejection: bool = False
    #: provider-specific options, namespaced by provider: {"runway": {"watermark": false}}
    provider_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    metadata: dict[str, str] = Field(default_factory=dict)

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("prompt is blank; describe the video to generate")
        return v

    @field_validator("hints")
    @classmethod
    def _hints(cls, v: list[str]) -> list[str]:
        out = [h.strip().lower() for h in v]
        if any(not h or len(h) > 32 for h in out):
            raise ValueError("hints are short words such as dialogue or human-motion")
        return out

    @field_validator("aspect_ratio")
    @classmethod
    def _aspect(cls, v: str) -> str:
        parse_aspect(v)
        return v.strip()

    @model_validator(mode="before")
    @classmethod
    def _quality_object(cls, data: Any) -> Any:
        # `quality` is a tier string, or an object: its `tier` stays the model tier and the
        # rest is the gate, so one field on the wire carries both.
        if isinstance(data, dict) and isinstance(data.get("quality"), dict):
            if data.get("quality_gate") is not None:
                raise ValueError("give the quality gate as `quality` or `quality_gate`, not both")
            data = dict(data)
            gate = dict(data.pop("quality"))
            tier = gate.pop("tier", None)
            if tier is not None:
                data["quality"] = tier
            data["quality_gate"] = gate
        return data

    @field_validator("resolution", mode="before")
    @classmethod
    def _res(cls, v: Any) -> Any:
        return Resolution.parse(v) if isinstance(v, str) else v

    @field_validator("metadata")
    @classmethod
    def _meta(cls, v: dict[str, str]) -> dict[str, str]:
        if len(v) > MAX_METADATA_KEYS:
            raise ValueError(f"metadata has {len(v)} keys; at most {MAX_METADATA_KEYS}")
        for k, val in v.items():
            if len(k) > 64 or len(val) > 512:
                raise ValueError("metadata keys are ≤ 64 chars and values ≤ 512 chars")
        return v

    @model_validator(mode="after")
    def _mode_has_references(self) -> VideoRequest:
        roles = {r.role for r in self.references}
        needs: dict[Mode, set[ReferenceRole]] = {
            Mode.IMAGE_TO_VIDEO: {ReferenceRole.FIRST_FRAME},
            Mode.FIRST_LAST_FRAME: {ReferenceRole.FIRST_FRAME, ReferenceRole.LAST_FRAME},
            Mode.EXTEND: {ReferenceRole.SOURCE_VIDEO},
            Mode.VIDEO_TO_VIDEO: {ReferenceRole.SOURCE_VIDEO},
        }
        missing = needs.get(self.mode, set()) - roles
        if missing:
            names = ", ".join(sorted(r.value for r in missing))
            raise ValueError(f"mode {self.mode.value} needs a reference with role {names}")
        return self

    @property
    def frame_size(self) -> tuple[int, int]:
        return frame_size(self.resolution, self.aspect_ratio)

    def reference_roles(self) -> set[ReferenceRole]:
        return {r.role for r in self.references}


# --- jobs ----------------------------------------------------------------------------------


class JobState(StrEnum):
    """The closed set of job states (see the job engine's state machine)."""

    QUEUED = "queued"
    ROUTING = "routing"
    SUBMITTING = "submitting"  # intent stored; the provider create call may be in flight
    SUBMITTED = "submitted"  # the provider's job id is stored
    RUNNING = "running"
    DOWNLOADING = "downloading"
    POST_PROCESSING = "post_processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"
    NEEDS_RECONCILIATION = "needs_reconciliation"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {
        JobState.SUCCEEDED,
        JobState.FAILED,
        JobState.CANCELED,
        JobState.EXPIRED,
        JobState.NEEDS_RECONCILIATION,
    }
)


class AttemptState(StrEnum):
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    AMBIGUOUS = "ambiguous"
    #: given up on while the remote job may still run (no cancel): followed to its end and
    #: booked ``pending`` until what it cost is known
    ABANDONED = "abandoned"
    #: the clip was made (and billed) but the quality gate turned it down; another attempt
    #: was started or the job failed (see ``Job.quality.history``)
    REJECTED = "rejected"


class Asset(BaseModel):
    """A file we stored, with what we measured of it (never what the provider claimed)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    kind: Literal["video", "audio", "image"] = "video"
    uri: str  # where it lives in our storage (fsspec URL)
    content_type: str = "video/mp4"
    sha256: str
    bytes: int
    duration_s: float | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    frames: int | None = None
    codec: str | None = None
    has_audio: bool = False
    audio_codec: str | None = None
    synthetic: bool = False  # produced by the sandbox, not a real model


class Attempt(BaseModel):
    """One submission of a job to one offering."""

    model_config = ConfigDict(extra="forbid")

    n: int
    offering_id: str
    state: AttemptState
    provider_job: dict[str, Any] | None = None  # a serialised ProviderJob
    idempotency_key: str
    started_at: datetime
    ended_at: datetime | None = None
    error: dict[str, Any] | None = None
    estimated_cost_usd: float
    cost_usd: float | None = None  # what the provider bills for this attempt
    #: what the provider itself reported for this attempt, as read from its final status:
    #: {"amount", "unit" (usd|credits|tokens|hardware_seconds), "field", "usd" (or None
    #: where the catalog has no rate for the unit)}; settles the charge where usd is known
    reported_cost: dict[str, Any] | None = None


class Job(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    tenant: str = "default"
    state: JobState
    request: VideoRequest
    policy: str = "cheapest"
    created_at: datetime
    updated_at: datetime
    offering_id: str | None = None
    progress: float | None = None
    route: dict[str, Any] | None = None  # the router's explanation at submit time
    attempts: list[Attempt] = Field(default_factory=list)
    assets: list[Asset] = Field(default_factory=list)
    estimated_cost_usd: float | None = None
    cost_usd: float | None = None
    error: dict[str, Any] | None = None
    synthetic: bool = False
    finished_at: datetime | None = None
    #: where to POST this job's state-change events (Standard Webhooks signed)
    webhook_url: str | None = None
    #: budget held for this job at submit (its worst-case cost), released at the end
    reserved_usd: float | None = None
    #: the user deleted it (its files are gone; the record and ledger stay for accounting)
    deleted: bool = False
    #: how the charge was settled when it differs from the estimate: delivered ≠ priced,
    #: reservation top-ups, attempts still ``pending``, operator reconciliations
    billing: dict[str, Any] | None = None
    #: post-generation stage results by stage name (a serialised ``StageResult``), written as
    #: each stage ends so a crash resumes at the stage it was in
    stages: dict[str, dict[str, Any]] = Field(default_factory=dict)
    #: the quality gate's verdict on what was delivered: {verdict, score, failed, flagged,
    #: regenerations, history}; None when no gate ran
    quality: dict[str, Any] | None = None
    #: the story this job is a shot or segment of
    parent_id: str | None = None

    @property
    def latency_s(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.created_at).total_seconds()
