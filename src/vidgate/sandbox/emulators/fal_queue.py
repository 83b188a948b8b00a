"""Emulation of the fal.ai queue API (provider-apis.md §7), mounted at ``/fal-queue``.

Serves any model id path, sub-paths included (``POST /fal-queue/fal-ai/kling-video/v3/pro/
text-to-video``). Like fal, the request URLs it hands back name only the *app*
(``owner/alias/requests/{id}``, no sub-path) and are built from the caller's base URL; status,
result and cancel calls under any other prefix answer 404, so a client that rebuilds them from
the model id fails here as it would at fal.

Shapes: ``Authorization: Key``; statuses ``IN_QUEUE`` (with ``queue_position``),
``IN_PROGRESS`` (``logs``) and ``COMPLETED`` (``metrics``, ``error``, ``error_type``); a failed
run is ``COMPLETED`` with ``error`` set and its result answers 4xx/5xx with ``detail`` (a
FastAPI-style list for model errors, a string plus ``error_type`` for request errors);
``x-fal-request-id`` on every answer; ``PUT .../cancel`` answers 202
``CANCELLATION_REQUESTED``, 400 ``ALREADY_COMPLETED`` or 404 ``NOT_FOUND`` (the last two codes
are the digest's plausible defaults). fal validates a model's input when the run starts, not at
submit, so an input the offering's endpoint would refuse is queued and then fails with 422.
A cancelled request reads ``COMPLETED`` with ``error_type: client_cancelled`` and its result
answers 499 (fal's "Request Errors" table; the exact status after a cancel is UNCONFIRMED).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from vidgate.catalog.schema import Offering
from vidgate.providers.fal_queue import Route, app_id, routes
from vidgate.sandbox.core import CREATE_FAULTS, SandboxCore, credential_ok
from vidgate.sandbox.store import SandboxJob
from vidgate.types import Resolution, frame_size, parse_aspect

PROTOCOL = "fal-queue"
_ERRORS_DOC = "https://docs.fal.ai/errors#"


def _answer(
    body: Any, status: int = 200, *, request_id: str | None = None, **headers: str
) -> JSONResponse:
    h = {"x-fal-request-id": request_id or str(uuid.uuid4())}
    h.update({k.replace("_", "-"): v for k, v in headers.items()})
    return JSONResponse(body, status_code=status, headers=h)


def _detail(loc: str, msg: str, type_: str, value: Any = None) -> dict[str, Any]:
    """One item of a fal model error (fal docs "Model Errors": loc, msg, type, url)."""
    item: dict[str, Any] = {"loc": ["body", loc], "msg": msg, "type": type_}
    item["url"] = _ERRORS_DOC + type_
    if value is not None:
        item["input"] = value
    return item


def _route_for(core: SandboxCore, endpoint: str) -> tuple[Offering | None, Route | None]:
    offering = core.offering_for(PROTOCOL, endpoint)
    if offering is not None and offering.protocol == PROTOCOL:
        return offering, routes(offering).get(endpoint)
    for o in core.catalog.offerings.values():
        if o.protocol == PROTOCOL and (route := routes(o).get(endpoint)) is not None:
            return o, route
    return None, None


# --- reading a model input the way the offering's endpoint would --------------------------


def _duration(body: dict[str, Any], route: Route | None, errors: list[dict[str, Any]]) -> float:
    if route is None:  # an uncatalogued model: read what is there, leniently
        raw = body.get("duration", 5)
        try:
            seconds = float(str(raw).rstrip("s"))
        except ValueError:
            seconds = -1.0
        if not 0 < seconds <= 60:
            errors.append(
                _detail("duration", "Input should be 1 to 60 seconds", "value_error", raw)
            )
            return 5.0
        return seconds
    spec = route.offering.capabilities.durations
    allowed = route.durations
    field = route.opt("duration_field", "duration")
    if not field or field not in body:
        return allowed[0] if allowed else spec.nearest(5.0)
    raw, fmt = body[field], route.opt("duration_format", "string")
    ok_type = {
        "int": isinstance(raw, int) and not isinstance(raw, bool),
        "seconds_suffix": isinstance(raw, str) and raw.endswith("s"),
    }.get(fmt, isinstance(raw, str) and not raw.endswith("s"))
    try:
        seconds = float(str(raw).rstrip("s")) if ok_type else -1.0
    except ValueError:
        seconds = -1.0
    if allowed or spec.values:
        valid = list(allowed or spec.values or [])
    else:  # a range: fal lists every accepted value in its enum
        lo, hi, step = float(spec.min or 0), float(spec.max or 0), spec.step
        valid = [lo + i * step for i in range(round((hi - lo) / step) + 1)]
    if not any(abs(v - seconds) < 1e-6 for v in valid):
        shown = " or ".join(repr(v) for v in _wire_values(valid, fmt))
        errors.append(_detail(field, f"Input should be {shown}", "literal_error", raw))
        return spec.nearest(5.0)
    return seconds


def _wire_values(values: list[float], fmt: str) -> list[Any]:
    if fmt == "int":
        return [round(v) for v in values]
    return [f"{v:g}s" if fmt == "seconds_suffix" else f"{v:g}" for v in values]


def _resolution(
    body: dict[str, Any], route: Route | None, errors: list[dict[str, Any]]
) -> Resolution:
    if route is None:
        try:
            return Resolution.parse(str(body.get("resolution", "720p")))
        except ValueError:
            return Resolution.R720P
    field = route.opt("resolution_field")
    if not field or field not in body:
        return route.native_resolution
    reverse = {v: k for k, v in route.resolution_map.items()}
    raw = str(body[field])
    declared = route.offering.capabilities.resolutions
    try:
        res = Resolution.parse(reverse.get(raw, raw))
    except ValueError:
        res = None
    if res is None or res not in declared:
        shown = ", ".join(repr(route.resolution_map.get(r.value, r.value)) for r in declared)
        errors.append(_detail(field, f"Input should be {shown}", "literal_error", raw))
        return declared[0]
    return res


def _aspect(body: dict[str, Any], route: Route | None, errors: list[dict[str, Any]]) -> str:
    ratios = route.offering.capabilities.aspect_ratios if route else ["16:9"]
    field = route.opt("aspect_ratio_field", "aspect_ratio") if route else "aspect_ratio"
    raw = body.get(field) if field else None
    if raw is None or raw == "auto":
        return ratios[0]
    if route is not None and raw not in ratios:
        shown = ", ".join(repr(r) for r in ratios)
        errors.append(_detail(field, f"Input should be {shown}", "literal_error", raw))
        return ratios[0]
    try:
        parse_aspect(str(raw))
    except ValueError:
        errors.append(_detail(field, "Input should be W:H", "value_error", raw))
        return ratios[0]
    return str(raw)


def _params(body: dict[str, Any], route: Route | None) -> tuple[dict[str, Any], list[Any]]:
    """What the run would render (prompt, width, height, fps, duration_s, audio) and the
    validation errors fal would report for this input."""
    errors: list[dict[str, Any]] = []
    prompt_field = route.opt("prompt_field", "prompt") if route else "prompt"
    prompt = body.get(prompt_field)
    if not isinstance(prompt, str) or not prompt.strip():
        errors.append(_detail(prompt_field, "Field required", "missing"))
    if route is not None and route.key in ("image_to_video", "first_last_frame"):
        image = route.opt("frames_field") or route.opt("image_field", "image_url")
        if image not in body:
            errors.append(_detail(image, "Field required", "missing"))
    duration = _duration(body, route, errors)
    res = _resolution(body, route, errors)
    ratio = _aspect(body, route, errors)
    width, height = frame_size(res, ratio)
    caps = route.offering.capabilities if route else None
    fps = (caps.fps or [24])[0] if caps else 24
    if route is not None and (fps_field := route.opt("fps_field")) and fps_field in body:
        raw_fps = body[fps_field]
        if isinstance(raw_fps, int) and caps is not None and raw_fps in caps.fps:
            fps = raw_fps
        else:
            shown = " or ".join(str(f) for f in (caps.fps if caps else [fps]))
            errors.append(_detail(fps_field, f"Input should be {shown}", "literal_error", raw_fps))
    if caps is None:
        audio = bool(body.get("generate_audio", False))
    elif caps.audio == "optional" and route is not None:
        audio = bool(body.get(route.opt("audio_field") or "generate_audio", True))
    else:
        audio = caps.audio == "always"
    params = {
        "prompt": prompt if isinstance(prompt, str) else "",
        "width": width,
        "height": height,
        "fps": fps,
        "duration_s": duration,
        "audio": audio,
    }
    return params, errors


# --- answers ------------------------------------------------------------------------------


def _urls(request: Request, job: SandboxJob) -> dict[str, str]:
    base = f"{str(request.base_url).rstrip('/')}/{PROTOCOL}/{app_id(job.params['endpoint'])}"
    req = f"{base}/requests/{job.id}"
    return {"response_url": req, "status_url": f"{req}/status", "cancel_url": f"{req}/cancel"}


def _ending(job: SandboxJob) -> tuple[str | None, str | None]:
    """(error, error_type) a COMPLETED status carries."""
    phase, _ = job.phase()
    if phase == "canceled":
        return "Request was cancelled by the client.", "client_cancelled"
    if job.params.get("invalid"):
        return "Invalid status code: 422", None
    if phase == "failed":
        if job.outcome == "fail:content_rejected":
            return "Invalid status code: 422", None
        return "Invalid status code: 500", "runner_server_error"
    return None, None


def _status(request: Request, job: SandboxJob, with_logs: bool) -> dict[str, Any]:
    phase, progress = job.phase()
    body: dict[str, Any] = {"request_id": job.id, **_urls(request, job)}
    logs = [
        {
            "message": f"Generating... {int(progress * 100)}%",
            "level": "INFO",
            "source": "USER",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    ]
    if phase == "queued":
        body.update(status="IN_QUEUE", queue_position=max(0, int((0.1 - progress) * 40)))
    elif phase == "running":
        body.update(status="IN_PROGRESS", logs=logs if with_logs else None)
    else:
        error, error_type = _ending(job)
        body.update(
            status="COMPLETED",
            logs=logs if with_logs else None,
            metrics={"inference_time": round(job.latency_s, 3)},
            error=error,
            error_type=error_type,
        )
    return body


def _result(core: SandboxCore, request: Request, job: SandboxJob) -> JSONResponse:
    phase, _ = job.phase()
    rid = job.id
    if phase in ("queued", "running"):
        return _answer({"detail": "Request is still in progress"}, 400, request_id=rid)
    if phase == "canceled":
        return _answer(
            {"detail": "Request was cancelled by the client.", "error_type": "client_cancelled"},
            499,
            request_id=rid,
            x_fal_error_type="client_cancelled",
        )
    if job.params.get("invalid"):
        return _answer({"detail": job.params["invalid"]}, 422, request_id=rid)
    if job.outcome == "fail:content_rejected":
        msg = (
            "The content could not be processed because it contained material flagged by a "
            "content checker."
        )
        detail = [_detail("prompt", msg, "content_policy_violation")]
        return _answer({"detail": detail}, 422, request_id=rid, x_fal_retryable="false")
    if phase == "failed":
        return _answer(
            {"detail": "Internal server error", "error_type": "runner_server_error"},
            500,
            request_id=rid,
            x_fal_error_type="runner_server_error",
            x_fal_retryable="true",
        )
    video = {
        "url": core.signed_file_url(str(request.base_url), job),
        "content_type": "video/mp4",
        "file_name": "output.mp4",
    }
    out: dict[str, Any] = {"video": video}
    if job.params.get("seed") is not None:
        out["seed"] = job.params["seed"]
    return _answer(out, request_id=rid)


def router(core: SandboxCore) -> APIRouter:
    r = APIRouter(prefix=f"/{PROTOCOL}")

    def auth_error(request: Request) -> JSONResponse | None:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Key ") or not credential_ok(auth[len("Key ") :]):
            return _answer({"detail": "No user found for Key ID and Secret"}, 401)
        return None

    def lookup(app: str, request_id: str) -> SandboxJob | JSONResponse:
        job = core.store.get(request_id)
        if job is None or job.protocol != PROTOCOL or app_id(job.params["endpoint"]) != app:
            return _answer({"detail": "Request not found"}, 404)
        return job

    # The request routes come first: their paths also match the catch-all submit path.
    @r.get("/{app:path}/requests/{request_id}/status")
    async def status(app: str, request_id: str, request: Request, logs: str = "0") -> Response:
        if (err := auth_error(request)) is not None:
            return err
        job = lookup(app, request_id)
        if isinstance(job, JSONResponse):
            return job
        if core.pick_fault(PROTOCOL, job.model, {"poll_unavailable"}):
            return _answer({"detail": "Service Unavailable"}, 503, request_id=job.id)
        with_logs = logs.lower() in ("1", "true")
        return _answer(_status(request, job, with_logs), request_id=job.id)

    @r.get("/{app:path}/requests/{request_id}")
    async def result(app: str, request_id: str, request: Request) -> Response:
        if (err := auth_error(request)) is not None:
            return err
        job = lookup(app, request_id)
        if isinstance(job, JSONResponse):
            return job
        if core.pick_fault(PROTOCOL, job.model, {"poll_unavailable"}):
            return _answer({"detail": "Service Unavailable"}, 503, request_id=job.id)
        return _result(core, request, job)

    @r.put("/{app:path}/requests/{request_id}/cancel")
    async def cancel(app: str, request_id: str, request: Request) -> Response:
        if (err := auth_error(request)) is not None:
            return err
        job = lookup(app, request_id)
        if isinstance(job, JSONResponse):
            return _answer({"status": "NOT_FOUND"}, 404)
        if job.phase()[0] not in ("queued", "running"):
            return _answer({"status": "ALREADY_COMPLETED"}, 400, request_id=job.id)
        # Queued work is removed; running work gets a signal the (emulated) app honours.
        core.store.mark(job.id, canceled_at=time.time())
        return _answer({"status": "CANCELLATION_REQUESTED"}, 202, request_id=job.id)

    @r.post("/{endpoint:path}")
    async def submit(endpoint: str, request: Request) -> Response:
        if (err := auth_error(request)) is not None:
            return err
        endpoint = endpoint.strip("/")
        if endpoint.count("/") < 1:
            return _answer({"detail": f"Application '{endpoint}' not found"}, 404)
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            detail = [_detail("body", "Input should be a valid dictionary", "dict_type")]
            return _answer({"detail": detail}, 422)
        offering, route = _route_for(core, endpoint)
        model = offering.provider_model_id if offering else endpoint

        fault = core.pick_fault(PROTOCOL, model, CREATE_FAULTS)
        if fault is not None and fault.kind == "rate_limit":
            return _answer(
                {"detail": "Too many requests"}, 429, retry_after=f"{fault.retry_after_s:g}"
            )
        if fault is not None and fault.kind == "unavailable":
            return _answer({"detail": "Service Unavailable"}, 503)
        if fault is not None and fault.kind == "timeout":
            await asyncio.sleep(core.faults.hang_s)
            return _answer({"detail": "Gateway Timeout"}, 504)

        params, errors = _params(body, route)
        params["endpoint"] = endpoint
        if errors:
            params["invalid"] = errors
        if isinstance(body.get("seed"), int):
            params["seed"] = body["seed"]
        # fal has no idempotency header: every POST is a new request.
        job, _ = core.create_job(
            protocol=PROTOCOL, model=model, body=body, params=params, idempotency_key=None
        )
        if fault is not None and fault.kind == "drop":
            core.store.event("dropped_response", job.id)
            await asyncio.sleep(core.faults.hang_s)
            return _answer({"detail": "Gateway Timeout"}, 504)
        return _answer(
            {
                "request_id": job.id,
                "gateway_request_id": job.id,
                **_urls(request, job),
                "status": "IN_QUEUE",
                "queue_position": 0,
            },
            request_id=job.id,
        )

    return r
