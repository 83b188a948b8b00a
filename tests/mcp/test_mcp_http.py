"""`vidgate mcp --transport http`: a real server process on a loopback port, driven by the
official SDK's streamable HTTP client; and the command's own errors (exit 2, one line)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mcp import Client
from tests.mcp.conftest import ROOT, free_port, server_env


@pytest.fixture
def http_server(tmp_path: Path, python: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    proc = subprocess.Popen(
        [python, "-m", "vidgate", "mcp", "--transport", "http", "--port", str(port), "--sandbox"],
        env=server_env(tmp_path / "home"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            pytest.fail(
                f"server exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}"
            )
        try:
            httpx.get(
                url, timeout=1
            )  # any answer means it listens (a GET without a session is 4xx)
            break
        except httpx.TransportError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("the MCP server did not listen within 60 s")
            time.sleep(0.2)
    try:
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


async def test_streamable_http_lists_routes_generates_and_follows(
    http_server: tuple[str, subprocess.Popen[str]],
) -> None:
    url, proc = http_server
    # a URL: the SDK connects with its streamable HTTP client (streamable_http_client)
    async with Client(url, read_timeout_seconds=180) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"route", "generate", "follow", "get_job", "price_workload", "run_story"} <= names

        route = await client.call_tool(
            "route", {"prompt": "a paper boat", "duration_s": 5, "policy": "fastest"}
        )
        assert not route.is_error, route.content
        r: dict[str, Any] = route.structured_content or {}
        assert r["policy"] == "fastest"
        assert r["sandbox"] is True

        made = await client.call_tool("generate", {"prompt": "a paper boat", "resolution": "480p"})
        assert not made.is_error, made.content
        job_id = (made.structured_content or {})["job_id"]
        done = await client.call_tool("follow", {"job_id": job_id, "timeout_s": 120})
        assert not done.is_error, done.content
        d = done.structured_content or {}
        assert d["state"] == "succeeded"
        assert Path(d["assets"][0]["path"]).stat().st_size == d["assets"][0]["bytes"]

        bad = await client.call_tool("follow", {"job_id": job_id, "timeout_s": -1})
        assert bad.is_error
        assert "timeout_s" in bad.content[0].text  # type: ignore[union-attr]

    # a new session (the agent came back): the job is in the store, and an idempotency key
    # returns the first call's job rather than making another
    async with Client(url, read_timeout_seconds=180) as client:
        again = await client.call_tool("get_job", {"job_id": job_id})
        assert (again.structured_content or {})["state"] == "succeeded"
        args = {"prompt": "a kite", "resolution": "480p", "idempotency_key": "agent-run-7"}
        first = (await client.call_tool("generate", args)).structured_content or {}
        second = (await client.call_tool("generate", args)).structured_content or {}
        assert first["job_id"] == second["job_id"]

    # a story over HTTP may not name local files: only URLs
    async with Client(url, read_timeout_seconds=180) as client:
        story = "title: t\nsoundtrack: /etc/hosts\nshots:\n  - prompt: a boat\n    duration: 2\n"
        res = await client.call_tool("plan_story", {"story": story})
        assert res.is_error
        assert "soundtrack" in res.content[0].text  # type: ignore[union-attr]

    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0
    assert proc.stdout is not None
    assert proc.stdout.read() == ""  # nothing but the protocol ever goes to stdout


def _run(python: str, home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, "-m", "vidgate", "mcp", *args],
        env=server_env(home, **env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--transport", "carrier-pigeon"), "--transport 'carrier-pigeon': use stdio or http"),
        (("--transport", "http", "--host", "0.0.0.0"), "--host 0.0.0.0"),
        (("--transport", "http", "--port", "70000"), "--port 70000"),
    ],
)
def test_bad_options_exit_2_with_one_line(
    tmp_path: Path, python: str, args: tuple[str, ...], words: str
) -> None:
    res = _run(python, tmp_path / "home", *args)
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert words in lines[0]
    assert res.stdout == ""


def test_a_missing_sdk_names_the_extra(tmp_path: Path, python: str) -> None:
    # An install without the extra: `mcp` is not importable (this shadow refuses import).
    shadow = tmp_path / "no_mcp"
    (shadow / "mcp").mkdir(parents=True)
    (shadow / "mcp" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'mcp'\", name='mcp')\n"
    )
    res = _run(
        python,
        tmp_path / "home",
        "--sandbox",
        PYTHONPATH=f"{shadow}:{ROOT / 'src'}",
    )
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert "pip install 'vidgate[mcp]'" in lines[0]
    assert "Traceback" not in res.stderr
