"""Emulation of the Kling AI official API (provider-apis.md §6), mounted at ``/kling``.

Matches the real service's shapes: the ``{code, message, request_id, data}`` envelope (code 0
and message ``SUCCEED`` on success), ``POST /v1/videos/{text2video|image2video}`` and reads on
the same path plus ``/{task_id}`` (or the ``external_task_id``), task statuses
``submitted``/``processing``/``succeed``/``failed`` with ``task_status_msg``, millisecond
timestamps, ``duration`` as a string, and the documented error codes with their HTTP statuses
(401/1000–1004 for the JWT, 429/1302 rate limit, 400/1201 bad parameter, 503/5001, 504/5002).

Auth is checked the way Kling does it: the bearer token must be an HS256 JWT whose signature
verifies with the sandbox's secret (``sandbox-key``, what every credential reads as in sandbox
mode), with ``iss``, ``exp`` and ``nbf`` present and current. A token signed with any other
secret (``invalid-key`` included) is a 401/1002, an expired one a 401/1004.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
import uuid
import warnings
from typing import Any

import jwt
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from vidgate.catalog.schema import Offering
from vidgate.sandbox.core import CREATE_FAULTS, SandboxCore, credential_ok
from vidgate.sandbox.store import SandboxJob
from vidgate.settings import SANDBOX_CREDENTIAL
from vidgate.types import Resolution, frame_size

PROTOCOL = "kling"
ENDPOINTS = ("text2video", "image2video")
_STATUS = {
    "queued": "submitted",
    "running": "processing",
    "succeeded": "succeed",
    "failed": "failed",
    "canceled": "failed",  # Kling has no cancel; kept total for safety
}
ASPECT_RATIOS = {"16:9": 16 / 9, "9:16": 9 / 16, "1:1": 1.0}
MAX_PROMPT_CHARS = 2500
DEFAULT_MODES = {"720p": "std", "1080p": "pro"}  # UNCONFIRMED, as in the adapter
# task_status_msg wording is UNCONFIRMED; Kling's refusals speak of "risk control".
_MODERATION_MSG = "Failure to pass the risk control system"
_INTERNAL_MSG = "Task failed due to an internal error, please try again later"


def _rid() -> str:
    return str(uuid.uuid4())


def _ok(data: Any) -> JSONResponse:
    return JSONResponse({"code": 0, "message": "SUCCEED", "request_id": _rid(), "data": data})


def _error(
    status: int, code: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    # The error body has no data (provider-apis.md §6 "Errors").
    return JSONResponse(
        {"code": code, "message": message, "request_id": _rid()},
        status_code=status,
        headers=headers,
    )


def _bad(message: str) -> JSONResponse:
    return _error(400, 1201, message)


def _resolution_by_mode(offering: Offering) -> dict[str, Resolution]:
    raw = offering.adapter_options.get("modes")
    pairs = (
        [tuple(p.split("=", 1)) for p in raw.split(",") if "=" in p]
        if raw
        else list(DEFAULT_MODES.items())
    )
    out: dict[str, Resolution] = {}
    for res, mode in pairs:
        out.setdefault(mode.strip(), Resolution.parse(res))
    return out


def _image_ratio(image: str) -> str | None:
    """The aspect ratio (of the three Kling renders) nearest to a base64 PNG's, if readable."""
    try:
        head = base64.b64decode(image[:64] + "=" * (-len(image[:64]) % 4))
    except (binascii.Error, ValueError):
        return None
    if head[:8] != b"\x89PNG\r\n\x1a\n" or len(head) < 24:
        return None
    w, h = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if not w or not h:
        return None
    return min(ASPECT_RATIOS, key=lambda r: abs(ASPECT_RATIOS[r] - w / h))


def _check_image(value: Any, field: str) -> JSONResponse | None:
    if not isinstance(value, str) or not value:
        return _bad(f"{field} must be an image URL or base64 string")
    if value.startswith("data:"):
        # The trap the docs warn about: base64 must come without any data: prefix.
        return _bad(f"{field} is invalid: base64 must not carry a data: prefix")
    if value.startswith(("http://", "https://")):
        return None
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return _bad(f"{field} is neither a URL nor valid base64")
    return None


