"""Kling AI official API (Kuaishou developer platform).

Wire details: shared/reference/provider-apis.md §6. ``POST /v1/videos/text2video`` or
``/v1/videos/image2video`` creates; the task is read back with ``GET`` on the *same* path plus
``/{task_id}``, so the create path is pinned in ``ProviderJob.extra["endpoint"]``. Every answer
is the envelope ``{code, message, request_id, data}``; a non-zero ``code`` is an error even
when the HTTP status is 200. Auth is a short-lived HS256 JWT: ``iss`` = Access Key, signed
with the Secret Key, ``exp`` = now + 1800 s, ``nbf`` = now - 5 s, sent as a bearer token. We
mint a fresh token for every request, so one never expires between calls.

Confirmed beyond the digest (read in public material, not copied): the mirrored "General
Information" page (inference-sh/grid ``api/klingai/docs/00-general.md``) gives the same JWT
claims and error-code table; a recorded real exchange shows ``"message": "SUCCEED"`` on
success, ``task_info: {}`` when no external id was sent, ``task_result: {}`` while processing
and a video ``duration`` of ``"5.1"`` for a 5 s request. Still UNCONFIRMED: the mapping of
std/pro to 720p/1080p (third-party price pages only), the exact ``task_status_msg`` texts, and
what a duplicate ``external_task_id`` answers (the docs only say it must be unique).

``duration`` is a string; ``image``/``image_tail`` take a URL or raw base64 *without* a
``data:`` prefix; the output URLs are plain CDN links (no auth), kept 30 days. There is no
cancel endpoint.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
import jwt

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
from vidgate.providers.options import OptionField, passed, priced, url
from vidgate.settings import Credentials
from vidgate.types import AudioMode, Mode, ReferenceRole, VideoRequest

# provider-apis.md §6 "Poll": note "succeed", not "succeeded".
STATUS: dict[str, RemoteState] = {
    "submitted": RemoteState.QUEUED,
    "processing": RemoteState.RUNNING,
    "succeed": RemoteState.SUCCEEDED,
    "failed": RemoteState.FAILED,
}

ACCESS_KEY_ENV = "KLING_ACCESS_KEY"
SECRET_KEY_ENV = "KLING_SECRET_KEY"
TOKEN_TTL_S = 1800  # provider-apis.md §6 "Auth": exp = now + 1800
TOKEN_NBF_SKEW_S = 5  # nbf = now - 5, so a slightly fast provider clock still accepts it

ENDPOINTS = ("text2video", "image2video")

# Envelope codes, provider-apis.md §6 "Errors" (HTTP status / code).
_AUTH_CODES = {1000, 1001, 1002, 1003, 1004, 1100, 1103, 1304}  # 1100 account, 1304 IP list
_QUOTA_CODES = {1101, 1102}  # arrears, resource pack exhausted
_CONTENT_CODES = {1300, 1301}  # platform policy, content safety
_RATE_CODES = {1302, 1303}  # rate limit, concurrency over the resource pack's limit
_SERVER_CODES = {5000, 5001, 5002}  # internal, maintenance, timeout

# task_status_msg wording is not documented; these cover "risk control" style refusals.
_MODERATION_MARKERS = ("risk", "safety", "security", "sensitive", "policy", "moderat", "violat")

# provider-apis.md §6 "Create": aspect_ratio values and the prompt limits.
ASPECT_RATIOS = ("16:9", "9:16", "1:1")
MAX_PROMPT_CHARS = 2500
IMAGE_MIMES = ("image/png", "image/jpeg", "image/jpg")
MAX_IMAGE_BYTES = 10 * 1024 * 1024
# No resolution field: quality is chosen with mode std | pro. UNCONFIRMED mapping (third-party
# price lists: "720p Standard to 1080p Pro"); an offering may override it with
# adapter_options["modes"] = "720p=std,1080p=pro".
DEFAULT_MODES = {"720p": "std", "1080p": "pro"}

# request.provider_options["kling"]: the documented create fields vidgate does not set itself.
_OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "cfg_scale": (int, float),
    "camera_control": (dict,),
    "multi_shot": (bool,),
    "shot_type": (str,),
    "multi_prompt": (list,),
    "watermark_info": (dict,),
    "callback_url": (str,),
    "voice_list": (list,),
    "static_mask": (str,),
    "dynamic_masks": (list,),
}
_IMAGE2VIDEO_ONLY = {"voice_list", "static_mask", "dynamic_masks"}
_CAMERA_TYPES = {"simple", "down_back", "forward_up", "right_turn_forward", "left_turn_forward"}


def modes_for(offering: Offering) -> dict[str, str]:
    """Resolution tier → Kling ``mode`` for this offering."""
    raw = offering.adapter_options.get("modes")
    if not raw:
        return dict(DEFAULT_MODES)
    pairs = (item.split("=", 1) for item in raw.split(",") if "=" in item)
    return {res.strip(): mode.strip() for res, mode in pairs}


def _is_moderation(message: str) -> bool:
    text = message.lower()
    return any(m in text for m in _MODERATION_MARKERS)


def raw_base64(url: str) -> str:
    """Kling takes an image URL, or base64 with no ``data:`` prefix (§6 "Create")."""
    return url.split(",", 1)[1] if url.startswith("data:") else url


def _check_image(url: str, what: str, provider: str) -> None:
    if not url.startswith("data:"):
        return  # a URL: the provider checks format and size itself
    mime = url[5:].split(";", 1)[0].lower()
    if mime not in IMAGE_MIMES:
        raise CapabilityMismatch(
            f"kling takes jpg/jpeg/png images; the {what} is {mime or 'untyped'}",
            provider=provider,
        )
    if len(raw_base64(url)) * 3 // 4 > MAX_IMAGE_BYTES:
        raise CapabilityMismatch(
            f"kling takes images up to 10 MB; the {what} is larger", provider=provider
        )


def _validate_options(options: dict[str, Any], endpoint: str, provider: str) -> None:
    def bad(msg: str) -> InvalidRequest:
        return InvalidRequest(f"provider_options.kling: {msg}", provider=provider)

    for key, value in options.items():
        types = _OPTION_TYPES.get(key)
        if types is None:
            raise bad(f"unknown option {key!r}; known: {', '.join(sorted(_OPTION_TYPES))}")
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            raise bad(f"{key} must be {' or '.join(t.__name__ for t in types)}")
        if key in _IMAGE2VIDEO_ONLY and endpoint != "image2video":
            raise bad(f"{key} applies to image-to-video only")
    if "cfg_scale" in options and not 0 <= float(options["cfg_scale"]) <= 1:
        raise bad("cfg_scale must be within 0..1")
    if options.get("shot_type", "customize") not in ("customize", "intelligence"):
        raise bad("shot_type must be customize or intelligence")
    if len(options.get("multi_prompt", [])) > 6:
        raise bad("multi_prompt takes at most 6 shots")
    if not str(options.get("callback_url", "https://")).startswith(("https://", "http://")):
        raise bad("callback_url must be an http(s) URL")
    camera = options.get("camera_control")
    if camera is not None and camera.get("type") not in _CAMERA_TYPES:
        raise bad(f"camera_control.type must be one of {', '.join(sorted(_CAMERA_TYPES))}")


@register
class Kling(Provider):
    protocol: ClassVar[str] = "kling"
    #: provider_options fields (providers/options.py); §6. ``callback_url`` is called by Kling,
    #: so it obeys the SSRF rules; masks may be URLs and are scanned as every value is.
    option_fields: ClassVar[Mapping[str, OptionField]] = {
        "cfg_scale": passed(int, float),
        "camera_control": passed(dict),
        "multi_shot": passed(bool),
        "shot_type": passed(str),
        "multi_prompt": passed(list),
        "watermark_info": passed(dict),
        "callback_url": url(),
        "voice_list": passed(list),
        "static_mask": passed(str),
        "dynamic_masks": passed(list),
        "image": priced("references"),
        "image_tail": priced("references"),
        "external_task_id": priced("Idempotency-Key (vidgate sends it as external_task_id)"),
    }
    default_base_url: ClassVar[str] = "https://api-singapore.klingai.com"
    supports_cancel: ClassVar[bool] = False  # §6: no cancel/delete endpoint
    callback_scheme: ClassVar[str | None] = "token"  # §6: callback_url, unsigned
    callback_id_fields: ClassVar[tuple[str, ...]] = ("task_id", "data.task_id")

    def __init__(
        self,
        *,
        client: httpx.AsyncClient,
        credentials: Credentials,
        base_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(client=client, credentials=credentials, base_url=base_url)
        self._overridden = base_url is not None
        self.clock = clock

    # -- auth ------------------------------------------------------------------------------

    def token(self, creds: tuple[str, ...]) -> str:
        """A fresh JWT (§6 "Auth"). Built per request from the named credentials; never kept."""
        ak_name = creds[0] if creds else ACCESS_KEY_ENV
        sk_name = creds[1] if len(creds) > 1 else SECRET_KEY_ENV
        access_key = self.credentials.get(ak_name)
        secret_key = self.credentials.get(sk_name)
        now = int(self.clock())
        claims = {"iss": access_key, "exp": now + TOKEN_TTL_S, "nbf": now - TOKEN_NBF_SKEW_S}
        with warnings.catch_warnings():
            # The secret's length is Kling's choice, not ours (PyJWT warns below 32 bytes).
            warnings.filterwarnings("ignore", message=".*HMAC key.*")
            return jwt.encode(claims, secret_key, algorithm="HS256", headers={"typ": "JWT"})

    def _headers(self, creds: tuple[str, ...]) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(creds)}"}

    # -- mapping ---------------------------------------------------------------------------

    @staticmethod
    def endpoint_for(request: VideoRequest) -> str:
        roles = request.reference_roles()
        if request.mode is Mode.TEXT_TO_VIDEO and not roles:
            return "text2video"
        return "image2video"

    def mode_for(self, request: VideoRequest, offering: Offering) -> str:
        modes = modes_for(offering)
        mode = modes.get(request.resolution.value)
        if mode is None:
            raise CapabilityMismatch(
                f"{offering.id} has no mode for {request.resolution.value}; "
                f"it renders {', '.join(sorted(modes))} (mode std|pro)",
                provider=self.protocol,
            )
        return mode

    def duration_for(self, request: VideoRequest, offering: Offering) -> str:
        seconds = offering.capabilities.durations.nearest(request.duration_s)
        if abs(seconds - round(seconds)) > 1e-9:
            raise CapabilityMismatch(
                f"kling takes whole seconds; {offering.id} would be asked for {seconds:g}s",
                provider=self.protocol,
            )
        return str(round(seconds))  # a string on the wire (§6 "Create")

    def check(self, request: VideoRequest, offering: Offering) -> None:
        p = self.protocol
        endpoint = self.endpoint_for(request)
        if len(request.prompt) > MAX_PROMPT_CHARS:
            raise CapabilityMismatch(
                f"kling takes prompts up to {MAX_PROMPT_CHARS} characters", provider=p
            )
        if request.negative_prompt and len(request.negative_prompt) > MAX_PROMPT_CHARS:
            raise CapabilityMismatch(
                f"kling takes negative prompts up to {MAX_PROMPT_CHARS} characters", provider=p
            )
        if request.mode not in (Mode.TEXT_TO_VIDEO, Mode.IMAGE_TO_VIDEO, Mode.FIRST_LAST_FRAME):
            raise CapabilityMismatch(f"kling cannot do {request.mode.value} here", provider=p)
        roles = [r.role for r in request.references]
        allowed = {ReferenceRole.FIRST_FRAME, ReferenceRole.LAST_FRAME}
        if set(roles) - allowed or len(roles) != len(set(roles)):
            raise CapabilityMismatch(
                "kling's image2video takes one first frame (image) and one last frame "
                "(image_tail), nothing else",
                provider=p,
            )
        for ref in request.references:
            _check_image(ref.url, ref.role.value.replace("_", " "), p)
        if endpoint == "text2video" and request.aspect_ratio not in ASPECT_RATIOS:
            raise CapabilityMismatch(
                f"kling's aspect_ratio is one of {', '.join(ASPECT_RATIOS)}, "
                f"not {request.aspect_ratio}",
                provider=p,
            )
        if request.audio is AudioMode.REQUIRED and offering.capabilities.audio == "never":
            raise CapabilityMismatch(f"{offering.id} generates no sound", provider=p)
        self.mode_for(request, offering)
        self.duration_for(request, offering)
        options = request.provider_options.get(offering.provider, {})
        _validate_options(options, endpoint, p)
        exclusive = {"camera_control", "static_mask", "dynamic_masks"} & set(options)
        if ReferenceRole.LAST_FRAME in roles and exclusive:
            # §6: image_tail, masks and camera_control are mutually exclusive.
            raise InvalidRequest(
                f"kling cannot combine a last frame with {', '.join(sorted(exclusive))}",
                provider=p,
            )

    def body(
        self, request: VideoRequest, offering: Offering, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        endpoint = self.endpoint_for(request)
        body: dict[str, Any] = {
            "model_name": offering.provider_model_id,
            "prompt": request.prompt,
            "mode": self.mode_for(request, offering),
            "duration": self.duration_for(request, offering),
        }
        if request.negative_prompt:
            body["negative_prompt"] = request.negative_prompt
        if offering.capabilities.audio != "never":
            body["sound"] = "on" if offering.capabilities.audio_generated(request.audio) else "off"
        if endpoint == "text2video":
            body["aspect_ratio"] = request.aspect_ratio
        else:  # image2video: the output follows the image's aspect ratio
            for ref in request.references:
                field = "image" if ref.role is ReferenceRole.FIRST_FRAME else "image_tail"
                body[field] = raw_base64(ref.url)
        if idempotency_key:
            # Unique per account and queryable in place of task_id: our dedupe key (§6).
            body["external_task_id"] = idempotency_key
        body.update(request.provider_options.get(offering.provider, {}))
        return body

    # -- errors ----------------------------------------------------------------------------

    def _raise(self, resp: httpx.Response) -> dict[str, Any]:
        """The envelope's ``data`` on success; otherwise the mapped error is raised."""
        envelope = json_body(resp)
        code = envelope.get("code")
        if isinstance(code, str) and code.isdigit():
            code = int(code)
        if resp.status_code < 400 and code == 0:
            data = envelope.get("data")
            return data if isinstance(data, dict) else {}
        message = str(envelope.get("message") or resp.reason_phrase or "error")
        rid = envelope.get("request_id") or resp.headers.get("x-request-id")
        kw: dict[str, Any] = {
            "provider": self.protocol,
            "request_id": str(rid) if rid else None,
            "status_code": resp.status_code,
            "details": {"kling_code": code} if code is not None else None,
        }
        if isinstance(code, int):
            text = f"{message} (kling code {code})"
            if code in _CONTENT_CODES:
                raise ContentRejected(f"rejected by Kling's content policy: {message}", **kw)
            if code in _QUOTA_CODES:
                raise QuotaExhausted(text, **kw)
            if code in _RATE_CODES:
                raise RateLimited(text, retry_after=retry_after_seconds(resp.headers), **kw)
            if code in _AUTH_CODES:
                raise AuthFailed(text, **kw)
            if code in _SERVER_CODES:
                raise ProviderUnavailable(text, **kw)
            message = text
        if resp.status_code < 400 and code is None:
            raise ProviderProtocolError(
                "kling answered without an envelope code", **{**kw, "details": None}
            )
        status = resp.status_code if resp.status_code >= 400 else 400
        err = error_for_status(
            status,
            message,
            provider=self.protocol,
            request_id=kw["request_id"],
            retry_after=retry_after_seconds(resp.headers),
        )
        err.status_code = resp.status_code
        if code is not None:
            err.details["kling_code"] = code
        raise err

    # -- contract --------------------------------------------------------------------------

    def _base_for(self, offering: Offering) -> str:
        # An offering may pin its region's host (api-beijing for China keys) unless the
        # gateway pointed the adapter elsewhere (sandbox, VIDGATE_KLING_BASE_URL).
        pinned = offering.adapter_options.get("base_url")
        return pinned.rstrip("/") if pinned and not self._overridden else self.base_url

    async def submit(
        self, request: VideoRequest, offering: Offering, *, idempotency_key: str
    ) -> ProviderJob:
        self.check(request, offering)
        creds = tuple(offering.credential_env) or (ACCESS_KEY_ENV, SECRET_KEY_ENV)
        base_url = self._base_for(offering)
        endpoint = self.endpoint_for(request)
        resp = await send(
            self.client,
            "POST",
            f"{base_url}/v1/videos/{endpoint}",
            provider=self.protocol,
            create=True,
            json=self.body(request, offering, idempotency_key=idempotency_key),
            headers=self._headers(creds),
        )
        data = self._raise(resp)
        task_id = data.get("task_id")
        if not isinstance(task_id, str | int) or isinstance(task_id, bool) or not str(task_id):
            raise ProviderProtocolError(
                "kling's create answered without a task_id",
                provider=self.protocol,
                request_id=str(json_body(resp).get("request_id") or "") or None,
            )
        host = urlsplit(base_url).hostname or ""
        region = next((r for r in ("singapore", "beijing") if f"api-{r}." in host), None)
        return ProviderJob(
            protocol=self.protocol,
            offering_id=offering.id,
            remote_id=str(task_id),
            base_url=base_url,
            credential_ref=creds,
            region=region,
            extra={"endpoint": endpoint, "external_task_id": idempotency_key},
        )

    can_find: ClassVar[bool] = True

    async def find(
        self, request: VideoRequest, offering: Offering, idempotency_key: str
    ) -> ProviderJob | None:
        """Reconcile an ambiguous create: Kling lets a task be read by the
        ``external_task_id`` we sent (our idempotency key) in place of its task_id."""
        creds = tuple(offering.credential_env) or (ACCESS_KEY_ENV, SECRET_KEY_ENV)
        base_url = self._base_for(offering)
        endpoint = self.endpoint_for(request)
        resp = await send(
            self.client,
            "GET",
            f"{base_url}/v1/videos/{endpoint}/{idempotency_key}",
            provider=self.protocol,
            headers=self._headers(creds),
        )
        if resp.status_code == 404 and json_body(resp).get("code") == 1203:
            return None  # Kling has no task with our key: the create never landed
        data = self._raise(resp)
        task_id = data.get("task_id")
        if not task_id:
            raise ProviderProtocolError(
                "kling's task lookup answered without a task_id", provider=self.protocol
            )
        return ProviderJob(
            protocol=self.protocol,
            offering_id=offering.id,
            remote_id=str(task_id),
            base_url=base_url,
            credential_ref=creds,
            extra={"endpoint": endpoint, "external_task_id": idempotency_key},
        )

    def _task_url(self, job: ProviderJob) -> str:
        endpoint = job.extra.get("endpoint", "")
        if endpoint not in ENDPOINTS:
            raise ProviderProtocolError(
                f"kling job {job.remote_id} has no pinned endpoint ({endpoint!r})",
                provider=self.protocol,
            )
        return f"{job.base_url}/v1/videos/{endpoint}/{job.remote_id}"

    async def _task(self, job: ProviderJob) -> tuple[dict[str, Any], str | None]:
        resp = await send(
            self.client,
            "GET",
            self._task_url(job),
            provider=self.protocol,
            headers=self._headers(job.credential_ref),
        )
        data = self._raise(resp)
        rid = json_body(resp).get("request_id")
        return data, str(rid) if rid else None

    async def poll(self, job: ProviderJob) -> RemoteStatus:
        data, rid = await self._task(job)
        raw = str(data.get("task_status"))
        state = status_table(STATUS, raw, self.protocol)
        error: VidgateError | None = None
        if state is RemoteState.FAILED:
            msg = str(data.get("task_status_msg") or "generation failed")
            if _is_moderation(msg):
                error = ContentRejected(
                    f"rejected by Kling's content policy: {msg}",
                    provider=self.protocol,
                    request_id=rid,
                )
            else:
                # A generation that failed inside Kling may well succeed elsewhere.
                error = ProviderUnavailable(
                    f"generation failed: {msg}", provider=self.protocol, request_id=rid
                )
        return RemoteStatus(state=state, raw=raw, error=error)

    async def fetch(self, job: ProviderJob) -> list[RemoteAsset]:
        data, rid = await self._task(job)
        result = data.get("task_result") or {}
        videos = result.get("videos") if isinstance(result, dict) else None
        urls = [v["url"] for v in videos or [] if isinstance(v, dict) and v.get("url")]
        if not urls:
            raise ProviderProtocolError(
                f"kling task {job.remote_id} ({data.get('task_status')}) has no video url",
                provider=self.protocol,
                request_id=rid,
            )
        # Plain CDN links: no auth header (and never the JWT: it is not the CDN's business).
        return [RemoteAsset(url=u, content_type="video/mp4") for u in urls]
