"""A story's limits held while it runs, not only when it is planned: its own budget is a hard
cap (a shot that would pass it is not started; a shot's regenerations stop at what the budget
left it), the tenant's cap on running jobs counts the story's running shots, and past its
deadline no shot starts and the story ends ``expired``. Whatever stops a story keeps the
shots it finished, and its record matches the ledger to the cent.

Real parts: the sandbox renders real MP4s over loopback, a real worker drives the shots on
a real SQLite store and ledger; prices and latencies come from catalogs written here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import sandbox_settings
from tests.stories.story_helpers import HERE, probe_video, story_catalog
from vidgate.catalog.loader import Catalog, catalog_from_yaml
from vidgate.gateway import Gateway
from vidgate.sandbox.app import SandboxServer
from vidgate.sandbox.core import FaultConfig, FaultRule
from vidgate.stories.driver import StoryDriver, run_story, story_store, submit_story
from vidgate.stories.plan import plan_story
from vidgate.stories.spec import load_story
from vidgate.stories.store import StoryDoc
from vidgate.types import JobState


def _catalog(edit: Callable[[dict[str, Any]], None]) -> Catalog:
    raw = yaml.safe_load((HERE / "story_catalog.yaml").read_text())
    for o in raw["offerings"]:
        edit(o)
    return catalog_from_yaml(yaml.safe_dump(raw), "edited")


def _doubled(o: dict[str, Any]) -> None:
    for rule in o["price"]:
        rule["usd"] = rule["usd"] * 2


def _story(budget: float | None = None, extra: str = "") -> str:
    head = "title: Limits\nresolution: 480p\nfps: 12\n"
    if budget is not None:
        head += f"budget: {budget}\n"
    return head + extra + "shots:\n  - {prompt: one, duration: 2}\n  - {prompt: two, duration: 3}\n"


def _planned_costs(gw: Gateway) -> tuple[float, float]:
    plan, problems = plan_story(load_story(_story()), gw.router(), gw.catalog)
    assert problems == []
    a, b = (s.cost_usd for s in plan.shots)
    assert 0 < a < b
    return a, b


def _ledger_total(gw: Gateway, doc: StoryDoc) -> float:
    return sum(
        float(r["amount_usd"])
        for jid in doc.children.values()
        for r in gw.store.ledger(job_id=jid)
        if r["kind"] in ("charge", "pending")
    )


def _accounted(gw: Gateway, doc: StoryDoc) -> None:
    """The record matches the ledger to the cent; nothing is held any more."""
    assert doc.record is not None
    assert doc.record["matches_ledger"] is True
    assert round(doc.record["cost_usd"], 2) == round(_ledger_total(gw, doc), 2)
    tenant = gw.accounts.tenant("default")
    assert tenant is not None
    assert tenant["reserved_usd"] == pytest.approx(0.0, abs=1e-9)
    assert tenant["spent_usd"] == pytest.approx(_ledger_total(gw, doc))


def _planned_then_run_dearer(
    tmp_path: Path, budget_of: Callable[[float, float], float]
) -> tuple[Gateway, SandboxServer, StoryDoc, float]:
    """Plan and hold a story at today's prices, then run it after every price doubled (a
    story resumed after a catalog update): the budget fits the plan, not the run."""
    cheap, dear = story_catalog(), _catalog(_doubled)
    sb = SandboxServer(tmp_path / "sandbox", dear, time_scale=0.004).start()
    first = Gateway(sandbox_settings(tmp_path / "home", sb.url), catalog=cheap)
    a, b = _planned_costs(first)
    budget = round(budget_of(a, b), 6)
    loaded = load_story(_story(budget))
    plan, problems = plan_story(loaded, first.router(), first.catalog)
    assert problems == []
    first.accounts.ensure_tenant("default")  # no tenant budget: only the story's holds
    doc, _ = submit_story(first, loaded, plan)
    first.close()
    return Gateway(sandbox_settings(tmp_path / "home", sb.url), catalog=dear), sb, doc, budget


def test_a_shot_that_would_pass_the_story_budget_is_not_started(tmp_path: Path) -> None:
    # the budget is exactly the plan; at the doubled price not even the first shot fits
    gw, sb, doc, budget = _planned_then_run_dearer(tmp_path, lambda a, b: a + b)
    try:
        doc = asyncio.run(run_story(gw, doc.id, timeout_s=60))
        assert doc.state.value == "failed"
        assert doc.error is not None
        assert doc.error["code"] == "story_budget_exceeded"
        msg = doc.error["message"]
        assert f"budget ${budget:.2f}" in msg
        assert "shot 1 segment 1" in msg
        assert "raise budget: to at least" in msg
        assert doc.error["budget_usd"] == pytest.approx(budget)
        assert doc.error["needed_usd"] > budget
        assert doc.children == {}
        assert sb.core.store.stats()["creates"] == 0
        _accounted(gw, doc)
    finally:
        gw.close()
        sb.stop()


def test_the_budget_left_after_a_dearer_shot_stops_the_next_and_keeps_the_first(
    tmp_path: Path,
) -> None:
    # room for the first shot at the doubled price, not for the second after it
    gw, sb, doc, budget = _planned_then_run_dearer(tmp_path, lambda a, b: 2 * a + b)
    try:
        doc = asyncio.run(run_story(gw, doc.id, timeout_s=60))
        assert doc.state.value == "failed", doc.error
        assert doc.error is not None
        assert doc.error["code"] == "story_budget_exceeded"
        assert "shot 2 segment 1" in doc.error["message"]
        assert list(doc.children) == ["0.0"]  # the second shot never started
        assert sb.core.store.stats()["creates"] == 1
        first = gw.store.get(doc.children["0.0"])
        assert first.state is JobState.SUCCEEDED
        # spent within the story's budget, and the child knew its cap
        assert first.cost_usd is not None
        assert first.cost_usd <= budget + 1e-9
        assert first.request.constraints.max_cost_usd == pytest.approx(first.cost_usd)
        # the finished shot is kept: a file that decodes, named in the record
        assert set(doc.shot_files) == {"0"}
        probe = probe_video(Path(gw.storage_path(doc.shot_files["0"])))
        assert probe.frames >= 2 * 12
        assert doc.record is not None
        assert doc.record["shots"][0]["file"] == doc.shot_files["0"]
        assert doc.record["shots"][1]["segments"] == []
        _accounted(gw, doc)
    finally:
        gw.close()
        sb.stop()


def test_regenerations_stop_at_what_the_story_budget_left_the_shot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VIDGATE_QUALITY_DEFAULT", raising=False)
    cat = story_catalog()
    # every clip comes out black: the story's gate regenerates while it may
    faults = FaultConfig(rules=[FaultRule(kind="black", rate=1.0)])
    sb = SandboxServer(tmp_path / "sandbox", cat, time_scale=0.004, faults=faults).start()
    gw = Gateway(sandbox_settings(tmp_path / "home", sb.url), catalog=cat)
    try:
        gate = "quality: {on_fail: regenerate, max_extra_attempts: 2, checks: [black_frames]}\n"
        probe = load_story(_story(extra=gate))
        plan, _ = plan_story(probe, gw.router(), gw.catalog)
        budget = plan.cost_usd  # no room for a second clip of either shot
        loaded = load_story(_story(budget, gate))
        plan, problems = plan_story(loaded, gw.router(), gw.catalog)
        assert problems == []
        gw.accounts.ensure_tenant("default")
        doc, _ = submit_story(gw, loaded, plan)
        doc = asyncio.run(run_story(gw, doc.id, timeout_s=90))
        assert doc.state.value == "failed"
        assert doc.error is not None
        assert doc.error["code"] == "story_budget_exceeded", doc.error
        assert f"${budget:.2f}" in doc.error["message"]
        # one clip a shot was made and billed; no regeneration passed the budget
        spent = _ledger_total(gw, doc)
        assert spent <= budget + 1e-9
        assert sb.core.store.stats()["creates"] == len(doc.children)
        _accounted(gw, doc)
    finally:
        gw.close()
        sb.stop()


def test_a_story_counts_its_running_shots_under_the_tenant_job_cap(tmp_path: Path) -> None:
    cat = story_catalog()
    sb = SandboxServer(tmp_path / "sandbox", cat, time_scale=0.004).start()
    gw = Gateway(sandbox_settings(tmp_path / "home", sb.url), catalog=cat)
    try:
        gw.accounts.ensure_tenant("default", max_concurrent_jobs=1)
        loaded = load_story(_story())
        plan, _ = plan_story(loaded, gw.router(), gw.catalog)
        doc, _ = submit_story(gw, loaded, plan)
        # one step with nothing running: one shot starts, the other waits for the slot
        [claim] = story_store(gw).claim("w", story_id=doc.id, lease_s=0)
        stepped = asyncio.run(StoryDriver(gw).step(claim))
        assert list(stepped.children) == ["0.0"]
        assert stepped.waiting is not None
        assert "max_concurrent_jobs 1" in stepped.waiting
        assert gw.accounts.running_jobs("default") == 1

        doc = asyncio.run(run_story(gw, doc.id, timeout_s=120))
        assert doc.state.value == "succeeded", doc.error
        one, two = (gw.store.get(doc.children[k]) for k in ("0.0", "1.0"))
        # never both at once: the second was created after the first had ended
        assert one.finished_at is not None
        assert two.created_at >= one.finished_at
        assert doc.waiting is None
    finally:
        gw.close()
        sb.stop()


def _slow_loom(o: dict[str, Any]) -> None:
    if o["id"] == "loom-sandbox":
        o["latency"] = {**o["latency"], "p50": 5.0, "p90": 5.25}


def test_past_its_deadline_no_shot_starts_and_the_story_expires_keeping_what_was_made(
    tmp_path: Path,
) -> None:
    cat = _catalog(_slow_loom)
    # time scale 1: a clip takes the catalog's latency (about 4.7 s for a 7 s segment), so
    # the second segment is ready only seconds after the deadline left it too little time
    sb = SandboxServer(tmp_path / "sandbox", cat, time_scale=1.0).start()
    sb.core._rng.seed(7)
    gw = Gateway(sandbox_settings(tmp_path / "home", sb.url), catalog=cat)
    try:
        body = "title: Late\nresolution: 480p\nfps: 12\nshots:\n  - {prompt: long, duration: 14}\n"
        plan, _ = plan_story(load_story(body), gw.router(), gw.catalog)
        [shot] = plan.shots
        assert shot.chain == "frames"
        assert len(shot.segments) == 2
        first = gw.router().route(shot.segments[0].request, pinned=[shot.offering_id]).choice
        # time for the first segment (p90) and 3.5 s to spare, not for the second after it
        deadline = datetime.now(UTC) + timedelta(seconds=first.latency_s["p90"] + 3.5)
        loaded = load_story(body.replace("shots:", f"deadline: {deadline.isoformat()}\nshots:"))
        plan, problems = plan_story(loaded, gw.router(), gw.catalog)
        assert problems == []
        gw.accounts.ensure_tenant("default")
        doc, _ = submit_story(gw, loaded, plan)
        doc = asyncio.run(run_story(gw, doc.id, timeout_s=60))
        assert doc.state.value == "expired", doc.error
        assert doc.error is not None
        assert doc.error["code"] == "deadline"
        assert "shot 1 segment 2" in doc.error["message"]
        assert "deadline" in doc.error["message"]
        assert list(doc.children) == ["0.0"]  # the second segment was never started
        assert sb.core.store.stats()["creates"] == 1
        made = gw.store.get(doc.children["0.0"])
        assert made.state is JobState.SUCCEEDED
        assert doc.record is not None
        assert doc.record["shots"][0]["segments"][0]["job_id"] == made.id
        _accounted(gw, doc)
    finally:
        gw.close()
        sb.stop()


def test_a_shot_made_before_a_crash_is_recorded_even_when_the_budget_has_no_room_now(
    tmp_path: Path,
) -> None:
    # the first shot's job is created, the process dies before the story records it, and
    # the story is resumed after the prices doubled: the job exists (and bills) whatever
    # the budget says now, so the story takes it up and accounts for it
    cheap, dear = story_catalog(), _catalog(_doubled)
    sb = SandboxServer(tmp_path / "sandbox", dear, time_scale=0.004).start()
    first = Gateway(sandbox_settings(tmp_path / "home", sb.url), catalog=cheap)
    a, b = _planned_costs(first)
    loaded = load_story(_story(round(a + b, 6)))
    plan, _ = plan_story(loaded, first.router(), first.catalog)
    first.accounts.ensure_tenant("default")
    doc, _ = submit_story(first, loaded, plan)
    [claim] = story_store(first).claim("crashing-worker", story_id=doc.id, lease_s=0)
    orphan, _ = StoryDriver(first)._create_child(claim, 0, plan.shots[0].segments[0], None)
    first.close()

    gw = Gateway(sandbox_settings(tmp_path / "home", sb.url), catalog=dear)
    try:
        doc = asyncio.run(run_story(gw, doc.id, timeout_s=60))
        assert doc.children.get("0.0") == orphan.id
        assert gw.store.get(orphan.id).state.terminal
        assert doc.state.value == "failed"
        assert doc.error is not None
        assert doc.error["code"] == "story_budget_exceeded"
        assert "shot 2 segment 1" in doc.error["message"]
        assert sb.core.store.stats()["creates"] == 1
        _accounted(gw, doc)
    finally:
        gw.close()
        sb.stop()


def test_a_fallback_dearer_than_the_story_budget_left_is_not_tried(tmp_path: Path) -> None:
    cat = story_catalog()
    # the planned (cheapest) offering fails every clip; the other one costs five times more
    faults = FaultConfig(rules=[FaultRule(kind="fail", rate=1.0, offering="reel-sandbox")])
    sb = SandboxServer(tmp_path / "sandbox", cat, time_scale=0.004, faults=faults).start()
    gw = Gateway(sandbox_settings(tmp_path / "home", sb.url), catalog=cat)
    try:
        a, b = _planned_costs(gw)
        loaded = load_story(_story(round(a + b, 6)))
        plan, problems = plan_story(loaded, gw.router(), gw.catalog)
        assert problems == []
        assert plan.shots[0].segments[0].offerings[:2] == ["reel-sandbox", "loom-sandbox"]
        gw.accounts.ensure_tenant("default")
        doc, _ = submit_story(gw, loaded, plan)
        doc = asyncio.run(run_story(gw, doc.id, timeout_s=60))
        assert doc.state.value == "failed"
        assert doc.error is not None
        assert doc.error["code"] == "story_budget_exceeded", doc.error
        jobs = [gw.store.get(j) for j in doc.children.values()]
        # no child went on to the dearer offering: only the failed clips were tried
        assert {att.offering_id for j in jobs for att in j.attempts} == {"reel-sandbox"}
        assert _ledger_total(gw, doc) <= a + b + 1e-9
        _accounted(gw, doc)
    finally:
        gw.close()
        sb.stop()
