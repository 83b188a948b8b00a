"""Three worker processes on PostgreSQL with Redis: one provider fails, and every process stops
sending to it within a second of the breaker opening in the first.

The proof is the sandbox's own record of the create calls it received (each failing create
is an event with its time), never how fast our code ran. Only one worker can open the
breaker on its own evidence (the other two need 1,000 failures), so the others stop only
because the transition reached them."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import IN_CI
from tests.jobs.conftest import PG_ADMIN, PG_OK
from tests.routing.test_shared_health import REDIS_URL, _redis_ok
from vidgate.gateway import Gateway
from vidgate.routing.shared_health import namespace_for
from vidgate.settings import Settings
from vidgate.types import VideoRequest

pytestmark = pytest.mark.slow

FAILING = "luma-ray-3.14-luma"  # protocol luma: every create answers 503
HEALTHY = "kling-3.0-fal"
OPEN_S = 600.0
JOBS = 60


@pytest.fixture
def pg_url() -> Iterator[str]:
    if not PG_OK or not _redis_ok():
        if IN_CI:
            pytest.fail("PostgreSQL and Redis are required in CI")
        pytest.skip("PostgreSQL or Redis not reachable")
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(PG_ADMIN)
    with admin.begin() as c:
        c.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{PG_ADMIN}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as c:
            c.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[bytes]) -> None:
    import httpx

    for _ in range(1200):
        assert proc.poll() is None, f"{proc.args} exited"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} never answered")


def test_a_breaker_opened_in_one_worker_stops_every_worker_within_a_second(
    tmp_path: Path, pg_url: str
) -> None:
    import redis

    base = {k: v for k, v in os.environ.items() if not k.startswith("VIDGATE_")}
    procs: list[subprocess.Popen[bytes]] = []
    logs = tmp_path / "logs"
    logs.mkdir()

    def start(name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        out = (logs / f"{name}.log").open("wb")
        p = subprocess.Popen(
            [sys.executable, "-m", "vidgate", *argv], env=env, stdout=out, stderr=out
        )
        procs.append(p)
        return p

    port = _free_port()
    faults = tmp_path / "faults.json"
    faults.write_text(
        json.dumps({"rules": [{"kind": "unavailable", "rate": 1.0, "protocol": "luma"}]})
    )
    sandbox_home = tmp_path / "sandbox-home"
    sandbox = start(
        "sandbox",
        ["sandbox", "serve", "--port", str(port), "--faults", str(faults), "--time-scale", "0.02"],
        {**base, "VIDGATE_HOME": str(sandbox_home)},
    )
    sandbox_url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{sandbox_url}/healthz", sandbox)
        env = {
            **base,
            "VIDGATE_HOME": str(tmp_path / "h"),
            "VIDGATE_DATABASE_URL": pg_url,
            "VIDGATE_REDIS_URL": REDIS_URL,
            "VIDGATE_SANDBOX": "1",
            "VIDGATE_SANDBOX_URL": sandbox_url,
            "VIDGATE_BREAKER_OPEN_S": str(OPEN_S),
            "VIDGATE_POLL_INTERVAL_S": "0.2",
        }
        settings = Settings(database_url=pg_url, sandbox=True, sandbox_url=sandbox_url)
        gw = Gateway(settings)
        try:
            gw.store  # noqa: B018 - migrate once, before the workers start
            ids = [
                gw.submit(
                    VideoRequest(prompt=f"clip {i}", duration_s=5, resolution="720p"),
                    pinned=[FAILING, HEALTHY],
                ).id
                for i in range(JOBS)
            ]
            # the first worker opens after 2 failures; the other two would need 1,000
            start("worker-a", ["worker", "-c", "2"], {**env, "VIDGATE_BREAKER_MIN_CALLS": "2"})
            start(
                "workers-bc",
                ["worker", "--processes", "2", "-c", "2"],
                {**env, "VIDGATE_BREAKER_MIN_CALLS": "1000"},
            )

            def done() -> bool:
                return all(gw.store.get(i).state.terminal for i in ids)  # type: ignore[union-attr]

            deadline = time.monotonic() + 300
            while not done():
                assert time.monotonic() < deadline, "jobs did not finish"
                assert all(p.poll() is None for p in procs), "a process died"
                time.sleep(0.5)
            states = {gw.store.get(i).state.value for i in ids}  # type: ignore[union-attr]
        finally:
            gw.close()
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    assert states == {"succeeded"}, states
    r = redis.Redis.from_url(REDIS_URL)
    raw = r.get(f"{namespace_for(pg_url)}:offering:{FAILING}")
    r.close()
    assert raw is not None, "the breaker never opened (or was never shared)"
    opened_at = float(json.loads(raw)["until"]) - OPEN_S
    # the sandbox's own records: every create to the failing provider, and every healthy one
    db = sqlite3.connect(sandbox_home / "sandbox" / "sandbox.db")
    failing = [at for (at,) in db.execute("SELECT at FROM events WHERE kind='fault:unavailable'")]
    healthy = [at for (at,) in db.execute("SELECT created_at FROM jobs WHERE protocol='fal-queue'")]
    db.close()
    assert len(failing) >= 2
    late = [round(at - opened_at, 3) for at in failing if at > opened_at + 1.0]
    assert late == [], f"creates sent to the failing provider after open + 1 s: {late}"
    # and there was work to send after that second: it all went to the healthy offering
    assert sum(1 for at in healthy if at > opened_at + 1.0) >= 10
