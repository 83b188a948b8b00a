"""Security at the service's edge: SSRF rules for every URL a caller gives us, webhooks that
never follow redirects, request size limits, and secrets that never leave."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from tests.server.conftest import TIME_SCALE, Server, ServerFactory, Tenant
from vidgate.catalog.loader import load_catalog
from vidgate.jobs import db
from vidgate.jobs.webhooks import verify
from vidgate.sandbox.app import LoopbackServer, SandboxServer
from vidgate.server.observability import JsonFormatter
from vidgate.settings import Credentials

# (url, a fragment the refusal must name)
INTERNAL_URLS = [
    ("http://127.0.0.1/frame.png", "loopback"),
    ("http://localhost:8080/frame.png", "loopback"),
    ("http://10.0.0.7/frame.png", "private"),
    ("http://192.168.1.20/frame.png", "private"),
    ("http://172.16.5.4/frame.png", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://100.64.0.1/frame.png", "100.64.0.0/10"),
    ("http://metadata.google.internal/computeMetadata/v1/", "cloud metadata"),
    ("http://instance-data/latest/", "cloud metadata"),
    ("http://[::1]/frame.png", "loopback"),
    ("http://[fd00:ec2::254]/latest/", "private"),
    ("http://[::ffff:127.0.0.1]/frame.png", "embedded in"),
    ("http://[::ffff:169.254.169.254]/latest/", "embedded in"),
    ("http://0x7f.1/frame.png", "loopback"),
    ("http://2130706433/frame.png", "loopback"),
    ("http://0177.0.0.1/frame.png", "loopback"),
    ("http://0.0.0.0/frame.png", "resolves to 0.0.0.0"),
]


# -- SSRF: every URL given to the API ---------------------------------------------------------


@pytest.mark.parametrize(("url", "why"), INTERNAL_URLS)
def test_internal_reference_urls_are_refused(
    server: Server, tenant: Tenant, url: str, why: str
) -> None:
    native = {
        "request": {
            "prompt": "animate this",
            "mode": "image-to-video",
            "references": [{"role": "first_frame", "url": url}],
        }
    }
    openai_body = {"prompt": "animate this", "input_reference": {"image_url": url}}
    with server.client(tenant) as c:
        r = c.post("/v1/jobs", json=native)
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "blocked_address"
        assert r.json()["detail"].startswith(f"reference url {url!r} is not allowed")
        assert why in r.json()["detail"]
        v = c.post("/v1/videos", json=openai_body)
        assert v.status_code == 400, v.text
        assert v.json()["error"]["code"] == "blocked_address"
        assert why in v.json()["error"]["message"]
        assert c.get("/v1/jobs").json()["data"] == []  # nothing was queued


@pytest.mark.parametrize(("url", "why"), INTERNAL_URLS)
def test_internal_webhook_urls_are_refused(
    server: Server, tenant: Tenant, url: str, why: str
) -> None:
    with server.client(tenant) as c:
        r = c.post("/v1/jobs", json={"request": {"prompt": "x"}, "webhook_url": url})
        assert r.status_code == 422, r.text
        assert r.json()["detail"].startswith(f"webhook_url {url!r} is not allowed")
        assert why in r.json()["detail"]
        v = c.post("/v1/videos", json={"prompt": "x", "vidgate": {"webhook_url": url}})
        assert v.status_code == 400, v.text
        assert why in v.json()["error"]["message"]
        assert c.get("/v1/jobs").json()["data"] == []


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "gopher://127.0.0.1:6379/_INFO", "ftp://example.com/x"]
)
def test_non_http_urls_are_refused(server: Server, tenant: Tenant, url: str) -> None:
    with server.client(tenant) as c:
        r = c.post("/v1/jobs", json={"request": {"prompt": "x"}, "webhook_url": url})
        assert r.status_code == 422
        scheme = url.split(":", 1)[0]
        assert f"url scheme {scheme!r} not allowed" in r.json()["detail"]
        ref = {"role": "first_frame", "url": url}
        r = c.post(
            "/v1/jobs",
            json={"request": {"prompt": "x", "mode": "image-to-video", "references": [ref]}},
        )
        assert r.status_code == 422
        assert "http(s)" in r.json()["detail"]


# -- webhooks never follow redirects -----------------------------------------------------------


@dataclass
class Receiver:
    """A webhook receiver on loopback, recording what it was sent."""

    server: LoopbackServer
    hits: list[dict[str, Any]] = field(default_factory=list)

    @property
    def host(self) -> str:
        return urlsplit(self.server.url).netloc


def receiver(redirect_to: str | None = None) -> Receiver:
    app = FastAPI()
    rec = Receiver(server=LoopbackServer(app))

    @app.post("/hook")
    async def hook(request: Request) -> Response:
        rec.hits.append({"headers": dict(request.headers), "body": await request.body()})
        if redirect_to is not None:
            return RedirectResponse(redirect_to, status_code=307)
        return Response(status_code=204)

    @app.api_route("/{path:path}", methods=["GET", "POST"])
    async def anything(request: Request, path: str) -> Response:
        rec.hits.append({"path": path, "body": await request.body()})
        return Response(status_code=204)

    rec.server.start()
    return rec


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    started: list[Receiver] = []
    yield started
    for r in started:
        r.server.stop()


def wait_outbox(server: Server, job_id: str, done: set[str], timeout_s: float = 30) -> list[Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        rows = server.gateway.store.outbox(job_id)
        if rows and all(r["state"] in done for r in rows):
            return rows
        assert time.monotonic() < deadline, rows
        time.sleep(0.05)


def test_a_webhook_redirect_to_a_private_address_is_never_followed(
    make_server: ServerFactory, receivers: list[Receiver]
) -> None:
    canary = receiver()  # an "internal" service the redirect points at
    receivers.append(canary)
    hook = receiver(redirect_to=f"{canary.server.url}/steal?token=1")
    receivers.append(hook)
    # only the receiver itself is allowed on loopback (as a development receiver would be)
    server = make_server(ssrf_allow_hosts=hook.host, webhook_retry_schedule_s="0.05")
    tenant = server.tenant()
    with server.client(tenant) as c:
        r = c.post(
            "/v1/jobs",
            json={"request": {"prompt": "x"}, "webhook_url": f"{hook.server.url}/hook"},
        )
    assert r.status_code == 202, r.text
    job = server.wait_job(tenant, r.json()["id"])
    assert job["state"] == "succeeded"
    rows = wait_outbox(server, job["id"], {"dead"})
    assert hook.hits  # the receiver was called (first try and the retry)...
    assert canary.hits == []  # ...and its redirect never was
    for row in rows:
        assert row["attempts"] == 2
        assert row["last_status"] is None
        assert "redirect" in row["last_error"]
        assert "not followed" in row["last_error"]


# -- size limits ---------------------------------------------------------------------------


def raw_http(url: str, head: str, chunks: list[bytes] = ()) -> tuple[int, bytes]:  # type: ignore[assignment]
    """Send a request by hand (headers, then exactly these bytes) and read the answer."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as s:
        s.sendall(head.encode())
        for chunk in chunks:
            s.sendall(chunk)
        data = b""
        while b"\r\n\r\n" not in data:
            more = s.recv(65536)
            if not more:
                break
            data += more
        head_end = data.index(b"\r\n\r\n")
        length = 0
        for line in data[:head_end].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = data[head_end + 4 :]
        while len(body) < length:
            more = s.recv(65536)
            if not more:
                break
            body += more
    return int(data.split(b" ", 2)[1]), body


