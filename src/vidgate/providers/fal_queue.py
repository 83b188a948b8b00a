"""fal.ai queue protocol: one adapter for any fal model id (provider-apis.md §7).

``POST {base}/{model_id}`` with ``Authorization: Key <FAL_KEY>`` queues a request; the answer
carries ``request_id`` and the ``status_url``, ``response_url`` and ``cancel_url`` of that
request. Those URLs are built by fal from the *app* (``owner/alias``, no sub-path), so rebuilding
them from a model id such as ``fal-ai/kling-video/v3/pro/text-to-video`` goes wrong; they are
pinned in ``ProviderJob.extra`` and every follow-up call uses only them. Statuses are
``IN_QUEUE``/``IN_PROGRESS``/``COMPLETED``; a failed run is ``COMPLETED`` too, and only the
result endpoint tells success from failure (4xx/5xx with ``detail``), so ``poll`` asks it once
the queue says ``COMPLETED``. ``PUT cancel_url`` cancels. fal documents no idempotency or dedup
header (provider-apis §7: "No idempotency support"), so the create is sent exactly once and an
ambiguous one is parked for reconciliation by the runner.

Each fal model has its own input schema, so the mapping is catalog data, not code. An
offering's ``adapter_options`` (all strings) say, per endpoint:

* endpoints: ``image_to_video``, ``first_last_frame``, ``reference_to_video`` (subject, style or
  audio references), ``extend``, ``video_to_video``, and ``<mode>_<resolution>`` (e.g.
  ``text_to_video_1080p``) where fal serves a resolution from its own endpoint.
  ``provider_model_id`` serves the offering's first mode.
* fields, optionally scoped to one endpoint key as ``<key>.<option>``: ``duration_field``
  (``duration``; empty: the endpoint has none), ``duration_format`` (``string`` "5", ``int`` 5,
  ``seconds_suffix`` "5s"), ``durations`` (what this endpoint takes, e.g. "6"),
  ``resolution_field`` (empty: the endpoint makes ``resolution``, default the first declared),
  ``resolution_map`` (e.g. ``4k=2160p``), ``aspect_ratio_field`` (``aspect_ratio``; empty: none),
  ``audio_field`` (e.g. ``generate_audio``), ``image_field`` (``image_url``),
  ``last_image_field``, ``frames_field`` (first and last frame as one list),
  ``subject_field``, ``audio_ref_field``, ``video_field``, ``fps_field``,
  ``negative_prompt_field``, ``seed_field``, ``prompt_field``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx

from vidgate.catalog.schema import Offering
from vidgate.errors import (
    AmbiguousSubmission,
    CapabilityMismatch,
    ContentRejected,
    InvalidRequest,
    NotFound,
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
from vidgate.providers.options import OptionField, mapped, passed, priced, url
from vidgate.types import Mode, ReferenceRole, Resolution, VideoRequest

STATUS: dict[str, RemoteState] = {
    "IN_QUEUE": RemoteState.QUEUED,
    "IN_PROGRESS": RemoteState.RUNNING,
    # Not yet success: a failed run is COMPLETED as well (provider-apis §7); poll() asks the
    # result endpoint before reporting SUCCEEDED.
    "COMPLETED": RemoteState.SUCCEEDED,
}
#: answers of PUT cancel_url (provider-apis §7 "Cancel"; fal docs "Cancel a request")
CANCEL_ACCEPTED = frozenset({"OK", "CANCELLATION_REQUESTED"})
CANCEL_TOO_LATE = frozenset({"ALREADY_COMPLETED"})
CANCEL_UNKNOWN_REQUEST = frozenset({"NOT_FOUND"})
#: fal's "Request Errors" error_type for a request its client cancelled (HTTP 499)
CANCELLED_ERROR_TYPE = "client_cancelled"

#: adapter_options key of each mode's endpoint: text_to_video, image_to_video, ...
MODE_KEYS: dict[Mode, str] = {m: m.value.replace("-", "_") for m in Mode}
REFERENCE_KEY = "reference_to_video"
ROUTE_KEYS = frozenset([*MODE_KEYS.values(), REFERENCE_KEY])
DURATION_FORMATS = ("string", "int", "seconds_suffix")
#: provider options that would break the contract: output inline as a data URI instead of a
#: downloadable URL, or a second prompt
_FORBIDDEN_OPTIONS = frozenset({"sync_mode", "prompt"})

# fal "Model Errors" types and messages that mean moderation, and billing-lock answers
# ("User is locked. Reason: Exhausted balance. Top up your balance ...", HTTP 403).
_MODERATION_MARKERS = "content_policy|content policy|content checker|nsfw|safety|moderation|flagged"
_QUOTA_MARKERS = "exhausted balance|top up|top_up|insufficient|billing|quota"


# --- per-offering wire options ---------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One fal endpoint of an offering, with the options that shape its input."""

    endpoint: str
    #: option scopes, most specific first (e.g. ``image_to_video_1080p``, ``image_to_video``)
    scopes: tuple[str, ...]
    offering: Offering

    def opt(self, name: str, default: str = "") -> str:
        options = self.offering.adapter_options
        for scope in self.scopes:
            value = options.get(f"{scope}.{name}")
            if value is not None:
                return value.strip()
        return options.get(name, default).strip()

    @property
    def key(self) -> str:
        return self.scopes[-1]

    @property
    def native_resolution(self) -> Resolution:
        """What the endpoint makes when the request cannot name a resolution."""
        head = self.scopes[0]
        if head != self.key:
            return Resolution.parse(head[len(self.key) + 1 :])
        value = self.opt("resolution")
        return Resolution.parse(value) if value else self.offering.capabilities.resolutions[0]

    @property
    def durations(self) -> list[float] | None:
        value = self.opt("durations")
        return [float(v) for v in value.split(",") if v.strip()] if value else None

    @property
    def resolution_map(self) -> dict[str, str]:
        pairs = [p.split("=", 1) for p in self.opt("resolution_map").split(",") if "=" in p]
        return {Resolution.parse(k).value: v.strip() for k, v in pairs}


