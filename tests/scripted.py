"""A provider that answers whatever a test scripts, over real HTTP on loopback: for error
paths the sandbox does not produce (unknown statuses, malformed bodies)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from vidgate.sandbox.app import LoopbackServer


@dataclass
class Scripted:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    hang_s: float = 0.0


@dataclass
class ScriptedProvider:
    """Answers each request with the next scripted reply for its method (FIFO)."""

    replies: dict[str, list[Scripted]] = field(default_factory=dict)
    seen: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)

    def script(self, method: str, *replies: Scripted) -> None:
        self.replies.setdefault(method, []).extend(replies)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.api_route("/{path:path}", methods=["GET", "POST", "DELETE", "PUT"])
        async def any_route(path: str, request: Request) -> Response:
            self.seen.append(
                (request.method, "/" + path, dict(request.headers), await request.body())
            )
            queue = self.replies.get(request.method) or []
            reply = queue.pop(0) if queue else Scripted(404, {"error": {"message": "unscripted"}})
            if reply.hang_s:
                await asyncio.sleep(reply.hang_s)
            return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers)

        return app


@contextmanager
def scripted_server() -> Iterator[tuple[ScriptedProvider, str]]:
    sp = ScriptedProvider()
    server = LoopbackServer(sp.app()).start()
    try:
        yield sp, server.url
    finally:
        server.stop()
