"""Emulation of Replicate's predictions API (provider-apis.md §8), mounted at ``/replicate/v1``.

Matches the real service where the digest and Replicate's generated client document it:
``POST /models/{owner}/{name}/predictions`` and ``POST /predictions`` (with ``version``) answer
``201`` with the prediction object; ``GET /predictions/{id}``; ``POST /predictions/{id}/cancel``;
statuses ``starting``/``processing``/``succeeded``/``failed``/``canceled`` and ``aborted``
(``Cancel-After`` passed before the prediction started); ISO timestamps with a ``Z``;
``urls.get``/``urls.cancel``; ``output`` a URI string that stops working one hour after the
prediction ends, after which ``output`` is null and ``data_removed`` true; RFC 7807 problem
bodies (``Unauthenticated`` 401, ``Input validation failed`` 422 with ``invalid_fields``,
``Invalid version or not permitted`` 422, the throttling 429's ``detail``); ``Prefer: wait``
holds the create up to the asked seconds (≤ 60). Each model's input field names come from its
offering's ``adapter_options`` (``input.<role>``), the same catalog data the adapter reads.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from vidgate.catalog.schema import Offering
from vidgate.sandbox.core import CREATE_FAULTS, SandboxCore, credential_ok
from vidgate.sandbox.store import SandboxJob
from vidgate.types import Resolution, frame_size

PROTOCOL = "replicate"
#: inputs, outputs and logs of API predictions are deleted one hour after they end (§8)
OUTPUT_TTL_S = 3600.0
_TOP_LEVEL = {"input", "stream", "webhook", "webhook_events_filter", "webhook_completed"}
#: default input field per role; catalog offerings override with ``input.<role>``
_FIELDS = {
    "prompt": "prompt",
    "duration": "duration",
    "aspect_ratio": "aspect_ratio",
    "resolution": "resolution",
    "audio": "generate_audio",
    "fps": "",
    "num_frames": "",
    "first_frame": "image",
}
_STATUS = {
    "queued": "starting",
    "running": "processing",
    "succeeded": "succeeded",
    "failed": "failed",
    "canceled": "canceled",
}
_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_VERSION_ID = re.compile(r"^[0-9a-f]{64}$")
_SIZE = re.compile(r"^(\d{2,5})x(\d{2,5})$")
_MODERATION_ERROR = (
    "The input or output was flagged as sensitive. Please try again with different inputs. (E005)"
)
_INTERNAL_ERROR = "Prediction interrupted; please retry (code: PA)"


def _file_id(request: Request, url: str) -> str | None:
    """The file id when ``url`` is one of this emulator's Files API URLs, else None."""
    prefix = f"{str(request.base_url).rstrip('/')}/{PROTOCOL}/v1/files/"
    rest = url.removeprefix(prefix)
    return rest if rest != url and rest and "/" not in rest else None


def _now() -> float:
    """The emulator's clock (one place, so tests can move it past deadlines and expiries)."""
    return time.time()


def _problem(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {"detail": detail, "status": status}
    if title:
        body["title"] = title
    body.update(extra)
    return JSONResponse(
        body, status_code=status, headers=headers, media_type="application/problem+json"
    )


def _invalid(errors: list[tuple[str, str, str]]) -> JSONResponse:
    """422 ``Input validation failed`` with one ``invalid_fields`` entry per (type, field,
    description), as Replicate reports schema violations."""
    return _problem(
        422,
        "".join(f"- {field}: {desc}\n" for _, field, desc in errors),
        title="Input validation failed",
        invalid_fields=[{"type": t, "field": f, "description": d} for t, f, d in errors],
    )


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _go_duration(value: str) -> float | None:
    """Seconds in a Cancel-After value (``90s``, ``1m``, ``1h30m``, ``500ms``), else None."""
    text = value.strip()
    if not text or _GO_DURATION.sub("", text):
        return None
    total = sum(float(n) * _UNITS[u] for n, u in _GO_DURATION.findall(text))
    return total if total > 0 else None


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip().removesuffix("s"))
        except ValueError:
            return None
    return None


