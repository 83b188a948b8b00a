"""The unauthenticated MCP HTTP server refuses requests whose Host or Origin is not its own
loopback name (DNS rebinding: a web page pointing a name it controls at 127.0.0.x), on any
loopback address it is bound to, not only 127.0.0.1."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.mcp.conftest import ROOT, free_port, server_env

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "probe", "version": "0"},
    },
}
HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2"])
def test_a_foreign_host_or_origin_is_refused(host: str, tmp_path: Path, python: str) -> None:
    port = free_port()
    args = ["mcp", "--transport", "http", "--host", host, "--port", str(port), "--sandbox"]
    proc = subprocess.Popen(
        [python, "-m", "vidgate", *args],
        env=server_env(tmp_path / "home"),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://{host}:{port}/mcp"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the MCP server did not listen"
                time.sleep(0.2)
        with httpx.Client(timeout=10) as c:
            own = c.post(url, json=INIT, headers=HEADERS)
            assert own.status_code == 200, own.text
            rebound = c.post(url, json=INIT, headers={**HEADERS, "host": f"evil.example:{port}"})
            assert rebound.status_code in (403, 421), rebound.text
            page = c.post(url, json=INIT, headers={**HEADERS, "origin": "http://evil.example"})
            assert page.status_code == 403, page.text
    finally:
        proc.kill()
        proc.wait(timeout=30)