def routes(offering: Offering) -> dict[str, Route]:
    """Every fal endpoint an offering names, by endpoint id."""
    out: dict[str, Route] = {}
    base = MODE_KEYS[offering.capabilities.modes[0]]
    out[offering.provider_model_id] = Route(offering.provider_model_id, (base,), offering)
    for name, endpoint in offering.adapter_options.items():
        if "." in name:
            continue
        if name in ROUTE_KEYS:
            out.setdefault(endpoint, Route(endpoint, (name,), offering))
            continue
        key, _, res = name.rpartition("_")
        if key in ROUTE_KEYS and res in {r.value for r in Resolution}:
            out.setdefault(endpoint, Route(endpoint, (name, key), offering))
    return out


def format_duration(seconds: float, fmt: str) -> str | int:
    if fmt == "int":
        return round(seconds)
    if fmt == "seconds_suffix":
        return f"{seconds:g}s"
    return f"{seconds:g}"


def app_id(endpoint: str) -> str:
    """``owner/alias`` (or ``namespace/owner/alias``) of a model id: the part fal's request
    URLs keep (fal_client ``AppId.from_endpoint_id``)."""
    parts = endpoint.strip("/").split("/")
    return "/".join(parts[:3] if parts[0] in ("workflows", "comfy") else parts[:2])


# --- error bodies -----------------------------------------------------------------------------


def error_detail(resp: httpx.Response) -> tuple[str, str]:
    """(human message, machine types) of a fal error body: ``detail`` is a string, a FastAPI
    validation list ``[{loc, msg, type}]`` or an object; ``error_type`` may sit in the body or
    in the ``x-fal-error-type`` header (fal docs "Model Errors", "Request Errors")."""
    body = json_body(resp)
    detail = body.get("detail")
    messages: list[str] = []
    types = [str(body.get("error_type") or resp.headers.get("x-fal-error-type") or "")]
    if isinstance(detail, str):
        messages.append(detail)
    elif isinstance(detail, list):
        for item in detail:
            if isinstance(item, dict):
                loc = item.get("loc")
                where = str(loc[-1]) if isinstance(loc, list) and loc else ""
                msg = str(item.get("msg") or "")
                messages.append(f"{where}: {msg}" if where and where != "body" else msg)
                types.append(str(item.get("type") or ""))
    elif isinstance(detail, dict):
        messages.append(str(detail.get("message") or detail.get("msg") or ""))
        types.append(str(detail.get("error") or detail.get("type") or ""))
    message = "; ".join(m for m in messages if m) or resp.reason_phrase or "error"
    return message, " ".join(t for t in types if t)


