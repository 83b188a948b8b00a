"""Per-request plumbing shared by the routes: the gateway, the caller's key, rate limits,
Idempotency-Key handling, URL checks (references, webhooks), body size limits."""

from __future__ import annotations

import asyncio
import difflib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from vidgate.billing.accounts import KeyInfo
from vidgate.errors import InvalidRequest, VidgateError
from vidgate.gateway import Gateway
from vidgate.net.ssrf import BlockedAddress, resolve_checked
from vidgate.server import images
from vidgate.server.errors import ApiError, media_type, render_exception
from vidgate.server.guards import SCOPE_KEY, replay
from vidgate.server.observability import Metrics
from vidgate.types import Reference, ReferenceKind

MAX_REFERENCE_BYTES = 20 * 1024 * 1024


@dataclass
class ServerState:
    gateway: Gateway
    metrics: Metrics
    #: raw key -> (KeyInfo or None, cached at): saves a query per request; a revoked key is
    #: refused within the TTL (filled by ``guards.authenticate``)
    auth_cache: dict[str, tuple[KeyInfo | None, float]]
    #: per-tenant locks making "check the tenant's job cap, then store the job" one step
    admission: dict[str, asyncio.Lock] = field(default_factory=dict)


def state(request: Request) -> ServerState:
    return request.app.state.vidgate  # type: ignore[no-any-return]


def gateway(request: Request) -> Gateway:
    return state(request).gateway


def caller(request: Request) -> KeyInfo:
    """The API key's tenant, as the gate authenticated it before the body was read (401
    without a valid key, 429 past the key's rate: see ``guards.Gate``)."""
    info = request.scope.get(SCOPE_KEY)
    if not isinstance(info, KeyInfo):
        # only reachable for a route outside /v1 that asks for a key: refuse, never guess
        raise ApiError(401, "missing_api_key", "this route needs a vidgate key under /v1")
    return info


def check_concurrency(gw: Gateway, tenant: str, cap: int) -> None:
    if gw.accounts.running_jobs(tenant) >= cap:
        raise ApiError(
            429,
            "too_many_jobs",
            f"tenant {tenant} already has {cap} jobs running (its cap); wait for one to finish",
            headers={"Retry-After": "5"},  # pragma: no mutate — header names are case-insensitive
        )


@asynccontextmanager
async def admitted(request: Request, tenant: str) -> AsyncIterator[None]:
    """Admit a submit under the tenant's cap on running jobs: the cap is checked and the
    job stored while the tenant's lock is held, so concurrent submits cannot all pass the
    check before any of them is counted. (This holds within one server process; several
    processes would need the job store to count and insert in one transaction.)"""
    st = state(request)
    gw = st.gateway
    row = await asyncio.to_thread(gw.accounts.tenant, tenant)
    if row is None or row["max_concurrent_jobs"] is None:
        yield
        return
    lock = st.admission.setdefault(tenant, asyncio.Lock())
    async with lock:
        await asyncio.to_thread(check_concurrency, gw, tenant, row["max_concurrent_jobs"])
        yield


def check_offerings(gw: Gateway, ids: list[str] | None) -> None:
    """Pinned offerings must exist: an unknown id is the caller's mistake (a 4xx naming the
    nearest id), never a configuration error of ours."""
    for oid in ids or ():
        if oid not in gw.catalog.offerings:
            close = difflib.get_close_matches(
                oid,
                list(gw.catalog.offerings),
                n=1,  # pragma: no mutate — only close[0] is shown, whatever n is
            )
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise InvalidRequest(f"unknown offering {oid!r}; {hint}GET /v1/models lists them")


async def _check_url(gw: Gateway, url: str, what: str) -> None:
    try:
        await resolve_checked(url, allow_hosts=gw.settings.allow_hosts())
    except BlockedAddress as e:
        raise BlockedAddress(f"{what} {url!r} is not allowed: {e.message}") from None


async def fetch_reference(gw: Gateway, ref: Reference, param: str) -> Reference:
    """Check a reference URL with the SSRF rules before it goes anywhere.

    Providers that take a URL (Luma, Runway, fal...) fetch it themselves, so it is passed on
    as it is; vidgate itself never fetches a user's URL except through the SSRF-safe fetcher.
    An internal address is refused here even though only the provider would fetch it: it
    can only be a mistake or a probe."""
    if ref.url.startswith("data:"):
        # len is whole: "> n / 3 + 100" and "> n // 3 + 100" refuse the same lengths
        if len(ref.url) > MAX_REFERENCE_BYTES * 4 // 3 + 100:  # pragma: no mutate — see above
            raise InvalidRequest(f"inline reference is over {MAX_REFERENCE_BYTES} bytes")
        if ref.kind is ReferenceKind.IMAGE:
            # sniffed by content (in a thread: a 20 MB payload is decoded from base64)
            url = await asyncio.to_thread(images.checked_data_url, ref.url, param)
            if url != ref.url:
                return ref.model_copy(update={"url": url})
        return ref
    await _check_url(gw, ref.url, "reference url")
    return ref


