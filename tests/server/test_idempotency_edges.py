"""Idempotency-Key at the edges of what is stored (``deps.idempotent``): a 5xx — 500 itself
included — and a handler's answer that is not JSON are forgotten, so a retry with the same
key runs the request again; a 4xx about the request is stored and replayed. Driven through
a real app: the gate authenticates the key, the route under /v1 calls ``idempotent``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from fastapi import Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from tests.server.conftest import sandbox_settings
from vidgate.gateway import Gateway
from vidgate.server.app import create_app
from vidgate.server.deps import caller, idempotent
from vidgate.server.errors import ApiError

Answer = Callable[[int], Response]


@pytest.fixture
async def app_client(
    tmp_path: Path,
) -> AsyncIterator[tuple[httpx.AsyncClient, list[int], dict[str, Answer]]]:
    gw = Gateway(sandbox_settings(tmp_path / "home"))
    app = create_app(gateway=gw, run_worker=False)
    calls: list[int] = []
    answer: dict[str, Answer] = {}

    @app.post("/v1/edge")
    async def edge(request: Request) -> Response:
        key = caller(request)
        raw = await request.body()

        async def handler() -> Response:
            calls.append(1)
            return answer["now"](len(calls))

        return await idempotent(request, key.tenant, raw, handler)

    gw.accounts.ensure_tenant("edge")
    _, raw_key = gw.accounts.create_key("edge")
    # a handler that crashes answers 500 here as it would to a client (not raised into the test)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://t",
            headers={"Authorization": f"Bearer {raw_key}", "Idempotency-Key": "k-1"},
        ) as client:
            yield client, calls, answer
    finally:
        gw.close()


def _raise(status: int) -> Answer:
    def answer(n: int) -> Response:
        raise ApiError(status, "edge_error", f"answer {n}")

    return answer


@pytest.mark.parametrize("status", [500, 503])
async def test_a_5xx_is_forgotten_and_the_retry_runs_again(
    app_client: tuple[httpx.AsyncClient, list[int], dict[str, Answer]], status: int
) -> None:
    client, calls, answer = app_client
    answer["now"] = _raise(status)
    first = await client.post("/v1/edge", json={"a": 1})
    assert first.status_code == status
    answer["now"] = lambda n: JSONResponse({"n": n})
    again = await client.post("/v1/edge", json={"a": 1})
    assert again.status_code == 200
    assert again.json() == {"n": 2}  # ran again: not the stored first answer
    assert "idempotent-replayed" not in again.headers
    assert len(calls) == 2


async def test_a_4xx_about_the_request_is_stored_and_replayed(
    app_client: tuple[httpx.AsyncClient, list[int], dict[str, Answer]],
) -> None:
    client, calls, answer = app_client
    answer["now"] = _raise(422)
    first = await client.post("/v1/edge", json={"a": 1})
    assert first.status_code == 422
    again = await client.post("/v1/edge", json={"a": 1})
    assert again.status_code == 422
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert len(calls) == 1  # the handler ran once


async def test_an_answer_that_is_not_json_is_not_stored(
    app_client: tuple[httpx.AsyncClient, list[int], dict[str, Answer]],
) -> None:
    client, calls, answer = app_client
    answer["now"] = lambda n: PlainTextResponse(f"plain {n}")
    first = await client.post("/v1/edge", json={"a": 1})
    assert (first.status_code, first.text) == (200, "plain 1")
    # the key was released, not left "in progress" (a retry would be 409) nor stored
    again = await client.post("/v1/edge", json={"a": 1})
    assert (again.status_code, again.text) == (200, "plain 2")
    assert "idempotent-replayed" not in again.headers
    assert len(calls) == 2


async def test_a_handler_that_crashes_releases_the_key(
    app_client: tuple[httpx.AsyncClient, list[int], dict[str, Answer]],
) -> None:
    client, calls, answer = app_client

    def crash(n: int) -> Response:
        raise RuntimeError(f"bug {n}")

    answer["now"] = crash
    first = await client.post("/v1/edge", json={"a": 1})
    assert first.status_code == 500
    # released, not left "in progress" (that retry would be a 409 for the key's lifetime)
    answer["now"] = lambda n: JSONResponse({"n": n})
    again = await client.post("/v1/edge", json={"a": 1})
    assert again.status_code == 200, again.text
    assert again.json() == {"n": 2}
    assert len(calls) == 2
