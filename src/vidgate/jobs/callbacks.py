"""Inbound provider callbacks: verified where the provider signs, then only a hint to poll.

A callback never changes a job's state. It names a remote job; we find our job by that id
and ask its worker to poll now rather than at its next tick (the poll's answer is what we
trust). So a forged callback can at most cause one extra status call — and we still reject
it when the provider signs its callbacks:

* **fal** signs with Ed25519: message ``"{request_id}\\n{user_id}\\n{timestamp}\\n" +
  sha256_hex(body)``, checked against any key of fal's JWKS (cached for a day), timestamp
  within 300 s (provider-apis.md §7).
* **Replicate** signs with Standard Webhooks (HMAC-SHA256, ``whsec_`` secret from
  ``GET /v1/webhooks/default/secret``), provider-apis.md §8.
* Providers that do not sign (Luma, Kling, MiniMax, BytePlus) must call a URL carrying our
  per-provider token (an HMAC of the provider name under the gateway's webhook secret).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vidgate.errors import AuthFailed, InvalidRequest
from vidgate.jobs.store import JobStore
from vidgate.jobs.webhooks import verify as verify_standard

FAL_JWKS_URL = "https://rest.alpha.fal.ai/.well-known/jwks.json"
TOLERANCE_S = 300
JWKS_TTL_S = 24 * 3600

#: callback protocol -> (provider key in ProviderJob.protocol, how to read the remote id)
_REMOTE_ID_FIELDS = {
    "fal": ("fal-queue", ("request_id",)),
    "replicate": ("replicate", ("id",)),
    "luma": ("luma", ("id",)),
    "kling": ("kling", ("task_id", "data.task_id")),
    "minimax": ("minimax", ("task_id",)),
    "byteplus": ("byteplus-ark", ("id",)),
}


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
        replicate_secret: str | None = None,
        fal_jwks_url: str = FAL_JWKS_URL,
    ) -> None:
        self.store = store
        self.client = client
        self.token_secret = token_secret
        self.replicate_secret = replicate_secret
        self.fal_jwks_url = fal_jwks_url
        self._jwks: tuple[float, list[Ed25519PublicKey]] | None = None

    def token(self, provider: str) -> str:
        """The token an unsigned provider's callback URL must carry."""
        mac = hmac.new(self.token_secret.encode(), f"callback:{provider}".encode(), hashlib.sha256)
        return mac.hexdigest()[:32]

    async def _fal_keys(self) -> list[Ed25519PublicKey]:
        now = time.monotonic()
        if self._jwks is not None and now - self._jwks[0] < JWKS_TTL_S:
            return self._jwks[1]
        resp = await self.client.get(self.fal_jwks_url, timeout=10)
        resp.raise_for_status()
        keys = [
            Ed25519PublicKey.from_public_bytes(_b64url(k["x"]))
            for k in resp.json().get("keys", [])
            if k.get("kty") == "OKP" and k.get("crv") == "Ed25519" and k.get("x")
        ]
        self._jwks = (now, keys)
        return keys

    async def _verify_fal(self, headers: dict[str, str], body: bytes) -> None:
        h = {k.lower(): v for k, v in headers.items()}
        rid = h.get("x-fal-webhook-request-id")
        uid = h.get("x-fal-webhook-user-id")
        ts = h.get("x-fal-webhook-timestamp")
        sig = h.get("x-fal-webhook-signature")
        if not (rid and uid and ts and sig):
            raise AuthFailed("fal callback without its signature headers")
        try:
            if abs(time.time() - int(ts)) > TOLERANCE_S:
                raise AuthFailed("fal callback timestamp is outside 300 s")
            signature = bytes.fromhex(sig)
        except ValueError:
            raise AuthFailed("fal callback signature headers are malformed") from None
        message = f"{rid}\n{uid}\n{ts}\n{hashlib.sha256(body).hexdigest()}".encode()
        for key in await self._fal_keys():
            try:
                key.verify(signature, message)
                return
            except InvalidSignature:
                continue
        raise AuthFailed("fal callback signature does not verify")

    async def handle(
        self, provider: str, headers: dict[str, str], body: bytes, token: str | None = None
    ) -> CallbackResult:
        if provider not in _REMOTE_ID_FIELDS:
            raise InvalidRequest(
                f"no callbacks for {provider!r}; known: {', '.join(sorted(_REMOTE_ID_FIELDS))}"
            )
        if provider == "fal":
            await self._verify_fal(headers, body)
        elif provider == "replicate":
            if not self.replicate_secret:
                raise AuthFailed("set REPLICATE_WEBHOOK_SECRET to accept Replicate callbacks")
            if not verify_standard(self.replicate_secret, headers, body):
                raise AuthFailed("replicate callback signature does not verify")
        elif token is None or not hmac.compare_digest(token, self.token(provider)):
            raise AuthFailed(f"{provider} does not sign callbacks: the URL's token is wrong")
        try:
            data = json.loads(body)
        except ValueError:
            raise InvalidRequest("callback body is not JSON") from None
        protocol, fields = _REMOTE_ID_FIELDS[provider]
        remote_id = next((str(v) for f in fields if (v := _dig(data, f))), None)
        if remote_id is None:
            return CallbackResult(provider, None, None, False)
        job_id = self.store.find_by_remote_id(protocol, remote_id)
        hinted = job_id is not None and self.store.hint_poll(job_id)
        return CallbackResult(provider, remote_id, job_id, hinted)
