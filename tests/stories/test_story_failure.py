"""What goes wrong: a shot the provider refuses fails the story (the others are stopped, the
hold released, the CLI exits 1); a crash between creating a shot's job and recording it
never makes a second job for that shot."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import sandbox_settings
from tests.stories.story_helpers import HERE, story_catalog
from vidgate.catalog.loader import catalog_from_yaml
from vidgate.gateway import Gateway
from vidgate.sandbox.app import SandboxServer
from vidgate.stories.driver import StoryDriver, run_story, story_store, submit_story
from vidgate.stories.plan import plan_story
from vidgate.stories.spec import load_story


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[tuple[Gateway, SandboxServer]]:
    cat = story_catalog()
    sb = SandboxServer(tmp_path / "sandbox", cat, time_scale=0.004).start()
    gw = Gateway(sandbox_settings(tmp_path / "home", sb.url), catalog=cat)
    yield gw, sb
    gw.close()
    sb.stop()


TWO = (
    "title: T\nresolution: 480p\nfps: 12\nshots:\n"
    "  - {prompt: %s, duration: 2}\n  - {prompt: %s, duration: 3}\n"
)


def test_a_refused_shot_fails_the_story_and_releases_the_hold(
    gw: tuple[Gateway, SandboxServer],
) -> None:
    gateway, _ = gw
    gateway.accounts.ensure_tenant("default", budget_usd=5.0)
    loaded = load_story(TWO % ("a calm lake", "'[unsafe] a bad shot'"))
    plan, problems = plan_story(loaded, gateway.router(), gateway.catalog)
    assert problems == []
    doc, _ = submit_story(gateway, loaded, plan)
    doc = asyncio.run(run_story(gateway, doc.id, timeout_s=120))
    assert doc.state.value == "failed"
    assert doc.error is not None
    assert doc.error["code"] == "shot_failed"
    assert doc.error["message"].startswith("shot 2 segment 1 failed")
    jobs = [gateway.store.get(j) for j in doc.children.values()]
    assert all(j.state.terminal for j in jobs)
    assert doc.film is None
    # nothing is held any more; spend is what the ledger booked for the shots that ran
    tenant = gateway.accounts.tenant("default")
    assert tenant is not None
    assert tenant["reserved_usd"] == pytest.approx(0.0, abs=1e-9)
    booked = sum(
        r["amount_usd"]
        for j in jobs
        for r in gateway.store.ledger(job_id=j.id)
        if r["kind"] == "charge"
    )
    assert tenant["spent_usd"] == pytest.approx(booked)
    assert doc.record is not None
    assert doc.record["matches_ledger"] is True


def test_a_child_made_before_a_crash_is_found_again_not_made_twice(
    gw: tuple[Gateway, SandboxServer],
) -> None:
    gateway, sb = gw
    loaded = load_story(TWO % ("one", "two"))
    plan, _ = plan_story(loaded, gateway.router(), gateway.catalog)
    doc, _ = submit_story(gateway, loaded, plan)
    driver = StoryDriver(gateway)
    [claim] = story_store(gateway).claim("crashing-worker", story_id=doc.id, lease_s=0)
    # the child of shot 1 is created; the process dies before the story records it
    orphan, _ = driver._create_child(claim, 0, plan.shots[0].segments[0], None)
    assert story_store(gateway).get(doc.id).children == {}

    doc = asyncio.run(run_story(gateway, doc.id, timeout_s=120))
    assert doc.state.value == "succeeded", doc.error
    assert doc.children["0.0"] == orphan.id
    made = [j for j in gateway.store.list(limit=50) if j.parent_id == doc.id]
    assert sorted(j.id for j in made) == sorted(doc.children.values())
    assert sb.core.store.stats()["creates"] == 2


def test_a_shot_dearer_than_the_budget_left_fails_the_story_and_stops_the_others(
    tmp_path: Path,
) -> None:
    # planned and held at one price; run after the price doubled (a story resumed after a
    # catalog update): the second shot no longer fits the tenant's budget
    cheap = story_catalog()
    raw = yaml.safe_load((HERE / "story_catalog.yaml").read_text())
    for o in raw["offerings"]:
        for rule in o["price"]:
            rule["usd"] = rule["usd"] * 2
    dear = catalog_from_yaml(yaml.safe_dump(raw), "dear")
    sb = SandboxServer(tmp_path / "sandbox", dear, time_scale=2.0).start()  # slow shots
    first = Gateway(sandbox_settings(tmp_path / "home", sb.url), catalog=cheap)
    loaded = load_story(TWO % ("one", "two"))
    plan, _ = plan_story(loaded, first.router(), first.catalog)
    first.accounts.ensure_tenant("default", budget_usd=plan.cost_usd)
    doc, _ = submit_story(first, loaded, plan)
    first.close()

    gateway = Gateway(sandbox_settings(tmp_path / "home", sb.url), catalog=dear)
    try:
        doc = asyncio.run(run_story(gateway, doc.id, timeout_s=60))
        assert doc.state.value == "failed"
        assert doc.error is not None
        assert doc.error["code"] == "budget_exceeded"
        # the shot already started is stopped, not left to bill for a film never made
        [started] = doc.children.values()
        job = asyncio.run(gateway.run(started))  # a worker acts on the cancel flag
        assert job.state.value == "canceled"
        tenant = gateway.accounts.tenant("default")
        assert tenant is not None
        assert tenant["reserved_usd"] == pytest.approx(0.0, abs=1e-9)
    finally:
        gateway.close()
        sb.stop()