def classify(types: str, message: str) -> str | None:
    text = f"{types} {message}".lower()
    if any(m in text for m in _MODERATION_MARKERS.split("|")):
        return "content"
    if any(m in text for m in _QUOTA_MARKERS.split("|")):
        return "quota"
    return None


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


@register
class FalQueue(Provider):
    protocol: ClassVar[str] = "fal-queue"
    #: provider_options fields (providers/options.py) every fal model shares; the input names
    #: an offering fills from the request come from its catalog data (option_fields_for)
    option_fields: ClassVar[Mapping[str, OptionField]] = {
        "sync_mode": priced("nothing: vidgate always polls the queue"),
        "image_url": url(),
        "end_image_url": url(),
        "tail_image_url": url(),
        "last_image_url": url(),
        "video_url": url(),
        "audio_url": url(),
        "image_urls": passed(list),
        "cfg_scale": passed(int, float),
        "enable_prompt_expansion": passed(bool),
        "enable_safety_checker": passed(bool),
        "prompt_optimizer": passed(bool),
        "camera_fixed": passed(bool),
    }

    @classmethod
    def option_fields_for(cls, offering: Offering) -> dict[str, OptionField]:
        """Refuse every input name this offering fills from the request (``*_field`` in its
        adapter_options, any endpoint scope), over the shared table."""
        pairs = [
            ("prompt", "prompt"),
            ("duration", "duration"),
            ("aspect_ratio", "aspect_ratio"),
            ("negative_prompt", "negative_prompt"),
            ("seed", "seed"),
        ]
        for key, value in offering.adapter_options.items():
            name = key.rsplit(".", 1)[-1]
            if name.endswith("_field"):
                pairs.append((name[: -len("_field")], value.strip()))
        return {**cls.option_fields, **mapped(pairs)}

    default_base_url: ClassVar[str] = "https://queue.fal.run"
    supports_cancel: ClassVar[bool] = True
    # §7: fal signs callbacks with Ed25519 over id/user/timestamp/sha256(body)
    callback_scheme: ClassVar[str | None] = "ed25519-jwks"
    callback_id_fields: ClassVar[tuple[str, ...]] = ("request_id",)
    callback_jwks_url: ClassVar[str | None] = "https://rest.alpha.fal.ai/.well-known/jwks.json"
    callback_signature_headers: ClassVar[tuple[str, str, str, str] | None] = (
        "X-Fal-Webhook-Request-Id",
        "X-Fal-Webhook-User-Id",
        "X-Fal-Webhook-Timestamp",
        "X-Fal-Webhook-Signature",
    )

    # -- credentials -----------------------------------------------------------------------

    def _key_header(self, creds: tuple[str, ...]) -> dict[str, str]:
        name = creds[0] if creds else "FAL_KEY"
        # The scheme is literally "Key", not "Bearer" (provider-apis §7).
        return {"Authorization": f"Key {self.credentials.get(name)}"}

    def _trusted(self, url: str, base_url: str) -> bool:
        """The key only goes to the host the job was created on, or fal's own queue host."""
        return url.startswith(("https://", "http://")) and _origin(url) in {
            _origin(base_url),
            _origin(self.default_base_url),
        }

    def _pinned(self, job: ProviderJob, name: str) -> str:
        url = job.extra.get(name)
        if not url:
            raise ProviderProtocolError(
                f"fal job {job.remote_id} has no pinned {name}", provider=self.protocol
            )
        if not self._trusted(url, job.base_url):
            raise ProviderProtocolError(
                f"refusing to send the fal key to {_origin(url)} ({name} of {job.remote_id})",
                provider=self.protocol,
                request_id=job.remote_id,
            )
        return url

    # -- mapping ---------------------------------------------------------------------------

    def _mismatch(self, offering: Offering, why: str) -> CapabilityMismatch:
        return CapabilityMismatch(f"{offering.id} on fal: {why}", provider=self.protocol)

    def route_for(self, request: VideoRequest, offering: Offering) -> Route:
        roles = request.reference_roles()
        extra = roles & {ReferenceRole.SUBJECT, ReferenceRole.STYLE, ReferenceRole.AUDIO}
        key = REFERENCE_KEY if extra else MODE_KEYS[request.mode]
        options = offering.adapter_options
        scoped = f"{key}_{request.resolution.value}"
        if scoped in options:
            return Route(options[scoped], (scoped, key), offering)
        if key in options:
            return Route(options[key], (key,), offering)
        if key == MODE_KEYS[offering.capabilities.modes[0]]:
            return Route(offering.provider_model_id, (key,), offering)
        raise self._mismatch(offering, f"no fal endpoint for {key.replace('_', '-')}")

    def build(self, request: VideoRequest, offering: Offering) -> tuple[Route, dict[str, Any]]:
        """The endpoint and input JSON for a request; CapabilityMismatch for what the
        endpoint's input cannot express. Pure: no network."""
        route = self.route_for(request, offering)
        caps = offering.capabilities
        body: dict[str, Any] = {route.opt("prompt_field", "prompt"): request.prompt}

        seconds = caps.durations.nearest(request.duration_s)
        allowed = route.durations
        if allowed is not None and not any(abs(a - seconds) < 1e-6 for a in allowed):
            takes = ", ".join(f"{a:g}" for a in allowed)
            raise self._mismatch(offering, f"{route.endpoint} makes {takes} s, not {seconds:g} s")
        fmt = route.opt("duration_format", "string")
        if fmt not in DURATION_FORMATS:
            raise self._mismatch(offering, f"unknown duration_format {fmt!r}")
        if field := route.opt("duration_field", "duration"):
            body[field] = format_duration(seconds, fmt)

        if field := route.opt("resolution_field"):
            res = request.resolution.value
            body[field] = route.resolution_map.get(res, res)
        elif request.resolution is not route.native_resolution:
            raise self._mismatch(
                offering,
                f"{route.endpoint} makes {route.native_resolution.value} only, "
                f"not {request.resolution.value}",
            )

        if field := route.opt("aspect_ratio_field", "aspect_ratio"):
            body[field] = request.aspect_ratio
        elif route.key == "text_to_video" and request.aspect_ratio != caps.aspect_ratios[0]:
            raise self._mismatch(offering, f"{route.endpoint} makes {caps.aspect_ratios[0]} only")

        if request.fps is not None:
            if field := route.opt("fps_field"):
                body[field] = request.fps
            elif request.fps != (caps.fps or [24])[0]:
                raise self._mismatch(offering, f"{route.endpoint} has no frame-rate field")

        audio = caps.audio_generated(request.audio)
        if audio is None:
            raise self._mismatch(offering, "no native audio")
        if field := route.opt("audio_field"):
            body[field] = audio
        elif audio and caps.audio == "optional":
            raise self._mismatch(offering, "no audio switch (audio_field) is configured")

        self._references(request, offering, route, body)
        if request.negative_prompt and caps.negative_prompt:
            body[route.opt("negative_prompt_field", "negative_prompt")] = request.negative_prompt
        if request.seed is not None and caps.seed:
            body[route.opt("seed_field", "seed")] = request.seed
        body.update(self._provider_options(request, offering))
        return route, body

    def _references(
        self, request: VideoRequest, offering: Offering, route: Route, body: dict[str, Any]
    ) -> None:
        def urls(*roles: ReferenceRole) -> list[str]:
            return [r.url for r in request.references if r.role in roles]

        def field_for(option: str, default: str, what: str) -> str:
            field = route.opt(option, default)
            if not field:
                raise self._mismatch(offering, f"{route.endpoint} takes no {what}")
            return field

        # URLs and data: URLs alike: fal endpoints take either (fal docs, e.g. LTX-2 image_url
        # "publicly accessible or base64 data URI").
        first = urls(ReferenceRole.FIRST_FRAME)[:1]
        last = urls(ReferenceRole.LAST_FRAME)[:1]
        if (first or last) and (frames := route.opt("frames_field")):
            body[frames] = first + last
        else:
            if first:
                default = "" if route.key == "text_to_video" else "image_url"
                body[field_for("image_field", default, "first frame")] = first[0]
            if last:
                body[field_for("last_image_field", "", "last frame")] = last[0]
        if subjects := urls(ReferenceRole.SUBJECT, ReferenceRole.STYLE):
            body[field_for("subject_field", "", "subject or style images")] = subjects
        if sounds := urls(ReferenceRole.AUDIO):
            body[field_for("audio_ref_field", "", "audio references")] = sounds
        if videos := urls(ReferenceRole.SOURCE_VIDEO)[:1]:
            body[field_for("video_field", "", "source video")] = videos[0]

    def _provider_options(self, request: VideoRequest, offering: Offering) -> dict[str, Any]:
        extra = request.provider_options.get(offering.provider, {})
        bad = sorted(set(extra) & _FORBIDDEN_OPTIONS)
        if bad:
            raise InvalidRequest(
                f"provider_options.{offering.provider} cannot set {', '.join(bad)}",
                provider=self.protocol,
            )
        try:
            json.dumps(extra)
        except (TypeError, ValueError) as e:
            raise InvalidRequest(
                f"provider_options.{offering.provider} must be plain JSON: {e}",
                provider=self.protocol,
            ) from None
        return dict(extra)

    def check(self, request: VideoRequest, offering: Offering) -> None:
        self.build(request, offering)

    # -- errors ----------------------------------------------------------------------------

    def _raise(self, resp: httpx.Response, request_id: str | None = None) -> None:
        if resp.status_code < 400:
            return
        message, types = error_detail(resp)
        rid = resp.headers.get("x-fal-request-id") or request_id
        kw: dict[str, Any] = {"provider": self.protocol, "request_id": rid}
        kw["status_code"] = resp.status_code
        kind = classify(types, message)
        if kind == "content":
            raise ContentRejected(f"rejected by fal's content checker: {message}", **kw)
        if kind == "quota":
            raise QuotaExhausted(message, **kw)
        raise error_for_status(
            resp.status_code,
            message,
            provider=self.protocol,
            request_id=rid,
            retry_after=retry_after_seconds(resp.headers),
        )

    def _generation_error(self, resp: httpx.Response, job: ProviderJob, note: str) -> VidgateError:
        """The error of a run whose result endpoint answered 4xx/5xx."""
        message, types = error_detail(resp)
        kw: dict[str, Any] = {"provider": self.protocol, "request_id": job.remote_id}
        kw["status_code"] = resp.status_code
        text = f"{message} ({note})" if note else message
        kind = classify(types, message)
        if kind == "content":
            return ContentRejected(f"rejected by fal's content checker: {text}", **kw)
        if kind == "quota":
            return QuotaExhausted(text, **kw)
        retryable = resp.headers.get("x-fal-retryable", "").lower() == "true"
        if resp.status_code >= 500 or retryable:
            # A run that failed inside the model may well succeed elsewhere.
            return ProviderUnavailable(f"generation failed: {text}", **kw)
        # 4xx: the model refused this input (fal validates inputs when the run starts).
        return InvalidRequest(f"fal refused the input: {text}", **kw)

    @staticmethod
    def _cancelled(resp: httpx.Response) -> bool:
        _, types = error_detail(resp)
        return resp.status_code == 499 or CANCELLED_ERROR_TYPE in types

    @staticmethod
    def _transient(resp: httpx.Response) -> bool:
        """Errors of the call itself, not of the run: rate limits, auth, and ingress 5xx (no
        ``x-fal-request-id``: fal_client's ``_is_ingress_error``)."""
        code = resp.status_code
        ingress = code >= 500 and "x-fal-request-id" not in resp.headers
        return code in (401, 403, 404, 408, 429) or ingress

    # -- contract --------------------------------------------------------------------------

    async def submit(
        self, request: VideoRequest, offering: Offering, *, idempotency_key: str
    ) -> ProviderJob:
        # fal has no idempotency or dedup header (provider-apis §7), so idempotency_key has
        # nowhere to go: the create is sent once and never repeated here.
        route, body = self.build(request, offering)
        creds = tuple(offering.credential_env) or ("FAL_KEY",)
        resp = await send(
            self.client,
            "POST",
            f"{self.base_url}/{route.endpoint}",
            provider=self.protocol,
            create=True,
            json=body,
            headers=self._key_header(creds),
        )
        self._raise(resp)
        data = json_body(resp)
        rid = data.get("request_id")
        if not isinstance(rid, str) or not rid:
            raise AmbiguousSubmission(
                "fal accepted the request without a request_id; it may exist",
                provider=self.protocol,
                request_id=resp.headers.get("x-fal-request-id"),
            )
        extra = {"endpoint": route.endpoint}
        for name in ("status_url", "response_url", "cancel_url"):
            url = data.get(name)
            if not isinstance(url, str) or not self._trusted(url, self.base_url):
                # The request exists (and may bill); without fal's own URL for it we cannot
                # follow it, and rebuilding the URL is the known failure. Park it.
                raise AmbiguousSubmission(
                    f"fal request {rid} came back with an unusable {name}: {url!r}",
                    provider=self.protocol,
                    request_id=rid,
                )
            extra[name] = url
        return ProviderJob(
            protocol=self.protocol,
            offering_id=offering.id,
            remote_id=rid,
            base_url=self.base_url,
            credential_ref=creds,
            extra=extra,
        )

    async def _follow(self, job: ProviderJob, method: str, name: str) -> httpx.Response:
        """A follow-up call to one of the URLs fal returned for this job, and only those."""
        url = self._pinned(job, name)
        headers = self._key_header(job.credential_ref)
        return await send(self.client, method, url, provider=self.protocol, headers=headers)

    async def poll(self, job: ProviderJob) -> RemoteStatus:
        resp = await self._follow(job, "GET", "status_url")
        self._raise(resp, job.remote_id)
        data = json_body(resp)
        raw = str(data.get("status"))
        state = status_table(STATUS, raw, self.protocol)
        if state is not RemoteState.SUCCEEDED:
            return RemoteStatus(state=state, raw=raw)
        if data.get("error_type") == CANCELLED_ERROR_TYPE:
            return RemoteStatus(state=RemoteState.CANCELED, raw=raw)
        result = await self._follow(job, "GET", "response_url")
        if result.status_code < 400:
            return RemoteStatus(state=RemoteState.SUCCEEDED, raw=raw, progress=1.0)
        if self._cancelled(result):
            return RemoteStatus(state=RemoteState.CANCELED, raw=raw)
        if self._transient(result):
            self._raise(result, job.remote_id)
        note = str(data.get("error") or "")
        error = self._generation_error(result, job, note)
        return RemoteStatus(state=RemoteState.FAILED, raw=raw, error=error)

    async def fetch(self, job: ProviderJob) -> list[RemoteAsset]:
        resp = await self._follow(job, "GET", "response_url")
        self._raise(resp, job.remote_id)
        assets = [
            # fal's CDN links are public: the fal key is never sent there.
            RemoteAsset(url=url, content_type=ctype or "video/mp4")
            for url, ctype in video_files(json_body(resp))
        ]
        if not assets:
            raise ProviderProtocolError(
                f"fal result for {job.remote_id} has no video URL",
                provider=self.protocol,
                request_id=job.remote_id,
            )
        return assets

    async def cancel(self, job: ProviderJob) -> None:
        resp = await self._follow(job, "PUT", "cancel_url")
        answer = json_body(resp).get("status")
        if answer in CANCEL_TOO_LATE:
            return  # it already ended; the next poll reports how
        if answer in CANCEL_UNKNOWN_REQUEST:
            raise NotFound(
                f"fal does not know request {job.remote_id}",
                provider=self.protocol,
                request_id=job.remote_id,
                status_code=resp.status_code,
            )
        self._raise(resp, job.remote_id)
        if answer is not None and answer not in CANCEL_ACCEPTED:
            raise ProviderProtocolError(
                f"unknown cancel answer {answer!r} from fal", provider=self.protocol
            )


def video_files(result: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """(url, content type) of the videos in a model's output: ``video: {url}`` for most fal
    video models, ``videos: [{url}]`` or ``video_url`` for a few."""
    files: list[Any] = []
    if isinstance(result.get("video"), dict):
        files.append(result["video"])
    if isinstance(result.get("videos"), list):
        files.extend(result["videos"])
    if isinstance(result.get("video_url"), str):
        files.append({"url": result["video_url"]})
    out: list[tuple[str, str | None]] = []
    for f in files:
        url = f.get("url") if isinstance(f, dict) else None
        if isinstance(url, str) and url.startswith(("https://", "http://")):
            ctype = f.get("content_type")
            out.append((url, ctype if isinstance(ctype, str) else None))
    return out
