"""The model servers a gateway may send self-hosted jobs to, as they describe themselves.

Each ``vidgate model serve`` process answers ``GET /v1/models`` (docs/model-server-protocol.md)
with what it serves, its price per GPU hour, its measured seconds of compute per second of
video and its queue. This module reads those answers (cached for a moment, shared by every
adapter instance in the process), picks the least-loaded server that has a model, and turns
the answers into catalog data: a self-hosted offering is routable only while a configured
server serves its model, priced from that server's measured throughput.

Servers are configured as ``VIDGATE_LOCAL_DIFFUSERS_BASE_URL`` (comma-separated), the same
``VIDGATE_<NAME>_BASE_URL`` pattern as every other adapter's private endpoint; the value
``sandbox`` means the sandbox's emulator (a self-hosted route offline, without torch).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import httpx

from vidgate.catalog.loader import Catalog
from vidgate.catalog.schema import CatalogData, Offering, PriceRule, Source
from vidgate.errors import CapabilityMismatch, ProviderUnavailable, VidgateError
from vidgate.providers._http import json_body, send

PROTOCOL = "local-diffusers"
#: the environment variable naming the servers (read through Credentials.base_url_override)
ENV = "VIDGATE_LOCAL_DIFFUSERS_BASE_URL"
#: the configured value that points at the sandbox's emulator instead of real servers
SANDBOX = "sandbox"
#: seconds a server's /v1/models answer is trusted: long enough to spare the servers a call
#: per job in a burst, short enough that a queue emptying shows within a poll or two
TTL_S = 2.0


def normalise(url: str) -> str:
    """A server's protocol root: the URL as given, with ``/v1`` appended when missing."""
    url = url.strip().rstrip("/")
    return url if url.endswith("/v1") else f"{url}/v1"


def configured(value: str | None) -> list[str]:
    """The server list a ``VIDGATE_LOCAL_DIFFUSERS_BASE_URL`` value names (``sandbox`` and
    empty entries excluded: the caller decides what the sandbox's URL is)."""
    if not value:
        return []
    urls = [u for u in (p.strip() for p in value.split(",")) if u and u != SANDBOX]
    return list(dict.fromkeys(normalise(u) for u in urls))


@dataclass(frozen=True)
class Served:
    """One model on one server, as its ``/v1/models`` answered."""

    server: str
    id: str
    catalog_model: str | None
    modes: tuple[str, ...]
    usd_per_hour: float
    #: measured on the server; None until it finished a job
    compute_s_per_video_s: float | None
    depth: int
    max_depth: int
    running: bool
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def load(self) -> int:
        """Jobs ahead of a new one: those queued plus the one on the device."""
        return self.depth + (1 if self.running else 0)

    @property
    def full(self) -> bool:
        return self.depth >= self.max_depth > 0

    @property
    def usd_per_video_s(self) -> float | None:
        """Measured price of one second of video on this server, or None until measured."""
        if self.compute_s_per_video_s is None:
            return None
        return self.usd_per_hour / 3600.0 * self.compute_s_per_video_s

    def serves(self, offering: Offering) -> bool:
        return self.catalog_model == offering.model or self.id == offering.provider_model_id


def _number(value: Any, default: float) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return default


def parse_models(server: str, body: dict[str, Any]) -> list[Served]:
    """The entries of one ``/v1/models`` answer (entries without an id are skipped)."""
    out: list[Served] = []
    for m in body.get("data") or []:
        # a server still loading lists its model with "loaded": false and nothing else yet
        if not isinstance(m, dict) or not isinstance(m.get("id"), str) or m.get("loaded") is False:
            continue
        stats: dict[str, Any] = m["stats"] if isinstance(m.get("stats"), dict) else {}
        queue: dict[str, Any] = m["queue"] if isinstance(m.get("queue"), dict) else {}
        cs = stats.get("compute_s_per_video_s")
        out.append(
            Served(
                server=server,
                id=m["id"],
                catalog_model=m.get("catalog_model")
                if isinstance(m.get("catalog_model"), str)
                else None,
                modes=tuple(str(x) for x in m.get("modes") or ()),
                usd_per_hour=_number(m.get("usd_per_hour"), 0.0),
                compute_s_per_video_s=float(cs) if isinstance(cs, int | float) and cs > 0 else None,
                depth=int(_number(queue.get("depth"), 0)),
                max_depth=int(_number(queue.get("max_depth"), 0)),
                running=queue.get("running") is not None,
                raw=m,
            )
        )
    return out


