"""The OpenAI-compatible Videos API, so existing clients work unchanged.

``POST /v1/videos`` takes what the OpenAI SDK sends (multipart, or JSON): ``prompt``,
``model``, ``seconds`` (a string), ``size`` ("WxH"), ``input_reference`` (a file, or
``{"image_url": ...}``). ``model`` may be an offering id (pinned), a model id (best route
to that model), or a routing alias from the catalog (``auto``, ``auto:cheapest``,
``auto:premium-audio``...). vidgate-specific fields ride in an optional ``vidgate`` object
(the SDK's ``extra_body``): any VideoRequest field, plus ``policy`` and ``webhook_url``.

Job states map to the four OpenAI statuses; the job id is the video id.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import math
import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from sqlalchemy import and_, or_, select

from vidgate.billing.accounts import KeyInfo
from vidgate.catalog.schema import Offering
from vidgate.errors import InvalidRequest, NotFound
from vidgate.gateway import Gateway
from vidgate.jobs import db
from vidgate.server import images
from vidgate.server.deps import (
    admitted,
    caller,
    check_offerings,
    check_webhook,
    fetch_reference,
    gateway,
    idempotent,
    read_body,
    replay_request,
    state,
)
from vidgate.server.errors import ApiError
from vidgate.server.guards import BODY_LIMITS, check_shape, parse_json
from vidgate.stages.gate import openai_metadata
from vidgate.types import (
    RESOLUTION_ORDER,
    Job,
    JobState,
    Mode,
    ReferenceRole,
    Resolution,
    VideoRequest,
    frame_size,
    parse_aspect,
)

router = APIRouter(prefix="/v1/videos", tags=["OpenAI-compatible videos"])

_STATUS = {
    JobState.QUEUED: "queued",
    JobState.ROUTING: "queued",
    JobState.SUBMITTING: "queued",
    JobState.SUBMITTED: "queued",
    JobState.RUNNING: "in_progress",
    JobState.DOWNLOADING: "in_progress",
    JobState.POST_PROCESSING: "in_progress",
    JobState.SUCCEEDED: "completed",
    JobState.FAILED: "failed",
    JobState.CANCELED: "failed",
    JobState.EXPIRED: "failed",
    JobState.NEEDS_RECONCILIATION: "failed",
}
#: a video id in a path (ours are 24 characters)
VideoId = Annotated[str, Path(max_length=64)]
_ASPECTS = ["16:9", "9:16", "1:1", "4:3", "3:4", "21:9", "3:2", "2:3"]
MAX_BODY = BODY_LIMITS["/v1/videos"]


def _ts(dt: datetime | None) -> int | None:
    return int(dt.timestamp()) if dt else None


def video_object(job: Job) -> dict[str, Any]:
    w, h = job.request.frame_size
    asset = job.assets[0] if job.assets else None
    error = None
    if _STATUS[job.state] == "failed":
        err = job.error or {"code": job.state.value, "message": f"the job {job.state.value}"}
        error = {"code": str(err.get("code")), "message": str(err.get("message"))}
    done = job.state is JobState.SUCCEEDED
    seconds = asset.duration_s if asset and asset.duration_s else job.request.duration_s
    return {
        "id": job.id,
        "object": "video",
        "model": job.offering_id or "auto",
        "status": _STATUS[job.state],
        "progress": 100 if done else round((job.progress or 0.0) * 100),
        "created_at": _ts(job.created_at),
        "completed_at": _ts(job.finished_at) if done else None,
        "expires_at": None,  # our copy does not expire
        "prompt": job.request.prompt,
        "size": f"{asset.width}x{asset.height}" if asset and asset.width else f"{w}x{h}",
        "seconds": f"{seconds:g}",
        "remixed_from_video_id": None,
        "error": error,
        # the quality gate's verdict (vidgate_quality_*), as OpenAI-style string metadata
        "metadata": openai_metadata(job),
    }


_SIZE_RE = re.compile(r"^([1-9][0-9]{0,4})[xX]([1-9][0-9]{0,4})$")
#: how far a size may stray from the frames offerings render (the nearest tier is used)
_SIZE_SLACK = 1.05
#: how far (as a log of the ratio) a size's shape may be from the nearest standard ratio
_RATIO_SLACK = 0.1


def _frame_bounds(offerings: list[Offering]) -> tuple[tuple[int, int], tuple[int, int]]:
    """The smallest and the largest (short side, long side) the offerings render."""
    shapes = frozenset(
        (res, aspect)
        for o in offerings
        for res in o.capabilities.resolutions
        for aspect in o.capabilities.aspect_ratios or ["16:9"]
    )
    return _bounds_of(shapes)


@functools.lru_cache(maxsize=256)
def _bounds_of(
    shapes: frozenset[tuple[Resolution, str]],
) -> tuple[tuple[int, int], tuple[int, int]]:
    # Every POST with a size asks this of the same few offering sets: compute each once.
    sizes = [sorted(frame_size(res, aspect)) for res, aspect in shapes] or [
        [480, 854],
        [2160, 3840],
    ]
    shorts = [s for s, _ in sizes]
    longs = [lg for _, lg in sizes]
    return (min(shorts), min(longs)), (max(shorts), max(longs))


def size_to_request(size: Any, offerings: list[Offering], scope: str) -> dict[str, Any]:
    """'1280x720' -> 720p 16:9: the nearest tier and standard ratio, for a size within what
    the offerings in ``scope`` render; anything else is a 400 naming the limits (a silent
    4k for 99999x99999 would route and bill a request nobody made)."""
    m = _SIZE_RE.match(size) if isinstance(size, str) else None
    if m is None:
        shown = repr(size) if isinstance(size, str) else json.dumps(size)
        raise ApiError(
            400,
            "invalid_size",
            f"size {shown[:40]} is not WIDTHxHEIGHT in pixels, e.g. 1280x720",
            param="size",
        )
    w, h = int(m.group(1)), int(m.group(2))
    short, long_ = sorted((w, h))
    (min_s, min_l), (max_s, max_l) = _frame_bounds(offerings)
    if short > max_s * _SIZE_SLACK or long_ > max_l * _SIZE_SLACK:
        raise ApiError(
            400,
            "invalid_size",
            f"size {w}x{h} is larger than {scope} renders (at most {max_l}x{max_s} or "
            f"{max_s}x{max_l}); e.g. 1280x720",
            param="size",
        )
    if short * _SIZE_SLACK < min_s or long_ * _SIZE_SLACK < min_l:
        raise ApiError(
            400,
            "invalid_size",
            f"size {w}x{h} is smaller than {scope} renders (at least {min_l}x{min_s} or "
            f"{min_s}x{min_l})",
            param="size",
        )
    ratio = math.log(w / h)
    aspect = min(_ASPECTS, key=lambda a: abs(ratio - math.log(_aspect_value(a))))
    if abs(ratio - math.log(_aspect_value(aspect))) > _RATIO_SLACK:
        raise ApiError(
            400,
            "invalid_size",
            f"size {w}x{h} is not a standard frame shape; use one of "
            f"{', '.join(_ASPECTS)} (e.g. 1280x720, 720x1280, 1024x1024)",
            param="size",
        )
    res = min(RESOLUTION_ORDER, key=lambda r: abs(r.short_side - short))
    return {"resolution": res, "aspect_ratio": aspect}


def _aspect_value(aspect: str) -> float:
    w, h = parse_aspect(aspect)
    return w / h


_SECONDS_RE = re.compile(r"^[0-9]{1,4}(\.[0-9]{1,6})?$")


def parse_seconds(value: Any) -> float:
    """``seconds`` as the OpenAI SDK sends it ("8") or as a JSON number; never a boolean
    (``True`` is an int to Python, so it would have passed as 1 second)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        shown = json.dumps(value)[:40] if not isinstance(value, bool) else str(value).lower()
        raise ApiError(
            400,
            "invalid_seconds",
            f'seconds is a number of seconds such as "8" or 8, not {shown}',
            param="seconds",
        )
    if isinstance(value, str):
        if not _SECONDS_RE.match(value.strip()):
            raise ApiError(
                400,
                "invalid_seconds",
                f'seconds {value[:40]!r} is not a number of seconds such as "8" or "5.5"',
                param="seconds",
            )
        value = float(value.strip())
    seconds = float(value)
    if not math.isfinite(seconds) or not 0 < seconds <= 120:
        raise ApiError(
            400,
            "invalid_seconds",
            f"seconds {value:g} is out of range; clips are over 0 and at most 120 seconds",
            param="seconds",
        )
    return seconds


