"""Outbound webhooks: Standard Webhooks signing and at-least-once delivery from the outbox.

Signing (https://www.standardwebhooks.com, the scheme OpenAI and Replicate use): headers
``webhook-id`` (the outbox row id, the same on every retry so receivers can deduplicate),
``webhook-timestamp`` (Unix seconds) and ``webhook-signature`` = ``v1,`` + base64 of
HMAC-SHA256 over ``"{id}.{timestamp}.{body}"`` keyed with the base64-decoded secret after its
``whsec_`` prefix.

Delivery: rows are claimed from the outbox with a lease, POSTed through the SSRF-safe
fetcher with redirects refused, and retried with exponential backoff and full jitter over
hours (the Standard Webhooks schedule: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h). A 410 Gone
disables the tenant endpoint for good; anything else non-2xx is retried until the schedule
runs out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import secrets
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from vidgate.errors import VidgateError
from vidgate.jobs.store import JobStore, OutboxEvent, OutboxItem
from vidgate.net.ssrf import SafeFetcher
from vidgate.types import Job

#: seconds to wait before each retry (Standard Webhooks' recommended schedule)
DEFAULT_SCHEDULE: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
TOLERANCE_S = 300


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def verify(secret: str, headers: dict[str, str], body: bytes, *, now: float | None = None) -> bool:
    """Check a Standard Webhooks signature (any of the space-separated ``v1,`` entries)."""
    h = {k.lower(): v for k, v in headers.items()}
    msg_id, ts, sigs = h.get("webhook-id"), h.get("webhook-timestamp"), h.get("webhook-signature")
    if not (msg_id and ts and sigs):
        return False
    try:
        stamp = int(ts)
    except ValueError:
        return False
    if abs((now if now is not None else time.time()) - stamp) > TOLERANCE_S:
        return False
    want = sign(secret, msg_id, stamp, body).split(",", 1)[1]
    return any(
        hmac.compare_digest(s.split(",", 1)[1], want) for s in sigs.split() if s.startswith("v1,")
    )


def job_event(job: Job) -> dict[str, Any]:
    """The event body for a job's state change (ids, state, cost, assets — never secrets)."""
    return {
        "type": f"job.{job.state.value}",
        "timestamp": datetime.now(UTC).isoformat(),
        "data": {
            "id": job.id,
            "tenant": job.tenant,
            "state": job.state.value,
            "offering": job.offering_id,
            "cost_usd": job.cost_usd,
            "error": job.error,
            "assets": [
                {
                    "id": a.id,
                    "sha256": a.sha256,
                    "bytes": a.bytes,
                    "duration_s": a.duration_s,
                    "width": a.width,
                    "height": a.height,
                }
                for a in job.assets
            ],
            "metadata": job.request.metadata,
        },
    }


def events_for(job: Job, endpoints: Sequence[dict[str, Any]]) -> list[OutboxEvent]:
    """One outbox event per target: the job's own webhook URL and each tenant endpoint."""
    payload = job_event(job)
    out = [
        OutboxEvent(url=e["url"], event_type=payload["type"], payload=payload, endpoint_id=e["id"])
        for e in endpoints
    ]
    if job.webhook_url:
        out.append(OutboxEvent(url=job.webhook_url, event_type=payload["type"], payload=payload))
    return out


class Deliverer:
    def __init__(
        self,
        store: JobStore,
        fetcher: SafeFetcher,
        *,
        default_secret: str,
        schedule: Sequence[float] = DEFAULT_SCHEDULE,
        owner: str = "deliverer",
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.fetcher = fetcher
        self.default_secret = default_secret
        self.schedule = tuple(schedule)
        self.owner = owner
        self.rng = rng

    def _secret(self, item: OutboxItem) -> str | None:
        if item.endpoint_id is None:
            return self.default_secret
        ep = self.store.endpoint(item.endpoint_id)
        if ep is None or not ep["enabled"]:
            return None
        return str(ep["secret"])

    def _retry_at(self, attempts_before: int) -> datetime | None:
        if attempts_before >= len(self.schedule):
            return None
        base = self.schedule[attempts_before]
        # Full jitter around the schedule point keeps a recovering receiver from being hit
        # by every queued event at the same instant.
        delay = base * (0.5 + self.rng())
        return datetime.now(UTC) + timedelta(seconds=delay)

    async def deliver_one(self, item: OutboxItem) -> str:
        secret = self._secret(item)
        if secret is None:
            self.store.outbox_result(item.id, state="disabled", error="endpoint disabled")
            return "disabled"
        body = item.payload.encode()
        stamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": "vidgate-webhooks/1",
            "webhook-id": item.id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": sign(secret, item.id, stamp, body),
        }
        status: int | None = None
        error: str | None = None
        try:
            resp = await self.fetcher.request("POST", item.url, content=body, headers=headers)
            status = resp.status_code
        except VidgateError as e:
            error = str(e)
        except Exception as e:  # network failures of every kind: retry later
            error = f"{type(e).__name__}: {e}"
        if status is not None and 200 <= status < 300:
            self.store.outbox_result(item.id, state="delivered", status=status)
            return "delivered"
        if status == 410:
            if item.endpoint_id is not None:
                self.store.disable_endpoint(item.endpoint_id, "answered 410 Gone")
            self.store.outbox_result(item.id, state="disabled", status=status, error="410 Gone")
            return "disabled"
        retry_at = self._retry_at(item.attempts)
        if retry_at is None:
            self.store.outbox_result(item.id, state="dead", status=status, error=error)
            return "dead"
        self.store.outbox_result(
            item.id,
            state="pending",
            status=status,
            error=error or f"HTTP {status}",
            retry_at=retry_at,
        )
        return "retry"

    async def run_once(self, limit: int = 50) -> dict[str, int]:
        results: dict[str, int] = {}
        for item in self.store.claim_outbox(self.owner, limit=limit):
            r = await self.deliver_one(item)
            results[r] = results.get(r, 0) + 1
        return results