def chunked(total: int, size: int = 1 << 20) -> list[bytes]:
    out = []
    left = total
    while left > 0:
        n = min(size, left)
        out.append(f"{n:x}\r\n".encode() + b"x" * n + b"\r\n")
        left -= n
    return out


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/videos"])
def test_declared_oversize_body_is_413_unread(server: Server, tenant: Tenant, path: str) -> None:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tenant.key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {64 * 1024 * 1024}\r\n\r\n"
    )
    status, body = raw_http(server.url, head)
    assert status == 413
    assert b"limited to" in body


@pytest.mark.parametrize(
    ("path", "limit"), [("/v1/jobs", 32 * 1024 * 1024), ("/v1/videos", 30 * 1024 * 1024)]
)
def test_chunked_oversize_body_is_413(
    server: Server, tenant: Tenant, path: str, limit: int
) -> None:
    """Without a Content-Length the limit still holds: the 413 comes as the limit is passed
    (the test sends one byte more than the limit and never finishes the body)."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tenant.key}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    status, body = raw_http(server.url, head, chunked(limit + 1))
    assert status == 413
    assert b"limited to" in body
    assert server.gateway.store.list(tenant=tenant.name) == []


def test_oversize_multipart_upload_is_413(server: Server, tenant: Tenant) -> None:
    with server.client(tenant) as c:
        r = c.post(
            "/v1/videos",
            data={"prompt": "x"},
            files={"input_reference": ("big.png", b"\x89PNG" + b"0" * (31 * 1024 * 1024))},
        )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "body_too_large"


def test_long_fields_are_4xx(server: Server, tenant: Tenant) -> None:
    with server.client(tenant) as c:
        r = c.post("/v1/jobs", json={"request": {"prompt": "x" * 8001}})
        assert r.status_code == 422
        assert "prompt" in r.json()["detail"]
        r = c.post("/v1/videos", json={"prompt": "x" * 8001})
        assert r.status_code == 400
        r = c.post(
            "/v1/jobs",
            json={"request": {"prompt": "x"}, "webhook_url": "https://e.com/" + "a" * 3000},
        )
        assert r.status_code == 422
        r = c.post(
            "/v1/jobs", json={"request": {"prompt": "x"}}, headers={"Idempotency-Key": "k" * 256}
        )
        assert r.status_code == 400
        assert "Idempotency-Key" in r.json()["detail"]


# -- secrets -------------------------------------------------------------------------------


def test_api_keys_are_stored_hashed(server: Server) -> None:
    tenant = server.tenant()
    k = db.api_keys
    with server.gateway.store.engine.connect() as conn:
        row = conn.execute(sa.select(k).where(k.c.id == tenant.key_id)).one()
        everything = json.dumps([dict(r._mapping) for r in conn.execute(sa.select(k))], default=str)
    assert tenant.key not in everything
    assert row.key_hash == hashlib.sha256(tenant.key.encode()).hexdigest()
    assert tenant.key.startswith(row.prefix)
    assert len(row.prefix) <= 10 < len(tenant.key) - 30  # the prefix names it, cannot use it


def test_no_secret_in_responses_logs_or_rows(
    make_server: ServerFactory,
    receivers: list[Receiver],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A real (not sandbox-mode) gateway whose providers are the emulator: the provider keys
    go over the wire to it, and must show up nowhere else — not in answers (including
    errors and failed jobs), not in logs, not in the database."""
    fal_secret = "fal-" + secrets.token_hex(16)
    luma_secret = "invalid-key"  # the emulator refuses it: jobs there fail with 401
    webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    emulator = SandboxServer(tmp_path / "providers", load_catalog(), time_scale=TIME_SCALE)
    emulator.start()
    hook = receiver()
    receivers.append(hook)
    logging.getLogger("uvicorn").addHandler(caplog.handler)
    caplog.set_level(logging.DEBUG)
    try:
        env = {
            "FAL_KEY": fal_secret,
            "VIDGATE_FAL_BASE_URL": f"{emulator.url}/fal-queue",
            "LUMAAI_API_KEY": luma_secret,
            "VIDGATE_LUMA_BASE_URL": f"{emulator.url}/luma/dream-machine/v1",
        }
        server = make_server(
            sandbox=False,
            credentials=Credentials(env),
            webhook_secret=webhook_secret,
            ssrf_allow_hosts=hook.host,
        )
        tenant = server.tenant()
        answers = exercise(server, tenant, f"{hook.server.url}/hook")
    finally:
        logging.getLogger("uvicorn").removeHandler(caplog.handler)
        emulator.stop()

    # the secrets were really in use: the emulator served fal with the key, and the
    # webhook receiver got events signed with the webhook secret
    assert answers["jobs"]["ok"]["state"] == "succeeded"
    assert answers["jobs"]["auth"]["error"]["code"] == "auth_failed"
    assert answers["jobs"]["unsafe"]["error"]["code"] == "content_rejected"
    signed = [h for h in hook.hits if "webhook-signature" in h.get("headers", {})]
    assert signed
    assert all(verify(webhook_secret, h["headers"], h["body"]) for h in signed)

    formatter = JsonFormatter()
    logs = "\n".join(formatter.format(r) + r.getMessage() for r in caplog.records)
    assert caplog.records  # the capture saw the server's logs
    with server.gateway.store.engine.connect() as conn:
        rows = json.dumps(
            {
                t.name: [dict(r._mapping) for r in conn.execute(sa.select(t))]
                for t in (db.jobs, db.outbox, db.ledger, db.idempotency, db.api_keys)
            },
            default=str,
        )
    answered = json.dumps(answers, default=str)
    for secret in (fal_secret, webhook_secret, webhook_secret.removeprefix("whsec_"), tenant.key):
        assert secret not in answered
        assert secret not in logs
        assert secret not in rows
    assert luma_secret not in answered  # the refused key is not echoed either
    assert luma_secret not in rows


