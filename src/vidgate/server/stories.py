"""Stories over HTTP: ``POST /v1/stories`` (the story file as JSON), status with per-shot
states, server-sent events, the film and each shot's file, cancel.

The body is read as the story file itself, so every problem comes back at once with its
field and line in the body (``422``, ``errors: [{field, line, message}]``), and files are
http(s) or ``data:`` URLs (the service never reads its own disk for a caller). Image URLs
are checked by the same SSRF-safe rules as job references before anything is stored.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from vidgate.billing.accounts import KeyInfo
from vidgate.errors import NotFound
from vidgate.server.deps import (
    admitted,
    caller,
    fetch_reference,
    gateway,
    idempotent,
    read_body,
)
from vidgate.server.errors import ApiError, render
from vidgate.stories.driver import story_store, submit_story
from vidgate.stories.plan import plan_story
from vidgate.stories.record import shot_verdict, verdict
from vidgate.stories.spec import MAX_STORY_BYTES, LoadedStory, Look, json_schema, parse_story
from vidgate.stories.store import StoryDoc, StoryState
from vidgate.types import Job, JobState, Reference, ReferenceRole

router = APIRouter(prefix="/v1", tags=["stories"])

StoryId = Annotated[str, Path(max_length=64)]
_URL_SCHEMES = ("http://", "https://", "data:")


def _children(gw: Any, doc: StoryDoc) -> dict[str, Job]:
    return {k: gw.store.get(jid, doc.tenant) for k, jid in doc.children.items()}


def view(doc: StoryDoc, jobs: dict[str, Job]) -> dict[str, Any]:
    """A story as clients see it: per-shot states and progress; never our storage paths."""
    shots = []
    for s in doc.plan.shots:
        segs: list[dict[str, Any]] = []
        progress = 0.0
        for seg in s.segments:
            job = jobs.get(f"{s.index}.{seg.index}")
            segs.append(
                {
                    "segment": seg.index,
                    "job_id": job.id if job else None,
                    "state": job.state.value if job else "waiting",
                    "progress": 1.0
                    if job is not None and job.state is JobState.SUCCEEDED
                    else (job.progress if job else 0.0),
                    "offering": job.offering_id if job else seg.offering_id,
                    "quality": verdict(job.quality) if job else None,
                }
            )
            progress += float(segs[-1]["progress"] or 0.0)
        states = {g["state"] for g in segs}
        state = (
            "succeeded"
            if states == {"succeeded"}
            else next((x for x in ("failed", "canceled", "expired") if x in states), "running")
        )
        if states <= {"waiting", "queued"}:
            state = "queued"
        shots.append(
            {
                "shot": s.index,
                "state": state,
                "progress": round(progress / len(segs), 4),
                "duration_s": s.duration_s,
                "offering": s.offering_id,
                "chain": s.chain,
                "switched_because": s.switched_because,
                "segments": segs,
                # the quality gate's verdict on the shot (each segment's job's, combined)
                "quality": shot_verdict(
                    [j for g in s.segments if (j := jobs.get(f"{s.index}.{g.index}")) is not None]
                ),
                "has_file": str(s.index) in doc.shot_files,
            }
        )
    film = dict(doc.film) if doc.film else None
    if film is not None:
        for k in ("uri", "record_uri", "captions_uri"):
            film.pop(k, None)
    return {
        "id": doc.id,
        "object": "story",
        "title": doc.title,
        "state": doc.state.value,
        "progress": doc.progress,
        "created_at": doc.created_at.isoformat(),
        "finished_at": doc.finished_at.isoformat() if doc.finished_at else None,
        "plan": doc.plan.summary(),
        "shots": shots,
        "joins": doc.joins,
        "film": film,
        "record": public_record(doc.record),
        "error": doc.error,
        "waiting": doc.waiting,
    }


_STORAGE_KEYS = ("uri", "record_uri", "captions_uri")


def public_record(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The story's record as clients see it: our storage URIs (the film's, each shot's file)
    left out; the files are served by the content routes."""
    if record is None:
        return None
    out = dict(record)
    if isinstance(out.get("film"), dict):
        out["film"] = {k: v for k, v in out["film"].items() if k not in _STORAGE_KEYS}
    if isinstance(out.get("shots"), list):
        out["shots"] = [
            {k: v for k, v in s.items() if k != "file"} if isinstance(s, dict) else s
            for s in out["shots"]
        ]
    return out


