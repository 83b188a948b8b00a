"""The worker as it runs for real: its own process, killed with SIGKILL, restarted."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import sandbox_settings
from vidgate.catalog.loader import Catalog, load_catalog
from vidgate.gateway import Gateway
from vidgate.jobs.store import IdempotencyConflict
from vidgate.sandbox.app import SandboxServer
from vidgate.settings import Settings
from vidgate.types import AttemptState, JobState, VideoRequest

CATALOG = load_catalog()


@pytest.fixture
def shared_sandbox(tmp_path: Path) -> Iterator[SandboxServer]:
    server = SandboxServer(tmp_path / "sandbox", CATALOG, time_scale=0.02).start()
    yield server
    server.stop()


def env_for(home: Path, sandbox_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDGATE_")}
    env.update(
        {
            "VIDGATE_HOME": str(home),
            "VIDGATE_SANDBOX": "1",
            "VIDGATE_SANDBOX_URL": sandbox_url,
            "VIDGATE_POLL_INTERVAL_S": "0.1",
        }
    )
    env.update(extra)
    return env


def start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "vidgate", "worker", "--lease", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_until(predicate, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def gateway_for(home: Path, sandbox_url: str) -> Gateway:
    return Gateway(Settings(home=home, sandbox=True, sandbox_url=sandbox_url))


def test_kill_9_mid_flight_then_restart_finishes_every_job_once(tmp_path, shared_sandbox):
    home = tmp_path / "home"
    gw = gateway_for(home, shared_sandbox.url)
    req = dict(duration_s=5, resolution="720p")
    ids = [
        gw.submit(VideoRequest(prompt=f"fox {i}", **req), pinned=["luma-ray-3.14-luma"]).id
        for i in range(4)
    ]
    env = env_for(home, shared_sandbox.url)
    proc = start_worker(env)
    try:
        wait_until(
            lambda: any(gw.job(i).state in (JobState.SUBMITTED, JobState.RUNNING) for i in ids)
        )
        proc.send_signal(signal.SIGKILL)  # no chance to clean up
        proc.wait(timeout=10)
        proc = start_worker(env)
        wait_until(lambda: all(gw.job(i).state.terminal for i in ids), timeout=90)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    jobs = [gw.job(i) for i in ids]
    assert [j.state for j in jobs] == [JobState.SUCCEEDED] * 4
    stats = shared_sandbox.core.store.stats()
    assert stats["creates"] == 4
    assert stats["duplicate_submissions"] == 0
    for j in jobs:
        rows = gw.store.ledger(job_id=j.id)
        assert [r["attempt_n"] for r in rows] == [a.n for a in j.attempts]
        assert sum(r["amount_usd"] for r in rows) == pytest.approx(j.cost_usd)
    gw.close()


def test_crash_between_create_and_storing_the_id(tmp_path, shared_sandbox) -> None:
    """Kling can be looked up by our key: reconciled. Runway cannot (no key, no lookup by our
    id, no job list; Luma is now found in its list, tests/providers/test_find_list.py):
    parked, never resent."""
    home = tmp_path / "home"
    gw = gateway_for(home, shared_sandbox.url)
    kling = gw.submit(VideoRequest(prompt="a kite", duration_s=5), pinned=["kling-3.0-kling"])
    luma = gw.submit(
        VideoRequest(prompt="a lake", duration_s=5), pinned=["runway-gen-4.5-aleph-runway"]
    )
    log = tmp_path / "crashes.log"
    for job_id in (kling.id, luma.id):
        crashing = subprocess.run(
            [
                sys.executable,
                "-c",
                "import asyncio,sys; from vidgate.gateway import Gateway; "
                "gw=Gateway(); asyncio.run(gw.run(sys.argv[1]))",
                job_id,
            ],
            env=env_for(
                home,
                shared_sandbox.url,
                VIDGATE_CRASH_POINTS="after_create:1",
                VIDGATE_CRASH_LOG=str(log),
            ),
            timeout=60,
            check=False,
            capture_output=True,
        )
        assert crashing.returncode == -signal.SIGKILL, crashing.stderr[-2000:]
        assert gw.job(job_id).state is JobState.SUBMITTING
    assert log.read_text().split() == ["after_create", "after_create"]
    assert shared_sandbox.core.store.stats()["creates"] == 2  # both creates reached it

    async def resume() -> None:
        try:
            for job_id in (kling.id, luma.id):
                await gw.run(job_id)
        finally:
            await gw.aclose()

    asyncio.run(resume())
    k, lu = gw.job(kling.id), gw.job(luma.id)
    assert k.state is JobState.SUCCEEDED
    assert k.route
    assert k.route["reconciled"] == 1
    assert lu.state is JobState.NEEDS_RECONCILIATION
    assert lu.attempts[0].state is AttemptState.AMBIGUOUS
    assert shared_sandbox.core.store.stats()["creates"] == 2  # nothing was sent twice
    assert [r["kind"] for r in gw.store.ledger(job_id=lu.id)] == ["pending"]
    gw.close()


async def _run(gw: Gateway, job_id: str):  # type: ignore[no-untyped-def]
    try:
        return await gw.run(job_id)
    finally:
        await gw.aclose()


async def test_deadline_expires_the_job(tmp_path, mini_catalog: Catalog, sandbox) -> None:
    sandbox.core.time_scale = 1.0  # a real-time 20 s job
    gw = Gateway(sandbox_settings(tmp_path / "h", sandbox.url), catalog=mini_catalog)
    deadline = datetime.now(UTC) + timedelta(seconds=600)
    job = gw.submit(VideoRequest(prompt="x", duration_s=4, constraints={"deadline": deadline}))
    # Routing needs a deadline the catalog's latencies can meet; then the deadline moves
    # up (as if time passed) so that it expires while the job runs.
    [claim] = gw.store.claim("t", job_id=job.id)
    soon = datetime.now(UTC) + timedelta(seconds=1)
    cons = claim.job.request.constraints.model_copy(update={"deadline": soon})
    claim.job.request = claim.job.request.model_copy(update={"constraints": cons})
    gw.store.save(claim, release=True)
    done = await _run(gw, job.id)
    assert done.state is JobState.EXPIRED
    assert done.attempts[-1].state is AttemptState.CANCELED
    gw.close()


async def test_first_progress_timeout_moves_on(tmp_path, mini_catalog, sandbox) -> None:
    # queued for 10% of a job lasting minutes: far longer than the 0.3 s allowed
    sandbox.core.time_scale = 10.0
    gw = Gateway(sandbox_settings(tmp_path / "h", sandbox.url), catalog=mini_catalog)
    job = gw.submit(VideoRequest(prompt="x", duration_s=4, constraints={"first_progress_s": 0.3}))
    done = await _run(gw, job.id)
    assert done.state is JobState.FAILED
    assert [a.offering_id for a in done.attempts] == ["beta-openai", "alpha-openai"]
    assert all(a.error and a.error["code"] == "provider_timeout" for a in done.attempts)
    gw.close()


async def test_cancel_a_running_job(tmp_path, mini_catalog, sandbox) -> None:
    sandbox.core.time_scale = 1.0
    gw = Gateway(sandbox_settings(tmp_path / "h", sandbox.url), catalog=mini_catalog)
    job = gw.submit(VideoRequest(prompt="x", duration_s=4))
    worker = gw.worker(only_job=job.id)
    task = asyncio.create_task(worker.run())
    for _ in range(200):
        if gw.job(job.id).state in (JobState.SUBMITTED, JobState.RUNNING):
            break
        await asyncio.sleep(0.05)
    gw.store.request_cancel(job.id)
    # the worker sees the flag at its next heartbeat; make that immediate for the test
    worker._apply(
        {job.id: worker.held[job.id].claim.fence},
        gw.store.renew(worker.id, {job.id: worker.held[job.id].claim.fence}),
    )
    await asyncio.wait_for(task, timeout=30)
    await gw.aclose()
    done = gw.job(job.id)
    assert done.state is JobState.CANCELED
    assert done.attempts[-1].state is AttemptState.CANCELED
    gw.close()


def test_idempotent_submit(tmp_path, mini_catalog, sandbox) -> None:
    gw = Gateway(sandbox_settings(tmp_path / "h", sandbox.url), catalog=mini_catalog)
    a = gw.submit(VideoRequest(prompt="once"), idempotency_key="order-17")
    b = gw.submit(VideoRequest(prompt="once"), idempotency_key="order-17")
    assert a.id == b.id
    with pytest.raises(IdempotencyConflict):
        gw.submit(VideoRequest(prompt="twice"), idempotency_key="order-17")
    c = gw.submit(VideoRequest(prompt="once"), idempotency_key="order-17", tenant="other")
    assert c.id != a.id
    gw.close()
