"""The gateway side of the vidgate model server (``vidgate model serve``).

Wire protocol: docs/model-server-protocol.md — OpenAI Videos-shaped create, retrieve, content,
plus cancel, queue position, ``adjustments`` and a per-job ``cost_usd``. One gateway may talk
to several servers (:mod:`vidgate.providers.local_fleet`): each create goes to the
least-loaded server that has the model, and the job is pinned to that server's URL, so every
follow-up call goes exactly where the job was created (design.md §5).

Errors join the one tree: a full queue (429) is :class:`RateLimited` with the server's
Retry-After; a model the servers do not have is :class:`CapabilityMismatch`; a server that is
loading (503), refuses connections or runs out of GPU memory mid-job is
:class:`ProviderUnavailable`, so the job falls back to the next offering. A server keeps its
jobs in its own process, so a job it no longer knows (it restarted) has failed, and one on a
server that refuses connections is gone: cancelling it is done, and it bills nothing. What
the server rounded (frames, sides) is kept on the attempt's
``provider_job.extra["adjustments"]``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx

from vidgate.catalog.schema import Offering
from vidgate.errors import (
    CapabilityMismatch,
    ContentRejected,
    InvalidRequest,
    ProviderProtocolError,
    ProviderUnavailable,
    RateLimited,
    VidgateError,
)
from vidgate.providers._http import json_body, send
from vidgate.providers.base import (
    Provider,
    ProviderJob,
    RemoteAsset,
    RemoteState,
    RemoteStatus,
    ReportedCost,
    error_for_status,
    register,
    retry_after_seconds,
    status_table,
)
from vidgate.providers.local_fleet import ENV, PROTOCOL, Fleet, configured
from vidgate.providers.options import OptionField, passed
from vidgate.settings import Credentials
from vidgate.types import Mode, ReferenceRole, VideoRequest

STATUS: dict[str, RemoteState] = {
    "queued": RemoteState.QUEUED,
    "in_progress": RemoteState.RUNNING,
    "completed": RemoteState.SUCCEEDED,
    "failed": RemoteState.FAILED,
    "cancelled": RemoteState.CANCELED,
}
_MODES = {Mode.TEXT_TO_VIDEO: "text_to_video", Mode.IMAGE_TO_VIDEO: "image_to_video"}
#: marks an attempt whose remote job cannot exist any more (its server's process is gone), so
#: the job may send the same offering again once (jobs/waiting.py ``lost``)
_RESEND = {"resend_safe": True}


def failure(code: str | None, message: str, server: str) -> VidgateError:
    """A failed job's ``error.code`` in the error tree."""
    kw: dict[str, Any] = {"provider": PROTOCOL, "details": {"code": code, "server": server}}
    if code == "content_rejected":
        return ContentRejected(f"refused by the model server's safety check: {message}", **kw)
    if code == "out_of_memory":
        # capacity, not the request: another server, GPU or offering may well take it
        return ProviderUnavailable(f"out of GPU memory on {server}: {message}", **kw)
    # pipeline_error and anything newer: the model raised; elsewhere it may not
    return ProviderUnavailable(f"generation failed on {server} ({code}): {message}", **kw)


def refusal(resp: httpx.Response, server: str) -> VidgateError:
    """An HTTP error answer in the error tree (the server's own codes first)."""
    err = json_body(resp).get("error") or {}
    code = err.get("code") if isinstance(err, dict) else None
    message = str((err.get("message") if isinstance(err, dict) else None) or resp.reason_phrase)
    kw: dict[str, Any] = {
        "provider": PROTOCOL,
        "status_code": resp.status_code,
        "details": {"code": code, "server": server},
    }
    if code == "model_not_loaded":
        return CapabilityMismatch(f"{server} does not serve this model: {message}", **kw)
    if code == "queue_full" or resp.status_code == 429:
        return RateLimited(
            f"{server}'s queue is full: {message}",
            retry_after=retry_after_seconds(resp.headers),
            **kw,
        )
    if code in ("invalid_request", "invalid_shape"):
        return InvalidRequest(f"{server}: {message}", **kw)
    if code == "not_ready":
        return ProviderUnavailable(f"{server} is still loading its pipeline: {message}", **kw)
    return error_for_status(
        resp.status_code,
        f"{server}: {message}",
        provider=PROTOCOL,
        request_id=None,
        # error_for_status reads it only for a 429, which the queue_full branch above took
        retry_after=retry_after_seconds(resp.headers),  # pragma: no mutate - see above
    )


