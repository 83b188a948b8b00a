"""The CLI over model servers (the sandbox's emulator, a real HTTP server in this process):
`vidgate models` says which server serves what, and `vidgate plan breakeven --from-server`
uses the throughput the server measured instead of the seed's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from vidgate.catalog.loader import load_catalog
from vidgate.providers.local_fleet import ENV
from vidgate.sandbox.app import SandboxServer

CATALOG = load_catalog()


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[SandboxServer]:
    server = SandboxServer(tmp_path / "sandbox", CATALOG, time_scale=0.002).start()
    yield server
    server.stop()


def vidgate(*args: str, home: Path, servers: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDGATE_")}
    env.update({"VIDGATE_HOME": str(home), "COLUMNS": "250", "NO_COLOR": "1"})
    if servers is not None:
        env[ENV] = servers
    return subprocess.run(
        [sys.executable, "-m", "vidgate", *args],
        env=env,
        text=True,
        capture_output=True,
        timeout=120,
    )


def test_models_names_the_server_of_each_self_hosted_offering(
    tmp_path: Path, sb: SandboxServer
) -> None:
    server = f"{sb.url}/local-diffusers"
    proc = vidgate("models", "--json", "--all", home=tmp_path, servers=server)
    assert proc.returncode == 0, proc.stderr
    rows = {r["offering"]: r for r in json.loads(proc.stdout)}
    wan = rows["wan-2.1-self-hosted"]
    assert wan["available"] is True
    assert wan["server"] == f"{server}/v1 (Wan-AI/Wan2.1-T2V-14B-Diffusers)"
    assert rows["wan-2.6-self-hosted"]["available"] is False
    assert rows["wan-2.6-self-hosted"]["server"].startswith("unavailable: no diffusers pipeline")
    assert all(r["server"] is None for r in rows.values() if r["provider"] != "self-hosted")
    # the table shows the column when a server serves something
    table = vidgate("models", "--provider", "self-hosted", home=tmp_path, servers=server)
    assert table.returncode == 0, table.stderr
    assert "server" in table.stdout
    assert "wan-2.1-self-hosted" in table.stdout
    assert f"{server}/v1" in table.stdout


def test_models_without_a_server_keeps_self_hosted_unavailable(tmp_path: Path) -> None:
    proc = vidgate("models", "--json", "--all", home=tmp_path, servers=None)
    assert proc.returncode == 0, proc.stderr
    rows = {r["offering"]: r for r in json.loads(proc.stdout)}
    assert rows["wan-2.1-self-hosted"]["available"] is False
    assert rows["wan-2.1-self-hosted"]["server"] == "no configured server serves it"
    plain = vidgate("models", home=tmp_path, servers=None)
    assert "server" not in plain.stdout.splitlines()[0]


def _finished_job(root: str) -> dict[str, Any]:
    with httpx.Client(timeout=10) as c:
        video = c.post(
            f"{root}/videos",
            json={"model": "Wan-AI/Wan2.1-T2V-14B-Diffusers", "prompt": "a kite", "seconds": 5},
        ).json()
        for _ in range(200):
            if c.get(f"{root}/videos/{video['id']}").json()["status"] == "completed":
                [model] = [
                    m for m in c.get(f"{root}/models").json()["data"] if m["id"] == video["model"]
                ]
                return dict(model)
            time.sleep(0.02)
    raise AssertionError("the emulated job never finished")


def test_breakeven_from_server_uses_measured_throughput(tmp_path: Path, sb: SandboxServer) -> None:
    server = f"{sb.url}/local-diffusers"
    # before any job: nothing measured, and the error says what would work
    early = vidgate("plan", "breakeven", "--from-server", server, home=tmp_path, servers=None)
    assert early.returncode == 2
    assert "finished no job yet" in early.stderr
    assert "--video-seconds-per-gpu-minute" in early.stderr
    model = _finished_job(f"{server}/v1")
    cs = model["stats"]["compute_s_per_video_s"]
    proc = vidgate(
        "plan", "breakeven", "--from-server", server, "--json", home=tmp_path, servers=None
    )
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    self_host = model["usd_per_hour"] / 3600 * cs  # $/h over the video seconds an hour makes
    assert d["self_host_usd_per_second"] == pytest.approx(self_host, abs=1e-6)
    assert d["cloud"]["seconds_per_month"] == pytest.approx(2000 / (0.05 - self_host), abs=0.1)
    assert d["measured"]["video_seconds_per_gpu_minute"] == pytest.approx(60 / cs, rel=1e-5)
    assert d["measured"]["jobs"] == 1
    # the seed's own figure is something else entirely
    seed = json.loads(vidgate("plan", "breakeven", "--json", home=tmp_path, servers=None).stdout)
    assert seed["self_host_usd_per_second"] != d["self_host_usd_per_second"]


def test_breakeven_from_a_silent_server_is_one_line(tmp_path: Path) -> None:
    proc = vidgate(
        "plan", "breakeven", "--from-server", "http://127.0.0.1:9", home=tmp_path, servers=None
    )
    assert proc.returncode == 2
    assert "vidgate model serve" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_plan_prices_self_hosted_from_the_servers_measurements(
    tmp_path: Path, sb: SandboxServer
) -> None:
    workload = tmp_path / "w.yaml"
    workload.write_text(
        "name: own gpus\ndaily_volume: 100\nclip_seconds: 5\nclasses:\n"
        "  - {name: wan, share: 1.0, offering: [wan-2.1-self-hosted],\n"
        "     request: {duration_s: 5, resolution: 480p, aspect_ratio: '16:9'}}\n"
    )
    server = f"{sb.url}/local-diffusers"

    def plan() -> dict[str, Any]:
        proc = vidgate("plan", str(workload), "--json", home=tmp_path, servers=server)
        assert proc.returncode == 0, proc.stderr
        [row] = json.loads(proc.stdout)["classes"]
        assert row["offering"] == "wan-2.1-self-hosted"
        return dict(row)

    seed = CATALOG.offering("wan-2.1-self-hosted").price[0].usd
    assert seed is not None
    assert plan()["usd_per_clip"] == pytest.approx(seed * 5)  # nothing measured yet
    model = _finished_job(f"{server}/v1")
    measured = model["usd_per_hour"] / 3600 * model["stats"]["compute_s_per_video_s"]
    # the emulated GPU is quick, so a clip costs fractions of a cent: compare a year of them
    after = plan()
    assert after["usd_per_year"] == pytest.approx(measured * 5 * 100 * 30 * 12, rel=1e-2)
    assert after["usd_per_year"] > 0
    # without a server the offering cannot be planned on
    gone = vidgate("plan", str(workload), "--json", home=tmp_path, servers=None)
    assert gone.returncode == 2