@dataclass
class _Entry:
    at: float
    models: list[Served] | None
    error: VidgateError | None = None


class Fleet:
    """The configured servers' ``/v1/models``, cached for :data:`TTL_S` in this process."""

    _cache: dict[str, _Entry] = {}  # noqa: RUF012 — one cache per process, on purpose

    def __init__(
        self,
        client: httpx.AsyncClient,
        servers: Sequence[str],
        *,
        ttl_s: float = TTL_S,
        clock: Any = time.monotonic,
    ) -> None:
        self.client = client
        self.servers = [normalise(s) for s in servers]
        self.ttl_s = ttl_s
        self.clock = clock

    @classmethod
    def forget(cls) -> None:
        """Drop every cached answer (a test that changed a server's queue reads it afresh)."""
        cls._cache.clear()

    async def _read(self, server: str) -> _Entry:
        hit = self._cache.get(server)
        if hit is not None and self.clock() - hit.at < self.ttl_s:
            return hit
        try:
            resp = await send(self.client, "GET", f"{server}/models", provider=PROTOCOL)
            if resp.status_code >= 400:
                raise ProviderUnavailable(
                    f"model server {server} answered {resp.status_code} to /v1/models",
                    provider=PROTOCOL,
                    status_code=resp.status_code,
                )
            body = json_body(resp)
            models = parse_models(server, body)
            loading = [
                m
                for m in body.get("data") or []
                if isinstance(m, dict) and m.get("loaded") is False
            ]
            if loading and not models:
                raise ProviderUnavailable(
                    f"model server {server} is still loading its pipeline", provider=PROTOCOL
                )
            entry = _Entry(self.clock(), models)
        except VidgateError as e:
            entry = _Entry(self.clock(), None, e)
        self._cache[server] = entry
        return entry

    async def models(self) -> tuple[list[Served], list[str]]:
        """Every model every answering server serves, and why each silent server is out."""
        entries = await asyncio.gather(*(self._read(s) for s in self.servers))
        served: list[Served] = []
        down: list[str] = []
        for server, e in zip(self.servers, entries, strict=True):
            if e.models is None:
                down.append(f"{server}: {e.error.message if e.error else 'no answer'}")
            else:
                served.extend(e.models)
        return served, down

    async def choose(self, offering: Offering, mode: str) -> Served:
        """The least-loaded server serving the offering's model in this mode (a full server
        only when every one is full: its 429 then says when to come back)."""
        served, down = await self.models()
        fits = [s for s in served if s.serves(offering) and (not s.modes or mode in s.modes)]
        if not fits:
            if down:
                # a server that is down or loading may serve it once it is back: not final
                raise ProviderUnavailable(
                    f"no model server answered with {offering.model} ({'; '.join(down)})",
                    provider=PROTOCOL,
                )
            have = sorted({f"{s.id} ({s.catalog_model})" for s in served}) or ["nothing"]
            raise CapabilityMismatch(
                f"no configured model server serves {offering.model} for {mode.replace('_', '-')}"
                f" (offering {offering.id}); they serve: {', '.join(have)}. Start one with "
                f"`vidgate model serve` and list it in {ENV}",
                provider=PROTOCOL,
            )
        order = {s: i for i, s in enumerate(self.servers)}
        return min(fits, key=lambda s: (s.full, s.load, order.get(s.server, 0)))

    def note_submitted(self, chosen: Served) -> None:
        """Count a job just sent in the cached answer, so a burst inside the cache's life
        spreads over the servers instead of piling onto the one that looked idle."""
        entry = self._cache.get(chosen.server)
        if entry is None or entry.models is None:
            return
        entry.models = [
            Served(**{**s.__dict__, "depth": s.depth + 1}) if s == chosen else s
            for s in entry.models
        ]


