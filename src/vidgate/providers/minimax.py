"""MiniMax (Hailuo) video API, v1.

Wire details: shared/reference/provider-apis.md §5a. ``POST /v1/video_generation`` creates (one
path for every mode; the mode follows from the fields sent), ``GET
/v1/query/video_generation?task_id=`` polls, and a finished task names a ``file_id`` that
``GET /v1/files/retrieve?file_id=`` turns into ``file.download_url``: a presigned link that
needs no auth (the retrieve call itself does). There is no cancel endpoint and no idempotency
key in v1, so an ambiguous create can only be reconciled, never replayed safely.

The trap of this API: errors usually come back as HTTP 200 with a non-zero
``base_resp.status_code`` (§5a "Errors"; MiniMax's own CLI, ``src/client/http.ts``, checks
``base_resp`` on every 200 for the same reason). Every response is therefore read for
``base_resp`` before its payload is trusted.

Confirmed beyond the digest (official material read via search, 2026):
- the error-code table at platform.minimax.io/docs/api-reference/errorcode.md (1000 unknown,
  1001 timeout, 1002 rate limit, 1004 not authorized, 1024 internal, 1026/1027 input/output
  "new_sensitive", 1033 system error, 1039 token limit, 1041 conn limit, 2013 invalid params,
  2045 rate growth limit, 2049 invalid API key, 2056 usage limit exceeded);
- MiniMax-AI/cli ``src/errors/api.ts``: 1028/1030 are quota exhausted, 2061 "model not
  available on your plan";
- MiniMax-AI/MiniMax-MCP ``server.py``: the query → ``file_id`` → ``files/retrieve`` →
  ``download_url`` chain, ``status == "Fail"``, and a plain unauthenticated download.
Request ids: MiniMax answers with a ``Trace-Id`` header (third-party reports; UNCONFIRMED).

v2 (§5b, MiniMax-H3) is not spoken here: the catalog has no H3 model or sourced price yet.
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
from vidgate.types import AudioMode, ReferenceKind, ReferenceRole, Resolution, VideoRequest

#: §5a: the query's documented strings. MiniMax's own CLI types the failure as ``Failed``
#: while the docs and the official MCP server use ``Fail``: both are accepted.
STATUS: dict[str, RemoteState] = {
    "Preparing": RemoteState.QUEUED,
    "Queueing": RemoteState.QUEUED,
    "Processing": RemoteState.RUNNING,
    "Success": RemoteState.SUCCEEDED,
    "Fail": RemoteState.FAILED,
    "Failed": RemoteState.FAILED,
}

# base_resp.status_code families (module docstring lists where each comes from).
CONTENT_CODES = frozenset({1026, 1027})
QUOTA_CODES = frozenset({1008, 1028, 1030, 2056, 2061})
RATE_CODES = frozenset({1002, 1039, 1041, 2045})
AUTH_CODES = frozenset({1004, 2049})
UNAVAILABLE_CODES = frozenset({1000, 1001, 1013, 1024, 1033})

#: §5a: ``resolution`` values of the T2V/I2V endpoints that vidgate's tiers can name.
RESOLUTIONS: dict[Resolution, str] = {
    Resolution.R720P: "720P",
    Resolution.R768P: "768P",
    Resolution.R1080P: "1080P",
}
#: §5a: ``duration`` is an integer, 6 or 10; 1080P clips are 6 s only.
DURATIONS = frozenset({6, 10})
DURATIONS_1080P = frozenset({6})
MAX_PROMPT_CHARS = 2000
#: options a caller may pass through ``provider_options["minimax"]``, with their types (§5a)
OPTIONS: dict[str, type] = {"prompt_optimizer": bool, "fast_pretreatment": bool}

_REFERENCE_FIELDS = {
    ReferenceRole.FIRST_FRAME: "first_frame_image",
    ReferenceRole.LAST_FRAME: "last_frame_image",
    ReferenceRole.SUBJECT: "subject_reference",
}


def _request_id(resp: httpx.Response) -> str | None:
    rid = resp.headers.get("trace-id") or resp.headers.get("x-request-id")
    return str(rid) if rid else None


def base_resp(data: dict[str, Any]) -> tuple[int, str]:
    """``(status_code, status_msg)`` of a response; ``(0, "")`` when it carries none."""
    base = data.get("base_resp")
    if not isinstance(base, dict):
        return 0, ""
    try:
        code = int(base.get("status_code") or 0)
    except (TypeError, ValueError):
        code = -1  # a code we cannot read is not success
    return code, str(base.get("status_msg") or "")


@register
class MiniMax(Provider):
    protocol: ClassVar[str] = "minimax"
    #: provider_options fields (providers/options.py); §5a
    option_fields: ClassVar[Mapping[str, OptionField]] = {
        "prompt_optimizer": passed(bool),
        "fast_pretreatment": passed(bool),
        "first_frame_image": priced("references"),
        "last_frame_image": priced("references"),
        "subject_reference": priced("references"),
    }
    #: §5 "Hosts": the global host; keys are region-bound (mainland China: api.minimaxi.com).
    default_base_url: ClassVar[str] = "https://api.minimax.io"
    callback_scheme: ClassVar[str | None] = "token"  # unsigned callback_url
    callback_id_fields: ClassVar[tuple[str, ...]] = ("task_id",)

    def _headers(self, creds: tuple[str, ...]) -> dict[str, str]:
        name = creds[0] if creds else "MINIMAX_API_KEY"
        return {"Authorization": f"Bearer {self.credentials.get(name)}"}

    def base_url_for(self, offering: Offering) -> str:
        """An explicit base URL (sandbox, ``VIDGATE_MINIMAX_BASE_URL``) wins; otherwise an
        offering may pin its region's host in ``adapter_options.base_url`` (keys are
        region-bound, §5 "Hosts")."""
        if self.base_url != self.default_base_url.rstrip("/"):
            return self.base_url
        return (offering.adapter_options.get("base_url") or self.base_url).rstrip("/")

    # -- mapping ---------------------------------------------------------------------------

    def _fail(self, message: str) -> CapabilityMismatch:
        return CapabilityMismatch(message, provider=self.protocol)

    def duration_for(self, request: VideoRequest, offering: Offering) -> int:
        want = offering.capabilities.durations.nearest(request.duration_s)
        if want != int(want) or int(want) not in DURATIONS:
            raise self._fail(f"MiniMax takes durations of 6 or 10 s, not {want:g} s")
        allowed = DURATIONS_1080P if request.resolution is Resolution.R1080P else DURATIONS
        if int(want) not in allowed:
            raise self._fail(
                f"{offering.id} makes {request.resolution.value} clips of 6 s only, "
                f"not {want:g} s (10 s needs 768p)"
            )
        return int(want)

    def resolution_for(self, request: VideoRequest, offering: Offering) -> str:
        wire = RESOLUTIONS.get(request.resolution)
        if wire is None or request.resolution not in offering.capabilities.resolutions:
            have = ", ".join(r.value for r in offering.capabilities.resolutions)
            raise self._fail(f"{offering.id} has no {request.resolution.value} (has {have})")
        return wire

    def options_for(self, request: VideoRequest, offering: Offering) -> dict[str, Any]:
        options = request.provider_options.get(offering.provider, {})
        for key, value in options.items():
            kind = OPTIONS.get(key)
            if kind is None:
                raise InvalidRequest(
                    f"unknown provider_options.{offering.provider}.{key}; "
                    f"known: {', '.join(sorted(OPTIONS))}",
                    provider=self.protocol,
                )
            if not isinstance(value, kind):
                raise InvalidRequest(
                    f"provider_options.{offering.provider}.{key} must be a {kind.__name__}",
                    provider=self.protocol,
                )
        return dict(options)

    def check(self, request: VideoRequest, offering: Offering) -> None:
        caps = offering.capabilities
        if request.mode not in caps.modes:
            raise self._fail(f"{offering.id} does not do {request.mode.value}")
        if len(request.prompt) > MAX_PROMPT_CHARS:
            raise self._fail(f"MiniMax takes prompts of at most {MAX_PROMPT_CHARS} characters")
        if request.negative_prompt:
            raise self._fail("the MiniMax v1 API has no negative prompt")
        if request.seed is not None:
            raise self._fail("the MiniMax v1 API takes no seed")
        if request.audio is AudioMode.REQUIRED and caps.audio == "never":
            raise self._fail(f"{offering.id} makes no audio")
        self.resolution_for(request, offering)
        self.duration_for(request, offering)
        roles = [r.role for r in request.references]
        for ref in request.references:
            if ref.role not in _REFERENCE_FIELDS or ref.role not in caps.reference_roles:
                raise self._fail(f"{offering.id} cannot take a {ref.role.value} reference")
            if ref.kind is not ReferenceKind.IMAGE:
                raise self._fail("MiniMax v1 references are images")
        for role in (ReferenceRole.FIRST_FRAME, ReferenceRole.LAST_FRAME):
            if roles.count(role) > 1:
                raise self._fail(f"MiniMax takes one {role.value} image")
        if ReferenceRole.LAST_FRAME in roles and ReferenceRole.FIRST_FRAME not in roles:
            raise self._fail("a last_frame image needs a first_frame image on MiniMax")
        # There is no ratio field: text-to-video is landscape 16:9 (§5a example 1366x768),
        # image-to-video follows the image.
        if ReferenceRole.FIRST_FRAME not in roles and request.aspect_ratio != "16:9":
            raise self._fail(f"MiniMax text-to-video is 16:9 only, not {request.aspect_ratio}")
        self.options_for(request, offering)

    def body(self, request: VideoRequest, offering: Offering) -> dict[str, Any]:
        self.check(request, offering)
        body: dict[str, Any] = {
            "model": offering.provider_model_id,
            "prompt": request.prompt,
            "duration": self.duration_for(request, offering),  # an integer on the wire
            "resolution": self.resolution_for(request, offering),
        }
        subjects: list[str] = []
        for ref in request.references:
            if ref.role is ReferenceRole.SUBJECT:
                subjects.append(ref.url)
            else:
                # a public URL or a data: URL, both accepted as-is (§5a first_frame_image)
                body[_REFERENCE_FIELDS[ref.role]] = ref.url
        if subjects:
            body["subject_reference"] = [{"type": "character", "image": subjects}]
        body.update(self.options_for(request, offering))
        return body

    # -- errors ----------------------------------------------------------------------------

    def error(self, resp: httpx.Response, code: int, message: str) -> VidgateError:
        """Translate a ``base_resp`` code (or, without one, the HTTP status) to our tree."""
        rid = _request_id(resp)
        kw: dict[str, Any] = {
            "provider": self.protocol,
            "request_id": rid,
            "status_code": resp.status_code,
        }
        text = f"{message or resp.reason_phrase or 'error'} (MiniMax {code})"
        if code in CONTENT_CODES:
            return ContentRejected(f"rejected by MiniMax moderation: {text}", **kw)
        if code in QUOTA_CODES:
            return QuotaExhausted(text, **kw)
        if code in RATE_CODES:
            return RateLimited(text, retry_after=retry_after_seconds(resp.headers), **kw)
        if code in AUTH_CODES:
            return AuthFailed(text, **kw)
        if code in UNAVAILABLE_CODES:
            return ProviderUnavailable(text, **kw)
        if resp.status_code >= 400:
            return error_for_status(
                resp.status_code,
                message or resp.reason_phrase or "error",
                provider=self.protocol,
                request_id=rid,
                retry_after=retry_after_seconds(resp.headers),
            )
        # 2013 invalid params and any undocumented code on an HTTP 200.
        return InvalidRequest(text, **kw)

    def _raise(self, resp: httpx.Response, data: dict[str, Any]) -> None:
        code, message = base_resp(data)
        if resp.status_code >= 400 or code != 0:
            raise self.error(resp, code, message)

    def _failure(self, resp: httpx.Response, code: int, message: str) -> VidgateError:
        """Why a task ended in ``Fail``: moderation (1026 input, 1027 output) is final;
        anything else may well succeed on another offering."""
        if code in CONTENT_CODES or code in QUOTA_CODES:
            return self.error(resp, code, message)
        detail = f": {message} (MiniMax {code})" if code else ""
        return ProviderUnavailable(
            f"MiniMax generation failed{detail}",
            provider=self.protocol,
            request_id=_request_id(resp),
        )

    # -- contract --------------------------------------------------------------------------

    async def submit(
        self, request: VideoRequest, offering: Offering, *, idempotency_key: str
    ) -> ProviderJob:
        # v1 has no idempotency key: the create goes out once and an ambiguous outcome is
        # left to reconciliation (design.md §6); the key is deliberately not sent.
        base = self.base_url_for(offering)
        body = self.body(request, offering)
        resp = await send(
            self.client,
            "POST",
            f"{base}/v1/video_generation",
            provider=self.protocol,
            create=True,
            json=body,
            headers=self._headers(tuple(offering.credential_env)),
        )
        data = json_body(resp)
        self._raise(resp, data)
        task_id = data.get("task_id")
        if isinstance(task_id, int) and not isinstance(task_id, bool):
            task_id = str(task_id)
        if not isinstance(task_id, str) or not task_id:
            raise ProviderProtocolError(
                "MiniMax create answered without a task_id",
                provider=self.protocol,
                request_id=_request_id(resp),
            )
        return ProviderJob(
            protocol=self.protocol,
            offering_id=offering.id,
            remote_id=task_id,
            base_url=base,
            credential_ref=tuple(offering.credential_env),
        )

    async def _query(self, job: ProviderJob) -> tuple[httpx.Response, dict[str, Any]]:
        resp = await send(
            self.client,
            "GET",
            f"{job.base_url}/v1/query/video_generation",
            provider=self.protocol,
            params={"task_id": job.remote_id},
            headers=self._headers(job.credential_ref),
        )
        return resp, json_body(resp)

    async def poll(self, job: ProviderJob) -> RemoteStatus:
        resp, data = await self._query(job)
        raw = data.get("status")
        if (
            resp.status_code < 400
            and isinstance(raw, str)
            and STATUS.get(raw) is RemoteState.FAILED
        ):
            # A failed task is a successful query: base_resp here says why the task failed.
            code, message = base_resp(data)
            return RemoteStatus(RemoteState.FAILED, raw, error=self._failure(resp, code, message))
        self._raise(resp, data)
        if not isinstance(raw, str):
            raise ProviderProtocolError(
                "MiniMax query answered without a status",
                provider=self.protocol,
                request_id=_request_id(resp),
            )
        state = status_table(STATUS, raw, self.protocol)
        if state is RemoteState.SUCCEEDED and not _file_id(data):
            raise ProviderProtocolError(
                "MiniMax reported Success without a file_id",
                provider=self.protocol,
                request_id=_request_id(resp),
            )
        return RemoteStatus(state=state, raw=raw)

    async def fetch(self, job: ProviderJob) -> list[RemoteAsset]:
        resp, data = await self._query(job)
        self._raise(resp, data)
        file_id = _file_id(data)
        if data.get("status") != "Success" or file_id is None:
            raise ProviderProtocolError(
                f"MiniMax task {job.remote_id} has no file to fetch "
                f"(status {data.get('status')!r})",
                provider=self.protocol,
                request_id=_request_id(resp),
            )
        resp = await send(
            self.client,
            "GET",
            f"{job.base_url}/v1/files/retrieve",
            provider=self.protocol,
            params={"file_id": file_id},
            headers=self._headers(job.credential_ref),
        )
        data = json_body(resp)
        self._raise(resp, data)
        file = data.get("file")
        url = file.get("download_url") if isinstance(file, dict) else None
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise ProviderProtocolError(
                f"MiniMax files/retrieve gave no download_url for file {file_id}",
                provider=self.protocol,
                request_id=_request_id(resp),
            )
        # A presigned link (valid about an hour, §5a): it takes no auth, and the API key must
        # not travel to the storage host.
        return [RemoteAsset(url=url, content_type="video/mp4")]


def _file_id(data: dict[str, Any]) -> str | None:
    """The ``file_id`` as a string: §5a/§10, it is a large integer that must not be rounded
    through a float (a string in the query, an int64 in files/retrieve)."""
    value = data.get("file_id")
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None
