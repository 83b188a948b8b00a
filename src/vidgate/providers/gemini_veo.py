"""Google Gemini API — Veo (provider-apis.md §2).

``POST /v1beta/models/{model}:predictLongRunning`` creates a google.longrunning Operation,
``GET /v1beta/{operation name}`` polls it, and each generated sample's ``video.uri`` is a Files
API URI downloaded with the API key (``x-goog-api-key``). The wire has **no status string**:
the operation's *shape* (``done`` absent/false, ``done`` + ``response``, ``done`` + ``error``)
is named and looked up in :data:`STATUS`, so an unrecognised shape is a
:class:`ProviderProtocolError`, never a silent "running".

Confirmed beyond the digest (googleapis/python-genai ``google/genai/operations.py``): the SDK
has only ``operations.get`` for video operations — no cancel — so ``supports_cancel`` is False.
An invalid API key is answered **400** ``INVALID_ARGUMENT`` with ``ErrorInfo.reason:
API_KEY_INVALID`` (many public issue reports), not 401; rate limits and daily quotas are both
429 ``RESOURCE_EXHAUSTED`` told apart by ``QuotaFailure.violations[].quotaId`` (``...PerMinute``
vs ``...PerDay``) with ``RetryInfo.retryDelay``. There is no idempotency key.

Vertex AI speaks the same instance/parameter schema with a different envelope; its adapter
(``vertex_veo.py``) subclasses this one and overrides only what differs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx

from vidgate.catalog.schema import Offering
from vidgate.errors import (
    AuthFailed,
    CapabilityMismatch,
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
from vidgate.providers.options import OptionField, passed, priced
from vidgate.types import Reference, ReferenceRole, Resolution, VideoRequest

API_KEY_ENV = "GEMINI_API_KEY"

#: Operation shapes (see :func:`operation_shape`) → states. Gemini has no queued state.
STATUS: dict[str, RemoteState] = {
    "running": RemoteState.RUNNING,  # `done` absent or false
    "succeeded": RemoteState.SUCCEEDED,  # done + response with at least one sample
    "filtered": RemoteState.FAILED,  # done + response, no samples, raiMediaFilteredCount > 0
    "empty": RemoteState.FAILED,  # done + response with neither samples nor a filter count
    "failed": RemoteState.FAILED,  # done + error
    "cancelled": RemoteState.CANCELED,  # done + error.code 1 (google.rpc.Code.CANCELLED)
}

#: Wire values (provider-apis §2 "Allowed values"): aspectRatio 16:9 | 9:16; resolution
#: 720p | 1080p, plus 4k for Veo 3.1.
ASPECT_RATIOS = ("16:9", "9:16")
RESOLUTIONS: dict[Resolution, str] = {
    Resolution.R720P: "720p",
    Resolution.R1080P: "1080p",
    Resolution.R4K: "4k",
}
PERSON_GENERATION = ("allow_all", "allow_adult", "dont_allow")
#: referenceImages: "up to three asset images or at most one style image" (Vertex model
#: reference page for Veo; the Gemini docs say "up to 3 reference images" for Veo 3.1).
MAX_ASSET_IMAGES = 3

_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+);base64,(.*)$", re.DOTALL)
#: the SDK's ``t_file_name``: the file id is ``[a-z0-9]+`` after ``files/``
_FILE_ID = re.compile(r"files/([a-z0-9]+)")
_CONTENT_MARKERS = (
    "responsible ai",
    "usage guideline",
    "safety",
    "sensitive words",
    "violat",
    "prohibited",
    "unsafe",
    "filtered",
)


def data_url(url: str) -> tuple[str, str] | None:
    """(mime type, base64 payload) of a ``data:`` URL, or None for any other URL."""
    m = _DATA_URL.match(url)
    return (m.group(1), m.group(2)) if m else None


def looks_like_moderation(message: str) -> bool:
    text = message.lower()
    return any(marker in text for marker in _CONTENT_MARKERS)


def request_id_of(resp: httpx.Response) -> str | None:
    """Google APIs document no request-id header; keep one when a proxy adds it."""
    rid = resp.headers.get("x-goog-request-id") or resp.headers.get("x-request-id")
    return str(rid) if rid else None


def _duration_s(text: str) -> float | None:
    """google.protobuf.Duration in JSON ("26s", "1.5s")."""
    try:
        return max(0.0, float(text.removesuffix("s")))
    except ValueError:
        return None


def google_error(resp: httpx.Response, protocol: str) -> VidgateError:
    """Translate the Google JSON error envelope ``{"error": {code, message, status, details}}``
    (provider-apis §2 "Errors") into vidgate's error tree."""
    err = json_body(resp).get("error")
    err = err if isinstance(err, dict) else {}
    message = str(err.get("message") or resp.reason_phrase or "error")
    status = str(err.get("status") or "")
    details = [d for d in err.get("details") or [] if isinstance(d, dict)]
    reasons = {str(d.get("reason")) for d in details if "reason" in d}
    quota_ids = [
        str(v.get("quotaId", ""))
        for d in details
        for v in d.get("violations") or []
        if isinstance(v, dict)
    ]
    retry_after = retry_after_seconds(resp.headers)
    if retry_after is None:
        delays = [str(d["retryDelay"]) for d in details if "retryDelay" in d]
        retry_after = _duration_s(delays[0]) if delays else None
    kw: dict[str, Any] = {
        "provider": protocol,
        "request_id": request_id_of(resp),
        "status_code": resp.status_code,
    }
    if "API_KEY_INVALID" in reasons or status == "UNAUTHENTICATED":
        # A bad Gemini key is a 400 INVALID_ARGUMENT, not a 401.
        return AuthFailed(message, **kw)
    if resp.status_code == 400 and looks_like_moderation(message):
        return ContentRejected(f"rejected by Google's safety filters: {message}", **kw)
    if resp.status_code == 429 or status == "RESOURCE_EXHAUSTED":
        if any("PerDay" in q for q in quota_ids):
            return QuotaExhausted(f"daily quota exhausted: {message}", **kw)
        return RateLimited(message, retry_after=retry_after, **kw)
    if status == "FAILED_PRECONDITION" and "billing" in message.lower():
        return QuotaExhausted(message, **kw)
    return error_for_status(
        resp.status_code,
        message,
        provider=protocol,
        request_id=kw["request_id"],
        retry_after=retry_after,
    )


