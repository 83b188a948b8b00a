"""OpenAI Videos protocol (Sora 2 and any OpenAI-compatible video server).

Wire details: shared/reference/provider-apis.md §1. ``POST /videos`` creates (JSON body;
``seconds`` is a *string*), ``GET /videos/{id}`` polls, ``GET /videos/{id}/content`` streams
the MP4 from the API host itself. There is no cancel endpoint. The official SDK retries POSTs
and sends no idempotency key; we send the create exactly once and add an ``Idempotency-Key``
header, which OpenAI-compatible servers (vidgate's own included) honour.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import httpx

from vidgate.catalog.schema import Offering
from vidgate.errors import (
    CapabilityMismatch,
    ContentRejected,
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
    error_for_status,
    register,
    retry_after_seconds,
    status_table,
)
from vidgate.providers.lookup import Listed, Listing, Page, unix
from vidgate.providers.options import OptionField, priced
from vidgate.types import ReferenceRole, VideoRequest

STATUS: dict[str, RemoteState] = {
    "queued": RemoteState.QUEUED,
    "in_progress": RemoteState.RUNNING,
    "completed": RemoteState.SUCCEEDED,
    "failed": RemoteState.FAILED,
}

# Error codes OpenAI documents or gateways report for moderation and billing failures.
_MODERATION_MARKERS = ("moderation", "content_policy", "safety", "content_filter")
_QUOTA_MARKERS = ("insufficient_quota", "billing", "quota")


def _classify(code: str | None, message: str) -> str | None:
    text = f"{code or ''} {message}".lower()
    if any(m in text for m in _MODERATION_MARKERS):
        return "content"
    if any(m in text for m in _QUOTA_MARKERS):
        return "quota"
    return None


@register
class OpenAIVideos(Provider):
    protocol: ClassVar[str] = "openai-videos"
    #: provider_options fields (providers/options.py): Sora's create takes nothing vidgate
    #: does not set itself, so nothing passes
    option_fields: ClassVar[Mapping[str, OptionField]] = {
        "input_reference": priced("references"),
    }
    default_base_url: ClassVar[str] = "https://api.openai.com/v1"

    def _headers(self, creds: tuple[str, ...]) -> dict[str, str]:
        name = creds[0] if creds else "OPENAI_API_KEY"
        return {"Authorization": f"Bearer {self.credentials.get(name)}"}

    # -- mapping ---------------------------------------------------------------------------

    def size_for(self, request: VideoRequest, offering: Offering) -> str:
        w, h = request.frame_size
        size = f"{w}x{h}"
        allowed = offering.adapter_options.get("sizes")
        if allowed and size not in allowed.split(","):
            raise CapabilityMismatch(
                f"{offering.id} takes sizes {allowed}; {request.resolution.value} "
                f"{request.aspect_ratio} is {size}",
                provider=self.protocol,
            )
        return size

    def resubmit_is_idempotent(self, offering: Offering) -> bool:
        # OpenAI's own API documents no idempotency (provider-apis.md §1); an
        # OpenAI-compatible server that honours Idempotency-Key (vidgate's own, the sandbox)
        # declares it per offering.
        return offering.adapter_options.get("idempotency") == "honoured"

    def check(self, request: VideoRequest, offering: Offering) -> None:
        self.size_for(request, offering)

    def body(self, request: VideoRequest, offering: Offering) -> dict[str, Any]:
        seconds = offering.capabilities.durations.nearest(request.duration_s)
        body: dict[str, Any] = {
            "model": offering.provider_model_id,
            "prompt": request.prompt,
            "seconds": f"{seconds:g}",  # a string on the wire: numbers are rejected
            "size": self.size_for(request, offering),
        }
        first = [r for r in request.references if r.role is ReferenceRole.FIRST_FRAME]
        if first:
            body["input_reference"] = {"image_url": first[0].url}
        body.update(request.provider_options.get(offering.provider, {}))
        return body

    # -- reconciliation by lookup (providers/lookup.py): §1 ``GET /videos`` ----------------

    #: ``after``-cursor paging, newest first (``order=desc``); a Video shows its model,
    #: prompt, size and seconds. Visibility: 5 s of margin (UNCONFIRMED by the docs).
    listing: ClassVar[Listing | None] = Listing(visibility_s=5.0)

    def listed_inputs(
        self, request: VideoRequest, offering: Offering, *, idempotency_key: str
    ) -> dict[str, Any]:
        body = self.body(request, offering)
        return {k: body[k] for k in ("model", "prompt", "seconds", "size")}

    async def list_page(self, offering: Offering, cursor: str | None) -> Page:
        params = {"limit": "100", "order": "desc"} | ({"after": cursor} if cursor else {})
        creds = tuple(offering.credential_env)
        resp = await send(
            self.client,
            "GET",
            f"{self.base_url}/videos",
            provider=self.protocol,
            params=params,
            headers=self._headers(creds),
        )
        self._raise(resp)
        data = json_body(resp)
        items: list[Listed] = []
        for v in data.get("data") or []:
            if not isinstance(v, dict) or not isinstance(v.get("id"), str):
                continue
            job = ProviderJob(
                protocol=self.protocol,
                offering_id=offering.id,
                remote_id=v["id"],
                base_url=self.base_url,
                credential_ref=creds,
            )
            items.append(Listed(v["id"], unix(v.get("created_at")), v, job))
        last = data.get("last_id")
        more = data.get("has_more") is True and isinstance(last, str) and bool(items)
        return Page(items, last if more else None)

    # -- errors ----------------------------------------------------------------------------

    def _raise(self, resp: httpx.Response) -> None:
        if resp.status_code < 400:
            return
        err = json_body(resp).get("error") or {}
        message = str(err.get("message") or resp.reason_phrase or "error")
        code = err.get("code")
        kw: dict[str, Any] = {
            "provider": self.protocol,
            "request_id": resp.headers.get("x-request-id"),
            "status_code": resp.status_code,
        }
        kind = _classify(code, message)
        if kind == "content":
            raise ContentRejected(f"rejected by moderation: {message}", **kw)
        if kind == "quota":
            raise QuotaExhausted(message, **kw)
        raise error_for_status(
            resp.status_code,
            message,
            provider=self.protocol,
            request_id=kw["request_id"],
            retry_after=retry_after_seconds(resp.headers),
        )

    # -- contract --------------------------------------------------------------------------

    async def submit(
        self, request: VideoRequest, offering: Offering, *, idempotency_key: str
    ) -> ProviderJob:
        headers = self._headers(tuple(offering.credential_env))
        headers["Idempotency-Key"] = idempotency_key
        resp = await send(
            self.client,
            "POST",
            f"{self.base_url}/videos",
            provider=self.protocol,
            create=True,
            json=self.body(request, offering),
            headers=headers,
        )
        self._raise(resp)
        data = json_body(resp)
        remote_id = data.get("id")
        if not isinstance(remote_id, str) or not remote_id:
            raise ProviderProtocolError(
                "create answered without a video id",
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

    async def poll(self, job: ProviderJob) -> RemoteStatus:
        resp = await send(
            self.client,
            "GET",
            f"{job.base_url}/videos/{job.remote_id}",
            provider=self.protocol,
            headers=self._headers(job.credential_ref),
        )
        self._raise(resp)
        data = json_body(resp)
        raw = str(data.get("status"))
        state = status_table(STATUS, raw, self.protocol)
        hint = resp.headers.get("openai-poll-after-ms")
        poll_after = float(hint) / 1000.0 if hint and hint.isdigit() else None
        progress = data.get("progress")
        error: VidgateError | None = None
        if state is RemoteState.FAILED:
            e = data.get("error") or {}
            msg = str(e.get("message") or "generation failed")
            kind = _classify(e.get("code"), msg)
            rid = resp.headers.get("x-request-id")
            if kind == "content":
                error = ContentRejected(
                    f"rejected by moderation: {msg}", provider=self.protocol, request_id=rid
                )
            elif kind == "quota":
                error = QuotaExhausted(msg, provider=self.protocol, request_id=rid)
            else:
                # A generation that failed inside the provider may well succeed elsewhere.
                error = ProviderUnavailable(
                    f"generation failed: {msg}", provider=self.protocol, request_id=rid
                )
        return RemoteStatus(
            state=state,
            raw=raw,
            progress=float(progress) / 100.0 if isinstance(progress, int | float) else None,
            error=error,
            poll_after_s=poll_after,
        )

    async def fetch(self, job: ProviderJob) -> list[RemoteAsset]:
        headers = self._headers(job.credential_ref)
        headers["Accept"] = "application/binary"
        return [
            RemoteAsset(
                url=f"{job.base_url}/videos/{job.remote_id}/content",
                content_type="video/mp4",
                headers=headers,
            )
        ]
