"""Issue 12 through the real server: parsing limits (4xx, one sentence naming what is wrong,
never a 500), authentication before parsing on every /v1 route, key whitespace rules, and
owner-only files."""

from __future__ import annotations

import base64
import io
import json
import os
import stat
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi.routing import APIRoute
from openai.types import Video
from PIL import Image

from tests.server.conftest import Server, Tenant, sandbox_settings
from tests.server.media import png_bytes
from tests.server.test_security import raw_http
from vidgate.gateway import Gateway
from vidgate.server.guards import MAX_DEPTH, _bearer

JSON = {"content-type": "application/json"}


def message(r: httpx.Response) -> str:
    """The one-line message of an error answer (OpenAI envelope or problem+json)."""
    data = r.json()
    text: str = data["error"]["message"] if "error" in data else data["detail"]
    assert "\n" not in text
    return text


def png_data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and IHDR claiming a huge frame, with no pixels: what a
    decompression bomb looks like before it is decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def jpeg_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 36), (200, 10, 10)).save(out, format="JPEG")
    return out.getvalue()


DEEP = b"[" * 5000 + b"]" * 5000
HUGE_INT = b"9" * 400

# (body sent as raw JSON bytes, words the message must contain)
VIDEOS_CASES: dict[str, tuple[bytes, tuple[str, ...]]] = {
    "deep": (b'{"prompt": "x", "vidgate": {"metadata": ' + DEEP + b"}}", ("nested", "32")),
    "long-number": (b'{"prompt": "x", "seconds": ' + HUGE_INT + b"}", ("400 digits",)),
    "infinite": (b'{"prompt": "x", "seconds": 1e999}', ("out of range",)),
    "nan": (b'{"prompt": "x", "seconds": NaN}', ("NaN", "not a JSON number")),
    "seconds-true": (b'{"prompt": "x", "seconds": true}', ("seconds", "not true")),
    "seconds-words": (b'{"prompt": "x", "seconds": "eight"}', ("seconds", "'eight'")),
    "seconds-zero": (b'{"prompt": "x", "seconds": "0"}', ("seconds", "out of range")),
    "seconds-huge": (b'{"prompt": "x", "seconds": 86400}', ("seconds", "at most 120")),
    "seconds-object": (b'{"prompt": "x", "seconds": {"a": 1}}', ("seconds",)),
    "size-absurd": (b'{"prompt": "x", "size": "99999x99999"}', ("99999x99999", "at most")),
    "size-tiny": (b'{"prompt": "x", "size": "8x8"}', ("8x8", "smaller")),
    "size-words": (b'{"prompt": "x", "size": "big"}', ("'big'", "WIDTHxHEIGHT")),
    "size-number": (b'{"prompt": "x", "size": 1280}', ("1280", "WIDTHxHEIGHT")),
    "size-shape": (b'{"prompt": "x", "size": "3000x1000"}', ("3000x1000", "frame shape")),
    "model-long": (b'{"prompt": "x", "model": "' + b"m" * 500 + b'"}', ("model", "128")),
    "long-string": (
        b'{"prompt": "x", "vidgate": {"metadata": {"k": "' + b"v" * 70_000 + b'"}}}',
        ("string", "characters"),
    ),
    "many-items": (
        b'{"prompt": "x", "vidgate": {"hints": [' + b",".join([b'"a"'] * 1500) + b"]}}",
        ("1500 items",),
    ),
    "syntax": (b'{"prompt": "x",}', ("not valid JSON", "line 1, column 16")),
    "not-utf8": (b'{"prompt": "\xff\xfe"}', ("not valid JSON", "UTF-8")),
    "not-object": (b'["prompt"]', ("JSON object",)),
    "not-an-image": (
        json.dumps(
            {"prompt": "x", "input_reference": {"image_url": png_data_url(b"hello, world")}}
        ).encode(),
        ("input_reference", "not a PNG, JPEG, WebP or GIF image"),
    ),
    "truncated-image": (
        json.dumps(
            {"prompt": "x", "input_reference": {"image_url": png_data_url(png_bytes()[:60])}}
        ).encode(),
        ("input_reference",),
    ),
    "bomb-image": (
        json.dumps(
            {
                "prompt": "x",
                "input_reference": {"image_url": png_data_url(png_header_only(100_000, 100_000))},
            }
        ).encode(),
        ("input_reference",),
    ),
    "bad-base64": (
        b'{"prompt": "x", "input_reference": {"image_url": "data:image/png;base64,@@@@"}}',
        ("input_reference", "base64"),
    ),
}

