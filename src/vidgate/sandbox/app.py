"""The sandbox HTTP application and the way to run it (own process or a background thread)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import FileResponse, Response

from vidgate.catalog.loader import Catalog
from vidgate.sandbox.core import FaultConfig, SandboxCore
from vidgate.sandbox.emulators import emulator_modules


def emulated_protocols() -> set[str]:
    return set(emulator_modules())


def create_app(core: SandboxCore) -> FastAPI:
    app = FastAPI(title="vidgate sandbox", docs_url=None, redoc_url=None)
    for mod in emulator_modules().values():
        app.include_router(mod.router(core))

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "protocols": sorted(emulator_modules())}

    @app.get("/sandbox/files/{name}")
    async def file(name: str, expires: int = 0, sig: str = "") -> Response:
        job_id = name.removesuffix(".mp4")
        problem = core.check_file_signature(job_id, expires, sig)
        job = core.store.get(job_id)
        if problem is not None or job is None:
            # S3-style answer for a bad or expired presigned link
            return Response(
                f"<Error><Code>AccessDenied</Code><Message>{problem or 'no such key'}"
                "</Message></Error>",
                status_code=403,
                media_type="application/xml",
            )
        path = await asyncio.to_thread(core.render, job)
        return FileResponse(path, media_type="video/mp4")

    @app.get("/sandbox/stats")
    async def stats() -> dict[str, Any]:
        return core.store.stats()

    @app.get("/sandbox/faults")
    async def get_faults() -> FaultConfig:
        return core.faults

    @app.put("/sandbox/faults")
    async def put_faults(config: FaultConfig) -> FaultConfig:
        core.faults = config
        return core.faults

    @app.put("/sandbox/time-scale")
    async def put_time_scale(body: dict[str, float]) -> dict[str, float]:
        core.time_scale = float(body["time_scale"])
        return {"time_scale": core.time_scale}

    return app


#: how long the emulated providers keep an idle connection open (seconds)
PROVIDER_KEEP_ALIVE_S = 75


class LoopbackServer:
    """Serves any ASGI app with uvicorn on a loopback port (``port=0`` picks a free one),
    from a daemon thread or in the foreground."""

    def __init__(
        self, app: Any, *, host: str = "127.0.0.1", port: int = 0, keep_alive_s: int = 5
    ) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
            timeout_keep_alive=keep_alive_s,
            lifespan="off",
        )
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        sock = self.server.servers[0].sockets[0]
        host, port = sock.getsockname()[:2]
        return f"http://{host}:{port}"

    def start(self) -> LoopbackServer:
        """Serve from a daemon thread; returns once the socket is listening."""
        self._thread = threading.Thread(
            target=self.server.run, name="vidgate-loopback", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the loopback server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)

    def serve_forever(self) -> None:
        self.server.run()


class SandboxServer(LoopbackServer):
    """The sandbox on a loopback port, with its core (records, faults, renders) exposed."""

    def __init__(
        self,
        home: Path,
        catalog: Catalog,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        time_scale: float = 0.02,
        faults: FaultConfig | None = None,
    ) -> None:
        self.core = SandboxCore(
            home=home, catalog=catalog, time_scale=time_scale, faults=faults or FaultConfig()
        )
        # Providers' front ends keep an idle connection for a minute or more; uvicorn's 5 s
        # default would make a client that polls every 30 s reconnect for each call, which
        # no real provider makes it do.
        super().__init__(
            create_app(self.core), host=host, port=port, keep_alive_s=PROVIDER_KEEP_ALIVE_S
        )

    def start(self) -> SandboxServer:
        super().start()
        return self

    def stop(self) -> None:
        super().stop()
        self.core.store.close()
