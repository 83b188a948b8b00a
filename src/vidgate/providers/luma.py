"""Luma AI: the Dream Machine API, and (per offering) the newer Luma Agents API.

Dream Machine (provider-apis.md §4a; SDK lumalabs/lumaai-python, re-read for this adapter:
``types/generations/video_create_params.py`` and ``types/generation.py``):
``POST /generations/video`` creates (snake_case JSON; ``duration`` is a *string* such as
``"5s"``; ``resolution`` a string such as ``"720p"``; ``keyframes.frame0``/``frame1`` are the
first/last frame as ``{"type": "image", "url": ...}``), ``GET /generations/{id}`` polls with
``state`` ∈ queued/dreaming/completed/failed, the clip is the expiring URL in ``assets.video``
and a failure is explained only by the free-text ``failure_reason``. ``DELETE
/generations/{id}`` deletes a record; nothing documents it as stopping a running job ("No
separate cancel endpoint", §4a), so this adapter does not cancel.

Luma Agents (§4b; docs.agents.lumalabs.ai, "Error handling"): ``POST /v1/generations`` with
``type: "video"`` and a nested ``video`` object, ``state`` ∈ queued/processing/completed/failed,
outputs in ``output[].url`` (presigned, 1 h) and a machine-readable ``failure_code``. An
offering selects it with ``adapter_options: {api: agents}``; the job pins which API it used.

Neither API has an idempotency key (the Stainless SDKs send none, §0), so none is sent: a
create is sent exactly once and an ambiguous one is reconciled, never resubmitted. Errors are
FastAPI-style ``{"detail": ...}`` (a string, or a list of validation items); every response
carries ``X-Request-Id`` (Agents docs, "Rate limits and headers"; assumed for Dream Machine).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx

from vidgate.catalog.schema import Offering
from vidgate.errors import (
    CapabilityMismatch,
    ConfigError,
    ContentRejected,
    InvalidRequest,
    ProviderProtocolError,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
    VidgateError,
)
from vidgate.providers._http import json_body, send
from vidgate.providers.base import (
    Provider,
    ProviderJob,
    RemoteAsset,
    RemoteState,
    RemoteStatus,
    error_for_status,
    register,
    retry_after_seconds,
    status_table,
)
from vidgate.providers.lookup import Listed, Listing, Page, unix
from vidgate.providers.options import OptionField, passed, priced, url
from vidgate.types import ReferenceKind, ReferenceRole, VideoRequest

DREAM_MACHINE_BASE_URL = "https://api.lumalabs.ai/dream-machine/v1"
AGENTS_BASE_URL = "https://agents.lumalabs.ai/v1"
_DM_PATH = "/dream-machine/v1"

#: Dream Machine ``state`` strings (§4a; SDK ``Generation.state`` Literal).
STATUS: dict[str, RemoteState] = {
    "queued": RemoteState.QUEUED,
    "dreaming": RemoteState.RUNNING,
    "completed": RemoteState.SUCCEEDED,
    "failed": RemoteState.FAILED,
}
#: Agents API ``state`` strings (§4b).
AGENTS_STATUS: dict[str, RemoteState] = {
    "queued": RemoteState.QUEUED,
    "processing": RemoteState.RUNNING,
    "completed": RemoteState.SUCCEEDED,
    "failed": RemoteState.FAILED,
}
#: Agents ``failure_code`` → error class (§4b; the docs' "Retryable?" column: only
#: generation_failed, output_not_found and rate_limited are worth another try).
AGENTS_FAILURES: dict[str, type[VidgateError]] = {
    "content_moderated": ContentRejected,
    "budget_exhausted": QuotaExhausted,
    "rate_limited": RateLimited,
    "invalid_request": InvalidRequest,
    "corrupt_input": InvalidRequest,
    "unsupported_format": InvalidRequest,
    "image_too_large": InvalidRequest,
    "generation_failed": ProviderUnavailable,
    "output_not_found": ProviderUnavailable,
}

# Dream Machine has only free text. These phrases are its documented moderation reasons
# (docs.lumalabs.ai/docs/errors: "Contains blacklisted words", "Frame moderation failed",
# "Advanced prompt moderation failed") plus the Agents wording.
_MODERATION_MARKERS = (
    "moderation",
    "moderated",
    "blacklisted",
    "content guideline",
    "content policy",
    "safety",
)
_QUOTA_MARKERS = ("insufficient credit", "insufficient balance", "credit balance", "budget")


@dataclass(frozen=True)
class _Api:
    """What differs between Luma's two video APIs."""

    name: str
    status: Mapping[str, RemoteState]
    create_path: str
    aspect_ratios: frozenset[str]
    resolutions: frozenset[str]
    #: allowed clip lengths in seconds; None: any whole number (the SDK types accept any string)
    durations: frozenset[int] | None
    prompt_min: int
    prompt_max: int
    credential: str
    #: provider_options this adapter passes through, with their types
    options: Mapping[str, type]