JOBS_CASES: dict[str, tuple[bytes, tuple[str, ...]]] = {
    "deep": (b'{"request": {"prompt": "x", "metadata": ' + DEEP + b"}}", ("nested", "32")),
    "long-number": (b'{"request": {"prompt": "x", "duration_s": ' + HUGE_INT + b"}}", ("400",)),
    "long-seed": (b'{"request": {"prompt": "x", "seed": ' + HUGE_INT + b"}}", ("400 digits",)),
    "infinite": (b'{"request": {"prompt": "x", "duration_s": -1e999}}', ("out of range",)),
    "duration-true": (
        b'{"request": {"prompt": "x", "duration_s": true}}',
        ("request.duration_s", "not true"),
    ),
    "seed-false": (b'{"request": {"prompt": "x", "seed": false}}', ("request.seed", "not false")),
    "fps-true": (b'{"request": {"prompt": "x", "fps": true}}', ("request.fps", "not true")),
    "cost-true": (
        b'{"request": {"prompt": "x", "constraints": {"max_cost_usd": true}}}',
        ("max_cost_usd", "not true"),
    ),
    "policy-long": (
        b'{"request": {"prompt": "x"}, "policy": "' + b"p" * 500 + b'"}',
        ("policy", "64"),
    ),
    "offering-long": (
        b'{"request": {"prompt": "x"}, "offerings": ["' + b"o" * 500 + b'"]}',
        ("offerings",),
    ),
    "syntax": (b'{"request": {"prompt": "x",}}', ("not valid JSON", "line 1, column 28")),
    "not-object": (b"[1, 2]", ("must be a JSON object",)),
    "null": (b"null", ("must be a JSON object",)),
    "empty": (b"", ("is empty",)),
    "syntax-multiline": (b'{\n  "request": {\n    "prompt" "x"\n}}', ("line 3, column 14",)),
    "not-an-image": (
        json.dumps(
            {
                "request": {
                    "prompt": "x",
                    "mode": "image-to-video",
                    "references": [{"role": "first_frame", "url": png_data_url(b"just some text")}],
                }
            }
        ).encode(),
        ("request.references.0.url", "not a PNG"),
    ),
}


@pytest.mark.parametrize("case", sorted(VIDEOS_CASES))
def test_videos_parse_limits_are_4xx_with_a_sentence(
    server: Server, tenant: Tenant, case: str
) -> None:
    body, words = VIDEOS_CASES[case]
    with server.client(tenant) as c:
        r = c.post("/v1/videos", content=body, headers=JSON)
    assert r.status_code == 400, r.text
    text = message(r)
    for word in words:
        assert word in text, (case, text)
    assert "JSON decode error" not in text
    assert server.gateway.store.list(tenant=tenant.name) == []


@pytest.mark.parametrize("case", sorted(JOBS_CASES))
def test_jobs_parse_limits_are_4xx_with_a_sentence(
    server: Server, tenant: Tenant, case: str
) -> None:
    body, words = JOBS_CASES[case]
    with server.client(tenant) as c:
        r = c.post("/v1/jobs", content=body, headers=JSON)
        assert r.status_code in (400, 422), r.text
        text = message(r)
        for word in words:
            assert word in text, (case, text)
        if case in ("deep", "syntax", "long-number"):
            # the route preview takes the same body, and is guarded the same way
            r = c.post("/v1/route", content=body, headers=JSON)
            assert r.status_code == 400, r.text
    assert server.gateway.store.list(tenant=tenant.name) == []


def test_depth_limit_is_exact(server: Server, tenant: Tenant) -> None:
    """MAX_DEPTH levels pass the guard (and reach the route's own validation); one more
    does not."""

    def nested(levels: int) -> bytes:
        # the body and "request" are two levels; metadata fills the rest
        inner = levels - 3
        return (
            b'{"request": {"prompt": "x", "provider_options": {"a": '
            + b"[" * inner
            + b"]" * inner
            + b"}}}"
        )

    with server.client(tenant) as c:
        ok = c.post("/v1/route", content=nested(MAX_DEPTH), headers=JSON)
        deep = c.post("/v1/route", content=nested(MAX_DEPTH + 1), headers=JSON)
    assert "nested" not in ok.text
    assert ok.status_code < 500
    assert deep.status_code == 400
    assert "nested more than 32" in message(deep)


