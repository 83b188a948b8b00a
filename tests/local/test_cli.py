"""`vidgate model serve` as a real process: bad folders exit 2 in one line; a Hub id from the
local cache serves a real MP4."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.local.conftest import ModelPath, free_port, wait_done
from tests.local.video import decode


def vidgate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vidgate", "model", "serve", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("make", "expect"),
    [
        (lambda p: p / "nope", "no such folder"),
        (lambda p: p, "model_index.json is missing"),
    ],
)
def test_a_wrong_folder_exits_2_in_one_line(tmp_path: Path, make: object, expect: str) -> None:
    folder = make(tmp_path)  # type: ignore[operator]
    r = vidgate(str(folder))
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert expect in lines[0]
    assert str(folder) in lines[0].replace("\n", "")
    assert "Traceback" not in r.stderr


def test_an_unknown_option_value_exits_2(tiny_model: ModelPath) -> None:
    r = vidgate(str(tiny_model("wan21-t2v")), "--cache", "magic")
    assert r.returncode == 2
    assert "first-block, taylorseer" in r.stderr


def test_a_hub_id_not_in_the_cache_says_how_to_get_it(tmp_path: Path) -> None:
    r = vidgate("some-org/some-model", env={"HF_HUB_CACHE": str(tmp_path)})
    assert r.returncode == 2
    assert "not a model in the local Hub cache" in r.stderr
    assert "hf download some-org/some-model" in r.stderr


def test_serves_a_hub_id_from_the_local_cache(tiny_model: ModelPath, tmp_path: Path) -> None:
    # The Hub cache's own layout: models--ORG--NAME/{refs/main, snapshots/REV/...}
    repo = tmp_path / "hub" / "models--tiny-org--tiny-wan"
    shutil.copytree(tiny_model("wan21-t2v"), repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vidgate",
            "model",
            "serve",
            "tiny-org/tiny-wan",
            "--port",
            str(port),
            "--steps",
            "2",
            "--usd-per-hour",
            "1.8",
        ],
        env={**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        c = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        deadline = time.monotonic() + 120
        while True:
            try:
                if c.get("/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.2)
        (model,) = c.get("/v1/models").json()["data"]
        assert (model["id"], model["catalog_model"], model["steps"]) == (
            "tiny-wan",
            "wan-2.1",
            2,
        )
        job = c.post(
            "/v1/videos",
            json={"model": "tiny-wan", "prompt": "a fox", "num_frames": 9, "size": "32x32"},
        ).json()
        done = wait_done(c, job["id"])
        assert done["status"] == "completed"
        assert done["cost_usd"] == pytest.approx(done["compute_seconds"] * 1.8 / 3600, abs=2e-6)
        assert decode(c.get(f"/v1/videos/{job['id']}/content").content).frames == 9
    finally:
        proc.terminate()
        proc.wait(20)
