"""Stories over HTTP on a real server (loopback, lifespan on: its worker steps stories and
drives their shots): create, follow by SSE, per-shot states, the film and a shot's file,
errors with lines, tenant isolation, cancel."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import pytest

from tests.server.conftest import sandbox_settings
from tests.stories.story_helpers import story_catalog, write_wav
from vidgate.gateway import Gateway
from vidgate.jobs.worker import WorkerConfig
from vidgate.sandbox.app import LoopbackServer, SandboxServer
from vidgate.server.app import create_app


class Api:
    def __init__(self, url: str, gw: Gateway, sandbox: SandboxServer) -> None:
        self.url = url
        self.gw = gw
        self.sandbox = sandbox

    def client(self, tenant: str, budget: float | None = None) -> httpx.Client:
        self.gw.accounts.ensure_tenant(tenant, budget_usd=budget)
        _, raw = self.gw.accounts.create_key(tenant)
        return httpx.Client(
            base_url=self.url,
            headers={"authorization": f"Bearer {raw}"},
            timeout=60,
            transport=httpx.HTTPTransport(retries=0),
        )


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    cat = story_catalog()
    sb = SandboxServer(tmp_path / "sandbox", cat, time_scale=0.004).start()
    gw = Gateway(sandbox_settings(tmp_path / "home", sandbox_url=sb.url), catalog=cat)
    app = create_app(gateway=gw, worker_config=WorkerConfig(deliver_webhooks=False))
    server = LoopbackServer(app)
    server.server.config.lifespan = "on"  # the lifespan runs the worker (and its stories)
    server.start()
    yield Api(server.url, gw, sb)
    server.stop()
    sb.stop()


def _story(tmp_path: Path, seconds: tuple[int, ...] = (2, 3)) -> dict[str, object]:
    wav = write_wav(tmp_path / "theme.wav", 3.0)
    return {
        "title": "Over the wire",
        "resolution": "480p",
        "fps": 12,
        "soundtrack": "data:audio/wav;base64," + base64.b64encode(wav.read_bytes()).decode(),
        "shots": [
            {"prompt": f"shot {i}", "duration": d, "transition": "crossfade:0.5" if i else "cut"}
            for i, d in enumerate(seconds)
        ],
    }


def test_create_follow_and_fetch_a_story(tmp_path: Path, api: Api) -> None:
    with api.client("alice", budget=5.0) as c, api.client("mallory") as other:
        r = c.post("/v1/stories", json=_story(tmp_path))
        assert r.status_code == 202, r.text
        story = r.json()
        sid = story["id"]
        assert story["state"] == "queued"
        assert [s["state"] for s in story["shots"]] == ["queued", "queued"]
        # another tenant cannot see it
        assert other.get(f"/v1/stories/{sid}").status_code == 404
        assert other.get(f"/v1/stories/{sid}/content").status_code == 404
        # follow it to the end over server-sent events
        states = []
        with c.stream("GET", f"/v1/stories/{sid}/events") as events:
            for line in events.iter_lines():
                if line.startswith("data: "):
                    ev = json.loads(line[6:])
                    states.append(ev["state"])
        assert states[-1] == "succeeded", states
        done = c.get(f"/v1/stories/{sid}").json()
        assert [s["state"] for s in done["shots"]] == ["succeeded", "succeeded"]
        assert all(s["has_file"] for s in done["shots"])
        assert "uri" not in done["film"]  # our storage stays ours
        planned = done["film"]["planned_frames"]
        film = c.get(f"/v1/stories/{sid}/content")
        assert film.status_code == 200
        path = tmp_path / "film.mp4"
        path.write_bytes(film.content)
        with av.open(str(path)) as f:
            assert sum(1 for _ in f.decode(video=0)) == planned
        # (2 + 3 s) at 12 fps less the 0.5 s crossfade
        assert planned == 5 * 12 - 6
        shot = c.get(f"/v1/stories/{sid}/shots/2/content")
        assert shot.status_code == 200
        assert shot.content[4:8] == b"ftyp"
        assert c.get(f"/v1/stories/{sid}/shots/3/content").status_code == 409
        rec = c.get(f"/v1/stories/{sid}/record").json()
        assert rec["matches_ledger"] is True
        assert [s["id"] for s in c.get("/v1/stories").json()["data"]] == [sid]
        assert other.get("/v1/stories").json()["data"] == []


def test_a_bad_story_gets_every_problem_with_its_line(tmp_path: Path, api: Api) -> None:
    body = json.dumps(
        {
            "title": "Bad",
            "budget": 0.01,
            "soundtrack": "https://example.com/theme.wav",
            "shots": [
                {"prompt": "a", "duration": -1},
                {"prompt": "b", "duration": 4, "characters": ["ghost"]},
            ],
        },
        indent=2,
    )
    with api.client("bob") as c:
        r = c.post("/v1/stories", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    errors = {e["field"]: e for e in r.json()["errors"]}
    assert set(errors) == {"budget", "soundtrack", "shots[0].duration", "shots[1].characters[0]"}
    lines = body.splitlines()
    for e in errors.values():
        key = e["field"].split(".")[-1].split("[")[0]
        assert key in lines[e["line"] - 1] or "ghost" in lines[e["line"] - 1], e


def test_a_budget_too_small_for_the_story_is_refused_before_anything_runs(
    tmp_path: Path, api: Api
) -> None:
    with api.client("carol", budget=0.04) as c:  # the plan costs $0.05
        r = c.post("/v1/stories", json=_story(tmp_path))
    assert r.status_code == 402, r.text
    assert api.sandbox.core.store.stats()["creates"] == 0
    tenant = api.gw.accounts.tenant("carol")
    assert tenant is not None
    assert tenant["reserved_usd"] == 0.0


def test_cancel_stops_every_shot_and_releases_the_hold(tmp_path: Path, api: Api) -> None:
    api.sandbox.core.time_scale = 5.0  # shots that take minutes
    with api.client("dave", budget=5.0) as c:
        sid = c.post("/v1/stories", json=_story(tmp_path)).json()["id"]
        for _ in range(200):
            story = c.get(f"/v1/stories/{sid}").json()
            if all(s["segments"][0]["job_id"] for s in story["shots"]):
                break
            time.sleep(0.05)
        r = c.post(f"/v1/stories/{sid}/cancel")
        assert r.status_code == 200
        for _ in range(400):
            story = c.get(f"/v1/stories/{sid}").json()
            if story["state"] == "canceled":
                break
            time.sleep(0.05)
    assert story["state"] == "canceled", story
    assert {s["state"] for s in story["shots"]} == {"canceled"}
    tenant = api.gw.accounts.tenant("dave")
    assert tenant is not None
    assert tenant["reserved_usd"] == pytest.approx(0.0, abs=1e-9)
