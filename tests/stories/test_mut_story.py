"""A story's durable state and its money, one behaviour at a time, on a real SQLite store:
claims and leases, fenced writes, the whole-story budget hold shared out to children and
released at the end, cancel requests; the plan's costs, frames and summary against the
budget; and the story record, which must equal the ledger to the cent."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.exc import IntegrityError

from tests.conftest import sandbox_settings
from tests.stories.story_helpers import HERE, story_catalog, write_png
from vidgate.billing.accounts import Accounts
from vidgate.catalog.loader import catalog_from_yaml
from vidgate.catalog.schema import DurationSpec
from vidgate.errors import NotFound
from vidgate.gateway import Gateway
from vidgate.jobs.store import IdempotencyConflict, JobStore, StaleLease
from vidgate.stories.plan import (
    REQUEST_MAX_S,
    SegmentPlan,
    ShotPlan,
    StoryPlan,
    as_url,
    base_request,
    ceil_duration,
    plan_story,
    split_frames,
)
from vidgate.stories.record import build_record, shot_verdict, verdict
from vidgate.stories.spec import load_story
from vidgate.stories.store import StoryClaim, StoryDoc, StoryState, StoryStore
from vidgate.types import (
    Asset,
    Attempt,
    AttemptState,
    AudioMode,
    Job,
    JobState,
    Mode,
    ReferenceRole,
    VideoRequest,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


# --- the store ---------------------------------------------------------------------------


@pytest.fixture
def jobs(tmp_path: Path) -> Iterator[JobStore]:
    s = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    yield s
    s.close()


@pytest.fixture
def stories(jobs: JobStore) -> StoryStore:
    return StoryStore(jobs.engine)


def _plan(shots: list[ShotPlan] | None = None, **kw: Any) -> StoryPlan:
    kw.setdefault("primary", None)
    return StoryPlan(
        title="t",
        policy="cheapest",
        width=854,
        height=480,
        fps=12,
        seed=1,
        shots=shots or [],
        **kw,
    )


def _doc(sid: str, tenant: str = "acme", held: bool = True, at: datetime | None = None) -> StoryDoc:
    when = at or datetime.now(UTC)
    return StoryDoc(
        id=sid,
        tenant=tenant,
        title=f"title {sid}",
        story={},
        plan=_plan(),
        held=held,
        created_at=when,
        updated_at=when,
    )


def _add(stories: StoryStore, sid: str, **kw: Any) -> StoryDoc:
    reserved = kw.pop("reserved_usd", 0.0)
    doc, created = stories.create(
        _doc(sid, **kw), idempotency_key=None, fingerprint="f", reserved_usd=reserved
    )
    assert created
    return doc


def _tenant_reserved(jobs: JobStore, tenant: str = "acme") -> float:
    row = Accounts(jobs).tenant(tenant)
    assert row is not None
    return float(row["reserved_usd"])


def test_a_new_story_is_queued_not_terminal_and_due_at_once(stories: StoryStore) -> None:
    doc, created = stories.create(
        _doc("s1"), idempotency_key=None, fingerprint="f", reserved_usd=0.75
    )
    assert created
    assert doc.id == "s1"
    got = stories.get("s1")
    assert got.state is StoryState.QUEUED
    assert got.title == "title s1"
    assert stories.reserved("s1") == 0.75
    [c] = stories.claim("w")
    assert c.doc.id == "s1"
    assert c.reserved_usd == 0.75
    assert c.cancel_requested is False
    assert c.owner == "w"
    assert c.fence == 1


def test_a_repeated_key_returns_the_first_story_and_another_request_is_a_conflict(
    stories: StoryStore,
) -> None:
    stories.create(_doc("s1"), idempotency_key="k", fingerprint="f1", reserved_usd=0)
    again, created = stories.create(
        _doc("s2"), idempotency_key="k", fingerprint="f1", reserved_usd=0
    )
    assert (again.id, created) == ("s1", False)
    with pytest.raises(IdempotencyConflict) as e:
        stories.create(_doc("s3"), idempotency_key="k", fingerprint="f2", reserved_usd=0)
    assert str(e.value) == (
        "idempotency key 'k' was used for a different story; use a new key for a new story"
    )
    # the key is per tenant
    other, created = stories.create(
        _doc("s4", tenant="other"), idempotency_key="k", fingerprint="f2", reserved_usd=0
    )
    assert (other.id, created) == ("s4", True)


def test_a_repeated_key_returns_this_tenants_story_for_that_key(stories: StoryStore) -> None:
    # another tenant used the key first, and this tenant has other stories
    stories.create(
        _doc("theirs", tenant="other"), idempotency_key="k", fingerprint="f", reserved_usd=0
    )
    stories.create(_doc("earlier"), idempotency_key="a", fingerprint="f", reserved_usd=0)
    stories.create(_doc("mine"), idempotency_key="k", fingerprint="f", reserved_usd=0)
    again, created = stories.create(
        _doc("retry"), idempotency_key="k", fingerprint="f", reserved_usd=0
    )
    assert (again.id, again.tenant, created) == ("mine", "acme", False)


def test_the_same_id_twice_without_a_key_is_an_error_not_a_replay(stories: StoryStore) -> None:
    _add(stories, "s1")
    with pytest.raises(IntegrityError):
        stories.create(_doc("s1"), idempotency_key=None, fingerprint="f", reserved_usd=0)


def test_get_is_scoped_to_the_tenant_and_names_a_missing_story(stories: StoryStore) -> None:
    _add(stories, "s1", tenant="acme")
    assert stories.get("s1", "acme").tenant == "acme"
    assert stories.get("s1").id == "s1"
    with pytest.raises(NotFound, match=r"^no story 's1'$"):
        stories.get("s1", "other")
    with pytest.raises(NotFound, match=r"^no story 'nope'$"):
        stories.get("nope")


def test_list_is_newest_first_per_tenant_up_to_the_limit(stories: StoryStore) -> None:
    for i, tenant in enumerate(["acme", "other", "acme", "acme"]):
        _add(stories, f"s{i}", tenant=tenant, at=T0 + timedelta(minutes=i))
    assert [d.id for d in stories.list("acme")] == ["s3", "s2", "s0"]
    assert [d.id for d in stories.list("acme", limit=2)] == ["s3", "s2"]
    assert [d.id for d in stories.list()] == ["s3", "s2", "s1", "s0"]
    assert [d.id for d in stories.list("nobody")] == []


def test_an_unknown_story_holds_nothing(stories: StoryStore) -> None:
    assert stories.reserved("nope") == 0.0


def test_claims_take_the_longest_due_first_up_to_the_limit(stories: StoryStore) -> None:
    for i in (2, 0, 1):
        _add(stories, f"s{i}", at=T0 + timedelta(seconds=i))
    got = stories.claim("w", limit=2)
    assert [c.doc.id for c in got] == ["s0", "s1"]
    assert [c.doc.id for c in stories.claim("w")] == ["s2"]


def test_a_leased_story_is_not_claimed_again_until_the_lease_lapses(
    stories: StoryStore,
) -> None:
    _add(stories, "s1")
    [first] = stories.claim("w1", lease_s=30)
    assert stories.claim("w2") == []
    assert stories.claim("w2", story_id="s1") == []
    _add(stories, "s2")
    [short] = stories.claim("w1", lease_s=0)
    time.sleep(0.01)
    [taken] = stories.claim("w2")
    assert taken.doc.id == "s2"
    assert taken.fence == short.fence + 1
    assert taken.owner == "w2"
    assert first.fence == 1


def test_a_story_not_yet_due_waits_unless_claimed_by_id(stories: StoryStore) -> None:
    _add(stories, "s1")
    [c] = stories.claim("w")
    stories.save(c, next_run_s=3600)
    assert stories.claim("w") == []
    [again] = stories.claim("w", story_id="s1")
    assert again.doc.id == "s1"
    # and a claim by id takes that story only
    _add(stories, "s2")
    assert [c.doc.id for c in stories.claim("w", story_id="s2")] == ["s2"]


def test_a_story_saved_to_run_now_is_due_now(stories: StoryStore) -> None:
    _add(stories, "s1")
    [c] = stories.claim("w")
    c.doc.state = StoryState.RUNNING
    c.doc.progress = 0.5
    saved = stories.save(c, next_run_s=0)
    assert saved.updated_at > saved.created_at
    assert c.owner == ""
    time.sleep(0.01)
    [again] = stories.claim("w2")
    assert again.doc.state is StoryState.RUNNING
    assert again.doc.progress == 0.5
    assert again.fence == c.fence + 1


def test_a_save_that_keeps_the_lease_keeps_others_out_and_may_write_again(
    stories: StoryStore,
) -> None:
    _add(stories, "s1")
    [c] = stories.claim("w", lease_s=30)
    stories.save(c, release=False, next_run_s=0)
    assert c.owner == "w"
    assert stories.claim("w2", story_id="s1") == []
    c.doc.state = StoryState.ASSEMBLING
    stories.save(c, next_run_s=0)
    assert stories.get("s1").state is StoryState.ASSEMBLING


def test_a_released_claim_cannot_write_again(stories: StoryStore) -> None:
    _add(stories, "s1")
    [c] = stories.claim("w")
    stories.save(c, next_run_s=3600)
    with pytest.raises(StaleLease, match="story s1: lease lost"):
        stories.save(c)


def test_another_owner_with_the_same_fence_cannot_write(stories: StoryStore) -> None:
    _add(stories, "s1")
    [c] = stories.claim("w", lease_s=30)
    c.owner = "intruder"
    with pytest.raises(StaleLease):
        stories.save(c)


@pytest.mark.parametrize(
    "state",
    [StoryState.SUCCEEDED, StoryState.FAILED, StoryState.CANCELED, StoryState.EXPIRED],
)
def test_a_terminal_story_is_never_claimed_again(stories: StoryStore, state: StoryState) -> None:
    assert state.terminal
    _add(stories, "s1", held=False)
    [c] = stories.claim("w")
    c.doc.state = state
    stories.save(c, release=False, next_run_s=0)
    assert c.owner == ""  # a terminal write gives the lease up
    time.sleep(0.01)
    assert stories.claim("w") == []
    assert stories.claim("w", story_id="s1") == []
    assert stories.get("s1").state is state


@pytest.mark.parametrize("state", [StoryState.QUEUED, StoryState.RUNNING, StoryState.ASSEMBLING])
def test_a_live_state_is_not_terminal(state: StoryState) -> None:
    assert not state.terminal


def test_children_take_their_share_of_the_hold_and_the_rest_is_released_at_the_end(
    jobs: JobStore, stories: StoryStore
) -> None:
    accounts = Accounts(jobs)
    accounts.ensure_tenant("acme", budget_usd=2.0)
    assert accounts.reserve("acme", 1.0)
    _add(stories, "s1", reserved_usd=1.0)
    [c] = stories.claim("w", lease_s=30)
    stories.save(c, release=False, take_usd=0.25)
    assert c.reserved_usd == pytest.approx(0.75)
    stories.save(c, release=False, take_usd=0.25)
    assert c.reserved_usd == pytest.approx(0.5)
    assert stories.reserved("s1") == pytest.approx(0.5)
    # the tenant's total is unchanged while the story and its children share the hold
    assert _tenant_reserved(jobs) == pytest.approx(1.0)
    c.doc.state = StoryState.FAILED
    stories.save(c)
    assert c.reserved_usd == 0.0
    assert stories.reserved("s1") == 0.0
    # only what the story still held (0.5) goes back; the children keep theirs
    assert _tenant_reserved(jobs) == pytest.approx(0.5)


def test_a_story_without_a_hold_releases_nothing_from_the_tenant(
    jobs: JobStore, stories: StoryStore
) -> None:
    accounts = Accounts(jobs)
    accounts.ensure_tenant("acme", budget_usd=2.0)
    assert accounts.reserve("acme", 0.4)
    _add(stories, "s1", held=False, reserved_usd=0.4)
    [c] = stories.claim("w")
    c.doc.state = StoryState.CANCELED
    stories.save(c)
    assert _tenant_reserved(jobs) == pytest.approx(0.4)
    assert stories.reserved("s1") == 0.0


def test_a_fully_handed_out_hold_releases_nothing_more(jobs: JobStore, stories: StoryStore) -> None:
    accounts = Accounts(jobs)
    accounts.ensure_tenant("acme", budget_usd=2.0)
    assert accounts.reserve("acme", 0.5)
    _add(stories, "s1", reserved_usd=0.5)
    [c] = stories.claim("w", lease_s=30)
    stories.save(c, release=False, take_usd=0.5)
    c.doc.state = StoryState.SUCCEEDED
    stories.save(c)
    assert _tenant_reserved(jobs) == pytest.approx(0.5)


def test_a_save_without_a_take_keeps_the_hold(stories: StoryStore) -> None:
    _add(stories, "s1", reserved_usd=0.3)
    [c] = stories.claim("w", lease_s=30)
    c.doc.state = StoryState.RUNNING
    stories.save(c, release=False)
    assert stories.reserved("s1") == pytest.approx(0.3)
    assert c.reserved_usd == pytest.approx(0.3)


def test_a_hand_back_frees_the_story_for_a_retry_later(stories: StoryStore) -> None:
    _add(stories, "s1")
    [c] = stories.claim("w", lease_s=30)
    c.doc.state = StoryState.RUNNING  # not written: a hand-back keeps what is stored
    assert stories.hand_back(c, retry_in_s=3600) is True
    assert c.owner == ""
    assert stories.claim("w") == []  # not due for an hour
    [again] = stories.claim("w2", story_id="s1")  # but no longer leased
    assert again.doc.state is StoryState.QUEUED
    assert stories.hand_back(c) is False  # that lease was gone


def test_a_hand_back_with_no_wait_is_due_at_once(stories: StoryStore) -> None:
    _add(stories, "s1")
    [c] = stories.claim("w", lease_s=30)
    assert stories.hand_back(c, retry_in_s=0)
    time.sleep(0.01)
    assert [x.doc.id for x in stories.claim("w2")] == ["s1"]


def test_a_saved_story_is_due_again_half_a_second_later(stories: StoryStore) -> None:
    _add(stories, "s1")
    [c] = stories.claim("w", lease_s=30)
    stories.save(c)
    assert stories.claim("w2") == []
    time.sleep(0.7)
    assert [x.doc.id for x in stories.claim("w2")] == ["s1"]


def test_a_lost_lease_cannot_write_even_while_its_worker_holds_others(
    stories: StoryStore,
) -> None:
    _add(stories, "s1", at=T0)
    _add(stories, "s2", at=T0 + timedelta(seconds=1))
    [lapsing] = stories.claim("w", story_id="s1", lease_s=0)
    [held] = stories.claim("w", story_id="s2", lease_s=30)
    assert lapsing.fence == held.fence == 1
    time.sleep(0.01)
    [taken] = stories.claim("w2", story_id="s1", lease_s=30)
    lapsing.doc.state = StoryState.FAILED
    with pytest.raises(StaleLease):
        stories.save(lapsing)
    assert stories.get("s1").state is StoryState.QUEUED
    # nor may the same worker's older claim once it claimed the story again
    _add(stories, "s3")
    [old] = stories.claim("w", story_id="s3", lease_s=0)
    time.sleep(0.01)
    [new] = stories.claim("w", story_id="s3", lease_s=30)
    assert (old.owner, new.owner) == ("w", "w")
    old.doc.state = StoryState.FAILED
    with pytest.raises(StaleLease):
        stories.save(old)
    assert stories.get("s3").state is StoryState.QUEUED
    assert taken.fence == 2


def test_a_handed_back_step_is_retried_about_a_second_later(stories: StoryStore) -> None:
    _add(stories, "s1")
    [c] = stories.claim("w", lease_s=30)
    assert stories.hand_back(c)
    assert stories.claim("w2") == []  # not at once
    time.sleep(1.1)
    assert [x.doc.id for x in stories.claim("w2")] == ["s1"]


def test_a_hand_back_releases_only_that_claim(stories: StoryStore) -> None:
    _add(stories, "s1", at=T0)
    _add(stories, "s2", at=T0 + timedelta(seconds=1))
    c1, c2 = stories.claim("w", lease_s=30)
    assert (c1.fence, c2.fence) == (1, 1)
    assert stories.hand_back(c1, retry_in_s=0)
    time.sleep(0.01)
    assert [x.doc.id for x in stories.claim("w2")] == ["s1"]  # s2 stays leased


def test_a_stale_or_foreign_claim_cannot_hand_back_the_current_lease(
    stories: StoryStore,
) -> None:
    _add(stories, "s1")
    [old] = stories.claim("w", lease_s=0)
    time.sleep(0.01)
    [new] = stories.claim("w", lease_s=30)  # the same worker, a newer lease
    assert stories.hand_back(old, retry_in_s=0) is False
    foreign = StoryClaim(new.doc, new.fence, "intruder", False, 0.0)
    assert stories.hand_back(foreign, retry_in_s=0) is False
    time.sleep(0.01)
    assert stories.claim("w2") == []  # still leased to the newer claim
    new.doc.state = StoryState.RUNNING
    stories.save(new)  # which may still write


def test_a_list_shows_fifty_stories_unless_asked_for_more(stories: StoryStore) -> None:
    for i in range(51):
        _add(stories, f"s{i:02d}", at=T0 + timedelta(seconds=i))
    listed = stories.list()
    assert len(listed) == 50
    assert listed[0].id == "s50"
    assert len(stories.list(limit=60)) == 51


def test_a_cancel_request_reaches_the_next_claim_at_once(stories: StoryStore) -> None:
    _add(stories, "s1", tenant="acme")
    [c] = stories.claim("w")
    stories.save(c, next_run_s=3600)
    doc = stories.request_cancel("s1", "acme")
    assert doc.id == "s1"
    time.sleep(0.01)
    [again] = stories.claim("w")  # due now, not in an hour
    assert again.cancel_requested is True


def test_a_cancel_for_another_tenant_or_no_story_is_not_found(stories: StoryStore) -> None:
    _add(stories, "s1", tenant="acme")
    with pytest.raises(NotFound, match=r"^no story 's1'$"):
        stories.request_cancel("s1", "other")
    with pytest.raises(NotFound, match=r"^no story 'x'$"):
        stories.request_cancel("x")
    assert stories.request_cancel("s1").id == "s1"
    [c] = stories.claim("w")
    assert c.cancel_requested


# --- the plan's money and frames ---------------------------------------------------------


def _seg(
    n: int, cost: float, latency: float, keep: float, delivered: float = 8.0, trim: float = 0.0
) -> SegmentPlan:
    return SegmentPlan(
        index=n,
        request=VideoRequest(prompt="p"),
        offerings=["o"],
        offering_id="o",
        delivered_s=delivered,
        keep_s=keep,
        trim_start_s=trim,
        cost_usd=cost,
        latency_s=latency,
    )


def _shot(i: int, segs: list[SegmentPlan], transition: str = "cut", xf: float = 0.0) -> ShotPlan:
    return ShotPlan(
        index=i,
        prompt=f"shot {i}",
        duration_s=sum(s.keep_s for s in segs),
        offering_id="o",
        model="m",
        segments=segs,
        transition=transition,
        crossfade_s=xf,
        audio="none",
    )


def test_a_shot_costs_its_segments_and_takes_them_one_after_another() -> None:
    shot = _shot(0, [_seg(0, 0.1, 20.0, 4.0), _seg(1, 0.2, 30.0, 3.5)])
    assert shot.cost_usd == pytest.approx(0.3)
    assert shot.latency_s == 50.0
    assert shot.keep_s == 7.5


def test_a_plan_costs_every_shot_and_takes_as_long_as_the_slowest() -> None:
    plan = _plan(
        [
            _shot(0, [_seg(0, 0.1, 20.0, 4.0), _seg(1, 0.1, 20.0, 4.0)]),
            _shot(1, [_seg(0, 0.35, 30.0, 2.0)]),
        ],
        budget_usd=1.0,
    )
    assert plan.cost_usd == pytest.approx(0.55)
    assert plan.latency_s == 40.0
    assert _plan().latency_s == 0.0
    assert _plan().cost_usd == 0.0


def test_costs_are_rounded_to_a_millionth_not_to_the_cent() -> None:
    shot = _shot(0, [_seg(0, 0.1234564, 1.0, 1.0), _seg(1, 0.0000004, 1.0, 1.0)])
    assert shot.cost_usd == 0.123457
    assert _plan([shot, shot]).cost_usd == 0.246914


def test_film_frames_are_the_kept_frames_less_each_crossfade() -> None:
    plan = _plan(
        [
            _shot(0, [_seg(0, 0, 0, 2.0), _seg(1, 0, 0, 1.5)]),  # 24 + 18 frames at 12 fps
            _shot(1, [_seg(0, 0, 0, 3.0)], transition="crossfade", xf=0.5),  # 36 - 6
            _shot(2, [_seg(0, 0, 0, 1.0)], transition="cut"),  # 12
        ]
    )
    assert plan.film_frames() == 24 + 18 + 36 - 6 + 12
    assert plan.film_s == pytest.approx(84 / 12)


def test_a_crossfade_into_the_first_shot_takes_nothing_off() -> None:
    plan = _plan([_shot(0, [_seg(0, 0, 0, 2.0)], transition="crossfade", xf=0.5)])
    assert plan.film_frames() == 24


def test_the_summary_says_shots_segments_film_cost_time_and_budget() -> None:
    plan = _plan(
        [
            _shot(0, [_seg(0, 0.1, 20.36, 2.0), _seg(1, 0.2, 10.0, 1.0)]),
            _shot(1, [_seg(0, 0.3, 5.0, 1.0 / 3)], transition="crossfade", xf=0.25),
        ],
        budget_usd=0.75,
        primary="o",
    )
    assert plan.summary() == {
        "title": "t",
        "primary": "o",
        "shots": 2,
        "segments": 3,
        "film_s": round((24 + 12 + 4 - 3) / 12, 3),
        "estimated_cost_usd": pytest.approx(0.6),
        "estimated_time_s": 30.4,  # to the tenth
        "budget_usd": 0.75,
    }


def test_durations_round_up_to_what_the_offering_makes() -> None:
    listed = DurationSpec(values=[8, 4])
    assert ceil_duration(listed, 4) == 4
    assert ceil_duration(listed, 4.0000001) == 4  # within a float's noise
    assert ceil_duration(listed, 4.01) == 8
    assert ceil_duration(listed, 1) == 4
    assert ceil_duration(listed, 8.01) is None
    stepped = DurationSpec(min=2, max=10, step=2)
    assert ceil_duration(stepped, 2) == 2
    assert ceil_duration(stepped, 2.5) == 4
    assert ceil_duration(stepped, 4.0000001) == 4
    assert ceil_duration(stepped, 9.5) == 10
    assert ceil_duration(stepped, 10.0000001) == 10
    assert ceil_duration(stepped, 10.5) is None
    odd = DurationSpec(min=3, max=10, step=2)  # 3, 5, 7, 9 and the max
    assert ceil_duration(odd, 9.5) == 10
    assert ceil_duration(odd, 0) == 3


def test_frames_split_into_as_few_even_segments_as_fit() -> None:
    assert split_frames(10, 4, 0) == [4, 3, 3]
    assert split_frames(8, 4, 0) == [4, 4]
    assert split_frames(9, 4, 0) == [3, 3, 3]
    # with one repeated frame per join, 8 frames need 3 clips of at most 4
    assert split_frames(8, 4, 1) == [3, 3, 2]
    assert split_frames(7, 4, 1) == [4, 3]
    assert split_frames(1, 4, 1) == [1]
    for total, most, overlap in [(100, 7, 1), (61, 30, 1), (61, 30, 0), (5, 5, 2)]:
        parts = split_frames(total, most, overlap)
        assert sum(parts) == total
        assert max(parts) - min(parts) <= 1
        carried = [p + (overlap if i else 0) for i, p in enumerate(parts)]
        assert max(carried) <= most


def test_a_local_reference_becomes_a_data_url_and_a_url_stays_as_given(tmp_path: Path) -> None:
    png = write_png(tmp_path / "fox.png", (200, 80, 20))
    url = as_url(png)
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == png.read_bytes()
    odd = tmp_path / "blob.zz9"
    odd.write_bytes(b"\x00\x01")
    assert as_url(odd) == "data:application/octet-stream;base64,AAE="
    assert as_url("https://example.com/fox.png") == "https://example.com/fox.png"


def test_one_request_may_ask_for_at_most_the_requests_own_bound() -> None:
    assert REQUEST_MAX_S == 120.0
    story = load_story("title: T\nresolution: 480p\nshots:\n  - {prompt: a, duration: 4}\n").story
    shot = story.shots[0]
    assert base_request(story, shot, duration_s=500).duration_s == 120.0
    assert base_request(story, shot, duration_s=4).duration_s == 4


def test_a_shots_request_carries_the_story_look_prompt_and_deadline() -> None:
    story = load_story(
        "title: The Fox\nresolution: 480p\nstyle: ink\n"
        "characters: {Fox: {description: a red fox}}\n"
        "styles: {ink: {description: ink wash}}\n"
        "shots:\n"
        "  - {prompt: a fox runs, duration: 4, camera: slow dolly in, characters: [Fox],"
        " audio: native}\n"
        "  - {prompt: b, duration: 4}\n"
    ).story
    req = base_request(story, story.shots[0], duration_s=4)
    assert req.prompt == "a fox runs Camera: slow dolly in. Fox: a red fox. Style: ink wash."
    assert req.audio is AudioMode.REQUIRED
    assert req.metadata == {"story": "The Fox"}
    assert req.mode is Mode.TEXT_TO_VIDEO
    assert req.references == []
    other = base_request(story, story.shots[1], duration_s=4)
    assert other.prompt == "b Style: ink wash."
    assert other.audio is AudioMode.NONE
    chained = base_request(story, story.shots[1], duration_s=4, mode=Mode.IMAGE_TO_VIDEO)
    assert [r.role for r in chained.references] == [ReferenceRole.FIRST_FRAME]
    extended = base_request(story, story.shots[1], duration_s=4, mode=Mode.EXTEND)
    assert [r.role for r in extended.references] == [ReferenceRole.SOURCE_VIDEO]


# --- planning against the budget ---------------------------------------------------------


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    g = Gateway(sandbox_settings(tmp_path / "home", "http://127.0.0.1:9"), catalog=story_catalog())
    yield g
    g.close()


def test_a_plan_over_the_budget_says_by_how_much_and_what_to_raise_it_to(gw: Gateway) -> None:
    # loom makes both shots at $0.05/s: 2 x 5 s = $0.50
    text = (
        "title: T\nresolution: 480p\nbudget: 0.333\nshots:\n"
        "  - {prompt: a, duration: 5, audio: native}\n  - {prompt: b, duration: 5}\n"
    )
    plan, problems = plan_story(load_story(text), gw.router(), gw.catalog)
    assert plan.cost_usd == pytest.approx(0.5)
    assert plan.budget_usd == 0.333
    [p] = problems
    assert p.field == "budget"
    assert p.line == 3
    assert p.message == (
        "$0.33 is below the plan's $0.50; raise budget: to at least 0.50, or shorten or drop shots"
    )


def test_a_budget_equal_to_the_plan_is_enough(gw: Gateway) -> None:
    text = (
        "title: T\nresolution: 480p\nbudget: 0.5\nshots:\n"
        "  - {prompt: a, duration: 5, audio: native}\n  - {prompt: b, duration: 5}\n"
    )
    plan, problems = plan_story(load_story(text), gw.router(), gw.catalog)
    assert plan.cost_usd == pytest.approx(0.5)
    assert problems == []


def test_the_least_budget_is_rounded_up_to_the_cent(gw: Gateway) -> None:
    # reel makes 3 s at $0.01/s and loom 1 s... a plan of $0.035 needs at least $0.04
    text = "title: T\nresolution: 480p\nbudget: 0.01\nshots:\n  - {prompt: a, duration: 3.5}\n"
    plan, problems = plan_story(load_story(text), gw.router(), gw.catalog)
    [p] = problems
    want = -(-round(plan.cost_usd * 1e6) // 10_000) / 100  # cents, rounded up
    assert f"raise budget: to at least {want:.2f}," in p.message


def test_a_plan_with_an_unplannable_shot_and_over_budget_says_partial(tmp_path: Path) -> None:
    raw = yaml.safe_load((HERE / "story_catalog.yaml").read_text())
    for o in raw["offerings"]:
        if o["id"] == "loom-sandbox":
            o["capabilities"]["modes"] = ["text-to-video"]  # no chaining: 25 s cannot be made
    cat = catalog_from_yaml(yaml.safe_dump(raw), "no-chain")
    g = Gateway(sandbox_settings(tmp_path / "home", "http://127.0.0.1:9"), catalog=cat)
    try:
        text = (
            "title: T\nresolution: 480p\nbudget: 0.01\nshots:\n"
            "  - {prompt: a, duration: 5}\n  - {prompt: b, duration: 25}\n"
        )
        plan, problems = plan_story(load_story(text), g.router(), g.catalog)
    finally:
        g.close()
    assert [s.index for s in plan.shots] == [0]
    shot, money = problems
    assert shot.field == "shots[1]"
    assert money.message == (
        f"$0.01 is below the plan's ${plan.cost_usd:.2f} for the shots that could be planned; "
        f"raise budget: to at least {plan.cost_usd:.2f}, or shorten or drop shots"
    )


def test_a_shot_the_primary_cannot_make_says_every_reason(tmp_path: Path) -> None:
    raw = yaml.safe_load((HERE / "story_catalog.yaml").read_text())
    for o in raw["offerings"]:
        if o["id"] == "loom-sandbox":  # only long clips: reel serves more shots
            o["capabilities"]["durations"] = {"min": 7, "max": 10, "step": 1}
    cat = catalog_from_yaml(yaml.safe_dump(raw), "long-loom")
    g = Gateway(sandbox_settings(tmp_path / "home", "http://127.0.0.1:9"), catalog=cat)
    try:
        text = (
            "title: T\nresolution: 480p\nshots:\n"
            "  - {prompt: a, duration: 5}\n  - {prompt: b, duration: 5}\n"
            "  - {prompt: c, duration: 8, audio: native}\n"
        )
        plan, problems = plan_story(load_story(text), g.router(), g.catalog)
    finally:
        g.close()
    assert problems == []
    assert plan.primary == "reel-sandbox"
    assert [s.offering_id for s in plan.shots] == ["reel-sandbox", "reel-sandbox", "loom-sandbox"]
    # both of reel's reasons, one after the other
    assert plan.shots[2].switched_because == (
        "reel-sandbox cannot: 8s not available (nearest 6s, max 6s); no native audio"
    )


def test_the_longest_request_is_the_requests_own_declared_bound() -> None:
    from vidgate.stories.plan import _request_max_s

    [le] = [m.le for m in VideoRequest.model_fields["duration_s"].metadata if hasattr(m, "le")]
    assert _request_max_s() == float(le) == REQUEST_MAX_S


def _catalog_with(edit: Any) -> Any:
    raw = yaml.safe_load((HERE / "story_catalog.yaml").read_text())
    edit(raw)
    return catalog_from_yaml(yaml.safe_dump(raw), "edited")


def _plan_on(tmp_path: Path, cat: Any, text: str, base: Path | None = None) -> Any:
    g = Gateway(sandbox_settings(tmp_path / "home", "http://127.0.0.1:9"), catalog=cat)
    try:
        return plan_story(load_story(text, base_dir=base), g.router(), g.catalog)
    finally:
        g.close()


def _durations(raw: dict[str, Any], oid: str, lo: int, hi: int) -> dict[str, Any]:
    """Set an offering's duration range in a raw catalog; returns the offering."""
    o: dict[str, Any] = next(o for o in raw["offerings"] if o["id"] == oid)
    o["capabilities"]["durations"] = {"min": lo, "max": hi, "step": 1}
    return o