def _offering_for(core: SandboxCore, model: str) -> Offering | None:
    """The Replicate offering that names this model (as its id or a per-mode model)."""
    found = core.offering_for(PROTOCOL, model)
    if found is not None and found.protocol == PROTOCOL:
        return found
    for o in core.catalog.offerings.values():
        refs = {v.split(":")[0] for k, v in o.adapter_options.items() if k.startswith("model.")}
        if o.protocol == PROTOCOL and model in refs:
            return o
    return None


def _offering_for_version(core: SandboxCore, version: str) -> tuple[Offering, str] | None:
    for o in core.catalog.offerings.values():
        if o.protocol != PROTOCOL:
            continue
        if o.adapter_options.get("version") == version:
            return o, o.provider_model_id
        for k, v in o.adapter_options.items():
            if k.startswith("model.") and v.endswith(f":{version}"):
                return o, v.split(":")[0]
    return None


def _variant_of(offering: Offering, model: str, inp: dict[str, Any]) -> tuple[str, str | None]:
    """(mode, resolution) this model serves: from its ``model.<mode>[.<res>]`` key, else
    guessed from the input."""
    for k, v in offering.adapter_options.items():
        if k.startswith("model.") and v.split(":")[0] == model:
            parts = k.split(".")
            return parts[1], (parts[2] if len(parts) > 2 else None)
    image = _field(offering, "first_frame", "image-to-video")
    return ("image-to-video" if image and image in inp else "text-to-video"), None


def _field(offering: Offering, role: str, mode: str) -> str:
    opts = offering.adapter_options
    return opts.get(f"input.{role}@{mode}", opts.get(f"input.{role}", _FIELDS[role])) or ""


def _render_params(
    offering: Offering, mode: str, native: str | None, inp: dict[str, Any]
) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """What the model would produce for this input, and the schema violations in it.
    ``native`` is the resolution of a model variant that has no resolution input."""
    caps = offering.capabilities
    errors: list[tuple[str, str, str]] = []

    def field(role: str) -> str:
        return _field(offering, role, mode)

    prompt = inp.get(field("prompt"))
    if not isinstance(prompt, str) or not prompt.strip():
        errors.append(("required", "input", f"{field('prompt')} is required"))

    spec = caps.durations
    duration: float | None = None
    if field("duration") in inp:
        d = _seconds(inp[field("duration")])
        if d is None or d <= 0 or abs(spec.nearest(d) - d) > 1e-6:
            allowed = ", ".join(f"{v:g}" for v in spec.values or []) or f"{spec.min}..{spec.max}"
            name = field("duration")
            errors.append(("enum", f"input.{name}", f"{name} must be one of: {allowed}"))
        else:
            duration = d
    fps = (caps.fps or [24])[0]
    if field("fps") in inp:
        v = inp[field("fps")]
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 120:
            name = field("fps")
            errors.append(("number_range", f"input.{name}", f"{name} must be 1..120"))
        else:
            fps = v
    if field("num_frames") in inp:
        n = inp[field("num_frames")]
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            name = field("num_frames")
            errors.append(("number_gte", f"input.{name}", "Must be greater than or equal to 1"))
        elif duration is None:
            duration = n / fps
    if duration is None:
        duration = spec.values[0] if spec.values else float(spec.min or 1)

    aspect = caps.aspect_ratios[0]
    if field("aspect_ratio") in inp:
        aspect = str(inp[field("aspect_ratio")])
        if aspect not in caps.aspect_ratios:
            name = field("aspect_ratio")
            allowed = ", ".join(f'"{a}"' for a in caps.aspect_ratios)
            errors.append(("enum", f"input.{name}", f"{name} must be one of: {allowed}"))
            aspect = caps.aspect_ratios[0]
    # Without a resolution input a model makes its native size: the variant's, else the
    # offering's largest (Replicate splits models such as Wan 2.1 by resolution).
    resolution = max(caps.resolutions, key=lambda r: r.short_side)
    if native is not None:
        resolution = Resolution.parse(native)
    size: tuple[int, int] | None = None
    if field("resolution") in inp:
        raw = str(inp[field("resolution")])
        m = _SIZE.match(raw)
        try:
            if m:
                size = (int(m.group(1)), int(m.group(2)))
                if size[0] % 2 or size[1] % 2:
                    raise ValueError
            else:
                resolution = Resolution.parse(raw)
                if resolution not in caps.resolutions:
                    raise ValueError
        except ValueError:
            name = field("resolution")
            allowed = ", ".join(f'"{r.value}"' for r in caps.resolutions)
            errors.append(("enum", f"input.{name}", f"{name} must be one of: {allowed}"))
            size, resolution = None, caps.resolutions[0]
    width, height = size or frame_size(resolution, aspect)

    image = field("first_frame")
    if image in inp and not str(inp[image]).startswith(("https://", "http://", "data:")):
        errors.append(("format", f"input.{image}", "Does not match format 'uri'"))

    audio = caps.audio == "always" or (caps.audio == "optional" and inp.get(field("audio")) is True)
    params = {
        "prompt": prompt if isinstance(prompt, str) else "",
        "width": width,
        "height": height,
        "fps": fps,
        "duration_s": duration,
        "audio": audio,
    }
    return params, errors


