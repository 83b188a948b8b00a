"""The app factory: ``create_app(settings)`` builds the service; its lifespan owns the
gateway and, unless disabled, a worker running jobs in the same event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from vidgate import __version__
from vidgate.gateway import Gateway
from vidgate.jobs.callbacks import CallbackHandler
from vidgate.jobs.worker import Worker, WorkerConfig
from vidgate.server import dashboard as dashboard_api
from vidgate.server import errors, native, videos
from vidgate.server import reconcile as reconcile_api
from vidgate.server import stories as stories_api
from vidgate.server.deps import ServerState
from vidgate.server.guards import MAX_REQUEST_BYTES, Gate
from vidgate.server.observability import Metrics
from vidgate.settings import Settings
from vidgate.supervise import workers_ready

log = logging.getLogger("vidgate.server")


def create_app(
    settings: Settings | None = None,
    *,
    gateway: Gateway | None = None,
    run_worker: bool = True,
    worker_config: WorkerConfig | None = None,
) -> FastAPI:
    gw = gateway or Gateway(settings or Settings())
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gw.store  # noqa: B018 - open the database (and migrate) before serving
        app.state.callbacks = CallbackHandler(
            gw.store,
            gw.client(),
            token_secret=gw.webhook_secret(),
        )
        task = None
        worker = None
        if run_worker:
            worker = Worker(gw, worker_config or WorkerConfig(), on_finished=metrics.job_finished)
            task = asyncio.create_task(worker.run())
        try:
            yield
        finally:
            if worker is not None and task is not None:
                worker.stop()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, timeout=10)
            await gw.aclose()
            gw.close()

    app = FastAPI(
        title="vidgate",
        version=__version__,
        description="One API over every AI video model: an OpenAI-compatible /v1/videos, "
        "a native /v1/jobs API with routing, budgets and webhooks.",
        lifespan=lifespan,
    )
    app.state.vidgate = ServerState(gateway=gw, metrics=metrics, auth_cache={})
    errors.install(app)
    # inside the metrics middleware below (so refusals are counted), outside every route:
    # the key is checked, then the body's size and shape, before a route reads anything
    app.add_middleware(Gate, max_bytes=MAX_REQUEST_BYTES)

    @app.middleware("http")
    async def guard(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.requests.labels(path, str(response.status_code)).inc()
        if response.status_code >= 500:
            log.warning(
                "server error",
                extra={
                    "route": path,
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - started) * 1e3, 1),
                },
            )
        return response

    app.include_router(videos.router)
    app.include_router(native.router)
    app.include_router(dashboard_api.router)
    app.include_router(reconcile_api.router)
    app.include_router(stories_api.router)
    app.mount("/static", dashboard_api.static_files(), name="static")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, Any]:
        return {"ok": True, "version": __version__}

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> JSONResponse:
        try:
            counts = gw.store.counts()
            offerings = len(gw.catalog.offerings)
        except Exception as e:
            return JSONResponse({"ready": False, "error": type(e).__name__}, status_code=503)
        # Under `vidgate serve`'s supervisor: not ready while a worker process is down.
        up, why = workers_ready()
        if not up:
            return JSONResponse({"ready": False, "error": why}, status_code=503)
        return JSONResponse(
            {
                "ready": True,
                "offerings": offerings,
                "jobs": sum(counts.values()),
                "sandbox": gw.sandbox,
            }
        )

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        metrics.refresh(gw.store.counts(), gw.health.snapshot())
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    def dashboard() -> HTMLResponse:
        page = resources.files("vidgate.server") / "static" / "index.html"
        return HTMLResponse(page.read_text("utf-8"))

    return app
