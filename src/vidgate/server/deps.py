"""Per-request plumbing shared by the routes: the gateway, the caller's key, rate limits,
Idempotency-Key handling, reference fetching."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from vidgate.billing.accounts import KeyInfo
from vidgate.errors import InvalidRequest, VidgateError
from vidgate.gateway import Gateway
from vidgate.net.ssrf import resolve_checked
from vidgate.server.errors import ApiError
from vidgate.server.observability import Metrics
from vidgate.types import Reference

MAX_REFERENCE_BYTES = 20 * 1024 * 1024
_AUTH_TTL_S = 30.0


@dataclass
class ServerState:
    gateway: Gateway
    metrics: Metrics
    #: raw key -> (KeyInfo or None, cached at): saves a query per request; a revoked key is
    #: refused within the TTL
    auth_cache: dict[str, tuple[KeyInfo | None, float]]


def state(request: Request) -> ServerState:
    return request.app.state.vidgate  # type: ignore[no-any-return]


def gateway(request: Request) -> Gateway:
    return state(request).gateway


def caller(request: Request) -> KeyInfo:
    """The API key's tenant; 401 without a valid key, 429 past the key's rate."""
    st = state(request)
    header = request.headers.get("authorization", "")
    raw = header[7:].strip() if header.lower().startswith("bearer ") else ""
    if not raw:
        raise ApiError(
            401,
            "missing_api_key",
            "send your vidgate key as 'Authorization: Bearer vg_...' "
            "(create one with `vidgate keys create --tenant NAME`)",
        )
    now = time.monotonic()
    cached = st.auth_cache.get(raw)
    if cached is None or now - cached[1] > _AUTH_TTL_S:
        info = st.gateway.accounts.authenticate(raw)
        if len(st.auth_cache) > 10_000:
            st.auth_cache.clear()
        st.auth_cache[raw] = (info, now)
    else:
        info = cached[0]
    if info is None:
        raise ApiError(401, "invalid_api_key", "the API key is not valid (or was revoked)")
    if info.rpm and not st.gateway.key_limiter().take(info.id, info.rpm):
        raise ApiError(
            429,
            "rate_limited",
            f"this key is limited to {info.rpm} requests/minute",
            headers={"Retry-After": "60"},
        )
    return info


def check_concurrency(gw: Gateway, tenant: str) -> None:
    row = gw.accounts.tenant(tenant)
    cap = row["max_concurrent_jobs"] if row else None
    if cap is not None and gw.accounts.running_jobs(tenant) >= cap:
        raise ApiError(
            429,
            "too_many_jobs",
            f"tenant {tenant} already has {cap} jobs running (its cap); wait for one to finish",
            headers={"Retry-After": "5"},
        )


async def fetch_reference(gw: Gateway, ref: Reference) -> Reference:
    """Check a reference URL with the SSRF rules before it goes anywhere.

    Providers that take a URL (Luma, Runway, fal...) fetch it themselves, so it is passed on
    as it is; vidgate itself never fetches a user's URL except through the SSRF-safe fetcher.
    An internal address is refused here even though only the provider would fetch it: it
    can only be a mistake or a probe."""
    if ref.url.startswith("data:"):
        if len(ref.url) > MAX_REFERENCE_BYTES * 4 // 3 + 100:
            raise InvalidRequest(f"inline reference is over {MAX_REFERENCE_BYTES} bytes")
        return ref
    await resolve_checked(ref.url, allow_hosts=gw.settings.allow_hosts())
    return ref


async def idempotent(
    request: Request,
    tenant: str,
    body: bytes,
    handler: Callable[[], Awaitable[Response]],
) -> Response:
    """Idempotency-Key semantics for POSTs: the same key replays the first response, 409
    while the first is still running, 422 when the body differs; keys are per tenant."""
    key = request.headers.get("idempotency-key")
    if not key:
        return await handler()
    if len(key) > 255:
        raise ApiError(400, "invalid_idempotency_key", "Idempotency-Key is at most 255 chars")
    accounts = gateway(request).accounts
    digest = hashlib.sha256(request.url.path.encode() + b"\0" + body).hexdigest()
    st = accounts.idem_begin(tenant, key, digest)
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
            headers={"Retry-After": "1"},
        )
    if st.outcome == "replay":
        return Response(
            st.response or "",
            status_code=st.status_code or 200,
            media_type="application/json",
            headers={"Idempotent-Replayed": "true"},
        )
    try:
        resp = await handler()
    except (ApiError, VidgateError) as e:
        status = e.status if isinstance(e, ApiError) else e.http_status
        if status >= 500:
            accounts.idem_abort(tenant, key)  # nothing happened: let a retry run it
            raise
        # a definite 4xx answer is part of the key's history: replay it too
        from vidgate.server.errors import render

        rendered = render(
            request, status, getattr(e, "code", "error"), getattr(e, "message", str(e))
        )
        accounts.idem_finish(tenant, key, status, bytes(rendered.body).decode())
        return rendered
    except BaseException:
        accounts.idem_abort(tenant, key)
        raise
    if isinstance(resp, JSONResponse):
        accounts.idem_finish(tenant, key, resp.status_code, bytes(resp.body).decode())
    return resp


def dumps(data: Any) -> str:
    return json.dumps(data, default=str)
