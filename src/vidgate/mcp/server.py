"""The MCP server: vidgate's tools for agents over stdio or streamable HTTP (official SDK).

One process holds one gateway and runs one worker beside the server, so a job or story an
agent submits is driven durably (leases, fallbacks, ledger) whether or not the agent stays
connected; the tools only submit and read the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from pathlib import Path
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, InputRequiredResult, ToolAnnotations
from pydantic import Field, ValidationError

from vidgate import __version__
from vidgate.gateway import Gateway
from vidgate.jobs.worker import WorkerConfig
from vidgate.mcp.tools import MAX_FOLLOW_S, POLICIES, ToolInputError, VidgateTools, build_request
from vidgate.settings import Settings
from vidgate.types import VideoRequest

log = logging.getLogger("vidgate.mcp")

Transport = Literal["stdio", "http"]

INSTRUCTIONS = (
    "vidgate routes video generation across many models and providers, within a budget. "
    "Call route to see which offering would serve a request and what it costs; generate to "
    "submit one (it returns a job id at once); follow to wait for it (progress notifications, "
    "at most 10 minutes a call: call again to keep waiting). For a multi-shot film: plan_story "
    "with a story file (YAML or JSON; story_schema gives its JSON Schema), then run_story and "
    "follow_story. price_workload prices "
    "a traffic mix (WORKLOAD.yaml) on the catalog."
)

# Descriptions the agent reads in the tool's input schema.
Prompt = Annotated[str, Field(description="What the video should show.", min_length=1)]
Duration = Annotated[float, Field(description="Seconds of video.", gt=0, le=600)]
Resolution = Annotated[str, Field(description="480p, 540p, 720p, 768p, 1080p, 1440p or 4k.")]
Aspect = Annotated[str, Field(description="Aspect ratio W:H, e.g. 16:9, 9:16, 1:1.")]
Fps = Annotated[int | None, Field(description="Frames per second (any if unset).", gt=0)]
Audio = Annotated[bool, Field(description="Require native audio.")]
Quality = Annotated[str | None, Field(description="Minimum tier: draft, standard or premium.")]
MaxCost = Annotated[float | None, Field(description="Budget in USD for this clip.", ge=0)]
MaxLatency = Annotated[float | None, Field(description="Seconds the job may take (at p90).", gt=0)]
Policy = Annotated[str, Field(description=f"Routing policy: {', '.join(POLICIES)}.")]
Offerings = Annotated[
    list[str] | None,
    Field(description="Pin offering ids, in order of preference (a fallback list)."),
]
ImageUrl = Annotated[
    str | None, Field(description="First-frame image as an http(s) or data:image URL.")
]
Negative = Annotated[str | None, Field(description="Negative prompt.")]
Seed = Annotated[int | None, Field(description="Seed, where the model takes one.")]
JobId = Annotated[str, Field(description="A job id from generate (job_...).", min_length=1)]
StoryId = Annotated[str, Field(description="A story id from run_story.", min_length=1)]
Timeout = Annotated[
    float,
    Field(description=f"Seconds to wait at most (up to {MAX_FOLLOW_S:g}).", gt=0, le=MAX_FOLLOW_S),
]
IdemKey = Annotated[
    str | None,
    Field(description="Repeat-safe key: the same key returns the first call's job or story."),
]
StoryText = Annotated[
    str,
    Field(
        description="The story file's text (YAML or JSON): title, resolution, shots "
        "(prompt, duration), optional characters, soundtrack, captions.",
        min_length=1,
    ),
]
WorkloadText = Annotated[
    str,
    Field(
        description="WORKLOAD.yaml text: daily_volume and classes (share, policy, request).",
        min_length=1,
    ),
]

_READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
_SPEND = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False)


class VidgateMCP(MCPServer[Any]):
    """The SDK's server, with argument errors as one line naming the field."""

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as e:
            cause = e.__cause__
            if isinstance(cause, ToolInputError):
                # an argument the tool itself found wrong (the SDK files any exception a tool
                # raises as a crash and hides its text): the one line the model must read
                raise ToolError(f"Error executing tool {name}: {cause}") from cause
            if isinstance(cause, ValidationError):
                err = cause.errors()[0]
                field = ".".join(str(p) for p in err["loc"]) or "arguments"
                raise ToolError(
                    f"{name}: {field}: {err['msg']} (see the tool's input schema)"
                ) from cause
            raise


#: the tool arguments that describe the video (the rest say how to route or submit it)
_REQUEST_ARGS = frozenset(inspect.signature(build_request).parameters) - {"prompt"}


def _request(args: dict[str, Any]) -> VideoRequest:
    """The request a tool's arguments describe. The tools keep their parameters spelled out
    (the SDK makes each tool's input schema from its signature); this picks the request's."""
    return build_request(args["prompt"], **{k: v for k, v in args.items() if k in _REQUEST_ARGS})


