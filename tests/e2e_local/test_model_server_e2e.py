"""End to end as real processes: `vidgate model serve DIR` with a tiny random-weight Wan 2.1
pipeline (built by tests/local/tiny.py, saved with save_pretrained, loaded back through
from_pretrained), and the gateway reaching it through the local-diffusers adapter.

- `vidgate generate --offering wan-2.1-self-hosted -o out.mp4` writes a decodable MP4, charged
  at the server's own price (compute seconds × its $/hour);
- an API failing in the sandbox falls back to the self-hosted offering;
- a server killed mid-job: the attempt fails (retryable, not billed) and the job falls back,
  billed once; a job sent while the server is down waits in `queued` and completes once the
  server is started again.

Kept cheap: 2 denoising steps, 480x480 (the tiny transformer's rope table is 32 latent patches
wide), 0.25 s at 16 fps = 5 frames (the catalog override below shortens the clips).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from tests.conftest import sandbox_settings
from tests.local import tiny
from vidgate.catalog.loader import load_catalog
from vidgate.gateway import Gateway
from vidgate.providers.local_fleet import ENV, Fleet
from vidgate.sandbox.app import SandboxServer
from vidgate.sandbox.core import FaultConfig, FaultRule
from vidgate.settings import Credentials
from vidgate.types import AttemptState, Constraints, JobState, Resolution, VideoRequest

pytestmark = pytest.mark.slow

SELF = "wan-2.1-self-hosted"
API = "wan-2.1-replicate"
USD_PER_HOUR = 3.6
#: the same short, square clip on both routes (the catalog's are 5 s, 16:9)
OVERRIDE = {
    "offerings": {
        oid: {"capabilities": {"durations": {"values": [0.25]}, "aspect_ratios": ["1:1"]}}
        for oid in (SELF, API)
    }
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDGATE_")}
    env.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "NO_COLOR": "1"})
    env.update({"COLUMNS": "200", **extra})
    return env


class ModelServer:
    """`vidgate model serve` in its own process."""

    def __init__(self, folder: Path, port: int, log: Path) -> None:
        self.folder, self.port, self.log = folder, port, log
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ModelServer:
        cmd = [sys.executable, "-m", "vidgate", "model", "serve", str(self.folder)]
        cmd += ["--port", str(self.port), "--steps", "2", "--device", "cpu"]
        cmd += ["--usd-per-hour", str(USD_PER_HOUR)]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, env=clean_env(), stdout=out, stderr=out)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the model server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise AssertionError(f"the model server did not load: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # SIGKILL: no graceful shutdown, the jobs die with it
            self.proc.wait(30)

    def model(self) -> dict[str, Any]:
        [entry] = httpx.get(f"{self.url}/v1/models", timeout=10).json()["data"]
        return dict(entry)


@pytest.fixture(scope="module")
def tiny_wan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.save("wan21-t2v", tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def override(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("catalog") / "override.yaml"
    path.write_text(json.dumps(OVERRIDE))  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def server(tiny_wan: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    s = ModelServer(tiny_wan, free_port(), tmp_path_factory.mktemp("logs") / "serve.log").start()
    yield s
    s.kill()


@pytest.fixture
def sb(tmp_path: Path, override: Path) -> Iterator[SandboxServer]:
    Fleet.forget()
    s = SandboxServer(tmp_path / "sandbox", load_catalog(override), time_scale=0.004).start()
    yield s
    s.stop()


def vidgate(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vidgate", *args],
        env=clean_env(VIDGATE_POLL_INTERVAL_S="0.2", **env),
        text=True,
        capture_output=True,
        timeout=600,
    )


def generate(out: Path, *offerings: str, **env: str) -> dict[str, Any]:
    flags = [x for o in offerings for x in ("--offering", o)]
    proc = vidgate(
        "generate", "a red fox in snow", *flags, "--duration", "0.25", "--resolution", "480p",
        "--aspect", "1:1", "-o", str(out), **env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dict(json.loads(out.with_suffix(".json").read_text()))


def decoded(path: Path) -> tuple[int, int, int]:
    with av.open(io.BytesIO(path.read_bytes()), mode="r") as c:
        frames = list(c.decode(video=0))
    return frames[0].width, frames[0].height, len(frames)


def server_cost(server: ModelServer, attempt: dict[str, Any]) -> dict[str, Any]:
    pj = attempt["provider_job"]
    assert pj["base_url"] == f"{server.url}/v1"
    video = httpx.get(f"{pj['base_url']}/videos/{pj['remote_id']}", timeout=10).json()
    assert video["status"] == "completed"
    # the server's price: its compute seconds at its hourly rate
    assert video["cost_usd"] == pytest.approx(
        video["compute_seconds"] * USD_PER_HOUR / 3600, rel=1e-3
    )
    return dict(video)


def test_serve_and_generate_writes_an_mp4_at_the_servers_price(
    server: ModelServer, override: Path, tmp_path: Path
) -> None:
    summary = generate(
        tmp_path / "out.mp4",
        SELF,
        VIDGATE_HOME=str(tmp_path / "home"),
        VIDGATE_CATALOG=str(override),
        **{ENV: server.url},
    )
    assert summary["state"] == "succeeded"
    # 0.25 s at Wan's 16 fps is 4 frames: the server made 4k+1 = 5 and said so
    assert decoded(tmp_path / "out.mp4") == (480, 480, 5)
    [attempt] = summary["attempts"]
    adjusted = {a["field"] for a in json.loads(attempt["provider_job"]["extra"]["adjustments"])}
    assert "num_frames" in adjusted
    video = server_cost(server, attempt)
    assert attempt["reported_cost"]["usd"] == round(video["cost_usd"], 6)
    assert summary["cost_usd"] == pytest.approx(round(video["cost_usd"], 6))


def test_an_api_failing_in_the_sandbox_falls_back_to_self_hosted(
    server: ModelServer, override: Path, sb: SandboxServer, tmp_path: Path
) -> None:
    api = load_catalog().offering(API)
    sb.core.faults = FaultConfig(
        rules=[FaultRule(kind="unavailable", rate=1.0, protocol=api.protocol)]
    )
    summary = generate(
        tmp_path / "out.mp4",
        API,
        SELF,
        VIDGATE_HOME=str(tmp_path / "home"),
        VIDGATE_CATALOG=str(override),
        VIDGATE_SANDBOX="1",
        VIDGATE_SANDBOX_URL=sb.url,
        **{ENV: server.url},
    )
    assert summary["state"] == "succeeded"
    first, second = summary["attempts"]
    assert (first["offering_id"], first["state"], first["cost_usd"]) == (API, "failed", 0.0)
    assert (second["offering_id"], second["state"]) == (SELF, "succeeded")
    video = server_cost(server, second)
    assert summary["cost_usd"] == pytest.approx(round(video["cost_usd"], 6))
    assert decoded(tmp_path / "out.mp4")[2] == 5


async def test_a_killed_server_loses_nothing_and_a_restarted_one_is_waited_for(
    tiny_wan: Path, override: Path, sb: SandboxServer, tmp_path: Path
) -> None:
    victim = ModelServer(tiny_wan, free_port(), tmp_path / "victim.log").start()
    try:
        gw = Gateway(
            sandbox_settings(tmp_path / "home", sb.url, catalog=override),
            credentials=Credentials({ENV: victim.url}, sandbox=True),
        )
        req = VideoRequest(
            prompt="a heron", duration_s=0.25, resolution=Resolution.R480P, aspect_ratio="1:1"
        )
        # 1. killed mid-job: the attempt fails (retryable, not billed), the job falls back
        job = gw.submit(req, pinned=[SELF, API])
        task = asyncio.create_task(gw.run(job.id))
        for _ in range(1200):
            if (await asyncio.to_thread(victim.model))["queue"]["running"] is not None:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the job never started on the server")
        victim.kill()
        done = await task
        assert done.state is JobState.SUCCEEDED, done.error
        lost, *resent, served = done.attempts
        assert (lost.offering_id, lost.state) == (SELF, AttemptState.FAILED)
        assert lost.error is not None
        assert lost.error["retryable"]
        assert lost.cost_usd == 0.0
        # sent once more (another server might have had the model): refused, nothing ran
        assert [(a.offering_id, a.provider_job) for a in resent] == [(SELF, None)]
        assert served.offering_id == API
        charges = [r for r in gw.store.ledger(job_id=job.id) if r["kind"] == "charge"]
        assert [r["offering_id"] for r in charges] == [API]
        assert not [r for r in gw.store.ledger(job_id=job.id) if r["kind"] == "pending"]

        # 2. every route down (the only one pinned, its server gone): the job waits in
        # queued within its deadline, and completes once the server is started again
        cons = Constraints(deadline=datetime.now(UTC) + timedelta(hours=1))
        job2 = gw.submit(req.model_copy(update={"constraints": cons}), pinned=[SELF])
        seen: list[JobState] = []
        task2 = asyncio.create_task(gw.run(job2.id, on_progress=lambda j: seen.append(j.state)))
        for _ in range(600):
            if JobState.QUEUED in seen and len(gw.job(job2.id).attempts) >= 1:
                break
            await asyncio.sleep(0.1)
        assert not task2.done()
        await asyncio.to_thread(victim.start)
        done2 = await task2
        assert done2.state is JobState.SUCCEEDED, done2.error
        waits = (done2.route or {})["waited"]
        assert waits
        assert SELF in waits[0]["down"]
        assert "no model server answered" in waits[0]["down"][SELF]
        assert done2.attempts[-1].state is AttemptState.SUCCEEDED
        assert all(a.provider_job is None for a in done2.attempts[:-1])  # refused, never sent
        charges2 = [r for r in gw.store.ledger(job_id=job2.id) if r["kind"] == "charge"]
        assert len(charges2) == 1
        assert done2.cost_usd == pytest.approx(charges2[0]["amount_usd"])
        await gw.aclose()
        gw.close()
    finally:
        victim.kill()
