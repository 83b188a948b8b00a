"""The native API: the full request (constraints, policy, references, webhook), route
previews with explanations, progress as server-sent events, spend, and provider callbacks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from vidgate.billing.accounts import KeyInfo
from vidgate.errors import NotFound
from vidgate.jobs.callbacks import CallbackHandler
from vidgate.server.deps import (
    admitted,
    caller,
    check_offerings,
    check_webhook,
    fetch_reference,
    gateway,
    idempotent,
    read_body,
    state,
)
from vidgate.server.errors import ApiError
from vidgate.server.videos import content_response
from vidgate.types import Job, JobState, VideoRequest

router = APIRouter(prefix="/v1", tags=["native"])

#: an offering id as the catalog writes them (the longest is well under 128 characters)
OfferingId = Annotated[str, Field(min_length=1, max_length=128)]
#: a job id in a path (ours are 24 characters)
JobId = Annotated[str, Path(max_length=64)]


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request: VideoRequest
    policy: Annotated[str, Field(max_length=64)] = "cheapest"
    #: pin one offering, or an ordered fallback list
    offerings: Annotated[list[OfferingId] | None, Field(max_length=20)] = None
    webhook_url: Annotated[str | None, Field(max_length=2048)] = None


class RoutePreview(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request: VideoRequest
    policy: Annotated[str, Field(max_length=64)] = "cheapest"
    offerings: Annotated[list[OfferingId] | None, Field(max_length=20)] = None


def public(job: Job) -> dict[str, Any]:
    data = job.model_dump(mode="json")
    for a in data["assets"]:
        a.pop("uri", None)  # where we keep files is ours; clients use /content
    return data


def _own(request: Request, job_id: str, tenant: str) -> Job:
    try:
        job = gateway(request).store.get(job_id, tenant)
    except NotFound:
        raise ApiError(404, "not_found", f"job {job_id!r} not found") from None
    if job.deleted:
        raise ApiError(404, "not_found", f"job {job_id!r} not found")
    return job


#: OpenAPI links: the id a create returns is what the follow-up calls take (clients and
#: Schemathesis' stateful tests follow them)
_JOB_LINKS: dict[int | str, dict[str, Any]] = {
    202: {
        "description": "the job, stored (it runs in the background)",
        "links": {
            "GetJob": {
                "operationId": "get_job_v1_jobs__job_id__get",
                "parameters": {"job_id": "$response.body#/id"},
            },
            "GetJobContent": {
                "operationId": "job_content_v1_jobs__job_id__content_get",
                "parameters": {"job_id": "$response.body#/id"},
            },
        },
    }
}


@router.post("/jobs", status_code=202, responses=_JOB_LINKS)
async def create_job(
    body: JobCreate, request: Request, key: Annotated[KeyInfo, Depends(caller)]
) -> Response:
    gw = gateway(request)
    raw = body.model_dump_json().encode()

    async def handler() -> Response:
        req = body.request
        check_offerings(gw, body.offerings)
        await check_webhook(gw, body.webhook_url)
        if req.references:
            req = req.model_copy(
                update={
                    "references": [
                        await fetch_reference(gw, r, f"request.references.{i}.url")
                        for i, r in enumerate(req.references)
                    ]
                }
            )
        async with admitted(request, key.tenant):
            job = await asyncio.to_thread(
                gw.submit,
                req,
                policy=body.policy,
                pinned=body.offerings,
                tenant=key.tenant,
                webhook_url=body.webhook_url,
                # the same key at the job store: a retry after a crash can never make a
                # second job, whatever happened to the stored response
                idempotency_key=request.headers.get("idempotency-key"),
            )
        state(request).metrics.submitted.labels(job.offering_id or "none").inc()
        return JSONResponse(public(job), status_code=202)

    return await idempotent(request, key.tenant, raw, handler)


@router.get("/jobs")
def list_jobs(
    request: Request,
    key: Annotated[KeyInfo, Depends(caller)],
    state_: Annotated[JobState | None, Query(alias="state")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    jobs = gateway(request).store.list(tenant=key.tenant, state=state_, limit=limit)
    return {"object": "list", "data": [public(j) for j in jobs if not j.deleted]}


@router.get("/jobs/{job_id}")
def get_job(
    job_id: JobId, request: Request, key: Annotated[KeyInfo, Depends(caller)]
) -> dict[str, Any]:
    return public(_own(request, job_id, key.tenant))


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(
    job_id: JobId, request: Request, key: Annotated[KeyInfo, Depends(caller)]
) -> dict[str, Any]:
    gw = gateway(request)
    job = _own(request, job_id, key.tenant)
    if not job.state.terminal:
        await asyncio.to_thread(gw.store.request_cancel, job_id, key.tenant)
        job = await gw.wait(job_id, timeout_s=10, tenant=key.tenant)
    return public(job)


@router.get("/jobs/{job_id}/content")
def job_content(
    job_id: JobId, request: Request, key: Annotated[KeyInfo, Depends(caller)]
) -> Response:
    job = _own(request, job_id, key.tenant)
    if job.state is not JobState.SUCCEEDED or not job.assets:
        raise ApiError(409, "not_ready", f"job {job_id} is {job.state.value}; no video yet")
    return content_response(gateway(request), job)


@router.get("/jobs/{job_id}/events")
async def job_events(
    job_id: JobId, request: Request, key: Annotated[KeyInfo, Depends(caller)]
) -> StreamingResponse:
    """Server-sent events: the job as JSON each time its state or progress changes, until
    it is finished."""
    gw = gateway(request)
    _own(request, job_id, key.tenant)

    async def stream() -> AsyncIterator[bytes]:
        last: tuple[Any, ...] | None = None
        while True:
            job = await asyncio.to_thread(gw.store.get, job_id, key.tenant)
            now = (job.state, job.progress, len(job.attempts))
            if now != last:
                last = now
                yield f"event: job\ndata: {json.dumps(public(job), default=str)}\n\n".encode()
            if job.state.terminal or await request.is_disconnected():
                return
            await asyncio.sleep(0.5)

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"cache-control": "no-cache"}
    )


@router.post("/route")
def route_preview(
    body: RoutePreview, request: Request, key: Annotated[KeyInfo, Depends(caller)]
) -> dict[str, Any]:
    gw = gateway(request)
    check_offerings(gw, body.offerings)
    plan = gw.route(body.request, policy=body.policy, pinned=body.offerings)
    out = plan.explain(runners_up=len(plan.ranked))
    out["ranked"] = [c.summary() for c in plan.ranked]
    out.pop("runners_up")
    return out


@router.get("/spend")
def spend(request: Request, key: Annotated[KeyInfo, Depends(caller)]) -> dict[str, Any]:
    rows = gateway(request).accounts.spend(key.tenant)
    return rows[0] if rows else {"tenant": key.tenant, "spent_usd": 0.0, "by_offering": {}}


@router.get("/models")
def models(request: Request, key: Annotated[KeyInfo, Depends(caller)]) -> dict[str, Any]:
    """OpenAI-style model list: routing aliases, models, and offerings (all usable as
    ``model``), with vidgate's details alongside."""
    cat = gateway(request).catalog
    data: list[dict[str, Any]] = [
        {"id": name, "object": "model", "owned_by": "vidgate", "kind": "alias", "policy": a.policy}
        for name, a in cat.aliases.items()
    ]
    data += [
        {
            "id": m.id,
            "object": "model",
            "owned_by": m.vendor,
            "kind": "model",
            "offerings": [o.id for o in cat.by_model[m.id]],
        }
        for m in cat.models.values()
        if cat.by_model[m.id]
    ]
    data += [
        {
            "id": o.id,
            "object": "model",
            "owned_by": o.provider,
            "kind": "offering",
            "model": o.model,
        }
        for o in cat.offerings.values()
    ]
    return {"object": "list", "data": data}


@router.post("/callbacks/{provider}", include_in_schema=True, status_code=202)
async def provider_callback(
    provider: str, request: Request, token: str | None = None
) -> dict[str, Any]:
    """Provider callbacks at /v1/callbacks/{protocol} (verified as the protocol's adapter
    declares: a signature, or the URL's token for providers that do not sign). A callback
    only makes the job poll now; it never sets state. 401 when it does not verify (one
    sentence, whatever failed), 403 when it names a job another provider runs."""
    if len(provider) > 64 or (token is not None and len(token) > 256):
        raise ApiError(404, "not_found", "no such callback endpoint")
    # read up to the limit only (never buffered past it); parsed only once it verifies
    body = await read_body(request, 1024 * 1024)
    handler: CallbackHandler = request.app.state.callbacks
    result = await handler.handle(provider, dict(request.headers), body, token=token)
    return {"accepted": True, "hinted": result.hinted}