def _task(job: SandboxJob, base_url: str, core: SandboxCore) -> dict[str, Any]:
    phase, _ = job.phase()
    done = job.created_at + job.latency_s
    p = job.params
    msg = ""
    result: dict[str, Any] = {}
    if phase == "failed":
        msg = _MODERATION_MSG if job.outcome == "fail:content_rejected" else _INTERNAL_MSG
    elif phase == "succeeded":
        result = {
            "videos": [
                {
                    "id": f"{job.id}0",
                    "url": core.signed_file_url(base_url, job),
                    # documented beside url (docs "Text to Video" query response); the
                    # emulator renders no watermark, so it is the same clip
                    "watermark_url": core.signed_file_url(base_url, job),
                    "duration": f"{float(p['duration_s']):g}",
                }
            ]
        }
    ext = p.get("external_task_id")
    updated = done if phase in ("succeeded", "failed") else min(time.time(), done)
    return {
        "task_id": job.id,
        "task_status": _STATUS[phase],
        "task_status_msg": msg,
        "task_info": {"external_task_id": ext} if ext else {},
        "task_result": result,
        "watermark_info": {"enabled": False},
        # the units the finished task cost (a string, as documented); one unit per second
        # of output here: the per-model rates are UNCONFIRMED
        **({"final_unit_deduction": f"{float(p['duration_s']):g}"} if phase == "succeeded" else {}),
        "created_at": int(job.created_at * 1000),
        "updated_at": int(updated * 1000),
    }


