"""Emulation of the vidgate model server (docs/model-server-protocol.md), mounted at
``/local-diffusers/v1``: a self-hosted route for sandbox runs, offline and without torch.

It serves every self-hosted catalog model that has a diffusers pipeline (an offering whose
``adapter_options.unavailable`` gives a reason is not served), with the protocol's shapes:
``/v1/models`` with queue depth and measured stats, a create that rounds the frame to the
family's side multiple and reports each change in ``adjustments`` (``shape: exact`` refuses
instead), retrieve with progress and queue position, content, cancel. The GPU is emulated
at :data:`USD_PER_HOUR`; a job's compute time is its drawn latency, so ``cost_usd`` and the
stats follow the same formula as the real server's. The sandbox's faults map onto the
server's answers: ``rate_limit`` → 429 ``queue_full``, ``unavailable`` → 503 ``not_ready``,
``fail`` → a failed job with ``pipeline_error``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from vidgate.catalog.schema import Offering
from vidgate.sandbox.core import CREATE_FAULTS, SandboxCore
from vidgate.sandbox.store import SandboxJob

PROTOCOL = "local-diffusers"
#: the emulated GPU's hourly price (an H100 at a typical cloud rate)
USD_PER_HOUR = 2.5
#: jobs a server queues before it answers 429 queue_full
MAX_DEPTH = 16
#: side multiples per catalog model family (what the real families require)
_SIDE = {"ltx-2": 32}
_STATUS = {
    "queued": "queued",
    "running": "in_progress",
    "succeeded": "completed",
    "failed": "failed",
    "canceled": "cancelled",
}


def _error(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


def served(core: SandboxCore) -> dict[str, Offering]:
    """Served model id → its offering: every self-hosted model with a pipeline."""
    out: dict[str, Offering] = {}
    for o in core.catalog.offerings.values():
        if o.protocol == PROTOCOL and not o.adapter_options.get("unavailable"):
            out.setdefault(o.provider_model_id, o)
    return out


def _side(offering: Offering) -> int:
    return _SIDE.get(offering.model, 16)


def _active(core: SandboxCore, model: str) -> list[SandboxJob]:
    jobs = [j for j in core.store.list(PROTOCOL, limit=10_000) if j.model == model]
    return sorted(
        (j for j in jobs if j.phase()[0] in ("queued", "running")), key=lambda j: j.created_at
    )


def _compute_s(core: SandboxCore, job: SandboxJob) -> float:
    """The emulated GPU's seconds for a job: its drawn latency before the sandbox's time
    scale compressed it, so a demo's self-hosted price is the price of the real wait."""
    return job.latency_s / core.time_scale if core.time_scale > 0 else job.latency_s


def _stats(core: SandboxCore, model: str) -> dict[str, Any]:
    done = [
        j
        for j in core.store.list(PROTOCOL, limit=10_000)
        if j.model == model and _phase(j)[0] == "succeeded"
    ]
    video = sum(float(j.params["duration_s"]) for j in done)
    compute = sum(_compute_s(core, j) for j in done)
    return {
        "jobs": len(done),
        "video_seconds": round(video, 3),
        "compute_seconds": round(compute, 6),
        "compute_s_per_video_s": round(compute / video, 6) if video else None,
        "cache_skipped_calls": 0,
    }


def _model(core: SandboxCore, model_id: str, o: Offering) -> dict[str, Any]:
    active = _active(core, model_id)
    running = next((j.id for j in active if j.phase()[0] == "running"), None)
    modes = [
        m.value.replace("-", "_")
        for m in o.capabilities.modes
        if m.value in ("text-to-video", "image-to-video")
    ]
    return {
        "id": model_id,
        "object": "model",
        "family": o.model.split("-")[0],
        "catalog_model": o.model,
        "pipeline": "emulated",
        "modes": modes,
        "constraints": {"side_multiple": _side(o), "fps": (o.capabilities.fps or [24])[0]},
        "device": "sandbox",
        "dtype": "none",
        "steps": 0,
        "speed": {},
        "usd_per_hour": USD_PER_HOUR,
        "stats": _stats(core, model_id),
        "queue": {
            "depth": len(active) - (1 if running else 0),
            "max_depth": MAX_DEPTH,
            "running": running,
        },
    }


#: a prompt carrying this runs out of GPU memory at the end (a deterministic trigger, like the
#: sandbox's "[unsafe]"), so tests and demos can exercise the capacity failure
OOM = "[oom]"


def _phase(job: SandboxJob) -> tuple[str, float]:
    phase, progress = job.phase()
    if phase == "succeeded" and OOM in str(job.params.get("prompt", "")).lower():
        return "failed", progress
    return phase, progress


