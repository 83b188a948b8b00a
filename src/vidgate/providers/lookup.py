"""Reconciliation by lookup: find the remote job an ambiguous create made, in the provider's
own job list, when the provider has no idempotency key and no lookup by our id.

A create whose answer never came (a crash, a timeout after sending) may or may not have made a
remote job. Where the provider lists its jobs, the job we made is the one created in the
attempt's time window whose inputs are ours. The rule, for every listing adapter:

- exactly one match → :class:`Adopt` it (the driver polls it; nothing is sent again);
- none, once the provider's visibility delay has passed since the attempt started →
  :class:`Absent`: the create never landed, so sending it now cannot pay twice;
- several → :class:`Ambiguous` with every candidate: a person (or ``vidgate reconcile``)
  chooses; guessing could adopt a job another request paid for.

An adapter declares what its list offers as data (:class:`Listing`) and implements one page
read (``list_page``) and what the list echoes of a create (``listed_inputs``); paging, the
time window, matching and the delay live here, once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from vidgate.errors import ProviderUnavailable

if TYPE_CHECKING:
    from vidgate.catalog.schema import Offering
    from vidgate.providers.base import Provider, ProviderJob
    from vidgate.types import VideoRequest


@dataclass(frozen=True)
class Listing:
    """What a provider's job list offers reconciliation (declared per adapter)."""

    #: seconds after a create before the list is sure to show it; "absent" is only said after
    visibility_s: float
    #: slack either side of the attempt's start: the provider's clock is not ours, and a list
    #: may give whole seconds
    skew_s: float = 120.0
    #: pages read at most; a window that needs more cannot be decided (the job stays parked)
    max_pages: int = 50


@dataclass(frozen=True)
class Listed:
    """One remote job as the list shows it."""

    remote_id: str
    created_at: float  # unix seconds
    #: what the list echoes of the create, in the create body's own names
    inputs: Mapping[str, Any]
    #: how to follow it if adopted (pinned like a create's answer)
    job: ProviderJob


@dataclass(frozen=True)
class Page:
    items: list[Listed]
    #: the cursor, offset or page number of the next (older) page; None at the end
    next: str | None = None


@dataclass(frozen=True)
class Adopt:
    job: ProviderJob


@dataclass(frozen=True)
class Absent:
    """No remote job carries our inputs: the create never landed; resubmitting is safe."""


@dataclass(frozen=True)
class Ambiguous:
    candidates: tuple[str, ...] = field(default_factory=tuple)


Found = Adopt | Absent | Ambiguous


def _canon(value: Any) -> str:
    # numbers the provider echoes as 5 or 5.0 (or "5" vs 5 in a list's typed view) compare
    # equal; everything else compares as canonical JSON
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(float(value))
    if isinstance(value, str):
        try:
            return repr(float(value))
        except ValueError:
            return json.dumps(value)
    return json.dumps(value, sort_keys=True, default=str)


def matches(expected: Mapping[str, Any], got: Mapping[str, Any]) -> bool:
    """Every field we sent is echoed with the same value (the list may show more)."""
    return all(k in got and _canon(got[k]) == _canon(v) for k, v in expected.items())


def correlation_seed(idempotency_key: str) -> int:
    """A seed drawn from an attempt's idempotency key, for a provider whose list echoes the
    seed but not the prompt: sent when the caller fixed no seed (the provider would draw one
    at random anyway), it tells apart creates that are alike but for the prompt, and the
    same attempt recomputes it at reconciliation without storing anything more. 31 bits:
    every seeded model takes it; two attempts collide once in ~2 billion."""
    digest = hashlib.sha256(idempotency_key.encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def unix(value: Any) -> float:
    """A list's ``created_at``: unix seconds, or an ISO 8601 string."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    raise ValueError(f"created_at {value!r} is not a time")


async def lookup(
    adapter: Provider,
    request: VideoRequest,
    offering: Offering,
    started_at: float,
    *,
    idempotency_key: str,
    now: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Found:
    """Find the remote job an attempt started at ``started_at`` made (see the module doc)."""
    listing = adapter.listing_for(offering)
    if listing is None:
        raise NotImplementedError(f"{adapter.protocol} does not list its jobs")
    expected = adapter.listed_inputs(request, offering, idempotency_key=idempotency_key)
    hits = await _scan(adapter, offering, listing, expected, started_at, now)
    if not hits:
        wait = started_at + listing.visibility_s - now()
        if wait > 0:
            # not visible yet is not absent: look again once the provider shows every create
            await sleep(wait)
            hits = await _scan(adapter, offering, listing, expected, started_at, now)
    if not hits:
        return Absent()
    if len(hits) == 1:
        return Adopt(hits[0].job)
    return Ambiguous(tuple(h.remote_id for h in hits))


async def _scan(
    adapter: Provider,
    offering: Offering,
    listing: Listing,
    expected: Mapping[str, Any],
    started_at: float,
    now: Callable[[], float],
) -> list[Listed]:
    since, until = started_at - listing.skew_s, now() + listing.skew_s
    hits: dict[str, Listed] = {}
    cursor: str | None = None
    for _ in range(listing.max_pages):
        page = await adapter.list_page(offering, cursor)
        for item in page.items:
            if since <= item.created_at <= until and matches(expected, item.inputs):
                hits[item.remote_id] = item  # a job that moved pages is still one job
        # lists are newest first: a page that reaches past the window ends the scan
        if page.next is None or any(i.created_at < since for i in page.items):
            return list(hits.values())
        cursor = page.next
    raise ProviderUnavailable(
        f"{adapter.protocol}'s job list is longer than {listing.max_pages} pages inside the "
        "attempt's window; the job stays parked for a person to check",
        provider=adapter.protocol,
    )
