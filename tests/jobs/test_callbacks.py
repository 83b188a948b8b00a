"""Inbound callbacks: signatures checked (fal Ed25519 + JWKS, Replicate Standard Webhooks,
tokens for unsigned providers); a verified callback only hints the job to poll."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi import FastAPI

from tests.jobs.conftest import make_job
from vidgate.errors import InvalidRequest, ProviderUnavailable
from vidgate.jobs.callbacks import CallbackForbidden, CallbackHandler, CallbackUnauthorized
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


async def refused(caplog: pytest.LogCaptureFixture, call: Awaitable[object]) -> str:
    """Await a callback that must be refused: 401, one fixed sentence whatever failed (no
    hint for a forger); returns the reason, which only our log holds."""
    caplog.clear()
    with (
        caplog.at_level(logging.INFO, logger="vidgate.callbacks"),
        pytest.raises(CallbackUnauthorized) as refused,
    ):
        await call
    assert refused.value.http_status == 401
    assert re.fullmatch(
        r"this ([a-z-]+) callback is not signed as \1 signs its callbacks", (refused.value.message)
    )
    [record] = [r for r in caplog.records if r.getMessage() == "callback refused"]
    reason: str = record.reason  # type: ignore[attr-defined]
    assert reason not in refused.value.message
    return reason


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


async def test_fal_signed_callback_hints_the_job(
    tmp_path: Path, fal_key: tuple[Ed25519PrivateKey, str], caplog: pytest.LogCaptureFixture
) -> None:
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
        forged = fal_headers(Ed25519PrivateKey.generate(), body)
        assert "does not verify" in await refused(caplog, h.handle("fal-queue", forged, body))
        stale = fal_headers(key, body, ts=int(time.time()) - 1000)
        assert "300 s" in await refused(caplog, h.handle("fal-queue", stale, body))
        tampered = h.handle("fal-queue", fal_headers(key, body), body + b" ")
        assert "does not verify" in await refused(caplog, tampered)
        assert "missing" in await refused(caplog, h.handle("fal-queue", {}, body))
    store.close()


async def test_replicate_standard_webhooks_callback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
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
        bad = {**headers, "webhook-signature": "v1,AAAA"}
        assert "does not verify" in await refused(caplog, h.handle("replicate", bad, body))
    store.close()


async def test_unsigned_providers_need_the_url_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'j.db'}")
    job_id = running_job(store, "kling", "task-7")
    body = json.dumps({"task_id": "task-7", "task_status": "succeed"}).encode()
    async with httpx.AsyncClient() as client:
        h = CallbackHandler(store, client, token_secret="secret-1", env={})
        assert "token" in await refused(caplog, h.handle("kling", {}, body, token="guess"))
        assert "token" in await refused(caplog, h.handle("kling", {}, body, token="é" * 40))
        result = await h.handle("kling", {}, body, token=h.token("kling"))
        assert result.job_id == job_id
        # a protocol without callbacks, and a signed one without its secret, are refused
        with pytest.raises(InvalidRequest, match="no callbacks for 'runway'"):
            await h.handle("runway", {}, body, token=h.token("runway"))
        unset = h.handle("replicate", {}, body)
        assert "set REPLICATE_WEBHOOK_SECRET" in await refused(caplog, unset)
        # a callback for a job we do not know is accepted and ignored
        other = json.dumps({"task_id": "nope"}).encode()
        assert (await h.handle("kling", {}, other, token=h.token("kling"))).job_id is None
    store.close()


async def test_a_signed_callback_about_another_providers_job_is_403(tmp_path: Path) -> None:
    """A valid kling token naming a job luma runs: refused 403 (and the job is not hinted);
    the same id from luma itself is a hint."""
    store = JobStore(f"sqlite:///{tmp_path / 'j.db'}")
    job_id = running_job(store, "luma", "shared-1")
    async with httpx.AsyncClient() as client:
        h = CallbackHandler(store, client, token_secret="secret-1", env={})
        kling = json.dumps({"task_id": "shared-1"}).encode()
        with pytest.raises(CallbackForbidden) as forbidden:
            await h.handle("kling", {}, kling, token=h.token("kling"))
        assert forbidden.value.http_status == 403
        assert "shared-1" not in forbidden.value.message
        luma = json.dumps({"id": "shared-1", "state": "completed"}).encode()
        result = await h.handle("luma", {}, luma, token=h.token("luma"))
        assert (result.job_id, result.hinted) == (job_id, True)
    store.close()


async def test_a_key_server_outage_is_503_not_401(tmp_path: Path) -> None:
    """The provider's JWKS unreachable is an upstream outage (retry later), not a forgery."""
    store = JobStore(f"sqlite:///{tmp_path / 'j.db'}")
    body = b'{"request_id": "r"}'
    async with httpx.AsyncClient() as client:
        h = CallbackHandler(
            store,
            client,
            token_secret="s",
            env={},
            jwks_urls={"fal-queue": "http://127.0.0.1:9/.well-known/jwks.json"},
        )
        with pytest.raises(ProviderUnavailable) as down:
            await h.handle("fal-queue", fal_headers(Ed25519PrivateKey.generate(), body), body)
        assert down.value.http_status == 503
    store.close()