_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
_MAX_FORM_DEPTH = 6
_MAX_FORM_FIELDS = 200


def _form_path(key: str) -> list[str]:
    """'vidgate[metadata][order]' -> ['vidgate', 'metadata', 'order']; 'a[]' -> ['a', '']."""
    head, sep, rest = key.partition("[")
    if not sep:
        return [key]
    if not rest.endswith("]"):
        raise ApiError(400, "invalid_form", f"form field {key!r} is not name[part]...")
    parts = [head, *rest[:-1].split("][")]
    if len(parts) > _MAX_FORM_DEPTH or any("[" in p or "]" in p for p in parts):
        raise ApiError(400, "invalid_form", f"form field {key!r} is nested too deeply")
    return parts


def _unflatten(items: list[tuple[str, str]]) -> dict[str, Any]:
    """Rebuild the objects clients flatten into form fields (the OpenAI SDK sends
    ``extra_body={"vidgate": {"policy": "fastest"}}`` as ``vidgate[policy]=fastest``)."""
    out: dict[str, Any] = {}
    for key, value in items:
        path = _form_path(key)
        node: Any = out
        for i, part in enumerate(path[:-1]):
            nxt: Any = [] if path[i + 1] == "" else {}
            if isinstance(node, dict):
                node = node.setdefault(part, nxt)
            else:
                raise ApiError(400, "invalid_form", f"form field {key!r} mixes lists and objects")
            if not isinstance(node, type(nxt)):
                raise ApiError(400, "invalid_form", f"form field {key!r} conflicts with another")
        last = path[-1]
        if isinstance(node, list) and last == "":
            node.append(value)
        elif isinstance(node, dict) and last != "":
            if last in node:
                raise ApiError(400, "invalid_form", f"form field {key!r} is given twice")
            node[last] = value
        else:
            raise ApiError(400, "invalid_form", f"form field {key!r} mixes lists and objects")
    return out