@register
class LocalDiffusers(Provider):
    protocol: ClassVar[str] = PROTOCOL
    default_base_url: ClassVar[str] = "http://127.0.0.1:8100/v1"
    supports_cancel: ClassVar[bool] = True
    #: guidance and steps are the server's knobs; they change neither price nor route
    option_fields: ClassVar[Mapping[str, OptionField]] = {
        "guidance_scale": passed(int, float),
        "steps": passed(int),
        "shape": passed(str),
    }

    def __init__(
        self,
        *,
        client: httpx.AsyncClient,
        credentials: Credentials,
        base_url: str | None = None,
    ) -> None:
        super().__init__(client=client, credentials=credentials, base_url=base_url)
        # The servers named in VIDGATE_LOCAL_DIFFUSERS_BASE_URL; otherwise the one base URL
        # the gateway handed over (the sandbox's emulator, or a job's pinned server).
        servers = configured(credentials.base_url_override(PROTOCOL))
        self.fleet = Fleet(client, servers or [self.base_url])

    # -- mapping ---------------------------------------------------------------------------

    def check(self, request: VideoRequest, offering: Offering) -> None:
        if request.mode not in _MODES:
            raise CapabilityMismatch(
                f"the model server takes text-to-video or image-to-video, not {request.mode.value}",
                provider=self.protocol,
            )
        for r in request.references:
            if r.role is ReferenceRole.FIRST_FRAME and not r.url.startswith("data:"):
                raise CapabilityMismatch(
                    "the model server takes its first frame inline: give the reference as a "
                    "data: URL (data:image/png;base64,...)",
                    provider=self.protocol,
                )

    def body(self, request: VideoRequest, offering: Offering, model_id: str) -> dict[str, Any]:
        w, h = request.frame_size
        body: dict[str, Any] = {
            "model": model_id,
            "prompt": request.prompt,
            "seconds": offering.capabilities.durations.nearest(request.duration_s),
            "size": f"{w}x{h}",
            "fps": request.fps,
            "negative_prompt": request.negative_prompt,
            "seed": request.seed,
            "shape": "round",
        }
        first = [r for r in request.references if r.role is ReferenceRole.FIRST_FRAME]
        if first:
            body["input_reference"] = first[0].url
        body.update(request.provider_options.get(offering.provider, {}))
        return body

    # -- contract --------------------------------------------------------------------------

    async def submit(
        self, request: VideoRequest, offering: Offering, *, idempotency_key: str
    ) -> ProviderJob:
        served = await self.fleet.choose(offering, _MODES[request.mode])
        resp = await send(
            self.client,
            "POST",  # pragma: no mutate - httpx upper-cases the method: "post" is "POST"
            f"{served.server}/videos",
            provider=self.protocol,
            create=True,
            json=self.body(request, offering, served.id),
            headers={"Idempotency-Key": idempotency_key},  # pragma: no mutate - case-insensitive
        )
        if resp.status_code >= 400:
            raise refusal(resp, served.server)
        self.fleet.note_submitted(served)
        data = json_body(resp)
        remote_id = data.get("id")
        if not isinstance(remote_id, str) or not remote_id:
            raise ProviderProtocolError(
                f"{served.server} answered the create without a video id", provider=self.protocol
            )
        extra = {"model": served.id, "adjustments": json.dumps(data.get("adjustments") or [])}
        return ProviderJob(
            protocol=self.protocol,
            offering_id=offering.id,
            remote_id=remote_id,
            base_url=served.server,
            extra=extra,
        )

    async def poll(self, job: ProviderJob) -> RemoteStatus:
        try:
            resp = await send(
                self.client,
                "GET",  # pragma: no mutate - httpx upper-cases the method: "get" is "GET"
                f"{job.base_url}/videos/{job.remote_id}",
                provider=self.protocol,
            )
        except ProviderUnavailable as down:
            if isinstance(down.__cause__, httpx.ConnectError):
                # Nothing listens: if this outlasts the driver's patience, the job is gone
                # with the process, and sending it again (to a server that answers) is safe.
                down.details.update({"code": "unreachable", "server": job.base_url, **_RESEND})
            raise
        if resp.status_code == 404:
            # The server keeps its jobs in its process: one that answers without this job
            # was restarted, and the job went with it (nothing ran to the end, nothing bills).
            return RemoteStatus(
                state=RemoteState.FAILED,
                raw="not_found",
                error=ProviderUnavailable(
                    f"{job.base_url} no longer has job {job.remote_id} (the server restarted)",
                    provider=self.protocol,
                    status_code=404,
                    details={"code": "lost", "server": job.base_url, **_RESEND},
                ),
            )
        if resp.status_code >= 400:
            raise refusal(resp, job.base_url)
        data = json_body(resp)
        raw = str(data.get("status"))
        state = status_table(STATUS, raw, self.protocol)
        progress = data.get("progress")
        error: VidgateError | None = None
        cost: ReportedCost | None = None
        if state is RemoteState.FAILED:
            e: dict[str, Any] = data["error"] if isinstance(data.get("error"), dict) else {}
            error = failure(e.get("code"), str(e.get("message") or "failed"), job.base_url)
        if state is RemoteState.SUCCEEDED and isinstance(data.get("cost_usd"), int | float):
            cost = ReportedCost(float(data["cost_usd"]), "usd", "cost_usd")
        return RemoteStatus(
            state=state,
            raw=raw,
            progress=float(progress) / 100.0 if isinstance(progress, int | float) else None,
            error=error,
            reported_cost=cost,
        )

    async def fetch(self, job: ProviderJob) -> list[RemoteAsset]:
        return [
            RemoteAsset(
                url=f"{job.base_url}/videos/{job.remote_id}/content", content_type="video/mp4"
            )
        ]

    async def cancel(self, job: ProviderJob) -> None:
        url = f"{job.base_url}/videos/{job.remote_id}/cancel"
        try:
            resp = await self.client.post(url)
        except httpx.ConnectError:
            # Nothing listens there: the server process is gone, and its jobs (kept in that
            # process) with it, so nothing is left running to cancel or to pay for.
            return
        except httpx.HTTPError as e:
            raise ProviderUnavailable(
                f"cancel at {job.base_url} failed: {e}", provider=self.protocol
            ) from e
        if resp.status_code == 404:
            return  # a restarted server: the job is gone already
        if resp.status_code >= 400:
            raise refusal(resp, job.base_url)


def adjustments(job: ProviderJob) -> list[dict[str, Any]]:
    """What the server changed of the request (``[]`` when it took it as asked)."""
    value = json.loads(job.extra.get("adjustments") or "[]")
    return value if isinstance(value, list) else []


__all__ = ["ENV", "LocalDiffusers", "adjustments"]
