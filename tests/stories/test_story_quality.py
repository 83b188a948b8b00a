"""The quality gate in a story, over HTTP on a real server (its worker drives the shots): the
story's ``quality:`` gate goes to every shot's job unless a shot gives its own, each shot's
verdict shows in ``GET /v1/stories/{id}`` and in the record; a story is refused while its
tenant is at its cap on running jobs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.conftest import sandbox_settings
from tests.stories.story_helpers import story_catalog
from vidgate.gateway import Gateway
from vidgate.jobs.worker import WorkerConfig
from vidgate.sandbox.app import LoopbackServer, SandboxServer
from vidgate.sandbox.core import FaultConfig, FaultRule
from vidgate.server.app import create_app


class Api:
    def __init__(self, url: str, gw: Gateway, sandbox: SandboxServer) -> None:
        self.url = url
        self.gw = gw
        self.sandbox = sandbox

    def client(self, tenant: str, **limits: Any) -> httpx.Client:
        self.gw.accounts.ensure_tenant(tenant, **limits)
        _, raw = self.gw.accounts.create_key(tenant)
        return httpx.Client(
            base_url=self.url,
            headers={"authorization": f"Bearer {raw}"},
            timeout=60,
            transport=httpx.HTTPTransport(retries=0),
        )


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    monkeypatch.delenv("VIDGATE_QUALITY_DEFAULT", raising=False)
    cat = story_catalog()
    # every clip comes out black from 30% on
    faults = FaultConfig(rules=[FaultRule(kind="black", rate=1.0)])
    sb = SandboxServer(tmp_path / "sandbox", cat, time_scale=0.004, faults=faults).start()
    gw = Gateway(sandbox_settings(tmp_path / "home", sandbox_url=sb.url), catalog=cat)
    app = create_app(gateway=gw, worker_config=WorkerConfig(deliver_webhooks=False))
    server = LoopbackServer(app)
    server.server.config.lifespan = "on"  # the lifespan runs the worker (and its stories)
    server.start()
    yield Api(server.url, gw, sb)
    server.stop()
    sb.stop()


STORY: dict[str, Any] = {
    "title": "Judged",
    "resolution": "480p",
    "fps": 12,
    # the story's gate: black frames fail a shot, which is delivered flagged
    "quality": {"checks": ["black_frames"], "on_fail": "deliver_flagged"},
    "shots": [
        {"prompt": "a dark street", "duration": 2},
        # this shot's own gate does not look for black frames
        {"prompt": "a bright square", "duration": 3, "quality": {"checks": ["duration"]}},
    ],
}


def _finished(c: httpx.Client, sid: str) -> dict[str, Any]:
    for _ in range(600):
        story: dict[str, Any] = c.get(f"/v1/stories/{sid}").json()
        if story["state"] in ("succeeded", "failed", "canceled", "expired"):
            return story
        time.sleep(0.1)
    raise AssertionError(f"story {sid} did not finish: {story}")


def test_each_shot_gets_the_story_gate_and_shows_its_verdict(api: Api) -> None:
    with api.client("judy") as c:
        r = c.post("/v1/stories", json=STORY)
        assert r.status_code == 202, r.text
        sid = r.json()["id"]
        assert [s["quality"] for s in r.json()["shots"]] == [None, None]  # nothing judged yet
        story = _finished(c, sid)
        assert story["state"] == "succeeded", story["error"]
        first, second = story["shots"]
        # the story's gate judged shot 1: its black frames failed it, delivered flagged
        q1 = first["quality"]
        assert q1["verdict"] == "fail"
        assert q1["flagged"] is True
        assert any("black_frames" in f for f in q1["failed"])
        assert q1["gate"] == "request"
        assert first["segments"][0]["quality"] == q1
        # shot 2's own gate checks the duration only: it passes
        q2 = second["quality"]
        assert q2["verdict"] == "pass"
        assert q2["flagged"] is False
        assert q2["failed"] == []
        # the gates reached the shots' jobs as their requests' quality gates
        jobs = [api.gw.store.get(s["segments"][0]["job_id"]) for s in story["shots"]]
        gates = [j.request.quality_gate for j in jobs]
        assert gates[0] is not None
        assert gates[0].checks == ["black_frames"]
        assert gates[0].on_fail == "deliver_flagged"
        assert gates[1] is not None
        assert gates[1].checks == ["duration"]
        # the record carries each shot's verdict and every segment's full one
        record = c.get(f"/v1/stories/{sid}/record").json()
        assert [s["quality"] for s in record["shots"]] == [q1, q2]
        assert record["shots"][0]["segments"][0]["quality"] == jobs[0].quality
        assert record["matches_ledger"] is True


def test_a_story_is_refused_while_its_tenant_is_at_its_job_cap(api: Api) -> None:
    plain = {
        "title": "Capped",
        "resolution": "480p",
        "fps": 12,
        "shots": [{"prompt": "one", "duration": 2}, {"prompt": "two", "duration": 3}],
    }
    with api.client("capped", max_concurrent_jobs=0) as c:
        r = c.post("/v1/stories", json=plain)
    assert r.status_code == 429, r.text
    assert r.json()["code"] == "too_many_jobs"
    assert "0 jobs running (its cap)" in r.json()["detail"]
    assert r.headers["retry-after"] == "5"
    assert api.gw.accounts.running_jobs("capped") == 0
    tenant = api.gw.accounts.tenant("capped")
    assert tenant is not None
    assert tenant["reserved_usd"] == 0.0
