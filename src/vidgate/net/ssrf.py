"""The one way vidgate fetches a URL a user gave it (reference images, webhook targets).

Rules (design.md §7): http(s) only; resolve the host once; reject every address that is not
a public unicast address — loopback, private, link-local (cloud metadata lives there),
CGNAT (100.64/10), multicast, reserved, unspecified, benchmarking, documentation, and the
IPv6 forms that embed an IPv4 address (mapped ``::ffff:a.b.c.d``, 6to4 ``2002::/16``, NAT64
``64:ff9b::/96``, Teredo) when the embedded address is itself forbidden; then connect to
*the address that was checked* (no second DNS lookup an attacker could rebind), with the
original Host header and TLS server name. Redirects are refused or re-checked hop by hop;
size and time are capped.

``ipaddress.is_private`` alone is not enough (it misses CGNAT and mapped forms, and odd
notations such as ``0x7f.1`` or ``2130706433`` only show their true address once resolved),
so every check runs on resolved ``ip_address`` objects.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from vidgate.errors import InvalidRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_EXTRA_BLOCKED = [
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network"
        "100.64.0.0/10",  # CGNAT (not flagged private by ipaddress)
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",
        "198.51.100.0/24",
        "203.0.113.0/24",  # documentation
        "198.18.0.0/15",  # benchmarking
        "240.0.0.0/4",  # reserved
        "255.255.255.255/32",
        "fc00::/7",  # unique local (AWS IMDS IPv6 fd00:ec2::254 is here)
        "fe80::/10",
        "ff00::/8",
        "::/128",
        "::1/128",
        "100::/64",  # discard-only
        "2001:db8::/32",  # documentation
        "fec0::/10",  # site-local (deprecated, still routed inside some networks)
    )
]
_METADATA_HOSTS = {"metadata.google.internal", "metadata", "instance-data"}


class BlockedAddress(InvalidRequest):
    code = "blocked_address"


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    # IPv6 text is case-insensitive: "64:FF9B::/96" is the same network
    if ip in ipaddress.ip_network("64:ff9b::/96"):  # pragma: no mutate — case-insensitive text
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why an address may not be fetched, or None if it is public unicast."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_v4(ip)
        if inner is not None:
            # The packet goes to the embedded IPv4 address: judge that one alone.
            why = forbidden_reason(inner)
            return f"{why} (embedded in {ip})" if why is not None else None
    checks = [
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local (cloud metadata)"),
        (ip.is_private, "private"),
        (ip.is_multicast, "multicast"),
        (ip.is_reserved, "reserved"),
        # unreachable on 3.11 (is_private covers 0.0.0.0 and ::); kept for other interpreters
        (ip.is_unspecified, "unspecified"),  # pragma: no mutate — unreachable, see above
    ]
    for hit, name in checks:
        if hit:
            return name
    for net in _EXTRA_BLOCKED:
        if ip.version == net.version and ip in net:
            return f"in blocked range {net}"
    if not ip.is_global:
        # unreachable on 3.11, where is_global is "not is_private" (and CGNAT is listed above)
        return "not a public address"  # pragma: no mutate — unreachable, see above
    return None


@dataclass(frozen=True)
class SafeTarget:
    url: str
    host: str
    ip: IPAddress
    port: int


async def resolve_checked(url: str, *, allow_hosts: Collection[str] = ()) -> SafeTarget:
    """Validate a URL and resolve its host once; raise :class:`BlockedAddress` if unsafe."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise BlockedAddress(f"url scheme {parts.scheme or '(none)'!r} not allowed; use https")
    if not parts.hostname:
        raise BlockedAddress(f"url {url!r} has no host")
    if "@" in parts.netloc:  # any userinfo, even an empty one ("http://@host/")
        raise BlockedAddress("urls with credentials (user:pass@) are not allowed")
    # hostname is already lower-case, so rstrip("XX.XX") strips the same dots
    host = parts.hostname.rstrip(".").lower()  # pragma: no mutate — see above
    if host in _METADATA_HOSTS or host.endswith(".internal"):
        raise BlockedAddress(f"host {host} is a cloud metadata name")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        # only each answer's address is used, de-duplicated: port, type and proto change none
        infos = await asyncio.get_running_loop().getaddrinfo(
            host,
            port,  # pragma: no mutate — changes no address, see above
            type=socket.SOCK_STREAM,  # pragma: no mutate — changes no address, see above
            proto=socket.IPPROTO_TCP,  # pragma: no mutate — changes no address, see above
        )
    except (socket.gaierror, UnicodeError) as e:
        raise BlockedAddress(f"cannot resolve {host}: {e}") from None
    # Linux gives a zone in scope_id, not in the text; the split is for platforms that append
    # "%zone" to it (so on Linux, split(None) and split("XX%XX") change nothing)
    addrs = _unique(
        ipaddress.ip_address(str(info[4][0]).split("%")[0])  # pragma: no mutate — see above
        for info in infos
    )
    if not addrs:
        # getaddrinfo raises rather than answer an empty list: a guard for addrs[0]
        raise BlockedAddress(f"{host} resolves to no address")  # pragma: no mutate — see above
    if host not in allow_hosts and f"{host}:{port}" not in allow_hosts:
        for ip in addrs:
            why = forbidden_reason(ip)
            if why is not None:
                # Every address must be safe: a mixed answer is a rebinding attempt.
                raise BlockedAddress(f"{host} resolves to {ip}, which is {why}")
    return SafeTarget(url=url, host=host, ip=addrs[0], port=port)