def test_multipart_upload_is_sniffed_by_content(server: Server, tenant: Tenant) -> None:
    """The OpenAI SDK's multipart upload: bytes that are not an image are refused whatever
    the part's content type says; a real image sent as octet-stream is taken, as PNG."""
    client = openai.OpenAI(base_url=server.api, api_key=tenant.key, max_retries=0, timeout=30)
    with pytest.raises(openai.BadRequestError) as bad:
        client.videos.create(
            prompt="x", input_reference=("frame.png", b"<html>not a png</html>", "image/png")
        )
    assert bad.value.code == "invalid_image"
    assert bad.value.param == "input_reference"
    assert "not a PNG, JPEG, WebP or GIF image" in bad.value.message

    image = png_bytes()
    created = client.videos.create(
        prompt="x", input_reference=("frame", image, "application/octet-stream")
    )
    job = server.gateway.store.get(created.id)
    assert job.request.references[0].url == png_data_url(image)


def test_data_url_mime_is_taken_from_the_bytes(server: Server, tenant: Tenant) -> None:
    """A JPEG declared as PNG reaches the provider as image/jpeg: the bytes decide."""
    jpeg = jpeg_bytes()
    body = {
        "request": {
            "prompt": "x",
            "mode": "image-to-video",
            "references": [{"role": "first_frame", "url": png_data_url(jpeg, "image/png")}],
        }
    }
    with server.client(tenant) as c:
        r = c.post("/v1/jobs", json=body)
    assert r.status_code == 202, r.text
    stored = server.gateway.store.get(r.json()["id"]).request.references[0].url
    assert stored == png_data_url(jpeg, "image/jpeg")


def test_openai_sdk_sees_parse_errors_as_bad_requests(server: Server, tenant: Tenant) -> None:
    client = openai.OpenAI(base_url=server.api, api_key=tenant.key, max_retries=0, timeout=30)
    with pytest.raises(openai.BadRequestError) as size:
        client.videos.create(prompt="x", size="99999x99999")  # type: ignore[arg-type]
    assert size.value.param == "size"
    assert "larger than any offering renders" in size.value.message
    with pytest.raises(openai.BadRequestError) as seconds:
        client.post("/videos", cast_to=Video, body={"prompt": "x", "seconds": True})
    assert seconds.value.param == "seconds"
    # a size the pinned offering cannot render is named against that offering
    pinned = next(iter(server.gateway.catalog.offerings.values()))
    largest = max(r.short_side for r in pinned.capabilities.resolutions)
    with pytest.raises(openai.BadRequestError) as too_big:
        client.videos.create(
            prompt="x",
            model=pinned.id,
            size=f"{largest * 4}x{largest * 2}",  # type: ignore[arg-type]
        )
    assert f"offering {pinned.id}" in too_big.value.message
    ok = client.videos.create(prompt="x", size="1280x720", seconds="4")
    assert ok.status == "queued"


# -- authentication before parsing ----------------------------------------------------------


def _api_routes(routes: list[Any], prefix: str = "") -> list[tuple[str, APIRoute]]:
    """(path prefix, route) of every endpoint, through included routers (which FastAPI
    keeps as routers of their own, not flattened into ``app.routes``)."""
    out: list[tuple[str, APIRoute]] = []
    for route in routes:
        if isinstance(route, APIRoute):
            out.append((prefix, route))
        elif hasattr(route, "original_router"):
            sub = prefix + getattr(route.include_context, "prefix", "")
            out += _api_routes(route.original_router.routes, sub)
        elif hasattr(route, "routes"):
            out += _api_routes(route.routes, prefix + getattr(route, "path", ""))
    return out


def v1_operations(server: Server) -> list[tuple[str, str]]:
    """Every (method, path) the app serves under /v1 but the provider callbacks, read from
    the app itself, so a route added later is covered without touching this test."""
    app = server.loopback.server.config.app
    ops: list[tuple[str, str]] = []
    seen: set[str] = set()
    for prefix, route in _api_routes(app.routes):
        full = prefix + route.path
        seen.add(full)
        if not full.startswith("/v1") or full.startswith("/v1/callbacks/"):
            continue
        path = full
        for name in route.param_convertors:
            path = path.replace("{" + name + "}", "job_0000")
        ops += [(m, path) for m in sorted((route.methods or set()) - {"HEAD"})]
    # the walk found every documented path (so it cannot silently miss a kind of route)
    assert set(app.openapi()["paths"]) <= seen
    return ops


