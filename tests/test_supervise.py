"""`vidgate worker --processes N` and `vidgate serve` as a user runs them: real processes,
one supervisor, a child killed and restarted, one signal stopping everything."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDGATE_")}
    env.update(
        {
            "VIDGATE_HOME": str(home),
            "VIDGATE_SANDBOX_TIME_SCALE": "0.01",
            "NO_COLOR": "1",
        }
    )
    return env


def _until(check: Callable[[], Any], what: str, timeout: float = 90) -> Any:
    """Poll ``check`` until it returns something truthy; a generous bound, not a timing claim."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def _state(home: Path, pid: int) -> dict[str, Any] | None:
    try:
        return json.loads((home / f"supervisor-{pid}.json").read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def _children(home: Path, pid: int, role: str) -> list[dict[str, Any]]:
    st = _state(home, pid) or {"children": []}
    return [c for c in st["children"] if c["role"] == role]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped) counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_worker_processes_restart_a_dead_one_and_stop_together(
    tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    home = tmp_path / "h"
    sup = subprocess.Popen(
        [sys.executable, "-m", "vidgate", "worker", "--processes", "2", "--sandbox", "-c", "5"],
        env=_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    started.append(sup)
    workers = _until(
        lambda: (
            [c for c in _children(home, sup.pid, "worker") if c["alive"]]
            if len([c for c in _children(home, sup.pid, "worker") if c["alive"]]) == 2
            else None
        ),
        "two worker processes",
    )
    # one sandbox for both, so every job's provider URL stays valid whoever polls it
    assert [c["alive"] for c in _children(home, sup.pid, "sandbox")] == [True]
    victim = workers[0]["pid"]
    os.kill(victim, signal.SIGKILL)
    replaced = _until(
        lambda: next(
            (
                c
                for c in _children(home, sup.pid, "worker")
                if c["name"] == workers[0]["name"] and c["alive"] and c["pid"] != victim
            ),
            None,
        ),
        "the killed worker to be restarted",
    )
    assert replaced["restarts"] == 1
    assert workers[1]["pid"] in [c["pid"] for c in _children(home, sup.pid, "worker")]
    pids = [c["pid"] for c in _children(home, sup.pid, "worker")]
    pids += [c["pid"] for c in _children(home, sup.pid, "sandbox")]
    sup.send_signal(signal.SIGTERM)
    out, _ = sup.communicate(timeout=120)
    # 0: every child stopped on its own after one SIGTERM (1 would mean one was killed)
    assert sup.returncode == 0, out
    assert "did not stop in time" not in out
    for pid in pids:
        assert not _alive(pid), (pid, out)
    assert "exited with -9" in out  # the supervisor said what happened
    assert not (home / f"supervisor-{sup.pid}.json").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_runs_api_and_worker_apart_and_readyz_fails_while_a_worker_is_down(
    tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    home = tmp_path / "h"
    port = _free_port()
    sup = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vidgate",
            "serve",
            "--sandbox",
            "--port",
            str(port),
            "--api-processes",
            "2",
            "--workers",
            "1",
        ],
        env=_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    started.append(sup)
    base = f"http://127.0.0.1:{port}"

    def ready() -> httpx.Response | None:
        try:
            r = httpx.get(f"{base}/readyz", timeout=5)
        except httpx.HTTPError:
            return None
        return r

    _until(lambda: (r := ready()) is not None and r.status_code == 200, "the service to be ready")
    apis = _children(home, sup.pid, "api")
    assert len(apis) == 2
    assert all(c["alive"] for c in apis)
    (worker,) = _children(home, sup.pid, "worker")
    assert worker["pid"] not in [c["pid"] for c in apis]  # the worker has its own process
    os.kill(worker["pid"], signal.SIGKILL)
    down = _until(
        lambda: (r := ready()) is not None and r.status_code == 503 and r, "/readyz to fail"
    )
    assert "worker process down" in down.json()["error"]
    _until(lambda: (r := ready()) is not None and r.status_code == 200, "/readyz to recover")
    (again,) = _children(home, sup.pid, "worker")
    assert again["alive"]
    assert again["pid"] != worker["pid"]
    pids = [c["pid"] for c in _children(home, sup.pid, "api")] + [again["pid"]]
    sup.send_signal(signal.SIGINT)  # Ctrl-C
    out, _ = sup.communicate(timeout=120)
    assert sup.returncode == 0, out
    for pid in pids:
        assert not _alive(pid), (pid, out)


def test_serve_metrics_count_jobs_the_worker_process_finished(
    tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    """The API and the worker are separate processes; a job the worker finished must still
    show in the API's /metrics (prometheus_client's multiprocess collection)."""
    home = tmp_path / "h"
    env = _env(home)
    made = subprocess.run(
        [sys.executable, "-m", "vidgate", "keys", "create", "--tenant", "acme", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    key = json.loads(made.stdout)["key"]
    port = _free_port()
    sup = subprocess.Popen(
        [sys.executable, "-m", "vidgate", "serve", "--sandbox", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    started.append(sup)
    base = f"http://127.0.0.1:{port}"

    def answers(path: str) -> httpx.Response | None:
        try:
            return httpx.get(f"{base}{path}", headers={"Authorization": f"Bearer {key}"}, timeout=5)
        except httpx.HTTPError:
            return None

    _until(lambda: (r := answers("/readyz")) is not None and r.status_code == 200, "ready")
    created = httpx.post(
        f"{base}/v1/jobs",
        headers={"Authorization": f"Bearer {key}"},
        json={"request": {"prompt": "a fox", "duration_s": 4, "resolution": "480p"}},
        timeout=30,
    )
    assert created.status_code == 202, created.text
    job = created.json()
    _until(
        lambda: (
            (r := answers(f"/v1/jobs/{job['id']}")) is not None and r.json()["state"] == "succeeded"
        ),
        "the job to succeed",
    )
    offering = answers(f"/v1/jobs/{job['id']}").json()["offering_id"]  # type: ignore[union-attr]

    def finished() -> float:
        text = answers("/metrics").text  # type: ignore[union-attr]
        want = f'vidgate_jobs_finished_total{{offering="{offering}",state="succeeded"}} '
        lines = [ln for ln in text.splitlines() if ln.startswith(want)]
        return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0

    assert _until(finished, "the worker's finished count in the API's /metrics") == 1.0
    text = answers("/metrics").text  # type: ignore[union-attr]
    assert 'vidgate_jobs_submitted_total{offering="' + offering + '"} 1.0' in text
    sup.send_signal(signal.SIGINT)
    out, _ = sup.communicate(timeout=120)
    assert sup.returncode == 0, out
    assert not list(home.glob("metrics-*")), "the metrics folder outlived the service"
