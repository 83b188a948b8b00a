"""Drive one job to a terminal state: submit, poll, download, measure, settle.

The rules that keep money safe (design.md §6) are enforced here:

* the attempt (our intent) is saved *before* the provider's create call, and the provider's
  job id is saved the moment the call returns;
* a create is never retried: a retryable refusal (429, 503, connection refused) moves on to
  the next ranked offering, an ambiguous one (timeout after sending) parks the job as
  ``needs_reconciliation``;
* an attempt that has a provider job id is only ever polled;
* downloading is retried on its own, without generating again.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol

import httpx

from vidgate.catalog.loader import Catalog
from vidgate.catalog.schema import Offering
from vidgate.errors import (
    AmbiguousSubmission,
    AuthFailed,
    CapabilityMismatch,
    ContentRejected,
    InvalidRequest,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
    RetryableError,
    VidgateError,
)
from vidgate.jobs.store import JobStore
from vidgate.providers.base import Provider, ProviderJob, RemoteAsset, RemoteState
from vidgate.routing.health import Health
from vidgate.storage.assets import AssetStorage
from vidgate.storage.media import probe
from vidgate.types import Asset, Attempt, AttemptState, Job, JobState

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


class JobRunner:
    def __init__(
        self,
        *,
        store: JobStore,
        storage: AssetStorage,
        catalog: Catalog,
        adapters: Adapters,
        client: httpx.AsyncClient,
        poll_interval_s: float = 2.0,
        synthetic: bool = False,
        health: Health | None = None,
        take_slot: Callable[[Offering], bool] | None = None,
    ) -> None:
        self.store = store
        self.storage = storage
        self.catalog = catalog
        self.adapters = adapters
        self.client = client
        self.poll_interval_s = poll_interval_s
        self.synthetic = synthetic
        self.health = health
        self.take_slot = take_slot

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

    def _usable(self, job: Job, offering: Offering) -> str | None:
        """Why this offering cannot take an attempt right now (breaker, rate limit), or None."""
        if self.health is not None:
            why = self.health.blocked(offering.id, offering.provider)
            if why is not None:
                return why
        if self.take_slot is not None and not self.take_slot(offering):
            return f"rate limit for {offering.provider} reached"
        if self.health is not None and not self.health.acquire(offering.id, offering.provider):
            return "circuit half-open: probe already in flight"
        return None

    async def _emit(self, job: Job, on_progress: ProgressFn | None) -> None:
        if on_progress is not None:
            res = on_progress(job)
            if res is not None:
                await res

    def _set(self, job: Job, state: JobState) -> Job:
        job.state = state
        return self.store.save(job)

    async def run(self, job_id: str, on_progress: ProgressFn | None = None) -> Job:
        job = self.store.get(job_id)
        if job.state.terminal:
            return job
        ranked = list((job.route or {}).get("ranked", []))
        last_error: VidgateError | None = None
        spent = sum(a.cost_usd or 0.0 for a in job.attempts)
        tried = {a.offering_id for a in job.attempts}

        # Resume: an attempt with a provider job id is polled, never resubmitted.
        live = next(
            (
                a
                for a in job.attempts
                if a.provider_job and a.state in (AttemptState.SUBMITTED, AttemptState.RUNNING)
            ),
            None,
        )
        if live is not None:
            done, last_error = await self._follow(job, live, on_progress)
            if done:
                return self.store.get(job.id)
            job = self.store.get(job.id)
        if any(a.state is AttemptState.SUBMITTING for a in job.attempts):
            # We crashed between storing the intent and storing the provider's id: the
            # create may have reached the provider. Never resubmit blindly.
            return self._park(
                job,
                AmbiguousSubmission(
                    "a create call was in flight when the worker stopped; the job may exist at "
                    "the provider"
                ),
            )

        rejected_vendors: set[str] = set()
        for offering_id in ranked:
            if offering_id in tried:
                continue
            offering = self.catalog.offering(offering_id)
            if self.catalog.model_of(offering).vendor in rejected_vendors:
                continue  # moderation refused this vendor's model: try another vendor
            estimate = float(job.route["estimates"][offering_id])  # type: ignore[index]
            budget = job.request.constraints.max_cost_usd
            if budget is not None and spent + estimate > budget + 1e-9:
                continue
            deadline = job.request.constraints.deadline
            if deadline is not None and _now() >= deadline:
                break
            busy = self._usable(job, offering)
            if busy is not None:
                (job.route or {}).setdefault("skipped", []).append(
                    {"offering": offering.id, "why": busy}
                )
                continue
            adapter = self.adapters.for_offering(offering)
            attempt = Attempt(
                n=len(job.attempts) + 1,
                offering_id=offering.id,
                state=AttemptState.SUBMITTING,
                idempotency_key=f"{job.id}-a{len(job.attempts) + 1}-{uuid.uuid4().hex[:8]}",
                started_at=_now(),
                estimated_cost_usd=estimate,
            )
            job.attempts.append(attempt)
            job.offering_id = offering.id
            job.estimated_cost_usd = estimate
            job = self._set(job, JobState.SUBMITTING)  # the intent, stored before the call
            await self._emit(job, on_progress)
            try:
                adapter.check(job.request, offering)
                pj = await adapter.submit(
                    job.request, offering, idempotency_key=attempt.idempotency_key
                )
            except AmbiguousSubmission as e:
                job.attempts[-1].state = AttemptState.AMBIGUOUS
                job.attempts[-1].error = e.to_dict()
                job.attempts[-1].ended_at = _now()
                self._health(offering.id, e, at_create=True)
                return self._park(job, e)
            except VidgateError as e:
                job.attempts[-1].state = AttemptState.FAILED
                job.attempts[-1].error = e.to_dict()
                job.attempts[-1].ended_at = _now()
                job = self.store.save(job)
                self._health(offering.id, e, at_create=True)
                last_error = e
                if e.retryable or isinstance(e, CapabilityMismatch):
                    # Nothing was created (a refusal, or the adapter's own pre-call check of
                    # what its wire can express): the next offering is safe to try.
                    continue
                if self._vendor_fallback(job, e):
                    rejected_vendors.add(self.catalog.model_of(offering).vendor)
                    continue
                return self._fail(job, e)
            job.attempts[-1].provider_job = pj.model_dump(mode="json")
            job.attempts[-1].state = AttemptState.SUBMITTED
            job = self._set(job, JobState.SUBMITTED)  # the provider's id, stored at once
            await self._emit(job, on_progress)
            done, err = await self._follow(job, job.attempts[-1], on_progress)
            if done:
                return self.store.get(job.id)
            job = self.store.get(job.id)
            last_error = err
            if err is not None and self._vendor_fallback(job, err):
                rejected_vendors.add(self.catalog.model_of(offering).vendor)
            spent = sum(a.cost_usd or 0.0 for a in job.attempts)

        return self._fail(
            job,
            last_error
            or ProviderUnavailable(
                "every ranked offering was tried or is over the remaining budget/deadline"
            ),
        )

    @staticmethod
    def _vendor_fallback(job: Job, err: VidgateError) -> bool:
        """Moderation refusals are final unless the request allows another vendor."""
        return isinstance(err, ContentRejected) and job.request.fallback_on_content_rejection

    # -- one attempt -----------------------------------------------------------------------

    async def _follow(
        self, job: Job, attempt: Attempt, on_progress: ProgressFn | None
    ) -> tuple[bool, VidgateError | None]:
        """Poll an attempt to its end. Returns (job finished, error to fall back on)."""
        assert attempt.provider_job is not None
        pj = ProviderJob.model_validate(attempt.provider_job)
        adapter = self.adapters.for_job(pj)
        idx = attempt.n - 1
        errors = 0
        delay = 0.0
        while True:
            if delay:
                await asyncio.sleep(delay)
            deadline = job.request.constraints.deadline
            if deadline is not None and _now() >= deadline:
                if adapter.supports_cancel:
                    with contextlib.suppress(VidgateError):
                        await adapter.cancel(pj)
                job.attempts[idx].state = AttemptState.CANCELED
                job.attempts[idx].ended_at = _now()
                job.error = {"code": "deadline", "message": "the job's deadline passed"}
                job.finished_at = _now()
                self._set(job, JobState.EXPIRED)
                return True, None
            try:
                status = await adapter.poll(pj)
                errors = 0
            except (RateLimited, ProviderUnavailable, ProviderTimeout) as e:
                errors += 1
                if errors >= POLL_ERRORS_MAX:
                    return self._attempt_failed(job, idx, e)
                retry_after = getattr(e, "retry_after", None)
                # full jitter, capped; Retry-After wins when the provider gives one
                delay = retry_after or random.uniform(
                    0, min(30.0, self.poll_interval_s * 2**errors)
                )
                continue
            except VidgateError as e:
                return self._attempt_failed(job, idx, e)

            if status.state is RemoteState.SUCCEEDED:
                self._health(attempt.offering_id, None, at_create=False)
                try:
                    await self._download(job, idx, adapter, pj, on_progress)
                except VidgateError as e:
                    # The clip was made (and billed); only our copy failed. Do not fall back.
                    job = self.store.get(job.id)
                    job.attempts[idx].cost_usd = job.attempts[idx].estimated_cost_usd
                    job.cost_usd = sum(a.cost_usd or 0.0 for a in job.attempts)
                    self._fail(job, e)
                    return True, e
                return True, None
            if status.state is RemoteState.FAILED:
                err = status.error or ProviderUnavailable(f"remote job failed ({status.raw})")
                return self._attempt_failed(job, idx, err)
            if status.state is RemoteState.CANCELED:
                self._health(attempt.offering_id, None, at_create=False)
                job.attempts[idx].state = AttemptState.CANCELED
                job.attempts[idx].ended_at = _now()
                job.finished_at = _now()
                self._set(job, JobState.CANCELED)
                return True, None
            changed = job.state is not JobState.RUNNING or (
                status.progress is not None and abs((job.progress or 0.0) - status.progress) >= 0.05
            )
            if changed:
                job.progress = status.progress
                job.attempts[idx].state = AttemptState.RUNNING
                job = self._set(job, JobState.RUNNING)
                await self._emit(job, on_progress)
            delay = status.poll_after_s if status.poll_after_s is not None else self.poll_interval_s

    def _attempt_failed(
        self, job: Job, idx: int, err: VidgateError
    ) -> tuple[bool, VidgateError | None]:
        job.attempts[idx].state = AttemptState.FAILED
        job.attempts[idx].error = err.to_dict()
        job.attempts[idx].ended_at = _now()
        job.attempts[idx].cost_usd = 0.0  # providers do not bill failed generations
        self._health(job.attempts[idx].offering_id, err, at_create=False)
        if isinstance(err, RetryableError) or self._vendor_fallback(job, err):
            self.store.save(job)
            return False, err
        self._fail(job, err)
        return True, err

    async def _download(
        self, job: Job, idx: int, adapter: Provider, pj: ProviderJob, on_progress: ProgressFn | None
    ) -> None:
        job = self._set(job, JobState.DOWNLOADING)
        await self._emit(job, on_progress)
        remote_assets = await adapter.fetch(pj)
        stored: list[Asset] = []
        for ra in remote_assets:
            stored.append(await self._store_asset(job, ra))
        job = self._set(job, JobState.POST_PROCESSING)
        job.assets = stored
        attempt = job.attempts[idx]
        attempt.state = AttemptState.SUCCEEDED
        attempt.ended_at = _now()
        # The provider bills the clip it made at its list price; vidgate's estimate is that
        # price, so the settled cost equals it (quotes from usage reports come later).
        attempt.cost_usd = attempt.estimated_cost_usd
        job.cost_usd = sum(a.cost_usd or 0.0 for a in job.attempts)
        job.progress = 1.0
        job.finished_at = _now()
        job = self._set(job, JobState.SUCCEEDED)
        await self._emit(job, on_progress)

    async def _store_asset(self, job: Job, ra: RemoteAsset) -> Asset:
        last: Exception | None = None
        for n in range(DOWNLOAD_TRIES):
            path = self.storage.new_path(job.tenant, job.id)
            try:
                async with self.client.stream(
                    "GET", ra.url, headers=dict(ra.headers), follow_redirects=True
                ) as resp:
                    if resp.status_code >= 400:
                        raise ProviderUnavailable(
                            f"download answered {resp.status_code}", status_code=resp.status_code
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

    def _fail(self, job: Job, err: VidgateError) -> Job:
        job.error = err.to_dict()
        job.finished_at = _now()
        return self._set(job, JobState.FAILED)

    def _park(self, job: Job, err: VidgateError) -> Job:
        job.error = err.to_dict()
        job.finished_at = _now()
        return self._set(job, JobState.NEEDS_RECONCILIATION)
