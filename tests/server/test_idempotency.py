"""Idempotency-Key on POST /v1/jobs and POST /v1/videos: replay, in-progress, conflict,
per-tenant scope."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import openai
import pytest
import sqlalchemy as sa

from tests.server.conftest import Server, Tenant
from vidgate.jobs import db

BODIES: dict[str, dict[str, Any]] = {
    "/v1/jobs": {"request": {"prompt": "a windmill in a storm", "duration_s": 5}},
    "/v1/videos": {"prompt": "a windmill in a storm", "model": "auto", "seconds": "5"},
}
OTHER: dict[str, dict[str, Any]] = {
    "/v1/jobs": {"request": {"prompt": "a windmill at noon", "duration_s": 5}},
    "/v1/videos": {"prompt": "a windmill at noon", "model": "auto", "seconds": "5"},
}
PATHS = list(BODIES)
ACCEPTED = {"/v1/jobs": 202, "/v1/videos": 200}


def post(
    server: Server, tenant: Tenant, path: str, key: str, body: dict[str, Any]
) -> httpx.Response:
    with server.client(tenant) as c:
        return c.post(path, json=body, headers={"Idempotency-Key": key})


def jobs_of(server: Server, tenant: Tenant) -> list[str]:
    return [j.id for j in server.gateway.store.list(tenant=tenant.name)]


@pytest.mark.parametrize("path", PATHS)
def test_same_key_same_body_replays_the_first_answer(
    idle_server: Server, tenant_idle: Tenant, path: str
) -> None:
    key = str(uuid.uuid4())
    first = post(idle_server, tenant_idle, path, key, BODIES[path])
    assert first.status_code == ACCEPTED[path], first.text
    assert "idempotent-replayed" not in first.headers
    again = post(idle_server, tenant_idle, path, key, BODIES[path])
    assert again.status_code == first.status_code
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert jobs_of(idle_server, tenant_idle) == [first.json()["id"]]


@pytest.mark.parametrize("path", PATHS)
def test_same_key_different_body_is_422(
    idle_server: Server, tenant_idle: Tenant, path: str
) -> None:
    key = str(uuid.uuid4())
    assert post(idle_server, tenant_idle, path, key, BODIES[path]).status_code == ACCEPTED[path]
    clash = post(idle_server, tenant_idle, path, key, OTHER[path])
    assert clash.status_code == 422
    text = clash.text
    assert "idempotency_key_reused" in text
    assert "different request body" in text
    assert len(jobs_of(idle_server, tenant_idle)) == 1


@pytest.mark.parametrize("path", PATHS)
def test_keys_are_per_tenant(idle_server: Server, path: str) -> None:
    a, b = idle_server.tenant(), idle_server.tenant()
    key = "shared-" + uuid.uuid4().hex
    first = post(idle_server, a, path, key, BODIES[path])
    second = post(idle_server, b, path, key, OTHER[path])
    assert first.status_code == second.status_code == ACCEPTED[path]
    assert "idempotent-replayed" not in second.headers
    assert first.json()["id"] != second.json()["id"]
    assert jobs_of(idle_server, b) == [second.json()["id"]]


def test_the_sdks_multipart_retry_replays(idle_server: Server, tenant_idle: Tenant) -> None:
    """A multipart body differs on every send (a random boundary); the key still replays."""
    client = openai.OpenAI(base_url=idle_server.api, api_key=tenant_idle.key, max_retries=0)
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = client.videos.create(prompt="a tram at night", model="auto", extra_headers=key)
    raw = client.videos.with_raw_response.create(
        prompt="a tram at night", model="auto", extra_headers=key
    )
    assert raw.headers["idempotent-replayed"] == "true"
    assert raw.parse().id == first.id
    with pytest.raises(openai.UnprocessableEntityError):
        client.videos.create(prompt="a tram by day", model="auto", extra_headers=key)


def test_a_definite_4xx_is_replayed_as_problem_json(
    idle_server: Server, tenant_idle: Tenant
) -> None:
    key = str(uuid.uuid4())
    impossible = {
        "request": {
            "prompt": "x",
            "duration_s": 8,
            "resolution": "4k",
            "audio": "required",
            "constraints": {"max_cost_usd": 0.01},
        }
    }
    first = post(idle_server, tenant_idle, "/v1/jobs", key, impossible)
    assert first.status_code == 422
    again = post(idle_server, tenant_idle, "/v1/jobs", key, impossible)
    assert again.status_code == 422
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["content-type"] == first.headers["content-type"]
    assert first.headers["content-type"] == "application/problem+json"
    assert again.json() == first.json()


def test_a_budget_refusal_is_not_stored(idle_server: Server) -> None:
    """402 says "not now": once the budget is raised, the same key runs the request."""
    poor = idle_server.tenant(budget_usd=0.001)
    key = str(uuid.uuid4())
    assert post(idle_server, poor, "/v1/jobs", key, BODIES["/v1/jobs"]).status_code == 402
    idle_server.gateway.accounts.ensure_tenant(poor.name, budget_usd=100)
    later = post(idle_server, poor, "/v1/jobs", key, BODIES["/v1/jobs"])
    assert later.status_code == 202
    assert "idempotent-replayed" not in later.headers


@pytest.mark.parametrize("path", PATHS)
def test_same_key_while_the_first_is_running_is_409(pg_server: Server, path: str) -> None:
    """The first request is held, for real, on a row lock: the test locks the tenant's row
    (as a concurrent transaction would), so the first request stops inside its budget
    reservation after it has claimed the key."""
    tenant = pg_server.tenant()
    key = str(uuid.uuid4())
    engine = pg_server.gateway.store.engine
    t = db.tenants
    first: list[httpx.Response] = []
    with engine.connect() as lock:
        tx = lock.begin()
        lock.execute(sa.select(t.c.id).where(t.c.id == tenant.name).with_for_update())
        worker = threading.Thread(
            target=lambda: first.append(post(pg_server, tenant, path, key, BODIES[path]))
        )
        worker.start()
        try:
            _wait_for_key(pg_server, tenant, key)
            busy = post(pg_server, tenant, path, key, BODIES[path])
            assert busy.status_code == 409, busy.text
            assert busy.headers["retry-after"] == "1"
            assert "still being processed" in busy.text
            problem = busy.json()  # the native route's problem, or the OpenAI-style error
            problem = problem.get("error", problem)
            assert problem["code"] == "idempotency_key_in_use"
            assert problem.get("detail", problem.get("message")) == (
                "a request with this Idempotency-Key is still being processed; retry shortly"
            )
            clash = post(pg_server, tenant, path, key, OTHER[path])
            assert clash.status_code == 422  # a different body is a conflict even now
            assert not first  # the first is still held
        finally:
            tx.rollback()
            worker.join(timeout=30)
    assert first[0].status_code == ACCEPTED[path], first[0].text
    replay = post(pg_server, tenant, path, key, BODIES[path])
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["id"] == first[0].json()["id"]


def _wait_for_key(server: Server, tenant: Tenant, key: str, timeout_s: float = 20) -> None:
    i = db.idempotency
    deadline = time.monotonic() + timeout_s
    with server.gateway.store.engine.connect() as conn:
        while True:
            state = conn.execute(
                sa.select(i.c.state).where(i.c.tenant == tenant.name, i.c.key == key)
            ).scalar_one_or_none()
            conn.rollback()
            if state == "in_progress":
                return
            assert time.monotonic() < deadline, "the first request never claimed its key"
            time.sleep(0.02)


@pytest.fixture
def tenant_idle(idle_server: Server) -> Tenant:
    return idle_server.tenant()


@pytest.mark.parametrize("path", PATHS)
def test_a_key_left_in_progress_by_a_dead_process_is_taken_over_safely(
    idle_server: Server, tenant_idle: Tenant, path: str
) -> None:
    """A server that died after claiming a key (and maybe after creating the job) must not
    leave the key answering 409 forever — nor let the retry create a second job."""
    key = str(uuid.uuid4())
    first = post(idle_server, tenant_idle, path, key, BODIES[path])
    assert first.status_code == ACCEPTED[path], first.text
    # Rewind: the stored answer is lost and the claim looks three minutes old, as if the
    # process had died right after creating the job.
    with idle_server.gateway.store.engine.begin() as conn:
        conn.execute(
            sa.update(db.idempotency)
            .where(db.idempotency.c.tenant == tenant_idle.name, db.idempotency.c.key == key)
            .values(
                state="in_progress",
                response=None,
                status_code=None,
                created_at=datetime.now(UTC) - timedelta(minutes=3),
            )
        )
    retry = post(idle_server, tenant_idle, path, key, BODIES[path])
    assert retry.status_code == ACCEPTED[path], retry.text
    assert retry.json()["id"] == first.json()["id"]  # the job the first run made
    assert jobs_of(idle_server, tenant_idle) == [first.json()["id"]]