def _reel_copy(
    raw: dict[str, Any], durations: tuple[int, int], usd: float, **fields: Any
) -> dict[str, Any]:
    """reel-sandbox copied with other fields, durations and price (same price source)."""
    reel = next(o for o in raw["offerings"] if o["id"] == "reel-sandbox")
    other: dict[str, Any] = yaml.safe_load(yaml.safe_dump(reel))
    other.update(fields)
    other["capabilities"]["durations"] = {"min": durations[0], "max": durations[1], "step": 1}
    other["price"] = [{"usd": usd, "source": reel["price"][0]["source"]}]
    return other


def test_a_shot_the_primary_cannot_make_goes_to_the_same_model_elsewhere(
    tmp_path: Path,
) -> None:
    def edit(raw: dict[str, Any]) -> None:
        other = _reel_copy(
            raw,
            (7, 10),
            0.5,
            id="reel-elsewhere",
            provider="elsewhere",
            credential_env=["ELSE_KEY"],
        )  # the dearest
        raw["offerings"].append(other)
        _durations(raw, "loom-sandbox", 7, 10)

    plan, problems = _plan_on(
        tmp_path,
        _catalog_with(edit),
        "title: T\nresolution: 480p\nshots:\n"
        "  - {prompt: a, duration: 5}\n  - {prompt: b, duration: 5}\n"
        "  - {prompt: c, duration: 8}\n",
    )
    assert problems == []
    assert plan.primary == "reel-sandbox"
    # loom is cheaper for the 8 s shot, but the same model through another provider wins
    assert [s.offering_id for s in plan.shots] == [
        "reel-sandbox",
        "reel-sandbox",
        "reel-elsewhere",
    ]
    assert plan.shots[2].model == "reel"
    assert plan.shots[2].switched_because is not None