DREAM_MACHINE = _Api(
    name="dream-machine",
    status=STATUS,
    create_path="/generations/video",
    aspect_ratios=frozenset({"1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21"}),
    resolutions=frozenset({"540p", "720p", "1080p", "4k"}),
    durations=None,
    # docs.lumalabs.ai/docs/errors: "minimum length is 3 characters", "maximum ... 5000"
    prompt_min=3,
    prompt_max=5000,
    credential="LUMAAI_API_KEY",
    options={"loop": bool, "concepts": list, "callback_url": str},
)
AGENTS = _Api(
    name="agents",
    status=AGENTS_STATUS,
    create_path="/generations",
    aspect_ratios=frozenset(
        {"3:1", "2:1", "21:9", "16:9", "4:3", "3:2", "1:1", "3:4", "2:3", "9:16", "1:2", "1:3"}
    ),
    resolutions=frozenset({"540p", "720p", "1080p"}),
    durations=frozenset({5, 10}),
    prompt_min=1,
    prompt_max=6000,  # API reference: prompt maxLength 6000
    # the Agents SDKs read LUMA_AGENTS_API_KEY (luma-agents-go README); keys start luma-api-
    credential="LUMA_AGENTS_API_KEY",
    options={"loop": bool, "hdr": bool, "exr_export": bool, "user_id": str},
)
APIS: dict[str, _Api] = {a.name: a for a in (DREAM_MACHINE, AGENTS)}


def _classify(text: str) -> str | None:
    low = text.lower()
    if any(m in low for m in _MODERATION_MARKERS):
        return "content"
    if any(m in low for m in _QUOTA_MARKERS):
        return "quota"
    return None


def _detail_text(data: dict[str, Any], fallback: str) -> str:
    """``detail`` as text: FastAPI gives a string, or a list of ``{loc, msg}`` items."""
    detail = data.get("detail", data.get("message", data.get("error")))
    if isinstance(detail, str) and detail:
        return detail
    if isinstance(detail, list) and detail:
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(x) for x in item.get("loc", []) if x != "body")
                parts.append(f"{loc}: {item.get('msg')}" if loc else str(item.get("msg")))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    if isinstance(detail, dict):
        return str(detail.get("message") or detail)
    return fallback


