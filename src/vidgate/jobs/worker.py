"""The worker: claims due jobs and drives each one to a terminal state.

One process holds many jobs at once (thousands: a remote video job mostly waits), each as an
asyncio task that sleeps between status calls. Ownership is a lease in the store, renewed
for all held jobs in one batch every third of the lease; a worker that dies (``kill -9``)
simply stops renewing, and after the lease runs out any worker claims the job again and
resumes it from its stored state — polling it if it has a provider id, never resubmitting.

HTTP calls are bounded per provider (a semaphore each) so one slow provider cannot starve
the others, and polling is paced by :class:`~vidgate.jobs.driver.Pacer`.

**Graceful shutdown** (SIGTERM, :meth:`Worker.stop`): no new claims; every job whose create
is on the wire (intent stored, provider id not yet) is let finish storing its id, for at
most ``grace_s``; every other claim is handed back at once (lease released, due now), so a
restarted or another worker resumes it immediately and nothing is parked.

**Poison work**: a job whose driving raises is retried by later claims, at most
``max_drive_errors`` times in all (the count is stored), then failed with the error kept.
A row that cannot be read is quarantined by the store, never fatal to the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from vidgate.jobs.driver import JobDriver, Pacer, ProgressFn
from vidgate.jobs.lanes import Lane
from vidgate.jobs.postprocess import PostProcessor
from vidgate.jobs.store import Claim, StaleLease
from vidgate.jobs.webhooks import Deliverer
from vidgate.types import AttemptState, Job, JobState

if TYPE_CHECKING:
    from vidgate.gateway import Gateway

log = logging.getLogger("vidgate.worker")


@dataclass
class WorkerConfig:
    concurrency: int = 1000  # jobs held at once
    per_provider: int = 64  # HTTP calls in flight per provider
    lease_s: float = 30.0
    claim_batch: int = 200
    idle_sleep_s: float = 0.25
    deliver_webhooks: bool = True
    progress_write_s: float = 5.0
    #: on stop, how long creates already on the wire may take to store their ids
    grace_s: float = 30.0
    #: crashes of a job's driving tolerated (across workers) before it is failed
    max_drive_errors: int = 3
    #: also step stories (parents whose shots are this store's jobs)
    drive_stories: bool = True
    #: threads of the store's own lane (jobs/lanes.py): state writes, claims and lease
    #: renewals never wait behind the media work in the default pool
    store_threads: int = 4


@dataclass
class _Held:
    claim: Claim
    task: asyncio.Task[Job]
    wake: asyncio.Event
    flags: dict[str, Any] = field(default_factory=dict)


class Worker:
    def __init__(
        self,
        gateway: Gateway,
        config: WorkerConfig | None = None,
        *,
        worker_id: str | None = None,
        only_job: str | None = None,
        on_progress: ProgressFn | None = None,
        on_finished: Callable[[Job], None] | None = None,
    ) -> None:
        self.gw = gateway
        self.config = config or WorkerConfig()
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.only_job = only_job
        self.on_progress = on_progress
        self.on_finished = on_finished
        self.held: dict[str, _Held] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._stop = asyncio.Event()
        self._changed = asyncio.Event()
        self.finished: dict[str, Job] = {}
        self.store_lane = Lane("vidgate-store", self.config.store_threads)
        self.driver = JobDriver(
            store=gateway.store,
            storage=gateway.storage,
            catalog=gateway.catalog,
            adapters=gateway,
            client=gateway.client(),
            pacer=Pacer(
                min_s=gateway.settings.poll_interval_s,
                max_s=max(gateway.settings.poll_interval_s, 15.0),
            ),
            synthetic=gateway.sandbox,
            health=gateway.health,
            take_slot=gateway.take_slot,
            slots=self._slot,
            endpoints=lambda tenant: gateway.store.endpoints(tenant),
            progress_write_s=self.config.progress_write_s,
            fallback_on_stall=gateway.settings.fallback_on_stall,
            top_up=gateway.store.top_up,
            store_lane=self.store_lane,
            # stages checked now: a bad signing key or model path fails the worker's start
            post=PostProcessor.configure(
                gateway.settings, sandbox_url=gateway.sandbox_url if gateway.sandbox else None
            ),
        )

    def _slot(self, provider: str) -> asyncio.Semaphore:
        sem = self._slots.get(provider)
        if sem is None:
            sem = self._slots[provider] = asyncio.Semaphore(self.config.per_provider)
        return sem

    def stop(self) -> None:
        self._stop.set()

    # -- loops -----------------------------------------------------------------------------

    async def run(self, *, until_idle: bool = False) -> None:
        """Work until :meth:`stop` (or, with ``until_idle``, until nothing is left to do)."""
        store = self.gw.store
        await self.store_lane.run(
            store.worker_heartbeat,
            self.id,
            socket.gethostname(),
            os.getpid(),
            self.config.concurrency,
        )
        loops = [asyncio.create_task(self._heartbeat_loop())]
        if self.config.deliver_webhooks:
            loops.append(asyncio.create_task(self._outbox_loop()))
        if self.config.drive_stories and self.only_job is None:
            # stories sit above jobs (a story's shots are jobs): imported here, lazily
            from vidgate.stories.driver import StoryLoop

            loops.append(asyncio.create_task(StoryLoop(self.gw, self.id).run(self._stop)))
        try:
            await self._claim_loop(until_idle)
        finally:
            self._stop.set()
            try:
                await self._wind_down()
            finally:
                for t in loops:
                    t.cancel()
                await asyncio.gather(*loops, return_exceptions=True)
                with contextlib.suppress(Exception):
                    await self.store_lane.run(store.worker_gone, self.id)
                self.store_lane.close()

    async def _wind_down(self) -> None:
        """Creates on the wire finish (bounded by ``grace_s``); every claim is handed back."""
        on_wire = self.driver.on_wire
        loop = asyncio.get_running_loop()
        until = loop.time() + self.config.grace_s
        # Everything not in the middle of a create stops now; its stored state is complete.
        for jid, held in list(self.held.items()):
            if jid not in on_wire:
                held.task.cancel()
        left = self.driver.wire_left
        while on_wire.intersection(self.held) and loop.time() < until:
            left.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(left.wait(), timeout=until - loop.time())
        for held in list(self.held.values()):
            held.task.cancel()
        claims = [h.claim for h in self.held.values()]
        await asyncio.gather(*(h.task for h in self.held.values()), return_exceptions=True)
        for claim in claims:
            if claim.owner and not claim.job.state.terminal:
                with contextlib.suppress(Exception):
                    await self.store_lane.run(self.gw.store.hand_back, claim)

    async def _claim_loop(self, until_idle: bool) -> None:
        cfg = self.config
        while not self._stop.is_set():
            free = cfg.concurrency - len(self.held)
            claims: list[Claim] = []
            if free > 0:
                claims = await self.store_lane.run(
                    self.gw.store.claim,
                    self.id,
                    limit=min(free, cfg.claim_batch),
                    lease_s=cfg.lease_s,
                    job_id=self.only_job,
                )
            for claim in claims:
                h = self.held.get(claim.job.id)
                if h is not None and not h.task.done():
                    # Our own lease lapsed (a heartbeat late on a loaded machine) and this
                    # loop claimed the job again: keep its one driver, now with the new
                    # fence, instead of starting a second one beside it.
                    h.claim.fence = claim.fence
                    h.claim.owner = claim.owner
                    continue
                self._start(claim)
            if self.only_job is not None and self.only_job in self.finished:
                return
            if until_idle and not self.held and not claims:
                return
            if not claims:
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=cfg.idle_sleep_s)

    def _start(self, claim: Claim) -> None:
        held = _Held(claim=claim, task=None, wake=asyncio.Event())  # type: ignore[arg-type]
        held.task = asyncio.create_task(self._drive(held))
        self.held[claim.job.id] = held

    async def _drive(self, held: _Held) -> Job:
        job_id = held.claim.job.id
        try:
            job = await self.driver.drive(
                held.claim, wake=held.wake, flags=held.flags, on_progress=self.on_progress
            )
            self.finished[job_id] = job
            if self.on_finished is not None and job.state.terminal:
                with contextlib.suppress(Exception):
                    self.on_finished(job)
            return job
        except StaleLease:
            log.warning("lost the lease on %s; another worker has it", job_id)
            return held.claim.job
        except asyncio.CancelledError:
            raise
        except Exception as e:
            # A bug must not take the worker down with it: the job's lease runs out and
            # another claim retries it from its stored state (never resubmitting a create) —
            # a bounded number of times, then the job fails with the error kept.
            log.exception("driving %s failed", job_id)
            with contextlib.suppress(Exception):
                await self._poisoned(held.claim, e)
            return held.claim.job
        finally:
            self.held.pop(job_id, None)
            self._changed.set()

    async def _poisoned(self, claim: Claim, exc: Exception) -> None:
        store = self.gw.store
        text = f"{type(exc).__name__}: {exc}"
        n = await self.store_lane.run(store.drive_failed, claim, text, self.config.max_drive_errors)
        # Let the next claim try again soon, from the stored state.
        await self.store_lane.run(store.hand_back, claim)
        if n < self.config.max_drive_errors:
            return
        fresh = await self.store_lane.run(store.claim, self.id, job_id=claim.job.id, lease_s=30.0)
        if not fresh:
            return
        c = fresh[0]
        c.job.error = {
            "code": "driver_error",
            "message": f"driving this job failed {n} times; last error: {text}"[:2000],
        }
        # An attempt still open may bill: keep it pending (reserved) rather than forget it.
        ledger = []
        for a in c.job.attempts:
            if a.state in (AttemptState.SUBMITTING, AttemptState.SUBMITTED, AttemptState.RUNNING):
                ledger.append(self.driver._end_attempt(c.job, a.n - 1, AttemptState.AMBIGUOUS))
        c.job.finished_at = datetime.now(UTC)
        c.job.state = JobState.FAILED
        c.job.cost_usd = sum(a.cost_usd or 0.0 for a in c.job.attempts)
        await self.driver._save(c, ledger=ledger)

    async def _heartbeat_loop(self) -> None:
        store = self.gw.store
        every = self.config.lease_s / 3
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=every)
            if self._stop.is_set():
                return
            fences = {jid: h.claim.fence for jid, h in self.held.items()}
            try:
                await self.store_lane.run(
                    store.worker_heartbeat,
                    self.id,
                    socket.gethostname(),
                    os.getpid(),
                    self.config.concurrency,
                )
                held = await self.store_lane.run(store.renew, self.id, fences, self.config.lease_s)
            except Exception:
                log.exception("heartbeat failed; leases may lapse")
                continue
            self._apply(fences, held)

    def _apply(self, fences: dict[str, int], held: dict[str, dict[str, Any]]) -> None:
        for jid in fences:
            h = self.held.get(jid)
            if h is None:
                continue
            flags = held.get(jid)
            if flags is None:
                if h.claim.fence != fences[jid]:
                    continue  # re-claimed by this worker since the snapshot: still ours
                if jid in self.driver.on_wire:
                    # Cutting a create off mid-flight would turn a definite answer into an
                    # ambiguous one; let it finish: its fenced write of the id fails if
                    # another worker really has the job, and the driver stops then.
                    continue
                if not h.task.done() and not h.claim.job.state.terminal:
                    log.warning("lease on %s lost; stopping work on it", jid)
                    h.task.cancel()
                continue
            if flags["cancel_requested"] and not h.flags.get("cancel_requested"):
                h.flags["cancel_requested"] = True
                h.wake.set()
            hint = flags.get("poll_hint_at")
            if hint is not None and hint != h.flags.get("poll_hint_at"):
                h.flags["poll_hint_at"] = hint
                h.wake.set()  # a provider callback: poll now rather than at the next tick

    async def _outbox_loop(self) -> None:
        deliverer = Deliverer(
            self.gw.store,
            self.gw.fetcher(),
            default_secret=self.gw.webhook_secret(),
            schedule=self.gw.settings.webhook_schedule(),
            owner=self.id,
        )
        while not self._stop.is_set():
            try:
                done = await deliverer.run_once()
            except Exception:
                log.exception("webhook delivery round failed")
                done = {}
            if not done:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=0.5)


async def run_worker(
    gateway: Gateway, config: WorkerConfig, *, stop: Callable[[], bool] | None = None
) -> None:
    worker = Worker(gateway, config)
    task = asyncio.create_task(worker.run())
    try:
        while not task.done():
            await asyncio.sleep(0.5)
            if stop is not None and stop():
                worker.stop()
        await task
    finally:
        worker.stop()