def test_the_primary_keeps_its_shots_and_the_same_vendor_comes_before_another(
    tmp_path: Path,
) -> None:
    def edit(raw: dict[str, Any]) -> None:
        # the same model, cheaper, 3 s at most; and another model of reel's vendor
        cheap = _reel_copy(
            raw, (1, 3), 0.001, id="reel-cheap", provider="cheapco", credential_env=["CHEAP_KEY"]
        )
        sibling = _reel_copy(
            raw, (7, 10), 0.5, id="reel2-sandbox", model="reel2", credential_env=["REEL2_KEY"]
        )
        raw["offerings"] += [cheap, sibling]
        model = next(m for m in raw["models"] if m["id"] == "reel")
        raw["models"].append({**yaml.safe_load(yaml.safe_dump(model)), "id": "reel2"})
        _durations(raw, "loom-sandbox", 7, 10)

    plan, problems = _plan_on(
        tmp_path,
        _catalog_with(edit),
        "title: T\nresolution: 480p\nshots:\n"
        "  - {prompt: a, duration: 3}\n  - {prompt: b, duration: 5}\n"
        "  - {prompt: c, duration: 5}\n  - {prompt: d, duration: 8}\n",
    )
    assert problems == []
    assert plan.primary == "reel-sandbox"
    # a: reel-cheap ranks first, but the story's offering makes it; d: loom is cheaper, but
    # reel's vendor makes it too
    assert [s.offering_id for s in plan.shots] == [
        "reel-sandbox",
        "reel-sandbox",
        "reel-sandbox",
        "reel2-sandbox",
    ]
    assert plan.shots[0].switched_because is None
    assert plan.shots[0].segments[0].offerings[1:2] == ["reel-cheap"]  # kept as its fallback


