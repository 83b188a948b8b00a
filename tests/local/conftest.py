"""Tiny pipelines built once per session, and a model server on loopback per test.

The pipelines are saved under the session's temporary folder and loaded back through
``from_pretrained`` with the Hub offline — the path real weights take.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from tests.local import tiny
from vidgate.local.loader import inspect_dir
from vidgate.local.runner import Runner
from vidgate.local.server import ServerState, create_app
from vidgate.local.speed import SpeedOptions

ModelPath = Callable[[str], Path]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> ModelPath:
    """``tiny_model("wan21-t2v")`` → its saved folder, built on first use in the session."""
    root = tmp_path_factory.mktemp("tiny-models")
    lock = threading.Lock()

    def get(name: str) -> Path:
        with lock:
            return tiny.save(name, root)

    return get


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def uvicorn_on_loopback(app: Any) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def model_server(
    folder: Path,
    *,
    model_id: str = "tiny",
    steps: int = 2,
    max_queue: int = 4,
    usd_per_hour: float = 0.0,
    speed: SpeedOptions | None = None,
    fault: str | None = None,
) -> Iterator[tuple[str, Runner]]:
    """A real server on loopback: the pipeline loaded by the real Runner, real uvicorn."""
    runner = Runner(inspect_dir(folder), steps=steps, speed=speed, fault=fault)
    state = ServerState(model_id, usd_per_hour=usd_per_hour, max_queue=max_queue)
    state.attach(runner.describe(), runner.run)
    with uvicorn_on_loopback(create_app(state)) as url:
        yield url, runner
    assert state.board is not None
    state.board.close()


def wait_done(client: httpx.Client, video_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(f"/v1/videos/{video_id}").json()
        if body["status"] in ("completed", "failed", "cancelled"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"{video_id} did not finish in {timeout} s")


def wait_for(
    client: httpx.Client, video_id: str, pred: Callable[[dict[str, Any]], bool], timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(f"/v1/videos/{video_id}").json()
        if pred(body):
            return body
        time.sleep(0.02)
    raise AssertionError(f"{video_id}: condition not met in {timeout} s")
