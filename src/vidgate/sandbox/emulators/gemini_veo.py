"""Emulation of the Gemini API's Veo endpoints (provider-apis.md §2), mounted at
``/gemini-veo/v1beta``.

Matches the real service's shapes: ``models/{model}:predictLongRunning`` answering
``{"name": "models/{model}/operations/{id}"}``; an operation that is just ``{"name"}`` while
running (proto3 JSON omits ``done: false``), then ``done: true`` with a ``response`` whose
``generateVideoResponse.generatedSamples[].video.uri`` is a Files API URI, or RAI-filtered
(no samples, ``raiMediaFilteredCount`` + reasons), or an ``error`` with a google.rpc code;
camelCase fields; the Google error envelope; an invalid key answered 400 ``INVALID_ARGUMENT``
/ ``API_KEY_INVALID`` and a missing one 403 ``PERMISSION_DENIED``; ``files/{id}:download``
needing the key. There is no cancel and no idempotency key, as on the real API.

The helpers here (error envelope, create faults, request validation) are shared with the
Vertex AI emulation, which speaks the same instance/parameter schema.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from vidgate.catalog.schema import Offering
from vidgate.sandbox.core import CREATE_FAULTS, FaultRule, SandboxCore, credential_ok
from vidgate.sandbox.emulators._gemini_judge import add_generate_content
from vidgate.sandbox.store import SandboxJob
from vidgate.types import Resolution, frame_size

PROTOCOL = "gemini-veo"

#: parameters the Gemini API takes for Veo (the SDK rejects seed, fps, generateAudio,
#: storageUri, pubsubTopic, compressionQuality, resizeMode in Gemini API mode).
GEMINI_PARAMETERS = frozenset(
    {
        "aspectRatio",
        "resolution",
        "durationSeconds",
        "sampleCount",
        "negativePrompt",
        "enhancePrompt",
        "personGeneration",
    }
)
_CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
FILTERED_REASON = (
    "Unable to generate videos because the prompt or its output violates the usage "
    "guidelines. Try rephrasing the prompt."
)


def google_error(
    code: int,
    message: str,
    *,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The Google JSON error envelope."""
    err: dict[str, Any] = {"code": code, "message": message, "status": _CODES.get(code, "UNKNOWN")}
    if details:
        err["details"] = details
    return JSONResponse({"error": err}, status_code=code, headers=headers)


def bad_request(message: str) -> JSONResponse:
    return google_error(400, message)


async def create_fault(
    core: SandboxCore, protocol: str, model: str
) -> tuple[Response | None, FaultRule | None]:
    """Apply a create-time fault: (an answer to send instead, the fault to apply after
    recording the job — only "drop")."""
    fault = core.pick_fault(protocol, model, CREATE_FAULTS)
    if fault is None:
        return None, None
    if fault.kind == "rate_limit":
        # Google puts the delay in RetryInfo; the header is kept for generic clients.
        delay = f"{fault.retry_after_s:g}"
        return google_error(
            429,
            "Resource has been exhausted (e.g. check quota).",
            details=[
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [
                        {"quotaId": "PredictLongRunningRequestsPerMinutePerProjectPerModel"}
                    ],
                },
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{delay}s"},
            ],
            headers={"retry-after": delay},
        ), None
    if fault.kind == "unavailable":
        return google_error(503, "The service is currently unavailable."), None
    if fault.kind == "timeout":
        await asyncio.sleep(core.faults.hang_s)
        return google_error(504, "Deadline expired before operation could complete."), None
    return None, fault  # drop


async def hang_after_drop(core: SandboxCore, job: SandboxJob) -> JSONResponse:
    core.store.event("dropped_response", job.id)
    await asyncio.sleep(core.faults.hang_s)
    return google_error(504, "Deadline expired before operation could complete.")


async def json_object(request: Request) -> dict[str, Any] | JSONResponse:
    try:
        body = await request.json()
    except ValueError:
        return bad_request("Invalid JSON payload received.")
    if not isinstance(body, dict):
        return bad_request("Invalid JSON payload received. Expected an object.")
    return body


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_media(value: Any, field: str, *, keys: Iterable[str], mime_prefix: str) -> str | None:
    """None when ``value`` is ``{<one of keys>: str, mimeType?: str}``, else an error."""
    if not isinstance(value, dict):
        return f"`{field}` must be an object."
    if "inlineData" in value:
        return f"Invalid JSON payload received. Unknown name \"inlineData\" at '{field}'."
    present = [k for k in keys if k in value]
    if len(present) != 1 or not isinstance(value[present[0]], str) or not value[present[0]]:
        return f"`{field}` needs exactly one of {', '.join(keys)}."
    mime = value.get("mimeType", value.get("encoding"))
    if mime is not None and not (isinstance(mime, str) and mime.startswith(mime_prefix)):
        return f"`{field}` has an unsupported mime type {mime!r}."
    return None


