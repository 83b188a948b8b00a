"""Replicate predictions protocol (shared/reference/provider-apis.md §8).

One protocol serves every Replicate-hosted video model; what differs per model is its input
schema, which is catalog data (the offering's ``adapter_options``), not code:

* ``input.<role>: <field>`` names the model's input field for a request attribute (``""``: the
  model has no such input). Roles and their defaults are :data:`DEFAULT_FIELDS`. A key may be
  narrowed to one mode with ``@<mode>``, e.g. ``input.aspect_ratio@image-to-video: ""``.
* ``format.duration`` (``int`` | ``number`` | ``string`` | ``seconds`` = ``"5s"``) and
  ``format.resolution`` (``tier`` = ``"720p"`` | ``size`` = ``"1280x720"``).
* ``const.<field>: <JSON literal>`` is sent on every create (``const.enhance_prompt: "false"``).
* ``model.<mode>`` / ``model.<mode>.<resolution>`` pick another Replicate model for that mode or
  resolution (Replicate splits Wan by task and resolution); ``version`` pins a version id.

Wire facts (digest §8, checked against replicate-python-beta's generated client and the
2025-10-16 changelog): create is ``POST /v1/models/{owner}/{name}/predictions`` (official
models) or ``POST /v1/predictions`` with ``version`` (``<64-hex>`` or ``owner/name:<64-hex>``);
the answer carries ``urls.get``/``urls.cancel``, which we pin and use for every follow-up call.
We never send ``Prefer: wait`` (a held create is a long, ambiguous request); a deadline goes in
``Cancel-After`` (e.g. ``90s``): Replicate then ends the prediction as ``aborted`` if it had not
started (not billed) or ``canceled`` if it had. Errors are RFC 7807 problem details
(``title``/``detail``/``status``); a failed prediction has an ``error`` string. ``output`` is a
URI string (or a list of them) deleted one hour after the prediction ends. Replicate documents
no idempotency key, so none is sent; the create goes out exactly once.

Confirmed beyond the digest (official client docstrings, the changelog, and real response
bodies quoted in public issues): ``version`` may be ``owner/name:<id>``; ``Cancel-After`` takes
durations such as ``1m``/``90s``, and ``aborted`` predictions are not billed; 401 is
``{"title": "Unauthenticated", "detail": "You did not pass a valid authentication token"}``;
402 is ``{"title": "Insufficient credit", ...}``; schema errors are 422 ``Input validation
failed`` with ``invalid_fields``; content-filter failures read "flagged as sensitive ... (E005)"
or "NSFW". The exact minimum of ``Cancel-After`` and a request-id header are UNCONFIRMED.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import httpx

from vidgate.catalog.schema import Offering
from vidgate.errors import (
    CapabilityMismatch,
    ConfigError,
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
    ReportedCost,
    error_for_status,
    register,
    retry_after_seconds,
    status_table,
)
from vidgate.providers.lookup import Listed, Listing, Page, unix
from vidgate.providers.options import OptionField, mapped, passed, priced, url
from vidgate.types import ReferenceRole, VideoRequest

STATUS: dict[str, RemoteState] = {
    "starting": RemoteState.QUEUED,
    "processing": RemoteState.RUNNING,
    "succeeded": RemoteState.SUCCEEDED,
    "failed": RemoteState.FAILED,
    "canceled": RemoteState.CANCELED,
    # Cancel-After passed before the prediction started (2025-10 changelog): not billed.
    "aborted": RemoteState.CANCELED,
}

CREDENTIAL = "REPLICATE_API_TOKEN"

#: request attribute -> the model input field it goes to, unless the offering says otherwise.
#: These are the names Replicate's official video models use (google/veo-3-fast: prompt,
#: aspect_ratio, duration, image, negative_prompt, resolution, generate_audio, seed; veo-3.1
#: adds last_frame and reference_images). "" means "not sent".
DEFAULT_FIELDS: dict[str, str] = {
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "seed": "seed",
    "duration": "duration",
    "aspect_ratio": "aspect_ratio",
    "resolution": "resolution",
    "audio": "generate_audio",
    "fps": "",
    "num_frames": "",
    "first_frame": "image",
    "last_frame": "last_frame",
    "subject": "",
    "style": "",
    "source_video": "",
    "audio_reference": "",
}
#: reference roles whose input is a list of URLs rather than one URL
_LIST_ROLES = {ReferenceRole.SUBJECT, ReferenceRole.STYLE}
_VERSION_ID = re.compile(r"^[0-9a-f]{64}$")
_OPTION_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv")
# Replicate's content filters answer in words, not codes: "NSFW content detected", "The input
# or output was flagged as sensitive. Please try again with different inputs. (E005)".
_MODERATION_MARKERS = (
    "nsfw",
    "flagged",
    "as sensitive",
    "sensitive content",
    "(e005)",
    "content policy",
    "moderation",
    "safety filter",
    "unsafe content",
)
# 402 {"title": "Insufficient credit", ...}; monthly spend limits read the same way.
_QUOTA_MARKERS = ("insufficient credit", "spend limit", "billing", "out of credit")
_PROGRESS = re.compile(r"(\d{1,3})%\|")


def _classify(message: str) -> str | None:
    text = message.lower()
    if any(m in text for m in _MODERATION_MARKERS):
        return "content"
    if any(m in text for m in _QUOTA_MARKERS):
        return "quota"
    return None


def cancel_after_header(request: VideoRequest, now: datetime | None = None) -> str | None:
    """The ``Cancel-After`` value for a request's deadline or latency limit (whole seconds,
    rounded up, at least 1 s), or None when the request sets neither."""
    c = request.constraints
    limits: list[float] = []
    if c.deadline is not None:
        deadline = c.deadline if c.deadline.tzinfo else c.deadline.replace(tzinfo=UTC)
        limits.append((deadline - (now or datetime.now(UTC))).total_seconds())
    if c.max_latency_s is not None:
        limits.append(c.max_latency_s)
    if not limits:
        return None
    return f"{max(1, math.ceil(min(limits)))}s"


def output_urls(output: Any) -> list[str]:
    """The file URLs in a prediction's ``output`` (a URI string, a list, or a mapping)."""
    if isinstance(output, str):
        found = [output]
    elif isinstance(output, list):
        found = [u for u in output if isinstance(u, str)]
    elif isinstance(output, dict):
        found = [u for u in output.values() if isinstance(u, str)]
    else:
        found = []
    urls = [u for u in found if u.startswith(("https://", "http://"))]
    videos = [u for u in urls if urlsplit(u).path.lower().endswith(_VIDEO_SUFFIXES)]
    return videos or urls


