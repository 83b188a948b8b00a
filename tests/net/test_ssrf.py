"""SSRF rules: every forbidden form is refused, directly and behind a redirect."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse, RedirectResponse

from vidgate.net.ssrf import BlockedAddress, SafeFetcher, forbidden_reason, resolve_checked
from vidgate.sandbox.app import LoopbackServer


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.255.255.254",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "100.127.255.255",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "198.18.0.1",
        "192.0.2.1",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd00:ec2::254",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:10.0.0.1",
        "64:ff9b::a9fe:a9fe",
        "2002:7f00:0001::1",
        "2002:a9fe:a9fe::1",
    ],
)
def test_forbidden_addresses(address: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
)
def test_public_addresses_pass(address: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://127.0.0.1/x", "loopback"),
        ("http://localhost:8080/", "loopback"),
        ("http://0x7f.0.0.1/", "loopback"),  # hex notation
        ("http://2130706433/", "loopback"),  # decimal notation
        ("http://0177.0.0.1/", "loopback"),  # octal notation
        ("http://127.1/", "loopback"),  # short form
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "embedded"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[fd00:ec2::254]/", "private"),
        ("http://100.64.0.1/", "100.64.0.0/10"),
        ("http://10.0.0.1/", "private"),
        ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
        ("file:///etc/passwd", "scheme"),
        ("gopher://example.com/", "scheme"),
        ("http://user:pass@example.com/", "credentials"),
    ],
)
async def test_urls_are_refused(url: str, fragment: str) -> None:
    with pytest.raises(BlockedAddress) as info:
        await resolve_checked(url)
    assert fragment in str(info.value)


async def test_public_ip_literal_is_accepted_without_dns() -> None:
    target = await resolve_checked("https://93.184.216.34/a.png")
    assert str(target.ip) == "93.184.216.34"
    assert target.port == 443


@pytest.fixture
def redirector() -> Iterator[str]:
    app = FastAPI()

    @app.get("/ok")
    async def ok() -> PlainTextResponse:
        return PlainTextResponse("fine")

    @app.get("/to-metadata")
    async def to_metadata() -> RedirectResponse:
        return RedirectResponse("http://169.254.169.254/latest/meta-data/", status_code=302)

    @app.get("/to-loopback")
    async def to_loopback() -> RedirectResponse:
        return RedirectResponse("http://127.0.0.1:9/", status_code=307)

    @app.get("/big")
    async def big() -> PlainTextResponse:
        return PlainTextResponse("x" * 5000)

    server = LoopbackServer(app).start()
    yield server.url
    server.stop()


async def test_allowlisted_receiver_is_reachable(redirector: str) -> None:
    host = redirector.removeprefix("http://")
    async with httpx.AsyncClient() as client:
        fetcher = SafeFetcher(client, allow_hosts={host})
        resp = await fetcher.get(f"{redirector}/ok")
    assert resp.text == "fine"


async def test_loopback_is_refused_without_the_allowlist(redirector: str) -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(BlockedAddress, match="loopback"):
            await SafeFetcher(client).get(f"{redirector}/ok")


@pytest.mark.parametrize(
    ("path", "fragment"), [("/to-metadata", "link-local"), ("/to-loopback", "loopback")]
)
async def test_redirect_targets_are_rechecked(redirector: str, path: str, fragment: str) -> None:
    host = redirector.removeprefix("http://")
    async with httpx.AsyncClient() as client:
        fetcher = SafeFetcher(client, allow_hosts={host})
        with pytest.raises(BlockedAddress, match=fragment):
            await fetcher.get(f"{redirector}{path}")
        # and webhook-style calls refuse redirects outright
        with pytest.raises(BlockedAddress, match="redirects are not followed"):
            await fetcher.request("GET", f"{redirector}{path}")


async def test_size_cap(redirector: str) -> None:
    host = redirector.removeprefix("http://")
    async with httpx.AsyncClient() as client:
        fetcher = SafeFetcher(client, allow_hosts={host}, max_bytes=1000)
        with pytest.raises(BlockedAddress, match="exceeds 1000 bytes"):
            await fetcher.get(f"{redirector}/big")