def validate_create(
    body: dict[str, Any],
    offering: Offering,
    *,
    allowed: frozenset[str],
    image_keys: tuple[str, ...],
    video_keys: tuple[str, ...],
) -> tuple[dict[str, Any], dict[str, Any]] | str:
    """(instance, parameters) of a valid predictLongRunning body, or the error message."""
    instances = body.get("instances")
    if not isinstance(instances, list) or len(instances) != 1 or not isinstance(instances[0], dict):
        return "`instances` must hold exactly one instance."
    inst: dict[str, Any] = instances[0]
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        return "`parameters` must be an object."
    for key in params:
        if key not in allowed:
            return f"`{key}` isn't supported by this model."
    prompt = inst.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        return "`prompt` must be a string."
    if not (prompt or "").strip() and "image" not in inst:
        return "A prompt is required for text-to-video."
    for field in ("image", "lastFrame"):
        if field in inst:
            err = validate_media(inst[field], field, keys=image_keys, mime_prefix="image/")
            if err:
                return err
    if "video" in inst:
        err = validate_media(inst["video"], "video", keys=video_keys, mime_prefix="video/")
        if err:
            return err
    if "lastFrame" in inst and "image" not in inst:
        return "`lastFrame` is only supported together with `image`."
    refs = inst.get("referenceImages")
    if refs is not None:
        if not isinstance(refs, list) or not refs:
            return "`referenceImages` must be a non-empty list."
        if any(k in inst for k in ("image", "lastFrame", "video")):
            return "`referenceImages` cannot be combined with image, lastFrame or video."
        for i, ref in enumerate(refs):
            if not isinstance(ref, dict) or str(ref.get("referenceType", "")).lower() not in (
                "asset",
                "style",
            ):
                return f"`referenceImages[{i}].referenceType` must be asset or style."
            err = validate_media(
                ref.get("image"),
                f"referenceImages[{i}].image",
                keys=image_keys,
                mime_prefix="image/",
            )
            if err:
                return err
    caps = offering.capabilities
    duration = params.get("durationSeconds", int(caps.durations.maximum))
    allowed_durations = caps.durations.values or []
    if not _is_int(duration) or (allowed_durations and float(duration) not in allowed_durations):
        return (
            f"`durationSeconds` must be an integer among "
            f"{', '.join(f'{d:g}' for d in allowed_durations)}; got {duration!r}."
        )
    aspect = params.get("aspectRatio", "16:9")
    if aspect not in caps.aspect_ratios:
        return f"`aspectRatio` {aspect!r} is not supported; use {', '.join(caps.aspect_ratios)}."
    resolution = params.get("resolution", "720p")
    if resolution not in [r.value for r in caps.resolutions]:
        return f"`resolution` {resolution!r} is not supported by {offering.provider_model_id}."
    count = params.get("sampleCount", 1)
    if not _is_int(count) or not 1 <= count <= 4:
        return "`sampleCount` must be between 1 and 4."
    return inst, {
        **params,
        "durationSeconds": duration,
        "aspectRatio": aspect,
        "resolution": resolution,
        "sampleCount": count,
    }


def render_params(
    inst: dict[str, Any], params: dict[str, Any], offering: Offering, *, audio: bool
) -> dict[str, Any]:
    width, height = frame_size(Resolution.parse(str(params["resolution"])), params["aspectRatio"])
    return {
        "prompt": str(inst.get("prompt") or ""),
        "width": width,
        "height": height,
        "fps": (offering.capabilities.fps or [24])[0],
        "duration_s": float(params["durationSeconds"]),
        "audio": audio,
        "samples": int(params["sampleCount"]),
    }


def operation(
    job: SandboxJob,
    name: str,
    success: Callable[[SandboxJob], dict[str, Any]],
    filtered: Callable[[SandboxJob], dict[str, Any]],
    response_type: str,
) -> dict[str, Any]:
    """The google.longrunning.Operation for a job, as proto3 JSON (no ``done: false``)."""
    phase, _ = job.phase()
    if phase in ("queued", "running"):
        return {"name": name}
    op: dict[str, Any] = {"name": name, "done": True}
    if phase == "succeeded":
        op["response"] = {"@type": response_type, **success(job)}
    elif phase == "canceled":
        op["error"] = {"code": 1, "message": "Operation was cancelled."}
    elif job.outcome == "fail:content_rejected":
        op["response"] = {"@type": response_type, **filtered(job)}
    else:
        op["error"] = {"code": 13, "message": "Video generation failed due to an internal error."}
    return op