def build_server(tools: VidgateTools) -> VidgateMCP:
    """The MCP server with every vidgate tool registered on it."""
    server = VidgateMCP(
        "vidgate",
        title="vidgate video gateway",
        version=__version__,
        instructions=INSTRUCTIONS,
        log_level="WARNING",
    )

    @server.tool(annotations=_READ)
    async def route(
        prompt: Prompt,
        duration_s: Duration = 5.0,
        resolution: Resolution = "720p",
        aspect: Aspect = "16:9",
        fps: Fps = None,
        audio: Audio = False,
        quality: Quality = None,
        max_cost_usd: MaxCost = None,
        max_latency_s: MaxLatency = None,
        policy: Policy = "cheapest",
        offerings: Offerings = None,
        image_url: ImageUrl = None,
        seed: Seed = None,
    ) -> dict[str, Any]:
        """Rank the offerings that can serve a request, explained: the choice, runners-up with
        estimated cost and latency, and every rejected offering with its reasons. Spends nothing."""
        return await tools.route(_request(locals()), policy, offerings)

    @server.tool(annotations=_SPEND)
    async def generate(
        prompt: Prompt,
        duration_s: Duration = 5.0,
        resolution: Resolution = "720p",
        aspect: Aspect = "16:9",
        fps: Fps = None,
        audio: Audio = False,
        quality: Quality = None,
        max_cost_usd: MaxCost = None,
        max_latency_s: MaxLatency = None,
        policy: Policy = "cheapest",
        offerings: Offerings = None,
        image_url: ImageUrl = None,
        negative_prompt: Negative = None,
        seed: Seed = None,
        idempotency_key: IdemKey = None,
    ) -> dict[str, Any]:
        """Submit a video job (routed, budget held) and return its job id at once; the server's
        worker makes it. Then call follow. Costs money unless the server runs on the sandbox."""
        return await tools.generate(_request(locals()), policy, offerings, idempotency_key)

    @server.tool(annotations=_READ)
    async def get_job(job_id: JobId) -> dict[str, Any]:
        """A job's state, progress, offering, cost and (when done) its video's file."""
        return await tools.get_job(job_id)

    @server.tool(annotations=_READ)
    async def follow(
        job_id: JobId, ctx: Context[Any, Any], timeout_s: Timeout = 120.0
    ) -> dict[str, Any]:
        """Wait until a job ends (or timeout_s passes), sending progress notifications; returns
        the job as get_job does, with timed_out true if it is still running."""

        async def progress(done: float, state: str) -> None:
            await ctx.report_progress(done, 1.0, state)

        return await tools.follow(job_id, timeout_s, progress)

    @server.tool(annotations=ToolAnnotations(destructive_hint=True, idempotent_hint=True))
    async def cancel_job(job_id: JobId) -> dict[str, Any]:
        """Cancel a job: at the provider where it can be, and in any case here."""
        return await tools.cancel(job_id)

    @server.tool(annotations=_READ)
    async def price_workload(workload: WorkloadText) -> dict[str, Any]:
        """Price a traffic mix on the catalog: per class the offering, cost per clip, per day and
        month, latency, SLA hit rate, and what single-model baselines would cost instead."""
        return await tools.price_workload(workload)

    @server.tool(annotations=_READ)
    async def plan_story(story: StoryText) -> dict[str, Any]:
        """Plan a multi-shot film without making it: per shot the offering, segments,
        estimated cost and time, and the total against the story's budget."""
        return await tools.plan_story(story)

    @server.tool(annotations=_READ)
    async def story_schema() -> dict[str, Any]:
        """The story file's JSON Schema: every field plan_story and run_story accept."""
        from vidgate.stories.spec import json_schema

        schema: dict[str, Any] = json_schema()
        return schema

    @server.tool(annotations=_SPEND)
    async def run_story(story: StoryText, idempotency_key: IdemKey = None) -> dict[str, Any]:
        """Start making a film from a story (its whole budget held up front) and return the
        story id at once; the server's worker makes the shots and assembles the film. Then
        call follow_story."""
        return await tools.run_story(story, idempotency_key)

    @server.tool(annotations=_READ)
    async def get_story(story_id: StoryId) -> dict[str, Any]:
        """A story's state, progress, each segment's job, and (when done) the film and record."""
        return await tools.get_story(story_id)

    @server.tool(annotations=_READ)
    async def follow_story(
        story_id: StoryId, ctx: Context[Any, Any], timeout_s: Timeout = 300.0
    ) -> dict[str, Any]:
        """Wait until a story ends (or timeout_s passes), sending progress notifications."""

        async def progress(done: float, state: str) -> None:
            await ctx.report_progress(done, 1.0, state)

        return await tools.follow_story(story_id, timeout_s, progress)

    return server


def _local_only(host: str) -> Any:
    """DNS-rebinding protection for the bound host, whichever loopback address it is: the
    server has no authentication, so a web page that points a name at it must be refused by
    Host and Origin. (The SDK turns this on by itself only for 127.0.0.1, localhost, ::1.)"""
    from mcp.server.transport_security import TransportSecuritySettings

    names = {"127.0.0.1", "localhost", "[::1]", f"[{host}]" if ":" in host else host}
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=sorted(f"{n}:*" for n in names),
        allowed_origins=sorted(f"http://{n}:*" for n in names),
    )


async def serve(
    settings: Settings, transport: Transport, *, host: str = "127.0.0.1", port: int = 8000
) -> None:
    """Run the server until the client goes (stdio) or the process is interrupted (HTTP)."""
    gw = Gateway(settings)
    worker = gw.worker(WorkerConfig(concurrency=64, grace_s=10.0))
    wtask = asyncio.create_task(worker.run(), name="vidgate-mcp-worker")
    try:
        # A local (stdio) agent may name story files relative to where it started the server;
        # over HTTP a story may only name URLs, as on the REST API.
        tools = VidgateTools(gw, story_dir=Path.cwd() if transport == "stdio" else None)
        server = build_server(tools)
        if transport == "stdio":
            await server.run_stdio_async()
        else:
            import uvicorn

            app = server.streamable_http_app(host=host, transport_security=_local_only(host))
            config = uvicorn.Config(app, host=host, port=port, log_level="warning")
            await uvicorn.Server(config).serve()
    finally:
        worker.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(wtask, timeout=15)
        await gw.aclose()
        gw.close()
