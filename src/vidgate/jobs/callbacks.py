"""Inbound provider callbacks: verified where the provider signs, then only a hint to poll.

A callback never changes a job's state. It names a remote job; we find our job by that id
and ask its worker to poll now rather than at its next tick (the poll's answer is what we
trust). So a forged callback can at most cause one extra status call — and we still reject
it when the provider signs its callbacks.

Each adapter *declares* how its callbacks are authenticated (``Provider.callback_scheme``
and friends); this module holds the three mechanisms and knows no provider by name:

* ``ed25519-jwks``: message ``"{request_id}\\n{user_id}\\n{timestamp}\\n" +
  sha256_hex(body)`` signed with Ed25519, checked against any key of the adapter's JWKS
  (cached for a day), timestamp within 300 s;
* ``standard-webhooks``: HMAC-SHA256 over ``id.timestamp.body`` with the ``whsec_`` secret
  named by the adapter's ``callback_secret_env``;
* ``token``: the provider does not sign, so its callback URL carries our per-protocol token
  (an HMAC of the protocol key under the gateway's webhook secret).

A callback that does not verify is answered 401 with one fixed sentence, whatever the reason
(missing header, stale timestamp, bad signature, no secret configured): telling a forger
which part failed would help them. The reason goes to our log. A verified callback naming a
job of *another* provider is answered 403. The body is parsed only after it verifies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select

from vidgate.errors import AuthFailed, InvalidRequest, ProviderUnavailable
from vidgate.jobs import db
from vidgate.jobs.store import JobStore
from vidgate.jobs.webhooks import verify as verify_standard
from vidgate.providers.base import registry

TOLERANCE_S = 300
JWKS_TTL_S = 24 * 3600

log = logging.getLogger("vidgate.callbacks")


class CallbackUnauthorized(AuthFailed):
    """A callback that does not verify: the caller's fault (401), never a gateway error."""

    code = "invalid_signature"
    http_status = 401


class CallbackForbidden(AuthFailed):
    """A verified callback about a job another provider runs."""

    code = "forbidden"
    http_status = 403


class _Unverified(Exception):
    """Why a callback did not verify; logged, never answered."""


@dataclass
class CallbackResult:
    provider: str
    remote_id: str | None
    job_id: str | None
    hinted: bool