async def _parse_create(request: Request) -> tuple[dict[str, Any], bytes | None, bytes]:
    """The create body as a dict, an uploaded reference image (if any, as a data URL), and
    a canonical form of the request for Idempotency-Key comparisons (a multipart body's raw
    bytes differ on every send: the boundary is random)."""
    raw = await read_body(request, MAX_BODY)
    ctype = request.headers.get("content-type", "").lower()
    image = None
    if ctype.startswith(_FORM_TYPES):
        items: list[tuple[str, str]] = []
        upload = None
        try:
            async with replay_request(request, raw).form() as form:
                for k, v in form.multi_items():
                    if isinstance(v, str):
                        items.append((k, v))
                    elif k == "input_reference":
                        upload = (await v.read(), (v.content_type or "").lower())
                    else:
                        raise ApiError(
                            400, "unexpected_file", f"unexpected file field {k!r}", param=k
                        )
        except ApiError:
            raise
        except Exception as e:  # malformed multipart: the caller's mistake, never a 500
            raise ApiError(400, "invalid_form", f"the form body cannot be parsed: {e}") from None
        if len(items) > _MAX_FORM_FIELDS:
            raise ApiError(
                400, "invalid_form", f"the form has {len(items)} fields; at most {_MAX_FORM_FIELDS}"
            )
        fields = _unflatten(items)
        if isinstance(fields.get("vidgate"), str):
            fields["vidgate"] = parse_json(fields["vidgate"], "the vidgate field")
        check_shape(fields, "the form")
        if upload is not None:
            # the bytes decide, not the part's content type: a client's claim proves nothing
            data_url = await asyncio.to_thread(images.data_url, upload[0], "input_reference")
            image = data_url.encode()
        body = fields
    else:
        body = parse_json(raw) if raw.strip() else {}
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_json", "the request body must be a JSON object")
    canonical = json.dumps(
        {"body": body, "image": hashlib.sha256(image).hexdigest() if image else None},
        sort_keys=True,
        default=str,
    ).encode()
    return body, image, canonical