def _video(core: SandboxCore, job: SandboxJob) -> dict[str, Any]:
    phase, progress = _phase(job)
    p = job.params
    out: dict[str, Any] = {
        "id": job.id,
        "object": "video",
        "model": job.model,
        "status": _STATUS[phase],
        "progress": int(progress * 100),
        "queue_position": None,
        "created_at": int(job.created_at),
        "completed_at": None,
        "seconds": f"{float(p['duration_s']):.2f}",
        "size": f"{p['width']}x{p['height']}",
        "num_frames": round(float(p["duration_s"]) * int(p["fps"])),
        "fps": int(p["fps"]),
        "adjustments": p.get("adjustments", []),
        "compute_seconds": None,
        "cost_usd": None,
        "error": None,
    }
    if phase in ("queued", "running"):
        ids = [j.id for j in _active(core, job.model)]
        out["queue_position"] = ids.index(job.id) if job.id in ids else 0
    elif phase == "succeeded":
        out["completed_at"] = int(job.created_at + job.latency_s)
        out["compute_seconds"] = round(_compute_s(core, job), 6)
        out["cost_usd"] = round(_compute_s(core, job) * USD_PER_HOUR / 3600.0, 8)
    elif phase == "failed":
        code = "content_rejected" if job.outcome == "fail:content_rejected" else "pipeline_error"
        if job.outcome == "ok":
            code = "out_of_memory"
        out["error"] = {"code": code, "message": f"the emulated pipeline ended with {code}"}
    elif phase == "canceled":
        out["error"] = {"code": "cancelled", "message": "cancelled"}
    return out


def _shape(o: Offering, body: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]] | str:
    """The shape the job runs at and what was changed, or why the request is refused."""
    try:
        width, height = (int(x) for x in str(body.get("size") or "832x480").lower().split("x"))
    except ValueError:
        return f"size {body.get('size')!r} is not WIDTHxHEIGHT (e.g. 832x480)"
    seconds = body.get("seconds", 5)
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds <= 0:
        return f"seconds must be a positive number, not {seconds!r}"
    side = _side(o)
    changes: list[dict[str, Any]] = []
    sized = {}
    for name, value in (("width", width), ("height", height)):
        used = max(side, round(value / side) * side)
        sized[name] = used
        if used != value:
            changes.append(
                {
                    "field": name,
                    "requested": value,
                    "used": used,
                    "why": f"{o.model} takes sides divisible by {side}",
                }
            )
    fps = (o.capabilities.fps or [24])[0]
    params = {**sized, "fps": fps, "duration_s": float(seconds), "audio": False}
    return params, changes


def router(core: SandboxCore) -> APIRouter:
    r = APIRouter(prefix=f"/{PROTOCOL}/v1")

    @r.get("/models")
    async def models() -> Response:
        data = [_model(core, mid, o) for mid, o in served(core).items()]
        return JSONResponse({"object": "list", "data": data})

    @r.post("/videos")
    async def create(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "invalid_request", "the body is not JSON")
        if not isinstance(body, dict) or not str(body.get("prompt") or "").strip():
            return _error(400, "invalid_request", "prompt is required")
        model = str(body.get("model") or "")
        o = served(core).get(model)
        if o is None:
            have = ", ".join(served(core)) or "nothing"
            return _error(404, "model_not_loaded", f"{model!r} is not loaded; serving: {have}")
        shaped = _shape(o, body)
        if isinstance(shaped, str):
            return _error(400, "invalid_request", shaped)
        params, changes = shaped
        if changes and body.get("shape") == "exact":
            what = "; ".join(f"{c['field']} {c['requested']}→{c['used']}" for c in changes)
            return _error(400, "invalid_shape", f"the request needs changes: {what}")
        fault = core.pick_fault(PROTOCOL, model, CREATE_FAULTS)
        full = len(_active(core, model)) >= MAX_DEPTH
        if full or (fault is not None and fault.kind == "rate_limit"):
            retry = f"{fault.retry_after_s:g}" if fault is not None else "5"
            return _error(429, "queue_full", f"{MAX_DEPTH} jobs queued", **{"retry-after": retry})
        if fault is not None and fault.kind == "unavailable":
            return _error(503, "not_ready", "the pipeline is loading")
        if fault is not None and fault.kind == "timeout":
            await asyncio.sleep(core.faults.hang_s)
            return _error(504, "timeout", "timed out")
        job, _ = core.create_job(
            protocol=PROTOCOL,
            model=model,
            body=body,
            params={"prompt": body["prompt"], **params, "adjustments": changes},
            idempotency_key=request.headers.get("idempotency-key"),
            id_prefix="vid_",
        )
        if fault is not None and fault.kind == "drop":
            core.store.event("dropped_response", job.id)
            await asyncio.sleep(core.faults.hang_s)
            return _error(504, "timeout", "timed out")
        return JSONResponse(_video(core, job))

    def lookup(video_id: str) -> SandboxJob | JSONResponse:
        job = core.store.get(video_id)
        if job is None or job.protocol != PROTOCOL:
            return _error(404, "not_found", f"no video {video_id!r}")
        return job

    @r.get("/videos/{video_id}")
    async def retrieve(video_id: str) -> Response:
        job = lookup(video_id)
        if isinstance(job, JSONResponse):
            return job
        if core.pick_fault(PROTOCOL, job.model, {"poll_unavailable"}):
            return _error(503, "not_ready", "the server is busy")
        return JSONResponse(_video(core, job))

    @r.get("/videos/{video_id}/content")
    async def content(video_id: str) -> Response:
        job = lookup(video_id)
        if isinstance(job, JSONResponse):
            return job
        if _phase(job)[0] != "succeeded":
            return _error(404, "not_found", f"video {video_id!r} is not completed")
        path = await asyncio.to_thread(core.render, job)
        return FileResponse(path, media_type="video/mp4")

    @r.post("/videos/{video_id}/cancel")
    async def cancel(video_id: str) -> Response:
        job = lookup(video_id)
        if isinstance(job, JSONResponse):
            return job
        if job.phase()[0] in ("queued", "running"):
            core.store.mark(job.id, canceled_at=time.time())
            job = core.store.get(job.id) or job
        return JSONResponse(_video(core, job))

    return r
