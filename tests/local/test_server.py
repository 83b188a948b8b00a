"""The model server over real HTTP on loopback: a tiny Wan loaded by from_pretrained."""

from __future__ import annotations

import base64
import io

import httpx
import pytest

from tests.local import tiny
from tests.local.conftest import ModelPath, model_server, uvicorn_on_loopback, wait_done, wait_for
from tests.local.video import decode
from vidgate.local.server import ServerState, create_app


def test_create_progress_content_and_price(tiny_model: ModelPath) -> None:
    with model_server(tiny_model("wan21-t2v"), model_id="tiny-wan", usd_per_hour=3.6) as (url, _):
        c = httpx.Client(base_url=url, timeout=30)
        created = c.post(
            "/v1/videos",
            json={"model": "tiny-wan", "prompt": "a fox", "seconds": 0.5, "size": "32x32"},
        )
        assert created.status_code == 200, created.text
        video = created.json()
        assert video["status"] in ("queued", "in_progress")
        assert (video["num_frames"], video["size"], video["fps"]) == (9, "32x32", 16.0)
        assert video["adjustments"] == [
            {
                "field": "num_frames",
                "requested": 8,
                "used": 9,
                "why": "Wan 2.1 takes 4k+1 frames (up to 81)",
            }
        ]
        done = wait_done(c, video["id"])
        assert done["status"] == "completed", done
        assert (done["progress"], done["queue_position"], done["error"]) == (100, None, None)
        assert done["seconds"] == f"{9 / 16:.2f}"
        assert done["cost_usd"] == pytest.approx(done["compute_seconds"] / 1000, abs=2e-6)
        content = c.get(f"/v1/videos/{video['id']}/content")
        assert content.headers["content-type"] == "video/mp4"
        d = decode(content.content)
        assert (d.frames, d.width, d.height, d.codec) == (9, 32, 32, "h264")
        (model,) = c.get("/v1/models").json()["data"]
        assert (model["id"], model["family"], model["catalog_model"]) == (
            "tiny-wan",
            "wan",
            "wan-2.1",
        )
        assert model["constraints"]["frames"] == "4k+1"
        assert model["constraints"]["side_multiple"] == 16
        assert model["usd_per_hour"] == 3.6
        assert model["speed"]["cache"] == "none"
        assert model["speed"]["compile"] is False
        stats = model["stats"]
        assert stats["jobs"] == 1
        assert stats["video_seconds"] == pytest.approx(9 / 16, abs=1e-3)
        assert stats["compute_s_per_video_s"] == pytest.approx(
            stats["compute_seconds"] / stats["video_seconds"], rel=1e-2
        )
        assert model["queue"] == {"depth": 0, "max_depth": 4, "running": None, "running_jobs": 0}


def test_queue_full_positions_and_cancel(tiny_model: ModelPath) -> None:
    body = {"model": "tiny", "prompt": "a fox", "num_frames": 9, "size": "32x32"}
    with model_server(tiny_model("wan21-t2v"), max_queue=1) as (url, _):
        c = httpx.Client(base_url=url, timeout=30)
        long = c.post("/v1/videos", json={**body, "steps": 1000}).json()
        running = wait_for(
            c, long["id"], lambda v: v["status"] == "in_progress" and v["progress"] > 0
        )
        assert running["queue_position"] == 0
        assert 0 < running["progress"] < 100
        waiting = c.post("/v1/videos", json=body).json()
        assert (waiting["status"], waiting["queue_position"]) == ("queued", 1)
        full = c.post("/v1/videos", json=body)
        assert full.status_code == 429
        assert full.json()["error"]["code"] == "queue_full"
        assert full.headers["retry-after"]
        queue = c.get("/v1/models").json()["data"][0]["queue"]
        assert (queue["depth"], queue["max_depth"], queue["running"]) == (1, 1, long["id"])
        # a queued job is cancelled at once; a running one between denoising steps
        cancelled = c.post(f"/v1/videos/{waiting['id']}/cancel").json()
        assert cancelled["status"] == "cancelled"
        assert cancelled["error"]["code"] == "cancelled"
        c.post(f"/v1/videos/{long['id']}/cancel")
        stopped = wait_done(c, long["id"])
        assert stopped["status"] == "cancelled"
        assert stopped["progress"] < 100
        assert c.get(f"/v1/videos/{long['id']}/content").status_code == 404
        # the device is free again: the next job runs
        again = c.post("/v1/videos", json=body).json()
        assert wait_done(c, again["id"])["status"] == "completed"
        assert c.get("/v1/models").json()["data"][0]["stats"]["jobs"] == 1


