"""Outbound webhooks: Standard Webhooks signatures, retries until the receiver recovers (same
webhook-id on every attempt), 410 disables the endpoint, redirects are refused."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from tests.jobs.conftest import make_job
from vidgate.jobs.store import JobStore, OutboxEvent
from vidgate.jobs.webhooks import Deliverer, new_secret, sign, verify
from vidgate.net.ssrf import SafeFetcher
from vidgate.sandbox.app import LoopbackServer
from vidgate.types import JobState


def test_signature_matches_the_standard_webhooks_test_vector() -> None:
    # The example from the Standard Webhooks specification.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    sig = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": f"v1,bogus {sig}",
    }
    assert verify(secret, headers, body, now=1614265330)
    assert not verify(secret, headers, body + b" ", now=1614265330)
    assert not verify(secret, headers, body, now=1614265330 + 301)  # too old


@dataclass
class Receiver:
    """A webhook receiver that answers ``plan`` statuses in turn, then 200."""

    plan: list[int] = field(default_factory=list)
    seen: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/hook")
        async def hook(request: Request) -> Response:
            self.seen.append((dict(request.headers), await request.body()))
            status = self.plan.pop(0) if self.plan else 200
            return JSONResponse({"ok": status < 300}, status_code=status)

        @app.post("/moved")
        async def moved() -> Response:
            return RedirectResponse("http://169.254.169.254/", status_code=307)

        return app


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    r = Receiver()
    server = LoopbackServer(r.app()).start()
    yield r, server.url
    server.stop()


def _enqueue(store: JobStore, url: str, n: int, endpoint_id: str | None = None) -> list[str]:
    ids = []
    for i in range(n):
        job = make_job(f"hook {i}")
        store.create(job)
        [claim] = store.claim("w", job_id=job.id)
        claim.job.state = JobState.SUCCEEDED
        ev = OutboxEvent(
            url=url, event_type="job.succeeded", payload={"job": job.id}, endpoint_id=endpoint_id
        )
        store.save(claim, events=[ev])
        ids.append(ev.id)
    return ids


async def _drain(d: Deliverer, rounds: int = 200) -> None:
    for _ in range(rounds):
        await d.run_once()
        pending = [e for e in d.store.outbox() if e["state"] == "pending"]
        if not pending:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("outbox never drained")


async def test_failing_receiver_gets_every_event_once_recovered(tmp_path: Path, receiver) -> None:
    r, url = receiver
    r.plan = [503] * 9 + [500, 502]  # down for a while, then recovers
    store = JobStore(f"sqlite:///{tmp_path / 'j.db'}")
    secret = new_secret()
    ids = _enqueue(store, f"{url}/hook", 5)
    async with httpx.AsyncClient() as client:
        fetcher = SafeFetcher(client, allow_hosts={url.removeprefix("http://")})
        d = Deliverer(store, fetcher, default_secret=secret, schedule=[0.01] * 10)
        await _drain(d)
    delivered = [e for e in store.outbox() if e["state"] == "delivered"]
    assert sorted(e["id"] for e in delivered) == sorted(ids)
    attempts_by_id: dict[str, int] = {}
    for headers, body in r.seen:
        assert verify(secret, headers, body)
        attempts_by_id[headers["webhook-id"]] = attempts_by_id.get(headers["webhook-id"], 0) + 1
        assert json.loads(body)["job"]
    assert set(attempts_by_id) == set(ids)  # every retry reused the event's own webhook-id
    assert sum(attempts_by_id.values()) == len(ids) + 11  # 11 failed answers, then 5 OKs
    successes = [h["webhook-id"] for h, _ in r.seen[11:]]
    assert sorted(successes) == sorted(ids)  # each event accepted exactly once
    store.close()


async def test_gone_disables_the_endpoint(tmp_path: Path, receiver) -> None:
    r, url = receiver
    r.plan = [410]
    store = JobStore(f"sqlite:///{tmp_path / 'j.db'}")
    eid = store.add_endpoint("default", f"{url}/hook", new_secret())
    _enqueue(store, f"{url}/hook", 3, endpoint_id=eid)
    async with httpx.AsyncClient() as client:
        fetcher = SafeFetcher(client, allow_hosts={url.removeprefix("http://")})
        d = Deliverer(store, fetcher, default_secret=new_secret(), schedule=[0.01])
        await d.run_once()
    assert len(r.seen) == 1  # the 410 disabled the endpoint: the others are not sent
    assert store.endpoints("default") == []
    assert {e["state"] for e in store.outbox()} == {"disabled"}
    store.close()


async def test_redirects_are_not_followed_and_dead_after_schedule(tmp_path: Path, receiver) -> None:
    _r, url = receiver
    store = JobStore(f"sqlite:///{tmp_path / 'j.db'}")
    _enqueue(store, f"{url}/moved", 1)
    async with httpx.AsyncClient() as client:
        fetcher = SafeFetcher(client, allow_hosts={url.removeprefix("http://")})
        d = Deliverer(store, fetcher, default_secret=new_secret(), schedule=[0.01, 0.01])
        for _ in range(50):
            await d.run_once()
            await asyncio.sleep(0.02)
    [event] = store.outbox()
    assert event["state"] == "dead"
    assert event["attempts"] == 3
    assert "redirect" in event["last_error"]
    store.close()


async def test_private_targets_are_refused(tmp_path: Path) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'j.db'}")
    _enqueue(store, "http://169.254.169.254/latest/meta-data/", 1)
    async with httpx.AsyncClient() as client:
        d = Deliverer(store, SafeFetcher(client), default_secret=new_secret(), schedule=[])
        await d.run_once()
    [event] = store.outbox()
    assert event["state"] == "dead"
    assert "link-local" in event["last_error"]
    store.close()