def _b64url(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def _dig(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


class CallbackHandler:
    def __init__(
        self,
        store: JobStore,
        client: httpx.AsyncClient,
        *,
        token_secret: str,
        env: Mapping[str, str] | None = None,
        jwks_urls: Mapping[str, str] | None = None,
    ) -> None:
        self.store = store
        self.client = client
        self.token_secret = token_secret
        self.env = env if env is not None else os.environ
        #: per-protocol JWKS URL overrides (a private mirror, or a test's key server)
        self.jwks_urls = dict(jwks_urls or {})
        self._jwks: dict[str, tuple[float, list[Ed25519PublicKey]]] = {}

    def token(self, protocol: str) -> str:
        """The token an unsigned provider's callback URL must carry."""
        mac = hmac.new(self.token_secret.encode(), f"callback:{protocol}".encode(), hashlib.sha256)
        return mac.hexdigest()[:32]

    async def _keys(self, protocol: str, url: str) -> list[Ed25519PublicKey]:
        now = time.monotonic()
        cached = self._jwks.get(protocol)
        if cached is not None and now - cached[0] < JWKS_TTL_S:
            return cached[1]
        try:
            resp = await self.client.get(url, timeout=10)
            resp.raise_for_status()
            found = resp.json().get("keys", [])
        except (httpx.HTTPError, ValueError, AttributeError) as e:
            # the provider's key server failing is an upstream outage: 503 asks the
            # provider to retry its callback, which is what should happen
            raise ProviderUnavailable(
                f"{protocol} signing keys cannot be fetched now ({type(e).__name__})"
            ) from None
        keys = [
            Ed25519PublicKey.from_public_bytes(_b64url(k["x"]))
            for k in found
            if isinstance(k, dict)
            and k.get("kty") == "OKP"
            and k.get("crv") == "Ed25519"
            and k.get("x")
        ]
        self._jwks[protocol] = (now, keys)
        return keys

    async def _verify_ed25519(
        self,
        protocol: str,
        url: str,
        names: tuple[str, str, str, str],
        headers: dict[str, str],
        body: bytes,
    ) -> None:
        h = {k.lower(): v for k, v in headers.items()}
        rid, uid, ts, sig = (h.get(n.lower()) for n in names)
        if not (rid and uid and ts and sig):
            raise _Unverified("signature headers missing")
        try:
            if abs(time.time() - int(ts)) > TOLERANCE_S:
                raise _Unverified(f"timestamp outside {TOLERANCE_S} s")
            signature = bytes.fromhex(sig)
        except ValueError:
            raise _Unverified("signature headers malformed") from None
        message = f"{rid}\n{uid}\n{ts}\n{hashlib.sha256(body).hexdigest()}".encode()
        for key in await self._keys(protocol, url):
            try:
                key.verify(signature, message)
                return
            except InvalidSignature:
                continue
        raise _Unverified("signature does not verify")

    async def handle(
        self, protocol: str, headers: dict[str, str], body: bytes, token: str | None = None
    ) -> CallbackResult:
        cls = registry().get(protocol)
        if cls is None or cls.callback_scheme is None:
            known = sorted(k for k, c in registry().items() if c.callback_scheme)
            raise InvalidRequest(f"no callbacks for {protocol!r}; known: {', '.join(known)}")
        try:
            await self._verify(protocol, cls, headers, body, token)
        except _Unverified as why:
            log.info("callback refused", extra={"protocol": protocol, "reason": str(why)})
            raise CallbackUnauthorized(
                f"this {protocol} callback is not signed as {protocol} signs its callbacks"
            ) from None
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            raise InvalidRequest("the callback body is not a JSON object") from None
        remote_id = next((str(v) for f in cls.callback_id_fields if (v := _dig(data, f))), None)
        if remote_id is None or len(remote_id) > 256:
            return CallbackResult(protocol, None, None, False)
        job_id = self.store.find_by_remote_id(protocol, remote_id)
        if job_id is None and self._owned_elsewhere(protocol, remote_id):
            raise CallbackForbidden(f"this job is not run by {protocol}")
        hinted = job_id is not None and self.store.hint_poll(job_id)
        return CallbackResult(protocol, remote_id, job_id, hinted)

    async def _verify(
        self,
        protocol: str,
        cls: Any,
        headers: dict[str, str],
        body: bytes,
        token: str | None,
    ) -> None:
        scheme = cls.callback_scheme
        if scheme == "ed25519-jwks":
            url = self.jwks_urls.get(protocol) or cls.callback_jwks_url
            names = cls.callback_signature_headers
            if not url or not names:
                raise _Unverified("the adapter declares Ed25519 callbacks without JWKS/headers")
            await self._verify_ed25519(protocol, url, names, headers, body)
        elif scheme == "standard-webhooks":
            secret = self.env.get(cls.callback_secret_env or "")
            if not secret:
                raise _Unverified(f"set {cls.callback_secret_env} to accept these callbacks")
            if not verify_standard(secret, headers, body):
                raise _Unverified("signature does not verify")
        elif token is None or not hmac.compare_digest(
            token.encode(), self.token(protocol).encode()
        ):
            raise _Unverified("the URL's token is wrong")

    def _owned_elsewhere(self, protocol: str, remote_id: str) -> bool:
        """Whether a live job's attempt has this remote id at another protocol: a provider
        with a valid signature poking at a job it does not run."""
        needle = f'"remote_id":"{remote_id}"'
        j = db.jobs
        with self.store.engine.connect() as conn:
            docs = conn.execute(
                select(j.c.doc).where(j.c.terminal.is_(False), j.c.doc.contains(needle))
            ).scalars()
            for doc in docs:
                for attempt in json.loads(doc).get("attempts", []):
                    pj = attempt.get("provider_job") or {}
                    if pj.get("remote_id") == remote_id and pj.get("protocol") != protocol:
                        return True
        return False
