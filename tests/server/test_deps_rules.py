"""The server's rules as a caller meets them, at their exact limits: keys and rates, the
tenant's job cap, pinned offerings, reference and webhook URLs, inline references, the
Idempotency-Key, and the gate's JSON limits and image checks (each a 4xx whose sentence says
which rule refused the request)."""

from __future__ import annotations

import base64
import io
import json
import uuid
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.server.conftest import Server
from vidgate.server import guards, images
from vidgate.server.deps import MAX_REFERENCE_BYTES
from vidgate.server.errors import ApiError

JOB = {"request": {"prompt": "a calm lake"}}


def detail(r: httpx.Response) -> str:
    data = r.json()
    text: str = data["error"]["message"] if "error" in data else data["detail"]
    return text


def image(fmt: str, size: tuple[int, int] = (16, 9), mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size).save(out, format=fmt)
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- keys and rates -------------------------------------------------------------------------


def test_a_request_without_a_key_is_told_how_to_send_one(idle_server: Server) -> None:
    with idle_server.client() as c:
        r = c.get("/v1/jobs")
    assert r.status_code == 401
    assert r.json()["code"] == "missing_api_key"
    assert detail(r) == (
        "send your vidgate key as 'Authorization: Bearer vg_...' "
        "(create one with `vidgate keys create --tenant NAME`)"
    )


def test_an_unknown_key_is_401_every_time(idle_server: Server) -> None:
    with idle_server.client() as c:
        bad = {"authorization": "Bearer vg_not_a_key"}
        answers = [c.get("/v1/jobs", headers=bad) for _ in range(2)]  # the second: cached
    for r in answers:
        assert r.status_code == 401
        assert r.json()["code"] == "invalid_api_key"
        assert detail(r) == "the API key is not valid (or was revoked)"