def test_a_one_clip_shot_takes_the_routers_nearest_duration(tmp_path: Path) -> None:
    # 7.4 s is within a second of loom's 7 s: one 7 s clip, priced as such (not 8 s)
    plan, problems = _plan_on(
        tmp_path,
        story_catalog(),
        "title: T\nresolution: 480p\nfps: 12\nshots:\n"
        "  - {prompt: a, duration: 7.4, audio: native}\n",
    )
    assert problems == []
    [seg] = plan.shots[0].segments
    assert plan.shots[0].chain == "none"
    assert (seg.request.duration_s, seg.delivered_s, seg.keep_s) == (7, 7, 7)
    assert seg.cost_usd == pytest.approx(0.35)


def test_a_shot_one_frame_under_two_clips_is_two_clips(tmp_path: Path) -> None:
    # 239 frames at 12 fps on loom (120 frames a clip, one repeated frame per join)
    plan, problems = _plan_on(
        tmp_path,
        story_catalog(),
        "title: T\nresolution: 480p\nfps: 12\nshots:\n  - {prompt: a, duration: 19.92}\n",
    )
    assert problems == []
    [shot] = plan.shots
    assert shot.chain == "frames"
    assert [round(s.keep_s * 12) for s in shot.segments] == [120, 119]


def test_continuing_clips_are_asked_long_enough_for_the_repeated_frame(tmp_path: Path) -> None:
    # 18 s at 12 fps: 108 frames each; the second also repeats the first's last frame, so it
    # asks for 109 frames' worth (10 s, loom's whole seconds), keeps 108 and trims one
    plan, problems = _plan_on(
        tmp_path,
        story_catalog(),
        "title: T\nresolution: 480p\nfps: 12\nshots:\n  - {prompt: a, duration: 18}\n",
    )
    assert problems == []
    first, second = plan.shots[0].segments
    assert (first.starts, second.starts) == ("fresh", "last_frame")
    assert (first.delivered_s, second.delivered_s) == (9, 10)
    assert (first.keep_s, second.keep_s) == (9, 9)
    assert (first.trim_start_s, second.trim_start_s) == (0, 1 / 12)
    assert second.request.mode is Mode.IMAGE_TO_VIDEO
    assert plan.cost_usd == pytest.approx(0.05 * 19)