def build(
    gw: Gateway, body: dict[str, Any], image: bytes | None
) -> tuple[VideoRequest, str, list[str] | None, list[str] | None, str | None]:
    """Map an OpenAI create body to (request, policy, pinned, among, webhook)."""
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ApiError(400, "missing_prompt", "prompt is required", param="prompt")
    model = body.get("model")
    if model is None or model == "":
        model = "auto"
    if not isinstance(model, str) or len(model) > 128:
        raise ApiError(
            400,
            "model_not_found",
            "model is an offering id, a model id or an alias of at most 128 characters "
            "(GET /v1/models lists them)",
            param="model",
        )
    extra = body.get("vidgate")
    if extra is None:
        extra = {}
    if not isinstance(extra, dict):
        raise ApiError(400, "invalid_vidgate", "vidgate must be an object of request fields")
    extra = dict(extra)
    cat = gw.catalog
    fields: dict[str, Any] = {"prompt": prompt}
    policy, pinned, among = "cheapest", None, None
    if model in cat.aliases:
        alias = cat.aliases[model]
        policy = alias.policy
        fields.update(alias.defaults)
    elif model in cat.offerings:
        pinned = [model]
    elif model in cat.models:
        among = [o.id for o in cat.by_model[model]]
    else:
        known = ", ".join(sorted(cat.aliases)[:4])
        raise ApiError(
            400,
            "model_not_found",
            f"model {model!r} is not an offering, a model or an alias (e.g. {known}; "
            "GET /v1/models lists them)",
            param="model",
        )
    seconds = body.get("seconds")
    if seconds is not None:
        fields["duration_s"] = parse_seconds(seconds)
    size = body.get("size")
    if size is not None and size != "":
        if pinned:
            scope, candidates = f"offering {pinned[0]}", [cat.offerings[pinned[0]]]
        elif among is not None:
            scope, candidates = f"model {model}", [cat.offerings[o] for o in among]
        else:
            scope, candidates = "any offering", list(cat.offerings.values())
        fields.update(size_to_request(size, candidates, scope))
    ref = body.get("input_reference")
    url = image.decode() if image else None
    if isinstance(ref, str) and ref:
        url = ref  # a bare URL is taken as {"image_url": ...}
    elif isinstance(ref, dict):
        if ref.get("file_id"):
            raise ApiError(
                400,
                "unsupported_file_id",
                "input_reference.file_id is not supported; send image_url or a file",
                param="input_reference",
            )
        url = ref.get("image_url") or url
    elif ref is not None:
        raise ApiError(
            400,
            "invalid_input_reference",
            "input_reference is a file, or an object {image_url: ...}",
            param="input_reference",
        )
    if url:
        # validated with the rest of the request below, so a bad URL is a 400 naming it
        fields["references"] = [{"role": ReferenceRole.FIRST_FRAME.value, "url": str(url)}]
        fields["mode"] = Mode.IMAGE_TO_VIDEO
    policy = str(extra.pop("policy", policy))
    webhook = extra.pop("webhook_url", None)
    if webhook is not None and not isinstance(webhook, str):
        raise ApiError(400, "invalid_webhook_url", "vidgate.webhook_url must be a URL string")
    offerings = extra.pop("offerings", None)
    if offerings is not None:
        if (
            not isinstance(offerings, list)
            or not 0 < len(offerings) <= 20
            or not all(isinstance(o, str) for o in offerings)
        ):
            raise ApiError(
                400,
                "invalid_offerings",
                "vidgate.offerings is a list of 1-20 offering ids (GET /v1/models lists them)",
                param="vidgate.offerings",
            )
        pinned = list(offerings)
    fields.update(extra)
    try:
        request = VideoRequest.model_validate(fields)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ApiError(
            400,
            "invalid_request",
            f"{where}: {str(err['msg']).removeprefix('Value error, ')}",
            param=where,
        ) from None
    return request, policy, pinned, among, webhook


