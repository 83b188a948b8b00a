"""The driver's state machine as users see it, against a scripted provider: how a job ends
(cancelled, expired, failed, parked) and what each attempt costs; which offering comes next
after a refusal and which never does; the request's max_cost and the tenant's budget; the
poll-error limit, the first-progress deadline and waiting for a route; the poll pacer's
clamps and backoff growth, and inline results."""

from __future__ import annotations

import asyncio
import base64
import random
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from tests.jobs.conftest import make_job
from vidgate.billing.accounts import Accounts
from vidgate.catalog.loader import Catalog, catalog_from_yaml
from vidgate.catalog.schema import Offering
from vidgate.errors import (
    AmbiguousSubmission,
    CapabilityMismatch,
    ContentRejected,
    InvalidRequest,
    ProviderProtocolError,
    ProviderUnavailable,
    RateLimited,
)
from vidgate.jobs.driver import JobDriver, Pacer, _data_url_chunks
from vidgate.jobs.store import JobStore
from vidgate.providers.base import Provider, ProviderJob, RemoteAsset, RemoteState, RemoteStatus
from vidgate.routing.health import Health
from vidgate.storage.assets import AssetStorage
from vidgate.types import Attempt, AttemptState, Job, JobState, VideoRequest

A, B, G = "alpha-openai", "beta-openai", "gamma-retired"  # vendors: US, CN, US
ESTIMATES = {A: 0.1, B: 0.25, G: 0.05}

# -- the pacer ----------------------------------------------------------------------------------


def test_the_default_pacer_polls_between_two_and_fifteen_seconds() -> None:
    p = Pacer()
    assert p.next(hint=None, elapsed=0) == 2.0
    assert p.next(hint=None, elapsed=50) == pytest.approx(5.0)  # a tenth of the time so far
    assert p.next(hint=None, elapsed=1000) == 15.0
    assert p.next(hint=30.0, elapsed=1000) == 30.0  # the provider's hint wins when later
    assert p.next(hint=0.5, elapsed=50) == pytest.approx(5.0)


def test_progress_counts_from_five_percent_and_stops_at_done() -> None:
    p = Pacer(min_s=1.0, max_s=100.0, fraction=0.1)
    # 200 s in: a tenth is 20 s; at 5% done about 3800 s are left, so 20 s stands
    assert p.next(hint=None, elapsed=200, progress=0.05) == pytest.approx(20.0)
    # at 95% done about 10.5 s are left: poll then
    assert p.next(hint=None, elapsed=200, progress=0.95) == pytest.approx(200 * 0.05 / 0.95)
    assert p.next(hint=None, elapsed=200, progress=0.049) == pytest.approx(20.0)  # too early
    assert p.next(hint=None, elapsed=200, progress=1.0) == pytest.approx(20.0)  # done: no eta
    assert p.next(hint=None, elapsed=200, progress=0.999) == 1.0  # never below the minimum


def test_after_errors_the_backoff_doubles_up_to_a_minute_with_full_jitter() -> None:
    p = Pacer(min_s=2.0)
    rng = random.getstate()
    try:
        random.seed(7)
        for errors, cap in ((1, 4.0), (2, 8.0), (3, 16.0), (5, 60.0), (12, 60.0)):
            waits = [p.backoff(errors, None) for _ in range(400)]
            assert all(0 <= w <= cap for w in waits)
            assert max(waits) > 0.9 * cap  # it does reach the cap's neighbourhood
            assert min(waits) < 0.1 * cap  # and the low end (full jitter)
    finally:
        random.setstate(rng)
    assert p.backoff(4, 7.5) == 7.5  # the provider's Retry-After wins
    assert 0 <= p.backoff(1, 0.0) <= 4.0  # a zero Retry-After is no hint


# -- inline results -----------------------------------------------------------------------------


async def _read(url: str) -> bytes:
    return b"".join([c async for c in _data_url_chunks(url)])


