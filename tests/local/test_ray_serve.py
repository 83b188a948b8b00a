"""`--ray`: the same server as a Ray Serve app, two CPU replicas of a tiny Wan.

Ray's session folders and its token file go to a temporary folder (RAY_TMPDIR, HOME), and
the cluster is shut down at the end.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.local.conftest import ModelPath, free_port, wait_done, wait_for
from tests.local.video import decode
from vidgate.local.serve import ServeConfig


@pytest.fixture
def ray_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    # Short path: Ray's unix socket paths must stay under ~107 characters.
    home = Path(os.environ.get("TMPDIR", "/tmp")) / f"ray-{os.getpid()}"
    home.mkdir(exist_ok=True)
    saved = {k: os.environ.get(k) for k in ("RAY_TMPDIR", "HOME")}
    # Ray writes its token file under HOME (~/.ray/auth_token): keep it in the tmp folder.
    os.environ.update(RAY_TMPDIR=str(home), HOME=str(home))
    try:
        yield home
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(home, ignore_errors=True)


def test_two_replicas_run_two_jobs_at_once(tiny_model: ModelPath, ray_home: Path) -> None:
    import ray
    from ray import serve

    from vidgate.local.ray_serve import build_app

    folder = tiny_model("wan21-t2v")
    port = free_port()
    config = ServeConfig(source=str(folder), port=port, steps=2, model_id="tiny", max_queue=2)
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(ray_home))
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(config, replicas=2), name="vidgate-model", route_prefix="/")
        c = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        wait_ready(c)
        (model,) = c.get("/v1/models").json()["data"]
        assert (model["family"], model["queue"]["max_depth"]) == ("wan", 2)
        body = {"model": "tiny", "prompt": "a fox", "num_frames": 9, "size": "32x32"}
        # two long jobs: one on each replica, at the same time
        long = [c.post("/v1/videos", json={**body, "steps": 400}).json() for _ in range(2)]
        for job in long:
            wait_for(c, job["id"], lambda v: v["status"] == "in_progress" and v["progress"] > 0)
        assert c.get("/v1/models").json()["data"][0]["queue"]["running_jobs"] == 2
        for job in long:
            c.post(f"/v1/videos/{job['id']}/cancel")
        for job in long:
            assert wait_done(c, job["id"])["status"] == "cancelled"
        # the replicas are free again and finish real jobs
        short = [c.post("/v1/videos", json=body).json() for _ in range(2)]
        for job in short:
            assert wait_done(c, job["id"])["status"] == "completed"
            d = decode(c.get(f"/v1/videos/{job['id']}/content").content)
            assert (d.frames, d.width, d.height) == (9, 32, 32)
        assert c.get("/v1/models").json()["data"][0]["stats"]["jobs"] == 2
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()


def wait_ready(c: httpx.Client, timeout: float = 120) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if c.get("/healthz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise AssertionError("the Ray app did not become ready")