def test_an_extended_shot_of_exactly_two_clips_is_two_clips(tmp_path: Path) -> None:
    def edit(raw: dict[str, Any]) -> None:
        for o in raw["offerings"]:
            o["enabled"] = o["id"] == "tide-sandbox"

    plan, problems = _plan_on(
        tmp_path,
        _catalog_with(edit),
        "title: T\nresolution: 480p\nfps: 12\nshots:\n  - {prompt: a, duration: 16}\n",
    )
    assert problems == []
    [shot] = plan.shots
    assert shot.chain == "extend"
    assert [(s.starts, s.keep_s, s.trim_start_s) for s in shot.segments] == [
        ("fresh", 8, 0),
        ("extend", 8, 0),
    ]


def test_references_stop_at_what_the_offering_takes_subjects_first(tmp_path: Path) -> None:
    for i, name in enumerate("abcst"):
        write_png(tmp_path / f"{name}.png", (i, i, i))

    def edit(raw: dict[str, Any]) -> None:
        loom = next(o for o in raw["offerings"] if o["id"] == "loom-sandbox")
        loom["capabilities"]["max_references"] = 2

    plan, problems = _plan_on(
        tmp_path,
        _catalog_with(edit),
        "title: T\nresolution: 480p\nseed: 5\nstyle: ink\n"
        "characters:\n  Fox: {description: a fox, references: [a.png, b.png]}\n"
        "  Owl: {description: an owl, references: [c.png]}\n"
        "styles: {ink: {description: ink, references: [s.png, t.png]}}\n"
        "shots:\n  - {prompt: a, duration: 8, characters: [Fox, Owl]}\n"
        "  - {prompt: b, duration: 8, characters: [Owl]}\n"
        "  - {prompt: c, duration: 14}\n",
        base=tmp_path,
    )
    assert problems == []
    first, second, third = plan.shots
    req = first.segments[0].request
    assert [r.role for r in req.references] == [ReferenceRole.SUBJECT, ReferenceRole.SUBJECT]
    assert first.references == ["subject:Fox"]
    req = second.segments[0].request
    assert [r.role for r in req.references] == [ReferenceRole.SUBJECT, ReferenceRole.STYLE]
    assert second.references == ["style:ink", "subject:Owl"]
    assert first.seed == second.seed == 5
    # a longer shot: its first clip takes both style references; the continuing clip starts
    # from the last frame, which takes one of the two places
    assert third.chain == "frames"
    fresh, cont = (seg.request for seg in third.segments)
    assert [r.role for r in fresh.references] == [ReferenceRole.STYLE, ReferenceRole.STYLE]
    assert [r.role for r in cont.references] == [ReferenceRole.FIRST_FRAME, ReferenceRole.STYLE]