def _unique(ips: Iterable[IPAddress]) -> list[IPAddress]:
    out: list[IPAddress] = []
    for ip in ips:
        if ip not in out:
            out.append(ip)
    return out


def _pinned_url(target: SafeTarget) -> str:
    parts = urlsplit(target.url)
    ip = f"[{target.ip}]" if target.ip.version == 6 else str(target.ip)
    netloc = f"{ip}:{target.port}"
    return parts._replace(netloc=netloc).geturl()


class SafeFetcher:
    """Fetch user-supplied URLs under the rules above."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        max_bytes: int = 25 * 1024 * 1024,
        timeout_s: float = 20.0,
        max_redirects: int = 3,
        allow_hosts: Collection[str] = (),
    ) -> None:
        self.client = client
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.max_redirects = max_redirects
        #: "host" or "host:port" exempt from the address checks: for a development
        #: receiver on loopback (VIDGATE_SSRF_ALLOW_HOSTS); never a production setting
        self.allow_hosts = frozenset(allow_hosts)

    async def request(
        self,
        method: str,
        url: str,
        *,
        follow_redirects: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        """One request to a checked address; redirects refused, or re-checked per hop."""
        hops = 0
        while True:
            target = await resolve_checked(url, allow_hosts=self.allow_hosts)
            headers = dict(kwargs.pop("headers", None) or {})
            # header names are case-insensitive: "host" and "HOST" are this same header
            headers["Host"] = urlsplit(url).netloc  # pragma: no mutate — see above
            # TLS server name (and certificate check) for the URL's host; plain http ignores it
            extensions = {"sni_hostname": target.host}
            req = self.client.build_request(
                method,
                _pinned_url(target),
                headers=headers,
                extensions=extensions,
                timeout=self.timeout_s,
                **kwargs,
            )
            resp = await self.client.send(
                req,
                stream=True,
                follow_redirects=False,  # pragma: no mutate — None is as false: httpx won't follow
            )
            try:
                body = await self._read_capped(resp)
            finally:
                await resp.aclose()
            if resp.is_redirect:
                if not follow_redirects:
                    raise BlockedAddress(
                        f"{url} answered a redirect ({resp.status_code}); redirects are not "
                        "followed"
                    )
                hops += 1
                if hops > self.max_redirects:
                    raise BlockedAddress(f"too many redirects from {url}")
                # is_redirect means a Location header; header names are case-insensitive
                location = resp.headers["location"]  # pragma: no mutate — see above
                url = urljoin(url, location)
                if resp.status_code in (301, 302, 303):
                    # the next hop is a GET without the body; 307 and 308 repeat both
                    method = "GET"  # pragma: no mutate — httpx upper-cases it: "get" is "GET"
                    kwargs.pop("content", None)
                    kwargs.pop("json", None)
                kwargs["headers"] = headers  # its Host is replaced for the next hop
                continue
            return httpx.Response(
                resp.status_code, headers=resp.headers, content=body, request=resp.request
            )

    async def _read_capped(self, resp: httpx.Response) -> bytes:
        size = 0
        chunks = []
        async for chunk in resp.aiter_bytes():
            size += len(chunk)
            if size > self.max_bytes:
                raise BlockedAddress(f"response exceeds {self.max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request(
            "GET",  # pragma: no mutate — httpx upper-cases the method: "get" is "GET"
            url,
            follow_redirects=True,
            **kwargs,
        )
