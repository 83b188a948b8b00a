"""Emulation of xAI's Grok Imagine video API (provider-apis.md §9a), mounted at
``/xai-video/v1``.

Matches the real service's shapes: ``{"request_id"}`` from the three create endpoints, the
deferred result ``{"status": "pending"}`` → ``done`` with ``video{url, duration,
respect_moderation}`` and ``usage.cost_in_usd_ticks``, a moderation block as ``done`` with
``respect_moderation: false`` and no URL (xai-sdk ``video.py``), an internal failure as HTTP 200
``failed`` + ``error{code, message}``, ``expired`` once a result is past its 24 h lifetime, and
the flat ``{"code", "error"}`` body of HTTP errors — including HTTP 400 for a bad key.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from vidgate.catalog.schema import Offering
from vidgate.sandbox.core import CREATE_FAULTS, SandboxCore, credential_ok
from vidgate.sandbox.store import SandboxJob
from vidgate.types import Resolution, frame_size

PROTOCOL = "xai-video"
#: xai-sdk: "The returned URL is valid for 24 hours"; past that the deferred result expires
RESULT_TTL_S = 24 * 3600.0
RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3")
#: 3P defaults: duration 8 (generations) / 6 (extensions); ratio and resolution UNCONFIRMED
DEFAULT_DURATION = 8
DEFAULT_EXTENSION = 6
#: edits keep the source clip's length and size, which the emulator cannot read: it stands in
#: an 8 s 480p 16:9 source (the edit endpoint takes sources up to 8.7 s)
EDIT_SOURCE_S = 8
#: cost_in_usd_ticks: 1 USD = 1e10 ticks (3P sample: a 1 s clip billed 500000000 = $0.05)
TICKS_PER_USD = 10_000_000_000


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"code": code, "error": message}, status_code=status, headers=headers)


def _cost_ticks(offering: Offering | None, params: dict[str, Any]) -> int:
    if offering is None:
        return 0
    res = Resolution(params["resolution"])
    dur = float(params["duration_s"])
    audio = bool(params["audio"])
    usd = 0.0
    base = next((r for r in offering.price if not r.surcharge and r.matches(res, dur, audio)), None)
    if base is not None:
        usd = base.cost(dur, offering.usd_per_credit)
    for rule in offering.price:
        if rule.surcharge and rule.matches(res, dur, audio):
            usd += rule.cost(dur, offering.usd_per_credit)
    return round(usd * TICKS_PER_USD)


def _result(core: SandboxCore, job: SandboxJob, base_url: str) -> dict[str, Any]:
    phase, progress = job.phase()
    if phase in ("queued", "running"):
        return {"status": "pending", "progress": int(progress * 100)}
    done_at = job.created_at + job.latency_s
    if time.time() > done_at + RESULT_TTL_S:
        return {"status": "expired"}
    p = job.params
    duration = round(float(p["duration_s"]))
    if phase == "succeeded":
        offering = core.offering_for(PROTOCOL, job.model)
        return {
            "status": "done",
            "model": job.model,
            "video": {
                "url": core.signed_file_url(base_url, job, ttl_s=RESULT_TTL_S),
                "duration": duration,
                "respect_moderation": True,
            },
            "usage": {"cost_in_usd_ticks": _cost_ticks(offering, p)},
        }
    if job.outcome == "fail:content_rejected":
        # A moderation block: "done", but the video is withheld (no URL).
        return {
            "status": "done",
            "model": job.model,
            "video": {"duration": duration, "respect_moderation": False},
            "usage": {"cost_in_usd_ticks": 0},
        }
    return {
        "status": "failed",
        "model": "",
        "video": {"duration": 0, "respect_moderation": True},
        "error": {"code": "internal_error", "message": "Video generation failed."},
    }


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _url_object(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("url"), str) and bool(value["url"])


def router(core: SandboxCore) -> APIRouter:
    r = APIRouter(prefix=f"/{PROTOCOL}/v1")

    def auth_error(request: Request) -> Response | None:
        auth = request.headers.get("authorization", "")
        key = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
        if not key:
            return _error(
                400,
                "invalid-argument",
                "No API key provided. You can obtain an API key from https://console.x.ai.",
            )
        if not credential_ok(key):
            return _error(
                400,
                "invalid-argument",
                "Incorrect API key provided. You can obtain an API key from https://console.x.ai.",
            )
        return None

    def bad(message: str) -> Response:
        return _error(400, "invalid-argument", message)

    async def create(request: Request, kind: str) -> Response:
        if (err := auth_error(request)) is not None:
            return err
        try:
            body = await request.json()
        except ValueError:
            return bad("Failed to parse the request body as JSON.")
        if not isinstance(body, dict):
            return _error(422, "invalid-argument", "The request body must be a JSON object.")
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            return bad("prompt must be a non-empty string.")
        if len(prompt) > 4096:
            return bad("prompt is longer than 4096 characters.")
        model = str(body.get("model") or "grok-imagine-video")
        offering = core.offering_for(PROTOCOL, model)
        if offering is None:
            return _error(
                404,
                "not-found",
                f"The model {model} does not exist or your team does not have access to it.",
            )

        ratio, resolution = "16:9", "480p"
        if kind == "generations":
            duration = _int(body.get("duration", DEFAULT_DURATION))
            if duration is None or not 1 <= duration <= 15:
                return bad("duration must be an integer between 1 and 15 seconds.")
            ratio = str(body.get("aspect_ratio", ratio))
            if ratio not in RATIOS:
                return bad(f"Invalid aspect_ratio {ratio!r}; supported: {', '.join(RATIOS)}.")
            resolution = str(body.get("resolution", resolution))
            allowed = ["480p", "720p"] + (["1080p"] if "1.5" in model else [])
            if resolution not in allowed:
                return bad(f"Invalid resolution {resolution!r} for {model}; supported: {allowed}.")
            image, refs = body.get("image"), body.get("reference_images")
            if image is not None and not _url_object(image):
                return bad('image must be {"url": "..."}.')
            if refs is not None:
                if image is not None:
                    return bad("image and reference_images cannot be used together.")
                if not isinstance(refs, list) or not all(_url_object(x) for x in refs):
                    return bad('reference_images must be a list of {"url": "..."}.')
                if len(refs) > 7:
                    return bad("At most 7 reference_images are allowed.")
        else:
            if not _url_object(body.get("video")):
                return bad('video must be {"url": "..."}.')
            if kind == "extensions":
                duration = _int(body.get("duration", DEFAULT_EXTENSION))
                if duration is None or not 1 <= duration <= 10:
                    return bad("duration must be an integer between 1 and 10 seconds.")
            else:
                duration = EDIT_SOURCE_S
        width, height = frame_size(Resolution(resolution), ratio)
        caps = offering.capabilities
        audio = caps.audio == "always" or (
            caps.audio == "optional" and body.get("generate_audio") is True
        )

        fault = core.pick_fault(PROTOCOL, model, CREATE_FAULTS)
        if fault is not None and fault.kind == "rate_limit":
            return _error(
                429,
                "resource-exhausted",
                "Too many requests: your team has exceeded its rate limit.",
                headers={"retry-after": f"{fault.retry_after_s:g}"},
            )
        if fault is not None and fault.kind == "unavailable":
            return _error(503, "unavailable", "The service is currently unavailable.")
        if fault is not None and fault.kind == "timeout":
            await asyncio.sleep(core.faults.hang_s)
            return _error(504, "deadline-exceeded", "Gateway timeout.")

        job, _ = core.create_job(
            protocol=PROTOCOL,
            model=model,
            body=body,
            params={
                "prompt": prompt,
                "width": width,
                "height": height,
                "fps": (caps.fps or [24])[0],
                "duration_s": duration,
                "audio": audio,
                "resolution": resolution,
                "kind": kind,
            },
            idempotency_key=None,  # xAI has no idempotency key
        )
        if fault is not None and fault.kind == "drop":
            core.store.event("dropped_response", job.id)
            await asyncio.sleep(core.faults.hang_s)
            return _error(504, "deadline-exceeded", "Gateway timeout.")
        return JSONResponse({"request_id": job.id})

    @r.post("/videos/generations")
    async def generations(request: Request) -> Response:
        return await create(request, "generations")

    @r.post("/videos/edits")
    async def edits(request: Request) -> Response:
        return await create(request, "edits")

    @r.post("/videos/extensions")
    async def extensions(request: Request) -> Response:
        return await create(request, "extensions")

    @r.get("/videos/{request_id}")
    async def result(request_id: str, request: Request) -> Response:
        if (err := auth_error(request)) is not None:
            return err
        job = core.store.get(request_id)
        if job is None or job.deleted or job.protocol != PROTOCOL:
            return _error(404, "not-found", f"Deferred request {request_id} was not found.")
        if core.pick_fault(PROTOCOL, job.model, {"poll_unavailable"}):
            return _error(503, "unavailable", "The service is currently unavailable.")
        return JSONResponse(_result(core, job, str(request.base_url)))

    return r