def router(core: SandboxCore) -> APIRouter:
    r = APIRouter(prefix=f"/{PROTOCOL}/v1beta")
    response_type = (
        "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse"
    )

    def auth_error(request: Request) -> JSONResponse | None:
        key = request.headers.get("x-goog-api-key") or request.query_params.get("key")
        if not key:
            return google_error(
                403,
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity to call "
                "this API.",
            )
        if not credential_ok(key):
            return google_error(
                400,
                "API key not valid. Please pass a valid API key.",
                details=[
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                        "metadata": {"service": "generativelanguage.googleapis.com"},
                    }
                ],
            )
        return None

    def success(base: str) -> Callable[[SandboxJob], dict[str, Any]]:
        def build(job: SandboxJob) -> dict[str, Any]:
            uri = f"{base}/files/{job.id}:download?alt=media"
            n = int(job.params.get("samples", 1))
            return {"generateVideoResponse": {"generatedSamples": [{"video": {"uri": uri}}] * n}}

        return build

    def filtered(job: SandboxJob) -> dict[str, Any]:
        return {
            "generateVideoResponse": {
                "raiMediaFilteredCount": int(job.params.get("samples", 1)),
                "raiMediaFilteredReasons": [FILTERED_REASON],
            }
        }

    def api_base(request: Request) -> str:
        return f"{str(request.base_url).rstrip('/')}/{PROTOCOL}/v1beta"

    @r.post("/models/{model}:predictLongRunning")
    async def create(model: str, request: Request) -> Response:
        if (err := auth_error(request)) is not None:
            return err
        offering = core.offering_for(PROTOCOL, model)
        if offering is None:
            return google_error(
                404,
                f"models/{model} is not found for API version v1beta, or is not supported "
                "for predictLongRunning.",
            )
        body = await json_object(request)
        if isinstance(body, JSONResponse):
            return body
        if "webhookConfig" in body and not isinstance(body["webhookConfig"], dict):
            return bad_request("`webhookConfig` must be an object.")
        checked = validate_create(
            body,
            offering,
            allowed=GEMINI_PARAMETERS,
            image_keys=("bytesBase64Encoded",),
            video_keys=("uri", "encodedVideo"),
        )
        if isinstance(checked, str):
            return bad_request(checked)
        inst, params = checked
        answer, drop = await create_fault(core, PROTOCOL, model)
        if answer is not None:
            return answer
        # Gemini API mode cannot ask for audio: Veo 3.x always adds it.
        audio = offering.capabilities.audio == "always"
        job, _ = core.create_job(
            protocol=PROTOCOL,
            model=model,
            # core reads the moderation trigger from a top-level "prompt"
            body={"prompt": str(inst.get("prompt") or ""), **body},
            params=render_params(inst, params, offering, audio=audio),
            idempotency_key=None,  # the Gemini API has no idempotency key
        )
        if drop is not None:
            return await hang_after_drop(core, job)
        return JSONResponse({"name": f"models/{model}/operations/{job.id}"})

    def lookup(model: str, op_id: str) -> SandboxJob | None:
        job = core.store.get(op_id)
        if job is None or job.protocol != PROTOCOL or job.model != model:
            return None
        return job

    @r.get("/models/{model}/operations/{op_id}")
    async def get_operation(model: str, op_id: str, request: Request) -> Response:
        if (err := auth_error(request)) is not None:
            return err
        job = lookup(model, op_id)
        if job is None:
            return google_error(404, f"Operation models/{model}/operations/{op_id} not found.")
        if core.pick_fault(PROTOCOL, job.model, {"poll_unavailable"}):
            return google_error(503, "The service is currently unavailable.")
        name = f"models/{model}/operations/{op_id}"
        return JSONResponse(
            operation(job, name, success(api_base(request)), filtered, response_type)
        )

    @r.get("/files/{file_id}:download")
    async def download(file_id: str, request: Request, alt: str = "") -> Response:
        if (err := auth_error(request)) is not None:
            return err
        if alt != "media":
            return bad_request("Downloads need alt=media.")
        job = core.store.get(file_id)
        if job is None or job.protocol != PROTOCOL or job.phase()[0] != "succeeded":
            return google_error(404, f"File {file_id} not found.")
        path = await asyncio.to_thread(core.render, job)
        return FileResponse(path, media_type="video/mp4")

    # the VLM judge: generateContent lives on the same Gemini API base, behind the same key
    add_generate_content(r, core, auth_error)
    return r