Result = tuple[list[dict[str, Any]], int, list[str]]


def operation_shape(op: Mapping[str, Any], result: Result | None) -> str:
    """Name an Operation's shape; the name is looked up in :data:`STATUS`.

    ``result`` is the parsed ``response`` (videos, RAI-filtered count, reasons), or None when
    the response is missing or not in the protocol's shape. Names outside the table (a
    ``done`` that is not a bool, an operation that is done with neither response nor error,
    a response in an unknown shape) make ``status_table`` raise ProviderProtocolError.
    """
    done = op.get("done", False)
    has_error, has_response = "error" in op, "response" in op
    if done is False or done is None:
        return "running" if not (has_error or has_response) else "not done, yet has a result"
    if done is not True:
        return f"done={done!r}"
    err = op.get("error")
    if has_error and not has_response and isinstance(err, dict):
        return "cancelled" if err.get("code") == 1 else "failed"
    if has_response and not has_error:
        if result is None:
            return "done with a response in an unknown shape"
        videos, filtered, _ = result
        if videos:
            return "succeeded"
        return "filtered" if filtered > 0 else "empty"
    return "done without exactly one of response and error"


def dicts_in(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


@register
class GeminiVeo(Provider):
    protocol: ClassVar[str] = "gemini-veo"
    #: provider_options fields (providers/options.py); §2
    option_fields: ClassVar[Mapping[str, OptionField]] = {
        "personGeneration": passed(str),
        "enhancePrompt": passed(bool),
        "aspectRatio": priced("aspect_ratio"),
        "negativePrompt": priced("negative_prompt"),
        "lastFrame": priced("references"),
        "referenceImages": priced("references"),
    }
    default_base_url: ClassVar[str] = "https://generativelanguage.googleapis.com/v1beta"
    supports_cancel: ClassVar[bool] = False
    #: provider_options keys passed into ``parameters`` (sampleCount stays 1: one clip billed)
    option_keys: ClassVar[frozenset[str]] = frozenset({"personGeneration", "enhancePrompt"})

    def _key_headers(self, creds: tuple[str, ...]) -> dict[str, str]:
        name = creds[0] if creds else API_KEY_ENV
        return {"x-goog-api-key": self.credentials.get(name)}

    # -- mapping ---------------------------------------------------------------------------

    def duration_for(self, request: VideoRequest, offering: Offering) -> int:
        # durationSeconds is an integer on the wire (the SDK sends an int).
        return round(offering.capabilities.durations.nearest(request.duration_s))

    def resolution_for(self, request: VideoRequest) -> str:
        try:
            return RESOLUTIONS[request.resolution]
        except KeyError:
            raise CapabilityMismatch(
                f"Veo takes resolution 720p, 1080p or 4k, not {request.resolution.value}",
                provider=self.protocol,
            ) from None

    def image(self, ref: Reference) -> dict[str, Any]:
        """An image field: ``bytesBase64Encoded`` + ``mimeType`` (the API rejects the
        ``inlineData`` wrapper; ``gcsUri`` is Vertex-only). vidgate has no server-side URL
        fetcher yet, so http(s) images cannot be inlined here."""
        parsed = data_url(ref.url)
        if parsed is None or not parsed[0].startswith("image/"):
            raise CapabilityMismatch(
                f"the Gemini API takes {ref.role.value} images inline only; "
                "pass the image as a data:image/...;base64 URL",
                provider=self.protocol,
            )
        return {"bytesBase64Encoded": parsed[1], "mimeType": parsed[0]}

    def video(self, ref: Reference) -> dict[str, Any]:
        """The video to extend: a previous Veo output's URI, or inline base64."""
        parsed = data_url(ref.url)
        if parsed is not None:
            return {"encodedVideo": parsed[1], "encoding": parsed[0]}
        return {"uri": ref.url}

    def instance(self, request: VideoRequest) -> dict[str, Any]:
        by_role: dict[ReferenceRole, list[Reference]] = {}
        for ref in request.references:
            by_role.setdefault(ref.role, []).append(ref)
        if ReferenceRole.AUDIO in by_role:
            raise CapabilityMismatch("Veo takes no audio references", provider=self.protocol)
        for role in (ReferenceRole.FIRST_FRAME, ReferenceRole.LAST_FRAME):
            if len(by_role.get(role, [])) > 1:
                raise CapabilityMismatch(
                    f"Veo takes one {role.value} image", provider=self.protocol
                )
        if len(by_role.get(ReferenceRole.SOURCE_VIDEO, [])) > 1:
            raise CapabilityMismatch("Veo extends one video at a time", provider=self.protocol)
        assets = by_role.get(ReferenceRole.SUBJECT, [])
        styles = by_role.get(ReferenceRole.STYLE, [])
        inst: dict[str, Any] = {"prompt": request.prompt}
        if assets or styles:
            # referenceImages need a prompt and exclude image, lastFrame and video (§2).
            exclusive = {
                ReferenceRole.FIRST_FRAME,
                ReferenceRole.LAST_FRAME,
                ReferenceRole.SOURCE_VIDEO,
            }
            if exclusive & by_role.keys():
                raise CapabilityMismatch(
                    "Veo's subject/style reference images cannot be combined with frame or "
                    "video references",
                    provider=self.protocol,
                )
            if (assets and styles) or len(styles) > 1 or len(assets) > MAX_ASSET_IMAGES:
                raise CapabilityMismatch(
                    f"Veo takes up to {MAX_ASSET_IMAGES} subject images or one style image",
                    provider=self.protocol,
                )
            inst["referenceImages"] = [
                {"image": self.image(r), "referenceType": "asset"} for r in assets
            ] + [{"image": self.image(r), "referenceType": "style"} for r in styles]
            return inst
        if ReferenceRole.LAST_FRAME in by_role and ReferenceRole.FIRST_FRAME not in by_role:
            raise CapabilityMismatch(
                "Veo takes a last frame only together with a first frame",
                provider=self.protocol,
            )
        if ReferenceRole.FIRST_FRAME in by_role:
            inst["image"] = self.image(by_role[ReferenceRole.FIRST_FRAME][0])
        if ReferenceRole.LAST_FRAME in by_role:
            inst["lastFrame"] = self.image(by_role[ReferenceRole.LAST_FRAME][0])
        if ReferenceRole.SOURCE_VIDEO in by_role:
            inst["video"] = self.video(by_role[ReferenceRole.SOURCE_VIDEO][0])
        return inst

    def options(self, request: VideoRequest, offering: Offering) -> dict[str, Any]:
        """``provider_options[offering.provider]``, validated, for ``parameters``."""
        opts = dict(request.provider_options.get(offering.provider, {}))
        unknown = sorted(set(opts) - self.option_keys)
        if unknown:
            raise InvalidRequest(
                f"unknown {offering.provider} option(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(sorted(self.option_keys))}",
                provider=self.protocol,
            )
        pg = opts.get("personGeneration")
        if pg is not None and pg not in PERSON_GENERATION:
            raise InvalidRequest(
                f"personGeneration must be one of {', '.join(PERSON_GENERATION)}",
                provider=self.protocol,
            )
        if "enhancePrompt" in opts and not isinstance(opts["enhancePrompt"], bool):
            raise InvalidRequest("enhancePrompt must be true or false", provider=self.protocol)
        return opts

    def parameters(self, request: VideoRequest, offering: Offering) -> dict[str, Any]:
        # seed, fps and generateAudio are rejected in Gemini API mode (§2): a seed is
        # dropped (the catalog declares seed: false), Veo 3.x always adds audio.
        if request.aspect_ratio not in ASPECT_RATIOS:
            raise CapabilityMismatch(
                f"Veo takes aspect ratio 16:9 or 9:16, not {request.aspect_ratio}",
                provider=self.protocol,
            )
        params: dict[str, Any] = {
            "aspectRatio": request.aspect_ratio,
            "resolution": self.resolution_for(request),
            "durationSeconds": self.duration_for(request, offering),
            "sampleCount": 1,
        }
        if request.negative_prompt:
            params["negativePrompt"] = request.negative_prompt
        params.update(self.options(request, offering))
        return params

    def check(self, request: VideoRequest, offering: Offering) -> None:
        self.body(request, offering)  # every mapping error is raised while building it

    def body(self, request: VideoRequest, offering: Offering) -> dict[str, Any]:
        return {
            "instances": [self.instance(request)],
            "parameters": self.parameters(request, offering),
        }

    # -- operations ------------------------------------------------------------------------

    def result(self, response: Mapping[str, Any]) -> Result | None:
        """(videos, RAI-filtered count, reasons) of a Gemini ``response``:
        ``generateVideoResponse.generatedSamples[].video``."""
        gvr = response.get("generateVideoResponse")
        if not isinstance(gvr, dict):
            return None
        videos = [
            s["video"]
            for s in dicts_in(gvr.get("generatedSamples"))
            if isinstance(s.get("video"), dict)
        ]
        return videos, count_of(gvr.get("raiMediaFilteredCount")), filter_reasons(gvr)

    def _parsed(self, op: Mapping[str, Any]) -> tuple[str, Result | None]:
        response = op.get("response")
        result = self.result(response) if isinstance(response, dict) else None
        return operation_shape(op, result), result

    def status_of(self, op: Mapping[str, Any], request_id: str | None) -> RemoteStatus:
        shape, result = self._parsed(op)
        state = status_table(STATUS, shape, self.protocol)
        error: VidgateError | None = None
        kw: dict[str, Any] = {"provider": self.protocol, "request_id": request_id}
        if shape == "filtered" and result is not None:
            reasons = "; ".join(result[2]) or f"{result[1]} video(s) filtered"
            error = ContentRejected(f"filtered by Google's safety filters: {reasons}", **kw)
        elif shape == "empty":
            error = ProviderUnavailable("the operation finished without a video", **kw)
        elif shape == "failed":
            err = op.get("error") or {}
            msg = str(err.get("message") or "generation failed")
            if looks_like_moderation(msg):
                error = ContentRejected(f"rejected by Google's safety filters: {msg}", **kw)
            else:
                # A generation that failed inside the provider may well succeed elsewhere.
                error = ProviderUnavailable(
                    f"generation failed (code {err.get('code')}): {msg}", **kw
                )
        return RemoteStatus(state=state, raw=shape, error=error)

    def _raise(self, resp: httpx.Response) -> None:
        if resp.status_code >= 400:
            raise google_error(resp, self.protocol)

    def _operation(self, resp: httpx.Response) -> dict[str, Any]:
        self._raise(resp)
        op = json_body(resp)
        if not isinstance(op.get("name"), str) or not op["name"]:
            raise ProviderProtocolError(
                "the answer is not a long-running operation (no name)",
                provider=self.protocol,
                request_id=request_id_of(resp),
            )
        return op

    # -- contract --------------------------------------------------------------------------

    async def submit(
        self, request: VideoRequest, offering: Offering, *, idempotency_key: str
    ) -> ProviderJob:
        # The Gemini API has no idempotency key (§2): the create is sent exactly once.
        body = self.body(request, offering)
        creds = tuple(offering.credential_env)
        resp = await send(
            self.client,
            "POST",
            f"{self.base_url}/models/{offering.provider_model_id}:predictLongRunning",
            provider=self.protocol,
            create=True,
            json=body,
            headers=self._key_headers(creds),
        )
        op = self._operation(resp)
        return ProviderJob(
            protocol=self.protocol,
            offering_id=offering.id,
            remote_id=op["name"],  # "models/{model}/operations/{id}"
            base_url=self.base_url,
            credential_ref=creds,
        )

    async def _get_operation(self, job: ProviderJob) -> tuple[dict[str, Any], str | None]:
        resp = await send(
            self.client,
            "GET",
            f"{job.base_url}/{job.remote_id}",
            provider=self.protocol,
            headers=self._key_headers(job.credential_ref),
        )
        return self._operation(resp), request_id_of(resp)

    async def poll(self, job: ProviderJob) -> RemoteStatus:
        op, rid = await self._get_operation(job)
        return self.status_of(op, rid or job.remote_id)

    async def fetch(self, job: ProviderJob) -> list[RemoteAsset]:
        op, _ = await self._get_operation(job)
        shape, result = self._parsed(op)
        if shape != "succeeded" or result is None:
            raise ProviderProtocolError(
                f"operation {job.remote_id} has no video to fetch ({shape})",
                provider=self.protocol,
                request_id=job.remote_id,
            )
        return [self.asset(video, job) for video in result[0]]

    def asset(self, video: Mapping[str, Any], job: ProviderJob) -> RemoteAsset:
        uri, encoded = video.get("uri"), video.get("encodedVideo")
        if isinstance(uri, str) and uri:
            m = _FILE_ID.search(uri)
            if m:
                # What the SDK's files.download does: GET files/{id}:download?alt=media on the
                # API host the job was created on, with the key.
                return RemoteAsset(
                    url=f"{job.base_url}/files/{m.group(1)}:download?alt=media",
                    content_type="video/mp4",
                    headers=self._key_headers(job.credential_ref),
                )
            same_host = urlsplit(uri).netloc == urlsplit(job.base_url).netloc
            headers = self._key_headers(job.credential_ref) if same_host else {}
            return RemoteAsset(url=uri, content_type="video/mp4", headers=headers)
        if isinstance(encoded, str) and encoded:
            mime = str(video.get("encoding") or "video/mp4")
            return RemoteAsset(url=f"data:{mime};base64,{encoded}", content_type=mime)
        raise ProviderProtocolError(
            "a generated sample has neither uri nor encodedVideo",
            provider=self.protocol,
            request_id=job.remote_id,
        )


def count_of(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def filter_reasons(container: Mapping[str, Any]) -> list[str]:
    raw = container.get("raiMediaFilteredReasons")
    return [str(r) for r in raw] if isinstance(raw, list) else []
