"""Emulation of Luma's two video APIs (provider-apis.md §4), mounted under ``/luma``.

* Dream Machine (§4a) at ``/luma/dream-machine/v1``: ``POST /generations/video`` (and the older
  ``POST /generations`` with ``generation_type: video``), ``GET /generations/{id}``,
  ``GET /generations`` (list) and ``DELETE /generations/{id}``. States
  queued → dreaming → completed | failed; ``failure_reason`` in the documented wording
  (docs.lumalabs.ai/docs/errors); the clip in ``assets.video`` as an expiring URL. There is no
  cancel: DELETE removes the record, nothing more.
* Agents (§4b) at ``/luma/v1`` (the real host is agents.lumalabs.ai/v1): ``POST
  /generations`` (``type: video`` only) and ``GET /generations/{id}``. States
  queued → processing → completed | failed, ``failure_code`` + ``failure_reason``, and
  ``output[].url``.

Both answer errors FastAPI-style (``{"detail": "..."}``, or a list of ``{loc, msg, type}``
items for a malformed field), send ``x-request-id`` on every response, and honour no
idempotency key, because Luma has none. Callbacks (``callback_url``) are accepted, not sent.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from vidgate.sandbox.core import CREATE_FAULTS, SandboxCore, credential_ok
from vidgate.sandbox.store import SandboxJob
from vidgate.types import Resolution, frame_size

PROTOCOL = "luma"
DM = "/dream-machine/v1"
AGENTS = "/v1"

_DM_STATE = {
    "queued": "queued",
    "running": "dreaming",
    "succeeded": "completed",
    "failed": "failed",
    "canceled": "failed",  # unreachable: Luma has no cancel
}
_AGENTS_STATE = {**_DM_STATE, "running": "processing"}
DM_MODELS = {"ray-2", "ray-flash-2", "ray-1-6"}  # the SDK enum (§4a)
DM_RATIOS = {"1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21"}
DM_RESOLUTIONS = {"540p", "720p", "1080p", "4k"}
AGENTS_MODELS = {"ray-3.2"}
AGENTS_RATIOS = {"3:1", "2:1", "21:9", "16:9", "4:3", "3:2", "1:1", "3:4", "2:3", "9:16"}
AGENTS_RATIOS |= {"1:2", "1:3"}
AGENTS_RESOLUTIONS = {"540p", "720p", "1080p"}
AGENTS_DURATIONS = {"5s": 5, "10s": 10}
_DURATION = re.compile(r"^(\d{1,2})s$")


class _Invalid(Exception):
    """A request the real API refuses; carries the response to send."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail


def _field(loc: str, msg: str, type_: str = "value_error") -> _Invalid:
    # FastAPI's 422 validation shape
    return _Invalid(422, [{"loc": ["body", *loc.split(".")], "msg": msg, "type": type_}])


def _headers(agents: bool, extra: dict[str, str] | None = None) -> dict[str, str]:
    h = {"x-request-id": str(uuid.uuid4())}
    if agents:
        h["x-api-version"] = "2026-04-01"  # informational (§4b)
    return {**h, **(extra or {})}


def _error(
    status: int, detail: Any, *, agents: bool, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=_headers(agents, headers))


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _dm_generation(core: SandboxCore, job: SandboxJob, base_url: str) -> dict[str, Any]:
    phase, _ = job.phase()
    failure = None
    if phase == "failed":
        failure = (
            "Advanced prompt moderation failed"
            if job.outcome == "fail:content_rejected"
            else "Job failed"  # the docs' "Job" section wording is unconfirmed
        )
    video = core.signed_file_url(base_url, job) if phase == "succeeded" else None
    return {
        "id": job.id,
        "generation_type": "video",
        "state": _DM_STATE[phase],
        "failure_reason": failure,
        "created_at": _iso(job.created_at),
        "model": job.model,
        "assets": {"video": video, "image": None, "progress_video": None},
        "request": job.params.get("request"),
    }