async def check_webhook(gw: Gateway, url: str | None) -> None:
    """Refuse a webhook URL at submit time when its address is internal, so the caller hears
    about it now rather than through webhooks that silently never arrive (delivery checks
    every address again, and never follows redirects)."""
    if url is None:
        return
    if len(url) > 2048:
        raise InvalidRequest("webhook_url is at most 2048 characters")
    await _check_url(gw, url, "webhook_url")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes (whether or
    not the client declared a Content-Length), never buffered past the limit."""
    declared = request.headers.get("content-length")  # pragma: no mutate — case-insensitive
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body_too_large", f"request bodies are limited to {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body_too_large", f"request bodies are limited to {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def replay_request(request: Request, body: bytes) -> Request:
    """A Request over the same scope whose body is ``body`` (already read and checked), then
    whatever the client sends next (as the gate replays a JSON body)."""
    # the only caller parses a form, which stops at the replayed body's more_body=False and
    # never asks for the next message: what is passed on after it cannot show there
    return Request(request.scope, replay(body, request.receive))  # pragma: no mutate — see above


#: between a request's path and body in its digest; any fixed bytes tell the same requests
#: apart (a digest is only ever compared with digests made here), so the byte cannot show
_SEP = b"\0"  # pragma: no mutate — see above
#: answers that say "not now" rather than "no": a retry with the same key must run again
_NOT_STORED = frozenset({402, 409, 429})


async def idempotent(
    request: Request,
    tenant: str,
    body: bytes,
    handler: Callable[[], Awaitable[Response]],
) -> Response:
    """Idempotency-Key semantics for POSTs: the same key replays the first response, 409
    while the first is still running, 422 when the body differs; keys are per tenant.

    ``body`` is the request in a canonical form (the same request always gives the same
    bytes). A definite answer — success, or a 4xx about the request itself — is stored and
    replayed; a "not now" answer (402, 409, 429, any 5xx) is forgotten so a retry with the
    same key runs again."""
    key = request.headers.get("idempotency-key")  # pragma: no mutate — names are case-insensitive
    if key is None:
        return await handler()
    # an empty key is refused too: the job store would take "" as every request's key
    if not key or len(key) > 255 or not key.isprintable():
        raise ApiError(
            400, "invalid_idempotency_key", "Idempotency-Key is 1-255 printable characters"
        )
    accounts = gateway(request).accounts
    digest = hashlib.sha256(request.url.path.encode() + _SEP + body).hexdigest()
    st = await asyncio.to_thread(accounts.idem_begin, tenant, key, digest)
    if st.outcome == "conflict":
        raise ApiError(
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request body; use a "
            "new key for a new request",
        )
    if st.outcome == "in_progress":
        raise ApiError(
            409,
            "idempotency_key_in_use",
            "a request with this Idempotency-Key is still being processed; retry shortly",
            headers={"Retry-After": "1"},  # pragma: no mutate — names are case-insensitive
        )
    if st.outcome == "replay":
        # a finished key always holds its status and body (idem_finish writes both): the
        # fallbacks only narrow the Optional types, and no replay can reach them
        status = st.status_code or 200  # pragma: no mutate — see above
        return Response(
            st.response or "",  # pragma: no mutate — see above
            status_code=status,
            media_type=media_type(request, status),
            headers={"Idempotent-Replayed": "true"},  # pragma: no mutate — case-insensitive
        )
    try:
        resp = await handler()
    except (ApiError, VidgateError) as e:
        rendered = render_exception(request, e)
        if rendered.status_code >= 500 or rendered.status_code in _NOT_STORED:
            await asyncio.to_thread(accounts.idem_abort, tenant, key)
            raise
        await asyncio.to_thread(
            accounts.idem_finish, tenant, key, rendered.status_code, bytes(rendered.body).decode()
        )
        return rendered
    except BaseException:
        await asyncio.to_thread(accounts.idem_abort, tenant, key)
        raise
    if isinstance(resp, JSONResponse):
        await asyncio.to_thread(
            accounts.idem_finish, tenant, key, resp.status_code, bytes(resp.body).decode()
        )
    else:
        await asyncio.to_thread(accounts.idem_abort, tenant, key)
    return resp