# -- catalog data from the servers' answers ---------------------------------------------------


def unavailable_reason(offering: Offering) -> str | None:
    """Why an offering can never be served (catalog data: ``adapter_options.unavailable``)."""
    return offering.adapter_options.get("unavailable")


def _priced(offering: Offering, servers: list[Served], today: date) -> list[PriceRule]:
    measured = [s for s in servers if s.usd_per_video_s is not None]
    if not measured:
        return list(offering.price)  # the seed's figure until a server measured one
    # the dearest server that may take the job: a reservation at this covers any of them
    top = max(measured, key=lambda s: s.usd_per_video_s or 0.0)
    return [
        PriceRule(
            usd=top.usd_per_video_s or 0.0,
            source=Source(
                doc="user-config",
                section="model server /v1/models stats",
                as_of=today,
                note=(
                    f"{top.server} ({top.id}): {top.compute_s_per_video_s:.4g} s of compute per "
                    f"second of video at ${top.usd_per_hour:g}/h"
                ),
            ),
        )
    ]


def with_servers(
    catalog: Catalog, served: Iterable[Served], *, today: date | None = None
) -> Catalog:
    """The catalog with each self-hosted offering enabled while a server serves its model,
    priced from the servers' measurements, and ``adapter_options.served_by`` naming them."""
    served = list(served)
    day = today or date.today()
    offerings: list[Offering] = []
    for o in catalog.data.offerings:
        if o.protocol != PROTOCOL:
            offerings.append(o)
            continue
        mine = [s for s in served if s.serves(o)]
        if not mine or unavailable_reason(o) is not None:
            offerings.append(o)
            continue
        by = ", ".join(f"{s.server} ({s.id})" for s in mine)
        offerings.append(
            o.model_copy(
                update={
                    "enabled": True,
                    "price": _priced(o, mine, day),
                    "adapter_options": {**o.adapter_options, "served_by": by},
                }
            )
        )
    data = catalog.data.model_copy(update={"offerings": offerings})
    return Catalog(CatalogData.model_validate(data.model_dump()))


async def discover(client: httpx.AsyncClient, servers: Sequence[str]) -> list[Served]:
    """What the servers serve now (silent servers contribute nothing)."""
    fleet = Fleet(client, servers, ttl_s=0.0)
    served, _ = await fleet.models()
    return served


def discover_sync(servers: Sequence[str], *, timeout_s: float = 3.0) -> list[Served]:
    """:func:`discover` from synchronous code (catalog loading at the edge)."""

    async def go() -> list[Served]:
        async with httpx.AsyncClient(
            timeout=timeout_s, transport=httpx.AsyncHTTPTransport(retries=0)
        ) as client:
            return await discover(client, servers)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(go())
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, go()).result()


def servers_for(value: str | None, sandbox_url: Callable[[], str] | None = None) -> list[str]:
    """The servers a ``VIDGATE_LOCAL_DIFFUSERS_BASE_URL`` value names; ``sandbox`` adds the
    sandbox's emulator when ``sandbox_url`` is given (sandbox mode)."""
    servers = configured(value)
    if value and sandbox_url is not None and SANDBOX in (p.strip() for p in value.split(",")):
        servers.append(normalise(f"{sandbox_url()}/{PROTOCOL}"))
    return servers


def self_hosted_catalog(
    catalog: Catalog, value: str | None, sandbox_url: Callable[[], str] | None = None
) -> Catalog:
    """The catalog a gateway routes on: self-hosted offerings enabled and priced from what
    the configured servers answer now (unchanged when none is configured)."""
    servers = servers_for(value, sandbox_url)
    if not servers:
        return catalog
    return with_servers(catalog, discover_sync(servers))
