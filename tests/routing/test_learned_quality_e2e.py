"""Learned quality through the whole system: the sandbox renders 20% of the cheapest
offering's clips off-prompt, the VLM judge (the sandbox's generateContent) scores them, the
gate regenerates each one, the judge's calls are on the ledger, and once that offering has N
gated clips the router sends gated traffic to the next offering — saying why in the route it
stores on the job."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import sandbox_settings
from vidgate.catalog.loader import load_catalog
from vidgate.gateway import Gateway
from vidgate.jobs.postprocess import STAGE_ROW_BASE
from vidgate.jobs.worker import WorkerConfig
from vidgate.sandbox.app import SandboxServer
from vidgate.sandbox.core import FaultConfig, FaultRule
from vidgate.types import JobState, VideoRequest

CATALOG = load_catalog()
BAD = "cogvideox-5b-replicate"  # the cheapest for the request below ($0.18)
N = 8
GATE = {"judge": True, "on_fail": "regenerate", "max_extra_attempts": 2}


def request(i: int) -> VideoRequest:
    return VideoRequest.model_validate(
        {
            "prompt": f"a fox in snow, take {i}",
            "duration_s": 5,
            "resolution": "720p",
            "quality": GATE,
        }
    )


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxServer]:
    server = SandboxServer(tmp_path / "sandbox", CATALOG, time_scale=0.002).start()
    server.core._rng.seed(2024)  # the defective draws land on the same jobs every run
    server.core.faults = FaultConfig(rules=[FaultRule(kind="off_prompt", rate=0.2, offering=BAD)])
    yield server
    server.stop()


@pytest.fixture
def gw(
    tmp_path: Path, sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Gateway]:
    monkeypatch.setenv("VIDGATE_STAGES", "semantic")
    monkeypatch.delenv("VIDGATE_QUALITY_DEFAULT", raising=False)
    monkeypatch.delenv("VIDGATE_JUDGE_BASE_URL", raising=False)
    g = Gateway(
        sandbox_settings(tmp_path / "home", sandbox.url, learn_min_samples=N), catalog=CATALOG
    )
    yield g
    g.close()


async def run_all(gw: Gateway) -> None:
    # one at a time: the seeded fault draws land on the same jobs
    w = gw.worker(WorkerConfig(deliver_webhooks=False, concurrency=1))
    await w.run(until_idle=True)


async def test_off_prompt_clips_are_regenerated_then_traffic_moves(
    gw: Gateway, sandbox: SandboxServer
) -> None:
    assert gw.router().route(request(0)).choice.offering.id == BAD
    ids: list[str] = []
    # BAD's (gated clips, pass rate) at each refresh that kept routing there
    seen: list[tuple[int, float]] = []
    for batch in range(8):
        ids += [gw.submit(request(batch * 4 + i)).id for i in range(4)]
        await run_all(gw)
        gw.refresh_stats()  # what the running process does on its timer
        if gw.router().route(request(99)).choice.offering.id != BAD:
            break
        q = gw.stats.quality_stats[BAD]
        seen.append((q.samples, q.pass_rate))
    learned = gw.stats.quality_stats[BAD]
    print("BAD's (gated clips, pass rate) while routed there:", seen, "then", learned)
    # the catalog's choice held until N clips were judged; then the learned estimate moved it
    assert learned.samples >= N
    # (0.18 / 0.20: under a 90% pass rate its expected cost per passing clip is dearer)
    assert seen, "the catalog's choice held for at least one batch"
    assert all(n < N or rate >= 0.9 for n, rate in seen)
    assert learned.pass_rate < 0.9
    # the next gated jobs go elsewhere, and each stores why in its route
    after = [gw.submit(request(200 + i)) for i in range(2)]
    await run_all(gw)
    await gw.aclose()
    for job in after:
        assert job.offering_id != BAD
        loser = next(c for c in (job.route or {})["runners_up"] if c["offering"] == BAD)
        assert loser["quality"]["from"].startswith("learned: Elo ")
        assert (
            f"blended with {learned.samples} gated clips, {learned.pass_rate:.0%} pass"
            in (loser["quality"]["from"])
        )
        assert loser["expected_cost_per_pass_usd"] > job.route["chosen"]["estimated_cost_usd"]
        assert gw.store.get(job.id).state is JobState.SUCCEEDED
    jobs = [gw.store.get(i) for i in ids]

    off_prompt = sandbox.core.store.stats()["events"].get("fault:off_prompt", 0)
    assert off_prompt >= 1
    rejected = 0
    for job in jobs:
        # every delivered clip passed the judge; every off-prompt one was regenerated
        assert job.state is JobState.SUCCEEDED, job.error
        q = job.quality or {}
        assert q["verdict"] == "pass"
        for h in q["history"][:-1]:
            assert h["verdict"] == "fail"
            assert h["offering"] == BAD
            assert "semantic.judge_prompt_adherence" in h["failed"]
            assert h["action"] in ("regenerate", "fallback")
        if len(q["history"]) > 1:
            assert q["history"][0]["action"] == "regenerate"  # a new seed first
        rejected += len(q["history"]) - 1
        # the judge's calls are on the ledger, one stage row per judged clip
        stage_rows = [
            r for r in gw.store.ledger(job_id=job.id) if int(r["attempt_n"]) >= STAGE_ROW_BASE
        ]
        assert len(stage_rows) == len(q["history"])
        assert all(float(r["amount_usd"]) > 0 for r in stage_rows)
        assert job.stages["semantic"]["cost_usd"] == pytest.approx(
            float(stage_rows[-1]["amount_usd"])
        )
    assert rejected == off_prompt