def _own(request: Request, story_id: str, tenant: str) -> StoryDoc:
    try:
        return story_store(gateway(request)).get(story_id, tenant)
    except NotFound:
        raise ApiError(404, "not_found", f"story {story_id!r} not found") from None


async def checked_story_refs(gw: Any, loaded: LoadedStory) -> LoadedStory:
    """Image URLs pass the SSRF-safe checks (and come back as the fetcher hands them on).
    Used by the REST API and by MCP's run_story; only a local story (``base_dir`` set) may
    name local files."""
    story = loaded.story

    async def looks(group: str, items: dict[str, Look], role: ReferenceRole) -> dict[str, Look]:
        out = {}
        for name, look in items.items():
            refs = []
            for i, url in enumerate(look.references):
                if loaded.base_dir is not None and not url.startswith(_URL_SCHEMES):
                    refs.append(url)  # a local file of a local (CLI, MCP stdio) story
                    continue
                ref = await fetch_reference(
                    gw, Reference(role=role, url=url), f"{group}.{name}.references.{i}"
                )
                refs.append(ref.url)
            out[name] = look.model_copy(update={"references": refs})
        return out

    characters = await looks("characters", story.characters, ReferenceRole.SUBJECT)
    styles = await looks("styles", story.styles, ReferenceRole.STYLE)
    fixed = story.model_copy(update={"characters": characters, "styles": styles})
    return LoadedStory(fixed, loaded.marks, loaded.source, loaded.base_dir)


