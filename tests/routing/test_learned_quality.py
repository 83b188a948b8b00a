"""Learned quality: the gate's verdicts stored on jobs teach the router which offerings'
clips keep failing. Workloads run through a real job store (SQLite file), the router learns
from it exactly as the gateway does, and a second process sharing the store learns the same."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from vidgate.catalog.loader import load_catalog
from vidgate.jobs.store import JobStore
from vidgate.routing.policies import tier_priors
from vidgate.routing.router import Router, RouterEnv
from vidgate.routing.stats import LearnedStats, QualityStats, blend
from vidgate.sandbox.app import emulated_protocols
from vidgate.types import Attempt, AttemptState, Job, JobState, QualityGate, VideoRequest

CATALOG = load_catalog()
NOW = datetime.now(UTC)
N = 20  # samples before learned quality counts (learn_min_samples)
GATE = QualityGate(judge=True, on_fail="regenerate")
REQ = VideoRequest(prompt="a fox in snow", duration_s=5, resolution="720p", quality_gate=GATE)


def router(stats: LearnedStats | None) -> Router:
    return Router(
        RouterEnv(
            catalog=CATALOG,
            protocols=frozenset(emulated_protocols()),
            has_credentials=lambda n: True,
            now=lambda: NOW,
            stats=stats,
        )
    )


def gated_job(i: int, history: list[dict[str, Any]], synthetic: bool = False) -> Job:
    at = NOW - timedelta(minutes=600 - i)
    attempts = [
        Attempt(
            n=h["attempt"],
            offering_id=h["offering"],
            state=AttemptState.SUCCEEDED,
            idempotency_key=f"k{i}-{h['attempt']}",
            started_at=at,
            ended_at=at + timedelta(seconds=30),
            estimated_cost_usd=0.2,
        )
        for h in history
    ]
    last = history[-1]
    return Job(
        id=f"job_{i:04d}",
        state=JobState.SUCCEEDED,
        request=REQ,
        created_at=at,
        updated_at=at,
        offering_id=last["offering"],
        attempts=attempts,
        synthetic=synthetic,
        quality={
            "verdict": last["verdict"],
            "score": last["score"],
            "failed": last.get("failed", []),
            "history": history,
        },
    )


def outcome(offering: str, defective: bool) -> list[dict[str, Any]]:
    """What a regenerate gate writes: a defective clip fails, the new seed passes."""
    ok = {"attempt": 1, "offering": offering, "verdict": "pass", "score": 8.0, "failed": []}
    if not defective:
        return [ok]
    bad = {
        "attempt": 1,
        "offering": offering,
        "verdict": "fail",
        "score": 2.0,
        "failed": ["judge_prompt_adherence"],
    }
    return [bad, {**ok, "attempt": 2}]


def learn(store: JobStore, synthetic: bool = False) -> LearnedStats:
    # what Gateway.refresh_stats does
    return LearnedStats.from_jobs(
        store.list(limit=5000), CATALOG, min_samples=N, synthetic_quality=synthetic
    )


def test_blend_pins() -> None:
    perfect = QualityStats(samples=20, passed=20, mean_score=7.0)
    assert blend(1200.0, perfect, 20).elo == 1200.0
    # every clip failing, as much evidence as the prior: halfway to prior − 400
    hopeless = QualityStats(samples=20, passed=0, mean_score=7.0)
    assert blend(1200.0, hopeless, 20).elo == pytest.approx(1000.0)
    # more evidence moves it further; a higher mean score lifts it
    assert blend(1200.0, QualityStats(60, 0, 7.0), 20).elo == pytest.approx(1200 - 0.75 * 400)
    assert blend(1200.0, QualityStats(20, 20, 9.0), 20).elo == pytest.approx(1225.0)
    q = blend(1180.0, QualityStats(23, 14, 6.0), 20)
    assert q.describe().startswith("Elo 1180 prior blended with 23 gated clips, 61% pass")


def test_quality_counts_only_after_n_samples(tmp_path: Path) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'q.db'}")
    first = router(None).route(REQ, policy="cheapest").choice.offering.id
    for i in range(N - 1):
        store.create(gated_job(i, outcome(first, defective=True)[:1]))
    stats = learn(store)
    assert stats.quality_stats[first].samples == N - 1
    plan = router(stats).route(REQ, policy="cheapest")
    assert plan.choice.offering.id == first  # 19 failures are not enough to act on
    assert plan.choice.quality_source == "catalog"
    store.create(gated_job(N, outcome(first, defective=True)[:1]))
    plan = router(learn(store)).route(REQ, policy="cheapest")
    assert plan.choice.offering.id != first


def test_defective_offering_loses_traffic(tmp_path: Path) -> None:
    """20% of one offering's clips are defective; the gate regenerates each. Until that
    offering has N gated clips the catalog decides; after, gated traffic goes elsewhere and
    the explanation says why."""
    store = JobStore(f"sqlite:///{tmp_path / 'q.db'}")
    stats = learn(store)
    target = router(stats).route(REQ, policy="cheapest").choice.offering.id
    sent: list[str] = []
    served = 0
    for i in range(60):
        plan = router(stats).route(REQ, policy="cheapest")
        chosen = plan.choice.offering.id
        sent.append(chosen)
        defective = chosen == target and served % 5 == 4
        served += chosen == target
        store.create(gated_job(i, outcome(chosen, defective)))
        stats = learn(store)  # a long-running process refreshes on a timer; here every job
    switched = sent.index(next(o for o in sent if o != target))
    # every clip before the switch went to the target; the gate had seen N of its clips
    assert set(sent[:switched]) == {target}
    assert stats.quality_stats[target].samples >= N
    assert all(o != target for o in sent[switched:])
    q = stats.quality_stats[target]
    assert q.pass_rate == pytest.approx(q.passed / q.samples)
    assert 0.75 < q.pass_rate < 0.9  # 1 in 5 defective, each followed by a passing retry
    assert q.failures == {"judge_prompt_adherence": q.samples - q.passed}
    # the explanation names the learned estimate and the expected cost per passing clip
    plan = router(stats).route(REQ, policy="cheapest")
    expl = plan.explain(runners_up=60)
    loser = next(c for c in expl["runners_up"] if c["offering"] == target)
    prior = CATALOG.offering(target)
    elo = (
        CATALOG.model_of(prior).quality.elo
        or tier_priors(CATALOG)[(prior.tier or CATALOG.model_of(prior).quality.tier).rank]
    )
    assert loser["quality"]["from"].startswith(
        f"learned: Elo {elo:.0f} prior blended with {q.samples} gated clips, {q.pass_rate:.0%} pass"
    )
    assert loser["expected_cost_per_pass_usd"] == pytest.approx(
        loser["estimated_cost_usd"] / q.pass_rate, rel=1e-3
    )
    assert expl["chosen"]["estimated_cost_usd"] < loser["expected_cost_per_pass_usd"]
    # an ungated request still pays only the price: the cheapest clip wins again
    ungated = VideoRequest(prompt="a fox", duration_s=5, resolution="720p")
    assert router(stats).route(ungated, policy="cheapest").choice.offering.id == target


def test_balanced_and_best_quality_prefer_the_same_model_elsewhere(tmp_path: Path) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'q.db'}")
    before = router(None).route(REQ, policy="balanced")
    top = before.choice
    twin = next(
        c for c in before.ranked[1:] if c.model.id == top.model.id and c.cost_usd == top.cost_usd
    )
    for i in range(N):
        store.create(gated_job(i, outcome(top.offering.id, defective=i % 5 == 4)))
    after = router(learn(store)).route(REQ, policy="balanced")
    assert after.choice.offering.id == twin.offering.id
    cand = next(c for c in after.ranked if c.offering.id == top.offering.id)
    assert cand.quality_elo is not None
    assert cand.quality_elo < (top.compiled.elo or tier_priors(CATALOG)[top.compiled.tier])


def test_synthetic_and_real_history_do_not_mix(tmp_path: Path) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'q.db'}")
    oid = router(None).route(REQ, policy="cheapest").choice.offering.id
    for i in range(N):
        store.create(gated_job(i, outcome(oid, True)[:1], synthetic=True))
    assert oid not in learn(store).quality_stats
    assert learn(store, synthetic=True).quality_stats[oid].samples == N


def test_another_process_sharing_the_store_learns_it(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    store = JobStore(f"sqlite:///{db}")
    oid = router(None).route(REQ, policy="cheapest").choice.offering.id
    for i in range(N):
        store.create(gated_job(i, outcome(oid, True)[:1], synthetic=True))
    store.close()
    script = (
        "import json,sys\n"
        "from vidgate.gateway import Gateway\n"
        "from vidgate.settings import Settings\n"
        "from vidgate.types import VideoRequest\n"
        "gw = Gateway(Settings(home=sys.argv[1], database_url=sys.argv[2], sandbox=True))\n"
        "req = VideoRequest.model_validate_json(sys.argv[3])\n"
        "plan = gw.router().route(req, policy='cheapest')\n"
        "print(json.dumps(plan.explain(runners_up=60)))\n"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(tmp_path / "home"),
            f"sqlite:///{db}",
            REQ.model_dump_json(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    expl = json.loads(out.stdout)
    assert expl["chosen"]["offering"] != oid
    loser = next(c for c in expl["runners_up"] if c["offering"] == oid)
    assert f"blended with {N} gated clips, 0% pass" in loser["quality"]["from"]
