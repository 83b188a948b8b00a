"""BytePlus ModelArk video-generation tasks: ByteDance Seedance (provider-apis.md §9b).

``POST /api/v3/contents/generations/tasks`` takes a ``content`` array (one ``text`` item and
``image_url`` / ``video_url`` / ``audio_url`` items with roles) and answers ``{"id": "cgt-..."}``;
``GET .../tasks/{id}`` answers the task, ``queued`` → ``running`` → ``succeeded`` with
``content.video_url`` (a plain URL kept 24 h), or ``failed`` / ``expired`` / ``cancelled``.
``DELETE .../tasks/{id}`` cancels a *queued* task (and deletes a finished task's record).
Ark has no idempotency key, so the create goes out once and an ambiguous one is reconciled.

Confirmed beyond the digest in the official BytePlus API reference (mirrored in the code
index; read to learn, nothing copied): ``expired`` is an official status (tasks queued or
running past ``execution_expires_after``, default 172800 s, range [3600, 259200]); DELETE on a
queued task makes it ``cancelled``, a running one cannot be cancelled, a succeeded / failed /
expired one is deleted; parameters go either as body fields (strict validation, the
recommended way) or as ``--flags`` after the prompt (lenient, kept for Seedance 1.x);
``generate_audio`` defaults to true; image inputs may be base64 data URLs. 3P corroboration:
the error envelope ``{"error": {"code", "message", "param", "type"}}`` (e.g. 401
``AuthenticationError``/``Unauthorized``, 403 ``AccountOverdueError``, 429 ``QuotaExceeded``),
and moderation codes ``Input*SensitiveContentDetected`` / ``OutputVideoSensitiveContentDetected``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
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
from vidgate.providers.lookup import Listed, Listing, Page, correlation_seed, unix
from vidgate.providers.options import OptionField, passed, priced, url
from vidgate.settings import Credentials
from vidgate.types import Mode, ReferenceRole, Resolution, VideoRequest

# The official status list; "expired" is a remote job that ran out of time (retryable
# elsewhere), "cancelled" (two l) only ever follows a DELETE of a queued task.
STATUS: dict[str, RemoteState] = {
    "queued": RemoteState.QUEUED,
    "running": RemoteState.RUNNING,
    "succeeded": RemoteState.SUCCEEDED,
    "failed": RemoteState.FAILED,
    "cancelled": RemoteState.CANCELED,
    "expired": RemoteState.FAILED,
}

ENV = "ARK_API_KEY"
#: §9b ratio values (``adaptive`` only through provider_options: it is not a frame shape)
WIRE_RATIOS = frozenset({"16:9", "9:16", "1:1", "4:3", "3:4", "21:9"})
#: §9b: 480p/720p/1080p (+4k on 2.0 standard); the offering lists what its model takes
WIRE_RESOLUTIONS = frozenset(
    {Resolution.R480P, Resolution.R720P, Resolution.R1080P, Resolution.R4K}
)
#: role → (content item type, wire role)
CONTENT_ROLES: dict[ReferenceRole, tuple[str, str]] = {
    ReferenceRole.FIRST_FRAME: ("image_url", "first_frame"),
    ReferenceRole.LAST_FRAME: ("image_url", "last_frame"),
    ReferenceRole.SUBJECT: ("image_url", "reference_image"),
    ReferenceRole.SOURCE_VIDEO: ("video_url", "reference_video"),
    ReferenceRole.AUDIO: ("audio_url", "reference_audio"),
}
_FRAME_ROLES = {ReferenceRole.FIRST_FRAME, ReferenceRole.LAST_FRAME}
#: legacy text commands (official "--[parameter]" form) for the fields that have one
FLAG_NAMES = {
    "resolution": "resolution",
    "ratio": "ratio",
    "duration": "duration",
    "seed": "seed",
    "camera_fixed": "camerafixed",
    "watermark": "watermark",
}
#: provider_options["byteplus"] keys passed through, with their JSON types
OPTIONS: dict[str, type] = {
    "watermark": bool,
    "camera_fixed": bool,
    "return_last_frame": bool,
    "draft": bool,
    "service_tier": str,
    "execution_expires_after": int,
    "callback_url": str,
    "ratio": str,
}
_REQUEST_ID_IN_MESSAGE = re.compile(r"Request id:\s*([0-9A-Za-z\-]+)")
_REGION_IN_HOST = re.compile(r"//ark\.([a-z0-9\-]+)\.bytepluses\.com")
_QUOTA_CODES = ("QuotaExceeded", "AccountOverdue", "SetLimitExceeded", "InsufficientBalance")


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _classify(code: str | None, message: str) -> str | None:
    code = code or ""
    if "SensitiveContent" in code or "sensitive information" in message.lower():
        return "content"
    if any(code.startswith(q) for q in _QUOTA_CODES):
        return "quota"
    return None


def region_of(base_url: str) -> str | None:
    """The Ark region a base URL names (``ark.<region>.bytepluses.com``), if any."""
    m = _REGION_IN_HOST.search(base_url)
    return m.group(1) if m else None


def _flag(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


@register
class BytePlusArk(Provider):
    protocol: ClassVar[str] = "byteplus-ark"
    #: provider_options fields (providers/options.py); §9b. The service tier and drafts are
    #: priced apart, so they are the offering's choice, not the caller's.
    option_fields: ClassVar[Mapping[str, OptionField]] = {
        "watermark": passed(bool),
        "camera_fixed": passed(bool),
        "return_last_frame": passed(bool),
        "execution_expires_after": passed(int),
        "callback_url": url(),
        # ``adaptive`` (follow the image) has no request equivalent; the frame area and price
        # stay the resolution's
        "ratio": passed(str),
        "draft": priced("resolution 480p on a draft offering (drafts are priced apart)"),
        "service_tier": priced("an offering with that service tier (priced apart)"),
        "content": priced("prompt and references"),
    }
    default_base_url: ClassVar[str] = "https://ark.ap-southeast.bytepluses.com/api/v3"
    supports_cancel: ClassVar[bool] = True
    callback_scheme: ClassVar[str | None] = "token"  # §9b: callback_url, unsigned

    def __init__(
        self,
        *,
        client: httpx.AsyncClient,
        credentials: Credentials,
        base_url: str | None = None,
    ) -> None:
        super().__init__(client=client, credentials=credentials, base_url=base_url)
        # Ark keys are region-bound: an offering may name its region's host in
        # adapter_options.base_url, used unless the caller pinned a base URL (sandbox, override).
        self._base_url_given = base_url is not None

    def base_url_for(self, offering: Offering) -> str:
        if self._base_url_given:
            return self.base_url
        return (offering.adapter_options.get("base_url") or self.base_url).rstrip("/")

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
        problems = {
            "service_tier": raw.get("service_tier", "default") not in ("default", "flex"),
            "execution_expires_after": not 3600
            <= raw.get("execution_expires_after", 3600)
            <= 259200,
            "callback_url": not str(raw.get("callback_url", "https://")).startswith("https://"),
            "ratio": raw.get("ratio", "adaptive") not in (*WIRE_RATIOS, "adaptive"),
        }
        for key, wrong in problems.items():
            if wrong:
                raise InvalidRequest(
                    f"{offering.provider} option {key!r} has an invalid value {raw[key]!r}",
                    provider=self.protocol,
                )
        return dict(raw)

    def body(
        self, request: VideoRequest, offering: Offering, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """The create body; raises for what the wire cannot express. With the attempt's
        ``idempotency_key`` and no seed from the caller, the seed is drawn from the key
        (:func:`correlation_seed`): the task list shows the seed, never the prompt."""
        if request.negative_prompt:
            raise self._mismatch(offering, "Seedance takes no negative prompt")
        if request.mode in (Mode.EXTEND, Mode.VIDEO_TO_VIDEO):
            raise self._mismatch(offering, f"ModelArk tasks have no {request.mode.value} mode")
        roles = [r.role for r in request.references]
        if unsupported := set(roles) - set(CONTENT_ROLES):
            names = ", ".join(sorted(r.value for r in unsupported))
            raise self._mismatch(offering, f"Seedance cannot take {names} references")
        frames = [r for r in roles if r in _FRAME_ROLES]
        # Official guide: first frame, first+last frame and reference images are mutually
        # exclusive scenarios; a last frame needs a first frame; one of each at most.
        if frames and len(frames) != len(roles):
            raise self._mismatch(offering, "frame images cannot be mixed with reference inputs")
        if roles.count(ReferenceRole.FIRST_FRAME) > 1 or roles.count(ReferenceRole.LAST_FRAME) > 1:
            raise self._mismatch(offering, "at most one first frame and one last frame")
        if ReferenceRole.LAST_FRAME in roles and ReferenceRole.FIRST_FRAME not in roles:
            raise self._mismatch(offering, "a last frame needs a first frame")
        for ref in request.references:
            if ref.url.startswith("data:") and CONTENT_ROLES[ref.role][0] != "image_url":
                # Only images are documented as accepting base64 data URLs.
                raise self._mismatch(offering, f"{ref.role.value} references must be URLs")
        if request.resolution not in WIRE_RESOLUTIONS:
            raise self._mismatch(offering, f"ModelArk has no {request.resolution.value} output")
        if request.aspect_ratio not in WIRE_RATIOS:
            raise self._mismatch(offering, f"ModelArk has no ratio {request.aspect_ratio}")
        options = self._options(request, offering)
        if options.get("draft") and request.resolution is not Resolution.R480P:
            raise self._mismatch(offering, "draft mode renders 480p only")

        params: dict[str, Any] = {
            "resolution": request.resolution.value,
            "ratio": options.pop("ratio", request.aspect_ratio),
            "duration": int(offering.capabilities.durations.nearest(request.duration_s)),
        }
        if request.seed is not None:
            params["seed"] = request.seed
        elif idempotency_key is not None:
            params["seed"] = correlation_seed(idempotency_key)
        params["watermark"] = options.pop("watermark", False)  # the API default, made explicit
        if "camera_fixed" in options:
            params["camera_fixed"] = options.pop("camera_fixed")

        text = request.prompt
        # Seedance 1.x deployments may want the legacy "--flag value" text commands.
        legacy = offering.adapter_options.get("param_style") == "flags"
        if legacy:
            text += "".join(f" --{FLAG_NAMES[k]} {_flag(v)}" for k, v in params.items())
        content: list[dict[str, Any]] = [{"type": "text", "text": text}]
        for ref in request.references:
            kind, role = CONTENT_ROLES[ref.role]
            content.append({"type": kind, kind: {"url": ref.url}, "role": role})
        body: dict[str, Any] = {"model": offering.provider_model_id, "content": content}
        if not legacy:
            body.update(params)
        generated = offering.capabilities.audio_generated(request.audio)
        if offering.capabilities.audio == "optional":
            body["generate_audio"] = bool(generated)  # defaults to true: always say it
        body.update(options)
        return body

    def check(self, request: VideoRequest, offering: Offering) -> None:
        self.body(request, offering)

    # -- errors ----------------------------------------------------------------------------

    @staticmethod
    def _request_id(resp: httpx.Response, message: str) -> str | None:
        m = _REQUEST_ID_IN_MESSAGE.search(message)
        return resp.headers.get("x-request-id") or (m.group(1) if m else None)

    def _raise(self, resp: httpx.Response) -> None:
        if resp.status_code < 400:
            return
        err = _obj(json_body(resp).get("error"))
        message = str(err.get("message") or resp.text[:300] or resp.reason_phrase)
        code = str(err.get("code") or "") or None
        kw: dict[str, Any] = {
            "provider": self.protocol,
            "request_id": self._request_id(resp, message),
            "status_code": resp.status_code,
        }
        kind = _classify(code, message)
        if kind == "content":
            raise ContentRejected(f"rejected by moderation ({code}): {message}", **kw)
        if kind == "quota":
            # QuotaExceeded is a 429 at Ark, but waiting does not refill a spent quota.
            raise QuotaExhausted(f"{code}: {message}", **kw)
        raise error_for_status(
            resp.status_code,
            f"{code}: {message}" if code else message,
            provider=self.protocol,
            request_id=kw["request_id"],
            retry_after=retry_after_seconds(resp.headers),
        )

    def _failure(self, task: dict[str, Any], raw: str, rid: str) -> VidgateError:
        err = _obj(task.get("error"))
        code = str(err.get("code") or "") or None
        msg = str(err.get("message") or ("the task expired" if raw == "expired" else "failed"))
        kind = _classify(code, msg)
        if kind == "content":
            return ContentRejected(
                f"rejected by moderation ({code}): {msg}", provider=self.protocol, request_id=rid
            )
        if kind == "quota":
            return QuotaExhausted(f"{code}: {msg}", provider=self.protocol, request_id=rid)
        # Expired or failed inside the provider: another offering may well succeed.
        return ProviderUnavailable(
            f"generation {raw}: {code + ': ' if code else ''}{msg}",
            provider=self.protocol,
            request_id=rid,
        )

    # -- contract --------------------------------------------------------------------------

    async def submit(
        self, request: VideoRequest, offering: Offering, *, idempotency_key: str
    ) -> ProviderJob:
        # Ark documents no idempotency key; the key picks the seed instead, which the task
        # list shows, so a create whose answer was lost can be found there (lookup.py).
        body = self.body(request, offering, idempotency_key=idempotency_key)
        base = self.base_url_for(offering)
        resp = await send(
            self.client,
            "POST",
            f"{base}/contents/generations/tasks",
            provider=self.protocol,
            create=True,
            json=body,
            headers=self._headers(tuple(offering.credential_env)),
        )
        self._raise(resp)
        remote_id = json_body(resp).get("id")
        if not isinstance(remote_id, str) or not remote_id:
            raise ProviderProtocolError(
                "create answered without a task id",
                provider=self.protocol,
                request_id=resp.headers.get("x-request-id"),
            )
        return ProviderJob(
            protocol=self.protocol,
            offering_id=offering.id,
            remote_id=remote_id,
            base_url=base,
            credential_ref=tuple(offering.credential_env),
            region=region_of(base),
        )

    # -- reconciliation by lookup (providers/lookup.py): §9b ``GET .../tasks`` -------------

    #: page_num/page_size, newest first. A task shows its model and video parameters, not
    #: its prompt; the seed drawn from the attempt's key (when the caller fixed none) tells
    #: apart creates alike but for the prompt. Two creates with the caller's same seed and
    #: shape are both candidates (parked). Visibility: 5 s of margin (UNCONFIRMED).
    listing: ClassVar[Listing | None] = Listing(visibility_s=5.0)
    #: tasks per list page asked for (the API takes 1..500)
    list_page_size: int = 100

    def listed_inputs(
        self, request: VideoRequest, offering: Offering, *, idempotency_key: str
    ) -> dict[str, Any]:
        body = self.body(request, offering, idempotency_key=idempotency_key)
        shown = ("model", "resolution", "ratio", "duration", "seed", "generate_audio")
        return {k: body[k] for k in shown if k in body}

    async def list_page(self, offering: Offering, cursor: str | None) -> Page:
        page = int(cursor or 1)
        base = self.base_url_for(offering)
        creds = tuple(offering.credential_env)
        resp = await send(
            self.client,
            "GET",
            f"{base}/contents/generations/tasks",
            provider=self.protocol,
            params={"page_num": page, "page_size": self.list_page_size},
            headers=self._headers(creds),
        )
        self._raise(resp)
        data = json_body(resp)
        items: list[Listed] = []
        for t in data.get("items") or []:
            if not isinstance(t, dict) or not isinstance(t.get("id"), str):
                continue
            job = ProviderJob(
                protocol=self.protocol,
                offering_id=offering.id,
                remote_id=t["id"],
                base_url=base,
                credential_ref=creds,
                region=region_of(base),
            )
            items.append(Listed(t["id"], unix(t.get("created_at")), t, job))
        total = data.get("total")
        seen = (page - 1) * self.list_page_size + len(items)
        more = isinstance(total, int) and seen < total and bool(items)
        return Page(items, str(page + 1) if more else None)

    async def _task(self, job: ProviderJob) -> dict[str, Any]:
        resp = await send(
            self.client,
            "GET",
            f"{job.base_url}/contents/generations/tasks/{job.remote_id}",
            provider=self.protocol,
            headers=self._headers(job.credential_ref),
        )
        self._raise(resp)
        return json_body(resp)

    async def poll(self, job: ProviderJob) -> RemoteStatus:
        task = await self._task(job)
        raw = str(task.get("status"))
        state = status_table(STATUS, raw, self.protocol)
        if state is RemoteState.FAILED:
            return RemoteStatus(state, raw, error=self._failure(task, raw, job.remote_id))
        if state is RemoteState.SUCCEEDED:
            # Seedance is billed by output tokens: `usage.completion_tokens` (SDK Usage model)
            tokens = _obj(task.get("usage")).get("completion_tokens")
            reported = None
            if isinstance(tokens, int) and not isinstance(tokens, bool):
                reported = ReportedCost(float(tokens), "tokens", "usage.completion_tokens")
            return RemoteStatus(state, raw, progress=1.0, reported_cost=reported)
        return RemoteStatus(state, raw)

    async def fetch(self, job: ProviderJob) -> list[RemoteAsset]:
        task = await self._task(job)
        url = _obj(task.get("content")).get("video_url")
        if task.get("status") != "succeeded" or not isinstance(url, str) or not url:
            raise ProviderProtocolError(
                f"no video to fetch (status {task.get('status')!r})",
                provider=self.protocol,
                request_id=job.remote_id,
            )
        # A plain expiring URL: no auth header. A last_frame_url (PNG) is not an output video.
        return [RemoteAsset(url=url, content_type="video/mp4")]

    async def cancel(self, job: ProviderJob) -> None:
        # DELETE cancels only a queued task; on a finished one it deletes the record (and the
        # video with it), so look first and never delete what has finished.
        task = await self._task(job)
        raw = str(task.get("status"))
        state = status_table(STATUS, raw, self.protocol)
        if state.terminal:
            return
        if state is RemoteState.RUNNING:
            raise InvalidRequest(
                "ModelArk cannot cancel a running task (only queued ones)",
                provider=self.protocol,
                request_id=job.remote_id,
            )
        resp = await send(
            self.client,
            "DELETE",
            f"{job.base_url}/contents/generations/tasks/{job.remote_id}",
            provider=self.protocol,
            headers=self._headers(job.credential_ref),
        )
        self._raise(resp)
