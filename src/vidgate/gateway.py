"""The library facade: one object that routes, submits, runs and reports jobs.

``Gateway`` is async inside; :func:`generate` is the small sync entry point for scripts::

    from vidgate import VideoRequest, generate
    job = generate(VideoRequest(prompt="a red fox in snow", duration_s=5), sandbox=True)
    print(job.assets[0].uri, job.cost_usd)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from datetime import UTC, datetime
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

import httpx

from vidgate.billing.accounts import Accounts
from vidgate.catalog.loader import Catalog, load_catalog
from vidgate.catalog.schema import Offering
from vidgate.errors import InvalidRequest, NoRoute
from vidgate.jobs.driver import ProgressFn
from vidgate.jobs.store import JobStore, request_hash
from vidgate.jobs.worker import Worker, WorkerConfig
from vidgate.net.ssrf import SafeFetcher
from vidgate.providers.base import Provider, ProviderJob, adapter_class, registry
from vidgate.providers.options import govern as govern_options
from vidgate.routing.health import BreakerConfig, Health
from vidgate.routing.ratelimit import RateLimits, credential_id
from vidgate.routing.router import RoutePlan, Router, RouterEnv
from vidgate.routing.shared_health import HealthSync, namespace_for
from vidgate.routing.stats import LearnedStats
from vidgate.settings import Credentials, Settings
from vidgate.storage.assets import AssetStorage
from vidgate.types import Job, JobState, VideoRequest

#: how often a running process re-learns latency and failure stats from the job store
STATS_REFRESH_S = 120.0
#: connections the shared HTTP client opens and keeps, across every provider host: room for
#: a few providers' worth of the worker's per-provider calls in flight (64 each by default)
POOL_CONNECTIONS = 256


class Gateway:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        catalog: Catalog | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self._catalog = catalog
        self.credentials = credentials or Credentials(sandbox=self.settings.sandbox)
        self._sandbox: Any = None  # a SandboxServer when started in-process
        self._client: httpx.AsyncClient | None = None
        self._health_sync: HealthSync | None = None  # breakers shared through Redis

    # -- wiring ----------------------------------------------------------------------------

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = load_catalog(self.settings.catalog)
            # self-hosted offerings are routable while a configured model server serves them
            from vidgate.providers.local_fleet import PROTOCOL, self_hosted_catalog

            self._catalog = self_hosted_catalog(
                self._catalog,
                self.credentials.base_url_override(PROTOCOL),
                self.sandbox_url if self.sandbox else None,
            )
        return self._catalog

    @cached_property
    def store(self) -> JobStore:
        return JobStore(self.settings.resolved_database_url())

    @cached_property
    def accounts(self) -> Accounts:
        return Accounts(self.store)

    @cached_property
    def storage(self) -> AssetStorage:
        return AssetStorage(self.settings.resolved_storage_url())

    @property
    def sandbox(self) -> bool:
        return self.settings.sandbox

    def sandbox_url(self) -> str:
        """The sandbox to talk to: ``VIDGATE_SANDBOX_URL``, or one started in this process."""
        if self.settings.sandbox_url:
            return self.settings.sandbox_url.rstrip("/")
        if self._sandbox is None:
            self._sandbox = self._start_sandbox()
        return str(self._sandbox.url)

    def _start_sandbox(self) -> Any:
        """Start the in-process sandbox, on the port it had last time when that is free:
        jobs pin their provider's URL, so a restarted process must find the sandbox (and its
        durable records) where it left them."""
        from vidgate.sandbox.app import SandboxServer

        home = self.settings.sandbox_home()
        port_file = home / "port"
        ports = [0]
        if port_file.exists():
            with contextlib.suppress(ValueError):
                ports.insert(0, int(port_file.read_text().strip()))
        last: BaseException | None = None
        for port in ports:
            try:
                server = SandboxServer(
                    home, self.catalog, port=port, time_scale=self.settings.sandbox_time_scale
                ).start()
            except (OSError, RuntimeError, SystemExit) as e:
                last = e
                continue
            port_file.write_text(str(server.url.rsplit(":", 1)[1]))
            return server
        raise RuntimeError(f"could not start the sandbox: {last}")

    @cached_property
    def emulated(self) -> frozenset[str]:
        from vidgate.sandbox.app import emulated_protocols

        return frozenset(emulated_protocols())

    def client(self) -> httpx.AsyncClient:
        # No transport retries: a create call must go out exactly once (design.md §6).
        if self._client is None or self._client.is_closed:
            t = self.settings.http_timeout_s
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(t, connect=min(10.0, t)),
                # Keep every connection a worker's polls open alive between rounds: httpx's
                # default keeps 20, so each round of thousands of polls closed and reopened
                # the rest (a new TLS handshake each at a real provider). 30 s outlives the
                # usual poll interval and stays under the common 60 s server idle timeouts.
                limits=httpx.Limits(
                    max_connections=POOL_CONNECTIONS,
                    max_keepalive_connections=POOL_CONNECTIONS,
                    keepalive_expiry=30.0,
                ),
                transport=httpx.AsyncHTTPTransport(retries=0),
                follow_redirects=False,
            )
        return self._client

    def _base_url(self, cls: type[Provider], provider: str) -> str | None:
        if self.sandbox:
            path = urlsplit(cls.default_base_url).path.rstrip("/")
            return f"{self.sandbox_url()}/{cls.protocol}{path}"
        return self.credentials.base_url_override(provider)

    def for_offering(self, offering: Offering) -> Provider:
        cls = adapter_class(offering.protocol)
        return cls(
            client=self.client(),
            credentials=self.credentials,
            base_url=self._base_url(cls, offering.provider),
        )

    def for_job(self, job: ProviderJob) -> Provider:
        # Follow-up calls go exactly where the job was created: its stored base URL.
        cls = adapter_class(job.protocol)
        return cls(client=self.client(), credentials=self.credentials, base_url=job.base_url)

    @cached_property
    def health(self) -> Health:
        s = self.settings
        health = Health(
            BreakerConfig(
                window=s.breaker_window,
                min_calls=s.breaker_min_calls,
                failure_ratio=s.breaker_failure_ratio,
                open_s=s.breaker_open_s,
                max_probes=s.breaker_max_probes,
            ),
            # a provider-wide outage shows across its offerings: trip on more evidence (and
            # never on less than an offering needs)
            BreakerConfig(
                window=max(40, 2 * s.breaker_window), min_calls=max(8, s.breaker_min_calls)
            ),
        )
        if s.redis_url:
            # every process sharing this job store shares breaker transitions (pub/sub)
            self._health_sync = HealthSync(
                health, s.redis_url, namespace_for(s.resolved_database_url())
            )
        return health

    @cached_property
    def ratelimits(self) -> RateLimits:
        limits = {p: i.rate_limit for p, i in self.catalog.providers.items() if i.rate_limit}
        return RateLimits(limits, storage_url=self.settings.redis_url or "memory://")

    def credential_key(self, provider: str) -> str:
        """Which credential a provider's calls use, as a hash (rate limits are per key)."""
        names = next(
            (
                o.credential_env
                for o in self.catalog.offerings.values()
                if o.provider == provider and o.credential_env
            ),
            [],
        )
        present = bool(names) and self.credentials.present(names)
        secret = "|".join(self.credentials.get(n) for n in names) if present else "none"
        return credential_id(provider, secret)

    def key_limiter(self) -> _KeyLimiter:
        return _KeyLimiter(self.ratelimits)

    def headroom(self, provider: str) -> bool:
        return self.ratelimits.headroom(provider, self.credential_key(provider))

    def take_slot(self, offering: Offering) -> bool:
        return self.ratelimits.take(offering.provider, self.credential_key(offering.provider))

    @cached_property
    def stats(self) -> LearnedStats:
        return LearnedStats(min_samples=self.settings.learn_min_samples)

    def refresh_stats(self, recent: int = 5000) -> LearnedStats:
        """Re-learn latency, failure and gate-quality statistics from the most recent jobs."""
        learned = LearnedStats.from_jobs(
            self.store.list(limit=recent),
            self.catalog,
            min_samples=self.settings.learn_min_samples,
            # a sandbox gateway learns quality from the sandbox's (defective) clips
            synthetic_quality=self.settings.sandbox,
        )
        self.stats.stats = learned.stats
        self.stats.quality_stats = learned.quality_stats
        return self.stats

    @cached_property
    def _router(self) -> Router:
        # An offering is routable only through an adapter; in sandbox mode the sandbox must
        # also emulate its protocol. Routing is otherwise the same as in production.
        protocols = frozenset(registry())
        if self.sandbox:
            protocols &= self.emulated
        self.refresh_stats()
        # keep learning while this process runs, from every process's history in the store
        self.stats.refresh_every(lambda: self.refresh_stats().stats, every_s=STATS_REFRESH_S)
        return Router(
            RouterEnv(
                catalog=self.catalog,
                protocols=protocols,
                has_credentials=self.credentials.present,
                health=self.health,
                headroom=self.headroom,
                stats=self.stats,
            )
        )

    def router(self) -> Router:
        """One router per gateway: it keeps compiled offerings and per-shape caches."""
        return self._router

    def fetcher(self) -> SafeFetcher:
        """The SSRF-safe fetcher for user-supplied URLs (webhooks, references)."""
        return SafeFetcher(self.client(), allow_hosts=self.settings.allow_hosts())

    def webhook_secret(self) -> str:
        if self.settings.webhook_secret:
            return self.settings.webhook_secret
        path = self.settings.resolved_home() / "webhook_secret"
        if not path.exists():
            from vidgate.jobs.webhooks import new_secret

            # created 0600 in one step: a write-then-chmod leaves the secret readable by
            # anyone for a moment; O_EXCL keeps a concurrent first start from clobbering it
            with contextlib.suppress(FileExistsError):
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(new_secret())
        return path.read_text().strip()

    # -- operations ------------------------------------------------------------------------

    def route(
        self, request: VideoRequest, policy: str = "cheapest", pinned: list[str] | None = None
    ) -> RoutePlan:
        try:
            return self.router().route(request, policy=policy, pinned=pinned)
        except NoRoute as e:
            # every route down right now: a job with a deadline is queued to wait for one
            from vidgate.jobs.waiting import route_when_down

            return route_when_down(self.router(), request, policy, pinned, e)

    def submit(
        self,
        request: VideoRequest,
        *,
        policy: str = "cheapest",
        pinned: list[str] | None = None,
        tenant: str = "default",
        idempotency_key: str | None = None,
        webhook_url: str | None = None,
    ) -> Job:
        """Route and persist a job (state ``queued``); a worker or :meth:`run` executes it.

        With an ``idempotency_key`` (scoped to the tenant) a repeat returns the job the
        first call made; the same key with a different request is an error."""
        if webhook_url is not None and not webhook_url.startswith(("https://", "http://")):
            raise InvalidRequest(f"webhook url {webhook_url!r} must be http(s)://")
        plan = self.route(request, policy=policy, pinned=pinned)
        # provider_options may neither change the price nor carry an internal URL: checked
        # here so the library, the CLI and the API all refuse before any job exists
        govern_options(
            request,
            [c.offering for c in plan.ranked],
            self.catalog.offerings.values(),
            allow_hosts=self.settings.allow_hosts(),
        )
        now = datetime.now(UTC)
        route = plan.explain()
        route["ranked"] = [c.offering.id for c in plan.ranked]
        route["estimates"] = {c.offering.id: c.cost_usd for c in plan.ranked}
        job = Job(
            id="job_" + uuid.uuid4().hex[:20],
            tenant=tenant,
            state=JobState.QUEUED,
            request=request,
            policy=plan.policy,
            created_at=now,
            updated_at=now,
            offering_id=plan.choice.offering.id,
            route=route,
            estimated_cost_usd=plan.choice.cost_usd,
            synthetic=self.sandbox,
            webhook_url=webhook_url,
        )
        fingerprint = request_hash(
            request, {"policy": policy, "pinned": pinned, "webhook": webhook_url}
        )
        # Hold what the chosen offering costs; a dearer fallback tops the hold up atomically
        # when it is reached, or is skipped with the reason when the budget cannot cover it
        # (JobDriver._cover). Reserving the whole chain's worst case refused jobs that fit.
        worst = plan.choice.cost_usd or 0.0
        if self.accounts.reserve(tenant, worst):
            job.reserved_usd = worst
        try:
            stored, created = self.store.create(
                job, idempotency_key=idempotency_key, fingerprint=fingerprint
            )
        except BaseException:
            if job.reserved_usd:
                self.accounts.release(tenant, worst)
            raise
        if not created and job.reserved_usd:
            self.accounts.release(tenant, worst)  # a replay: the first call holds the budget
        return stored

    def worker(self, config: WorkerConfig | None = None, **kw: Any) -> Worker:
        return Worker(self, config, **kw)

    async def run(self, job_id: str, on_progress: ProgressFn | None = None) -> Job:
        """Drive one job here and now (an inline worker for it), or, when a worker
        elsewhere holds it, wait for that worker to finish it."""
        worker = self.worker(
            WorkerConfig(concurrency=1, deliver_webhooks=False),
            only_job=job_id,
            on_progress=on_progress,
        )
        task = asyncio.create_task(worker.run())
        try:
            while not task.done():
                await asyncio.sleep(0.05)
                if job_id not in worker.held and job_id not in worker.finished:
                    job = await asyncio.to_thread(self.store.get, job_id)
                    if job.state.terminal:
                        break
            worker.stop()
            await task
        finally:
            worker.stop()
        # Hand this job's webhook events to the receiver now rather than at the next worker.
        from vidgate.jobs.webhooks import Deliverer

        await Deliverer(
            self.store,
            self.fetcher(),
            default_secret=self.webhook_secret(),
            schedule=self.settings.webhook_schedule(),
        ).run_once()
        return await asyncio.to_thread(self.store.get, job_id)

    async def wait(
        self,
        job_id: str,
        *,
        timeout_s: float | None = None,
        on_progress: ProgressFn | None = None,
        tenant: str | None = None,
    ) -> Job:
        """Wait for a job another worker runs; returns it once terminal (or at timeout)."""
        loop = asyncio.get_running_loop()
        until = None if timeout_s is None else loop.time() + timeout_s
        last: tuple[object, ...] | None = None
        while True:
            job = await asyncio.to_thread(self.store.get, job_id, tenant)
            key = (job.state, job.progress)
            if key != last and on_progress is not None:
                res = on_progress(job)
                if res is not None:
                    await res
            last = key
            if job.state.terminal or (until is not None and loop.time() >= until):
                return job
            await asyncio.sleep(0.25)

    async def cancel(self, job_id: str, tenant: str | None = None) -> Job:
        """Cancel a job: remotely where the provider can, and in any case on our side."""
        job = await asyncio.to_thread(self.store.get, job_id, tenant)
        if job.state.terminal:
            return job
        await asyncio.to_thread(self.store.request_cancel, job_id, tenant)
        if not await asyncio.to_thread(self.store.live_workers):
            return await self.run(job_id)  # nobody else will act on the flag: do it here
        return await self.wait(job_id, timeout_s=60, tenant=tenant)

    async def generate(
        self,
        request: VideoRequest,
        *,
        policy: str = "cheapest",
        pinned: list[str] | None = None,
        tenant: str = "default",
        on_progress: ProgressFn | None = None,
    ) -> Job:
        job = self.submit(request, policy=policy, pinned=pinned, tenant=tenant)
        return await self.complete(job.id, on_progress)

    async def complete(self, job_id: str, on_progress: ProgressFn | None = None) -> Job:
        """Wait for a running worker to finish the job, or run it inline if none is up."""
        if await asyncio.to_thread(self.store.live_workers):
            return await self.wait(job_id, on_progress=on_progress)
        return await self.run(job_id, on_progress)

    def storage_path(self, uri: str) -> str:
        prefix = f"{self.storage.protocol}://"
        return uri[len(prefix) :] if uri.startswith(prefix) else uri

    def delete_job(self, job: Job) -> Job:
        """Delete a finished job's stored files; keep its record and ledger (accounting)."""
        for asset in job.assets:
            self.storage.delete(self.storage_path(asset.uri))
        job.deleted = True
        return self.store.update_finished(job)

    def job(self, job_id: str, tenant: str | None = None) -> Job:
        return self.store.get(job_id, tenant)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def close(self) -> None:
        if "stats" in self.__dict__:
            self.stats.stop()
        if self._health_sync is not None:
            self._health_sync.close()
            self._health_sync = None
        if self._sandbox is not None:
            self._sandbox.stop()
            self._sandbox = None
        if "store" in self.__dict__:
            self.store.close()


class _KeyLimiter:
    """Per-API-key request rates, on the same `limits` storage as provider limits."""

    def __init__(self, limits: RateLimits) -> None:
        self.limits = limits

    def take(self, key_id: str, rpm: int) -> bool:
        return self.limits.take_rate(key_id, rpm)


def generate(
    request: VideoRequest,
    *,
    sandbox: bool | None = None,
    policy: str = "cheapest",
    settings: Settings | None = None,
) -> Job:
    """Generate one video synchronously and return the finished job."""
    s = settings or Settings()
    if sandbox is not None:
        s = s.model_copy(update={"sandbox": sandbox})
    gw = Gateway(s)

    async def _go() -> Job:
        try:
            return await gw.generate(request, policy=policy)
        finally:
            await gw.aclose()

    try:
        return asyncio.run(_go())
    finally:
        gw.close()