def test_every_v1_route_authenticates_before_reading_the_body(
    server: Server, tenant: Tenant
) -> None:
    ops = v1_operations(server)
    assert ("POST", "/v1/jobs") in ops
    assert ("POST", "/v1/videos") in ops
    assert len(ops) >= 15
    bad_bodies = [
        b'{"request": ',  # not JSON
        DEEP,  # nested too deep
        b'{"seconds": ' + HUGE_INT + b"}",
    ]
    keys: list[dict[str, str]] = [
        {},
        {"authorization": "Bearer vg_not-a-real-key"},
        {"authorization": f"Basic {tenant.key}"},
        {"authorization": f"Bearer{tenant.key}"},
    ]
    with server.client() as c:
        for method, path in ops:
            for headers in keys:
                for body in bad_bodies:
                    r = c.request(method, path, content=body, headers={**JSON, **headers})
                    assert r.status_code == 401, (method, path, headers, r.text)
                    assert message(r).startswith(("send your vidgate key", "the API key"))
    # a body declared far over the limit is not even waited for: still 401 first
    head = (
        "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {64 * 1024 * 1024}\r\n\r\n"
    )
    status, body = raw_http(server.url, head)
    assert status == 401
    assert b"missing_api_key" in body


def test_callbacks_answer_401_or_403_never_5xx(idle_server: Server) -> None:
    """Forged or unsigned provider callbacks: 401 with one sentence that names no check;
    a valid token naming another provider's job: 403. The service has no worker: the test
    claims its own job, and a worker would race it for the claim."""
    server = idle_server
    from vidgate.jobs.callbacks import CallbackHandler
    from vidgate.types import Attempt, AttemptState, JobState

    gw = server.gateway
    tokens = CallbackHandler(gw.store, gw.client(), token_secret=gw.webhook_secret())
    with server.client() as c:
        answers = [
            c.post("/v1/callbacks/kling", json={"task_id": "t"}),
            c.post("/v1/callbacks/kling?token=guess", json={"task_id": "t"}),
            c.post(f"/v1/callbacks/kling?token={tokens.token('luma')}", json={"task_id": "t"}),
            c.post("/v1/callbacks/replicate", json={"id": "p"}),
            c.post(
                "/v1/callbacks/replicate",
                json={"id": "p"},
                headers={"webhook-id": "m", "webhook-timestamp": "1", "webhook-signature": "v1,x"},
            ),
            c.post("/v1/callbacks/fal-queue", json={"request_id": "r"}),
            c.post("/v1/callbacks/kling", content=DEEP, headers=JSON),
        ]
        for r in answers:
            assert r.status_code == 401, r.text
            assert r.json()["code"] == "invalid_signature"
            provider = r.request.url.path.rsplit("/", 1)[1]
            assert (
                message(r)
                == f"this {provider} callback is not signed as {provider} signs its callbacks"
            )

        # a luma job in flight; kling's valid token names it: 403, and no hint
        from tests.jobs.conftest import make_job

        job = make_job()
        gw.store.create(job)
        [claim] = gw.store.claim("w", job_id=job.id)
        claim.job.state = JobState.RUNNING
        claim.job.attempts.append(
            Attempt(
                n=1,
                offering_id="o",
                state=AttemptState.RUNNING,
                idempotency_key="k",
                started_at=job.created_at,
                estimated_cost_usd=0.1,
                provider_job={"protocol": "luma", "remote_id": "lu-77", "offering_id": "o"},
            )
        )
        gw.store.save(claim)
        other = c.post(
            f"/v1/callbacks/kling?token={tokens.token('kling')}", json={"task_id": "lu-77"}
        )
        assert other.status_code == 403, other.text
        own = c.post(f"/v1/callbacks/luma?token={tokens.token('luma')}", json={"id": "lu-77"})
        assert own.status_code == 202, own.text
        assert own.json() == {"accepted": True, "hinted": True}
        body = c.post(f"/v1/callbacks/luma?token={tokens.token('luma')}", content=DEEP)
        assert body.status_code in (400, 422)


# -- keys compared exactly -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("BEARER \t abc \t ", "abc"),
        ("Bearer\tabc", "abc"),
        ("Bearer abc\x0b", "abc\x0b"),  # a vertical tab is not RFC 9110 whitespace
        ("Bearer abc\x0c", "abc\x0c"),
        ("Bearer \u00a0abc", "\u00a0abc"),
        ("Bearer abc\u2028", "abc\u2028"),
        ("Bearer abc\r\n", "abc\r\n"),
        ("Bearerabc", ""),
        ("Basic abc", ""),
        ("Bearer ", ""),
    ],
)
def test_bearer_token_strips_only_sp_and_htab(header: str, token: str) -> None:
    assert _bearer(header) == token