def test_out_of_memory_fails_the_job_with_its_code(tiny_model: ModelPath) -> None:
    # The hidden fault makes the transformer ask torch for 2**62 bytes: a genuine allocator
    # failure (no memory is used), mapped as the server maps a CUDA OOM.
    with model_server(tiny_model("wan21-t2v"), fault="oom") as (url, _):
        c = httpx.Client(base_url=url, timeout=30)
        job = c.post(
            "/v1/videos", json={"model": "tiny", "prompt": "x", "num_frames": 9, "size": "32x32"}
        ).json()
        failed = wait_done(c, job["id"])
        assert failed["status"] == "failed"
        assert failed["error"]["code"] == "out_of_memory"
        assert "allocate" in failed["error"]["message"]
        stats = c.get("/v1/models").json()["data"][0]["stats"]
        assert (stats["jobs"], stats["failed"], stats["compute_s_per_video_s"]) == (0, 1, None)


def test_bad_requests_are_4xx_with_what_would_work(tiny_model: ModelPath) -> None:
    ok = {"model": "tiny", "prompt": "a fox", "num_frames": 9, "size": "32x32"}
    with model_server(tiny_model("wan21-t2v")) as (url, _):
        c = httpx.Client(base_url=url, timeout=30)

        def error(body: dict[str, object], status: int) -> dict[str, str]:
            r = c.post("/v1/videos", json=body)
            assert r.status_code == status, r.text
            err: dict[str, str] = r.json()["error"]
            return err

        e = error({**ok, "model": "other"}, 404)
        assert e["code"] == "model_not_loaded"
        assert "'tiny'" in e["message"]
        e = error({**ok, "num_frames": 8, "shape": "exact"}, 400)
        assert e["code"] == "invalid_shape"
        assert "8 → 9" in e["message"]
        e = error({**ok, "size": "30x32", "shape": "exact"}, 400)
        assert "divisible by 16" in e["message"]
        e = error({**ok, "sizes": "32x32"}, 400)
        assert e["code"] == "invalid_request"
        assert e["message"].startswith("sizes: unknown field")
        e = error({**ok, "size": "big"}, 400)
        assert "WIDTHxHEIGHT" in e["message"]
        e = error({**ok, "steps": 0}, 400)
        assert e["param"] == "steps"
        buf = io.BytesIO()
        tiny.png_image().save(buf, "PNG")
        image = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        e = error({**ok, "input_reference": image}, 400)
        assert "text-to-video" in e["message"]
        assert c.get("/v1/videos/vid_nope").status_code == 404


def test_image_to_video_takes_a_data_url_and_nothing_else(tiny_model: ModelPath) -> None:
    ok = {"model": "tiny", "prompt": "a cat", "num_frames": 9, "size": "16x16"}
    with model_server(tiny_model("cogvideox-i2v")) as (url, _):
        c = httpx.Client(base_url=url, timeout=30)
        r = c.post("/v1/videos", json=ok)
        assert r.status_code == 400
        assert "input_reference" in r.json()["error"]["message"]
        r = c.post("/v1/videos", json={**ok, "input_reference": "http://127.0.0.1/x.png"})
        assert "data: URL" in r.json()["error"]["message"]
        r = c.post("/v1/videos", json={**ok, "input_reference": "data:image/png;base64,AAAA"})
        assert "not a readable image/png" in r.json()["error"]["message"]
        buf = io.BytesIO()
        tiny.png_image(24, 20).save(buf, "PNG")
        image = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        job = c.post("/v1/videos", json={**ok, "input_reference": image}).json()
        assert wait_done(c, job["id"])["status"] == "completed"
        d = decode(c.get(f"/v1/videos/{job['id']}/content").content)
        assert (d.frames, d.width, d.height) == (9, 16, 16)


def test_not_ready_until_loaded() -> None:
    state = ServerState("tiny")
    with uvicorn_on_loopback(create_app(state)) as url:
        c = httpx.Client(base_url=url, timeout=10)
        assert c.get("/healthz").status_code == 503
        r = c.post("/v1/videos", json={"model": "tiny", "prompt": "x"})
        assert (r.status_code, r.json()["error"]["code"]) == (503, "not_ready")
        state.fail("OSError: no space left on device")
        assert "no space left" in c.get("/healthz").json()["error"]
        assert c.get("/v1/models").json()["data"][0]["loaded"] is False
