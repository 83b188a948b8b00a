"""Emulation of the OpenAI Videos API (provider-apis.md §1), mounted at ``/openai-videos/v1``.

Matches the real service's shapes: the ``Video`` object with every key present, status strings
``queued``/``in_progress``/``completed``/``failed``, ``seconds`` as a string (a number is a 400),
the OpenAI error envelope, ``x-request-id`` on every response, and ``openai-poll-after-ms``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from vidgate.sandbox.core import CREATE_FAULTS, SandboxCore, credential_ok
from vidgate.sandbox.store import SandboxJob

PROTOCOL = "openai-videos"
_STATUS = {
    "queued": "queued",
    "running": "in_progress",
    "succeeded": "completed",
    "failed": "failed",
    "canceled": "failed",
}


def _error(
    status: int,
    message: str,
    *,
    type_: str,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    h = {"x-request-id": "req_" + uuid.uuid4().hex[:20], **(headers or {})}
    return JSONResponse(
        {"error": {"message": message, "type": type_, "param": param, "code": code}},
        status_code=status,
        headers=h,
    )


def _video(job: SandboxJob) -> dict[str, Any]:
    phase, progress = job.phase()
    done = job.created_at + job.latency_s
    error = None
    if phase == "failed":
        if job.outcome == "fail:content_rejected":
            error = {
                "code": "moderation_blocked",
                "message": "Your request was blocked by our moderation system.",
            }
        else:
            error = {"code": "internal_error", "message": "Video generation failed."}
    elif phase == "canceled":
        error = {"code": "canceled", "message": "The job was canceled."}
    p = job.params
    return {
        "id": job.id,
        "object": "video",
        "model": job.model,
        "status": _STATUS[phase],
        "progress": int(progress * 100),
        "created_at": int(job.created_at),
        "completed_at": int(done) if phase == "succeeded" else None,
        "expires_at": int(done + 3600) if phase == "succeeded" else None,
        "prompt": p.get("prompt", ""),
        "size": f"{p['width']}x{p['height']}",
        "seconds": f"{float(p['duration_s']):g}",
        "remixed_from_video_id": None,
        "error": error,
    }


def router(core: SandboxCore) -> APIRouter:
    r = APIRouter(prefix=f"/{PROTOCOL}/v1")

    def auth_error(request: Request) -> JSONResponse | None:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not credential_ok(auth[len("Bearer ") :]):
            return _error(
                401,
                "Incorrect API key provided.",
                type_="invalid_request_error",
                code="invalid_api_key",
            )
        return None

    def headers_for(job: SandboxJob) -> dict[str, str]:
        phase, _ = job.phase()
        remaining = max(0.0, job.created_at + job.latency_s - time.time())
        # Pace pollers to the emulated remaining time, between 50 ms and 1 s.
        after = int(min(1000, max(50, remaining * 1000 / 3)))
        h = {"x-request-id": "req_" + uuid.uuid4().hex[:20]}
        if phase in ("queued", "running"):
            h["openai-poll-after-ms"] = str(after)
        return h

    @r.post("/videos")
    async def create(request: Request) -> Response:
        if (err := auth_error(request)) is not None:
            return err
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            form = await request.form()
            body: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str)}
            if "input_reference" in form and not isinstance(form["input_reference"], str):
                body["input_reference"] = {"file": "uploaded"}
        else:
            try:
                body = await request.json()
            except ValueError:
                return _error(
                    400,
                    "We could not parse the JSON body of your request.",
                    type_="invalid_request_error",
                )
            if not isinstance(body, dict):
                return _error(400, "The body must be a JSON object.", type_="invalid_request_error")
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            return _error(
                400,
                "Missing required parameter: 'prompt'.",
                type_="invalid_request_error",
                param="prompt",
                code="missing_required_parameter",
            )
        model = str(body.get("model") or "sora-2")
        offering = core.offering_for(PROTOCOL, model)
        if offering is None:
            return _error(
                400,
                f"Invalid model '{model}'.",
                type_="invalid_request_error",
                param="model",
                code="invalid_value",
            )
        seconds = body.get("seconds", "4")
        if not isinstance(seconds, str):
            return _error(
                400,
                "Invalid type for 'seconds': expected a string.",
                type_="invalid_request_error",
                param="seconds",
                code="invalid_type",
            )
        try:
            secs = float(seconds)
        except ValueError:
            secs = -1.0
        spec = offering.capabilities.durations
        if secs <= 0 or abs(spec.nearest(secs) - secs) > 1e-6:
            allowed = spec.values or f"{spec.min}..{spec.max}"
            return _error(
                400,
                f"Invalid value for 'seconds': {seconds!r}; supported: {allowed}.",
                type_="invalid_request_error",
                param="seconds",
                code="invalid_value",
            )
        size = str(body.get("size") or "720x1280")
        try:
            width, height = (int(x) for x in size.lower().split("x"))
            if width % 2 or height % 2 or not (16 <= width <= 4096 and 16 <= height <= 4096):
                raise ValueError
        except ValueError:
            return _error(
                400,
                f"Invalid value for 'size': {size!r}.",
                type_="invalid_request_error",
                param="size",
                code="invalid_value",
            )

        fault = core.pick_fault(PROTOCOL, model, CREATE_FAULTS)
        if fault is not None and fault.kind == "rate_limit":
            return _error(
                429,
                "Rate limit reached for requests.",
                type_="requests",
                code="rate_limit_exceeded",
                headers={"retry-after": f"{fault.retry_after_s:g}"},
            )
        if fault is not None and fault.kind == "unavailable":
            return _error(
                503, "The server is overloaded. Please try again later.", type_="server_error"
            )
        if fault is not None and fault.kind == "timeout":
            await asyncio.sleep(core.faults.hang_s)
            return _error(504, "Gateway timeout.", type_="server_error")

        job, _ = core.create_job(
            protocol=PROTOCOL,
            model=model,
            body=body,
            params={
                "prompt": prompt,
                "width": width,
                "height": height,
                "fps": (offering.capabilities.fps or [24])[0],
                "duration_s": secs,
                "audio": offering.capabilities.audio != "never",
            },
            idempotency_key=request.headers.get("idempotency-key"),
            id_prefix="video_",
        )
        if fault is not None and fault.kind == "drop":
            core.store.event("dropped_response", job.id)
            await asyncio.sleep(core.faults.hang_s)
            return _error(504, "Gateway timeout.", type_="server_error")
        return JSONResponse(_video(job), headers=headers_for(job))

    def lookup(video_id: str) -> SandboxJob | JSONResponse:
        job = core.store.get(video_id)
        if job is None or job.deleted or job.protocol != PROTOCOL:
            return _error(
                404,
                f"Video '{video_id}' not found.",
                type_="invalid_request_error",
                code="not_found",
            )
        return job

    @r.get("/videos/{video_id}")
    async def retrieve(video_id: str, request: Request) -> Response:
        if (err := auth_error(request)) is not None:
            return err
        job = lookup(video_id)
        if isinstance(job, JSONResponse):
            return job
        if core.pick_fault(PROTOCOL, job.model, {"poll_unavailable"}):
            return _error(503, "The server is overloaded.", type_="server_error")
        return JSONResponse(_video(job), headers=headers_for(job))

    @r.get("/videos")
    async def list_videos(
        request: Request, limit: int = 20, order: str = "desc", after: str | None = None
    ) -> Response:
        """§1: ``limit`` 0..100, ``order`` asc|desc, ``after`` = the last id of the page
        before; ``has_more`` says whether another page follows."""
        if (err := auth_error(request)) is not None:
            return err
        if order not in ("asc", "desc"):
            message = f"Invalid order {order!r}; use asc or desc."
            return _error(400, message, type_="invalid_request_error", param="order")
        jobs = core.store.list(PROTOCOL, limit=10_000)  # newest first
        if order == "asc":
            jobs.reverse()
        ids = [j.id for j in jobs]
        start = ids.index(after) + 1 if after in ids else 0
        size = core.page_size(max(0, min(limit, 100)))
        data = [_video(j) for j in jobs[start : start + size]]
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": start + size < len(jobs),
            }
        )

    @r.delete("/videos/{video_id}")
    async def delete(video_id: str, request: Request) -> Response:
        if (err := auth_error(request)) is not None:
            return err
        job = lookup(video_id)
        if isinstance(job, JSONResponse):
            return job
        if job.phase()[0] not in ("succeeded", "failed"):
            return _error(
                400,
                "Only completed or failed videos can be deleted.",
                type_="invalid_request_error",
            )
        core.store.mark(job.id, deleted=True)
        return JSONResponse({"id": job.id, "object": "video.deleted", "deleted": True})

    @r.get("/videos/{video_id}/content")
    async def content(video_id: str, request: Request, variant: str = "video") -> Response:
        if (err := auth_error(request)) is not None:
            return err
        job = lookup(video_id)
        if isinstance(job, JSONResponse):
            return job
        if job.phase()[0] != "succeeded":
            return _error(
                400, f"Video '{video_id}' is not ready for download.", type_="invalid_request_error"
            )
        if variant != "video":
            return _error(
                400,
                f"Variant {variant!r} is not emulated; use 'video'.",
                type_="invalid_request_error",
                param="variant",
            )
        path = await asyncio.to_thread(core.render, job)
        return FileResponse(
            path, media_type="video/mp4", headers={"x-request-id": "req_" + uuid.uuid4().hex[:20]}
        )

    return r