def _inlined(node: Any, defs: dict[str, Any]) -> Any:
    """The story schema with its ``$defs`` references inlined (OpenAPI resolves ``$ref``
    against the whole document, where ``#/$defs`` does not exist)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inlined(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inlined(v, defs) for k, v in node.items() if k not in ("$defs", "$schema")}
    if isinstance(node, list):
        return [_inlined(v, defs) for v in node]
    return node


def _story_body() -> dict[str, Any]:
    """The body as OpenAPI sees it: the story file's schema, so clients and the schema fuzzer
    know it (the route reads the raw body itself, to report problems with their lines)."""
    schema = json_schema()
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inlined(schema, schema.get("$defs", {}))}},
        }
    }


@router.post("/stories", status_code=202, openapi_extra=_story_body())
async def create_story(request: Request, key: Annotated[KeyInfo, Depends(caller)]) -> Response:
    gw = gateway(request)
    raw = await read_body(request, MAX_STORY_BYTES)

    async def handler() -> Response:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "invalid_story", "the story must be UTF-8 JSON") from None
        checked = parse_story(text, source="body", base_dir=None)
        problems = list(checked.problems)
        loaded = checked.loaded
        plan = None
        if loaded is not None:
            plan, more = await asyncio.to_thread(plan_story, loaded, gw.router(), gw.catalog)
            problems += more
        if problems or loaded is None or plan is None:
            problems.sort(key=lambda p: (p.line or 0, p.field))
            lines = [p.render("body") for p in problems]
            return render(
                request,
                422,
                "invalid_story",
                "; ".join(lines)[:4000],
                extra={"errors": [p.as_dict() for p in problems]},
            )
        loaded = await checked_story_refs(gw, loaded)
        # A story's shots are the tenant's jobs: it is refused (429) while the tenant is at
        # its cap on running jobs, and once stored starts each shot only under that cap.
        async with admitted(request, key.tenant):
            doc, _ = await asyncio.to_thread(
                submit_story,
                gw,
                loaded,
                plan,
                tenant=key.tenant,
                idempotency_key=request.headers.get("idempotency-key"),
            )
        return JSONResponse(view(doc, {}), status_code=202)

    return await idempotent(request, key.tenant, raw, handler)


@router.get("/stories")
def list_stories(
    request: Request,
    key: Annotated[KeyInfo, Depends(caller)],
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    docs = story_store(gateway(request)).list(key.tenant, limit=limit)
    return {"object": "list", "data": [view(d, {}) for d in docs]}


@router.get("/stories/{story_id}")
def get_story(
    story_id: StoryId, request: Request, key: Annotated[KeyInfo, Depends(caller)]
) -> dict[str, Any]:
    doc = _own(request, story_id, key.tenant)
    return view(doc, _children(gateway(request), doc))


@router.post("/stories/{story_id}/cancel")
async def cancel_story(
    story_id: StoryId, request: Request, key: Annotated[KeyInfo, Depends(caller)]
) -> dict[str, Any]:
    gw = gateway(request)
    doc = _own(request, story_id, key.tenant)
    if not doc.state.terminal:
        doc = await asyncio.to_thread(story_store(gw).request_cancel, story_id, key.tenant)
    return view(doc, await asyncio.to_thread(_children, gw, doc))


@router.get("/stories/{story_id}/events")
async def story_events(
    story_id: StoryId, request: Request, key: Annotated[KeyInfo, Depends(caller)]
) -> StreamingResponse:
    """Server-sent events: the story (with per-shot states) each time it changes, until it
    is finished."""
    gw = gateway(request)
    _own(request, story_id, key.tenant)
    stories = story_store(gw)

    async def stream() -> AsyncIterator[bytes]:
        last: str | None = None
        while True:
            doc = await asyncio.to_thread(stories.get, story_id, key.tenant)
            data = json.dumps(view(doc, await asyncio.to_thread(_children, gw, doc)), default=str)
            if data != last:
                last = data
                yield f"event: story\ndata: {data}\n\n".encode()
            if doc.state.terminal or await request.is_disconnected():
                return
            await asyncio.sleep(0.5)

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"cache-control": "no-cache"}
    )


def _stream_file(gw: Any, uri: str, media: str) -> StreamingResponse:
    path = gw.storage_path(uri)

    def chunks() -> Any:
        with gw.storage.open(path) as f:
            while block := f.read(1 << 20):
                yield block

    return StreamingResponse(chunks(), media_type=media)


@router.get("/stories/{story_id}/content")
def story_content(
    story_id: StoryId, request: Request, key: Annotated[KeyInfo, Depends(caller)]
) -> Response:
    doc = _own(request, story_id, key.tenant)
    if doc.state is not StoryState.SUCCEEDED or doc.film is None:
        raise ApiError(409, "not_ready", f"story {story_id} is {doc.state.value}; no film yet")
    return _stream_file(gateway(request), doc.film["uri"], "video/mp4")


@router.get("/stories/{story_id}/shots/{shot}/content")
def shot_content(
    story_id: StoryId,
    shot: Annotated[int, Path(ge=1, le=1000)],
    request: Request,
    key: Annotated[KeyInfo, Depends(caller)],
) -> Response:
    """Shot ``shot`` (1-based) as it enters the film."""
    doc = _own(request, story_id, key.tenant)
    uri = doc.shot_files.get(str(shot - 1))
    if uri is None:
        raise ApiError(409, "not_ready", f"shot {shot} of story {story_id} has no file yet")
    return _stream_file(gateway(request), uri, "video/mp4")


@router.get("/stories/{story_id}/record")
def story_record(
    story_id: StoryId, request: Request, key: Annotated[KeyInfo, Depends(caller)]
) -> dict[str, Any]:
    doc = _own(request, story_id, key.tenant)
    if doc.record is None:
        raise ApiError(409, "not_ready", f"story {story_id} is {doc.state.value}; no record yet")
    return public_record(doc.record) or {}