def exercise(server: Server, tenant: Tenant, hook_url: str) -> dict[str, Any]:
    """Successful, failing and refused requests; every answer body, keyed by what it was."""
    out: dict[str, Any] = {"jobs": {}, "http": {}}
    with server.client(tenant) as c:
        submits = {
            "ok": {"request": {"prompt": "a fox", "duration_s": 5}, "webhook_url": hook_url},
            "auth": {"request": {"prompt": "a fox"}, "offerings": ["luma-ray-3-luma"]},
            "unsafe": {"request": {"prompt": "[unsafe] a fox"}, "offerings": ["pixverse-fal"]},
        }
        ids = {}
        for name, body in submits.items():
            r = c.post("/v1/jobs", json=body)
            out["http"][f"submit {name}"] = (r.status_code, r.text)
            ids[name] = r.json()["id"]
        for name, jid in ids.items():
            out["jobs"][name] = server.wait_job(tenant, jid)
            for path in (f"/v1/jobs/{jid}", f"/v1/videos/{jid}", f"/v1/jobs/{jid}/events"):
                r = c.get(path)
                out["http"][f"{name} {path}"] = (r.status_code, r.text)
        wait_outbox(server, ids["ok"], {"delivered"})
        probes = [
            ("GET", "/v1/videos/job_nope", None, None),
            ("POST", "/v1/jobs", b"{not json", None),
            ("POST", "/v1/videos", {"prompt": "x", "model": "nope"}, None),
            ("POST", "/v1/route", {"request": {"prompt": "x", "duration_s": 99}}, None),
            ("GET", "/v1/spend", None, None),
            ("GET", "/v1/models", None, None),
            ("GET", "/v1/jobs", None, "vg_wrong"),
            ("GET", "/metrics", None, None),
            ("GET", "/readyz", None, None),
            ("GET", "/openapi.json", None, None),
            ("POST", "/v1/callbacks/fal-queue", {"request_id": str(uuid.uuid4())}, None),
        ]
        for method, path, payload, key in probes:
            headers = {"authorization": f"Bearer {key}"} if key else {}
            kw: dict[str, Any] = (
                {"content": payload} if isinstance(payload, bytes) else {"json": payload}
            )
            r = c.request(method, path, headers=headers, **kw)
            out["http"][f"{method} {path}"] = (r.status_code, r.text)
    with httpx.Client(base_url=server.url) as anon:
        r = anon.get("/v1/jobs")
        out["http"]["anonymous"] = (r.status_code, r.text)
    return out