def test_a_keys_rate_is_exact(idle_server: Server) -> None:
    tenant = idle_server.tenant("rpm", rpm=3)
    with idle_server.client(tenant) as c:
        answers = [c.get("/v1/jobs") for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    refused = answers[-1]
    assert refused.json()["code"] == "rate_limited"
    assert refused.headers["retry-after"] == "60"
    assert detail(refused) == "this key is limited to 3 requests/minute"


def test_a_key_without_a_rate_is_not_limited(idle_server: Server) -> None:
    tenant = idle_server.tenant("free")
    with idle_server.client(tenant) as c:
        assert {c.get("/v1/jobs").status_code for _ in range(5)} == {200}


# -- the tenant's cap on running jobs ---------------------------------------------------------


@pytest.mark.parametrize("cap", [1, 2])
def test_the_job_cap_is_exact(idle_server: Server, cap: int) -> None:
    tenant = idle_server.tenant("cap", max_jobs=cap)
    with idle_server.client(tenant) as c:
        answers = [c.post("/v1/jobs", json=JOB) for _ in range(cap + 1)]
    assert [r.status_code for r in answers] == [202] * cap + [429]
    refused = answers[-1]
    assert refused.json()["code"] == "too_many_jobs"
    assert refused.headers["retry-after"] == "5"
    assert detail(refused) == (
        f"tenant {tenant.name} already has {cap} jobs running (its cap); wait for one to finish"
    )


def test_a_tenant_without_a_cap_is_admitted(idle_server: Server) -> None:
    tenant = idle_server.tenant("nocap")
    with idle_server.client(tenant) as c:
        assert [c.post("/v1/jobs", json=JOB).status_code for _ in range(3)] == [202] * 3


# -- pinned offerings ----------------------------------------------------------------------


def test_an_unknown_offering_names_the_nearest(idle_server: Server) -> None:
    tenant = idle_server.tenant()
    known = sorted(idle_server.gateway.catalog.offerings)[0]
    typo = known[:-1] + ("x" if known[-1] != "x" else "y")
    with idle_server.client(tenant) as c:
        near = c.post("/v1/jobs", json={**JOB, "offerings": [known, typo]})
        far = c.post("/v1/jobs", json={**JOB, "offerings": ["zz-qq-00"]})
    assert near.status_code == 422
    assert detail(near) == (
        f"unknown offering {typo!r}; did you mean {known!r}? GET /v1/models lists them"
    )
    assert far.status_code == 422
    assert detail(far) == "unknown offering 'zz-qq-00'; GET /v1/models lists them"


def test_known_offerings_are_accepted(idle_server: Server) -> None:
    tenant = idle_server.tenant()
    known = sorted(idle_server.gateway.catalog.offerings)[0]
    with idle_server.client(tenant) as c:
        r = c.post("/v1/jobs", json={**JOB, "offerings": [known]})
    assert r.status_code in (202, 422), r.text
    assert "unknown offering" not in r.text


# -- reference and webhook URLs ------------------------------------------------------------


def test_a_refused_reference_names_the_field_the_url_and_the_rule(idle_server: Server) -> None:
    tenant = idle_server.tenant()
    url = "http://[::ffff:10.0.0.1]/a.png"
    body = {
        "request": {
            "prompt": "x",
            "mode": "image-to-video",
            "references": [{"role": "first_frame", "url": url}],
        }
    }
    with idle_server.client(tenant) as c:
        r = c.post("/v1/jobs", json=body)
    assert r.status_code == 422
    assert r.json()["code"] == "blocked_address"
    assert detail(r) == (
        f"reference url {url!r} is not allowed: ::ffff:10.0.0.1 resolves to ::ffff:a00:1, "
        "which is private (embedded in ::ffff:a00:1)"
    )


def test_a_public_reference_url_is_passed_on(idle_server: Server) -> None:
    tenant = idle_server.tenant()
    url = "https://93.184.216.34/still.png"
    body = {
        "request": {
            "prompt": "x",
            "mode": "image-to-video",
            "references": [{"role": "first_frame", "url": url}],
        }
    }
    with idle_server.client(tenant) as c:
        r = c.post("/v1/jobs", json=body)
    assert r.status_code == 202, r.text


def _webhook_of_length(n: int) -> str:
    base = "https://93.184.216.34/hook?pad="
    return base + "a" * (n - len(base))


def test_the_webhook_url_length_limit_is_exact(idle_server: Server) -> None:
    tenant = idle_server.tenant()
    with idle_server.client(tenant) as c:
        ok = c.post(
            "/v1/videos", json={"prompt": "x", "vidgate": {"webhook_url": _webhook_of_length(2048)}}
        )
        long = c.post(
            "/v1/videos", json={"prompt": "x", "vidgate": {"webhook_url": _webhook_of_length(2049)}}
        )
    assert ok.status_code == 200, ok.text
    assert long.status_code == 400
    assert detail(long) == "webhook_url is at most 2048 characters"


def test_a_refused_webhook_names_the_field(idle_server: Server) -> None:
    tenant = idle_server.tenant()
    with idle_server.client(tenant) as c:
        r = c.post("/v1/jobs", json={**JOB, "webhook_url": "http://user:pw@93.184.216.34/h"})
    assert r.status_code == 422
    assert detail(r) == (
        "webhook_url 'http://user:pw@93.184.216.34/h' is not allowed: "
        "urls with credentials (user:pass@) are not allowed"
    )


# -- inline (data:) references ---------------------------------------------------------------

_LIMIT = MAX_REFERENCE_BYTES * 4 // 3 + 100  # base64 of 20 MiB, plus the header


def _inline_job(url: str, kind: str = "image") -> dict[str, Any]:
    ref = {"role": "first_frame", "kind": kind, "url": url}
    return {"request": {"prompt": "x", "mode": "image-to-video", "references": [ref]}}


@pytest.mark.parametrize(("extra", "refused"), [(0, False), (1, True)])
def test_the_inline_reference_limit_is_exact(
    idle_server: Server, extra: int, refused: bool
) -> None:
    tenant = idle_server.tenant()
    head = "data:image/png;base64,"
    url = head + "A" * (_LIMIT + extra - len(head))
    with idle_server.client(tenant, timeout=120) as c:
        r = c.post("/v1/jobs", json=_inline_job(url))
    if refused:
        assert r.status_code == 422, r.text
        assert detail(r) == f"inline reference is over {MAX_REFERENCE_BYTES} bytes"
    else:  # within the limit: judged by its bytes instead
        assert r.status_code == 400, r.text
        assert detail(r).startswith("request.references.0.url: the image is ")


def test_an_inline_image_is_sent_on_with_the_type_its_bytes_show(idle_server: Server) -> None:
    tenant = idle_server.tenant()
    png = image("PNG")
    with idle_server.client(tenant) as c:
        r = c.post("/v1/jobs", json=_inline_job(f"data:text/plain;base64,{b64(png)}"))
        assert r.status_code == 202, r.text
        job = idle_server.gateway.store.get(r.json()["id"])
    assert job is not None
    assert job.request.references[0].url == f"data:image/png;base64,{b64(png)}"


def test_an_inline_audio_reference_is_not_judged_as_an_image(idle_server: Server) -> None:
    tenant = idle_server.tenant()
    url = "data:audio/wav;base64," + b64(b"RIFF....WAVEfmt ")
    with idle_server.client(tenant) as c:
        r = c.post("/v1/jobs", json=_inline_job(url, kind="audio"))
    assert "not a PNG" not in r.text


# -- Idempotency-Key -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "ok"),
    [("k" * 255, True), ("k", True), ("k" * 256, False), ("a\tb", False), ("", False)],
)
def test_idempotency_key_rules(idle_server: Server, key: str, ok: bool) -> None:
    tenant = idle_server.tenant()
    with idle_server.client(tenant) as c:
        r = c.post("/v1/jobs", json=JOB, headers={"Idempotency-Key": key})
    if ok:
        assert r.status_code == 202, r.text
    else:
        assert r.status_code == 400
        assert r.json()["code"] == "invalid_idempotency_key"
        assert detail(r) == "Idempotency-Key is 1-255 printable characters"


