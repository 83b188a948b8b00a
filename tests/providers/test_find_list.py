"""Reconciliation by lookup (providers/lookup.py): an ambiguous create is resolved from the
provider's own job list — over real HTTP against the sandbox's list endpoints, with their
paging — and the driver adopts, resubmits or parks accordingly."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from tests.server.conftest import sandbox_settings
from vidgate.catalog.loader import load_catalog
from vidgate.catalog.schema import Offering
from vidgate.gateway import Gateway
from vidgate.providers.base import Provider, registry
from vidgate.providers.byteplus_ark import BytePlusArk
from vidgate.providers.lookup import (
    Absent,
    Adopt,
    Ambiguous,
    Listing,
    correlation_seed,
    lookup,
)
from vidgate.sandbox.core import FaultConfig, FaultRule, SandboxCore
from vidgate.types import AttemptState, JobState, Mode, VideoRequest

CATALOG = load_catalog()


def _listing_offerings(*, routable: bool) -> dict[str, Offering]:
    """The first text-to-video offering of every adapter whose list can be used (routable
    today, for the tests that go through the router)."""
    out: dict[str, Offering] = {}
    for o in CATALOG.offerings.values():
        cls = registry().get(o.protocol)
        live = o.enabled and o.available_on(date.today())
        if (
            cls is not None
            and cls.listing is not None
            and (live or not routable)
            and Mode.TEXT_TO_VIDEO in o.capabilities.modes
        ):
            out.setdefault(o.protocol, o)
    return out


LISTING = _listing_offerings(routable=True)
#: adapter-level tests need no route: OpenAI's Sora offerings are retired in the catalog, its
#: list is still exercised (the driver path runs on the mini catalog, tests/test_gateway.py)
EVERY_LISTING = _listing_offerings(routable=False)


def test_the_listing_providers_are_covered() -> None:
    assert set(LISTING) >= {"replicate", "luma", "byteplus-ark"}
    assert set(EVERY_LISTING) >= {"replicate", "luma", "byteplus-ark", "openai-videos"}


def _request(
    offering: Offering,
    prompt: str = "a heron in the reeds",
    ratio: int = 0,
    seed: int | None = None,
) -> Any:
    caps = offering.capabilities
    spec = caps.durations
    return VideoRequest(
        prompt=prompt,
        duration_s=spec.values[0] if spec.values else float(spec.min or 5),
        resolution=caps.resolutions[0],
        aspect_ratio=caps.aspect_ratios[ratio],
        seed=seed,
    )


def _decoy(offering: Offering) -> Any:
    # another job on the same account: a different prompt and frame shape (BytePlus lists
    # no prompt, so the shape is what tells it apart there)
    return _request(offering, "a different clip entirely", ratio=1)


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    # a create that hangs must time out well before the sandbox answers it, even on a
    # loaded machine: 3 s against a 5 s hang
    g = Gateway(sandbox_settings(tmp_path, http_timeout_s=3.0))
    g.sandbox_url()  # start the in-process sandbox
    yield g
    await g.aclose()
    g.close()


def _core(gw: Gateway) -> SandboxCore:
    core: SandboxCore = gw._sandbox.core
    return core


def _remote_jobs(gw: Gateway, protocol: str) -> int:
    return int(_core(gw).store.stats()["by_protocol"].get(protocol, 0))


async def _create(
    adapter: Provider, offering: Offering, request: VideoRequest, key: str = "other"
) -> str:
    return (await adapter.submit(request, offering, idempotency_key=key)).remote_id


@pytest.mark.parametrize("protocol", sorted(LISTING))
async def test_a_dropped_create_is_adopted_from_the_list(gw: Gateway, protocol: str) -> None:
    offering = LISTING[protocol]
    adapter = gw.for_offering(offering)
    await _create(adapter, offering, _decoy(offering))
    _core(gw).faults = FaultConfig(
        rules=[FaultRule(kind="drop", rate=1.0, protocol=protocol)], hang_s=5
    )
    job = gw.submit(_request(offering), pinned=[offering.id])
    done = await gw.run(job.id)
    assert done.state is JobState.SUCCEEDED, done.error
    assert len(done.attempts) == 1
    assert done.route is not None
    assert done.route["reconciled"] == 1  # adopted, not resubmitted
    assert _remote_jobs(gw, protocol) == 2  # the decoy and ours: our create reached it once
    charges = [r for r in gw.store.ledger(job_id=job.id) if r["kind"] == "charge"]
    assert len(charges) == 1  # billed once


@pytest.mark.parametrize("protocol", sorted(EVERY_LISTING))
async def test_lookup_pages_through_the_list_to_the_one_match(gw: Gateway, protocol: str) -> None:
    offering = EVERY_LISTING[protocol]
    adapter = gw.for_offering(offering)
    # two jobs a page, the list's own paging: ours is on the third page behind 4 newer ones
    _core(gw).list_page_size = 2
    if hasattr(adapter, "list_page_size"):
        adapter.list_page_size = 2
    started = time.time()
    ours = await _create(adapter, offering, _request(offering))
    for _ in range(4):
        await _create(adapter, offering, _decoy(offering))
    found = await lookup(adapter, _request(offering), offering, started, idempotency_key="other")
    assert isinstance(found, Adopt)
    assert found.job.remote_id == ours
    assert found.job.offering_id == offering.id
    status = await adapter.poll(found.job)  # the adopted handle is followable as created
    assert status.raw


@pytest.mark.parametrize("protocol", sorted(LISTING))
async def test_several_matches_park_the_job_with_every_candidate(
    gw: Gateway, protocol: str
) -> None:
    offering = LISTING[protocol]
    adapter = gw.for_offering(offering)
    # same inputs, same window: the caller's own seed on both, so no provider can tell the
    # two apart by the seed it was sent
    twin = await _create(adapter, offering, _request(offering, seed=7))
    _core(gw).faults = FaultConfig(
        rules=[FaultRule(kind="drop", rate=1.0, protocol=protocol)], hang_s=5
    )
    job = gw.submit(_request(offering, seed=7), pinned=[offering.id])
    done = await gw.run(job.id)
    assert done.state is JobState.NEEDS_RECONCILIATION
    assert done.attempts[-1].state is AttemptState.AMBIGUOUS
    assert done.error is not None
    ids = [j.id for j in _core(gw).store.list(protocol)]
    assert len(ids) == 2
    assert twin in ids
    for remote_id in ids:
        assert remote_id in done.error["message"]
    assert _remote_jobs(gw, protocol) == 2  # nothing was sent again


async def test_a_create_that_never_landed_is_sent_again_once(gw: Gateway) -> None:
    offering = LISTING["replicate"]
    # the first create hangs unrecorded (the answer never comes); after the provider's
    # visibility delay the list still lacks it, so the create is sent again
    _core(gw).faults = FaultConfig(
        rules=[FaultRule(kind="timeout", rate=1.0, end=time.time() + 4.5)], hang_s=4
    )
    job = gw.submit(_request(offering), pinned=[offering.id])
    done = await gw.run(job.id)
    assert done.state is JobState.SUCCEEDED, done.error
    assert len(done.attempts) == 1
    assert _remote_jobs(gw, "replicate") == 1
    charges = [r for r in gw.store.ledger(job_id=job.id) if r["kind"] == "charge"]
    assert len(charges) == 1


async def test_absent_is_only_said_after_the_visibility_delay(gw: Gateway) -> None:
    offering = LISTING["luma"]
    adapter = gw.for_offering(offering)
    listing = adapter.listing_for(offering)
    assert isinstance(listing, Listing)
    slept: list[float] = []
    clock = [1_000_000.0]

    async def sleep(s: float) -> None:
        slept.append(s)
        clock[0] += s

    # an attempt that started just now: nothing listed yet, so the lookup waits the
    # provider's delay out and lists again before it says "absent"
    found = await lookup(
        adapter,
        _request(offering),
        offering,
        clock[0],
        idempotency_key="k",
        now=lambda: clock[0],
        sleep=sleep,
    )
    assert isinstance(found, Absent)
    assert slept == [pytest.approx(listing.visibility_s)]
    # long after: no wait at all
    slept.clear()
    later = clock[0] + 3600
    found = await lookup(
        adapter,
        _request(offering),
        offering,
        clock[0] - 7200,
        idempotency_key="k",
        now=lambda: later,
        sleep=sleep,
    )
    assert isinstance(found, Absent)
    assert slept == []


async def test_jobs_outside_the_window_are_not_candidates(gw: Gateway) -> None:
    offering = LISTING["replicate"]
    adapter = gw.for_offering(offering)
    await _create(adapter, offering, _request(offering))
    listing = adapter.listing_for(offering)
    assert listing is not None
    # an attempt that started well after that job was created: it cannot be ours
    future = time.time() + listing.skew_s + 60
    found = await lookup(
        adapter, _request(offering), offering, future, idempotency_key="k", now=lambda: future
    )
    assert isinstance(found, Absent)
    # and with it in the window, two alike are ambiguous rather than guessed
    await _create(adapter, offering, _request(offering))
    found = await lookup(
        adapter, _request(offering), offering, time.time() - 5, idempotency_key="k"
    )
    assert isinstance(found, Ambiguous)
    assert len(found.candidates) == 2


async def test_byteplus_tells_creates_alike_but_for_the_prompt_apart_by_seed(gw: Gateway) -> None:
    """Ark's task list shows no prompt: a burst of same-shape creates used to be candidates
    for each other. The seed drawn from each attempt's key (the caller fixed none) tells
    them apart, so a dropped create is adopted, not parked."""
    offering = LISTING["byteplus-ark"]
    adapter = gw.for_offering(offering)
    for n in range(3):  # other attempts' creates, the same shape, a moment before ours
        await _create(adapter, offering, _request(offering, f"another clip {n}"), key=f"k{n}")
    _core(gw).faults = FaultConfig(
        rules=[FaultRule(kind="drop", rate=1.0, protocol="byteplus-ark")], hang_s=5
    )
    job = gw.submit(_request(offering), pinned=[offering.id])
    done = await gw.run(job.id)
    assert done.state is JobState.SUCCEEDED, done.error
    assert len(done.attempts) == 1
    assert done.route is not None
    assert done.route["reconciled"] == 1  # adopted from the list
    assert _remote_jobs(gw, "byteplus-ark") == 4  # three others and ours, sent once
    pj = done.attempts[0].provider_job
    assert pj is not None
    [task] = [t for t in _core(gw).store.list("byteplus-ark") if t.id == pj["remote_id"]]
    # the job adopted is the one our attempt sent: its seed came from our key
    assert task.params["seed"] == correlation_seed(done.attempts[0].idempotency_key)


def test_the_correlation_seed_is_stable_per_key_and_differs_across_keys() -> None:
    assert correlation_seed("job-1:1") == correlation_seed("job-1:1")
    seeds = {correlation_seed(f"job-{n}:1") for n in range(1000)}
    assert len(seeds) == 1000
    assert all(0 <= s < 2**31 for s in seeds)


def test_byteplus_sends_the_callers_seed_else_one_drawn_from_the_key(gw: Gateway) -> None:
    offering = LISTING["byteplus-ark"]
    adapter = gw.for_offering(offering)
    assert isinstance(adapter, BytePlusArk)
    fixed = adapter.body(_request(offering, seed=42), offering, idempotency_key="a")
    assert fixed["seed"] == 42  # the caller's seed wins
    drawn = adapter.body(_request(offering), offering, idempotency_key="a")
    assert drawn["seed"] == correlation_seed("a")
    assert adapter.body(_request(offering), offering, idempotency_key="b")["seed"] != drawn["seed"]
    # checking a request sends nothing, so it needs no key and invents no seed
    assert "seed" not in adapter.body(_request(offering), offering)
    # what the lookup expects equals what the create sent
    listed = adapter.listed_inputs(_request(offering), offering, idempotency_key="a")
    assert listed["seed"] == drawn["seed"]
