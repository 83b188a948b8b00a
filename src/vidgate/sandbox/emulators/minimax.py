"""Emulation of the MiniMax (Hailuo) v1 video API (provider-apis.md §5a), mounted at
``/minimax`` (the real base URL, ``https://api.minimax.io``, has no path).

What it reproduces: ``POST /v1/video_generation`` → ``{"task_id", "base_resp"}``; ``GET
/v1/query/video_generation?task_id=`` with ``Preparing`` → ``Queueing`` → ``Processing`` →
``Success`` | ``Fail`` (exact casing) and ``file_id``/``video_width``/``video_height`` only on
success; ``GET /v1/files/retrieve?file_id=`` → ``file.download_url`` (a presigned link, no auth)
with ``file_id`` as a JSON integer there but a string in the query (§10's type trap). Errors are
HTTP 200 with a non-zero ``base_resp.status_code`` (1004/2049 auth, 1002 rate limit, 2013
invalid params, 1027 output moderation), the way MiniMax usually answers. Task and file ids
are long decimal strings, like the real ones. Every response has a ``Trace-Id`` header.

Sandbox-only liberties: a rate-limited create also carries ``Retry-After`` (the real API
documents no rate-limit headers) so the gateway's pacing can be exercised, and an injected
outage is an HTTP 503 with a ``base_resp`` body.
"""

from __future__ import annotations

import asyncio
import base64
import struct
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from vidgate.catalog.schema import Offering
from vidgate.sandbox.core import CREATE_FAULTS, SandboxCore, credential_ok
from vidgate.sandbox.store import SandboxJob
from vidgate.types import Mode

PROTOCOL = "minimax"
#: short side of each wire resolution (text-to-video is 16:9: 768P is 1366x768, §5a)
_SHORT_SIDE = {"512P": 512, "720P": 720, "768P": 768, "1080P": 1080}
_FILE_OFFSET = 7  # file ids differ from task ids, as at MiniMax


def _reply(
    body: dict[str, Any], *, status: int = 200, headers: dict[str, str] | None = None
) -> JSONResponse:
    h = {"Trace-Id": uuid.uuid4().hex, **(headers or {})}
    return JSONResponse(body, status_code=status, headers=h)


def _base(code: int, message: str) -> dict[str, Any]:
    return {"status_code": code, "status_msg": message}


def _error(
    code: int, message: str, *, status: int = 200, headers: dict[str, str] | None = None
) -> JSONResponse:
    return _reply({"base_resp": _base(code, message)}, status=status, headers=headers)


def task_id_of(job: SandboxJob) -> str:
    return str(int(job.id, 16))


def job_id_of(task_id: str, offset: int = 0) -> str | None:
    try:
        n = int(task_id) - offset
    except ValueError:
        return None
    return f"{n:024x}" if 0 <= n < 16**24 else None


def _image_size(url: str) -> tuple[int, int] | None:
    """Width and height of a PNG data URL (the sandbox never fetches remote images)."""
    if not url.startswith("data:") or ";base64," not in url[:100]:
        return None
    try:
        head = base64.b64decode(url.split(",", 1)[1][:64] + "==", validate=False)
    except ValueError:
        return None
    if head[:8] != b"\x89PNG\r\n\x1a\n" or len(head) < 24:
        return None
    w, h = struct.unpack(">II", head[16:24])
    return (w, h) if w and h else None


def _even(x: float) -> int:
    return max(2, round(x / 2.0) * 2)


def _frame(resolution: str, image: str | None) -> tuple[int, int]:
    """Output size: text-to-video is 16:9; image-to-video keeps the image's aspect (§5a)."""
    short = _SHORT_SIDE[resolution]
    w, h = (_image_size(image) if image else None) or (16, 9)
    # §5a: images outside 2:5..5:2 are refused by the real API; clamp rather than fail.
    ratio = min(max(w / h, 2 / 5), 5 / 2)
    if ratio >= 1:
        return _even(short * ratio), short
    return short, _even(short / ratio)


def _status(job: SandboxJob) -> str:
    phase, progress = job.phase()
    if phase == "queued":
        return "Preparing" if progress < 0.04 else "Queueing"
    return {"running": "Processing", "succeeded": "Success"}.get(phase, "Fail")


def _validate(body: dict[str, Any], offering: Offering | None) -> str | None:
    """The reason MiniMax would refuse this create (as its 2013 message), or None."""
    model = body.get("model")
    if offering is None or offering.protocol != PROTOCOL:
        return f"invalid params, model {model!r} is not supported"
    prompt = body.get("prompt")
    first = body.get("first_frame_image")
    if prompt is not None and (not isinstance(prompt, str) or len(prompt) > 2000):
        return "invalid params, prompt must be a string of at most 2000 characters"
    if first is None and Mode.TEXT_TO_VIDEO not in offering.capabilities.modes:
        return f"invalid params, {model} requires first_frame_image"
    if first is None and not (isinstance(prompt, str) and prompt.strip()):
        return "invalid params, prompt is required for text-to-video"
    if first is not None and not (
        isinstance(first, str) and first.startswith(("http://", "https://", "data:image/"))
    ):
        return "invalid params, first_frame_image must be a URL or a data:image base64 string"
    duration = body.get("duration", 6)
    if not isinstance(duration, int) or isinstance(duration, bool) or duration not in (6, 10):
        return f"invalid params, duration {duration!r} must be 6 or 10"
    resolution = body.get("resolution", "768P")
    allowed = {r.value.upper() for r in offering.capabilities.resolutions}
    if resolution not in allowed or resolution not in _SHORT_SIDE:
        return f"invalid params, resolution {resolution!r} must be one of {sorted(allowed)}"
    if resolution == "1080P" and duration != 6:
        return "invalid params, 1080P supports 6s duration only"
    for key in ("prompt_optimizer", "fast_pretreatment"):
        if key in body and not isinstance(body[key], bool):
            return f"invalid params, {key} must be a boolean"
    return None