_CREATE_FIELDS: dict[str, Any] = {
    "prompt": {"type": "string", "minLength": 1, "maxLength": 8000},
    "model": {
        "type": "string",
        "maxLength": 128,
        "description": "an offering id, a model id, or a routing alias (auto, auto:premium...)",
        "default": "auto",
    },
    "seconds": {
        "type": "string",
        "pattern": r"^[0-9]{1,4}(\.[0-9]{1,6})?$",
        "description": "clip length in seconds, e.g. '8' (a JSON number is taken too)",
    },
    "size": {
        "type": "string",
        "pattern": "^[1-9][0-9]{0,4}x[1-9][0-9]{0,4}$",
        "description": "WIDTHxHEIGHT within what the model renders, e.g. 1280x720",
    },
}
_VIDGATE_FIELD: dict[str, Any] = {
    "type": "object",
    "description": "vidgate's own fields: any VideoRequest field, plus policy, offerings "
    "and webhook_url",
    "additionalProperties": True,
}
#: The body is read by hand (JSON or multipart, as the OpenAI SDK sends it), so it is
#: described here for the OpenAPI document.
_CREATE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["prompt"],
                    "properties": {
                        **_CREATE_FIELDS,
                        "input_reference": {
                            "type": "object",
                            "properties": {"image_url": {"type": "string"}},
                        },
                        "vidgate": _VIDGATE_FIELD,
                    },
                }
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["prompt"],
                    "properties": {
                        **_CREATE_FIELDS,
                        "input_reference": {"type": "string", "format": "binary"},
                    },
                }
            },
        },
    }
}


#: OpenAPI links from a create to the calls that take its id (followed by Schemathesis'
#: stateful tests, and by any client generator that reads links)
_VIDEO_LINKS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the video object, queued",
        "links": {
            name: {"operationId": op, "parameters": {"video_id": "$response.body#/id"}}
            for name, op in (
                ("RetrieveVideo", "retrieve_video_v1_videos__video_id__get"),
                ("DeleteVideo", "delete_video_v1_videos__video_id__delete"),
                ("DownloadVideo", "download_video_v1_videos__video_id__content_get"),
            )
        },
    }
}


@router.post("", status_code=200, openapi_extra=_CREATE_BODY, responses=_VIDEO_LINKS)
async def create_video(request: Request, key: Annotated[KeyInfo, Depends(caller)]) -> Response:
    gw = gateway(request)
    body, image, raw = await _parse_create(request)

    async def handler() -> Response:
        req, policy, pinned, among, webhook = build(gw, body, image)
        check_offerings(gw, pinned)
        await check_webhook(gw, webhook)
        if req.references:
            req = req.model_copy(
                update={
                    "references": [
                        await fetch_reference(gw, r, "input_reference") for r in req.references
                    ]
                }
            )
        async with admitted(request, key.tenant):
            job = await asyncio.to_thread(
                _submit,
                gw,
                req,
                policy,
                pinned,
                among,
                key.tenant,
                webhook,
                request.headers.get("idempotency-key"),
            )
        state(request).metrics.submitted.labels(job.offering_id or "none").inc()
        return JSONResponse(video_object(job))

    return await idempotent(request, key.tenant, raw, handler)


def _submit(
    gw: Gateway,
    req: VideoRequest,
    policy: str,
    pinned: list[str] | None,
    among: list[str] | None,
    tenant: str,
    webhook: str | None,
    idempotency_key: str | None = None,
) -> Job:
    if among is not None:
        plan = gw.router().route(req, policy=policy, among=among)
        pinned = [c.offering.id for c in plan.ranked]
        policy = "cheapest"
    return gw.submit(
        req,
        policy=policy,
        pinned=pinned,
        tenant=tenant,
        webhook_url=webhook,
        idempotency_key=idempotency_key,
    )


def _own_job(gw: Gateway, video_id: str, tenant: str) -> Job:
    try:
        job = gw.store.get(video_id, tenant)  # another tenant's id is simply "not found"
    except NotFound:
        raise ApiError(404, "not_found", f"video {video_id!r} not found") from None
    if job.deleted:
        raise ApiError(404, "not_found", f"video {video_id!r} not found")
    return job


@router.get("/{video_id}")
def retrieve_video(
    video_id: VideoId, request: Request, key: Annotated[KeyInfo, Depends(caller)]
) -> dict[str, Any]:
    return video_object(_own_job(gateway(request), video_id, key.tenant))