@pytest.mark.parametrize("policy", ["best-quality", "balanced", "fastest"])
def test_a_long_shot_is_planned_in_segments_under_every_policy(tmp_path: Path, policy: str) -> None:
    plan, problems = _plan_on(
        tmp_path,
        story_catalog(),
        f"title: T\nresolution: 480p\npolicy: {policy}\nshots:\n  - {{prompt: a, duration: 14}}\n",
    )
    assert problems == []
    [shot] = plan.shots
    assert shot.offering_id == "loom-sandbox"  # the only offering that continues a clip
    assert shot.chain == "frames"
    assert len(shot.segments) == 2


def test_an_offering_without_references_or_seeds_gets_neither(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png", (1, 1, 1))
    plan, problems = _plan_on(
        tmp_path,
        story_catalog(),
        "title: T\nresolution: 480p\nseed: 5\n"
        "characters: {Fox: {description: a fox, references: [a.png]}}\n"
        "shots:\n  - {prompt: a, duration: 4, characters: [Fox]}\n",
        base=tmp_path,
    )
    assert problems == []
    [shot] = plan.shots
    # loom serves a 4 s shot too, but reel is cheapest and takes no reference nor seed
    assert shot.offering_id == "reel-sandbox"
    assert shot.references == []
    assert shot.seed is None
    assert shot.segments[0].request.references == []
    assert shot.segments[0].request.seed is None


def test_a_prompt_is_cut_to_what_one_request_takes() -> None:
    long = "x" * 1000
    chars = "\n".join(f"  C{i}: {{description: {long}}}" for i in range(8))
    names = ", ".join(f"C{i}" for i in range(8))
    story = load_story(
        f"title: T\nresolution: 480p\ncharacters:\n{chars}\n"
        f"shots:\n  - {{prompt: {'p' * 4000}, duration: 4, characters: [{names}]}}\n"
    ).story
    req = base_request(story, story.shots[0], duration_s=4)
    assert len(req.prompt) == 8000
    assert req.prompt.startswith("p" * 4000 + " C0: ")


# --- the record against the ledger -------------------------------------------------------


def _job(
    jid: str,
    cost: float | None,
    quality: dict[str, Any] | None = None,
    attempts: list[tuple[str, AttemptState, float | None]] | None = None,
    duration: float | None = 5.0,
    stages: dict[str, dict[str, Any]] | None = None,
) -> Job:
    return Job(
        id=jid,
        state=JobState.SUCCEEDED,
        request=VideoRequest(prompt="p"),
        created_at=T0,
        updated_at=T0,
        offering_id="loom-sandbox",
        cost_usd=cost,
        quality=quality,
        stages=stages or {},
        attempts=[
            Attempt(
                n=i + 1,
                offering_id=o,
                state=s,
                idempotency_key=f"{jid}-{i}",
                started_at=T0,
                estimated_cost_usd=c or 0.0,
                cost_usd=c,
            )
            for i, (o, s, c) in enumerate(attempts or [])
        ],
        assets=[]
        if duration is None
        else [Asset(id="a", uri="file:///x.mp4", sha256="0" * 64, bytes=1, duration_s=duration)],
    )


def _row(job_id: str, amount: float, kind: str = "charge") -> dict[str, Any]:
    return {"job_id": job_id, "kind": kind, "amount_usd": amount}


def _two_shot_plan() -> StoryPlan:
    return _plan(
        [
            _shot(0, [_seg(0, 0.25, 20, 4.0), _seg(1, 0.25, 20, 4.0)]),
            _shot(1, [_seg(0, 0.1, 10, 2.0)]),
        ],
        budget_usd=1.0,
    )


def test_the_record_books_each_segment_at_what_the_ledger_charged() -> None:
    children = {
        "0.0": _job(
            "j00",
            0.3,
            quality={"verdict": "pass", "score": 8.0},
            stages={"checks": {"verdict": "pass"}},
            attempts=[
                ("loom-sandbox", AttemptState.REJECTED, 0.1),
                ("loom-sandbox", AttemptState.SUCCEEDED, 0.2),
            ],
        ),
        "0.1": _job("j01", 0.25),
        "1.0": _job("j10", 0.1, duration=None),
    }
    ledger = [
        _row("j00", 0.1),
        _row("j00", 0.2),
        _row("j01", 0.25, kind="pending"),
        _row("j10", 0.1),
        _row("j10", 0.05, kind="refund"),  # not a charge: not counted
        _row("j10", 9.0, kind="reserve"),
    ]
    rec = build_record(
        story_id="s1",
        title="T",
        plan=_two_shot_plan(),
        children=children,
        ledger=ledger,
        joins=[{"how": "frames"}],
        film={"uri": "file:///film.mp4"},
        shot_files={"0": "file:///0.mp4"},
    )
    assert rec["story"] == "s1"
    assert rec["title"] == "T"
    assert rec["film"] == {"uri": "file:///film.mp4"}
    assert rec["joins"] == [{"how": "frames"}]
    assert rec["plan"]["estimated_cost_usd"] == pytest.approx(0.6)
    assert rec["cost_usd"] == pytest.approx(0.65)
    assert rec["ledger_usd"] == pytest.approx(0.65)
    assert rec["matches_ledger"] is True
    s0, s1 = rec["shots"]
    assert s0["file"] == "file:///0.mp4"
    assert s1["file"] is None
    assert s0["cost_usd"] == pytest.approx(0.55)
    assert s1["cost_usd"] == pytest.approx(0.1)
    assert (s0["shot"], s1["shot"]) == (0, 1)
    assert (s0["prompt"], s1["prompt"]) == ("shot 0", "shot 1")
    assert {k: v for k, v in s1.items() if k not in ("segments", "quality")} == {
        "shot": 1,
        "prompt": "shot 1",
        "duration_s": 2.0,
        "offering": "o",
        "model": "m",
        "chain": "none",
        "switched_because": None,
        "references": [],
        "seed": None,
        "transition": "cut",
        "audio": "none",
        "file": None,
        "cost_usd": pytest.approx(0.1),
    }
    seg = s0["segments"][0]
    assert seg["starts"] == "fresh"
    assert seg["quality"] == {"verdict": "pass", "score": 8.0}
    assert seg["stages"] == {"checks": {"verdict": "pass"}}
    assert s0["segments"][1]["stages"] is None  # no stage ran
    assert s0["segments"][1]["quality"] is None
    assert seg["job_id"] == "j00"
    assert seg["segment"] == 0
    assert seg["state"] == "succeeded"
    assert seg["planned_offering"] == "o"
    assert seg["offering"] == "loom-sandbox"
    assert seg["estimated_cost_usd"] == 0.25
    assert seg["cost_usd"] == 0.3
    assert seg["ledger_usd"] == pytest.approx(0.3)
    assert seg["delivered_s"] == 5.0
    assert seg["keep_s"] == 4.0
    assert seg["attempts"] == [
        {"offering": "loom-sandbox", "state": "rejected", "cost_usd": 0.1},
        {"offering": "loom-sandbox", "state": "succeeded", "cost_usd": 0.2},
    ]
    assert s0["segments"][1]["ledger_usd"] == pytest.approx(0.25)  # pending counts
    assert s1["segments"][0]["ledger_usd"] == pytest.approx(0.1)  # refund and hold do not
    assert s1["segments"][0]["delivered_s"] is None


def test_a_record_a_cent_off_the_ledger_says_it_does_not_match() -> None:
    children = {"0.0": _job("j00", 0.3), "0.1": _job("j01", 0.25), "1.0": _job("j10", 0.1)}
    ledger = [_row("j00", 0.3), _row("j01", 0.25), _row("j10", 0.11)]
    rec = build_record(
        story_id="s1",
        title="T",
        plan=_two_shot_plan(),
        children=children,
        ledger=ledger,
        joins=[],
        film=None,
        shot_files={},
    )
    assert rec["cost_usd"] == pytest.approx(0.65)
    assert rec["ledger_usd"] == pytest.approx(0.66)
    assert rec["matches_ledger"] is False


def test_a_record_within_half_a_cent_of_the_ledger_matches_to_the_cent() -> None:
    children = {"0.0": _job("j00", 0.301)}
    rec = build_record(
        story_id="s1",
        title="T",
        plan=_two_shot_plan(),
        children=children,
        ledger=[_row("j00", 0.3)],
        joins=[],
        film=None,
        shot_files={},
    )
    assert rec["matches_ledger"] is True


def test_ledger_figures_are_kept_to_the_millionth() -> None:
    rec = build_record(
        story_id="s1",
        title="T",
        plan=_two_shot_plan(),
        children={"0.0": _job("j00", 0.1234564)},
        ledger=[_row("j00", 0.1234564)],
        joins=[],
        film=None,
        shot_files={},
    )
    assert rec["shots"][0]["segments"][0]["ledger_usd"] == 0.123456
    assert rec["shots"][0]["cost_usd"] == 0.123456
    assert rec["ledger_usd"] == 0.123456
    assert rec["cost_usd"] == 0.123456


def test_segments_not_yet_made_are_left_out_and_cost_nothing() -> None:
    rec = build_record(
        story_id="s1",
        title="T",
        plan=_two_shot_plan(),
        children={"0.1": _job("j01", None)},
        ledger=[],
        joins=[],
        film=None,
        shot_files={},
    )
    s0, s1 = rec["shots"]
    assert [s["segment"] for s in s0["segments"]] == [1]
    assert s0["segments"][0]["cost_usd"] == 0.0
    assert s0["segments"][0]["ledger_usd"] == 0.0  # nothing booked for it
    assert s1["segments"] == []
    assert s1["quality"] is None
    assert rec["cost_usd"] == 0.0
    assert rec["matches_ledger"] is True


def test_a_jobs_verdict_in_brief() -> None:
    assert verdict(None) is None
    assert verdict({}) is None
    assert verdict({"history": []}) is None
    full = {
        "verdict": "fail",
        "score": 4.5,
        "flagged": True,
        "failed": ["checks.frozen"],
        "regenerations": 2,
        "gate": {"source": "request"},
        "history": [{"action": "regenerate"}],
    }
    assert verdict(full) == {
        "verdict": "fail",
        "score": 4.5,
        "flagged": True,
        "failed": ["checks.frozen"],
        "regenerations": 2,
        "gate": "request",
    }
    assert verdict({"verdict": "pass"}) == {
        "verdict": "pass",
        "score": None,
        "flagged": False,
        "failed": [],
        "regenerations": 0,
        "gate": None,
    }


def _q(
    v: str, score: float | None, failed: list[str], regen: int = 0, flag: bool = False
) -> dict[str, Any]:
    return {
        "verdict": v,
        "score": score,
        "failed": failed,
        "regenerations": regen,
        "flagged": flag,
        "gate": {"source": "tenant"},
    }


def test_a_shot_passes_only_when_every_judged_segment_passed() -> None:
    assert shot_verdict([]) is None
    assert shot_verdict([_job("a", 0, None), _job("b", 0, None)]) is None
    one = _job("a", 0, _q("pass", 8.0, []))
    assert shot_verdict([one]) == verdict(one.quality)
    segs = [
        _job("a", 0, _q("pass", 8.0, [], regen=1)),
        _job("b", 0, _q("fail", 5.0, ["min_score", "checks.frozen"], regen=2, flag=True)),
        _job("c", 0, _q("fail", None, ["checks.frozen"])),
        _job("d", 0, None),  # not judged yet
    ]
    assert shot_verdict(segs) == {
        "verdict": "fail",
        "score": 5.0,
        "flagged": True,
        "failed": ["checks.frozen", "min_score"],
        "regenerations": 3,
        "gate": "tenant",
        "segments_judged": 3,
    }
    passed = shot_verdict([_job("a", 0, _q("pass", None, [])), _job("b", 0, _q("pass", 7, []))])
    assert passed is not None
    assert (passed["verdict"], passed["score"], passed["flagged"]) == ("pass", 7, False)
    assert passed["segments_judged"] == 2
    # one judged segment of two is still a segmented shot's verdict
    half = shot_verdict([_job("a", 0, _q("pass", 6.0, [])), _job("b", 0, None)])
    assert half is not None
    assert half["segments_judged"] == 1
    unscored = shot_verdict(
        [_job("a", 0, _q("pass", None, [])), _job("b", 0, _q("pass", None, []))]
    )
    assert unscored is not None
    assert unscored["score"] is None