async def test_an_inline_result_is_decoded_and_a_malformed_one_refused() -> None:
    data = b"\x00\x01video"
    assert await _read("data:video/mp4;base64," + base64.b64encode(data).decode()) == data
    with pytest.raises(ProviderProtocolError, match="inline result is not a base64 data URL"):
        await _read("data:video/mp4," + base64.b64encode(data).decode())
    with pytest.raises(ProviderProtocolError, match="inline result is not valid base64"):
        await _read("data:video/mp4;base64,@@@")


# -- a scripted provider ------------------------------------------------------------------------


class Scripted(Provider):
    """Answers each create and status call from a script; records what was called."""

    protocol = "openai-videos"
    default_base_url = "https://provider.invalid"
    supports_cancel: ClassVar[bool] = False

    def __init__(self) -> None:  # no network: nothing of the base is needed
        #: per offering: what each create does in turn (an error raised, or None: accepted)
        self.creates: dict[str, list[Exception | None]] = {}
        #: what each status call answers in turn (the last one repeats)
        self.statuses: list[RemoteStatus | Exception] = [
            RemoteStatus(RemoteState.CANCELED, "canceled")
        ]
        self.check_errors: dict[str, Exception] = {}
        self.submitted: list[str] = []
        self.polls = 0
        self.cancelled: list[str] = []

    def check(self, request: VideoRequest, offering: Offering) -> None:
        if offering.id in self.check_errors:
            raise self.check_errors[offering.id]

    async def submit(
        self, request: VideoRequest, offering: Offering, *, idempotency_key: str
    ) -> ProviderJob:
        self.submitted.append(offering.id)
        script = self.creates.get(offering.id) or [None]
        outcome = script.pop(0) if len(script) > 1 else script[0]
        if outcome is not None:
            raise outcome
        return ProviderJob(
            protocol=self.protocol,
            offering_id=offering.id,
            remote_id=f"r{len(self.submitted)}",
            base_url=self.default_base_url,
        )

    async def poll(self, job: ProviderJob) -> RemoteStatus:
        self.polls += 1
        answer = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def fetch(self, job: ProviderJob) -> list[RemoteAsset]:
        raise AssertionError("these tests never reach a download")

    async def cancel(self, job: ProviderJob) -> None:
        if not self.supports_cancel:
            await super().cancel(job)
        self.cancelled.append(job.remote_id)


class Cancellable(Scripted):
    supports_cancel: ClassVar[bool] = True


class Adapters:
    def __init__(self, provider: Scripted) -> None:
        self.provider = provider

    def for_offering(self, offering: Offering) -> Provider:
        return self.provider

    def for_job(self, job: ProviderJob) -> Provider:
        return self.provider


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    fixtures = Path(__file__).resolve().parent.parent / "fixtures"
    return catalog_from_yaml((fixtures / "mini_catalog.yaml").read_text(), "mini_catalog.yaml")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    s = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    yield s
    s.close()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


