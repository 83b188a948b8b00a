"""A real job through the service with signing configured: the delivered MP4 carries our
manifest (c2pa's own Reader says Trusted with the dev CA), the stage's result is on the job,
and the provenance route reports it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import c2pa  # type: ignore[import-untyped]
import pytest

from tests.provenance.conftest import Pair
from tests.server.conftest import Server, sandbox_settings, start_server, submit_job
from vidgate.provenance.sign import TRAINED


@pytest.fixture
def signing_server(tmp_path: Path, ours: Pair, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    monkeypatch.delenv("VIDGATE_STAGES", raising=False)  # the default: checks,semantic,provenance
    settings = sandbox_settings(
        tmp_path / "home",
        c2pa_cert=str(ours.ca.cert),
        c2pa_key=str(ours.ca.key),
        c2pa_trust_anchors=str(ours.ca.ca),
    )
    srv = start_server(settings)
    yield srv
    srv.stop()


def test_a_delivered_job_is_signed_and_trusted(
    signing_server: Server, ours: Pair, tmp_path: Path
) -> None:
    srv = signing_server
    owner = srv.tenant("owner")
    job = submit_job(srv, owner, "a paper boat on a puddle")
    done = srv.wait_job(owner, job["id"])
    assert done["state"] == "succeeded", done["error"]
    stage = done["stages"]["provenance"]
    assert stage["verdict"] == "pass", stage
    assert stage["data"]["state"] == "Trusted"
    # the review stages judged the clip before it was signed: same asset
    assert done["stages"]["checks"]["asset_id"] == stage["asset_id"]

    with srv.client(owner) as c:
        content = c.get(f"/v1/videos/{job['id']}/content")
        report = c.get(f"/v1/videos/{job['id']}/provenance").json()
    assert content.status_code == 200
    delivered = tmp_path / "delivered.mp4"
    delivered.write_bytes(content.content)
    anchors = {"trust": {"trust_anchors": ours.anchor.decode()}, "verify": {"verify_trust": True}}
    with (
        open(delivered, "rb") as f,
        c2pa.Reader("video/mp4", f, None, c2pa.Context.from_dict(anchors)) as reader,
    ):
        assert reader.get_validation_state() == "Trusted"
        store = json.loads(reader.json())
    active = store["manifests"][store["active_manifest"]]
    actions = [
        a
        for x in active["assertions"]
        if x["label"].startswith("c2pa.actions")
        for a in x["data"]["actions"]
    ]
    assert actions[0]["action"] == "c2pa.created"
    assert actions[0]["digitalSourceType"] == TRAINED
    assert actions[0]["softwareAgent"]["offering"] == done["offering_id"]
    assert report["state"] == "Trusted"
    assert report["generation"]["job_id"] == job["id"]
    # the job's asset describes the signed file that is served
    asset = done["assets"][0]
    assert asset["bytes"] == len(content.content)