def progress_from_logs(logs: Any) -> float | None:
    """Replicate has no progress field; Cog models print tqdm bars (`` 45%|####``)."""
    if not isinstance(logs, str):
        return None
    found = _PROGRESS.findall(logs)
    return min(100, int(found[-1])) / 100.0 if found else None


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


def _literal(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


@register
class Replicate(Provider):
    protocol: ClassVar[str] = "replicate"
    #: provider_options fields (providers/options.py) common to Replicate's video models; the
    #: input names an offering fills from the request come from its catalog data
    option_fields: ClassVar[Mapping[str, OptionField]] = {
        "go_fast": passed(bool),
        "prompt_optimizer": passed(bool),
        "enhance_prompt": passed(bool),
        "disable_safety_checker": passed(bool),
        "image": url(),
        "start_image": url(),
        "end_image": url(),
        "last_frame": url(),
        "first_frame_image": url(),
        "last_frame_image": url(),
        "video": url(),
        "audio": url(),
    }

    @classmethod
    def option_fields_for(cls, offering: Offering) -> dict[str, OptionField]:
        """Refuse every input this offering fills from the request (``input.<role>``, defaults
        in DEFAULT_FIELDS) or fixes (``const.<field>``), over the shared table."""
        pairs = list(DEFAULT_FIELDS.items())
        fixed: dict[str, OptionField] = {}
        for key, value in offering.adapter_options.items():
            if key.startswith("input."):
                pairs.append((key[len("input.") :].split("@", 1)[0], value.strip()))
            elif key.startswith("const."):
                fixed[key[len("const.") :]] = priced(f"the offering ({offering.id} fixes it)")
        return {**cls.option_fields, **mapped(pairs), **fixed}

    default_base_url: ClassVar[str] = "https://api.replicate.com/v1"
    supports_cancel: ClassVar[bool] = True
    # §8: Standard Webhooks; secret from GET /v1/webhooks/default/secret
    callback_scheme: ClassVar[str | None] = "standard-webhooks"
    callback_secret_env: ClassVar[str | None] = "REPLICATE_WEBHOOK_SECRET"

    def _headers(self, creds: tuple[str, ...]) -> dict[str, str]:
        name = creds[0] if creds else CREDENTIAL
        return {"Authorization": f"Bearer {self.credentials.get(name)}"}

    # -- mapping ---------------------------------------------------------------------------

    @staticmethod
    def _opt(offering: Offering, key: str, mode: str, default: str | None = None) -> str | None:
        opts = offering.adapter_options
        return opts.get(f"{key}@{mode}", opts.get(key, default))

    def field(self, offering: Offering, role: str, mode: str) -> str:
        return self._opt(offering, f"input.{role}", mode, DEFAULT_FIELDS[role]) or ""

    def model_ref(self, request: VideoRequest, offering: Offering) -> str:
        """The Replicate model (or ``owner/name:version``) serving this mode and resolution."""
        opts = offering.adapter_options
        mode, res = request.mode.value, request.resolution.value
        return (
            opts.get(f"model.{mode}.{res}")
            or opts.get(f"model.{mode}")
            or offering.provider_model_id
        )

    def create_path(self, ref: str, offering: Offering) -> tuple[str, dict[str, Any]]:
        """Where the create goes and the body fields that name the model (§8)."""
        if ":" in ref or _VERSION_ID.match(ref):
            return "/predictions", {"version": ref}
        version = offering.adapter_options.get("version")
        if version and ref == offering.provider_model_id:
            return "/predictions", {"version": version}
        owner, _, name = ref.partition("/")
        if not owner or not name or "/" in name:
            raise ConfigError(f"{offering.id}: Replicate model {ref!r} is not owner/name")
        return f"/models/{quote(owner, safe='')}/{quote(name, safe='')}/predictions", {}

    def build_input(self, request: VideoRequest, offering: Offering) -> dict[str, Any]:
        """The model's ``input`` object; raises what the wire cannot express."""
        caps = offering.capabilities
        mode = request.mode.value
        opts = offering.adapter_options

        def f(role: str) -> str:
            return self.field(offering, role, mode)

        def cannot(what: str) -> CapabilityMismatch:
            return CapabilityMismatch(
                f"{offering.id} ({self.model_ref(request, offering)}) has no input for {what}",
                provider=self.protocol,
            )

        inp: dict[str, Any] = {
            key[len("const.") :]: _literal(raw)
            for key, raw in opts.items()
            if key.startswith("const.")
        }
        if not f("prompt"):
            raise ConfigError(f"{offering.id}: adapter_options input.prompt is empty")
        inp[f("prompt")] = request.prompt
        if request.negative_prompt:
            if not f("negative_prompt"):
                raise cannot("a negative prompt")
            inp[f("negative_prompt")] = request.negative_prompt
        if request.seed is not None:
            if not f("seed"):
                raise cannot("a seed")
            inp[f("seed")] = request.seed

        duration = caps.durations.nearest(request.duration_s)
        fps = request.fps if request.fps in caps.fps else (caps.fps or [24])[0]
        if f("duration"):
            inp[f("duration")] = self._duration_value(duration, opts.get("format.duration"))
        if f("fps"):
            inp[f("fps")] = fps
        if f("num_frames"):
            inp[f("num_frames")] = max(1, round(duration * fps))
        if not f("duration") and not f("num_frames"):
            spec = caps.durations
            fixed = spec.values[0] if spec.values else float(spec.min or 0)
            if abs(duration - fixed) > 1e-6:
                raise cannot(f"the duration ({duration:g} s; the model makes {fixed:g} s)")
        if f("aspect_ratio"):
            inp[f("aspect_ratio")] = request.aspect_ratio
        if f("resolution"):
            w, h = request.frame_size
            size_form = opts.get("format.resolution") == "size"
            inp[f("resolution")] = f"{w}x{h}" if size_form else request.resolution.value
        if caps.audio == "optional":
            want = caps.audio_generated(request.audio) is True
            if f("audio"):
                inp[f("audio")] = want
            elif want:
                raise cannot("turning audio on")

        for role in ReferenceRole:
            refs = [r.url for r in request.references if r.role is role]
            if not refs:
                continue
            name = f("audio_reference" if role is ReferenceRole.AUDIO else role.value)
            if not name:
                raise cannot(f"a {role.value} reference")
            if role in _LIST_ROLES:
                inp[name] = refs
            elif len(refs) > 1:
                raise cannot(f"more than one {role.value} reference")
            else:
                # Replicate takes HTTP URLs or data URLs for file inputs (§8, SDK docstring).
                inp[name] = refs[0]

        extra = request.provider_options.get(offering.provider) or {}
        if not isinstance(extra, dict):
            raise InvalidRequest(
                f"provider_options.{offering.provider} must be an object of model inputs",
                provider=self.protocol,
            )
        for key, value in extra.items():
            if not isinstance(key, str) or not _OPTION_KEY.match(key):
                raise InvalidRequest(
                    f"provider_options.{offering.provider}: {key!r} is not an input name",
                    provider=self.protocol,
                )
            if key in inp and f"const.{key}" not in opts:
                raise InvalidRequest(
                    f"provider_options.{offering.provider}.{key} is set by the request itself "
                    "(prompt, duration, size, references...); change it there",
                    provider=self.protocol,
                )
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                raise InvalidRequest(
                    f"provider_options.{offering.provider}.{key} is not JSON",
                    provider=self.protocol,
                ) from None
            inp[key] = value
        return inp

    @staticmethod
    def _duration_value(seconds: float, form: str | None) -> Any:
        if form == "number":
            return seconds
        if form == "string":
            return f"{seconds:g}"
        if form == "seconds":
            return f"{seconds:g}s"
        return round(seconds)

    def check(self, request: VideoRequest, offering: Offering) -> None:
        self.create_path(self.model_ref(request, offering), offering)
        self.build_input(request, offering)

    # -- errors ----------------------------------------------------------------------------

    def _raise(self, resp: httpx.Response, *, prediction_id: str | None = None) -> None:
        if resp.status_code < 400:
            return
        body = json_body(resp)
        parts = [str(body[k]).strip() for k in ("title", "detail") if body.get(k)]
        message = ": ".join(parts) or resp.reason_phrase or f"HTTP {resp.status_code}"
        request_id = resp.headers.get("x-request-id") or prediction_id
        kw: dict[str, Any] = {
            "provider": self.protocol,
            "request_id": request_id,
            "status_code": resp.status_code,
        }
        kind = _classify(message)
        if kind == "content" and resp.status_code < 500:
            raise ContentRejected(f"rejected by Replicate's content filter: {message}", **kw)
        if kind == "quota" or resp.status_code == 402:
            raise QuotaExhausted(message, **kw)
        raise error_for_status(
            resp.status_code,
            message,
            provider=self.protocol,
            request_id=request_id,
            retry_after=retry_after_seconds(resp.headers),
        )

    def _failure(self, data: dict[str, Any], prediction_id: str) -> VidgateError:
        message = str(data.get("error") or "prediction failed")
        kw: dict[str, Any] = {"provider": self.protocol, "request_id": prediction_id}
        kind = _classify(message)
        if kind == "content":
            return ContentRejected(f"rejected by Replicate's content filter: {message}", **kw)
        if kind == "quota":
            return QuotaExhausted(message, **kw)
        # A model that failed inside Replicate may well succeed on another offering.
        return ProviderUnavailable(f"generation failed: {message}", **kw)

    # -- contract --------------------------------------------------------------------------

    async def submit(
        self, request: VideoRequest, offering: Offering, *, idempotency_key: str
    ) -> ProviderJob:
        ref = self.model_ref(request, offering)
        path, body = self.create_path(ref, offering)
        body["input"] = self.build_input(request, offering)
        headers = self._headers(tuple(offering.credential_env))
        cancel_after = cancel_after_header(request)
        if cancel_after is not None:
            headers["Cancel-After"] = cancel_after
        # No idempotency header: Replicate documents none (§8), and an unknown header buys
        # nothing. ``idempotency_key`` stays the attempt's own key in vidgate's job store.
        resp = await send(
            self.client,
            "POST",
            self.base_url + path,
            provider=self.protocol,
            create=True,
            json=body,
            headers=headers,
        )
        self._raise(resp)
        data = json_body(resp)
        remote_id = data.get("id")
        if not isinstance(remote_id, str) or not remote_id:
            raise ProviderProtocolError(
                "create answered without a prediction id",
                provider=self.protocol,
                request_id=resp.headers.get("x-request-id"),
            )
        extra = {"model": ref}
        urls = data.get("urls")
        urls = urls if isinstance(urls, dict) else {}
        for key in ("get", "cancel"):
            url = urls.get(key)
            # Pin only URLs on the API host we called: the bearer token goes to them.
            if isinstance(url, str) and _origin(url) == _origin(self.base_url):
                extra[key] = url
        return ProviderJob(
            protocol=self.protocol,
            offering_id=offering.id,
            remote_id=remote_id,
            base_url=self.base_url,
            credential_ref=tuple(offering.credential_env),
            extra=extra,
        )

    # -- reconciliation by lookup (providers/lookup.py): §8 ``GET /v1/predictions`` -------

    #: cursor-paged, newest first. Visibility: a prediction is a database row the create
    #: returns, so the list shows it at once; 5 s of margin (UNCONFIRMED by the docs).
    listing: ClassVar[Listing | None] = Listing(visibility_s=5.0)

    def listed_inputs(
        self, request: VideoRequest, offering: Offering, *, idempotency_key: str
    ) -> dict[str, Any]:
        # the prediction echoes its ``input`` exactly as sent (deleted after an hour, which
        # is far outside any attempt's window)
        return self.build_input(request, offering)

    async def list_page(self, offering: Offering, cursor: str | None) -> Page:
        url = cursor or f"{self.base_url}/predictions"
        if _origin(url) != _origin(self.base_url):
            # the bearer token goes only to the API host we were configured with
            raise ProviderProtocolError(
                f"list cursor {url!r} leaves {self.base_url}", provider=self.protocol
            )
        creds = tuple(offering.credential_env)
        resp = await send(
            self.client, "GET", url, provider=self.protocol, headers=self._headers(creds)
        )
        self._raise(resp)
        data = json_body(resp)
        items: list[Listed] = []
        for p in data.get("results") or []:
            if not isinstance(p, dict) or not isinstance(p.get("id"), str):
                continue
            raw_urls, raw_input = p.get("urls"), p.get("input")
            urls = raw_urls if isinstance(raw_urls, dict) else {}
            extra = {"model": str(p.get("model") or offering.provider_model_id)}
            for key in ("get", "cancel"):
                u = urls.get(key)
                if isinstance(u, str) and _origin(u) == _origin(self.base_url):
                    extra[key] = u
            job = ProviderJob(
                protocol=self.protocol,
                offering_id=offering.id,
                remote_id=p["id"],
                base_url=self.base_url,
                credential_ref=creds,
                extra=extra,
            )
            inputs = raw_input if isinstance(raw_input, dict) else {}
            items.append(Listed(p["id"], unix(p.get("created_at")), inputs, job))
        nxt = data.get("next")
        return Page(items, nxt if isinstance(nxt, str) and nxt else None)

    def _get_url(self, job: ProviderJob) -> str:
        return job.extra.get("get") or f"{job.base_url}/predictions/{quote(job.remote_id)}"

    async def _get(self, job: ProviderJob) -> dict[str, Any]:
        resp = await send(
            self.client,
            "GET",
            self._get_url(job),
            provider=self.protocol,
            headers=self._headers(job.credential_ref),
        )
        self._raise(resp, prediction_id=job.remote_id)
        return json_body(resp)

    async def poll(self, job: ProviderJob) -> RemoteStatus:
        data = await self._get(job)
        raw = str(data.get("status"))
        state = status_table(STATUS, raw, self.protocol)
        error = self._failure(data, job.remote_id) if state is RemoteState.FAILED else None
        progress = 1.0 if state is RemoteState.SUCCEEDED else progress_from_logs(data.get("logs"))
        # Time-priced hardware bills `metrics.predict_time` seconds (an offering with
        # usd_per_hardware_second settles on it; output-priced official models ignore it).
        metrics = data.get("metrics")
        seconds = metrics.get("predict_time") if isinstance(metrics, dict) else None
        reported = None
        if state.terminal and isinstance(seconds, int | float) and not isinstance(seconds, bool):
            reported = ReportedCost(float(seconds), "hardware_seconds", "metrics.predict_time")
        return RemoteStatus(
            state=state, raw=raw, progress=progress, error=error, reported_cost=reported
        )

    async def fetch(self, job: ProviderJob) -> list[RemoteAsset]:
        data = await self._get(job)
        if data.get("status") != "succeeded":
            raise ProviderProtocolError(
                f"prediction {job.remote_id} is {data.get('status')!r}, not succeeded",
                provider=self.protocol,
                request_id=job.remote_id,
            )
        urls = output_urls(data.get("output"))
        if not urls:
            if data.get("data_removed"):
                raise NotFound(
                    f"Replicate deleted the output of {job.remote_id}: files of API predictions "
                    "are kept for one hour",
                    provider=self.protocol,
                    request_id=job.remote_id,
                )
            raise ProviderProtocolError(
                f"prediction {job.remote_id} succeeded without an output URL",
                provider=self.protocol,
                request_id=job.remote_id,
            )
        return [
            RemoteAsset(
                url=url,
                content_type="video/mp4" if urlsplit(url).path.endswith(".mp4") else None,
                headers=self._download_headers(url, job),
            )
            for url in urls
        ]

    def _download_headers(self, url: str, job: ProviderJob) -> dict[str, str]:
        # Output files live on replicate.delivery (the API docs say to send the token); never
        # hand the token to any other host.
        host = _origin(url)[1]
        trusted = host == "replicate.delivery" or host.endswith(".replicate.delivery")
        if trusted or _origin(url) == _origin(job.base_url):
            return self._headers(job.credential_ref)
        return {}

    async def cancel(self, job: ProviderJob) -> None:
        url = job.extra.get("cancel") or f"{job.base_url}/predictions/{quote(job.remote_id)}/cancel"
        resp = await send(
            self.client,
            "POST",
            url,
            provider=self.protocol,
            headers=self._headers(job.credential_ref),
        )
        self._raise(resp, prediction_id=job.remote_id)
