"""Emulation of the Runway API (provider-apis.md §3), mounted at ``/runway`` (the real base
URL, ``https://api.dev.runwayml.com``, has no path), so its routes are ``/runway/v1/...``.

Matches the real service's shapes: camelCase bodies (``promptText``, ``promptImage``,
``createdAt``, ``failureCode``), a required ``X-Runway-Version: 2024-11-06`` header, pixel
``ratio`` strings allowed per model and endpoint, ``duration`` as an integer, the task object
with ``PENDING``/``THROTTLED``/``RUNNING``/``SUCCEEDED``/``FAILED``/``CANCELLED``, output URLs
that expire (a day here; 24-48 h at Runway), and ``DELETE /v1/tasks/{id}`` answering 204.

Error bodies are ``{"error": "<human-readable>"}`` (docs "API Errors": "a JSON response with
an error member"); the ``issues`` list on validation errors and the exact messages are
UNCONFIRMED. ``THROTTLED`` appears while more than :data:`CONCURRENCY` earlier tasks are
still in flight, as at an account over its concurrency limit.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from vidgate.sandbox.core import CREATE_FAULTS, SandboxCore, credential_ok
from vidgate.sandbox.store import SandboxJob

PROTOCOL = "runway"
VERSIONS = {"2024-11-06"}
CONCURRENCY = 2
OUTPUT_TTL_S = 86_400.0

_GEN4_I2V = ("1280:720", "720:1280", "1104:832", "832:1104", "960:960", "1584:672")
_VEO = ("1280:720", "720:1280", "1080:1920", "1920:1080")
_WIDE = ("1280:720", "720:1280")
_2_TO_10 = frozenset(range(2, 11))


class _Model:
    def __init__(
        self,
        ratios: dict[str, tuple[str, ...]],
        durations: frozenset[int],
        *,
        text_required: tuple[str, ...] = ("text_to_video",),
        last_frame: bool = False,
        default_duration: int = 5,
    ) -> None:
        self.ratios = ratios
        self.durations = durations
        self.text_required = text_required
        self.last_frame = last_frame
        self.default_duration = default_duration


# §3's model table (the server's own rules, written independently of the adapter's).
# Defaults for an omitted `duration` are UNCONFIRMED except Veo 3's (8 only).
MODELS: dict[str, _Model] = {
    "gen4.5": _Model(
        {"image_to_video": _GEN4_I2V, "text_to_video": _WIDE},
        _2_TO_10,
        text_required=("image_to_video", "text_to_video"),
    ),
    "gen4_turbo": _Model({"image_to_video": _GEN4_I2V}, _2_TO_10),
    "veo3.1": _Model(
        {"image_to_video": _VEO, "text_to_video": _VEO},
        frozenset({4, 6, 8}),
        last_frame=True,
        default_duration=8,
    ),
    "veo3.1_fast": _Model(
        {"image_to_video": _VEO, "text_to_video": _VEO},
        frozenset({4, 6, 8}),
        last_frame=True,
        default_duration=8,
    ),
    "veo3": _Model(
        {"image_to_video": _VEO, "text_to_video": _VEO}, frozenset({8}), default_duration=8
    ),
    "gemini_omni_flash": _Model(
        {"image_to_video": _WIDE, "text_to_video": _WIDE}, frozenset(range(3, 11))
    ),
}

# Runway's price list in credits per second of output (1 credit = $0.01, docs "API Setup":
# "a minimum payment of $10 (at $0.01 per credit)"). The per-model rates are UNCONFIRMED
# (Runway's pricing page, not the digest); the emulator bills in its own unit, independent of
# the catalog's USD estimate, so the gateway's ledger meets a reported cost that differs.
CREDITS_PER_SECOND: dict[str, int] = {
    "gen4.5": 12,
    "gen4_turbo": 5,
    "veo3.1": 40,
    "veo3.1_fast": 15,
    "veo3": 40,
    "gemini_omni_flash": 10,
}

_FAILURES = {
    "fail:content_rejected": (
        "SAFETY.INPUT.TEXT",
        "The prompt text did not pass content moderation.",
    ),
    "fail:fail": ("INTERNAL.BAD_OUTPUT.CODE01", "An unexpected error occurred."),
}


def _rid() -> dict[str, str]:
    return {"x-request-id": str(uuid.uuid4())}


def _error(
    status: int,
    message: str,
    *,
    issues: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if issues:
        body["issues"] = issues
    return JSONResponse(body, status_code=status, headers={**_rid(), **(headers or {})})


def _invalid(field: str, message: str) -> JSONResponse:
    return _error(
        400,
        "Validation of body failed",
        issues=[{"path": [field], "message": message}],
    )


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{int(ts * 1000) % 1000:03d}Z"
    )


def _image_ok(value: Any) -> bool:
    return isinstance(value, str) and (
        value.startswith("https://") or value.startswith("data:image/")
    )


def _credits(job: SandboxJob) -> int:
    rate = CREDITS_PER_SECOND.get(job.model, 10)
    return round(rate * float(job.params["duration_s"]))


def router(core: SandboxCore) -> APIRouter:
    r = APIRouter(prefix=f"/{PROTOCOL}")

    def gate(request: Request) -> JSONResponse | None:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not credential_ok(auth[len("Bearer ") :]):
            return _error(401, "Invalid API key. Check your RUNWAYML_API_SECRET.")
        version = request.headers.get("x-runway-version")
        if version not in VERSIONS:
            return _error(
                400,
                f"Invalid or missing X-Runway-Version header; use one of {sorted(VERSIONS)}.",
            )
        return None

    def status_of(job: SandboxJob) -> str:
        phase, progress = job.phase()
        if phase != "queued":
            return {
                "running": "RUNNING",
                "succeeded": "SUCCEEDED",
                "failed": "FAILED",
                "canceled": "CANCELLED",
            }[phase]
        # An account over its concurrency: the task waits THROTTLED, then PENDING.
        ahead = sum(
            1
            for other in core.store.list(PROTOCOL, limit=100)
            if other.created_at < job.created_at and other.phase()[0] in ("queued", "running")
        )
        return "THROTTLED" if ahead >= CONCURRENCY and progress < 0.05 else "PENDING"

    def task(job: SandboxJob, request: Request) -> dict[str, Any]:
        status = status_of(job)
        out: dict[str, Any] = {
            "id": job.id,
            "createdAt": _iso(job.created_at),
            "status": status,
        }
        # The SDK's task union (task_retrieve_response.py): in-flight tasks carry the estimate
        # (a float), terminal ones the final integer charge; failed and cancelled tasks are
        # refunded and report 0.
        if status in ("PENDING", "THROTTLED", "RUNNING"):
            out["estimatedCost"] = {"credits": float(_credits(job))}
        else:
            out["cost"] = {"credits": _credits(job) if status == "SUCCEEDED" else 0}
        if status == "RUNNING":
            out["progress"] = round(job.phase()[1], 3)
        elif status == "SUCCEEDED":
            out["output"] = [core.signed_file_url(str(request.base_url), job, ttl_s=OUTPUT_TTL_S)]
        elif status == "FAILED":
            code, failure = _FAILURES.get(job.outcome, _FAILURES["fail:fail"])
            out["failure"] = failure
            out["failureCode"] = code
        return out

    async def create(request: Request, endpoint: str) -> Response:
        if (err := gate(request)) is not None:
            return err
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "The request body is not valid JSON.")
        if not isinstance(body, dict):
            return _error(400, "The request body must be a JSON object.")
        model_id = body.get("model")
        model = MODELS.get(str(model_id))
        if model is None or endpoint not in model.ratios:
            return _invalid("model", f"Invalid model {model_id!r} for /v1/{endpoint}.")
        offering = core.offering_for(PROTOCOL, str(model_id))
        text = body.get("promptText")
        if text is not None and (not isinstance(text, str) or not text.strip()):
            return _invalid("promptText", "promptText must be a non-empty string.")
        if text is None and endpoint in model.text_required:
            return _invalid("promptText", "Required")
        if isinstance(text, str) and len(text.encode("utf-16-le")) // 2 > 1000:
            return _invalid("promptText", "promptText must be at most 1000 characters.")
        if endpoint == "image_to_video":
            image = body.get("promptImage")
            if isinstance(image, list):
                positions = [i.get("position") for i in image if isinstance(i, dict)]
                allowed = ["first", "last"] if model.last_frame else ["first"]
                if (
                    len(positions) != len(image)
                    or not all(_image_ok(i.get("uri")) for i in image)
                    or "first" not in positions
                    or any(p not in allowed for p in positions)
                    or len(set(positions)) != len(positions)
                ):
                    return _invalid("promptImage", f"Positions allowed: {allowed}.")
            elif not _image_ok(image):
                return _invalid(
                    "promptImage", "Only HTTPS URLs or data:image/... URIs are allowed."
                )
        ratio = body.get("ratio")
        if ratio not in model.ratios[endpoint]:
            return _invalid(
                "ratio", f"Invalid enum value. Expected {' | '.join(model.ratios[endpoint])}."
            )
        duration = body.get("duration", model.default_duration)
        if not isinstance(duration, int) or isinstance(duration, bool):
            return _invalid("duration", "Expected integer.")
        if duration not in model.durations:
            return _invalid("duration", f"Invalid duration {duration}.")

        fault = core.pick_fault(PROTOCOL, str(model_id), CREATE_FAULTS)
        if fault is not None and fault.kind == "rate_limit":
            return _error(
                429,
                "You have exceeded the rate limit for this integration.",
                headers={"retry-after": f"{fault.retry_after_s:g}"},
            )
        if fault is not None and fault.kind == "unavailable":
            return _error(503, "Runway is shedding load. Please retry.")
        if fault is not None and fault.kind == "timeout":
            await asyncio.sleep(core.faults.hang_s)
            return _error(504, "Runway is overloaded.")

        width, height = (int(x) for x in str(ratio).split(":"))
        caps = offering.capabilities if offering else None
        audio = caps is not None and (
            caps.audio == "always" or (caps.audio == "optional" and body.get("audio") is True)
        )
        job, _ = core.create_job(
            protocol=PROTOCOL,
            model=str(model_id),
            body={**body, "prompt": text or ""},
            params={
                "prompt": text or "",
                "width": width,
                "height": height,
                "fps": (caps.fps if caps and caps.fps else [24])[0],
                "duration_s": float(duration),
                "audio": audio,
            },
            idempotency_key=None,  # Runway has no idempotency key (§3)
        )
        if fault is not None and fault.kind == "drop":
            core.store.event("dropped_response", job.id)
            await asyncio.sleep(core.faults.hang_s)
            return _error(504, "Runway is overloaded.")
        return JSONResponse(
            {"id": job.id, "estimatedCost": {"credits": float(_credits(job))}}, headers=_rid()
        )

    @r.post("/v1/text_to_video")
    async def text_to_video(request: Request) -> Response:
        return await create(request, "text_to_video")

    @r.post("/v1/image_to_video")
    async def image_to_video(request: Request) -> Response:
        return await create(request, "image_to_video")

    def lookup(task_id: str) -> SandboxJob | JSONResponse:
        job = core.store.get(task_id)
        if job is None or job.deleted or job.protocol != PROTOCOL:
            return _error(404, "Task not found.")
        return job

    @r.get("/v1/tasks/{task_id}")
    async def retrieve(task_id: str, request: Request) -> Response:
        if (err := gate(request)) is not None:
            return err
        job = lookup(task_id)
        if isinstance(job, JSONResponse):
            return job
        if core.pick_fault(PROTOCOL, job.model, {"poll_unavailable"}):
            return _error(503, "Runway is shedding load. Please retry.")
        return JSONResponse(task(job, request), headers=_rid())

    @r.delete("/v1/tasks/{task_id}")
    async def delete(task_id: str, request: Request) -> Response:
        if (err := gate(request)) is not None:
            return err
        job = lookup(task_id)
        if isinstance(job, JSONResponse):
            return job
        if job.phase()[0] in ("queued", "running"):
            # Cancels an in-flight task; it stays readable as CANCELLED.
            core.store.mark(job.id, canceled_at=time.time())
        else:
            # Deletes a finished one: later reads are 404 (§3).
            core.store.mark(job.id, deleted=True)
        return Response(status_code=204, headers=_rid())

    return r
