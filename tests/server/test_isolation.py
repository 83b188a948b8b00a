"""Tenants never see each other's jobs: every endpoint that takes an id answers another
tenant's id exactly as it answers an id that does not exist (404, never 403)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.server.conftest import Server, Tenant, submit_job
from vidgate.jobs import db

ENDPOINTS = [
    ("GET", "/v1/videos/{id}"),
    ("DELETE", "/v1/videos/{id}"),
    ("GET", "/v1/videos/{id}/content"),
    ("POST", "/v1/videos/{id}/remix"),
    ("GET", "/v1/videos?after={id}"),
    ("GET", "/v1/jobs/{id}"),
    ("POST", "/v1/jobs/{id}/cancel"),
    ("GET", "/v1/jobs/{id}/content"),
    ("GET", "/v1/jobs/{id}/events"),
]


def call(c: httpx.Client, method: str, path: str, job_id: str) -> httpx.Response:
    body = {"prompt": "make it night"} if path.endswith("/remix") else None
    return c.request(method, path.format(id=job_id), json=body)


def unknown_id() -> str:
    return "job_" + uuid.uuid4().hex[:20]


def same_answer(theirs: httpx.Response, their_id: str, unknown: httpx.Response, uid: str) -> None:
    assert theirs.status_code == unknown.status_code == 404, theirs.text
    assert theirs.headers["content-type"] == unknown.headers["content-type"]
    assert theirs.text.replace(their_id, "ID") == unknown.text.replace(uid, "ID")


@pytest.fixture(scope="module")
def finished(server: Server) -> tuple[Tenant, dict[str, Any]]:
    owner = server.tenant("owner")
    job = submit_job(server, owner, "the owner's secret storyboard")
    done = server.wait_job(owner, job["id"])
    assert done["state"] == "succeeded", done["error"]
    return owner, done


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_another_tenants_finished_job_is_not_found(
    server: Server, finished: tuple[Tenant, dict[str, Any]], method: str, path: str
) -> None:
    owner, job = finished
    intruder = server.tenant("intruder")
    with server.client(intruder) as c:
        uid = unknown_id()
        same_answer(call(c, method, path, job["id"]), job["id"], call(c, method, path, uid), uid)
    # and the owner's job is untouched: still there, still downloadable
    with server.client(owner) as c:
        assert c.get(f"/v1/jobs/{job['id']}").json()["deleted"] is False
        content = c.get(f"/v1/videos/{job['id']}/content")
        assert content.status_code == 200
        assert content.content[4:8] == b"ftyp"


@pytest.mark.parametrize(
    ("method", "path"),
    [e for e in ENDPOINTS if e[1] in ("/v1/jobs/{id}/cancel", "/v1/jobs/{id}/events")]
    + [("DELETE", "/v1/videos/{id}"), ("GET", "/v1/jobs/{id}")],
)
def test_another_tenants_queued_job_is_not_found(
    idle_server: Server, method: str, path: str
) -> None:
    owner = idle_server.tenant("owner")
    job = submit_job(idle_server, owner)
    intruder = idle_server.tenant("intruder")
    with idle_server.client(intruder) as c:
        uid = unknown_id()
        same_answer(call(c, method, path, job["id"]), job["id"], call(c, method, path, uid), uid)
    row = idle_server.gateway.store.get(job["id"])
    assert row.state.value == "queued"
    with idle_server.gateway.store.engine.connect() as conn:
        flag = conn.execute(
            db.jobs.select()
            .with_only_columns(db.jobs.c.cancel_requested)
            .where(db.jobs.c.id == job["id"])
        ).scalar_one()
    assert flag is False  # the intruder's cancel never reached the job


def test_lists_and_spend_show_only_the_callers_own(
    server: Server, finished: tuple[Tenant, dict[str, Any]]
) -> None:
    owner, job = finished
    other = server.tenant("other")
    with server.client(other) as c:
        assert c.get("/v1/videos").json()["data"] == []
        assert c.get("/v1/jobs").json()["data"] == []
        spend = c.get("/v1/spend").json()
        assert spend["tenant"] == other.name
        assert spend["spent_usd"] == 0
    with server.client(owner) as c:
        assert [v["id"] for v in c.get("/v1/videos").json()["data"]] == [job["id"]]
        assert c.get("/v1/spend").json()["spent_usd"] == pytest.approx(job["cost_usd"])