class Harness:
    def __init__(
        self, store: JobStore, catalog: Catalog, client: httpx.AsyncClient, tmp: Path
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.client = client
        self.storage = AssetStorage(str(tmp / "assets"))
        self.provider: Scripted = Scripted()

    def driver(self, **kw: Any) -> JobDriver:
        return JobDriver(
            store=self.store,
            storage=self.storage,
            catalog=self.catalog,
            adapters=Adapters(self.provider),
            client=self.client,
            pacer=Pacer(min_s=0.001, max_s=0.002),
            **kw,
        )

    async def run(
        self,
        ranked: list[str],
        *,
        request: VideoRequest | None = None,
        reserved: float | None = None,
        cancel: bool = False,
        **kw: Any,
    ) -> Job:
        job = make_job(reserved_usd=reserved)
        job.request = request or job.request
        job.route = {"ranked": ranked, "estimates": dict(ESTIMATES)}
        self.store.create(job)
        if cancel:
            self.store.request_cancel(job.id)
        [claim] = self.store.claim("w1", job_id=job.id)
        out = await asyncio.wait_for(self.driver(**kw).drive(claim), timeout=30)
        assert out.state.terminal
        assert self.store.get(job.id).state is out.state  # what was stored, too
        return out

    def ledger(self, job: Job) -> list[tuple[int, str, str, float]]:
        return [
            (r["attempt_n"], r["offering_id"], r["kind"], r["amount_usd"])
            for r in self.store.ledger(job_id=job.id)
        ]


@pytest.fixture
def h(store: JobStore, catalog: Catalog, client: httpx.AsyncClient, tmp_path: Path) -> Harness:
    return Harness(store, catalog, client, tmp_path)


def _replies(*head: RemoteStatus | Exception, times: int = 1) -> list[RemoteStatus | Exception]:
    """Status answers: ``head`` ``times`` over, then a remote cancel (ends the job unbilled)."""
    return [*head] * times + [RemoteStatus(RemoteState.CANCELED, "canceled")]


def _states(job: Job) -> list[tuple[str, AttemptState]]:
    return [(a.offering_id, a.state) for a in job.attempts]


# -- how a job ends -----------------------------------------------------------------------------


async def test_a_job_cancelled_before_it_starts_ends_without_an_attempt(h: Harness) -> None:
    job = await h.run([A, B], cancel=True)
    assert job.state is JobState.CANCELED
    assert job.attempts == []
    assert job.finished_at is not None
    assert h.provider.submitted == []
    assert h.ledger(job) == []


async def test_a_job_past_its_deadline_expires(h: Harness) -> None:
    soon = datetime.now(UTC) + timedelta(milliseconds=50)
    request = VideoRequest(prompt="x", constraints={"deadline": soon})
    await asyncio.sleep(0.1)
    job = await h.run([A, B], request=request)
    assert job.state is JobState.EXPIRED
    assert job.error == {"code": "deadline", "message": "the job's deadline passed"}
    assert job.finished_at is not None
    assert h.provider.submitted == []


async def test_a_job_cancelled_remotely_ends_cancelled_and_unbilled(h: Harness) -> None:
    job = await h.run([A, B])
    assert job.state is JobState.CANCELED
    assert _states(job) == [(A, AttemptState.CANCELED)]
    assert job.attempts[0].cost_usd == 0.0
    assert h.ledger(job) == [(1, A, "void", 0.0)]
    assert job.offering_id == A
    assert job.estimated_cost_usd == 0.1


async def test_an_attempt_stores_its_intent_and_the_providers_id(h: Harness) -> None:
    job = await h.run([A])
    [a] = job.attempts
    assert a.n == 1
    assert a.idempotency_key.startswith(f"{job.id}-a1-")
    assert len(a.idempotency_key) == len(f"{job.id}-a1-") + 8
    assert a.provider_job is not None
    assert a.provider_job["remote_id"] == "r1"
    assert a.estimated_cost_usd == 0.1


# -- refusals and what comes next ---------------------------------------------------------------


async def test_a_refused_create_moves_on_to_the_next_offering_unbilled(h: Harness) -> None:
    h.provider.creates[A] = [RateLimited("slow down", provider="openai")]
    job = await h.run([A, B])
    assert h.provider.submitted == [A, B]
    assert _states(job) == [(A, AttemptState.FAILED), (B, AttemptState.CANCELED)]
    assert job.attempts[0].error is not None
    assert job.attempts[0].error["code"] == "rate_limited"
    assert h.ledger(job) == [(1, A, "void", 0.0), (2, B, "void", 0.0)]


async def test_a_final_refusal_fails_the_job_without_trying_another(h: Harness) -> None:
    h.provider.creates[A] = [InvalidRequest("bad prompt")]
    job = await h.run([A, B])
    assert job.state is JobState.FAILED
    assert job.error is not None
    assert (job.error["code"], job.error["message"]) == ("invalid_request", "bad prompt")
    assert h.provider.submitted == [A]
    assert job.finished_at is not None


async def test_what_the_adapter_refuses_before_sending_moves_on(h: Harness) -> None:
    h.provider.check_errors[A] = CapabilityMismatch("no 5 s clips")
    job = await h.run([A, B])
    assert h.provider.submitted == [B]  # nothing left for A
    assert _states(job) == [(A, AttemptState.FAILED), (B, AttemptState.CANCELED)]
    assert h.ledger(job)[0] == (1, A, "void", 0.0)


async def test_a_final_refusal_before_sending_fails_the_job(h: Harness) -> None:
    h.provider.check_errors[A] = InvalidRequest("too long")
    job = await h.run([A, B])
    assert job.state is JobState.FAILED
    assert h.provider.submitted == []
    assert job.error is not None
    assert job.error["code"] == "invalid_request"


async def test_when_every_offering_refuses_the_last_error_is_the_jobs(h: Harness) -> None:
    h.provider.creates[A] = [RateLimited("a is busy")]
    h.provider.creates[B] = [ProviderUnavailable("b is down")]
    job = await h.run([A, B])
    assert job.state is JobState.FAILED
    assert job.error is not None
    assert (job.error["code"], job.error["message"]) == ("provider_unavailable", "b is down")
    assert "fallback_stopped" not in job.error


async def test_with_nothing_ranked_the_job_fails_as_unavailable(h: Harness) -> None:
    job = await h.run([])
    assert job.state is JobState.FAILED
    assert job.error is not None
    assert job.error["code"] == "provider_unavailable"
    assert job.error["message"] == (
        "every ranked offering was tried or is over the remaining budget or deadline"
    )
    assert job.finished_at is not None


async def test_an_offering_no_longer_in_the_catalog_is_skipped(h: Harness) -> None:
    job = await h.run(["gone-offering", B])
    assert h.provider.submitted == [B]
    assert job.state is JobState.CANCELED


# -- moderation ---------------------------------------------------------------------------------


async def test_a_moderation_refusal_is_final_by_default(h: Harness) -> None:
    h.provider.statuses = [
        RemoteStatus(RemoteState.FAILED, "failed", error=ContentRejected("not allowed"))
    ]
    job = await h.run([A, B])
    assert job.state is JobState.FAILED
    assert job.error is not None
    assert job.error["code"] == "content_rejected"
    assert h.provider.submitted == [A]
    assert h.ledger(job) == [(1, A, "void", 0.0)]


async def test_a_moderation_refusal_may_move_to_another_vendor(h: Harness) -> None:
    h.provider.statuses = [
        RemoteStatus(RemoteState.FAILED, "failed", error=ContentRejected("not allowed")),
        RemoteStatus(RemoteState.CANCELED, "canceled"),
    ]
    request = VideoRequest(prompt="x", fallback_on_content_rejection=True)
    job = await h.run([A, G, B], request=request)
    # gamma is the same vendor as alpha: skipped; beta is another vendor
    assert h.provider.submitted == [A, B]
    assert job.state is JobState.CANCELED


async def test_a_refused_create_for_moderation_may_move_to_another_vendor(h: Harness) -> None:
    h.provider.creates[A] = [ContentRejected("not allowed")]
    request = VideoRequest(prompt="x", fallback_on_content_rejection=True)
    job = await h.run([A, G, B], request=request)
    assert h.provider.submitted == [A, B]
    assert job.state is JobState.CANCELED


async def test_a_remote_failure_without_a_reason_is_retried_elsewhere(h: Harness) -> None:
    h.provider.statuses = [
        RemoteStatus(RemoteState.FAILED, "boom"),
        RemoteStatus(RemoteState.CANCELED, "canceled"),
    ]
    job = await h.run([A, B])
    assert _states(job) == [(A, AttemptState.FAILED), (B, AttemptState.CANCELED)]
    assert job.attempts[0].error is not None
    assert job.attempts[0].error["code"] == "provider_unavailable"
    assert "remote job failed" in job.attempts[0].error["message"]


# -- money: the request's max_cost and the tenant's budget --------------------------------------


async def test_an_offering_over_the_requests_max_cost_is_skipped(h: Harness) -> None:
    request = VideoRequest(prompt="x", constraints={"max_cost_usd": 0.2})
    job = await h.run([B], request=request)
    assert job.state is JobState.FAILED
    assert h.provider.submitted == []
    assert job.error is not None
    assert job.error["code"] == "budget_exceeded"
    assert job.error["message"] == "over the request's max_cost_usd"
    assert job.route is not None
    assert job.route["skipped"] == [{"offering": B, "why": "over the request's max_cost_usd"}]


async def test_max_cost_counts_what_earlier_attempts_cost(h: Harness) -> None:
    # exactly the limit: 0.1 + 0.25 = 0.35
    h.provider.creates[A] = [AmbiguousSubmission("timed out")]
    request = VideoRequest(prompt="x", constraints={"max_cost_usd": 0.35})
    job = await h.run([A, B], request=request)
    assert job.state is JobState.NEEDS_RECONCILIATION  # parked: B is never reached
    h2_request = VideoRequest(prompt="x", constraints={"max_cost_usd": 0.25})
    h.provider.creates[A] = [RateLimited("busy")]
    job = await h.run([A, B], request=h2_request)
    # a refused create cost nothing: B still fits
    assert h.provider.submitted[-1] == B
    assert job.state is JobState.CANCELED


async def test_the_fallback_stops_at_max_cost_with_the_reason_kept(h: Harness) -> None:
    h.provider.creates[A] = [RateLimited("busy")]
    request = VideoRequest(prompt="x", constraints={"max_cost_usd": 0.2})
    job = await h.run([A, B], request=request)
    assert job.state is JobState.FAILED
    assert job.error is not None
    assert job.error["code"] == "rate_limited"
    assert job.error["fallback_stopped"] == "over the request's max_cost_usd"


async def test_a_dearer_fallback_tops_the_reservation_up(h: Harness) -> None:
    Accounts(h.store).ensure_tenant("default", budget_usd=0.3)
    assert Accounts(h.store).reserve("default", 0.1)
    h.provider.creates[A] = [RateLimited("busy")]
    job = await h.run([A, B], reserved=0.1, top_up=h.store.top_up)
    assert h.provider.submitted == [A, B]
    assert job.state is JobState.CANCELED
    tenant = Accounts(h.store).tenant("default")
    assert tenant is not None
    assert tenant["reserved_usd"] == pytest.approx(0.0)  # 0.25 held, all released at the end


async def test_a_fallback_the_budget_cannot_cover_is_skipped_with_the_amount(h: Harness) -> None:
    Accounts(h.store).ensure_tenant("default", budget_usd=0.2)
    assert Accounts(h.store).reserve("default", 0.1)
    h.provider.creates[A] = [RateLimited("busy")]
    job = await h.run([A, B], reserved=0.1, top_up=h.store.top_up)
    assert h.provider.submitted == [A]
    assert job.state is JobState.FAILED
    why = (
        "the tenant's budget cannot cover the $0.15 more this fallback needs reserved "
        "($0.25 in all)"
    )
    assert job.route is not None
    assert job.route["skipped"] == [{"offering": B, "why": why}]
    assert job.error is not None
    assert job.error["fallback_stopped"] == why


async def test_a_covered_fallback_needs_no_top_up(h: Harness) -> None:
    asked: list[float] = []

    def top_up(claim: Any, amount: float) -> bool:
        asked.append(amount)
        return False

    h.provider.creates[A] = [RateLimited("busy")]
    job = await h.run([A, B], reserved=0.25, top_up=top_up)
    assert asked == []  # 0.25 held covers beta exactly
    assert h.provider.submitted == [A, B]
    assert job.state is JobState.CANCELED


# -- ambiguity ----------------------------------------------------------------------------------


async def test_an_ambiguous_create_is_parked_and_booked_pending(h: Harness) -> None:
    h.provider.creates[A] = [AmbiguousSubmission("timed out after sending")]
    job = await h.run([A, B])
    assert job.state is JobState.NEEDS_RECONCILIATION
    assert h.provider.submitted == [A]  # never resent
    assert _states(job) == [(A, AttemptState.AMBIGUOUS)]
    assert job.attempts[0].cost_usd is None  # unknown until resolved
    assert h.ledger(job) == [(1, A, "pending", 0.1)]
    assert job.error is not None
    assert job.error["code"] == "ambiguous_submission"


# -- following a remote job ---------------------------------------------------------------------


async def test_eight_failed_status_calls_in_a_row_give_the_attempt_up(h: Harness) -> None:
    h.provider = Cancellable()
    h.provider.statuses = _replies(ProviderUnavailable("status 503"), times=8)
    job = await h.run([A])
    assert h.provider.polls == 8
    assert h.provider.cancelled == ["r1"]
    assert job.state is JobState.FAILED
    assert _states(job) == [(A, AttemptState.FAILED)]
    assert h.ledger(job) == [(1, A, "void", 0.0)]


async def test_fewer_failed_status_calls_keep_following(h: Harness) -> None:
    h.provider = Cancellable()
    h.provider.statuses = _replies(ProviderUnavailable("status 503"), times=7)
    job = await h.run([A])
    assert h.provider.polls == 8
    assert h.provider.cancelled == []
    assert job.state is JobState.CANCELED


async def test_a_stalled_attempt_that_cannot_be_cancelled_is_abandoned_and_booked_pending(
    h: Harness,
) -> None:
    h.provider.statuses = _replies(ProviderUnavailable("status 503"), times=8)
    job = await h.run([A, B])
    assert h.provider.submitted == [A, B]
    assert job.attempts[0].state is AttemptState.ABANDONED
    assert job.billing is not None
    assert job.billing["abandoned"] == [1]


async def test_without_fallback_on_stall_the_attempt_is_followed(h: Harness) -> None:
    h.provider.statuses = _replies(ProviderUnavailable("status 503"), times=9)
    job = await h.run([A, B], fallback_on_stall=False)
    assert h.provider.submitted == [A]
    assert job.state is JobState.CANCELED


async def test_no_first_progress_in_time_gives_the_attempt_up(h: Harness) -> None:
    h.provider = Cancellable()
    h.provider.statuses = [RemoteStatus(RemoteState.QUEUED, "queued")]
    request = VideoRequest(prompt="x", constraints={"first_progress_s": 0.05})
    job = await h.run([A], request=request)
    assert h.provider.cancelled == ["r1"]
    assert job.state is JobState.FAILED
    assert job.error is not None
    assert job.error["code"] == "provider_timeout"
    assert job.error["message"] == "no progress within 0.05s"


async def test_a_running_attempt_is_not_held_to_first_progress(h: Harness) -> None:
    h.provider = Cancellable()
    h.provider.statuses = _replies(
        RemoteStatus(RemoteState.RUNNING, "running", progress=0.2), times=40
    )
    request = VideoRequest(prompt="x", constraints={"first_progress_s": 0.01})
    job = await h.run([A], request=request)
    assert h.provider.cancelled == []
    assert job.state is JobState.CANCELED


async def test_the_job_is_marked_running_with_its_progress(h: Harness) -> None:
    seen: list[tuple[JobState, float | None]] = []
    h.provider.statuses = [
        RemoteStatus(RemoteState.RUNNING, "running", progress=0.3),
        RemoteStatus(RemoteState.CANCELED, "canceled"),
    ]
    job = make_job()
    job.route = {"ranked": [A], "estimates": dict(ESTIMATES)}
    h.store.create(job)
    [claim] = h.store.claim("w1")
    await h.driver().drive(claim, on_progress=lambda j: seen.append((j.state, j.progress)))
    assert (JobState.RUNNING, 0.3) in seen
    assert seen[0][0] is JobState.SUBMITTING


# -- waiting for a route ------------------------------------------------------------------------


async def test_with_a_deadline_a_refused_route_is_waited_for_and_tried_again(h: Harness) -> None:
    h.provider.creates[A] = [RateLimited("busy", retry_after=0.01), None]
    request = VideoRequest(
        prompt="x", constraints={"deadline": datetime.now(UTC) + timedelta(hours=1)}
    )
    job = await h.run([A], request=request)
    assert h.provider.submitted == [A, A]
    assert job.route is not None
    [wait] = job.route["waited"]
    assert wait["after_attempt"] == 1
    assert wait["seconds"] == 0.5
    assert job.state is JobState.CANCELED


async def test_a_refusal_feeds_the_breakers_provider_wide(h: Harness) -> None:
    health = Health()
    h.provider.creates[A] = [RateLimited("busy", retry_after=30)]
    job = await h.run([A], health=health)
    assert job.state is JobState.FAILED
    blocked = health.blocked(A, "openai")
    assert blocked is not None
    assert blocked.startswith("provider openai:")


# -- what makes an offering unusable now --------------------------------------------------------


async def test_an_offering_over_its_rate_limit_or_behind_an_open_breaker_is_skipped(
    h: Harness,
) -> None:
    health = Health()
    health.provider("compat").force_open(60, "outage")
    job = await h.run([A, B], take_slot=lambda o: o.provider != "openai", health=health)
    assert h.provider.submitted == []
    assert job.state is JobState.FAILED
    assert job.route is not None
    skipped = {s["offering"]: s["why"] for s in job.route["skipped"]}
    assert skipped[A] == "rate limit for openai reached"
    assert skipped[B].startswith("provider compat: circuit open")


async def test_a_half_open_breaker_with_its_probe_out_is_skipped(h: Harness) -> None:
    clock = [0.0]
    health = Health(clock=lambda: clock[0])
    health.offering(A).force_open(1, "down")
    clock[0] = 2.0  # half-open now: one probe allowed
    assert health.acquire(A, "openai")  # another job's probe is in flight
    job = await h.run([A], health=health)
    assert h.provider.submitted == []
    assert job.route is not None
    assert job.route["skipped"] == [{"offering": A, "why": "circuit half-open: probe in flight"}]


# -- resuming after a crash ---------------------------------------------------------------------


def _resumed(h: Harness, state: JobState, provider_job: dict[str, Any] | None) -> Job:
    job = make_job()
    job.route = {"ranked": [A, B], "estimates": dict(ESTIMATES)}
    job.state = state
    job.offering_id = A
    job.attempts = [
        Attempt(
            n=1,
            offering_id=A,
            state=AttemptState.SUBMITTED if provider_job else AttemptState.SUBMITTING,
            provider_job=provider_job,
            idempotency_key=f"{job.id}-a1-deadbeef",
            started_at=datetime.now(UTC),
            estimated_cost_usd=0.1,
        )
    ]
    return job


async def _drive(h: Harness, job: Job) -> Job:
    h.store.create(job)
    [claim] = h.store.claim("w1", job_id=job.id)
    return await asyncio.wait_for(h.driver().drive(claim), timeout=30)


async def test_an_attempt_with_a_provider_id_is_followed_never_resent(h: Harness) -> None:
    pj = ProviderJob(protocol="openai-videos", offering_id=A, remote_id="r0", base_url="x")
    job = await _drive(h, _resumed(h, JobState.SUBMITTED, pj.model_dump(mode="json")))
    assert h.provider.submitted == []
    assert h.provider.polls == 1
    assert job.state is JobState.CANCELED


async def test_an_intent_without_an_id_and_no_way_to_look_it_up_is_parked(h: Harness) -> None:
    job = await _drive(h, _resumed(h, JobState.SUBMITTING, None))
    assert h.provider.submitted == []  # never resent blindly
    assert job.state is JobState.NEEDS_RECONCILIATION
    assert job.error is not None
    assert job.error["code"] == "ambiguous_submission"
    assert "offers no way to look it up" in job.error["message"]
    assert h.ledger(job) == [(1, A, "pending", 0.1)]


class Findable(Scripted):
    can_find: ClassVar[bool] = True

    def __init__(self, found: ProviderJob | None) -> None:
        super().__init__()
        self.found = found
        self.keys: list[str] = []

    async def find(
        self, request: VideoRequest, offering: Offering, idempotency_key: str
    ) -> ProviderJob | None:
        self.keys.append(idempotency_key)
        return self.found

    async def submit(
        self, request: VideoRequest, offering: Offering, *, idempotency_key: str
    ) -> ProviderJob:
        self.keys.append(idempotency_key)
        return await super().submit(request, offering, idempotency_key=idempotency_key)


async def test_an_intent_the_provider_never_got_is_sent_with_the_same_key(h: Harness) -> None:
    h.provider = Findable(None)
    job = await _drive(h, _resumed(h, JobState.SUBMITTING, None))
    key = f"{job.id}-a1-deadbeef"
    assert h.provider.keys == [key, key]  # looked up, then sent once with the same key
    assert h.provider.submitted == [A]
    assert job.route is not None
    assert job.route["reconciled"] == 1
    assert job.state is JobState.CANCELED


async def test_an_intent_the_provider_did_get_is_adopted(h: Harness) -> None:
    found = ProviderJob(protocol="openai-videos", offering_id=A, remote_id="found", base_url="x")
    h.provider = Findable(found)
    job = await _drive(h, _resumed(h, JobState.SUBMITTING, None))
    assert h.provider.submitted == []
    assert job.attempts[0].provider_job is not None
    assert job.attempts[0].provider_job["remote_id"] == "found"
    assert job.state is JobState.CANCELED


# -- an abandoned attempt is followed to its end and settled ------------------------------------


async def test_an_abandoned_attempt_that_finished_is_charged_its_estimate(h: Harness) -> None:
    h.provider.statuses = [
        *[ProviderUnavailable("status 503")] * 8,  # A: given up on (no cancel)
        RemoteStatus(RemoteState.RUNNING, "running"),  # B runs
        RemoteStatus(RemoteState.SUCCEEDED, "succeeded"),  # A, followed: it finished
        RemoteStatus(RemoteState.CANCELED, "canceled"),  # B
    ]
    job = await h.run([A, B])
    a = job.attempts[0]
    assert (a.state, a.cost_usd) == (AttemptState.ABANDONED, 0.1)
    assert a.error is not None
    assert a.error["remote_outcome"] == "succeeded"
    assert h.ledger(job) == [(1, A, "charge", 0.1), (2, B, "void", 0.0)]


async def test_an_abandoned_attempt_that_was_cancelled_costs_nothing(h: Harness) -> None:
    h.provider.statuses = [
        *[ProviderUnavailable("status 503")] * 8,
        RemoteStatus(RemoteState.RUNNING, "running"),
        RemoteStatus(RemoteState.CANCELED, "canceled"),
    ]
    job = await h.run([A, B])
    a = job.attempts[0]
    assert a.cost_usd == 0.0
    assert a.error is not None
    assert a.error["remote_outcome"] == "canceled"
    assert h.ledger(job) == [(1, A, "void", 0.0), (2, B, "void", 0.0)]


async def test_nothing_is_left_on_the_wire_after_a_create(h: Harness) -> None:
    driver = h.driver()
    job = make_job()
    job.route = {"ranked": [A], "estimates": dict(ESTIMATES)}
    h.store.create(job)
    [claim] = h.store.claim("w1")
    await driver.drive(claim)
    assert driver.on_wire == set()
    assert driver.wire_left.is_set()
