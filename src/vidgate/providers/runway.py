"""Runway API protocol (Gen-4.5, Gen-4 Turbo and the partner models Runway serves).

Wire details: shared/reference/provider-apis.md §3. ``POST /v1/text_to_video`` and
``POST /v1/image_to_video`` create a task (camelCase JSON; the body is a union discriminated
by ``model``) and answer ``{"id": ...}``; ``GET /v1/tasks/{id}`` polls it; ``DELETE
/v1/tasks/{id}`` cancels a queued/running task (or deletes a finished one). Every call carries
``Authorization: Bearer $RUNWAYML_API_SECRET`` and the required ``X-Runway-Version``.

``ratio`` is a *pixel* string ("1280:720"), allowed per model and endpoint, so (resolution,
aspect) is mapped through :data:`RATIO_CLASS` onto the model's set or refused before any call.
Outputs are plain URLs that expire within 24–48 h; ``fetch`` re-reads the task for fresh ones.
Runway has no idempotency key (§3: "Idempotency: none"): an ambiguous create is parked, never
resubmitted (design.md §6).

Confirmed beyond the digest in the official SDK (runwayml/sdk-python,
``types/task_retrieve_response.py``): ``progress`` is a 0–1 float and ``failureCode`` is
dot-separated, most generic segment first (``SAFETY.INPUT.TEXT``). In the docs
(docs.dev.runwayml.com "API Errors", "Inputs"): a 400 carries an ``error`` member with a
human-readable explanation; image inputs must be ``https://`` URLs or data URIs under 5 MB.
The name of the request-id response header is UNCONFIRMED; ``x-request-id`` is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from math import gcd
from typing import Any, ClassVar

import httpx

from vidgate.catalog.schema import Offering
from vidgate.errors import (
    CapabilityMismatch,
    ContentRejected,
    InvalidRequest,
    ProviderProtocolError,
    ProviderUnavailable,
    QuotaExhausted,
    VidgateError,
)
from vidgate.providers._http import json_body, send
from vidgate.providers.base import (
    Provider,
    ProviderJob,
    RemoteAsset,
    RemoteState,
    RemoteStatus,
    ReportedCost,
    error_for_status,
    register,
    retry_after_seconds,
    status_table,
)
from vidgate.providers.options import OptionField, passed, priced
from vidgate.types import AudioMode, ReferenceRole, Resolution, VideoRequest, parse_aspect

#: §3 "Task object": the six documented status strings, exact casing.
STATUS: dict[str, RemoteState] = {
    "PENDING": RemoteState.QUEUED,
    # THROTTLED: over the account's concurrency; the task waits instead of erroring.
    "THROTTLED": RemoteState.QUEUED,
    "RUNNING": RemoteState.RUNNING,
    "SUCCEEDED": RemoteState.SUCCEEDED,
    "FAILED": RemoteState.FAILED,
    "CANCELLED": RemoteState.CANCELED,
}

DEFAULT_VERSION = "2024-11-06"  # §3: X-Runway-Version is required; the SDK always sends it
CREDENTIAL = "RUNWAYML_API_SECRET"
T2V, I2V = "text_to_video", "image_to_video"

#: Which (resolution, aspect) each pixel ratio string stands for. Runway's 720p-class
#: frames keep about 0.92 MP whatever the shape (1104:832 is its 4:3, 1584:672 its 21:9).
RATIO_CLASS: dict[str, tuple[Resolution, str]] = {
    "1280:720": (Resolution.R720P, "16:9"),
    "720:1280": (Resolution.R720P, "9:16"),
    "1104:832": (Resolution.R720P, "4:3"),
    "832:1104": (Resolution.R720P, "3:4"),
    "960:960": (Resolution.R720P, "1:1"),
    "1584:672": (Resolution.R720P, "21:9"),
    "1920:1080": (Resolution.R1080P, "16:9"),
    "1080:1920": (Resolution.R1080P, "9:16"),
}
_GEN4_I2V = ("1280:720", "720:1280", "1104:832", "832:1104", "960:960", "1584:672")
_VEO = ("1280:720", "720:1280", "1080:1920", "1920:1080")
_WIDE = ("1280:720", "720:1280")

#: §3 model table: the ratios each model accepts on each endpoint. A model missing from an
#: endpoint's entry cannot be called there (gen4_turbo is image-to-video only).
MODEL_RATIOS: dict[str, dict[str, tuple[str, ...]]] = {
    "gen4.5": {I2V: _GEN4_I2V, T2V: _WIDE},
    "gen4_turbo": {I2V: _GEN4_I2V},
    "veo3.1": {I2V: _VEO, T2V: _VEO},
    "veo3.1_fast": {I2V: _VEO, T2V: _VEO},
    "veo3": {I2V: _VEO, T2V: _VEO},
    "gemini_omni_flash": {I2V: _WIDE, T2V: _WIDE},
}
#: §3: only the Veo 3.1 and Seedance 2 families take a last frame (``position: "last"``).
LAST_FRAME_MODELS = frozenset(
    {"veo3.1", "veo3.1_fast", "seedance2", "seedance2_fast", "seedance2_mini"}
)
#: §3: promptText is at most 1000 UTF-16 code units, 3500 for Seedance 2.
_PROMPT_LIMIT = {"seedance2": 3500, "seedance2_fast": 3500, "seedance2_mini": 3500}
_DATA_URI_LIMIT = 5 * 1024 * 1024  # docs "Inputs": a data URI must be under 5 MB

#: provider_options["runway"] keys passed through, with their validators.
_PUBLIC_FIGURE = ("auto", "low")
_OPTION_KEYS = ("contentModeration", "seed")

_MODERATION_MARKERS = ("moderation", "safety", "content policy")
_QUOTA_MARKERS = ("enough credits", "insufficient credits", "out of credits", "credit balance")


def _aspect_key(value: str) -> str:
    w, h = parse_aspect(value)
    g = gcd(w, h)
    return f"{w // g}:{h // g}"


def _classify(message: str) -> str | None:
    text = message.lower()
    if any(m in text for m in _MODERATION_MARKERS):
        return "content"
    if any(m in text for m in _QUOTA_MARKERS):
        return "quota"
    return None


@register
class Runway(Provider):
    protocol: ClassVar[str] = "runway"
    #: provider_options fields (providers/options.py); §3
    option_fields: ClassVar[Mapping[str, OptionField]] = {
        "contentModeration": passed(dict),
        "ratio": priced("aspect_ratio and resolution"),
        "promptText": priced("prompt"),
        "promptImage": priced("references"),
        "videoUri": priced("references"),
        "negativePrompt": priced("negative_prompt"),
    }
    default_base_url: ClassVar[str] = "https://api.dev.runwayml.com"
    supports_cancel: ClassVar[bool] = True

    def _headers(self, creds: tuple[str, ...], version: str) -> dict[str, str]:
        name = creds[0] if creds else CREDENTIAL
        return {
            "Authorization": f"Bearer {self.credentials.get(name)}",
            "X-Runway-Version": version,
        }

    @staticmethod
    def _version(offering: Offering) -> str:
        return offering.adapter_options.get("x_runway_version") or DEFAULT_VERSION

    # -- mapping ---------------------------------------------------------------------------

    def endpoint_for(self, request: VideoRequest, offering: Offering) -> str:
        endpoint = I2V if ReferenceRole.FIRST_FRAME in request.reference_roles() else T2V
        table = MODEL_RATIOS.get(offering.provider_model_id)
        if table is not None and endpoint not in table:
            raise CapabilityMismatch(
                f"{offering.id}: Runway's {offering.provider_model_id} has no {endpoint} endpoint",
                provider=self.protocol,
            )
        return endpoint

    def allowed_ratios(self, offering: Offering, endpoint: str) -> tuple[str, ...] | None:
        """The model's ratio strings on this endpoint; None when neither the digest nor the
        offering's ``adapter_options.ratios`` names them (the API then judges)."""
        override = offering.adapter_options.get("ratios")
        if override:
            return tuple(r.strip() for r in override.split(",") if r.strip())
        return MODEL_RATIOS.get(offering.provider_model_id, {}).get(endpoint)

    def ratio_for(self, request: VideoRequest, offering: Offering, endpoint: str) -> str:
        want = (request.resolution, _aspect_key(request.aspect_ratio))
        w, h = request.frame_size
        candidates = [
            r for r, (res, asp) in RATIO_CLASS.items() if (res, _aspect_key(asp)) == want
        ] + [f"{w}:{h}"]
        allowed = self.allowed_ratios(offering, endpoint)
        for ratio in candidates:
            if allowed is None or ratio in allowed:
                return ratio
        raise CapabilityMismatch(
            f"{offering.id}: Runway's {offering.provider_model_id} ({endpoint}) takes ratios "
            f"{', '.join(allowed or ())}; none is {request.resolution.value} "
            f"{request.aspect_ratio}",
            provider=self.protocol,
        )

    def _image(self, url: str, offering: Offering) -> str:
        if url.startswith("data:"):
            if len(url) >= _DATA_URI_LIMIT:
                raise CapabilityMismatch(
                    f"{offering.id}: Runway takes data URIs under 5 MB; this one is "
                    f"{len(url) / 1e6:.1f} MB (pass an https:// URL instead)",
                    provider=self.protocol,
                )
        elif not url.startswith("https://"):
            raise CapabilityMismatch(
                f"{offering.id}: Runway fetches only https:// image URLs (or data URIs)",
                provider=self.protocol,
            )
        return url

    def prompt_image(self, request: VideoRequest, offering: Offering) -> str | list[Any] | None:
        model = offering.provider_model_id
        other = request.reference_roles() - {ReferenceRole.FIRST_FRAME, ReferenceRole.LAST_FRAME}
        if other:
            raise CapabilityMismatch(
                f"{offering.id}: this adapter sends Runway only first/last frame images, not "
                f"{', '.join(sorted(r.value for r in other))} references",
                provider=self.protocol,
            )
        first = [r for r in request.references if r.role is ReferenceRole.FIRST_FRAME]
        last = [r for r in request.references if r.role is ReferenceRole.LAST_FRAME]
        if last and model not in LAST_FRAME_MODELS:
            raise CapabilityMismatch(
                f"{offering.id}: Runway's {model} takes a first frame only (position 'first')",
                provider=self.protocol,
            )
        if last and not first:
            raise CapabilityMismatch(
                f"{offering.id}: Runway cannot generate from a last frame alone",
                provider=self.protocol,
            )
        if not first:
            return None
        if not last:
            return self._image(first[0].url, offering)
        return [
            {"uri": self._image(first[0].url, offering), "position": "first"},
            {"uri": self._image(last[0].url, offering), "position": "last"},
        ]

    def options(self, request: VideoRequest, offering: Offering) -> dict[str, Any]:
        """``provider_options["runway"]``, checked against what §3 documents."""
        opts = dict(request.provider_options.get(offering.provider, {}))
        unknown = sorted(set(opts) - set(_OPTION_KEYS))
        if unknown:
            raise InvalidRequest(
                f"unknown Runway option(s) {', '.join(unknown)}; known: {', '.join(_OPTION_KEYS)}",
                provider=self.protocol,
            )
        cm = opts.get("contentModeration")
        if cm is not None and (
            not isinstance(cm, dict)
            or set(cm) - {"publicFigureThreshold"}
            or cm.get("publicFigureThreshold", "auto") not in _PUBLIC_FIGURE
        ):
            raise InvalidRequest(
                "Runway contentModeration is {'publicFigureThreshold': 'auto' | 'low'}",
                provider=self.protocol,
            )
        seed = opts.get("seed")
        if seed is not None and (
            not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32
        ):
            raise InvalidRequest("Runway seed is an integer in [0, 2^32)", provider=self.protocol)
        return opts

    def check(self, request: VideoRequest, offering: Offering) -> None:
        self.body(request, offering)

    def body(self, request: VideoRequest, offering: Offering) -> dict[str, Any]:
        model = offering.provider_model_id
        caps = offering.capabilities
        endpoint = self.endpoint_for(request, offering)
        limit = int(
            offering.adapter_options.get("max_prompt_chars") or _PROMPT_LIMIT.get(model, 1000)
        )
        units = len(request.prompt.encode("utf-16-le")) // 2
        if units > limit:
            raise CapabilityMismatch(
                f"{offering.id}: Runway's promptText takes at most {limit} UTF-16 code units; "
                f"this prompt has {units}",
                provider=self.protocol,
            )
        body: dict[str, Any] = {
            "model": model,
            "promptText": request.prompt,
            "ratio": self.ratio_for(request, offering, endpoint),
            # an integer on the wire (§3: "int 2-10"; Veo 4/6/8)
            "duration": round(caps.durations.nearest(request.duration_s)),
        }
        image = self.prompt_image(request, offering)
        if image is not None:
            body["promptImage"] = image
        if request.seed is not None and caps.seed:
            body["seed"] = request.seed
        # Gen-4.x has no negativePrompt field (sending one is a 400): only where declared.
        if request.negative_prompt and caps.negative_prompt:
            body["negativePrompt"] = request.negative_prompt
        if caps.audio == "optional":  # §3: Veo 3.1 and Seedance take `audio` (bool)
            body["audio"] = request.audio is AudioMode.REQUIRED
        body.update(self.options(request, offering))
        return body

    # -- errors ----------------------------------------------------------------------------

    def _raise(self, resp: httpx.Response) -> None:
        if resp.status_code < 400:
            return
        data = json_body(resp)
        err = data.get("error")
        if isinstance(err, dict):  # tolerate an envelope, though §3 documents a string
            err = err.get("message")
        message = str(err or resp.reason_phrase or "error")
        issues = data.get("issues")
        if isinstance(issues, list) and issues:
            message += ": " + "; ".join(
                str(i.get("message", i)) if isinstance(i, dict) else str(i) for i in issues[:5]
            )
        kw: dict[str, Any] = {
            "provider": self.protocol,
            "request_id": resp.headers.get("x-request-id"),
            "status_code": resp.status_code,
        }
        kind = _classify(message)
        if kind == "content":
            raise ContentRejected(f"rejected by Runway moderation: {message}", **kw)
        if kind == "quota":
            raise QuotaExhausted(message, **kw)
        raise error_for_status(
            resp.status_code,
            message,
            provider=self.protocol,
            request_id=kw["request_id"],
            retry_after=retry_after_seconds(resp.headers),
        )

    def _failure(self, data: dict[str, Any], request_id: str | None) -> VidgateError:
        code = str(data.get("failureCode") or "")
        msg = str(data.get("failure") or "generation failed")
        kw: dict[str, Any] = {
            "provider": self.protocol,
            "request_id": request_id,
            "details": {"failure_code": code} if code else {},
        }
        # §3 task failures: SAFETY.INPUT.* / SAFETY.OUTPUT.* are moderation (do not retry);
        # INTERNAL.* and anything else may succeed on another try or another offering.
        if code.upper().startswith("SAFETY"):
            return ContentRejected(f"rejected by Runway moderation ({code}): {msg}", **kw)
        label = f" ({code})" if code else ""
        return ProviderUnavailable(f"Runway generation failed{label}: {msg}", **kw)

    # -- contract --------------------------------------------------------------------------

    async def submit(
        self, request: VideoRequest, offering: Offering, *, idempotency_key: str
    ) -> ProviderJob:
        # No idempotency header: Runway has none (§3), and an unknown one would only mislead.
        body = self.body(request, offering)
        endpoint = self.endpoint_for(request, offering)
        version = self._version(offering)
        creds = tuple(offering.credential_env) or (CREDENTIAL,)
        resp = await send(
            self.client,
            "POST",
            f"{self.base_url}/v1/{endpoint}",
            provider=self.protocol,
            create=True,
            json=body,
            headers=self._headers(creds, version),
        )
        self._raise(resp)
        remote_id = json_body(resp).get("id")
        if not isinstance(remote_id, str) or not remote_id:
            raise ProviderProtocolError(
                "create answered without a task id",
                provider=self.protocol,
                request_id=resp.headers.get("x-request-id"),
                status_code=resp.status_code,
            )
        return ProviderJob(
            protocol=self.protocol,
            offering_id=offering.id,
            remote_id=remote_id,
            base_url=self.base_url,
            credential_ref=creds,
            extra={"runway_version": version, "endpoint": endpoint},
        )

    async def _task(self, job: ProviderJob) -> tuple[dict[str, Any], httpx.Response]:
        version = job.extra.get("runway_version") or DEFAULT_VERSION
        resp = await send(
            self.client,
            "GET",
            f"{job.base_url}/v1/tasks/{job.remote_id}",
            provider=self.protocol,
            headers=self._headers(job.credential_ref, version),
        )
        self._raise(resp)
        return json_body(resp), resp

    async def poll(self, job: ProviderJob) -> RemoteStatus:
        data, resp = await self._task(job)
        raw = str(data.get("status"))
        state = status_table(STATUS, raw, self.protocol)
        progress = data.get("progress")
        error = None
        if state is RemoteState.FAILED:
            error = self._failure(data, resp.headers.get("x-request-id"))
        # Terminal tasks carry the final charge, `cost.credits` (an int; 0 when refunded);
        # in-flight ones only `estimatedCost` (SDK task_retrieve_response.py).
        cost = data.get("cost")
        credits = cost.get("credits") if isinstance(cost, dict) else None
        reported = None
        if state.terminal and isinstance(credits, int | float) and not isinstance(credits, bool):
            reported = ReportedCost(float(credits), "credits", "cost.credits")
        return RemoteStatus(
            state=state,
            raw=raw,
            # a 0-1 float (SDK task_retrieve_response.py)
            progress=float(progress) if isinstance(progress, int | float) else None,
            error=error,
            reported_cost=reported,
        )

    async def fetch(self, job: ProviderJob) -> list[RemoteAsset]:
        # Output URLs expire within 24-48 h (§3): read the task again for fresh ones.
        data, resp = await self._task(job)
        output = data.get("output")
        urls = [u for u in output if isinstance(u, str) and u] if isinstance(output, list) else []
        if data.get("status") != "SUCCEEDED" or not urls:
            raise ProviderProtocolError(
                f"task {job.remote_id} has no output to fetch (status {data.get('status')!r})",
                provider=self.protocol,
                request_id=resp.headers.get("x-request-id"),
            )
        # Presigned URLs: no auth header (sending our key to a CDN would leak it).
        return [RemoteAsset(url=u, content_type="video/mp4") for u in urls]

    async def cancel(self, job: ProviderJob) -> None:
        version = job.extra.get("runway_version") or DEFAULT_VERSION
        headers = self._headers(job.credential_ref, version)
        headers["Accept"] = "*/*"  # the SDK's DELETE expects no body (204)
        resp = await send(
            self.client,
            "DELETE",
            f"{job.base_url}/v1/tasks/{job.remote_id}",
            provider=self.protocol,
            headers=headers,
        )
        if resp.status_code == 404:
            return  # already deleted: the task is gone either way
        self._raise(resp)