def test_an_empty_idempotency_key_never_replays_another_job(idle_server: Server) -> None:
    # an empty key used to reach the job store as the key "": the second request, whatever
    # its body, was answered with the first one's job
    tenant = idle_server.tenant()
    with idle_server.client(tenant) as c:
        a = c.post("/v1/jobs", json=JOB, headers={"Idempotency-Key": ""})
        b = c.post(
            "/v1/jobs", json={"request": {"prompt": "other"}}, headers={"Idempotency-Key": ""}
        )
    assert (a.status_code, b.status_code) == (400, 400)
    assert idle_server.gateway.store.list(tenant=tenant.name) == []


def test_a_refusal_about_the_request_is_replayed(idle_server: Server) -> None:
    tenant = idle_server.tenant()
    key = str(uuid.uuid4())
    body = {**JOB, "offerings": ["zz-qq-00"]}
    with idle_server.client(tenant) as c:
        first = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
        again = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 422
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["content-type"] == "application/problem+json"
    assert again.json() == first.json()


def test_a_cap_refusal_is_not_stored(idle_server: Server) -> None:
    tenant = idle_server.tenant("capidem", max_jobs=1)
    key = str(uuid.uuid4())
    with idle_server.client(tenant) as c:
        assert c.post("/v1/jobs", json=JOB).status_code == 202
        first = c.post("/v1/jobs", json=JOB, headers={"Idempotency-Key": key})
        again = c.post("/v1/jobs", json=JOB, headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 429
    assert "idempotent-replayed" not in again.headers


# -- the gate: JSON limits, exactly --------------------------------------------------------


def _refusal(raw: bytes | str) -> str:
    with pytest.raises(ApiError) as info:
        guards.parse_json(raw)
    assert info.value.status == 400
    assert info.value.code == "invalid_json"
    return info.value.message


def test_integer_digits_limit_is_exact() -> None:
    assert guards.parse_json("9" * 20) == int("9" * 20)
    assert guards.parse_json("-" + "9" * 20) == -int("9" * 20)
    assert _refusal("9" * 21) == "a number in the request has 21 digits; integers have at most 20"
    assert _refusal("-" + "9" * 21) == (
        "a number in the request has 21 digits; integers have at most 20"
    )


def test_number_length_limit_is_exact() -> None:
    forty = "0." + "1" * 38
    assert guards.parse_json(forty) == float(forty)
    assert _refusal(forty + "1") == (
        "a number in the request is 41 characters long; numbers have at most 40"
    )


@pytest.mark.parametrize("text", ["1e999", "-1e999"])
def test_infinite_numbers_are_refused(text: str) -> None:
    assert _refusal(text) == f"the number {text} is out of range; use a finite number"


def test_the_out_of_range_message_shows_20_characters() -> None:
    text = "1" + "0" * 20 + ".5e999"
    assert _refusal(text) == f"the number {text[:20]} is out of range; use a finite number"


@pytest.mark.parametrize("word", ["NaN", "Infinity", "-Infinity"])
def test_non_numbers_are_refused(word: str) -> None:
    assert _refusal(f"[{word}]") == f"{word} is not a JSON number; use a finite number"


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_depth_limit_is_exact() -> None:
    assert guards.parse_json(_nested(32)) is not None
    assert guards.parse_json('{"a": ' * 31 + "1" + "}" * 31) is not None
    assert _refusal(_nested(33)) == "the request body is nested more than 32 levels deep"
    assert _refusal('{"a": ' * 33 + "1" + "}" * 33) == (
        "the request body is nested more than 32 levels deep"
    )


def test_a_decoder_deep_document_is_refused_as_too_deep() -> None:
    assert _refusal(_nested(200_000)) == "the request body is nested more than 32 levels deep"


def test_the_document_is_named_in_messages() -> None:
    with pytest.raises(ApiError) as info:
        guards.parse_json(_nested(33), "the metadata")
    assert info.value.message == "the metadata is nested more than 32 levels deep"


def test_item_limits_are_exact() -> None:
    assert len(guards.parse_json(json.dumps([0] * 1000))) == 1000
    assert len(guards.parse_json(json.dumps({str(i): 0 for i in range(1000)}))) == 1000
    assert _refusal(json.dumps([0] * 1001)) == (
        "an array has 1001 items in the request body; at most 1000"
    )
    assert _refusal(json.dumps({str(i): 0 for i in range(1001)})) == (
        "an object has 1001 items in the request body; at most 1000"
    )
    # inside other containers too
    assert _refusal(json.dumps({"a": [{"b": [0] * 1001}]})).startswith("an array has 1001")


def test_key_length_limit_is_exact() -> None:
    assert guards.parse_json(json.dumps({"k" * 256: 1})) == {"k" * 256: 1}
    assert _refusal(json.dumps({"x": {"k" * 257: 1}})) == (
        "a key in the request body is over 256 characters"
    )


def test_string_length_limits_are_exact() -> None:
    limit = guards.MAX_STRING_CHARS
    assert guards.parse_json(json.dumps({"a": ["s" * limit]})) == {"a": ["s" * limit]}
    assert _refusal(json.dumps({"a": ["s" * (limit + 1)]})) == (
        f"a string in the request body is {limit + 1} characters long; strings have at "
        f"most {limit} (data: URLs {guards.MAX_DATA_URL_CHARS})"
    )
    data = "data:image/png;base64," + "A" * (guards.MAX_DATA_URL_CHARS - 22)
    assert guards.parse_json(json.dumps([data])) == [data]
    assert _refusal(json.dumps([data + "A"])).startswith(
        f"a string in the request body is {guards.MAX_DATA_URL_CHARS + 1} characters long"
    )


def test_syntax_errors_say_where() -> None:
    assert _refusal('{"a": 1,}') == (
        "the request body is not valid JSON: illegal trailing comma before end of object "
        "at line 1, column 8"
    ) or _refusal('{"a": 1,}').startswith("the request body is not valid JSON: ")
    assert _refusal('{\n "a" 1}') == (
        "the request body is not valid JSON: expecting ':' delimiter at line 2, column 6"
    )
    assert _refusal(b'{"a": "\xff"}') == "the request body is not valid JSON: it is not UTF-8 text"


# -- the gate over HTTP: what is parsed, and how much is read ---------------------------------


def _deep_body() -> bytes:
    return ('{"request": {"prompt": "x", "metadata": ' + _nested(40) + "}}").encode()


@pytest.mark.parametrize(
    "ctype",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/vnd.x+json",
        None,
    ],
)
def test_json_bodies_are_checked_by_the_gate(idle_server: Server, ctype: str | None) -> None:
    tenant = idle_server.tenant()
    headers = {"content-type": ctype} if ctype else {}
    with idle_server.client(tenant) as c:
        req = c.build_request("POST", "/v1/jobs", content=_deep_body(), headers=headers)
        assert ("content-type" in req.headers) == (ctype is not None)
        r = c.send(req)
    assert r.status_code == 400, r.text
    assert detail(r) == "the request body is nested more than 32 levels deep"


