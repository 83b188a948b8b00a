"""The gate every request passes before a route sees it: the caller's key first, then the
size and shape of the body.

Order matters. An unauthenticated caller learns nothing about how we parse (a key check is
a header read and one cached lookup), and no body is read for anyone we would refuse anyway.
Then a JSON body is checked once, here, for every route that takes one — depth, number
lengths, string lengths, item counts — so that no route (today's or a new one) can meet a
body that makes the JSON decoder or a numeric conversion blow up into a 500.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vidgate.billing.accounts import KeyInfo
from vidgate.server.errors import ApiError, render

#: scope key holding the authenticated caller (read by ``deps.caller``)
SCOPE_KEY = "vidgate.key"
#: /v1 paths that authenticate otherwise (provider callbacks carry the provider's signature)
UNAUTHENTICATED_PREFIXES = ("/v1/callbacks/",)

#: the largest request the service reads (an inline data: image of 20 MB fits in base64)
MAX_REQUEST_BYTES = 32 * 1024 * 1024
#: routes with a smaller limit of their own (the OpenAI-style create: one image at most)
BODY_LIMITS = {"/v1/videos": 30 * 1024 * 1024}
#: nesting of objects and arrays: a request is a few levels deep; 32 leaves room for
#: metadata and provider options without letting a decoder recurse thousands deep
MAX_DEPTH = 32
#: digits of an integer: the largest meaningful one is a 32-bit seed (10 digits)
MAX_INT_DIGITS = 20
#: characters of a number written with a fraction or exponent
MAX_NUMBER_CHARS = 40
#: characters of any string but a data: URL (prompts are 8000 at most)
MAX_STRING_CHARS = 64 * 1024
#: characters of a data: URL (an inline image or clip, base64)
MAX_DATA_URL_CHARS = 28_000_000
#: items of one array, keys of one object
MAX_ITEMS = 1000
#: characters of an object key
MAX_KEY_CHARS = 256

_AUTH_TTL_S = 30.0
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _bearer(header: str) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; "" when there is none.

    Only RFC 9110 whitespace (SP, HTAB) around the token is ignored: any other character
    (a vertical tab, a no-break space, a line separator...) is part of the token, so the
    key does not match. ``str.strip()`` would have dropped all of those."""
    value = header.strip(" \t")
    if value[:6].lower() != "bearer" or value[6:7] not in (" ", "\t"):
        return ""
    return value[7:].strip(" \t")


async def authenticate(scope: Scope) -> KeyInfo:
    """The caller's key, checked (401), and its rate taken (429). Runs the key lookup in a
    thread: the database call must not stall the event loop."""
    request = Request(scope)
    st = request.app.state.vidgate
    raw = _bearer(request.headers.get("authorization", ""))
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
        info = await asyncio.to_thread(st.gateway.accounts.authenticate, raw)
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
    return info  # type: ignore[no-any-return]


# -- JSON -------------------------------------------------------------------------------------


def _bad(message: str, status: int = 400, code: str = "invalid_json") -> ApiError:
    return ApiError(status, code, message)


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _bad(
            f"a number in the request has {len(text.lstrip('-'))} digits; "
            f"integers have at most {MAX_INT_DIGITS}"
        )
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise _bad(
            f"a number in the request is {len(text)} characters long; "
            f"numbers have at most {MAX_NUMBER_CHARS}"
        )
    value = float(text)
    if not math.isfinite(value):
        raise _bad(f"the number {text[:20]} is out of range; use a finite number")
    return value


def _parse_constant(text: str) -> Any:
    raise _bad(f"{text} is not a JSON number; use a finite number")


def check_shape(doc: Any, what: str) -> None:
    """Depth, item counts and string lengths of a decoded document, walked iteratively
    (a recursive walk would be the very thing a deep document breaks)."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            limit = MAX_DATA_URL_CHARS if node.startswith("data:") else MAX_STRING_CHARS
            if len(node) > limit:
                raise _bad(
                    f"a string in {what} is {len(node)} characters long; strings have at "
                    f"most {MAX_STRING_CHARS} (data: URLs {MAX_DATA_URL_CHARS})"
                )
            continue
        if not isinstance(node, dict | list):
            continue
        if depth > MAX_DEPTH:
            raise _bad(f"{what} is nested more than {MAX_DEPTH} levels deep")
        if len(node) > MAX_ITEMS:
            kind = "an object has" if isinstance(node, dict) else "an array has"
            raise _bad(f"{kind} {len(node)} items in {what}; at most {MAX_ITEMS}")
        if isinstance(node, dict):
            for key, value in node.items():
                if len(key) > MAX_KEY_CHARS:
                    raise _bad(f"a key in {what} is over {MAX_KEY_CHARS} characters")
                stack.append((value, depth + 1))
        else:
            stack.extend((v, depth + 1) for v in node)


def parse_json(raw: bytes | str, what: str = "the request body") -> Any:
    """Decode ``raw`` as JSON within the limits above, or raise a 400 whose message says
    what is wrong and where (line and column), as a sentence."""
    try:
        doc = json.loads(
            raw,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_parse_constant,
        )
    except json.JSONDecodeError as e:
        msg = e.msg[:1].lower() + e.msg[1:]
        raise _bad(
            f"{what} is not valid JSON: {msg} at line {e.lineno}, column {e.colno}"
        ) from None
    except UnicodeDecodeError:
        raise _bad(f"{what} is not valid JSON: it is not UTF-8 text") from None
    except RecursionError:
        raise _bad(f"{what} is nested more than {MAX_DEPTH} levels deep") from None
    check_shape(doc, what)
    return doc


def _is_json(scope: Scope) -> bool:
    """Whether the framework would read this body as JSON: no content type, or a JSON one
    (application/json, application/*+json)."""
    ctype = ""
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            ctype = value.decode("latin-1").split(";", 1)[0].strip().lower()
    if not ctype:
        return True
    main, _, sub = ctype.partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


class Gate:
    """ASGI middleware: authenticate every /v1 request, refuse a body over the size limit,
    and check a JSON body's shape — in that order, before any route reads anything."""

    def __init__(self, app: ASGIApp, *, max_bytes: int = MAX_REQUEST_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            receive = await self._admit(scope, receive)
        except ApiError as e:
            response = render(
                Request(scope), e.status, e.code, e.message, param=e.param, headers=e.headers
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _admit(self, scope: Scope, receive: Receive) -> Receive:
        path: str = scope["path"]
        api = path.startswith("/v1/") or path == "/v1"
        if api and not path.startswith(UNAUTHENTICATED_PREFIXES):
            scope[SCOPE_KEY] = await authenticate(scope)
        declared = Request(scope).headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            raise ApiError(
                413, "body_too_large", f"request bodies are limited to {self.max_bytes} bytes"
            )
        if (
            not api
            or path.startswith(UNAUTHENTICATED_PREFIXES)
            or scope["method"] not in _BODY_METHODS
            or not _is_json(scope)
        ):
            return receive
        body = await self._read(receive, min(self.max_bytes, BODY_LIMITS.get(path, self.max_bytes)))
        if body.strip():
            parse_json(body)
        return replay(body, receive)

    async def _read(self, receive: Receive, limit: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away: the route sees an empty body and stops
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise ApiError(
                    413, "body_too_large", f"request bodies are limited to {limit} bytes"
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A receive callable giving ``body`` once, then whatever the client sends next (a
    disconnect, which streaming routes listen for)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
