"""The gate's verdict as API users see it, over real HTTP: the native job and the
OpenAI-compatible video object's metadata, for a clip the sandbox delivered defective."""

from __future__ import annotations

import httpx

from tests.server.conftest import ServerFactory, submit_job
from tests.server.conftest import make_server as make_server  # the fixture, by name


def test_flagged_verdict_in_native_job_and_openai_metadata(make_server: ServerFactory) -> None:
    server = make_server()
    tenant = server.tenant()
    gw = server.gateway
    with server.client(tenant) as c:
        plan = c.post("/v1/route", json={"request": {"prompt": "x", "duration_s": 5}}).json()
    first = plan["ranked"][0]["offering"]
    # a gate naming a check that does not exist is refused at the door
    with server.client(tenant) as c:
        bad = c.post(
            "/v1/jobs",
            json={"request": {"prompt": "x", "quality": {"checks": ["sharpness"]}}},
        )
    assert bad.status_code == 422, bad.text
    assert "unknown check(s) sharpness" in bad.text
    rule = {"kind": "frozen", "rate": 1.0, "offering": first}
    assert httpx.put(gw.sandbox_url() + "/sandbox/faults", json={"rules": [rule]}).is_success

    job = submit_job(
        server,
        tenant,
        "a waterfall",
        request={
            "prompt": "a waterfall",
            "duration_s": 5,
            "quality": {"on_fail": "deliver_flagged"},
        },
        offerings=[first],
    )
    done = server.wait_job(tenant, job["id"])
    assert done["state"] == "succeeded", done["error"]
    q = done["quality"]
    assert q["verdict"] == "fail"
    assert q["flagged"] is True
    assert "checks.frozen" in q["failed"]
    frozen = {c["name"]: c for c in done["stages"]["checks"]["checks"]}["frozen"]
    assert frozen["verdict"] == "fail"
    assert frozen["value"] >= frozen["threshold"]
    assert frozen["frames_s"]  # where it froze, for the dashboard's strip
    with server.client(tenant) as c:
        video = c.get(f"/v1/videos/{job['id']}").json()
    meta = video["metadata"]
    assert meta["vidgate_quality_verdict"] == "fail"
    assert meta["vidgate_quality_flagged"] == "true"
    assert "checks.frozen" in meta["vidgate_quality_failed"]
    assert all(isinstance(v, str) for v in meta.values())