@pytest.mark.parametrize("ctype", ["text/plain", "application/xml", "json/application"])
def test_other_bodies_are_left_to_the_route(idle_server: Server, ctype: str) -> None:
    tenant = idle_server.tenant()
    with idle_server.client(tenant) as c:
        r = c.post("/v1/jobs", content=_deep_body(), headers={"content-type": ctype})
    assert "nested more than 32" not in r.text


def test_get_bodies_are_not_read_by_the_gate(idle_server: Server) -> None:
    tenant = idle_server.tenant()
    with idle_server.client(tenant) as c:
        r = c.request("GET", "/v1/jobs", content=_deep_body())
    assert r.status_code == 200


def test_callbacks_are_not_authenticated_by_key_nor_parsed(idle_server: Server) -> None:
    with idle_server.client() as c:
        r = c.post("/v1/callbacks/sandbox", content=_deep_body())
    assert r.status_code != 400 or "nested" not in r.text
    assert "missing_api_key" not in r.text


async def _through_gate(
    scope_type: str, content_length: bytes | None, max_bytes: int = 10
) -> tuple[int, bytes, bool]:
    """One request through the Gate on a path outside /v1 (no key needed there): the status
    the client gets, the body, and whether the app behind the gate saw the request."""
    seen: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(True)
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    headers = [(b"content-length", content_length)] if content_length is not None else []
    scope = {
        "type": scope_type,
        "method": "POST",
        "path": "/upload",
        "raw_path": b"/upload",
        "query_string": b"",
        "headers": headers,
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await guards.Gate(app, max_bytes=max_bytes)(scope, receive, send)
    status = next((m["status"] for m in sent if m["type"] == "http.response.start"), 0)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body, bool(seen)


async def test_the_declared_length_limit_is_exact() -> None:
    assert await _through_gate("http", b"10") == (204, b"", True)
    assert await _through_gate("http", None) == (204, b"", True)
    status, body, seen = await _through_gate("http", b"11")
    assert (status, seen) == (413, False)
    assert json.loads(body)["detail"] == "request bodies are limited to 10 bytes"


async def test_a_non_numeric_content_length_is_413_unread() -> None:
    status, body, seen = await _through_gate("http", b"1e3")
    assert (status, seen) == (413, False)
    assert json.loads(body)["code"] == "body_too_large"


async def test_non_http_traffic_passes_the_gate() -> None:
    assert (await _through_gate("lifespan", b"99"))[2] is True


def test_the_videos_body_limit_is_exact(idle_server: Server) -> None:
    tenant = idle_server.tenant()
    limit = guards.BODY_LIMITS["/v1/videos"]

    def chunks(n: int) -> Any:
        yield b" " * n  # whitespace: valid JSON padding would be parsed; this is refused as empty

    with idle_server.client(tenant, timeout=120) as c:
        over = c.post(
            "/v1/videos", content=chunks(limit + 1), headers={"content-type": "application/json"}
        )
        at = c.post(
            "/v1/videos", content=chunks(limit), headers={"content-type": "application/json"}
        )
    assert over.status_code == 413
    assert detail(over) == f"request bodies are limited to {limit} bytes"
    assert at.status_code != 413


# -- images: judged by their bytes ---------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "mime"),
    [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp"), ("GIF", "image/gif")],
)
def test_each_taken_format_is_named_by_its_bytes(fmt: str, mime: str) -> None:
    data = image(fmt)
    assert images.sniff(data, "p") == mime
    assert images.data_url(data, "p") == f"data:{mime};base64,{b64(data)}"
    assert images.checked_data_url(f"data:text/plain;base64,{b64(data)}", "p") == (
        f"data:{mime};base64,{b64(data)}"
    )
    same = f"data:{mime};base64,{b64(data)}"
    assert images.checked_data_url(same, "p") == same


def _image_refusal(data: bytes, param: str = "input_reference") -> str:
    with pytest.raises(ApiError) as info:
        images.sniff(data, param)
    assert info.value.status == 400
    assert info.value.code == "invalid_image"
    assert info.value.param == param
    return info.value.message


def test_the_side_limit_is_exact() -> None:
    assert images.sniff(image("PNG", (8192, 1), "1"), "p") == "image/png"
    assert images.sniff(image("PNG", (1, 8192), "1"), "p") == "image/png"
    assert _image_refusal(image("PNG", (8193, 1), "1")) == (
        "input_reference: the image is 8193x1; each side is at most 8192 pixels"
    )
    assert _image_refusal(image("PNG", (1, 8193), "1")) == (
        "input_reference: the image is 1x8193; each side is at most 8192 pixels"
    )


def test_the_byte_limit_is_exact() -> None:
    limit = images.MAX_IMAGE_BYTES
    assert _image_refusal(b"\0" * (limit + 1)) == (
        f"input_reference: the image is {limit + 1} bytes; at most {limit}"
    )
    assert _image_refusal(b"\0" * limit) == (
        "input_reference: the bytes are not a PNG, JPEG, WebP or GIF image"
    )


def test_empty_bmp_truncated_and_bomb_images_each_say_why() -> None:
    assert _image_refusal(b"", "request.references.0.url") == (
        "request.references.0.url: the image is empty; send a PNG, JPEG, WebP or GIF image"
    )
    assert _image_refusal(image("BMP")) == (
        "input_reference: the bytes are not a PNG, JPEG, WebP or GIF image"
    )
    assert _image_refusal(image("PNG", (64, 64))[:80]) == (
        "input_reference: the image is corrupt or truncated; send a whole PNG, JPEG, WebP or "
        "GIF image"
    )


def test_a_decompression_bomb_is_refused_before_decoding() -> None:
    big = image("PNG", (10_000, 10_000), "1")  # 100 Mpixels: Pillow's bomb warning
    assert _image_refusal(big) == (
        "input_reference: the bytes are not a PNG, JPEG, WebP or GIF image"
    )


@pytest.mark.parametrize(
    "url",
    [
        "image/png;base64,AAAA",
        "data:image/png,AAAA",
        "data:image/png;base64AAAA",
        "xdata:a;base64,AA",
    ],
)
def test_malformed_data_urls_are_refused(url: str) -> None:
    with pytest.raises(ApiError) as info:
        images.decode_data_url(url, "p")
    assert info.value.message == "p: a data: URL is data:<mime>;base64,<base64 bytes>"


def test_data_url_payload_must_be_base64() -> None:
    with pytest.raises(ApiError) as info:
        images.decode_data_url("data:image/png;base64,@@@@", "p")
    assert info.value.message == "p: the data: URL's payload is not valid base64"
    with pytest.raises(ApiError) as info:  # a comma inside the payload is the payload's
        images.decode_data_url("data:image/png;base64,AAAA,AAAA", "p")
    assert info.value.message == "p: the data: URL's payload is not valid base64"
    with pytest.raises(ApiError) as info:
        images.data_url(b"not an image", "upload")
    assert info.value.message == "upload: the bytes are not a PNG, JPEG, WebP or GIF image"
    assert images.decode_data_url("data:IMAGE/PNG;base64,AAAA", "p") == ("image/png", b"\0\0\0")


# -- the upload route reads its body up to its own limit -----------------------------------


def _upload_head(server: Server, key: str, length: int) -> bytes:
    return (
        f"POST /v1/videos HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def _answer(server: Server, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=20) as s:
        s.sendall(head)
        s.sendall(body)
        data = b""
        while b"\r\n\r\n" not in data or len(data) < _length(data):
            more = s.recv(65536)
            if not more:
                break
            data += more
    return int(data.split(b" ", 2)[1]), data


def _length(data: bytes) -> int:
    """Bytes of the whole answer: its head, and the body its Content-Length declares."""
    head, _, _ = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(head) + 4 + int(value)
    return len(head) + 4


def test_an_upload_declared_over_the_limit_is_413_before_its_body(idle_server: Server) -> None:
    tenant = idle_server.tenant()
    limit = guards.BODY_LIMITS["/v1/videos"]
    # no body is sent: the answer can only come from the declared length
    status, data = _answer(idle_server, _upload_head(idle_server, tenant.key, limit + 1))
    assert status == 413
    assert f"request bodies are limited to {limit} bytes".encode() in data


def test_an_upload_declared_at_the_limit_is_read(idle_server: Server) -> None:
    tenant = idle_server.tenant()
    limit = guards.BODY_LIMITS["/v1/videos"]
    status, _ = _answer(idle_server, _upload_head(idle_server, tenant.key, limit), b"x" * limit)
    assert status != 413


# -- the gate: which requests it checks ----------------------------------------------------


def test_the_api_root_needs_a_key_too(idle_server: Server) -> None:
    with idle_server.client() as c:
        r = c.get("/v1")
    assert r.status_code == 401
    assert r.json()["code"] == "missing_api_key"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_every_body_method_is_checked(idle_server: Server, method: str) -> None:
    tenant = idle_server.tenant()
    with idle_server.client(tenant) as c:
        r = c.request(method, "/v1/jobs/job_x", content=_deep_body())
    assert r.status_code == 400, r.text
    assert detail(r) == "the request body is nested more than 32 levels deep"


def test_a_json_type_with_several_parameters_is_checked(idle_server: Server) -> None:
    tenant = idle_server.tenant()
    ctype = "application/json; charset=utf-8; profile=x"
    with idle_server.client(tenant) as c:
        r = c.post("/v1/jobs", content=_deep_body(), headers={"content-type": ctype})
    assert r.status_code == 400, r.text
    assert detail(r) == "the request body is nested more than 32 levels deep"


def test_the_request_size_limit_is_exact(idle_server: Server) -> None:
    tenant = idle_server.tenant()
    limit = guards.MAX_REQUEST_BYTES
    head = (
        f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tenant.key}\r\n"
        "Content-Type: application/json\r\nContent-Length: {n}\r\n\r\n"
    )
    status, data = _answer(idle_server, head.replace("{n}", str(limit + 1)).encode())
    assert status == 413
    assert f"request bodies are limited to {limit} bytes".encode() in data
    status, _ = _answer(idle_server, head.replace("{n}", str(limit)).encode(), b" " * limit)
    assert status != 413


def test_a_chunked_upload_over_the_limit_is_413(idle_server: Server) -> None:
    tenant = idle_server.tenant()
    limit = guards.BODY_LIMITS["/v1/videos"]

    def body() -> Any:  # no Content-Length: only counting the bytes can stop it
        for _ in range(limit // (1 << 20)):
            yield b"x" * (1 << 20)
        yield b"x" * (limit % (1 << 20) + 1)

    with idle_server.client(tenant, timeout=120) as c:
        r = c.post(
            "/v1/videos",
            content=body(),
            headers={"content-type": "multipart/form-data; boundary=b"},
        )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "body_too_large"
    assert detail(r) == f"request bodies are limited to {limit} bytes"


def test_a_reused_key_with_another_body_says_so(idle_server: Server) -> None:
    tenant = idle_server.tenant()
    key = str(uuid.uuid4())
    with idle_server.client(tenant) as c:
        assert c.post("/v1/jobs", json=JOB, headers={"Idempotency-Key": key}).status_code == 202
        r = c.post("/v1/jobs", json={"request": {"prompt": "b"}}, headers={"Idempotency-Key": key})
    assert r.status_code == 422
    assert r.json()["code"] == "idempotency_key_reused"
    assert detail(r) == (
        "this Idempotency-Key was used with a different request body; use a "
        "new key for a new request"
    )
