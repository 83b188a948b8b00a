"""What each MCP tool does, over the gateway facade, with no MCP in it.

Every method returns plain JSON-able data an agent can read, and raises :class:`ToolInputError`
with one line naming what was wrong and what would work. Submitting never runs a job here: the
server's own worker (started beside it) drives jobs and stories durably, so a job survives
the agent disconnecting and ``follow`` only watches the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from vidgate.errors import VidgateError
from vidgate.gateway import Gateway
from vidgate.types import (
    AudioMode,
    Constraints,
    Job,
    Mode,
    QualityTier,
    Reference,
    ReferenceKind,
    ReferenceRole,
    VideoRequest,
)

#: the longest a single ``follow`` call waits; an agent calls again to keep following
MAX_FOLLOW_S = 600.0
POLICIES = ("cheapest", "fastest", "best-quality", "balanced")
#: how often ``follow`` re-reads the store
_POLL_S = 0.25

Progress = Callable[[float, str], Awaitable[None]]


class ToolInputError(ValueError):
    """The caller's input cannot be served; the message is one line with the fix."""


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _validation_line(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def build_request(
    prompt: str,
    *,
    duration_s: float = 5.0,
    resolution: str = "720p",
    aspect: str = "16:9",
    fps: int | None = None,
    audio: bool = False,
    quality: str | None = None,
    max_cost_usd: float | None = None,
    max_latency_s: float | None = None,
    image_url: str | None = None,
    negative_prompt: str | None = None,
    seed: int | None = None,
) -> VideoRequest:
    """A request from tool arguments. A first-frame image is a URL (http(s) or data:), never
    a local path: an MCP server must not read files on an agent's say-so."""
    if quality is not None and quality not in {q.value for q in QualityTier}:
        raise ToolInputError(f"quality {quality!r}: use draft, standard or premium")
    references = []
    if image_url is not None:
        if not image_url.startswith(("https://", "http://", "data:")):
            raise ToolInputError(
                f"image_url {image_url[:60]!r}: give an http(s) URL or a data: URL of the image"
            )
        references.append(
            Reference(role=ReferenceRole.FIRST_FRAME, kind=ReferenceKind.IMAGE, url=image_url)
        )
    try:
        return VideoRequest(
            prompt=prompt,
            negative_prompt=negative_prompt,
            mode=Mode.IMAGE_TO_VIDEO if references else Mode.TEXT_TO_VIDEO,
            duration_s=duration_s,
            resolution=resolution,  # a string: the validator parses it
            aspect_ratio=aspect,
            fps=fps,
            audio=AudioMode.REQUIRED if audio else AudioMode.NONE,
            seed=seed,
            references=references,
            quality=QualityTier(quality) if quality else None,
            constraints=Constraints(max_cost_usd=max_cost_usd, max_latency_s=max_latency_s),
        )
    except ValidationError as e:
        raise ToolInputError(_validation_line(e)) from None


def _policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ToolInputError(f"policy {policy!r}: use one of {', '.join(POLICIES)}")
    return policy


def job_view(gw: Gateway, job: Job) -> dict[str, Any]:
    """What an agent needs of a job: where it is, what it cost, where the video is."""
    out: dict[str, Any] = {
        "job_id": job.id,
        "state": job.state.value,
        "terminal": job.state.terminal,
        "progress": job.progress,
        "offering": job.offering_id,
        "estimated_cost_usd": job.estimated_cost_usd,
        "cost_usd": job.cost_usd,
        "attempts": len(job.attempts),
        "synthetic": job.synthetic,
        "error": job.error,
        "quality": job.quality,
    }
    out["assets"] = [
        {
            "uri": a.uri,
            "path": gw.storage_path(a.uri) if gw.storage.protocol == "file" else None,
            "duration_s": a.duration_s,
            "width": a.width,
            "height": a.height,
            "fps": a.fps,
            "has_audio": a.has_audio,
            "bytes": a.bytes,
            "sha256": a.sha256,
        }
        for a in job.assets
    ]
    return out


#: the largest inline (data:) image reference, as on the REST API
MAX_REFERENCE_BYTES = 20 * 1024 * 1024


async def vet_references(gw: Gateway, request: VideoRequest) -> VideoRequest:
    """The REST API's reference rules, before anything is routed or held: a data: image is
    opened by its bytes (and relabelled with the type they show); an http(s) URL must not
    name an internal address (a provider would fetch it, but it can only be a mistake or a
    probe)."""
    from vidgate.net.ssrf import resolve_checked
    from vidgate.server import images
    from vidgate.server.errors import ApiError

    refs = []
    for ref in request.references:
        if ref.url.startswith("data:"):
            if len(ref.url) > MAX_REFERENCE_BYTES * 4 // 3 + 100:
                raise ToolInputError(f"image_url: inline image is over {MAX_REFERENCE_BYTES} bytes")
            try:
                url = await asyncio.to_thread(images.checked_data_url, ref.url, "image_url")
            except ApiError as e:
                raise ToolInputError(one_line(e)) from None
            refs.append(ref.model_copy(update={"url": url}))
            continue
        try:
            await resolve_checked(ref.url, allow_hosts=gw.settings.allow_hosts())
        except VidgateError as e:
            raise ToolInputError(
                f"image_url {ref.url[:80]!r} is not allowed: {one_line(e)}"
            ) from None
        refs.append(ref)
    return request.model_copy(update={"references": refs})


class VidgateTools:
    """The tools, bound to one gateway. ``story_dir``: where a story's relative file names
    resolve (the working directory for a local stdio agent; None over HTTP, where a story may
    only name URLs)."""

    def __init__(self, gw: Gateway, *, tenant: str = "default", story_dir: Path | None = None):
        self.gw = gw
        self.tenant = tenant
        self.story_dir = story_dir

    async def _call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """Run blocking gateway work (database, routing) off the event loop; turn vidgate's
        own errors into one-line tool errors."""
        try:
            return await asyncio.to_thread(fn, *args, **kw)
        except VidgateError as e:
            raise ToolInputError(one_line(e)) from None

    async def route(
        self, request: VideoRequest, policy: str, offerings: list[str] | None
    ) -> dict[str, Any]:
        request = await vet_references(self.gw, request)
        plan = await self._call(self.gw.route, request, _policy(policy), offerings or None)
        out: dict[str, Any] = plan.explain(runners_up=min(9, len(plan.ranked)))
        out["sandbox"] = self.gw.sandbox
        return out

    async def generate(
        self,
        request: VideoRequest,
        policy: str,
        offerings: list[str] | None,
        idempotency_key: str | None,
    ) -> dict[str, Any]:
        request = await vet_references(self.gw, request)
        job = await self._call(
            self.gw.submit,
            request,
            policy=_policy(policy),
            pinned=offerings or None,
            tenant=self.tenant,
            idempotency_key=idempotency_key,
        )
        view = job_view(self.gw, job)
        view["next"] = f"call follow with job_id {job.id} to wait for the video"
        return view

    async def get_job(self, job_id: str) -> dict[str, Any]:
        return job_view(self.gw, await self._call(self.gw.job, job_id, self.tenant))

    async def follow(
        self, job_id: str, timeout_s: float, progress: Progress | None = None
    ) -> dict[str, Any]:
        if not 0 < timeout_s <= MAX_FOLLOW_S:
            raise ToolInputError(f"timeout_s {timeout_s:g}: give 0 < timeout_s <= {MAX_FOLLOW_S:g}")
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout_s
        last: tuple[str, float | None] | None = None
        while True:
            job = await self._call(self.gw.job, job_id, self.tenant)
            key = (job.state.value, job.progress)
            if progress is not None and key != last:
                done = 1.0 if job.state.terminal else (job.progress or 0.0)
                await progress(done, job.state.value)
            last = key
            if job.state.terminal or loop.time() >= until:
                view = job_view(self.gw, job)
                view["timed_out"] = not job.state.terminal
                return view
            await asyncio.sleep(_POLL_S)

    async def cancel(self, job_id: str) -> dict[str, Any]:
        try:
            job = await self.gw.cancel(job_id, self.tenant)
        except VidgateError as e:
            raise ToolInputError(one_line(e)) from None
        return job_view(self.gw, job)

    async def price_workload(self, workload: str) -> dict[str, Any]:
        from vidgate.planner.plan import plan
        from vidgate.planner.workload import WorkloadError, check_against, parse_workload

        def price() -> dict[str, Any]:
            w = parse_workload(workload, "workload")
            check_against(w, self.gw.catalog)
            report: dict[str, Any] = plan(w, self.gw.catalog).to_dict()
            return report

        try:
            return await asyncio.to_thread(price)
        except WorkloadError as e:
            raise ToolInputError(one_line(e)) from None
        except VidgateError as e:
            raise ToolInputError(one_line(e)) from None

    # -- stories -------------------------------------------------------------------------------

    def _plan_story(self, story: str) -> tuple[Any, Any]:
        from vidgate.stories.plan import plan_story
        from vidgate.stories.spec import parse_story

        checked = parse_story(story, source="story", base_dir=self.story_dir)
        problems = list(checked.problems)
        plan = None
        if checked.loaded is not None:
            plan, more = plan_story(checked.loaded, self.gw.router(), self.gw.catalog)
            problems += more
        if problems or checked.loaded is None or plan is None:
            problems.sort(key=lambda p: (p.line or 0, p.field))
            shown = "; ".join(p.render("story") for p in problems[:5])
            more_n = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise ToolInputError(shown + more_n or "the story could not be planned")
        return checked.loaded, plan

    async def plan_story(self, story: str) -> dict[str, Any]:
        try:
            _, plan = await asyncio.to_thread(self._plan_story, story)
        except VidgateError as e:
            raise ToolInputError(one_line(e)) from None
        return {"summary": plan.summary(), "plan": plan.model_dump(mode="json")}

    async def run_story(self, story: str, idempotency_key: str | None) -> dict[str, Any]:
        from vidgate.server.errors import ApiError
        from vidgate.server.stories import checked_story_refs
        from vidgate.stories.driver import submit_story

        try:
            loaded, plan = await asyncio.to_thread(self._plan_story, story)
            # image URLs pass the REST API's SSRF rules before anything is held or sent
            loaded = await checked_story_refs(self.gw, loaded)
        except (VidgateError, ApiError) as e:
            raise ToolInputError(one_line(e)) from None

        def submit() -> tuple[Any, bool, Any]:
            doc, created = submit_story(
                self.gw, loaded, plan, tenant=self.tenant, idempotency_key=idempotency_key
            )
            return doc, created, plan

        try:
            doc, created, plan = await asyncio.to_thread(submit)
        except VidgateError as e:
            raise ToolInputError(one_line(e)) from None
        view = await self._story_view(doc)
        view["created"] = created
        view["summary"] = plan.summary()
        view["next"] = f"call follow_story with story_id {doc.id} to wait for the film"
        return view

    async def _story_view(self, doc: Any) -> dict[str, Any]:
        jobs: dict[str, Job] = {}
        for key, jid in doc.children.items():
            jobs[key] = await self._call(self.gw.job, jid)
        film = dict(doc.film) if doc.film else None
        if film is not None and "uri" in film and self.gw.storage.protocol == "file":
            film["path"] = self.gw.storage_path(film["uri"])
        return {
            "story_id": doc.id,
            "title": doc.title,
            "state": doc.state.value,
            "terminal": doc.state.terminal,
            "progress": doc.progress,
            "segments": {
                k: {"job_id": j.id, "state": j.state.value, "progress": j.progress}
                for k, j in sorted(jobs.items())
            },
            "film": film,
            "record": doc.record,
            "error": doc.error,
            "synthetic": doc.synthetic,
        }

    async def get_story(self, story_id: str) -> dict[str, Any]:
        from vidgate.stories.driver import story_store

        doc = await self._call(story_store(self.gw).get, story_id, self.tenant)
        return await self._story_view(doc)

    async def follow_story(
        self, story_id: str, timeout_s: float, progress: Progress | None = None
    ) -> dict[str, Any]:
        from vidgate.stories.driver import story_store

        if not 0 < timeout_s <= MAX_FOLLOW_S:
            raise ToolInputError(f"timeout_s {timeout_s:g}: give 0 < timeout_s <= {MAX_FOLLOW_S:g}")
        store = story_store(self.gw)
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout_s
        last: tuple[str, float] | None = None
        while True:
            doc = await self._call(store.get, story_id, self.tenant)
            key = (doc.state.value, doc.progress)
            if progress is not None and key != last:
                await progress(1.0 if doc.state.terminal else doc.progress, doc.state.value)
            last = key
            if doc.state.terminal or loop.time() >= until:
                view = await self._story_view(doc)
                view["timed_out"] = not doc.state.terminal
                return view
            await asyncio.sleep(_POLL_S)