def router(core: SandboxCore) -> APIRouter:
    r = APIRouter(prefix=f"/{PROTOCOL}")

    def auth_error(request: Request) -> JSONResponse | None:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not auth[len("Bearer ") :].strip():
            return _error(
                1004,
                "login fail: Please carry the API secret key in the 'Authorization' field of "
                "the request header",
            )
        if not credential_ok(auth[len("Bearer ") :]):
            return _error(2049, "invalid api key")
        return None

    @r.post("/v1/video_generation")
    async def create(request: Request) -> Response:
        if (err := auth_error(request)) is not None:
            return err
        try:
            body = await request.json()
        except ValueError:
            return _error(2013, "invalid params, request body is not valid JSON")
        if not isinstance(body, dict):
            return _error(2013, "invalid params, request body must be a JSON object")
        model = str(body.get("model") or "")
        offering = core.offering_for(PROTOCOL, model)
        problem = _validate(body, offering)
        if problem is not None or offering is None:
            return _error(2013, problem or "invalid params")

        fault = core.pick_fault(PROTOCOL, model, CREATE_FAULTS)
        if fault is not None and fault.kind == "rate_limit":
            return _error(
                1002,
                "rate limit exceeded(RPM)",
                headers={"Retry-After": f"{fault.retry_after_s:g}"},
            )
        if fault is not None and fault.kind == "unavailable":
            return _error(1013, "internal service error", status=503)
        if fault is not None and fault.kind == "timeout":
            await asyncio.sleep(core.faults.hang_s)
            return _error(1001, "request timeout")

        duration = int(body.get("duration", 6))
        width, height = _frame(str(body.get("resolution", "768P")), body.get("first_frame_image"))
        job, _ = core.create_job(
            protocol=PROTOCOL,
            model=model,
            body=body,
            params={
                "prompt": str(body.get("prompt") or ""),
                "width": width,
                "height": height,
                "fps": (offering.capabilities.fps or [24])[0],
                "duration_s": float(duration),
                # v1 has no audio switch: a clip has audio only where the model always adds it
                "audio": offering.capabilities.audio == "always",
            },
            idempotency_key=None,  # v1 has no idempotency key
        )
        if fault is not None and fault.kind == "drop":
            core.store.event("dropped_response", job.id)
            await asyncio.sleep(core.faults.hang_s)
        return _reply({"task_id": task_id_of(job), "base_resp": _base(0, "success")})

    def lookup(ident: str, offset: int = 0) -> SandboxJob | None:
        job_id = job_id_of(ident, offset)
        job = core.store.get(job_id) if job_id else None
        if job is None or job.deleted or job.protocol != PROTOCOL:
            return None
        return job

    @r.get("/v1/query/video_generation")
    async def query(request: Request, task_id: str = "") -> Response:
        if (err := auth_error(request)) is not None:
            return err
        job = lookup(task_id)
        if job is None:
            return _error(2013, f"invalid params, task {task_id!r} not found")
        if core.pick_fault(PROTOCOL, job.model, {"poll_unavailable"}):
            return _error(1013, "internal service error", status=503)
        status = _status(job)
        out: dict[str, Any] = {"task_id": task_id_of(job), "status": status}
        base = _base(0, "success")
        if status == "Success":
            p = job.params
            out["file_id"] = str(int(task_id_of(job)) + _FILE_OFFSET)
            out["video_width"] = int(p["width"])
            out["video_height"] = int(p["height"])
        elif status == "Fail" and job.outcome == "fail:content_rejected":
            base = _base(1027, "output new_sensitive")
        out["base_resp"] = base
        return _reply(out)

    @r.get("/v1/files/retrieve")
    async def retrieve(request: Request, file_id: str = "") -> Response:
        if (err := auth_error(request)) is not None:
            return err
        job = lookup(file_id, _FILE_OFFSET)
        if job is None or job.phase()[0] != "succeeded":
            return _error(2013, f"invalid params, file {file_id!r} not found")
        return _reply(
            {
                "file": {
                    "file_id": int(file_id),  # an integer here, a string in the query
                    "bytes": 0,
                    "created_at": int(job.created_at + job.latency_s),
                    "filename": "output_aigc.mp4",
                    "purpose": "video_generation",
                    "download_url": core.signed_file_url(str(request.base_url), job),
                },
                "base_resp": _base(0, "success"),
            }
        )

    return r