def _echo(inp: dict[str, Any]) -> dict[str, Any]:
    """The input as Replicate echoes it, without keeping big data URLs in the record."""
    return {
        k: (v[:48] + "…" if isinstance(v, str) and v.startswith("data:") and len(v) > 256 else v)
        for k, v in inp.items()
    }


def _aborted(job: SandboxJob) -> bool:
    """Canceled by its Cancel-After deadline before it started running."""
    at = job.params.get("deadline_at")
    return (
        job.canceled_at is not None
        and isinstance(at, int | float)
        and abs(job.canceled_at - at) < 1e-3
        and job.phase(job.canceled_at - 1e-6)[0] == "queued"
    )


def _logs(progress: float) -> str:
    steps = 50
    done = int(max(0.0, (progress - 0.1) / 0.9) * steps)
    pct = done * 100 // steps
    bar = "█" * (pct // 10)
    return f"Using seed: 4242\nGenerating video...\n{pct:3d}%|{bar:<10}| {done}/{steps}\n"


def router(core: SandboxCore) -> APIRouter:
    r = APIRouter(prefix=f"/{PROTOCOL}/v1")

    def auth_error(request: Request) -> JSONResponse | None:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        # "Bearer" is documented; older clients still send "Token", which the API accepts.
        if scheme not in ("Bearer", "Token") or not credential_ok(token.strip()):
            return _problem(
                401, "You did not pass a valid authentication token", title="Unauthenticated"
            )
        return None

    def enforce_deadline(job: SandboxJob) -> SandboxJob:
        """Cancel-After: a job still unfinished when its deadline passed is canceled then."""
        at = job.params.get("deadline_at")
        if not isinstance(at, int | float) or job.canceled_at is not None or _now() < at:
            return job
        if job.phase(at - 1e-6)[0] in ("queued", "running"):
            core.store.mark(job.id, canceled_at=at)
            core.store.event("deadline_canceled", job.id)
            return core.store.get(job.id) or job
        return job

    def prediction(request: Request, job: SandboxJob) -> dict[str, Any]:
        now = _now()
        phase, progress = job.phase(now)
        p = job.params
        started = job.created_at + 0.1 * job.latency_s
        done = job.created_at + job.latency_s
        status = _STATUS[phase]
        ended: float | None = None
        if phase in ("succeeded", "failed"):
            ended = done
        elif phase == "canceled":
            ended = job.canceled_at
            status = "aborted" if _aborted(job) else "canceled"
        ran = phase != "queued" and not (ended is not None and ended <= started)
        removed = ended is not None and now > ended + OUTPUT_TTL_S
        base = str(request.base_url)
        api = f"{base.rstrip('/')}/{PROTOCOL}/v1/predictions/{job.id}"
        output = None
        if phase == "succeeded" and not removed:
            output = core.signed_file_url(base, job, ttl_s=max(1.0, done + OUTPUT_TTL_S - now))
        error = None
        if phase == "failed":
            content = job.outcome == "fail:content_rejected"
            error = _MODERATION_ERROR if content else _INTERNAL_ERROR
        logs: str | None = None
        if ran and not removed:
            logs = _logs(1.0 if phase == "succeeded" else progress)
        elif phase == "queued":
            logs = ""
        metrics: dict[str, float] = {}
        if phase == "succeeded":
            # in emulated seconds (the sandbox runs time_scale times faster than the service),
            # since time-priced hardware bills predict_time
            scale = core.time_scale or 1.0
            metrics = {
                "predict_time": round((done - started) / scale, 3),
                "total_time": round((done - job.created_at) / scale, 3),
            }
        model = str(p.get("model") or job.model)
        return {
            "id": job.id,
            "model": model,
            "version": p.get("version") or hashlib.sha256(model.encode()).hexdigest(),
            "input": {} if removed else p.get("input", {}),
            "logs": logs,
            "output": output,
            "data_removed": removed,
            "error": error,
            "status": status,
            "source": "api",
            "created_at": _iso(job.created_at),
            "started_at": _iso(started) if ran else None,
            "completed_at": _iso(ended),
            "metrics": metrics,
            "urls": {
                "get": api,
                "cancel": f"{api}/cancel",
                "web": f"https://replicate.com/p/{job.id}",
            },
        }

    async def read_body(request: Request) -> dict[str, Any] | JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return _problem(400, "The request body is not valid JSON.", title="Bad request")
        if not isinstance(body, dict):
            return _problem(400, "The request body must be a JSON object.", title="Bad request")
        return body

    async def create(
        request: Request,
        body: dict[str, Any],
        offering: Offering,
        model: str,
        version: str | None,
        allowed: set[str],
    ) -> Response:
        extra = sorted(set(body) - allowed)
        inp = body.get("input")
        errors = [
            ("additional_property_not_allowed", "", f"Additional property {k} is not allowed")
            for k in extra
        ]
        if not isinstance(inp, dict):
            errors.append(("required", "", "input is required"))
            return _invalid(errors)
        mode, native = _variant_of(offering, model, inp)
        params, input_errors = _render_params(offering, mode, native, inp)
        for key, value in inp.items():
            # a Files API URL as an input (the SDK's default for a file): it must exist
            fid = _file_id(request, value) if isinstance(value, str) else None
            if fid is not None and fid not in files:
                errors.append(("format", f"input.{key}", f"file {fid} does not exist"))
        if errors or input_errors:
            return _invalid(errors + input_errors)
        deadline_s = None
        if (raw := request.headers.get("cancel-after")) is not None:
            deadline_s = _go_duration(raw)
            if deadline_s is None:
                return _problem(
                    400,
                    f"Invalid Cancel-After header {raw!r}: use a duration like 30s, 5m or 1h.",
                    title="Invalid Cancel-After header",
                )

        fault = core.pick_fault(PROTOCOL, offering.provider_model_id, CREATE_FAULTS)
        if fault is not None and fault.kind == "rate_limit":
            wait = f"{fault.retry_after_s:g}"
            return _problem(
                429,
                f"Request was throttled. Your rate limit resets in ~{wait}s.",
                headers={"retry-after": wait},
            )
        if fault is not None and fault.kind == "unavailable":
            return _problem(503, "The service is temporarily unavailable.", title="Unavailable")
        if fault is not None and fault.kind == "timeout":
            await asyncio.sleep(core.faults.hang_s)
            return _problem(504, "Gateway timeout.", title="Gateway timeout")

        now = _now()
        job, _ = core.create_job(
            protocol=PROTOCOL,
            model=offering.provider_model_id,
            body={"model": model, "version": version, **inp, "prompt": params["prompt"]},
            params={
                **params,
                "model": model,
                "version": version,
                "input": _echo(inp),
                "deadline_at": now + deadline_s if deadline_s is not None else None,
            },
            idempotency_key=None,  # Replicate documents no idempotency key (§8)
        )
        if fault is not None and fault.kind == "drop":
            core.store.event("dropped_response", job.id)
            await asyncio.sleep(core.faults.hang_s)
            return _problem(504, "Gateway timeout.", title="Gateway timeout")

        wait_s = 0.0
        prefer = re.fullmatch(r"\s*wait(?:=(\d+))?\s*", request.headers.get("prefer", ""))
        if prefer:
            wait_s = min(60.0, max(1.0, float(prefer.group(1)))) if prefer.group(1) else 60.0
        until = time.monotonic() + wait_s
        while time.monotonic() < until:
            job = enforce_deadline(core.store.get(job.id) or job)
            if job.phase(_now())[0] not in ("queued", "running"):
                break
            await asyncio.sleep(0.05)
        return JSONResponse(prediction(request, enforce_deadline(job)), status_code=201)

    @r.post("/models/{owner}/{name}/predictions")
    async def create_for_model(owner: str, name: str, request: Request) -> Response:
        if (err := auth_error(request)) is not None:
            return err
        body = await read_body(request)
        if isinstance(body, JSONResponse):
            return body
        model = f"{owner}/{name}"
        offering = _offering_for(core, model)
        if offering is None:
            return _problem(404, f"Model {model} does not exist.", title="Model not found")
        return await create(request, body, offering, model, None, _TOP_LEVEL)

    @r.post("/predictions")
    async def create_for_version(request: Request) -> Response:
        if (err := auth_error(request)) is not None:
            return err
        body = await read_body(request)
        if isinstance(body, JSONResponse):
            return body
        version = body.get("version")
        if not isinstance(version, str) or not version:
            return _invalid([("required", "", "version is required")])
        found: tuple[Offering, str] | None = None
        model, _, vid = version.rpartition(":")
        if model and _VERSION_ID.match(vid):
            off = _offering_for(core, model)
            found = (off, model) if off is not None else None
        elif _VERSION_ID.match(version):
            found = _offering_for_version(core, version)
        elif "/" in version:
            # The docs say official models may be named owner/name here (UNCONFIRMED).
            off = _offering_for(core, version)
            found = (off, version) if off is not None else None
        if found is None:
            return _problem(
                422,
                "The specified version does not exist (or perhaps you don't have permission "
                "to use it?)",
                title="Invalid version or not permitted",
            )
        offering, model = found
        pinned = vid if _VERSION_ID.match(vid) else None
        return await create(request, body, offering, model, pinned, _TOP_LEVEL | {"version"})

    def lookup(prediction_id: str) -> SandboxJob | JSONResponse:
        job = core.store.get(prediction_id)
        if job is None or job.deleted or job.protocol != PROTOCOL:
            return _problem(404, "Not found.", title="Prediction not found")
        return enforce_deadline(job)

    # -- Files API (what replicate-python uses for file inputs by default) -------------------
    # POST /v1/files takes multipart `content` (+ optional JSON `metadata`) and answers 201 with
    # the file object; its `urls.get` is the URL to pass as a model input (replicate 1.0.7
    # helpers.encode_json: `client.files.create(obj).urls["get"]`). Files live in memory.
    files: dict[str, tuple[dict[str, Any], bytes]] = {}

    def file_url(request: Request, fid: str) -> str:
        return f"{str(request.base_url).rstrip('/')}/{PROTOCOL}/v1/files/{fid}"

    @r.post("/files")
    async def create_file(request: Request) -> Response:
        if (err := auth_error(request)) is not None:
            return err
        form = await request.form()
        upload = form.get("content")
        if upload is None or isinstance(upload, str):
            return _invalid([("required", "content", "content is required")])
        data = await upload.read()
        raw_meta = form.get("metadata")
        try:
            metadata = json.loads(raw_meta) if isinstance(raw_meta, str) and raw_meta else {}
        except ValueError:
            return _invalid([("format", "metadata", "metadata must be JSON")])
        fid = hashlib.sha256(data + str(time.time_ns()).encode()).hexdigest()[:26]
        now = _now()
        obj = {
            "id": fid,
            "name": upload.filename or "file",
            "content_type": upload.content_type or "application/octet-stream",
            "size": len(data),
            "etag": hashlib.md5(data, usedforsecurity=False).hexdigest(),
            "checksums": {
                "sha256": hashlib.sha256(data).hexdigest(),
                "md5": hashlib.md5(data, usedforsecurity=False).hexdigest(),
            },
            "metadata": metadata,
            "created_at": _iso(now),
            "expires_at": _iso(now + 24 * 3600),
            "urls": {"get": file_url(request, fid)},
        }
        files[fid] = (obj, data)
        return JSONResponse(obj, status_code=201)

    @r.get("/files")
    async def list_files(request: Request) -> Response:
        if (err := auth_error(request)) is not None:
            return err
        results = [obj for obj, _ in files.values()]
        return JSONResponse({"next": None, "previous": None, "results": results})

    @r.get("/files/{fid}")
    async def get_file(fid: str, request: Request) -> Response:
        if (err := auth_error(request)) is not None:
            return err
        if fid not in files:
            return _problem(404, "Not found.", title="File not found")
        return JSONResponse(files[fid][0])

    @r.delete("/files/{fid}")
    async def delete_file(fid: str, request: Request) -> Response:
        if (err := auth_error(request)) is not None:
            return err
        if files.pop(fid, None) is None:
            return _problem(404, "Not found.", title="File not found")
        return Response(status_code=204)

    @r.get("/predictions/{prediction_id}")
    async def get(prediction_id: str, request: Request) -> Response:
        if (err := auth_error(request)) is not None:
            return err
        job = lookup(prediction_id)
        if isinstance(job, JSONResponse):
            return job
        if core.pick_fault(PROTOCOL, job.model, {"poll_unavailable"}):
            return _problem(503, "The service is temporarily unavailable.", title="Unavailable")
        return JSONResponse(prediction(request, job))

    @r.get("/predictions")
    async def list_predictions(request: Request, cursor: str | None = None) -> Response:
        """§8: newest first, cursor-paged; ``next``/``previous`` are full URLs or null."""
        if (err := auth_error(request)) is not None:
            return err
        start = int(cursor) if cursor and cursor.isdigit() else 0
        size = core.page_size(100)
        everything = core.store.list(PROTOCOL, limit=10_000)
        jobs = [enforce_deadline(j) for j in everything[start : start + size]]
        here = f"{str(request.base_url).rstrip('/')}/{PROTOCOL}/v1/predictions"
        after = start + size
        return JSONResponse(
            {
                "next": f"{here}?cursor={after}" if after < len(everything) else None,
                "previous": f"{here}?cursor={max(0, start - size)}" if start else None,
                "results": [prediction(request, j) for j in jobs],
            }
        )

    @r.post("/predictions/{prediction_id}/cancel")
    async def cancel(prediction_id: str, request: Request) -> Response:
        if (err := auth_error(request)) is not None:
            return err
        job = lookup(prediction_id)
        if isinstance(job, JSONResponse):
            return job
        if job.phase(_now())[0] in ("queued", "running"):
            core.store.mark(job.id, canceled_at=_now())
            job = core.store.get(job.id) or job
        # Canceling a finished prediction is a no-op that returns it unchanged.
        return JSONResponse(prediction(request, job))

    return r
