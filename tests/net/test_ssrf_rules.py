"""What a user sees when the SSRF rules refuse (or allow) a URL: the rule's words, the exact
limits (redirect hops, body size), and the Host header and TLS server name kept on the pinned
address, over real loopback servers."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, StreamingResponse

from vidgate.net.ssrf import BlockedAddress, SafeFetcher, forbidden_reason, resolve_checked
from vidgate.sandbox.app import LoopbackServer


def _teredo(server: str, client: str, port: int = 40000) -> ipaddress.IPv6Address:
    """A Teredo address (2001::/32): server in clear, client port and address inverted."""
    return ipaddress.IPv6Address(
        (0x20010000 << 96)
        | (int(ipaddress.IPv4Address(server)) << 64)
        | ((port ^ 0xFFFF) << 32)
        | (int(ipaddress.IPv4Address(client)) ^ 0xFFFFFFFF)
    )


# -- every forbidden class names its rule ------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local (cloud metadata)"),
        ("fe80::1", "link-local (cloud metadata)"),
        ("10.0.0.1", "private"),
        ("fd00:ec2::254", "private"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("64:ff9b:1::1", "reserved"),
        ("100.64.0.1", "in blocked range 100.64.0.0/10"),
        ("fec0::1", "in blocked range fec0::/10"),  # IPv6 site-local
        ("::ffff:127.0.0.1", "loopback (embedded in ::ffff:7f00:1)"),
        ("2002:a9fe:a9fe::1", "link-local (cloud metadata) (embedded in 2002:a9fe:a9fe::1)"),
        ("64:ff9b::a9fe:a9fe", "link-local (cloud metadata) (embedded in 64:ff9b::a9fe:a9fe)"),
        ("64:ff9b::a00:1", "private (embedded in 64:ff9b::a00:1)"),
    ],
)
def test_each_forbidden_class_names_its_rule(address: str, reason: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize(
    ("client", "reason"),
    [("127.0.0.1", "loopback"), ("169.254.169.254", "link-local (cloud metadata)")],
)
def test_teredo_is_judged_by_its_client_address(client: str, reason: str) -> None:
    ip = _teredo("65.54.227.120", client)
    assert forbidden_reason(ip) == f"{reason} (embedded in {ip})"


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::808:808",  # NAT64 for 8.8.8.8
        "2002:808:808::1",  # 6to4 for 8.8.8.8
        str(_teredo("65.54.227.120", "8.8.8.8")),  # Teredo client 8.8.8.8
    ],
)
def test_embedded_public_addresses_pass(address: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) is None


# -- URL rules, with the words the user reads -------------------------------------------


async def _refusal(url: str) -> str:
    with pytest.raises(BlockedAddress) as info:
        await resolve_checked(url)
    return info.value.message


@pytest.mark.parametrize("url", ["//93.184.216.34/a.png", "93.184.216.34/a.png"])
async def test_a_url_without_scheme_says_so(url: str) -> None:
    assert await _refusal(url) == "url scheme '(none)' not allowed; use https"


async def test_a_url_without_host_says_so() -> None:
    assert await _refusal("http:///a.png") == "url 'http:///a.png' has no host"


@pytest.mark.parametrize(
    "url",
    [
        "http://user:pass@93.184.216.34/",
        "http://user@93.184.216.34/",  # a user alone (a token in the user part)
        "http://:secret@93.184.216.34/",  # a password alone
        "http://@93.184.216.34/",  # an empty userinfo
    ],
)
async def test_credentials_in_urls_are_refused(url: str) -> None:
    assert await _refusal(url) == "urls with credentials (user:pass@) are not allowed"


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://metadata/computeMetadata/v1/", "metadata"),
        ("http://instance-data/latest/", "instance-data"),
        ("http://metadata.google.internal./v1/", "metadata.google.internal"),  # trailing dot
        ("http://metadata./v1/", "metadata"),
        ("http://anything.corp.internal/", "anything.corp.internal"),
        ("http://Metadata.Google.Internal/", "metadata.google.internal"),
    ],
)
async def test_metadata_hosts_are_refused_by_name(url: str, host: str) -> None:
    assert await _refusal(url) == f"host {host} is a cloud metadata name"


async def test_an_unresolvable_host_says_so() -> None:
    host = "a" * 64 + ".example.com"  # a DNS label over 63 characters
    assert (await _refusal(f"https://{host}/")).startswith(f"cannot resolve {host}: ")


async def test_the_refusal_names_host_address_and_rule() -> None:
    assert await _refusal("http://127.0.0.1:8080/") == (
        "127.0.0.1 resolves to 127.0.0.1, which is loopback"
    )


async def test_a_scoped_ipv6_address_is_judged_without_its_zone() -> None:
    assert await _refusal("http://[fe80::1%lo]/") == (
        "fe80::1%lo resolves to fe80::1, which is link-local (cloud metadata)"
    )


@pytest.mark.parametrize(
    ("url", "port"),
    [
        ("http://93.184.216.34/a.png", 80),
        ("https://93.184.216.34/a.png", 443),
        ("http://93.184.216.34:8080/a.png", 8080),
    ],
)
async def test_default_ports(url: str, port: int) -> None:
    assert (await resolve_checked(url)).port == port


# -- a real loopback server --------------------------------------------------------------


def _app() -> FastAPI:
    app = FastAPI()

    @app.api_route("/echo", methods=["GET", "POST", "PUT"])
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "method": request.method,
                "host": request.headers.get("host"),
                "hosts": len(request.headers.getlist("host")),
                "trace": request.headers.get("x-trace"),
                "body": (await request.body()).decode(),
            },
            headers={"X-Answer": "42"},
        )

    @app.get("/hops/{n}", response_model=None)
    async def hops(n: int) -> RedirectResponse | PlainTextResponse:
        if n == 0:
            return PlainTextResponse("arrived")
        return RedirectResponse(f"/hops/{n - 1}", status_code=302)  # relative Location

    @app.api_route("/moved/{code}", methods=["GET", "POST"])
    async def moved(code: int) -> RedirectResponse:
        return RedirectResponse("/echo", status_code=code)

    @app.get("/to/{host}/{port}")
    async def to(host: str, port: int) -> RedirectResponse:
        return RedirectResponse(f"http://{host}:{port}/echo", status_code=302)

    @app.get("/missing")
    async def missing() -> PlainTextResponse:
        return PlainTextResponse("no such thing", status_code=404)

    @app.get("/chunks/{n}/{size}")
    async def chunks(n: int, size: int) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            for i in range(n):
                yield bytes([97 + i % 26]) * size
                await asyncio.sleep(0.05)  # each chunk its own read on the client

        return StreamingResponse(body())

    @app.get("/then-stall/{size}")
    async def then_stall(size: int) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"x" * size
            await asyncio.sleep(2)
            yield b"end"

        return StreamingResponse(body())

    @app.get("/slow")
    async def slow() -> PlainTextResponse:
        await asyncio.sleep(2)
        return PlainTextResponse("late")

    return app


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    srv = LoopbackServer(_app()).start()
    yield int(srv.url.rsplit(":", 1)[1])
    srv.stop()


def _fetcher(client: httpx.AsyncClient, port: int, **kw: object) -> SafeFetcher:
    return SafeFetcher(client, allow_hosts={f"localhost:{port}"}, **kw)  # type: ignore[arg-type]


async def test_host_header_is_the_url_host_while_connecting_to_the_checked_address(
    server: int,
) -> None:
    async with httpx.AsyncClient() as client:
        resp = await _fetcher(client, server).get(f"http://localhost:{server}/echo")
    assert resp.json()["host"] == f"localhost:{server}"
    assert resp.json()["hosts"] == 1


async def test_allow_hosts_is_per_port(server: int) -> None:
    async with httpx.AsyncClient() as client:
        fetcher = SafeFetcher(client, allow_hosts={"localhost:1"})
        with pytest.raises(BlockedAddress, match="which is loopback"):
            await fetcher.get(f"http://localhost:{server}/echo")
        resp = await SafeFetcher(client, allow_hosts={"localhost"}).get(
            f"http://localhost:{server}/echo"
        )
    assert resp.status_code == 200


async def test_answer_keeps_status_headers_and_request(server: int) -> None:
    async with httpx.AsyncClient() as client:
        fetcher = _fetcher(client, server)
        ok = await fetcher.get(f"http://localhost:{server}/echo", headers={"X-Trace": "t1"})
        missing = await fetcher.get(f"http://localhost:{server}/missing")
    assert ok.headers["x-answer"] == "42"
    assert ok.json()["trace"] == "t1"  # the caller's headers reach the server
    assert missing.status_code == 404
    assert missing.text == "no such thing"
    with pytest.raises(httpx.HTTPStatusError):
        missing.raise_for_status()


@pytest.mark.parametrize("max_redirects", [1, 3])
async def test_redirect_hop_limit_is_exact(server: int, max_redirects: int) -> None:
    async with httpx.AsyncClient() as client:
        fetcher = _fetcher(client, server, max_redirects=max_redirects)
        resp = await fetcher.get(f"http://localhost:{server}/hops/{max_redirects}")
        assert resp.text == "arrived"
        with pytest.raises(BlockedAddress) as info:
            await fetcher.get(f"http://localhost:{server}/hops/{max_redirects + 1}")
    # named after the URL whose redirect would have been one hop too many
    assert info.value.message == f"too many redirects from http://localhost:{server}/hops/1"


async def test_three_redirects_by_default(server: int) -> None:
    async with httpx.AsyncClient() as client:
        fetcher = _fetcher(client, server)
        assert (await fetcher.get(f"http://localhost:{server}/hops/3")).text == "arrived"
        with pytest.raises(BlockedAddress, match="too many redirects"):
            await fetcher.get(f"http://localhost:{server}/hops/4")


async def test_caller_headers_follow_a_redirect(server: int) -> None:
    async with httpx.AsyncClient() as client:
        resp = await _fetcher(client, server).get(
            f"http://localhost:{server}/moved/302", headers={"X-Trace": "t2"}
        )
    assert resp.json()["trace"] == "t2"
    assert resp.json()["host"] == f"localhost:{server}"


@pytest.mark.parametrize(
    ("code", "method", "body"),
    [
        (301, "GET", ""),
        (302, "GET", ""),
        (303, "GET", ""),
        (307, "POST", "payload"),
        (308, "POST", "payload"),
    ],
)
@pytest.mark.parametrize("kind", ["content", "json"])
async def test_redirect_method_and_body(
    server: int, code: int, method: str, body: str, kind: str
) -> None:
    send = {"content": b"payload"} if kind == "content" else {"json": "payload"}
    async with httpx.AsyncClient() as client:
        resp = await _fetcher(client, server).request(
            "POST", f"http://localhost:{server}/moved/{code}", follow_redirects=True, **send
        )
    assert resp.json()["method"] == method
    expected = body if kind == "content" or not body else '"payload"'
    assert resp.json()["body"] == expected


async def test_each_hop_is_checked_even_when_the_client_follows_redirects(server: int) -> None:
    # the client would follow on its own; the fetcher must still check the next address
    async with httpx.AsyncClient(follow_redirects=True) as client:
        with pytest.raises(
            BlockedAddress, match=r"127\.0\.0\.1 resolves to 127\.0\.0\.1, which is"
        ):
            await _fetcher(client, server).get(f"http://localhost:{server}/to/127.0.0.1/{server}")


async def test_body_of_many_chunks_arrives_whole(server: int) -> None:
    async with httpx.AsyncClient() as client:
        resp = await _fetcher(client, server, max_bytes=300).get(
            f"http://localhost:{server}/chunks/3/100"
        )
    assert resp.content == b"a" * 100 + b"b" * 100 + b"c" * 100


@pytest.mark.parametrize("size", [1000, 999])
async def test_a_body_of_exactly_max_bytes_is_accepted(server: int, size: int) -> None:
    async with httpx.AsyncClient() as client:
        resp = await _fetcher(client, server, max_bytes=1000).get(
            f"http://localhost:{server}/chunks/1/{size}"
        )
    assert len(resp.content) == size


async def test_one_byte_over_max_bytes_is_refused(server: int) -> None:
    async with httpx.AsyncClient() as client:
        fetcher = _fetcher(client, server, max_bytes=1000)
        with pytest.raises(BlockedAddress) as info:
            await fetcher.get(f"http://localhost:{server}/chunks/1/1001")
    assert info.value.message == "response exceeds 1000 bytes"


async def test_the_cap_counts_all_chunks(server: int) -> None:
    async with httpx.AsyncClient() as client:
        fetcher = _fetcher(client, server, max_bytes=1000)
        with pytest.raises(BlockedAddress, match="exceeds 1000 bytes"):
            await fetcher.get(f"http://localhost:{server}/chunks/3/400")


async def test_the_cap_stops_reading_before_the_body_ends(server: int) -> None:
    # the server sends 1001 bytes then stalls past the timeout: refused as too big, at once,
    # rather than read to its end (or to a timeout)
    async with httpx.AsyncClient() as client:
        fetcher = _fetcher(client, server, max_bytes=1000, timeout_s=1.0)
        with pytest.raises(BlockedAddress, match="exceeds 1000 bytes"):
            await fetcher.get(f"http://localhost:{server}/then-stall/1001")


async def test_timeout_applies(server: int) -> None:
    async with httpx.AsyncClient() as client:
        fetcher = _fetcher(client, server, timeout_s=0.3)
        with pytest.raises(httpx.TimeoutException):
            await fetcher.get(f"http://localhost:{server}/slow")


async def test_ipv6_literal_is_fetched_on_its_checked_address() -> None:
    srv = LoopbackServer(_app(), host="::1").start()
    try:
        port = int(srv.url.rsplit(":", 1)[1])
        async with httpx.AsyncClient() as client:
            resp = await SafeFetcher(client, allow_hosts={"::1"}).get(f"http://[::1]:{port}/echo")
    finally:
        srv.stop()
    assert resp.json()["host"] == f"[::1]:{port}"


# -- TLS: the server name is the URL's host, not the pinned address ---------------------


def _cert(where: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = where / "cert.pem", where / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    cert, key = _cert(tmp_path_factory.mktemp("tls"))
    config = uvicorn.Config(
        _app(),
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="off",
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not srv.started:
        assert thread.is_alive()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    yield srv.servers[0].sockets[0].getsockname()[1], cert
    srv.should_exit = True
    thread.join(timeout=5)


async def test_tls_is_verified_for_the_url_host_over_the_pinned_address(
    tls_server: tuple[int, Path],
) -> None:
    port, cert = tls_server
    trust = ssl.create_default_context(cafile=str(cert))
    async with httpx.AsyncClient(verify=trust) as client:
        resp = await SafeFetcher(client, allow_hosts={"localhost"}).get(
            f"https://localhost:{port}/echo"
        )
    assert resp.json()["host"] == f"localhost:{port}"