def _agents_generation(core: SandboxCore, job: SandboxJob, base_url: str) -> dict[str, Any]:
    phase, _ = job.phase()
    code = reason = None
    if phase == "failed":
        if job.outcome == "fail:content_rejected":
            code, reason = "content_moderated", "Prompt violated content guidelines"
        else:
            code, reason = "generation_failed", "Internal model error during generation"
    output = (
        [{"type": "video", "url": core.signed_file_url(base_url, job)}]
        if phase == "succeeded"
        else []
    )
    return {
        "id": job.id,
        "created_at": _iso(job.created_at),
        "model": job.model,
        "type": "video",
        "state": _AGENTS_STATE[phase],
        "failure_code": code,
        "failure_reason": reason,
        "output": output,
    }


def _dm_keyframes(body: dict[str, Any]) -> dict[str, Any]:
    frames = body.get("keyframes")
    if frames is None:
        return {}
    if not isinstance(frames, dict) or set(frames) - {"frame0", "frame1"}:
        raise _field("keyframes", "keyframes takes frame0 and frame1 only")
    present = {k: v for k, v in frames.items() if v is not None}
    if not present:
        raise _Invalid(400, "No keyframes provided")
    for name, kf in present.items():
        ok = isinstance(kf, dict) and (
            (kf.get("type") == "image" and isinstance(kf.get("url"), str))
            or (kf.get("type") == "generation" and isinstance(kf.get("id"), str))
        )
        if not ok:
            raise _field(
                f"keyframes.{name}", "expected {type: image, url} or {type: generation, id}"
            )
    return present


