"""GET /v1/videos/{id}/provenance over real HTTP: the stored video's report, for its owner
only (another tenant's id answers exactly like an unknown one)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.provenance.conftest import Pair, settings_for
from tests.server.conftest import Server, sandbox_settings, start_server, submit_job
from vidgate.stages.base import StageContext
from vidgate.stages.provenance import ProvenanceStage


@pytest.fixture
def server(tmp_path: Path, ours: Pair) -> Iterator[Server]:
    # trust anchors on, keys off: the engine leaves outputs unsigned; the test signs one
    settings = sandbox_settings(tmp_path / "home", c2pa_trust_anchors=str(ours.ca.ca))
    srv = start_server(settings)
    yield srv
    srv.stop()


async def sign_stored_like_the_engine(srv: Server, job_id: str, pair: Pair, work: Path) -> None:
    """What the post-processing engine does with the stage's replacement asset."""
    gw = srv.gateway
    job = gw.store.get(job_id)
    stored = Path(gw.storage_path(job.assets[0].uri))
    ctx = StageContext(
        job=job,
        asset=job.assets[0],
        path=stored,
        workdir=work,
        settings=settings_for(work / "home", pair),
    )
    result = await ProvenanceStage().run(ctx)
    assert result.verdict == "pass", result.checks
    assert result.asset is not None
    os.replace(result.asset.uri, stored)


async def test_provenance_route_reports_unsigned_then_trusted(
    server: Server, ours: Pair, tmp_path: Path
) -> None:
    owner = server.tenant("owner")
    job = submit_job(server, owner, "a paper boat on a puddle")
    assert server.wait_job(owner, job["id"])["state"] == "succeeded"
    url = f"/v1/videos/{job['id']}/provenance"
    with server.client(owner) as c:
        r = c.get(url)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "no manifest"
    assert r.json()["id"] == job["id"]

    await sign_stored_like_the_engine(server, job["id"], ours, tmp_path / "work")
    with server.client(owner) as c:
        body = c.get(url).json()
    assert body["state"] == "Trusted"
    assert body["object"] == "video.provenance"
    assert body["claim_generator"] == "vidgate/0.1.0"
    assert [a["action"] for a in body["actions"]] == ["c2pa.created"]
    assert body["generation"]["job_id"] == job["id"]
    assert body["actions"][0]["softwareAgent"]["offering"] == body["generation"]["offering"]

    intruder = server.tenant("intruder")
    unknown = "job_" + uuid.uuid4().hex[:20]
    with server.client(intruder) as c:
        theirs = c.get(url)
        missing = c.get(f"/v1/videos/{unknown}/provenance")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.text.replace(job["id"], "ID") == missing.text.replace(unknown, "ID")
    with server.client() as c:
        assert c.get(url).status_code == 401


def test_unfinished_video_has_no_provenance_yet(tmp_path: Path) -> None:
    srv = start_server(sandbox_settings(tmp_path / "idle"), run_worker=False)
    try:
        owner = srv.tenant("owner")
        job = submit_job(srv, owner)
        with srv.client(owner) as c:
            r = c.get(f"/v1/videos/{job['id']}/provenance")
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "video_not_ready"
    finally:
        srv.stop()
