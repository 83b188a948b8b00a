"""The MCP server as a real process: its environment and a free port."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def server_env(home: Path, **extra: str) -> dict[str, str]:
    """A clean environment for the server: no provider key can leak in from the test run's
    own environment, so the server must pick the sandbox by itself."""
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    env.update(
        VIDGATE_HOME=str(home),
        VIDGATE_SANDBOX_TIME_SCALE="0.004",
        VIDGATE_POLL_INTERVAL_S="0.05",
        PYTHONPATH=str(ROOT / "src"),
    )
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def python() -> str:
    return sys.executable