def _dm_validate(core: SandboxCore, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(model, render params) for a Dream Machine create body, or raises _Invalid."""
    if body.get("generation_type", "video") != "video":
        raise _Invalid(400, "Unknown request type")
    model = body.get("model", "ray-2")
    offering = core.offering_for(PROTOCOL, str(model))
    if not isinstance(model, str) or (offering is None and model not in DM_MODELS):
        raise _field("model", f"unknown model {model!r}", "enum")
    frames = _dm_keyframes(body)
    prompt = body.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise _field("prompt", "Input should be a valid string", "string_type")
    if not prompt and not frames:
        raise _Invalid(400, "Prompt is required")
    if prompt and len(prompt) < 3:
        raise _Invalid(400, "Prompt is too short, minimum length is 3 characters")
    if prompt and len(prompt) > 5000:
        raise _Invalid(400, "Prompt is too long, maximum length is 5000 characters")
    ratio = body.get("aspect_ratio", "16:9")
    if ratio not in DM_RATIOS:
        raise _field("aspect_ratio", f"Input should be one of {sorted(DM_RATIOS)}", "enum")
    duration = body.get("duration", "5s")
    if not isinstance(duration, str):
        raise _field("duration", "Input should be a valid string", "string_type")
    m = _DURATION.match(duration)
    allowed = {5.0, 9.0}
    if offering is not None and offering.capabilities.durations.values is not None:
        allowed = set(offering.capabilities.durations.values)
    if m is None or float(m.group(1)) not in allowed:
        raise _Invalid(400, f"Invalid duration {duration!r}; supported: 5s, 9s")
    resolution = body.get("resolution", "720p")
    if resolution not in DM_RESOLUTIONS:
        raise _field("resolution", f"Input should be one of {sorted(DM_RESOLUTIONS)}", "enum")
    loop = body.get("loop", False)
    if not isinstance(loop, bool):
        raise _field("loop", "Input should be a valid boolean", "bool_type")
    if loop and "frame1" in frames:
        raise _Invalid(400, "Loop is not supported for end frame")
    concepts = body.get("concepts", [])
    if not isinstance(concepts, list) or not all(
        isinstance(c, dict) and isinstance(c.get("key"), str) for c in concepts
    ):
        raise _field("concepts", "expected a list of {key}")
    width, height = frame_size(Resolution.parse(resolution), ratio)
    fps = (offering.capabilities.fps or [24])[0] if offering else 24
    return model, {
        "prompt": prompt or "",
        "width": width,
        "height": height,
        "fps": fps,
        "duration_s": float(m.group(1)),
        "audio": bool(offering and offering.capabilities.audio == "always"),
        "api": "dream-machine",
        "request": body,
    }


def _image_ref_ok(ref: Any) -> bool:
    if not isinstance(ref, dict):
        return False
    given = [k for k in ("url", "data", "generation_id") if ref.get(k)]
    return len(given) == 1 and (given[0] != "data" or isinstance(ref.get("media_type"), str))


def _agents_validate(core: SandboxCore, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not 1 <= len(prompt) <= 6000:
        raise _field("prompt", "String should have 1..6000 characters", "string_type")
    if body.get("type") != "video":
        raise _Invalid(400, "Only type 'video' is emulated by the vidgate sandbox")
    model = body.get("model")
    offering = core.offering_for(PROTOCOL, str(model))
    if not isinstance(model, str) or (offering is None and model not in AGENTS_MODELS):
        raise _Invalid(400, f"Model {model!r} does not support type 'video'")
    ratio = body.get("aspect_ratio", "16:9")
    if ratio not in AGENTS_RATIOS:
        raise _field("aspect_ratio", f"Input should be one of {sorted(AGENTS_RATIOS)}", "enum")
    video = body.get("video") or {}
    if not isinstance(video, dict):
        raise _field("video", "Input should be an object", "dict_type")
    duration = video.get("duration", "5s")
    if duration not in AGENTS_DURATIONS:
        raise _field("video.duration", "Input should be '5s' or '10s'", "enum")
    resolution = video.get("resolution", "720p")
    if resolution not in AGENTS_RESOLUTIONS:
        raise _field("video.resolution", "Input should be '540p', '720p' or '1080p'", "enum")
    for name in ("start_frame", "end_frame"):
        if name in video and not _image_ref_ok(video[name]):
            raise _field(f"video.{name}", "Provide exactly one of url, data or generation_id")
    flags = {k: video.get(k, False) for k in ("loop", "hdr", "exr_export")}
    if not all(isinstance(v, bool) for v in flags.values()):
        raise _field("video", "loop, hdr and exr_export are booleans", "bool_type")
    if flags["loop"] and (duration == "10s" or flags["hdr"]):
        raise _Invalid(422, "loop is not supported with a 10s duration or hdr")
    if flags["exr_export"] and not flags["hdr"]:
        raise _Invalid(422, "exr_export requires hdr")
    width, height = frame_size(Resolution.parse(resolution), ratio)
    fps = (offering.capabilities.fps or [24])[0] if offering else 24
    return model, {
        "prompt": prompt,
        "width": width,
        "height": height,
        "fps": fps,
        "duration_s": float(AGENTS_DURATIONS[duration]),
        "audio": bool(offering and offering.capabilities.audio == "always"),
        "api": "agents",
    }


def router(core: SandboxCore) -> APIRouter:
    r = APIRouter(prefix=f"/{PROTOCOL}")

    def auth_error(request: Request, agents: bool) -> JSONResponse | None:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not credential_ok(auth[len("Bearer ") :]):
            return _error(401, "Invalid or missing API key", agents=agents)
        return None

    async def create(request: Request, agents: bool) -> Response:
        if (err := auth_error(request, agents)) is not None:
            return err
        try:
            body = await request.json()
        except ValueError:
            return _error(422, [{"loc": ["body"], "msg": "JSON decode error"}], agents=agents)
        if not isinstance(body, dict):
            return _error(422, [{"loc": ["body"], "msg": "expected an object"}], agents=agents)
        try:
            model, params = (_agents_validate if agents else _dm_validate)(core, body)
        except _Invalid as e:
            return _error(e.status, e.detail, agents=agents)

        fault = core.pick_fault(PROTOCOL, model, CREATE_FAULTS)
        if fault is not None and fault.kind == "rate_limit":
            return _error(
                429,
                "Rate limit exceeded",
                agents=agents,
                headers={"retry-after": f"{fault.retry_after_s:g}"},
            )
        if fault is not None and fault.kind == "unavailable":
            return _error(503, "Service temporarily unavailable", agents=agents)
        if fault is not None and fault.kind == "timeout":
            await asyncio.sleep(core.faults.hang_s)
            return _error(504, "Gateway timeout", agents=agents)

        job, _ = core.create_job(
            protocol=PROTOCOL,
            model=model,
            body=body,
            params=params,
            idempotency_key=None,  # Luma has no idempotency key: every create is a new job
        )
        if fault is not None and fault.kind == "drop":
            core.store.event("dropped_response", job.id)
            await asyncio.sleep(core.faults.hang_s)
            return _error(504, "Gateway timeout", agents=agents)
        render = _agents_generation if agents else _dm_generation
        # Agents docs: "201 Success — generation created"; Dream Machine's code is
        # unconfirmed (§4a) and assumed to match.
        return JSONResponse(
            render(core, job, str(request.base_url)), status_code=201, headers=_headers(agents)
        )

    def lookup(gid: str, agents: bool) -> SandboxJob | JSONResponse:
        job = core.store.get(gid)
        api = "agents" if agents else "dream-machine"
        if job is None or job.deleted or job.protocol != PROTOCOL or job.params.get("api") != api:
            return _error(404, "Generation not found", agents=agents)
        return job

    async def retrieve(request: Request, gid: str, agents: bool) -> Response:
        if (err := auth_error(request, agents)) is not None:
            return err
        job = lookup(gid, agents)
        if isinstance(job, JSONResponse):
            return job
        if core.pick_fault(PROTOCOL, job.model, {"poll_unavailable"}):
            return _error(503, "Service temporarily unavailable", agents=agents)
        render = _agents_generation if agents else _dm_generation
        return JSONResponse(render(core, job, str(request.base_url)), headers=_headers(agents))

    @r.post(DM + "/generations/video")
    async def dm_create(request: Request) -> Response:
        return await create(request, agents=False)

    @r.post(DM + "/generations")
    async def dm_create_legacy(request: Request) -> Response:
        return await create(request, agents=False)

    @r.get(DM + "/generations/{gid}")
    async def dm_get(gid: str, request: Request) -> Response:
        return await retrieve(request, gid, agents=False)

    @r.get(DM + "/generations")
    async def dm_list(request: Request, limit: int = 100, offset: int = 0) -> Response:
        if (err := auth_error(request, False)) is not None:
            return err
        limit, offset = core.page_size(max(0, min(limit, 100))), max(0, offset)
        jobs = [
            j
            for j in core.store.list(PROTOCOL, limit=1000)
            if j.params.get("api") == "dream-machine"
        ]
        page = jobs[offset : offset + limit]
        base = str(request.base_url)
        return JSONResponse(
            {
                "generations": [_dm_generation(core, j, base) for j in page],
                "count": len(page),
                "has_more": len(jobs) > offset + limit,
                "limit": limit,
                "offset": offset,
            },
            headers=_headers(False),
        )

    @r.delete(DM + "/generations/{gid}")
    async def dm_delete(gid: str, request: Request) -> Response:
        if (err := auth_error(request, False)) is not None:
            return err
        job = lookup(gid, False)
        if isinstance(job, JSONResponse):
            return job
        # Deletes the record only; a running generation is not documented to stop (§4a).
        core.store.mark(job.id, deleted=True)
        return Response(status_code=204, headers=_headers(False))

    @r.post(AGENTS + "/generations")
    async def agents_create(request: Request) -> Response:
        return await create(request, agents=True)

    @r.get(AGENTS + "/generations/{gid}")
    async def agents_get(gid: str, request: Request) -> Response:
        return await retrieve(request, gid, agents=True)

    return r
