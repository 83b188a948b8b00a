"""xAI Grok Imagine video protocol (provider-apis.md §9a).

``POST /v1/videos/generations`` (text- and image-to-video), ``POST /v1/videos/edits``
(video-to-video) and ``POST /v1/videos/extensions`` (extend) each answer ``{"request_id"}``;
``GET /v1/videos/{request_id}`` answers ``{"status": "pending"}`` until ``done`` with
``video.url``. There is no webhook, cancel, delete or idempotency key, so the create call is
sent exactly once and an ambiguous one is reconciled, never resubmitted.

Confirmed beyond the digest (read to learn, nothing copied):

* xai-org/xai-sdk-python ``src/xai_sdk/video.py``: a moderation block is a *done* response with
  ``video.respect_moderation: false`` and no URL ("Video did not respect moderation rules; URL is
  not available"); the URL is valid for 24 hours; failures carry ``error{code, message}``.
  ``proto/v6/video_pb2.pyi``: ``VideoResponse`` also has ``progress`` (int) and the request a
  ``generate_audio`` switch (passed through ``provider_options`` only; the digest lacks it).
* 3P mirrors of docs.x.ai: a failed job is HTTP 200 with ``status: "failed"`` and
  ``error{code, message}``; HTTP errors use a flat ``{"code": "...", "error": "..."}`` body;
  a bad key is HTTP **400** "Incorrect API key provided"; exhausted credits are 403
  "...used all available credits or reached its monthly spending limit".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

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
from vidgate.types import Mode, Reference, ReferenceRole, Resolution, VideoRequest

# The REST strings of the deferred status (gRPC enum DeferredStatus: PENDING, DONE, EXPIRED,
# FAILED). "pending" covers both queued and running: xAI does not tell them apart. "done" may
# still be a moderation block (respect_moderation: false), handled in poll(). "expired" means
# the remote job is gone: a failure of the remote job, which another offering may redo.
STATUS: dict[str, RemoteState] = {
    "pending": RemoteState.RUNNING,
    "done": RemoteState.SUCCEEDED,
    "failed": RemoteState.FAILED,
    "expired": RemoteState.FAILED,
}

ENV = "XAI_API_KEY"
#: §9a: aspect_ratio ∈ 1:1, 16:9, 9:16, 4:3, 3:4, 3:2, 2:3 (also the SDK's VideoAspectRatio)
WIRE_RATIOS = frozenset({"1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3"})
#: §9a: resolution ∈ 480p, 720p; 1080p only on the 1.5 models
BASE_RESOLUTIONS = (Resolution.R480P, Resolution.R720P)
MAX_PROMPT_CHARS = 4096  # §9a (3P)
MAX_REFERENCE_IMAGES = 7  # §9a: reference_images ≤ 7, not together with image
MAX_EXTENSION_S = 10  # §9a: /v1/videos/extensions duration 1–10
#: provider_options["xai"] keys passed through as-is, with their JSON types
OPTIONS: dict[str, type] = {"seed": int, "generate_audio": bool, "reference_audios": list}

_AUTH_MARKERS = ("incorrect api key", "no api key", "invalid api key", "api key provided")
_QUOTA_MARKERS = ("credits", "spending limit", "billing", "insufficient balance")
_MODERATION_MARKERS = ("moderation", "content policy", "content_policy", "safety", "nsfw")


def _classify(code: str | None, message: str) -> str | None:
    text = f"{code or ''} {message}".lower()
    if any(m in text for m in _AUTH_MARKERS):
        return "auth"
    if any(m in text for m in _QUOTA_MARKERS):
        return "quota"
    if any(m in text for m in _MODERATION_MARKERS):
        return "content"
    return None


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def resolutions_for(model_id: str) -> tuple[Resolution, ...]:
    """What the wire accepts for this model (§9a: 1080p only on the 1.5 models)."""
    if "1.5" in model_id:
        return (*BASE_RESOLUTIONS, Resolution.R1080P)
    return BASE_RESOLUTIONS


@register
class XAIVideo(Provider):
    protocol: ClassVar[str] = "xai-video"
    #: provider_options fields (providers/options.py); §9a. Audio is priced: use request.audio.
    option_fields: ClassVar[Mapping[str, OptionField]] = {
        "reference_audios": passed(list),
        "image": priced("references"),
        "video": priced("references"),
        "reference_images": priced("references"),
    }
    default_base_url: ClassVar[str] = "https://api.x.ai/v1"

    def _headers(self, creds: tuple[str, ...]) -> dict[str, str]:
        name = creds[0] if creds else ENV
        return {"Authorization": f"Bearer {self.credentials.get(name)}"}

    # -- mapping ---------------------------------------------------------------------------

    def _mismatch(self, offering: Offering, message: str) -> CapabilityMismatch:
        return CapabilityMismatch(f"{offering.id}: {message}", provider=self.protocol)

    def _options(self, request: VideoRequest, offering: Offering) -> dict[str, Any]:
        raw = request.provider_options.get(offering.provider, {})
        for key, value in raw.items():
            kind = OPTIONS.get(key)
            if kind is None:
                raise InvalidRequest(
                    f"unknown {offering.provider} option {key!r}; known: {', '.join(OPTIONS)}",
                    provider=self.protocol,
                )
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise InvalidRequest(
                    f"{offering.provider} option {key!r} must be a {kind.__name__}",
                    provider=self.protocol,
                )
        for voice in raw.get("reference_audios", []):
            if not (isinstance(voice, dict) and isinstance(voice.get("voice_id"), str)):
                raise InvalidRequest(
                    'reference_audios items are {"voice_id": "..."}', provider=self.protocol
                )
        return dict(raw)

    def plan(self, request: VideoRequest, offering: Offering) -> tuple[str, dict[str, Any]]:
        """(path, body) of the create call; raises for what the wire cannot express."""
        if len(request.prompt) > MAX_PROMPT_CHARS:
            raise self._mismatch(offering, f"prompts are at most {MAX_PROMPT_CHARS} characters")
        if request.negative_prompt:
            raise self._mismatch(offering, "xAI takes no negative prompt")
        by_role: dict[ReferenceRole, list[Reference]] = {}
        for ref in request.references:
            by_role.setdefault(ref.role, []).append(ref)
        supported = {ReferenceRole.FIRST_FRAME, ReferenceRole.SUBJECT, ReferenceRole.SOURCE_VIDEO}
        if unsupported := set(by_role) - supported:
            names = ", ".join(sorted(r.value for r in unsupported))
            raise self._mismatch(offering, f"xAI cannot take {names} references")
        firsts = by_role.get(ReferenceRole.FIRST_FRAME, [])
        subjects = by_role.get(ReferenceRole.SUBJECT, [])
        sources = by_role.get(ReferenceRole.SOURCE_VIDEO, [])
        options = self._options(request, offering)
        body: dict[str, Any] = {"model": offering.provider_model_id, "prompt": request.prompt}
        if request.seed is not None:
            body["seed"] = request.seed  # a body field per ComfyUI's REST client

        if request.mode in (Mode.VIDEO_TO_VIDEO, Mode.EXTEND):
            # Edits and extensions take one source video and nothing else (§9a).
            if len(sources) != 1 or firsts or subjects:
                raise self._mismatch(
                    offering, f"{request.mode.value} takes exactly one source video and no images"
                )
            body["video"] = {"url": sources[0].url}
            if request.mode is Mode.VIDEO_TO_VIDEO:
                body.update(options)
                return "/videos/edits", body
            seconds = offering.capabilities.durations.nearest(request.duration_s)
            if seconds > MAX_EXTENSION_S:
                raise self._mismatch(offering, f"extensions are at most {MAX_EXTENSION_S} s")
            body["duration"] = int(seconds)
            body.update(options)
            return "/videos/extensions", body

        if request.mode is not Mode.TEXT_TO_VIDEO and request.mode is not Mode.IMAGE_TO_VIDEO:
            raise self._mismatch(offering, f"xAI has no {request.mode.value} endpoint")
        if sources:
            raise self._mismatch(offering, "a source video needs video-to-video or extend")
        if len(firsts) > 1:
            raise self._mismatch(offering, "xAI takes one first-frame image")
        if firsts and subjects:
            raise self._mismatch(offering, "image and reference_images cannot be combined")
        if len(subjects) > MAX_REFERENCE_IMAGES:
            raise self._mismatch(offering, f"at most {MAX_REFERENCE_IMAGES} reference images")
        if request.aspect_ratio not in WIRE_RATIOS:
            raise self._mismatch(offering, f"xAI has no aspect ratio {request.aspect_ratio}")
        allowed = resolutions_for(offering.provider_model_id)
        if request.resolution not in allowed:
            names = ", ".join(r.value for r in allowed)
            raise self._mismatch(
                offering, f"{offering.provider_model_id} takes resolutions {names}"
            )
        seconds = offering.capabilities.durations.nearest(request.duration_s)
        body["duration"] = int(seconds)  # an integer number of seconds, 1–15
        body["aspect_ratio"] = request.aspect_ratio
        body["resolution"] = request.resolution.value
        if firsts:
            body["image"] = {"url": firsts[0].url}  # https or data: URI
        if subjects:
            body["reference_images"] = [{"url": r.url} for r in subjects]
        body.update(options)
        return "/videos/generations", body

    def check(self, request: VideoRequest, offering: Offering) -> None:
        self.plan(request, offering)

    # -- errors ----------------------------------------------------------------------------

    def _raise(self, resp: httpx.Response, request_id: str | None = None) -> None:
        if resp.status_code < 400:
            return
        data = json_body(resp)
        code = data.get("code")
        err = data.get("error")
        if isinstance(err, dict):  # tolerate an OpenAI-style envelope from compatible servers
            code = err.get("code") or code
            err = err.get("message")
        message = str(err or data.get("message") or resp.text[:300] or resp.reason_phrase)
        rid = resp.headers.get("x-request-id") or request_id
        kw: dict[str, Any] = {
            "provider": self.protocol,
            "request_id": rid,
            "status_code": resp.status_code,
        }
        kind = _classify(str(code) if code else None, message)
        if kind == "auth":
            # xAI answers a bad key with HTTP 400, not 401 (see the module docstring).
            raise AuthFailed(message, **kw)
        if kind == "quota":
            raise QuotaExhausted(message, **kw)
        if kind == "content":
            raise ContentRejected(f"rejected by moderation: {message}", **kw)
        raise error_for_status(
            resp.status_code,
            message,
            provider=self.protocol,
            request_id=rid,
            retry_after=retry_after_seconds(resp.headers),
        )

    def _failure(self, data: dict[str, Any], raw: str, rid: str) -> VidgateError:
        if raw == "expired":
            return ProviderUnavailable(
                "the remote job expired before it finished", provider=self.protocol, request_id=rid
            )
        e = _obj(data.get("error"))
        msg = str(e.get("message") or "generation failed")
        kind = _classify(str(e.get("code") or ""), msg)
        if kind == "content":
            return ContentRejected(
                f"rejected by moderation: {msg}", provider=self.protocol, request_id=rid
            )
        if kind == "quota":
            return QuotaExhausted(msg, provider=self.protocol, request_id=rid)
        # A generation that failed inside the provider may well succeed elsewhere.
        return ProviderUnavailable(
            f"generation failed: {msg}", provider=self.protocol, request_id=rid
        )

    # -- contract --------------------------------------------------------------------------

    async def submit(
        self, request: VideoRequest, offering: Offering, *, idempotency_key: str
    ) -> ProviderJob:
        # xAI documents no idempotency key: ``idempotency_key`` has nowhere to go, so the
        # create is sent once and an ambiguous one is reconciled by the caller.
        path, body = self.plan(request, offering)
        resp = await send(
            self.client,
            "POST",
            f"{self.base_url}{path}",
            provider=self.protocol,
            create=True,
            json=body,
            headers=self._headers(tuple(offering.credential_env)),
        )
        self._raise(resp)
        remote_id = json_body(resp).get("request_id")
        if not isinstance(remote_id, str) or not remote_id:
            raise ProviderProtocolError(
                "create answered without a request_id",
                provider=self.protocol,
                request_id=resp.headers.get("x-request-id"),
            )
        return ProviderJob(
            protocol=self.protocol,
            offering_id=offering.id,
            remote_id=remote_id,
            base_url=self.base_url,
            credential_ref=tuple(offering.credential_env),
        )

    async def _get(self, job: ProviderJob) -> dict[str, Any]:
        resp = await send(
            self.client,
            "GET",
            f"{job.base_url}/videos/{job.remote_id}",
            provider=self.protocol,
            headers=self._headers(job.credential_ref),
        )
        self._raise(resp, job.remote_id)
        return json_body(resp)

    @staticmethod
    def _raw_status(data: dict[str, Any]) -> str:
        raw = data.get("status")
        video = data.get("video")
        # ComfyUI's client treats a body without status but with a video as complete.
        if raw is None and isinstance(video, dict) and video.get("url"):
            return "done"
        return str(raw)

    async def poll(self, job: ProviderJob) -> RemoteStatus:
        data = await self._get(job)
        raw = self._raw_status(data)
        state = status_table(STATUS, raw, self.protocol)
        progress = data.get("progress")
        frac = float(progress) / 100.0 if isinstance(progress, int | float) else None
        if state is RemoteState.FAILED:
            return RemoteStatus(state, raw, frac, self._failure(data, raw, job.remote_id))
        if state is RemoteState.SUCCEEDED:
            video = _obj(data.get("video"))
            if video.get("respect_moderation") is False:
                # "done", but the output was withheld by moderation (xai-sdk: no URL then).
                err = ContentRejected(
                    "rejected by moderation: the video did not respect moderation rules",
                    provider=self.protocol,
                    request_id=job.remote_id,
                )
                return RemoteStatus(RemoteState.FAILED, raw, 1.0, err)
            if not video.get("url"):
                err2 = ProviderProtocolError(
                    "done without a video URL", provider=self.protocol, request_id=job.remote_id
                )
                return RemoteStatus(RemoteState.FAILED, raw, 1.0, err2)
            # "the exact cost you were charged", in ticks of 1e-10 USD
            # (https://docs.x.ai/developers/cost-tracking)
            ticks = _obj(data.get("usage")).get("cost_in_usd_ticks")
            reported = None
            if isinstance(ticks, int) and not isinstance(ticks, bool):
                reported = ReportedCost(ticks / 1e10, "usd", "usage.cost_in_usd_ticks")
            return RemoteStatus(state, raw, 1.0, reported_cost=reported)
        return RemoteStatus(state, raw, frac)

    async def fetch(self, job: ProviderJob) -> list[RemoteAsset]:
        data = await self._get(job)
        video = _obj(data.get("video"))
        url = video.get("url")
        if self._raw_status(data) != "done" or not isinstance(url, str) or not url:
            raise ProviderProtocolError(
                f"no video to fetch (status {data.get('status')!r})",
                provider=self.protocol,
                request_id=job.remote_id,
            )
        # A plain expiring URL (24 h per the SDK): no auth header goes with the download.
        return [RemoteAsset(url=url, content_type="video/mp4")]
