"""Emulation of BytePlus ModelArk video-generation tasks (provider-apis.md §9b), mounted at
``/byteplus-ark/api/v3``.

Matches the official API reference: the ``content`` array with roles, parameters as strict body
fields or lenient ``--flag`` text commands, ``{"id": "cgt-..."}`` from create, the task object
(``status`` queued/running/succeeded/failed/cancelled/expired, ``content.video_url``, ``usage``,
``framespersecond``, Unix-second timestamps), DELETE semantics per status, the list endpoint,
the ``{"error": {"code", "message", "param", "type"}}`` envelope with ``Request id:`` in the
message and an ``x-request-id`` header, and the official width × height table per ratio.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
import uuid
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from vidgate.catalog.schema import Offering
from vidgate.sandbox.core import CREATE_FAULTS, SandboxCore, credential_ok
from vidgate.sandbox.store import SandboxJob
from vidgate.types import Resolution, frame_size

PROTOCOL = "byteplus-ark"
_STATUS = {
    "queued": "queued",
    "running": "running",
    "succeeded": "succeeded",
    "failed": "failed",
    "canceled": "cancelled",
}
RATIOS = ("16:9", "4:3", "1:1", "3:4", "9:16", "21:9")
DEFAULT_EXPIRES_AFTER = 172800  # official default; valid range [3600, 259200]
# Official "width × height" table. Seedance 1.5 pro column (used for 1.5 and newer models):
_SIZES_15 = {
    "480p": ((864, 496), (752, 560), (640, 640), (560, 752), (496, 864), (992, 432)),
    "720p": ((1280, 720), (1112, 834), (960, 960), (834, 1112), (720, 1280), (1470, 630)),
    "1080p": ((1920, 1080), (1664, 1248), (1440, 1440), (1248, 1664), (1080, 1920), (2206, 946)),
}
# ... and the Seedance 1.0 series column.
_SIZES_10 = {
    "480p": ((864, 480), (736, 544), (640, 640), (544, 736), (480, 864), (960, 416)),
    "720p": ((1248, 704), (1120, 832), (960, 960), (832, 1120), (704, 1248), (1504, 640)),
    "1080p": ((1920, 1088), (1664, 1248), (1440, 1440), (1248, 1664), (1088, 1920), (2176, 928)),
}
_FLAG = re.compile(r"--(\w+)\s+(\S+)")
_FLAG_ALIASES = {
    "rs": "resolution",
    "rt": "ratio",
    "dur": "duration",
    "cf": "camera_fixed",
    "camerafixed": "camera_fixed",
    "wm": "watermark",
}
_ROLES = {
    "image_url": (None, "first_frame", "last_frame", "reference_image"),
    "video_url": ("reference_video",),
    "audio_url": ("reference_audio",),
}


def _rid() -> str:
    return f"02{int(time.time() * 1000)}{uuid.uuid4().hex[:16]}"


def _error(
    status: int,
    code: str,
    message: str,
    *,
    type_: str,
    param: str = "",
    headers: dict[str, str] | None = None,
) -> Response:
    rid = _rid()
    return JSONResponse(
        {
            "error": {
                "code": code,
                "message": f"{message} Request id: {rid}",
                "param": param,
                "type": type_,
            }
        },
        status_code=status,
        headers={"x-request-id": rid, **(headers or {})},
    )


def _bad(message: str, param: str = "", code: str = "InvalidParameter") -> Response:
    return _error(400, code, message, type_="BadRequest", param=param)


def pixel_size(model: str, resolution: str, ratio: str) -> tuple[int, int]:
    table = _SIZES_10 if "seedance-1-0" in model else _SIZES_15
    if resolution in table and ratio in RATIOS:
        return table[resolution][RATIOS.index(ratio)]
    return frame_size(Resolution.parse(resolution), ratio)  # 4k: not in the official table


def _duration_ok(offering: Offering, value: int) -> bool:
    spec = offering.capabilities.durations
    return abs(spec.nearest(value) - value) < 1e-6


def _task(core: SandboxCore, job: SandboxJob, base_url: str) -> dict[str, Any]:
    p = job.params
    phase, _ = job.phase()
    status = _STATUS[phase]
    now = time.time()
    done_at = job.created_at + job.latency_s
    expires_at = job.created_at + float(p["expires_after_s"])
    updated = job.created_at
    if phase != "canceled" and done_at > expires_at and now >= expires_at:
        status, updated = "expired", expires_at  # still queued/running at its deadline
    elif phase == "running":
        updated = job.created_at + 0.1 * job.latency_s
    elif phase in ("succeeded", "failed"):
        updated = done_at
    elif phase == "canceled":
        updated = job.canceled_at or now
    error = None
    if status == "failed" and job.outcome == "fail:content_rejected":
        error = {
            "code": "OutputVideoSensitiveContentDetected",
            "message": "The request failed because the output video may contain sensitive "
            "information.",
        }
    elif status == "failed":
        error = {
            "code": "InternalServiceError",
            "message": "The service encountered an unexpected internal error.",
        }
    task: dict[str, Any] = {"id": job.id, "model": job.model, "status": status, "error": error}
    if status == "succeeded":
        task["content"] = {"video_url": core.signed_file_url(base_url, job, ttl_s=24 * 3600.0)}
        tokens = int(p["width"]) * int(p["height"]) * int(p["fps"]) * int(p["duration"]) // 1024
        task["usage"] = {"completion_tokens": tokens, "total_tokens": tokens}
    task.update(
        {
            "created_at": int(job.created_at),
            "updated_at": int(updated),
            "seed": p["seed"],
            "resolution": p["resolution"],
            "ratio": p["ratio"],
            "duration": p["duration"],
            "framespersecond": p["fps"],
            "service_tier": p["service_tier"],
            "execution_expires_after": p["execution_expires_after"],
        }
    )
    if p.get("generate_audio") is not None:
        task["generate_audio"] = p["generate_audio"]
    return task


def router(core: SandboxCore) -> APIRouter:
    r = APIRouter(prefix=f"/{PROTOCOL}/api/v3")

    def auth_error(request: Request) -> Response | None:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not credential_ok(auth[len("Bearer ") :]):
            return _error(
                401,
                "AuthenticationError",
                "The API key or AK/SK in the request is missing or invalid.",
                type_="Unauthorized",
            )
        return None

    def not_found(task_id: str) -> Response:
        return _error(
            404,
            "ResourceNotFound",
            f"The specified task {task_id} is not found.",
            type_="NotFound",
            param="id",
        )

    @r.post("/contents/generations/tasks")
    async def create(request: Request) -> Response:
        if (err := auth_error(request)) is not None:
            return err
        try:
            body = await request.json()
        except ValueError:
            return _bad("The request body is not valid JSON.")
        if not isinstance(body, dict):
            return _bad("The request body must be a JSON object.")
        # The official SDK (byteplus-python-sdk-v2, ark runtime tasks.create) sends every
        # optional field it was not given as JSON null; the service reads null as "not set".
        body = {k: v for k, v in body.items() if v is not None}
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return _bad("The parameter `model` is required.", "model", "MissingParameter")
        offering = core.offering_for(PROTOCOL, model)
        if offering is None:
            return _error(
                404,
                "InvalidEndpointOrModel.NotFound",
                f"The model or endpoint {model} does not exist or you do not have access to it.",
                type_="NotFound",
                param="model",
            )
        content = body.get("content")
        if not isinstance(content, list) or not content:
            return _bad("The parameter `content` is required.", "content", "MissingParameter")
        text, roles = "", []
        for i, item in enumerate(content):
            kind = item.get("type") if isinstance(item, dict) else None
            if kind == "text" and isinstance(item.get("text"), str):
                text = item["text"]
            elif kind in _ROLES and isinstance(item.get(kind), dict) and item[kind].get("url"):
                if item.get("role") not in _ROLES[kind]:
                    return _bad(f"Invalid role {item.get('role')!r}.", f"content[{i}].role")
                roles.append(item.get("role") or "first_frame")
            else:
                return _bad(f"The content item content[{i}] is invalid.", f"content[{i}]")
        frames = [x for x in roles if x in ("first_frame", "last_frame")]
        if frames and len(frames) != len(roles):
            return _bad("First/last frames cannot be combined with reference inputs.", "content")
        if "last_frame" in roles and "first_frame" not in roles:
            return _bad("A last_frame image needs a first_frame image.", "content")

        # Legacy text commands: lenient, an invalid value falls back to the default.
        prompt = _FLAG.sub("", text).strip()
        flags = {_FLAG_ALIASES.get(k, k): v for k, v in _FLAG.findall(text)}
        caps = offering.capabilities
        res_names = [x.value for x in caps.resolutions]
        res_flag = flags.get("resolution", "")
        resolution = res_flag if res_flag in res_names else "720p"
        default_ratio = "adaptive" if roles else "16:9"
        ratio_flag = flags.get("ratio", "")
        ratio = ratio_flag if ratio_flag in (*RATIOS, "adaptive") else default_ratio
        flag_dur = flags.get("duration", "")
        duration = int(caps.durations.nearest(5))  # the official default, 5 s
        if flag_dur.isdigit() and _duration_ok(offering, int(flag_dur)):
            duration = int(flag_dur)
        seed_flag = flags.get("seed", "")
        seed = int(seed_flag) if seed_flag.isdigit() else -1

        # Body fields: strict, an invalid value is a 400 naming the parameter.
        if "resolution" in body:
            if body["resolution"] not in res_names:
                return _bad(f"Invalid resolution {body['resolution']!r} for {model}.", "resolution")
            resolution = body["resolution"]
        if "ratio" in body:
            if body["ratio"] not in (*RATIOS, "adaptive"):
                return _bad(f"Invalid ratio {body['ratio']!r}.", "ratio")
            ratio = body["ratio"]
        if "duration" in body:
            d = body["duration"]
            if (
                isinstance(d, bool)
                or not isinstance(d, int)
                or not (d == -1 or _duration_ok(offering, d))
            ):
                return _bad(f"Invalid duration {d!r} for {model}.", "duration")
            duration = d if d != -1 else duration  # -1: "let the model decide"
        if "seed" in body:
            s = body["seed"]
            if isinstance(s, bool) or not isinstance(s, int) or not -1 <= s <= 2**32 - 1:
                return _bad(f"Invalid seed {s!r}.", "seed")
            seed = s
        expires_after = body.get("execution_expires_after", DEFAULT_EXPIRES_AFTER)
        if isinstance(expires_after, bool) or not isinstance(expires_after, int):
            return _bad("Invalid execution_expires_after.", "execution_expires_after")
        if not 3600 <= expires_after <= 259200:
            return _bad(
                "execution_expires_after must be in [3600, 259200].", "execution_expires_after"
            )
        generate_audio = body.get("generate_audio", True) if caps.audio != "never" else None
        if generate_audio is not None and not isinstance(generate_audio, bool):
            return _bad("Invalid generate_audio.", "generate_audio")
        if not prompt and not roles:
            return _bad("A text prompt or an image is required.", "content", "MissingParameter")

        shape = "16:9" if ratio == "adaptive" else ratio  # the emulator does not read images
        width, height = pixel_size(model, resolution, shape)
        fault = core.pick_fault(PROTOCOL, model, CREATE_FAULTS)
        if fault is not None and fault.kind == "rate_limit":
            return _error(
                429,
                "RateLimitExceeded.EndpointRPMExceeded",
                "The request has exceeded the RPM rate limit of the endpoint.",
                type_="TooManyRequests",
                headers={"retry-after": f"{fault.retry_after_s:g}"},
            )
        if fault is not None and fault.kind == "unavailable":
            return _error(
                503,
                "ServiceUnavailable",
                "The service is temporarily unavailable.",
                type_="ServiceUnavailable",
            )
        if fault is not None and fault.kind == "timeout":
            await asyncio.sleep(core.faults.hang_s)
            return _error(504, "RequestTimeout", "The request timed out.", type_="Timeout")

        audio = caps.audio == "always" or (caps.audio == "optional" and bool(generate_audio))
        job, _ = core.create_job(
            protocol=PROTOCOL,
            model=model,
            body={**body, "prompt": prompt},
            params={
                "prompt": prompt,
                "width": width,
                "height": height,
                "fps": (caps.fps or [24])[0],
                "duration_s": duration,
                "audio": audio,
                "duration": duration,
                "resolution": resolution,
                "ratio": shape,
                "seed": seed if seed != -1 else random.randint(0, 2**31 - 1),
                "generate_audio": generate_audio,
                "service_tier": str(body.get("service_tier") or "default"),
                "execution_expires_after": expires_after,
                # emulated time runs at time_scale, and so does the expiry deadline
                "expires_after_s": expires_after * core.time_scale,
            },
            idempotency_key=None,  # Ark has no idempotency key
            id_prefix=f"cgt-{time.strftime('%Y%m%d%H%M%S')}-",
        )
        if fault is not None and fault.kind == "drop":
            core.store.event("dropped_response", job.id)
            await asyncio.sleep(core.faults.hang_s)
            return _error(504, "RequestTimeout", "The request timed out.", type_="Timeout")
        return JSONResponse({"id": job.id}, headers={"x-request-id": _rid()})

    def lookup(task_id: str) -> SandboxJob | None:
        job = core.store.get(task_id)
        return None if job is None or job.deleted or job.protocol != PROTOCOL else job

    @r.get("/contents/generations/tasks/{task_id}")
    async def retrieve(task_id: str, request: Request) -> Response:
        if (err := auth_error(request)) is not None:
            return err
        job = lookup(task_id)
        if job is None:
            return not_found(task_id)
        if core.pick_fault(PROTOCOL, job.model, {"poll_unavailable"}):
            return _error(
                503,
                "ServiceUnavailable",
                "The service is temporarily unavailable.",
                type_="ServiceUnavailable",
            )
        return JSONResponse(
            _task(core, job, str(request.base_url)), headers={"x-request-id": _rid()}
        )

    @r.get("/contents/generations/tasks")
    async def list_tasks(
        request: Request,
        page_num: int = Query(1, ge=1, le=500),
        page_size: int = Query(10, ge=1, le=500),
        status: str | None = Query(None, alias="filter.status"),
    ) -> Response:
        if (err := auth_error(request)) is not None:
            return err
        base = str(request.base_url)
        tasks = [_task(core, j, base) for j in core.store.list(PROTOCOL, limit=500)]
        if status:
            tasks = [t for t in tasks if t["status"] == status]
        start = (page_num - 1) * page_size
        return JSONResponse({"items": tasks[start : start + page_size], "total": len(tasks)})

    @r.delete("/contents/generations/tasks/{task_id}")
    async def delete(task_id: str, request: Request) -> Response:
        if (err := auth_error(request)) is not None:
            return err
        job = lookup(task_id)
        if job is None:
            return not_found(task_id)
        status = _task(core, job, str(request.base_url))["status"]
        if status == "queued":
            core.store.mark(job.id, canceled_at=time.time())
        elif status in ("succeeded", "failed", "expired"):
            core.store.mark(job.id, deleted=True)
        else:  # running or cancelled (error code UNCONFIRMED)
            return _bad(f"The task {task_id} in status {status} cannot be deleted.", "id")
        return Response(status_code=200, headers={"x-request-id": _rid()})

    return r