def router(core: SandboxCore) -> APIRouter:
    r = APIRouter(prefix=f"/{PROTOCOL}")

    def auth_error(request: Request) -> JSONResponse | None:
        header = request.headers.get("authorization", "")
        if not header.strip():
            return _error(401, 1001, "Authorization is empty")
        if not header.startswith("Bearer "):
            return _error(401, 1002, "Authorization is invalid")
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*HMAC key.*")
                claims = jwt.decode(
                    header[len("Bearer ") :].strip(),
                    SANDBOX_CREDENTIAL,
                    algorithms=["HS256"],
                    options={"require": ["iss", "exp", "nbf"]},
                )
        except jwt.ExpiredSignatureError:
            return _error(401, 1004, "Authorization is expired")
        except jwt.ImmatureSignatureError:
            return _error(401, 1003, "Authorization is not yet valid")
        except jwt.InvalidTokenError:
            return _error(401, 1002, "Authorization is invalid")
        if not credential_ok(str(claims.get("iss") or "")):
            return _error(401, 1000, "Authentication failed")
        return None

    async def create(endpoint: str, request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, 1200, "invalid request: the body is not JSON")
        if not isinstance(body, dict):
            return _error(400, 1200, "invalid request: the body must be a JSON object")
        prompt = body.get("prompt", "")
        if not isinstance(prompt, str) or len(prompt) > MAX_PROMPT_CHARS:
            return _bad(f"prompt must be a string of at most {MAX_PROMPT_CHARS} characters")
        if endpoint == "text2video" and not prompt.strip():
            return _bad("prompt is required")
        model = str(body.get("model_name") or body.get("model") or "kling-v1")
        offering = core.offering_for(PROTOCOL, model)
        if offering is None:
            return _error(404, 1203, f"model_name {model} not found")
        caps = offering.capabilities
        duration = body.get("duration", "5")
        if not isinstance(duration, str) or not duration.isdigit():
            return _bad('duration must be a string of whole seconds, e.g. "5"')
        secs = float(duration)
        if abs(caps.durations.nearest(secs) - secs) > 1e-6:
            return _bad(f"duration {duration} is not supported by {model}")
        by_mode = _resolution_by_mode(offering)
        mode = body.get("mode", "std")
        if mode not in by_mode:
            return _bad(f"mode must be one of {', '.join(sorted(by_mode))}")
        sound = body.get("sound", "off")
        if sound not in ("on", "off"):
            return _bad("sound must be on or off")
        ratio = "16:9"
        if endpoint == "text2video":
            ratio = body.get("aspect_ratio", "16:9")
            if ratio not in ASPECT_RATIOS:
                return _bad(f"aspect_ratio must be one of {', '.join(ASPECT_RATIOS)}")
        else:
            images = {f: body[f] for f in ("image", "image_tail") if body.get(f) is not None}
            if not images:
                return _bad("image or image_tail is required")
            for field, value in images.items():
                if (err := _check_image(value, field)) is not None:
                    return err
            if "image_tail" in images and {"camera_control", "static_mask", "dynamic_masks"} & set(
                body
            ):
                return _bad("image_tail cannot be combined with masks or camera_control")
            ratio = _image_ratio(str(images.get("image") or images["image_tail"])) or ratio
        ext = body.get("external_task_id")
        if ext is not None and (not isinstance(ext, str) or not ext):
            return _bad("external_task_id must be a non-empty string")
        if ext and core.store.find_by_key(PROTOCOL, ext) is not None:
            # Unique per account (§6). The duplicate's wording is UNCONFIRMED.
            return _bad(f"external_task_id {ext} already exists")

        fault = core.pick_fault(PROTOCOL, model, CREATE_FAULTS)
        if fault is not None and fault.kind == "rate_limit":
            return _error(
                429, 1302, "rate limit exceeded", {"retry-after": f"{fault.retry_after_s:g}"}
            )
        if fault is not None and fault.kind == "unavailable":
            return _error(503, 5001, "service is temporarily unavailable (maintenance)")
        if fault is not None and fault.kind == "timeout":
            await asyncio.sleep(core.faults.hang_s)
            return _error(504, 5002, "server timeout")

        width, height = frame_size(by_mode[mode], ratio)
        job, _ = core.create_job(
            protocol=PROTOCOL,
            model=model,
            body=body,
            params={
                "prompt": prompt,
                "width": width,
                "height": height,
                "fps": (caps.fps or [24])[0],
                "duration_s": secs,
                "audio": caps.audio == "always" or (caps.audio == "optional" and sound == "on"),
                "endpoint": endpoint,
                "external_task_id": ext,
            },
            idempotency_key=ext,
        )
        if fault is not None and fault.kind == "drop":
            core.store.event("dropped_response", job.id)
            await asyncio.sleep(core.faults.hang_s)
            return _error(504, 5002, "server timeout")
        now_ms = int(job.created_at * 1000)
        return _ok(
            {
                "task_id": job.id,
                "task_status": "submitted",
                "task_info": {"external_task_id": ext} if ext else {},
                "created_at": now_ms,
                "updated_at": now_ms,
            }
        )

    def lookup(endpoint: str, task_id: str) -> SandboxJob | JSONResponse:
        job = core.store.get(task_id) or core.store.find_by_key(PROTOCOL, task_id)
        # A task is only found on the path it was created on.
        if job is None or job.protocol != PROTOCOL or job.params.get("endpoint") != endpoint:
            return _error(404, 1203, f"task {task_id} not found")
        return job

    @r.post("/v1/videos/{endpoint}")
    async def create_route(endpoint: str, request: Request) -> Response:
        if (err := auth_error(request)) is not None:
            return err
        if endpoint not in ENDPOINTS:
            return _error(404, 1202, f"invalid method: /v1/videos/{endpoint} is not emulated")
        return await create(endpoint, request)

    @r.get("/v1/videos/{endpoint}/{task_id}")
    async def query(endpoint: str, task_id: str, request: Request) -> Response:
        if (err := auth_error(request)) is not None:
            return err
        if endpoint not in ENDPOINTS:
            return _error(404, 1202, f"invalid method: /v1/videos/{endpoint} is not emulated")
        job = lookup(endpoint, task_id)
        if isinstance(job, JSONResponse):
            return job
        if core.pick_fault(PROTOCOL, job.model, {"poll_unavailable"}):
            return _error(503, 5001, "service is temporarily unavailable (maintenance)")
        return _ok(_task(job, str(request.base_url), core))

    @r.get("/v1/videos/{endpoint}")
    async def list_tasks(
        endpoint: str, request: Request, pageNum: int = 1, pageSize: int = 30
    ) -> Response:
        if (err := auth_error(request)) is not None:
            return err
        if endpoint not in ENDPOINTS:
            return _error(404, 1202, f"invalid method: /v1/videos/{endpoint} is not emulated")
        if not (1 <= pageNum <= 1000 and 1 <= pageSize <= 500):
            return _bad("pageNum is 1..1000 and pageSize is 1..500")
        jobs = [j for j in core.store.list(PROTOCOL, limit=100_000) if j.params.get("endpoint")]
        jobs = [j for j in jobs if j.params["endpoint"] == endpoint]
        page = jobs[(pageNum - 1) * pageSize : pageNum * pageSize]
        return _ok([_task(j, str(request.base_url), core) for j in page])

    return r