def _page(gw: Gateway, tenant: str, after: Job | None, limit: int, order: str) -> list[Job]:
    """Up to ``limit + 1`` of the tenant's live videos after the cursor, in ``order``.

    A keyset on (created_at, id) — not created_at alone — so that jobs created in the same
    instant are neither skipped nor repeated across pages; deleted videos are skipped
    without shortening a page."""
    j = db.jobs
    desc = order == "desc"
    out: list[Job] = []
    cursor = (after.created_at, after.id) if after else None
    while len(out) <= limit:
        q = select(j.c.id, j.c.created_at, j.c.doc).where(j.c.tenant == tenant)
        if cursor is not None:
            at, jid = cursor
            if desc:
                q = q.where(or_(j.c.created_at < at, and_(j.c.created_at == at, j.c.id < jid)))
            else:
                q = q.where(or_(j.c.created_at > at, and_(j.c.created_at == at, j.c.id > jid)))
        if desc:
            q = q.order_by(j.c.created_at.desc(), j.c.id.desc())
        else:
            q = q.order_by(j.c.created_at.asc(), j.c.id.asc())
        batch = limit + 1 - len(out)
        with gw.store.engine.connect() as conn:
            rows = conn.execute(q.limit(batch)).all()
        for row in rows:
            job = Job.model_validate_json(row.doc)
            cursor = (row.created_at, row.id)
            if not job.deleted:
                out.append(job)
        if len(rows) < batch:
            break
    return out


@router.get("")
def list_videos(
    request: Request,
    key: Annotated[KeyInfo, Depends(caller)],
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
) -> dict[str, Any]:
    gw = gateway(request)
    cursor = _own_job(gw, after, key.tenant) if after else None
    jobs = _page(gw, key.tenant, cursor, limit, order)
    has_more = len(jobs) > limit
    data = [video_object(j) for j in jobs[:limit]]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


@router.delete("/{video_id}")
def delete_video(
    video_id: VideoId, request: Request, key: Annotated[KeyInfo, Depends(caller)]
) -> dict[str, Any]:
    gw = gateway(request)
    job = _own_job(gw, video_id, key.tenant)
    if _STATUS[job.state] not in ("completed", "failed"):
        raise ApiError(
            400,
            "video_not_finished",
            "only completed or failed videos can be deleted; cancel a running one "
            f"with POST /v1/jobs/{video_id}/cancel",
        )
    gw.delete_job(job)
    return {"id": video_id, "object": "video.deleted", "deleted": True}


@router.get("/{video_id}/content")
def download_video(
    video_id: VideoId,
    request: Request,
    key: Annotated[KeyInfo, Depends(caller)],
    variant: str = "video",
) -> Response:
    gw = gateway(request)
    job = _own_job(gw, video_id, key.tenant)
    if variant != "video":
        raise ApiError(
            400,
            "unsupported_variant",
            f"variant {variant!r} is not available; use video",
            param="variant",
        )
    if job.state is not JobState.SUCCEEDED or not job.assets:
        raise ApiError(
            400,
            "video_not_ready",
            f"video {video_id} is {_STATUS[job.state]}; download it once completed",
        )
    return content_response(gw, job)


@router.get("/{video_id}/provenance")
def video_provenance(
    video_id: VideoId, request: Request, key: Annotated[KeyInfo, Depends(caller)]
) -> dict[str, Any]:
    """The stored video's C2PA manifest and validation state (`vidgate verify` as JSON)."""
    from vidgate.provenance.verify import report_for_stored  # loads c2pa on first use

    gw = gateway(request)
    job = _own_job(gw, video_id, key.tenant)
    if job.state is not JobState.SUCCEEDED or not job.assets:
        raise ApiError(
            400,
            "video_not_ready",
            f"video {video_id} is {_STATUS[job.state]}; its provenance is read once completed",
        )
    with gw.storage.open(gw.storage_path(job.assets[0].uri)) as f:
        report = report_for_stored(f, f"video {video_id}", gw.settings)
    return {"id": video_id, "object": "video.provenance", **report.model_dump(mode="json")}


def content_response(gw: Gateway, job: Job) -> Response:
    asset = job.assets[0]
    path = gw.storage_path(asset.uri)

    def chunks() -> Any:
        with gw.storage.open(path) as f:
            while block := f.read(1 << 20):
                yield block

    return StreamingResponse(
        chunks(),
        media_type=asset.content_type,
        headers={"content-length": str(asset.bytes), "etag": f'"{asset.sha256}"'},
    )


@router.post("/{video_id}/remix")
def remix_video(
    video_id: VideoId, request: Request, key: Annotated[KeyInfo, Depends(caller)]
) -> Response:
    job = _own_job(gateway(request), video_id, key.tenant)
    raise InvalidRequest(
        f"remix is not supported by {job.offering_id}: no offering in the catalog declares "
        "it; submit a new video with the source as input_reference instead"
    )