def test_keys_with_other_whitespace_are_refused_over_http(server: Server, tenant: Tenant) -> None:
    # by hand: an HTTP client refuses to send a header value with trailing whitespace
    for ok in (f"Bearer {tenant.key}", f"bearer \t{tenant.key}\t ", f"Bearer\t{tenant.key}"):
        head = f"GET /v1/spend HTTP/1.1\r\nHost: x\r\nAuthorization: {ok}\r\n\r\n"
        status, body = raw_http(server.url, head)
        assert status == 200, (ok, body)
    with server.client() as c:
        # latin-1 bytes the HTTP parser lets through: part of the token, so not the key
        for extra in ("\u00a0", "\u0085", "."):
            for bad in (f"Bearer {tenant.key}{extra}", f"Bearer {extra}{tenant.key}"):
                r = c.get("/v1/spend", headers={"authorization": bad.encode("latin-1")})  # type: ignore[dict-item]
                assert r.status_code == 401, (bad, r.text)
                assert r.json()["code"] == "invalid_api_key"
    # control characters never reach us as a key: the HTTP parser refuses the request
    head = f"GET /v1/spend HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tenant.key}\x0b\r\n\r\n"
    status, _ = raw_http(server.url, head)
    assert status in (400, 401)


# -- owner-only files -------------------------------------------------------------------------


def test_database_and_secret_files_are_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask, under which files come out world-readable
    try:
        gw = Gateway(sandbox_settings(tmp_path / "home"))
        try:
            gw.accounts.create_key("perm-test")
            gw.webhook_secret()
            home = tmp_path / "home"
            files = ["vidgate.db", "webhook_secret"]
            files += [n for n in ("vidgate.db-wal", "vidgate.db-shm") if (home / n).exists()]
            assert "vidgate.db-wal" in files  # WAL mode: the log holds the same data
            for name in files:
                mode = stat.S_IMODE((home / name).stat().st_mode)
                assert mode == 0o600, (name, oct(mode))
        finally:
            gw.close()
    finally:
        os.umask(old)


# -- admin is the key's property ---------------------------------------------------------------


def test_keys_create_admin_flag_is_stored_on_the_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDGATE_")}
    env.update({"VIDGATE_HOME": str(tmp_path), "NO_COLOR": "1", "COLUMNS": "200"})

    def vidgate(*args: str) -> Any:
        proc = subprocess.run(
            [sys.executable, "-m", "vidgate", *args, "--json"],
            env=env,
            text=True,
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    admin = vidgate("keys", "create", "--tenant", "ops", "--admin")
    named = vidgate("keys", "create", "--tenant", "admin")
    assert admin["admin"] is True
    assert named["admin"] is False
    listed = {k["id"]: k["admin"] for k in vidgate("keys", "list")}
    assert listed == {admin["id"]: True, named["id"]: False}
    gw = Gateway(sandbox_settings(tmp_path))
    try:
        a, n = gw.accounts.authenticate(admin["key"]), gw.accounts.authenticate(named["key"])
        assert a is not None
        assert n is not None
        assert (a.tenant, a.admin) == ("ops", True)
        assert (n.tenant, n.admin) == ("admin", False)
    finally:
        gw.close()


def test_migration_keeps_existing_keys_non_admin(tmp_path: Path) -> None:
    """A database from before the admin flag: its keys (one of a tenant named "admin"
    included) come out of the upgrade as ordinary keys; the migrations have one head."""
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from sqlalchemy import text

    from vidgate.billing.accounts import Accounts, hash_key
    from vidgate.jobs import db
    from vidgate.jobs.store import JobStore

    url = f"sqlite:///{tmp_path / 'old.db'}"
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(db.__file__).parent / "migrations"))
    assert len(ScriptDirectory.from_config(cfg).get_heads()) == 1
    engine = db.make_engine(url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")  # the schema before 0004_key_admin
        conn.execute(
            text(
                "INSERT INTO api_keys (id, tenant, key_hash, prefix, revoked, created_at) "
                "VALUES ('key_old', 'admin', :h, 'vg_old', 0, '2026-01-01 00:00:00')"
            ),
            {"h": hash_key("vg_old-key")},
        )
    engine.dispose()
    store = JobStore(url)  # opening the store upgrades to head
    try:
        info = Accounts(store).authenticate("vg_old-key")
        assert info is not None
        assert (info.tenant, info.admin) == ("admin", False)
    finally:
        store.close()
