"""Inbound callbacks: signatures checked (fal Ed25519 + JWKS, Replicate Standard Webhooks,
tokens for unsigned providers); a verified callback only hints the job to poll."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi import FastAPI

from tests.jobs.conftest import make_job
from vidgate.errors import AuthFailed, InvalidRequest
from vidgate.jobs.callbacks import CallbackHandler
from vidgate.jobs.store import JobStore
from vidgate.jobs.webhooks import new_secret, sign
from vidgate.sandbox.app import LoopbackServer
from vidgate.types import AttemptState, JobState


@pytest.fixture
def fal_key() -> Iterator[tuple[Ed25519PrivateKey, str]]:
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    app = FastAPI()

    @app.get("/.well-known/jwks.json")
    async def jwks() -> dict[str, object]:
        return {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k1"}]}

    server = LoopbackServer(app).start()
    yield key, f"{server.url}/.well-known/jwks.json"
    server.stop()


def running_job(store: JobStore, protocol: str, remote_id: str) -> str:
    job = make_job()
    store.create(job)
    [claim] = store.claim("w", job_id=job.id)
    claim.job.state = JobState.RUNNING
    from datetime import UTC, datetime

    from vidgate.types import Attempt

    claim.job.attempts.append(
        Attempt(
            n=1,
            offering_id="o",
            state=AttemptState.RUNNING,
            idempotency_key="k",
            started_at=datetime.now(UTC),
            estimated_cost_usd=0.1,
            provider_job={
                "protocol": protocol,
                "remote_id": remote_id,
                "offering_id": "o",
                "base_url": "https://x",
            },
        )
    )
    store.save(claim)
    return job.id


def fal_headers(
    key: Ed25519PrivateKey, body: bytes, rid: str = "r1", uid: str = "u1", ts: int | None = None
) -> dict[str, str]:
    stamp = str(ts if ts is not None else int(time.time()))
    msg = f"{rid}\n{uid}\n{stamp}\n{hashlib.sha256(body).hexdigest()}".encode()
    return {
        "X-Fal-Webhook-Request-Id": rid,
        "X-Fal-Webhook-User-Id": uid,
        "X-Fal-Webhook-Timestamp": stamp,
        "X-Fal-Webhook-Signature": key.sign(msg).hex(),
    }


async def test_fal_signed_callback_hints_the_job(tmp_path: Path, fal_key) -> None:
    key, jwks_url = fal_key
    store = JobStore(f"sqlite:///{tmp_path / 'j.db'}")
    job_id = running_job(store, "fal-queue", "req-123")
    body = json.dumps({"request_id": "req-123", "status": "OK", "payload": {}}).encode()
    async with httpx.AsyncClient() as client:
        h = CallbackHandler(
            store, client, token_secret="s", env={}, jwks_urls={"fal-queue": jwks_url}
        )
        result = await h.handle("fal-queue", fal_headers(key, body), body)
        assert result.job_id == job_id
        assert result.hinted
        # the callback said "OK" but the job's state is untouched: a poll decides
        assert store.get(job_id).state is JobState.RUNNING
        with pytest.raises(AuthFailed, match="does not verify"):
            await h.handle("fal-queue", fal_headers(Ed25519PrivateKey.generate(), body), body)
        with pytest.raises(AuthFailed, match="300 s"):
            await h.handle("fal-queue", fal_headers(key, body, ts=int(time.time()) - 1000), body)
        with pytest.raises(AuthFailed, match="does not verify"):
            await h.handle("fal-queue", fal_headers(key, body), body + b" ")
    store.close()


async def test_replicate_standard_webhooks_callback(tmp_path: Path) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'j.db'}")
    job_id = running_job(store, "replicate", "pred-9")
    secret = new_secret()
    body = json.dumps({"id": "pred-9", "status": "succeeded"}).encode()
    stamp = int(time.time())
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(secret, "msg_1", stamp, body),
    }
    async with httpx.AsyncClient() as client:
        h = CallbackHandler(
            store, client, token_secret="s", env={"REPLICATE_WEBHOOK_SECRET": secret}
        )
        assert (await h.handle("replicate", headers, body)).job_id == job_id
        with pytest.raises(AuthFailed):
            await h.handle("replicate", {**headers, "webhook-signature": "v1,AAAA"}, body)
    store.close()


async def test_unsigned_providers_need_the_url_token(tmp_path: Path) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'j.db'}")
    job_id = running_job(store, "kling", "task-7")
    body = json.dumps({"task_id": "task-7", "task_status": "succeed"}).encode()
    async with httpx.AsyncClient() as client:
        h = CallbackHandler(store, client, token_secret="secret-1", env={})
        with pytest.raises(AuthFailed, match="token"):
            await h.handle("kling", {}, body, token="guess")
        result = await h.handle("kling", {}, body, token=h.token("kling"))
        assert result.job_id == job_id
        # a protocol without callbacks, and a signed one without its secret, are refused
        with pytest.raises(InvalidRequest, match="no callbacks for 'runway'"):
            await h.handle("runway", {}, body, token=h.token("runway"))
        with pytest.raises(AuthFailed, match="set REPLICATE_WEBHOOK_SECRET"):
            await h.handle("replicate", {}, body)
        # a callback for a job we do not know is accepted and ignored
        other = json.dumps({"task_id": "nope"}).encode()
        assert (await h.handle("kling", {}, other, token=h.token("kling"))).job_id is None
    store.close()
