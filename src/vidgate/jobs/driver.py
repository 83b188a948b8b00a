"""Drive one claimed job to a terminal state with fenced writes.

The rules that keep money safe (design.md §6) are enforced here:

* the attempt (our intent) is saved *before* the provider's create call, and the provider's
  job id is saved the moment the call returns;
* a create is never retried: a definite refusal (429, 503, connection refused, the adapter's
  own capability check) moves on to the next ranked offering; an ambiguous one (timeout or a
  crash after sending) is reconciled through the provider's idempotency key or lookup where
  it has one, and otherwise parked as ``needs_reconciliation``;
* **the ambiguity window is as narrow as the create itself.** A job is ``submitting`` only
  from the moment its create request can actually leave: the provider's concurrency slot and
  rate-limit permit are acquired *first*, then the intent is stored, then the request is
  sent, with nothing in between that waits on other jobs. :meth:`JobDriver._store_intent`
  refuses to write an intent without a live :class:`SendPermit` for that offering, so the
  order is enforced by the code, not by convention. A crash while waiting for a slot leaves
  the job in ``routing`` with no new attempt; the next claim takes it up as if nothing
  happened;
* an attempt with a provider job id is only ever polled, never resubmitted;
* an attempt given up on (status outage, no first progress) is cancelled where the provider
  can; where it cannot and ``fallback_on_stall`` allows moving on, it is ``abandoned``:
  booked ``pending``, followed to its end while the next offering runs, and settled at what
  it cost; the job's reservation is topped up to cover both first;
* what an ended attempt costs is decided in one place,
  :func:`vidgate.billing.settle.attempt_charge`;
* downloading is retried on its own, without generating again;
* every attempt that ends gets exactly one ledger row, and every terminal state its webhook
  events, each in the same transaction as the state change.

Every store write presents the claim's fencing token; if another worker has claimed the job
meanwhile, the write raises :class:`StaleLease` and this driver stops touching the job.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import httpx

from vidgate.billing.settle import attempt_charge, reported_cost
from vidgate.catalog.loader import Catalog
from vidgate.catalog.schema import Offering
from vidgate.errors import (
    AmbiguousSubmission,
    AuthFailed,
    BudgetExceeded,
    CapabilityMismatch,
    ContentRejected,
    InvalidRequest,
    ProviderProtocolError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
    RetryableError,
    VidgateError,
)
from vidgate.jobs import waiting
from vidgate.jobs.crash import crash_point
from vidgate.jobs.lanes import Lane
from vidgate.jobs.postprocess import PostProcessor, job_cost, post_process
from vidgate.jobs.store import Claim, JobStore, LedgerEntry, OutboxEvent
from vidgate.jobs.webhooks import events_for
from vidgate.providers.base import Provider, ProviderJob, RemoteAsset, RemoteState
from vidgate.providers.lookup import Adopt, Ambiguous, lookup
from vidgate.routing.health import Health
from vidgate.storage.assets import AssetStorage
from vidgate.storage.media import probe
from vidgate.types import Asset, Attempt, AttemptState, Job, JobState

T = TypeVar("T")
ProgressFn = Callable[[Job], Awaitable[None] | None]

#: download attempts per asset before the job fails (generation is not repeated)
DOWNLOAD_TRIES = 4
#: consecutive failed status calls tolerated before the attempt is given up
POLL_ERRORS_MAX = 8


class Adapters(Protocol):
    def for_offering(self, offering: Offering) -> Provider: ...
    def for_job(self, job: ProviderJob) -> Provider: ...


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Pacer:
    """How long to wait before the next status call.

    Never sooner than the provider asked (``openai-poll-after-ms``, Retry-After); otherwise a
    tenth of the time the job has run so far, clamped to [min_s, max_s] — fast feedback for
    fast models, few calls for the ten-minute ones. When the provider reports progress, the
    remaining time it implies (elapsed × (1 − p) / p) caps the wait, so polls converge on the
    finish instead of overshooting it. After errors: exponential backoff with full jitter.
    """

    min_s: float = 2.0
    max_s: float = 15.0
    fraction: float = 0.1

    def next(self, *, hint: float | None, elapsed: float, progress: float | None = None) -> float:
        base = min(self.max_s, max(self.min_s, elapsed * self.fraction))
        if progress is not None and 0.05 <= progress < 1.0:
            eta = elapsed * (1.0 - progress) / progress
            base = min(base, max(self.min_s, eta))
        return max(hint or 0.0, base)

    def backoff(self, errors: int, retry_after: float | None) -> float:
        if retry_after:
            return retry_after
        return random.uniform(0, min(60.0, self.min_s * 2**errors))


@dataclass(eq=False)
class SendPermit:
    """Proof that a create may go on the wire *now*: the provider's concurrency slot is held
    (and its rate-limit permit was taken). Only :meth:`JobDriver._send_permit` makes live
    ones, and only for as long as the slot is held."""

    provider: str
    offering_id: str
    live: bool = False


class Stop(Exception):
    """The driver must stop working on this job (lost lease or shutdown)."""


class JobDriver:
    def __init__(
        self,
        *,
        store: JobStore,
        storage: AssetStorage,
        catalog: Catalog,
        adapters: Adapters,
        client: httpx.AsyncClient,
        pacer: Pacer | None = None,
        synthetic: bool = False,
        health: Health | None = None,
        take_slot: Callable[[Offering], bool] | None = None,
        slots: Callable[[str], asyncio.Semaphore] | None = None,
        endpoints: Callable[[str], Sequence[dict[str, Any]]] | None = None,
        progress_write_s: float = 5.0,
        fallback_on_stall: bool = True,
        top_up: Callable[[Claim, float], bool] | None = None,
        post: PostProcessor | None = None,
        store_lane: Lane | None = None,
    ) -> None:
        self.store = store
        self.storage = storage
        self.catalog = catalog
        self.adapters = adapters
        self.client = client
        self.pacer = pacer or Pacer()
        self.synthetic = synthetic
        self.health = health
        self.take_slot = take_slot
        self.slots = slots
        self.endpoints = endpoints or (lambda tenant: [])
        self.progress_write_s = progress_write_s
        self.fallback_on_stall = fallback_on_stall
        #: grow a job's reservation atomically (store write + budget check in one
        #: transaction); False when the tenant's budget cannot cover it
        self.top_up = top_up
        #: post-generation stages and the quality gate (VIDGATE_STAGES when not given)
        self._post = post
        #: the store's own threads (jobs/lanes.py); None: the loop's default pool
        self.store_lane = store_lane
        #: jobs between a stored intent and a stored provider id (a graceful shutdown waits
        #: for these instead of cutting them off)
        self.on_wire: set[str] = set()
        self.wire_left = asyncio.Event()

    @property
    def post(self) -> PostProcessor:
        if self._post is None:
            # Built on first use where the caller gave none (tests, tools driving one job).
            self._post = PostProcessor.configure()
        return self._post

    # -- plumbing --------------------------------------------------------------------------

    async def _db(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        # The store is synchronous; keep the event loop free for the thousands of polls.
        if self.store_lane is not None:
            return await self.store_lane.run(fn, *args, **kw)
        return await asyncio.to_thread(fn, *args, **kw)

    async def _call(self, provider: str, coro: Awaitable[T]) -> T:
        if self.slots is None:
            return await coro
        async with self.slots(provider):
            return await coro

    async def _save(
        self,
        claim: Claim,
        *,
        events: Sequence[OutboxEvent] = (),
        ledger: Sequence[LedgerEntry] = (),
        next_run_at: datetime | None = None,
    ) -> Job:
        if claim.job.state.terminal and not events:
            tenant_eps = await self._db(self.endpoints, claim.job.tenant)
            events = events_for(claim.job, tenant_eps)
        return await self._db(
            self.store.save, claim, events=events, ledger=ledger, next_run_at=next_run_at
        )

    async def _emit(self, job: Job, on_progress: ProgressFn | None) -> None:
        if on_progress is not None:
            res = on_progress(job)
            if res is not None:
                await res

    def _health(self, offering_id: str, err: VidgateError | None, *, at_create: bool) -> None:
        """Feed an attempt's outcome to the breakers. A refusal of the request itself
        (moderation, invalid input) says the provider is healthy; a refused create, a 429,
        or a credential problem counts against the whole provider."""
        if self.health is None:
            return
        offering = self.catalog.offerings.get(offering_id)
        if offering is None:
            return
        if err is None or isinstance(err, ContentRejected | InvalidRequest | CapabilityMismatch):
            self.health.record(offering.id, offering.provider, True)
            return
        provider_wide = at_create or isinstance(err, RateLimited | AuthFailed | QuotaExhausted)
        self.health.record(
            offering.id,
            offering.provider,
            False,
            retry_after=getattr(err, "retry_after", None),
            reason=err.code,
            provider_wide=provider_wide,
        )

    def _usable(self, offering: Offering) -> str | None:
        """Why this offering cannot take an attempt now (breaker, rate limit), or None."""
        if self.health is not None:
            why = self.health.blocked(offering.id, offering.provider)
            if why is not None:
                return why
        if self.take_slot is not None and not self.take_slot(offering):
            return f"rate limit for {offering.provider} reached"
        if self.health is not None and not self.health.acquire(offering.id, offering.provider):
            return "circuit half-open: probe already in flight"
        return None

    def _end_attempt(
        self,
        job: Job,
        idx: int,
        state: AttemptState,
        *,
        err: VidgateError | None = None,
    ) -> LedgerEntry:
        """Close an attempt and return its one ledger row. What it costs is decided in one
        place, :func:`vidgate.billing.settle.attempt_charge`, for every way it can end."""
        a = job.attempts[idx]
        a.state = state
        a.ended_at = _now()
        if err is not None:
            a.error = err.to_dict()
        charge = attempt_charge(job, a, state, self.catalog.offerings.get(a.offering_id))
        # A pending row's amount is a hold, not a bill: cost stays unknown until resolved.
        a.cost_usd = None if charge.kind == "pending" else charge.amount_usd
        if charge.note is not None:
            job.billing = {**(job.billing or {}), "delivery": charge.note}
        # settles: an attempt reconciled or adopted after it was booked pending keeps its
        # one row, now resolved
        return LedgerEntry(a.n, a.offering_id, charge.amount_usd, kind=charge.kind, settles=True)

    # -- the state machine -----------------------------------------------------------------

    async def drive(
        self,
        claim: Claim,
        *,
        wake: asyncio.Event | None = None,
        flags: dict[str, Any] | None = None,
        on_progress: ProgressFn | None = None,
    ) -> Job:
        """Run the claimed job until it is terminal (or the lease is lost)."""
        job = claim.job
        flags = flags if flags is not None else {}
        if claim.cancel_requested:
            flags["cancel_requested"] = True
        rejected_vendors: set[str] = set()
        last_error: VidgateError | None = None
        while not job.state.terminal:
            if flags.get("cancel_requested"):
                return await self._cancel(claim, on_progress)
            deadline = job.request.constraints.deadline
            if deadline is not None and _now() >= deadline:
                return await self._expire(claim, on_progress)
            live = self._live_attempt(job)
            if live is not None:
                done, err = await self._follow(claim, live, wake, flags, on_progress)
                if done:
                    return claim.job
                last_error = err or last_error
                if err is not None and self._vendor_fallback(job, err):
                    rejected_vendors.add(self._vendor(job.attempts[live].offering_id))
                continue
            pending = self._intent_without_id(job)
            if pending is not None:
                if not await self._reconcile(claim, pending, on_progress):
                    return claim.job
                continue
            nxt = await self._next_offering(claim, rejected_vendors)
            if nxt is None and (wait := self._wait_plan(job)) is not None:
                # every route is down for now: wait in queued (jobs/waiting.py), then route again
                waiting.record(job, wait, _now())
                await self._save(claim)
                await self._emit(job, on_progress)
                await self._sleep(wait.seconds, wake)
                continue
            if nxt is None:
                budget_why = [
                    s["why"]
                    for s in (job.route or {}).get("skipped", [])
                    if "budget" in s["why"] or "max_cost" in s["why"]
                ]
                job.error = (
                    last_error
                    or (BudgetExceeded(budget_why[-1]) if budget_why else None)
                    or ProviderUnavailable(
                        "every ranked offering was tried or is over the remaining budget or "
                        "deadline"
                    )
                ).to_dict()
                if last_error is not None and budget_why:
                    job.error["fallback_stopped"] = budget_why[-1]
                job.finished_at = _now()
                job.state = JobState.FAILED
                await self._save(claim)
                await self._emit(job, on_progress)
                return job
            err = await self._submit(claim, nxt, on_progress)
            if err is not None:
                last_error = err
                if isinstance(err, AmbiguousSubmission):
                    return claim.job
                if self._vendor_fallback(job, err):
                    rejected_vendors.add(self._vendor(nxt.id))
                elif not (err.retryable or isinstance(err, CapabilityMismatch)):
                    await self._fail(claim, err, on_progress)
                    return job
        return job

    @staticmethod
    def _live_attempt(job: Job) -> int | None:
        for i, a in enumerate(job.attempts):
            if (
                a.provider_job
                and a.state
                in (AttemptState.SUBMITTED, AttemptState.RUNNING, AttemptState.SUCCEEDED)
                and job.state
                in (
                    JobState.SUBMITTED,
                    JobState.RUNNING,
                    JobState.DOWNLOADING,
                    JobState.POST_PROCESSING,
                )
            ):
                return i
        return None

    @staticmethod
    def _intent_without_id(job: Job) -> int | None:
        for i, a in enumerate(job.attempts):
            if a.state is AttemptState.SUBMITTING and not a.provider_job:
                return i
        return None

    def _provider(self, pj: ProviderJob) -> str:
        offering = self.catalog.offerings.get(pj.offering_id)
        return offering.provider if offering is not None else pj.protocol

    def _vendor(self, offering_id: str) -> str:
        return self.catalog.model_of(self.catalog.offering(offering_id)).vendor

    @staticmethod
    def _vendor_fallback(job: Job, err: VidgateError) -> bool:
        """Moderation refusals are final unless the request allows another vendor."""
        return isinstance(err, ContentRejected) and job.request.fallback_on_content_rejection

    async def _next_offering(self, claim: Claim, rejected_vendors: set[str]) -> Offering | None:
        job = claim.job
        route = job.route or {}
        # An attempt an operator declared never landed (reconcile --resubmit) does not
        # count as having tried its offering; nor does a create refused before a wait.
        tried = waiting.tried(job)
        # What earlier attempts may still bill (pending: ambiguous or abandoned) counts as
        # spent: moving on must be covered for the worst case, both remote jobs billing.
        committed = sum(
            a.estimated_cost_usd if a.cost_usd is None else a.cost_usd
            for a in job.attempts
            if a.cost_usd is not None or a.state in (AttemptState.AMBIGUOUS, AttemptState.ABANDONED)
        )
        budget = job.request.constraints.max_cost_usd
        skipped = route.setdefault("skipped", [])
        for oid in route.get("ranked", []):
            if oid in tried or oid not in self.catalog.offerings:
                continue
            offering = self.catalog.offerings[oid]
            if self._vendor(oid) in rejected_vendors:
                continue
            estimate = float(route["estimates"][oid])
            if budget is not None and committed + estimate > budget + 1e-9:
                skipped.append({"offering": oid, "why": "over the request's max_cost_usd"})
                continue
            why = self._usable(offering)
            if why is None:
                why = await self._cover(claim, committed + estimate)
            if why is not None:
                skipped.append({"offering": oid, "why": why})
                continue
            return offering
        return None

    def _wait_plan(self, job: Job) -> waiting.Wait | None:
        providers = {o.id: o.provider for o in self.catalog.offerings.values()}
        return waiting.plan(job, _now(), self.health, providers)

    async def _cover(self, claim: Claim, needed: float) -> str | None:
        """Make the job's reservation cover ``needed`` (top it up atomically against the
        tenant's budget); the reason it cannot, or None. A job reserves only its chosen
        offering at submit: a dearer fallback asks for the difference when it is reached."""
        job = claim.job
        if job.reserved_usd is None or needed <= job.reserved_usd + 1e-9:
            return None  # no budget row to hold against, or already covered
        more = round(needed - job.reserved_usd, 6)
        if self.top_up is None or await self._db(self.top_up, claim, more):
            return None
        return (
            f"the tenant's budget cannot cover the ${more:.2f} more this fallback needs "
            f"reserved (${needed:.2f} in all)"
        )

    @contextlib.asynccontextmanager
    async def _send_permit(self, offering: Offering) -> AsyncIterator[SendPermit]:
        """Wait for everything a create must wait for (the provider's concurrency slot; the
        rate-limit permit was taken when the offering was chosen) and hand out the proof.

        All waiting on other jobs happens here, *before* any intent exists: a crash while
        waiting leaves the job in ``routing`` with no attempt, and the next claim simply
        takes it up again — nothing looks ambiguous, no attempt is counted."""
        permit = SendPermit(provider=offering.provider, offering_id=offering.id)
        if self.slots is None:
            permit.live = True
            try:
                yield permit
            finally:
                permit.live = False
            return
        async with self.slots(offering.provider):
            permit.live = True
            try:
                yield permit
            finally:
                permit.live = False

    async def _store_intent(
        self, claim: Claim, offering: Offering, permit: SendPermit, on_progress: ProgressFn | None
    ) -> int:
        """Record the attempt as ``submitting``: the create can leave the moment this returns.

        The invariant (module docstring) is enforced here rather than by convention: no
        intent is written without a live :class:`SendPermit` for this very offering, so no
        code path can store an intent and *then* wait for a slot."""
        if not permit.live or permit.offering_id != offering.id:
            raise RuntimeError(
                f"intent for {offering.id} without a held send permit: the create would wait "
                "after its intent is stored (design.md §6, narrow crash windows)"
            )
        job = claim.job
        n = len(job.attempts) + 1
        estimate = float((job.route or {})["estimates"][offering.id])
        job.attempts.append(
            Attempt(
                n=n,
                offering_id=offering.id,
                state=AttemptState.SUBMITTING,
                idempotency_key=f"{job.id}-a{n}-{uuid.uuid4().hex[:8]}",
                started_at=_now(),
                estimated_cost_usd=estimate,
            )
        )
        job.offering_id = offering.id
        job.estimated_cost_usd = estimate
        job.state = JobState.SUBMITTING
        # From here until the provider's id is stored the job is "on the wire": a graceful
        # shutdown lets it finish instead of cutting it off (which would make it ambiguous).
        self.on_wire.add(job.id)
        await self._save(claim)  # the intent, stored before the call
        await self._emit(job, on_progress)
        return n

    async def _submit(
        self, claim: Claim, offering: Offering, on_progress: ProgressFn | None
    ) -> VidgateError | None:
        job = claim.job
        adapter = self.adapters.for_offering(offering)
        try:
            # What the adapter can refuse without a network call is refused before any
            # waiting and before any intent: nothing can have left.
            adapter.check(job.request, offering)
        except VidgateError as e:
            self._health(offering.id, e, at_create=True)
            n = len(job.attempts) + 1
            job.attempts.append(
                Attempt(
                    n=n,
                    offering_id=offering.id,
                    state=AttemptState.SUBMITTING,
                    idempotency_key=f"{job.id}-a{n}-{uuid.uuid4().hex[:8]}",
                    started_at=_now(),
                    estimated_cost_usd=float((job.route or {})["estimates"][offering.id]),
                )
            )
            ledger = self._end_attempt(job, n - 1, AttemptState.FAILED, err=e)
            job.state = JobState.ROUTING
            await self._save(claim, ledger=[ledger])
            return e
        try:
            async with self._send_permit(offering) as permit:
                n = await self._store_intent(claim, offering, permit, on_progress)
                crash_point("before_submit")
                try:
                    pj = await adapter.submit(
                        job.request, offering, idempotency_key=job.attempts[-1].idempotency_key
                    )
                except AmbiguousSubmission as e:
                    self._health(offering.id, e, at_create=True)
                    if adapter.listing_for(offering) is not None:
                        # the provider lists its jobs: the loop finds this intent without an
                        # id and looks it up (_reconcile) once this slot is released
                        return None
                    ledger = self._end_attempt(job, n - 1, AttemptState.AMBIGUOUS, err=e)
                    await self._park(claim, e, ledger)
                    return e
                except VidgateError as e:
                    self._health(offering.id, e, at_create=True)
                    ledger = self._end_attempt(job, n - 1, AttemptState.FAILED, err=e)
                    job.state = JobState.ROUTING
                    await self._save(claim, ledger=[ledger])
                    return e
                crash_point("after_create")
                job.attempts[-1].provider_job = pj.model_dump(mode="json")
                job.attempts[-1].state = AttemptState.SUBMITTED
                job.state = JobState.SUBMITTED
                await self._save(claim)  # the provider's id, stored the moment it returned
        finally:
            self.on_wire.discard(job.id)
            self.wire_left.set()
        await self._emit(job, on_progress)
        return None

    async def _reconcile(self, claim: Claim, idx: int, on_progress: ProgressFn | None) -> bool:
        """A create was in flight when the last worker died. Find the remote job through the
        provider's own idempotency (or lookup) where it has one; else park the job."""
        job = claim.job
        attempt = job.attempts[idx]
        offering = self.catalog.offering(attempt.offering_id)
        adapter = self.adapters.for_offering(offering)
        pj: ProviderJob | None = None
        try:
            if adapter.resubmit_is_idempotent(offering):
                # Same key: the provider returns the job it already made, or makes it now.
                pj = await self._call(
                    offering.provider,
                    adapter.submit(job.request, offering, idempotency_key=attempt.idempotency_key),
                )
            elif adapter.listing_for(offering) is not None:
                started = attempt.started_at.timestamp()
                found = await self._call(
                    offering.provider,
                    lookup(
                        adapter,
                        job.request,
                        offering,
                        started,
                        idempotency_key=attempt.idempotency_key,
                    ),
                )
                if isinstance(found, Ambiguous):
                    raise AmbiguousSubmission(
                        f"{len(found.candidates)} remote jobs on {offering.provider} match this "
                        f"attempt: {', '.join(found.candidates)}; adopt the right one",
                        provider=offering.provider,
                    )
                pj = found.job if isinstance(found, Adopt) else None
                if pj is None:  # Absent after the visibility delay: it never landed
                    pj = await self._call(
                        offering.provider,
                        adapter.submit(
                            job.request, offering, idempotency_key=attempt.idempotency_key
                        ),
                    )
            elif adapter.can_find:
                pj = await self._call(
                    offering.provider, adapter.find(job.request, offering, attempt.idempotency_key)
                )
                if pj is None:
                    # The provider says no job carries our key: the create never landed, so
                    # sending it now (with the same key) cannot pay twice.
                    pj = await self._call(
                        offering.provider,
                        adapter.submit(
                            job.request, offering, idempotency_key=attempt.idempotency_key
                        ),
                    )
        except VidgateError as e:
            err: VidgateError = e
        else:
            err = AmbiguousSubmission(
                "a create call was in flight when the worker stopped and "
                f"{offering.provider} offers no way to look it up; check the provider's "
                "console before resubmitting",
                provider=offering.provider,
            )
        if pj is None:
            ledger = self._end_attempt(job, idx, AttemptState.AMBIGUOUS, err=err)
            await self._park(claim, err, ledger)
            return False
        attempt.provider_job = pj.model_dump(mode="json")
        attempt.state = AttemptState.SUBMITTED
        job.route = {**(job.route or {}), "reconciled": attempt.n}
        job.state = JobState.SUBMITTED
        await self._save(claim)
        await self._emit(job, on_progress)
        return True

    # -- one attempt -----------------------------------------------------------------------

    async def _follow(
        self,
        claim: Claim,
        idx: int,
        wake: asyncio.Event | None,
        flags: dict[str, Any],
        on_progress: ProgressFn | None,
    ) -> tuple[bool, VidgateError | None]:
        """Poll an attempt to its end. Returns (job finished, error to fall back on)."""
        job = claim.job
        attempt = job.attempts[idx]
        assert attempt.provider_job is not None
        pj = ProviderJob.model_validate(attempt.provider_job)
        offering = self.catalog.offering(attempt.offering_id)
        adapter = self.adapters.for_job(pj)
        if (
            job.state in (JobState.DOWNLOADING, JobState.POST_PROCESSING)
            or attempt.state is AttemptState.SUCCEEDED
        ):
            return await self._download(claim, idx, adapter, pj, on_progress)
        errors = 0
        delay = 0.0
        last_write = 0.0
        first_progress = job.request.constraints.first_progress_s
        while True:
            if delay:
                await self._sleep(delay, wake)
            if flags.get("cancel_requested"):
                await self._cancel(claim, on_progress)
                return True, None
            deadline = job.request.constraints.deadline
            if deadline is not None and _now() >= deadline:
                await self._expire(claim, on_progress)
                return True, None
            crash_point("while_polling")
            try:
                status = await self._call(offering.provider, adapter.poll(pj))
                errors = 0
            except (RateLimited, ProviderUnavailable, ProviderTimeout) as e:
                errors += 1
                if errors >= POLL_ERRORS_MAX:
                    out = await self._give_up(claim, idx, adapter, pj, e)
                    if out is not None:
                        return out
                    errors = 0  # the policy says wait on it: keep following
                delay = self.pacer.backoff(errors, getattr(e, "retry_after", None))
                continue
            except VidgateError as e:
                return await self._attempt_failed(claim, idx, e)
            elapsed = (_now() - attempt.started_at).total_seconds()
            if status.state is RemoteState.SUCCEEDED:
                self._health(offering.id, None, at_create=False)
                attempt.reported_cost = reported_cost(status.reported_cost, offering)
                return await self._download(claim, idx, adapter, pj, on_progress)
            if status.state is RemoteState.FAILED:
                err = status.error or ProviderUnavailable(f"remote job failed ({status.raw})")
                return await self._attempt_failed(claim, idx, err)
            if status.state is RemoteState.CANCELED:
                self._health(offering.id, None, at_create=False)
                ledger = self._end_attempt(job, idx, AttemptState.CANCELED)
                job.finished_at = _now()
                job.state = JobState.CANCELED
                await self._save(claim, ledger=[ledger])
                await self._emit(job, on_progress)
                return True, None
            if first_progress and status.state is RemoteState.QUEUED and elapsed > first_progress:
                out = await self._give_up(
                    claim,
                    idx,
                    adapter,
                    pj,
                    ProviderTimeout(
                        f"no progress within {first_progress:g}s", provider=offering.provider
                    ),
                )
                if out is not None:
                    return out
                first_progress = None  # the policy says wait on it: keep following
            await self._trail(claim)
            now_mono = asyncio.get_running_loop().time()
            moved = (
                status.progress is not None and abs((job.progress or 0.0) - status.progress) >= 0.1
            )
            if (job.state is not JobState.RUNNING and status.state is RemoteState.RUNNING) or (
                moved and now_mono - last_write >= self.progress_write_s
            ):
                job.progress = status.progress
                attempt.state = AttemptState.RUNNING
                job.state = JobState.RUNNING
                await self._save(claim)
                await self._emit(job, on_progress)
                last_write = now_mono
            delay = self.pacer.next(
                hint=status.poll_after_s, elapsed=elapsed, progress=status.progress
            )

    async def _give_up(
        self, claim: Claim, idx: int, adapter: Provider, pj: ProviderJob, err: VidgateError
    ) -> tuple[bool, VidgateError | None] | None:
        """Stop waiting on an attempt without paying for a free second job.

        Cancelled remotely → the attempt failed (not billed) and the job moves on. Not
        cancellable → with ``fallback_on_stall`` the attempt is ``abandoned`` (booked
        ``pending`` at its estimate, followed to its end by :meth:`_trail`) and the job moves
        on, the reservation covering both; without it, None: keep following this one."""
        job = claim.job
        provider = self._provider(pj)
        if adapter.supports_cancel:
            try:
                await self._call(provider, adapter.cancel(pj))
            except VidgateError:
                pass
            else:
                return await self._attempt_failed(claim, idx, err)
        if not self.fallback_on_stall:
            return None
        self._health(job.attempts[idx].offering_id, err, at_create=False)
        ledger = self._end_attempt(job, idx, AttemptState.ABANDONED, err=err)
        job.billing = {
            **(job.billing or {}),
            "abandoned": sorted({*(job.billing or {}).get("abandoned", []), idx + 1}),
        }
        job.state = JobState.ROUTING
        await self._save(claim, ledger=[ledger])
        return False, err

    async def _trail(self, claim: Claim) -> None:
        """Follow abandoned attempts to their end and settle their ``pending`` rows at what
        they cost (one status call each per round; errors just wait for the next round)."""
        job = claim.job
        for a in job.attempts:
            if a.state is not AttemptState.ABANDONED or a.cost_usd is not None:
                continue
            if not a.provider_job:
                continue
            pj = ProviderJob.model_validate(a.provider_job)
            try:
                status = await self._call(self._provider(pj), self.adapters.for_job(pj).poll(pj))
            except VidgateError:
                continue
            if status.state in (RemoteState.QUEUED, RemoteState.RUNNING):
                continue
            ended = (
                AttemptState.SUCCEEDED
                if status.state is RemoteState.SUCCEEDED
                else AttemptState.CANCELED
            )
            charge = attempt_charge(
                job, a, ended, self.catalog.offerings.get(a.offering_id), delivered=False
            )
            a.cost_usd = charge.amount_usd
            a.error = {**(a.error or {}), "remote_outcome": status.state.value}
            await self._save(
                claim,
                ledger=[
                    LedgerEntry(a.n, a.offering_id, charge.amount_usd, charge.kind, settles=True)
                ],
            )

    async def _sleep(self, delay: float, wake: asyncio.Event | None) -> None:
        if wake is None:
            await asyncio.sleep(delay)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=delay)
        wake.clear()

    async def _attempt_failed(
        self, claim: Claim, idx: int, err: VidgateError
    ) -> tuple[bool, VidgateError | None]:
        job = claim.job
        self._health(job.attempts[idx].offering_id, err, at_create=False)
        # providers do not bill failed generations
        ledger = self._end_attempt(job, idx, AttemptState.FAILED, err=err)
        if isinstance(err, RetryableError) or self._vendor_fallback(job, err):
            job.state = JobState.ROUTING
            await self._save(claim, ledger=[ledger])
            return False, err
        job.error = err.to_dict()
        job.finished_at = _now()
        job.state = JobState.FAILED
        await self._save(claim, ledger=[ledger])
        return True, err

    async def _download(
        self,
        claim: Claim,
        idx: int,
        adapter: Provider,
        pj: ProviderJob,
        on_progress: ProgressFn | None,
    ) -> tuple[bool, VidgateError | None]:
        job = claim.job
        attempt = job.attempts[idx]
        attempt.state = AttemptState.SUCCEEDED
        # After a crash in post-processing the clip is already ours: resume the stages.
        if not (job.state is JobState.POST_PROCESSING and job.assets):
            if job.state is not JobState.DOWNLOADING:
                job.state = JobState.DOWNLOADING
                await self._save(claim)
                await self._emit(job, on_progress)
            crash_point("while_downloading")
            try:
                remote_assets = await self._call(self._provider(pj), adapter.fetch(pj))
                stored = [await self._store_asset(job, ra) for ra in remote_assets]
            except VidgateError as e:
                # The clip was made (and billed); only our copy failed. Never generate again.
                ledger = self._end_attempt(job, idx, AttemptState.SUCCEEDED)
                job.cost_usd = job_cost(job)
                await self._fail(claim, e, None, ledger=[ledger])
                return True, None
            job.assets = stored
            job.state = JobState.POST_PROCESSING
            await self._save(claim)
        await self._trail(claim)
        # Stages and the quality gate; they may end the job or start another attempt.
        gated = await post_process(self, claim, idx, on_progress)
        if gated is not None:
            return gated
        crash_point("before_final_write")
        # The provider bills the clip at its list price, which is our estimate.
        ledger = self._end_attempt(job, idx, AttemptState.SUCCEEDED)
        job.cost_usd = job_cost(job)
        job.progress = 1.0
        job.finished_at = _now()
        job.state = JobState.SUCCEEDED
        await self._save(claim, ledger=[ledger])
        await self._emit(job, on_progress)
        return True, None

    async def _store_asset(self, job: Job, ra: RemoteAsset) -> Asset:
        last: Exception | None = None
        for n in range(DOWNLOAD_TRIES):
            path = self.storage.new_path(job.tenant, job.id)
            try:
                if ra.url.startswith("data:"):
                    # Inline results (Gemini's encodedVideo, Vertex without an output bucket).
                    sha, size = await self.storage.write_stream(path, _data_url_chunks(ra.url))
                else:
                    async with self.client.stream(
                        "GET", ra.url, headers=dict(ra.headers), follow_redirects=True
                    ) as resp:
                        if resp.status_code >= 400:
                            raise ProviderUnavailable(
                                f"download answered {resp.status_code}",
                                status_code=resp.status_code,
                            )
                        sha, size = await self.storage.write_stream(path, resp.aiter_bytes(1 << 16))
                with self.storage.open(path) as f:
                    info = await asyncio.to_thread(probe, f)
                return Asset(
                    id="asset_" + uuid.uuid4().hex[:16],
                    kind="video",
                    uri=self.storage.uri(path),
                    content_type=ra.content_type or "video/mp4",
                    sha256=sha,
                    bytes=size,
                    duration_s=info.duration_s,
                    width=info.width,
                    height=info.height,
                    fps=info.fps,
                    frames=info.frames,
                    codec=info.codec,
                    has_audio=info.has_audio,
                    audio_codec=info.audio_codec,
                    synthetic=self.synthetic,
                )
            except (httpx.HTTPError, RetryableError) as e:
                last = e
                self.storage.delete(path)
                await asyncio.sleep(min(8.0, 0.25 * 2**n) * random.random())
        raise ProviderUnavailable(f"downloading the output failed {DOWNLOAD_TRIES} times: {last}")

    # -- endings ---------------------------------------------------------------------------

    async def _fail(
        self,
        claim: Claim,
        err: VidgateError,
        on_progress: ProgressFn | None,
        ledger: Sequence[LedgerEntry] = (),
    ) -> None:
        job = claim.job
        job.error = err.to_dict()
        job.finished_at = _now()
        job.state = JobState.FAILED
        await self._save(claim, ledger=ledger)
        await self._emit(job, on_progress)

    async def _park(self, claim: Claim, err: VidgateError, ledger: LedgerEntry) -> None:
        job = claim.job
        job.error = err.to_dict()
        job.finished_at = _now()
        job.state = JobState.NEEDS_RECONCILIATION
        await self._save(claim, ledger=[ledger])

    async def _stop_remote(self, claim: Claim) -> LedgerEntry | None:
        """Cancel the live remote attempt where the provider can; close it either way."""
        job = claim.job
        idx = self._live_attempt(job)
        if idx is None:
            return None
        attempt = job.attempts[idx]
        pj = ProviderJob.model_validate(attempt.provider_job)
        adapter = self.adapters.for_job(pj)
        if adapter.supports_cancel:
            # best effort: the job ends on our side regardless
            with contextlib.suppress(VidgateError):
                await self._call(self._provider(pj), adapter.cancel(pj))
        return self._end_attempt(job, idx, AttemptState.CANCELED)

    async def _cancel(self, claim: Claim, on_progress: ProgressFn | None) -> Job:
        job = claim.job
        ledger = await self._stop_remote(claim)
        job.finished_at = _now()
        job.state = JobState.CANCELED
        await self._save(claim, ledger=[ledger] if ledger else [])
        await self._emit(job, on_progress)
        return job

    async def _expire(self, claim: Claim, on_progress: ProgressFn | None) -> Job:
        job = claim.job
        ledger = await self._stop_remote(claim)
        job.error = {"code": "deadline", "message": "the job's deadline passed"}
        job.finished_at = _now()
        job.state = JobState.EXPIRED
        await self._save(claim, ledger=[ledger] if ledger else [])
        await self._emit(job, on_progress)
        return job


async def _data_url_chunks(url: str) -> AsyncIterator[bytes]:
    header, _, payload = url.partition(",")
    if ";base64" not in header:
        raise ProviderProtocolError("inline result is not a base64 data URL")
    try:
        yield base64.b64decode(payload, validate=True)
    except binascii.Error as e:
        raise ProviderProtocolError(f"inline result is not valid base64: {e}") from None