@register
class Luma(Provider):
    protocol: ClassVar[str] = "luma"
    #: provider_options fields (providers/options.py); §4a. HDR is priced apart by Luma and no
    #: offering here is priced for it, so it is refused rather than billed at the SDR price.
    option_fields: ClassVar[Mapping[str, OptionField]] = {
        "loop": passed(bool),
        "concepts": passed(list),
        "user_id": passed(str),
        "callback_url": url(),
        "hdr": priced("an offering priced for HDR (none in the catalog)"),
        "exr_export": priced("an offering priced for HDR (none in the catalog)"),
        "keyframes": priced("references"),
    }
    default_base_url: ClassVar[str] = DREAM_MACHINE_BASE_URL
    callback_scheme: ClassVar[str | None] = "token"  # unsigned callback_url

    # -- configuration ---------------------------------------------------------------------

    def api_for(self, offering: Offering) -> _Api:
        name = offering.adapter_options.get("api", DREAM_MACHINE.name)
        try:
            return APIS[name]
        except KeyError:
            raise ConfigError(
                f"offering {offering.id}: adapter_options.api is {name!r}; "
                f"use one of {', '.join(sorted(APIS))}",
                provider=self.protocol,
            ) from None

    def base_url_for(self, api: _Api) -> str:
        if api is DREAM_MACHINE:
            return self.base_url
        if self.base_url == self.default_base_url:
            return AGENTS_BASE_URL
        # An overridden base (the sandbox, or VIDGATE_LUMA_BASE_URL) serves both APIs beside
        # each other, with their real paths: <root>/dream-machine/v1 and <root>/v1.
        if self.base_url.endswith(_DM_PATH):
            return self.base_url[: -len(_DM_PATH)] + "/v1"
        return self.base_url

    def _headers(self, creds: tuple[str, ...], api: _Api) -> dict[str, str]:
        name = creds[0] if creds else api.credential
        return {"Authorization": f"Bearer {self.credentials.get(name)}"}

    # -- mapping ---------------------------------------------------------------------------

    def _mismatch(self, message: str) -> CapabilityMismatch:
        return CapabilityMismatch(message, provider=self.protocol)

    def _options(self, request: VideoRequest, offering: Offering, api: _Api) -> dict[str, Any]:
        opts = dict(request.provider_options.get(offering.provider, {}))
        for key, value in opts.items():
            want = api.options.get(key)
            if want is None:
                raise InvalidRequest(
                    f"provider_options.{offering.provider}.{key} is not a Luma {api.name} "
                    f"option; use {', '.join(sorted(api.options))}",
                    provider=self.protocol,
                )
            if not isinstance(value, want):
                raise InvalidRequest(
                    f"provider_options.{offering.provider}.{key} must be a {want.__name__}",
                    provider=self.protocol,
                )
        if "concepts" in opts:
            # camera concepts: [{"key": "dolly_zoom"}]; plain strings are accepted as keys
            concepts = []
            for c in opts["concepts"]:
                name: Any = c.get("key") if isinstance(c, dict) else c
                if not isinstance(name, str) or not name:
                    raise InvalidRequest(
                        "concepts must be a list of concept keys (or {'key': ...} objects)",
                        provider=self.protocol,
                    )
                concepts.append({"key": name})
            opts["concepts"] = concepts
        return opts

    def _seconds(self, request: VideoRequest, offering: Offering, api: _Api) -> int:
        seconds = offering.capabilities.durations.nearest(request.duration_s)
        if seconds != int(seconds) or (api.durations is not None and seconds not in api.durations):
            allowed = sorted(api.durations) if api.durations else "whole seconds"
            raise self._mismatch(
                f"Luma {api.name} takes durations {allowed}; {offering.id} would send {seconds:g}s"
            )
        return int(seconds)

    def _frames(self, request: VideoRequest, api: _Api) -> dict[ReferenceRole, str]:
        frames: dict[ReferenceRole, str] = {}
        for ref in request.references:
            if ref.role not in (ReferenceRole.FIRST_FRAME, ReferenceRole.LAST_FRAME):
                raise self._mismatch(
                    f"Luma takes only first/last frame images, not a {ref.role.value} reference"
                )
            if ref.kind is not ReferenceKind.IMAGE:
                raise self._mismatch(f"a Luma {ref.role.value} must be an image")
            if ref.role in frames:
                raise self._mismatch(f"Luma takes one {ref.role.value} image")
            if api is DREAM_MACHINE and ref.url.startswith("data:"):
                # Keyframes are {"type": "image", "url"} fetched by Luma's servers ("Failed to
                # read user input frames", docs.lumalabs.ai/docs/errors); no inline upload.
                raise self._mismatch(
                    "the Luma Dream Machine API fetches keyframe images by URL; pass an "
                    "http(s) URL instead of inline data"
                )
            frames[ref.role] = ref.url
        return frames

    def body(self, request: VideoRequest, offering: Offering) -> dict[str, Any]:
        """The create body; raises before any call for what the wire cannot express."""
        api = self.api_for(offering)
        if request.resolution.value not in api.resolutions:
            raise self._mismatch(
                f"Luma {api.name} takes resolutions {', '.join(sorted(api.resolutions))}; "
                f"not {request.resolution.value}"
            )
        if request.aspect_ratio not in api.aspect_ratios:
            raise self._mismatch(
                f"Luma {api.name} takes aspect ratios {', '.join(sorted(api.aspect_ratios))}; "
                f"not {request.aspect_ratio}"
            )
        if request.negative_prompt:
            raise self._mismatch("Luma has no negative prompt field")
        # No seed field either; a seed is a reproducibility hint, so it is dropped, not refused.
        if not api.prompt_min <= len(request.prompt) <= api.prompt_max:
            raise InvalidRequest(
                f"Luma {api.name} prompts are {api.prompt_min}..{api.prompt_max} characters; "
                f"this one has {len(request.prompt)}",
                provider=self.protocol,
            )
        seconds = self._seconds(request, offering, api)
        frames = self._frames(request, api)
        opts = self._options(request, offering, api)
        if api is DREAM_MACHINE:
            return self._dream_machine_body(request, offering, seconds, frames, opts)
        return self._agents_body(request, offering, seconds, frames, opts)

    def _dream_machine_body(
        self,
        request: VideoRequest,
        offering: Offering,
        seconds: int,
        frames: dict[ReferenceRole, str],
        opts: dict[str, Any],
    ) -> dict[str, Any]:
        if opts.get("loop") and ReferenceRole.LAST_FRAME in frames:
            raise InvalidRequest(
                "Luma: loop is not supported with an end frame", provider=self.protocol
            )
        body: dict[str, Any] = {
            "generation_type": "video",
            "model": offering.provider_model_id,
            "prompt": request.prompt,
            "aspect_ratio": request.aspect_ratio,
            "duration": f"{seconds}s",  # a string on the wire (§10 type traps)
            "resolution": request.resolution.value,
        }
        keyframes = {}
        if ReferenceRole.FIRST_FRAME in frames:
            keyframes["frame0"] = {"type": "image", "url": frames[ReferenceRole.FIRST_FRAME]}
        if ReferenceRole.LAST_FRAME in frames:
            keyframes["frame1"] = {"type": "image", "url": frames[ReferenceRole.LAST_FRAME]}
        if keyframes:
            body["keyframes"] = keyframes
        body.update(opts)
        return body

    def _agents_body(
        self,
        request: VideoRequest,
        offering: Offering,
        seconds: int,
        frames: dict[ReferenceRole, str],
        opts: dict[str, Any],
    ) -> dict[str, Any]:
        # §4b: "loop not with 10s or hdr; exr_export needs hdr"
        if opts.get("loop") and (seconds == 10 or opts.get("hdr")):
            raise InvalidRequest(
                "Luma: loop is not supported at 10s or with hdr", provider=self.protocol
            )
        if opts.get("exr_export") and not opts.get("hdr"):
            raise InvalidRequest("Luma: exr_export needs hdr", provider=self.protocol)
        video: dict[str, Any] = {"duration": f"{seconds}s", "resolution": request.resolution.value}
        if ReferenceRole.FIRST_FRAME in frames:
            video["start_frame"] = _image_ref(frames[ReferenceRole.FIRST_FRAME])
        if ReferenceRole.LAST_FRAME in frames:
            video["end_frame"] = _image_ref(frames[ReferenceRole.LAST_FRAME])
        video.update({k: v for k, v in opts.items() if k in ("loop", "hdr", "exr_export")})
        body: dict[str, Any] = {
            "model": offering.provider_model_id,
            "type": "video",
            "prompt": request.prompt,
            "aspect_ratio": request.aspect_ratio,
            "video": video,
        }
        if "user_id" in opts:
            body["user_id"] = opts["user_id"]
        return body

    def check(self, request: VideoRequest, offering: Offering) -> None:
        self.body(request, offering)

    # -- errors ----------------------------------------------------------------------------

    def _raise(self, resp: httpx.Response) -> None:
        if resp.status_code < 400:
            return
        message = _detail_text(json_body(resp), resp.reason_phrase or "error")
        rid = resp.headers.get("x-request-id")
        kw: dict[str, Any] = {
            "provider": self.protocol,
            "request_id": rid,
            "status_code": resp.status_code,
        }
        kind = _classify(message) if resp.status_code < 500 else None
        if kind == "content":
            raise ContentRejected(f"rejected by Luma moderation: {message}", **kw)
        if kind == "quota":
            raise QuotaExhausted(message, **kw)
        raise error_for_status(
            resp.status_code,
            message,
            provider=self.protocol,
            request_id=rid,
            retry_after=retry_after_seconds(resp.headers),
        )

    def _failure(self, data: dict[str, Any], api: _Api, rid: str | None) -> VidgateError:
        reason = str(data.get("failure_reason") or "generation failed")
        kw: dict[str, Any] = {"provider": self.protocol, "request_id": rid}
        code = data.get("failure_code")
        cls = AGENTS_FAILURES.get(code) if api is AGENTS and isinstance(code, str) else None
        if cls is None:
            kind = _classify(reason)
            cls = {"content": ContentRejected, "quota": QuotaExhausted}.get(
                kind or "", ProviderUnavailable
            )
        if cls is ContentRejected:
            return ContentRejected(f"rejected by Luma moderation: {reason}", **kw)
        if cls is ProviderUnavailable:
            # A generation that failed inside Luma may well succeed on another offering.
            return ProviderUnavailable(f"generation failed: {reason}", **kw)
        return cls(reason, **kw)

    # -- contract --------------------------------------------------------------------------

    async def submit(
        self, request: VideoRequest, offering: Offering, *, idempotency_key: str
    ) -> ProviderJob:
        # idempotency_key is not sent: Luma has no such header (see the module docstring).
        api = self.api_for(offering)
        body = self.body(request, offering)
        base = self.base_url_for(api)
        resp = await send(
            self.client,
            "POST",
            f"{base}{api.create_path}",
            provider=self.protocol,
            create=True,
            json=body,
            headers=self._headers(tuple(offering.credential_env), api),
        )
        self._raise(resp)
        remote_id = json_body(resp).get("id")
        if not isinstance(remote_id, str) or not remote_id:
            raise ProviderProtocolError(
                "create answered without a generation id",
                provider=self.protocol,
                request_id=resp.headers.get("x-request-id"),
            )
        return ProviderJob(
            protocol=self.protocol,
            offering_id=offering.id,
            remote_id=remote_id,
            base_url=base,
            credential_ref=tuple(offering.credential_env),
            extra={"api": api.name},
        )

    # -- reconciliation by lookup (providers/lookup.py): §4a ``GET /generations`` ---------

    #: offset-paged, newest first; each generation echoes its create body as ``request``.
    #: Visibility: the create answers with the stored generation; 5 s of margin (UNCONFIRMED).
    listing: ClassVar[Listing | None] = Listing(visibility_s=5.0)

    def listing_for(self, offering: Offering) -> Listing | None:
        # the Agents API documents no list endpoint
        return self.listing if self.api_for(offering) is DREAM_MACHINE else None

    def listed_inputs(
        self, request: VideoRequest, offering: Offering, *, idempotency_key: str
    ) -> dict[str, Any]:
        return self.body(request, offering)

    async def list_page(self, offering: Offering, cursor: str | None) -> Page:
        offset = int(cursor or 0)
        base = self.base_url_for(DREAM_MACHINE)
        creds = tuple(offering.credential_env)
        resp = await send(
            self.client,
            "GET",
            f"{base}/generations",
            provider=self.protocol,
            params={"limit": 100, "offset": offset},
            headers=self._headers(creds, DREAM_MACHINE),
        )
        self._raise(resp)
        data = json_body(resp)
        items: list[Listed] = []
        for g in data.get("generations") or []:
            if not isinstance(g, dict) or not isinstance(g.get("id"), str):
                continue
            echo = g.get("request")
            job = ProviderJob(
                protocol=self.protocol,
                offering_id=offering.id,
                remote_id=g["id"],
                base_url=base,
                credential_ref=creds,
                extra={"api": DREAM_MACHINE.name},
            )
            inputs = echo if isinstance(echo, dict) else {}
            items.append(Listed(g["id"], unix(g.get("created_at")), inputs, job))
        more = data.get("has_more") is True and bool(items)
        return Page(items, str(offset + len(items)) if more else None)

    def _job_api(self, job: ProviderJob) -> _Api:
        name = job.extra.get("api", DREAM_MACHINE.name)
        if name not in APIS:
            raise ProviderProtocolError(
                f"job pins unknown Luma API {name!r}", provider=self.protocol
            )
        return APIS[name]

    async def _get(self, job: ProviderJob) -> tuple[dict[str, Any], _Api, str | None]:
        api = self._job_api(job)
        resp = await send(
            self.client,
            "GET",
            f"{job.base_url}/generations/{job.remote_id}",
            provider=self.protocol,
            headers=self._headers(job.credential_ref, api),
        )
        self._raise(resp)
        return json_body(resp), api, resp.headers.get("x-request-id")

    async def poll(self, job: ProviderJob) -> RemoteStatus:
        data, api, rid = await self._get(job)
        raw = str(data.get("state"))
        state = status_table(api.status, raw, self.protocol)
        error = self._failure(data, api, rid) if state is RemoteState.FAILED else None
        # Neither API reports progress.
        return RemoteStatus(state=state, raw=raw, error=error)

    async def fetch(self, job: ProviderJob) -> list[RemoteAsset]:
        data, api, rid = await self._get(job)
        raw = str(data.get("state"))
        if status_table(api.status, raw, self.protocol) is not RemoteState.SUCCEEDED:
            raise InvalidRequest(
                f"Luma generation {job.remote_id} is {raw}; nothing to download yet",
                provider=self.protocol,
                request_id=rid,
            )
        urls: list[str] = []
        if api is DREAM_MACHINE:
            video = (data.get("assets") or {}).get("video")
            if isinstance(video, str) and video:
                urls.append(video)
        else:
            outputs = [o for o in data.get("output") or [] if isinstance(o, dict)]
            videos = [o for o in outputs if o.get("type") == "video"] or outputs
            urls = [str(o["url"]) for o in videos if o.get("url")]
        if not urls:
            raise ProviderProtocolError(
                f"Luma generation {job.remote_id} is completed but lists no video",
                provider=self.protocol,
                request_id=rid,
            )
        # Presigned CDN links: no headers, so the Luma key never travels to the CDN.
        return [RemoteAsset(url=u, content_type="video/mp4") for u in urls]


def _image_ref(url: str) -> dict[str, str]:
    """An Agents ``ImageRef``: a URL, or inline base64 with its media type (§4b)."""
    if url.startswith("data:"):
        head, _, payload = url.partition(",")
        media_type = head[len("data:") :].split(";")[0] or "image/png"
        return {"data": payload, "media_type": media_type}
    return {"url": url}
