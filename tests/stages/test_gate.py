"""The quality gate through the whole system: the sandbox renders defective clips for one
offering, the worker stores them, the checks stage measures them and the gate regenerates,
falls back, flags or fails — billing every clip that was made, within budget and deadline.
A crash inside post-processing resumes at the stage it was in."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.conftest import sandbox_settings
from vidgate.catalog.loader import Catalog, load_catalog
from vidgate.gateway import Gateway
from vidgate.jobs.postprocess import STAGE_ROW_BASE, PostProcessor
from vidgate.jobs.worker import WorkerConfig
from vidgate.sandbox.app import SandboxServer
from vidgate.sandbox.core import FaultConfig, FaultRule
from vidgate.server.videos import video_object
from vidgate.settings import Settings
from vidgate.stages.base import Stage, StageContext, StageResult, now
from vidgate.stages.checks import ChecksStage
from vidgate.types import AttemptState, Job, JobState, VideoRequest

BAD = "beta-openai"  # the cheapest offering for the request below: ranked first
GOOD = "alpha-openai"


@pytest.fixture
def sandbox(tmp_path: Path, mini_catalog: Catalog) -> Iterator[SandboxServer]:
    server = SandboxServer(tmp_path / "sandbox", mini_catalog, time_scale=0.002).start()
    yield server
    server.stop()


@pytest.fixture
def gw(
    tmp_path: Path, mini_catalog: Catalog, sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Gateway]:
    monkeypatch.setenv("VIDGATE_STAGES", "checks")
    monkeypatch.delenv("VIDGATE_QUALITY_DEFAULT", raising=False)
    g = Gateway(sandbox_settings(tmp_path / "home", sandbox.url), catalog=mini_catalog)
    yield g
    g.close()


def defects(sandbox: SandboxServer, offering: str, **rates: float) -> None:
    sandbox.core.faults = FaultConfig(
        rules=[FaultRule(kind=k, rate=r, offering=offering) for k, r in rates.items()]
    )


def request(prompt: str, gate: dict[str, object] | None = None, **kw: object) -> VideoRequest:
    body: dict[str, object] = {
        "prompt": prompt,
        "duration_s": 4,
        "resolution": "720p",
        "aspect_ratio": "16:9",
        **kw,
    }
    if gate is not None:
        body["quality"] = gate
    return VideoRequest.model_validate(body)


async def run_all(gw: Gateway, concurrency: int = 4) -> None:
    w = gw.worker(WorkerConfig(deliver_webhooks=False, concurrency=concurrency))
    try:
        await w.run(until_idle=True)
    finally:
        await gw.aclose()


def attempt_rows(gw: Gateway, job: Job) -> list[dict[str, Any]]:
    return [r for r in gw.store.ledger(job_id=job.id) if int(r["attempt_n"]) < STAGE_ROW_BASE]


def assert_billed_every_clip(gw: Gateway, job: Job) -> None:
    rows = attempt_rows(gw, job)
    assert sorted(int(r["attempt_n"]) for r in rows) == [a.n for a in job.attempts]
    for a in job.attempts:
        if a.state is AttemptState.REJECTED:
            # the provider made (and charged) the rejected clip
            assert a.cost_usd == pytest.approx(a.estimated_cost_usd)
    assert job.cost_usd == pytest.approx(sum(float(r["amount_usd"]) for r in rows))


async def test_twenty_percent_defective_offering_every_delivered_clip_passes(
    gw: Gateway, sandbox: SandboxServer
) -> None:
    defects(sandbox, BAD, frozen=0.1, black=0.1 / 0.9)  # 20% of BAD's clips, none of GOOD's
    sandbox.core._rng.seed(1234)
    gate = {"on_fail": "regenerate", "max_extra_attempts": 2}
    ids = [gw.submit(request(f"a lighthouse {i}", gate)).id for i in range(12)]
    await run_all(gw, concurrency=1)  # one at a time: the seeded draws land on the same jobs
    jobs = [gw.store.get(i) for i in ids]
    made = sandbox.core.store.stats()["events"]
    defective = made.get("fault:frozen", 0) + made.get("fault:black", 0)
    assert defective >= 1, "the seed must draw at least one defective clip"
    rejected = 0
    for job in jobs:
        assert job.state is JobState.SUCCEEDED, job.error
        q = job.quality or {}
        assert q["verdict"] == "pass"
        assert q["flagged"] is False
        # every delivered clip passes every check (re-measured here, not taken from the job)
        assert job.stages["checks"]["verdict"] == "pass"
        assert job.stages["checks"]["asset_id"] == job.assets[0].id
        history = q["history"]
        for h in history[:-1]:
            assert h["verdict"] == "fail"
            assert h["offering"] == BAD
            assert {f.split(".")[1] for f in h["failed"]} & {"frozen", "black_frames"}
        if len(history) > 1:
            # first a new seed on the same offering, then the next ranked one
            assert history[0]["action"] == "regenerate"
            assert [a.offering_id for a in job.attempts[:2]] == [BAD, BAD]
            assert job.request.seed is not None
            if len(history) > 2:
                assert history[1]["action"] == "fallback"
                assert job.attempts[2].offering_id == GOOD
        assert history[-1]["action"] == "deliver"
        rejected += sum(a.state is AttemptState.REJECTED for a in job.attempts)
        assert q["regenerations"] == len(history) - 1
        assert_billed_every_clip(gw, job)
    # every defective clip the sandbox delivered was caught and replaced
    assert rejected == defective


async def test_fallback_goes_to_the_next_ranked_offering(
    gw: Gateway, sandbox: SandboxServer
) -> None:
    defects(sandbox, BAD, hard_cut=1.0)
    job = gw.submit(request("one shot of a fox", {"on_fail": "fallback"}))
    await run_all(gw)
    job = gw.store.get(job.id)
    assert job.state is JobState.SUCCEEDED
    assert [(a.offering_id, a.state) for a in job.attempts] == [
        (BAD, AttemptState.REJECTED),
        (GOOD, AttemptState.SUCCEEDED),
    ]
    first = job.quality["history"][0]  # type: ignore[index]
    assert first["action"] == "fallback"
    assert first["failed"] == ["checks.hard_cuts"]
    # the rejected clip's record stays, without where its file was (deleted)
    [gone] = first["rejected"]["assets"]
    assert "uri" not in gone
    assert first["rejected"]["stages"]["checks"]["verdict"] == "fail"
    assert_billed_every_clip(gw, job)


async def test_fail_names_the_failed_checks_and_bills_the_clip(
    gw: Gateway, sandbox: SandboxServer
) -> None:
    defects(sandbox, BAD, short=1.0)
    job = gw.submit(request("a short clip", {"on_fail": "fail"}), pinned=[BAD])
    await run_all(gw)
    job = gw.store.get(job.id)
    assert job.state is JobState.FAILED
    assert job.error is not None
    assert job.error["code"] == "quality_gate_failed"
    assert "checks.duration" in job.error["message"]
    assert "on_fail is fail" in job.error["message"]
    assert [a.state for a in job.attempts] == [AttemptState.REJECTED]
    assert job.quality is not None
    assert job.quality["verdict"] == "fail"
    assert_billed_every_clip(gw, job)
    assert job.cost_usd == pytest.approx(job.attempts[0].estimated_cost_usd)


@pytest.mark.parametrize(
    ("defect", "check"),
    [
        ("flicker", "checks.flicker"),
        ("truncated", "checks.decode"),
        ("hard_cut", "checks.hard_cuts"),
    ],
)
async def test_deliver_flagged_succeeds_with_the_verdict_in_the_openai_metadata(
    gw: Gateway, sandbox: SandboxServer, defect: str, check: str
) -> None:
    defects(sandbox, BAD, **{defect: 1.0})
    job = gw.submit(request("a clip", {"on_fail": "deliver_flagged"}), pinned=[BAD])
    await run_all(gw)
    job = gw.store.get(job.id)
    assert job.state is JobState.SUCCEEDED
    assert job.quality is not None
    assert job.quality["flagged"] is True
    assert check in job.quality["failed"]
    meta = video_object(job)["metadata"]
    assert meta["vidgate_quality_verdict"] == "fail"
    assert meta["vidgate_quality_flagged"] == "true"
    assert check in meta["vidgate_quality_failed"]
    assert len(job.attempts) == 1


async def test_extra_attempts_are_bounded_then_the_job_fails(
    gw: Gateway, sandbox: SandboxServer
) -> None:
    sandbox.core.faults = FaultConfig(rules=[FaultRule(kind="black", rate=1.0)])  # everywhere
    job = gw.submit(request("night", {"on_fail": "regenerate", "max_extra_attempts": 1}))
    await run_all(gw)
    job = gw.store.get(job.id)
    assert job.state is JobState.FAILED
    assert [a.offering_id for a in job.attempts] == [BAD, BAD]  # one extra, then no more
    assert job.error is not None
    assert "all 1 extra attempt(s) were used" in job.error["message"]
    assert job.quality is not None
    assert [h["action"] for h in job.quality["history"]] == ["regenerate", "fail"]
    assert_billed_every_clip(gw, job)


async def test_budget_stops_extra_attempts(gw: Gateway, sandbox: SandboxServer) -> None:
    defects(sandbox, BAD, frozen=1.0)
    job = gw.submit(
        request(
            "a capped job",
            {"on_fail": "regenerate", "max_extra_attempts": 3},
            constraints={"max_cost_usd": 0.45},
        )
    )
    await run_all(gw)
    job = gw.store.get(job.id)
    assert job.state is JobState.FAILED
    assert [a.offering_id for a in job.attempts] == [BAD]  # no second clip fits the cap
    assert job.error is not None
    assert "max_cost_usd" in job.error["message"]
    # every attempt made fits the cap
    assert sum(a.cost_usd or 0.0 for a in job.attempts) <= 0.45 + 1e-9
    assert_billed_every_clip(gw, job)


async def test_tenant_default_gate(
    tmp_path: Path,
    mini_catalog: Catalog,
    sandbox: SandboxServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VIDGATE_STAGES", "checks")
    monkeypatch.setenv("VIDGATE_QUALITY_DEFAULT", '{"on_fail": "fail"}')
    gw = Gateway(sandbox_settings(tmp_path / "home2", sandbox.url), catalog=mini_catalog)
    try:
        defects(sandbox, GOOD, silent=1.0)  # the offering with sound
        job = gw.submit(request("a song", audio="required"), pinned=[GOOD])
        await run_all(gw)
        job = gw.store.get(job.id)
        assert job.state is JobState.FAILED
        assert job.quality is not None
        assert job.quality["gate"]["source"] == "tenant"
        assert job.quality["failed"] == ["checks.audio_silence"]
    finally:
        gw.close()


def test_bad_default_gate_is_a_start_up_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from vidgate.errors import ConfigError

    monkeypatch.setenv("VIDGATE_QUALITY_DEFAULT", '{"on_fail": "shrug"}')
    with pytest.raises(ConfigError, match="VIDGATE_QUALITY_DEFAULT: on_fail"):
        PostProcessor.configure()
    monkeypatch.setenv("VIDGATE_QUALITY_DEFAULT", "{}")
    monkeypatch.setenv("VIDGATE_STAGES", "checks,sharpen")
    with pytest.raises(ConfigError, match=r"unknown stage.*sharpen"):
        PostProcessor.configure()


# -- crash inside post-processing -------------------------------------------------------


class Crash(BaseException):
    """Stands for the process dying mid-stage (not an error a stage reports)."""


class CrashOnce(Stage):
    name = "crash_once"
    runs: ClassVar[int] = 0

    async def run(self, ctx: StageContext) -> StageResult:
        CrashOnce.runs += 1
        if CrashOnce.runs == 1:
            raise Crash
        t = now()
        return StageResult(
            stage=self.name,
            asset_id=ctx.asset.id,
            verdict="pass",
            score=8.0,
            started_at=t,
            finished_at=t,
        )


async def test_crash_mid_stage_resumes_at_that_stage(gw: Gateway, sandbox: SandboxServer) -> None:
    CrashOnce.runs = 0
    job = gw.submit(request("resume me", {"min_score": 7}), pinned=[BAD])
    stages = [ChecksStage(), CrashOnce()]
    w1 = gw.worker(WorkerConfig(deliver_webhooks=False))
    w1.driver._post = PostProcessor(stages, settings=gw.settings)
    [claim] = gw.store.claim("w1", job_id=job.id, lease_s=30)
    with pytest.raises(Crash):
        await w1.driver.drive(claim)
    mid = gw.store.get(job.id)
    assert mid.state is JobState.POST_PROCESSING
    assert set(mid.stages) == {"checks"}  # stored as it ended, before the crash
    checks_at = mid.stages["checks"]["finished_at"]
    downloads = sandbox.core.store.stats()["events"]["download"]
    # another worker takes the job over (the first one's lease is gone with it)
    gw.store.hand_back(claim)
    w2 = gw.worker(WorkerConfig(deliver_webhooks=False))
    w2.driver._post = PostProcessor(stages, settings=gw.settings)
    [claim2] = gw.store.claim("w2", job_id=job.id, lease_s=30)
    done = await w2.driver.drive(claim2)
    await gw.aclose()
    assert done.state is JobState.SUCCEEDED
    assert CrashOnce.runs == 2  # the stage it was in ran again
    assert done.stages["checks"]["finished_at"] == checks_at  # the stored one was not redone
    assert sandbox.core.store.stats()["events"]["download"] == downloads  # not fetched again
    assert done.quality is not None
    assert done.quality["score"] == 8.0
    assert done.quality["verdict"] == "pass"
    assert len(gw.store.ledger(job_id=job.id)) == 1


@pytest.mark.slow
def test_killed_in_a_stage_resumes_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real process SIGKILLed inside the provenance stage (after checks stored its result):
    the next run does not download again, keeps the checks result and runs provenance."""
    catalog = load_catalog()
    sb = SandboxServer(tmp_path / "sb", catalog, time_scale=0.002).start()
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDGATE_")}
    env.update(
        VIDGATE_HOME=str(home),
        VIDGATE_SANDBOX="1",
        VIDGATE_SANDBOX_URL=sb.url,
        VIDGATE_POLL_INTERVAL_S="0.05",
        VIDGATE_STAGES="checks,provenance",
        VIDGATE_CRASH_POINTS="stage_provenance:1",
        VIDGATE_CRASH_LOG=str(tmp_path / "crash.log"),
    )
    monkeypatch.setenv("VIDGATE_STAGES", "checks,provenance")
    gw = Gateway(Settings(home=home, sandbox=True, sandbox_url=sb.url), catalog=catalog)
    try:
        job = gw.submit(VideoRequest(prompt="a kite", duration_s=5))
        killed = subprocess.run(
            [
                sys.executable,
                "-c",
                "import asyncio,sys; from vidgate.gateway import Gateway; "
                "gw=Gateway(); asyncio.run(gw.run(sys.argv[1]))",
                job.id,
            ],
            env=env,
            timeout=120,
            check=False,
            capture_output=True,
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        assert (tmp_path / "crash.log").read_text().split() == ["stage_provenance"]
        mid = gw.job(job.id)
        assert mid.state is JobState.POST_PROCESSING
        assert set(mid.stages) == {"checks"}
        downloads = sb.core.store.stats()["events"]["download"]

        async def resume() -> Job:
            try:
                return await gw.run(job.id)
            finally:
                await gw.aclose()

        done = asyncio.run(resume())
        assert done.state is JobState.SUCCEEDED
        assert set(done.stages) == {"checks", "provenance"}
        assert done.stages["checks"] == mid.stages["checks"]  # not recomputed
        assert sb.core.store.stats()["events"]["download"] == downloads  # not fetched again
        assert len(gw.store.ledger(job_id=job.id)) == 1
    finally:
        gw.close()
        sb.stop()


# -- what a stage costs -----------------------------------------------------------------


class PaidStage(Stage):
    """A stage that calls a paid service (as the VLM judge does)."""

    name = "paid"
    price: ClassVar[float] = 0.1

    def estimate_cost_usd(self, job: Job, gate: object) -> float:
        return self.price

    async def run(self, ctx: StageContext) -> StageResult:
        t = now()
        return StageResult(
            stage=self.name,
            asset_id=ctx.asset.id,
            verdict="pass",
            score=9.0,
            cost_usd=self.price,
            started_at=t,
            finished_at=t,
        )


@pytest.mark.parametrize(("budget", "runs"), [(1.0, True), (0.3, False)])
async def test_stage_cost_is_budgeted_and_booked(gw: Gateway, budget: float, runs: bool) -> None:
    gw.accounts.ensure_tenant("payer", budget_usd=budget)
    job = gw.submit(request("judged"), pinned=[BAD], tenant="payer")
    w = gw.worker(WorkerConfig(deliver_webhooks=False))
    w.driver._post = PostProcessor([ChecksStage(), PaidStage()], settings=gw.settings)
    try:
        await w.run(until_idle=True)
    finally:
        await gw.aclose()
    job = gw.store.get(job.id)
    assert job.state is JobState.SUCCEEDED
    clip = job.attempts[0].cost_usd or 0.0
    rows = gw.store.ledger(job_id=job.id)
    stage_rows = [r for r in rows if r["offering_id"] == "stage:paid"]
    account = gw.accounts.tenant("payer")
    assert account is not None
    spent = account["spent_usd"]
    if runs:
        assert job.stages["paid"]["verdict"] == "pass"
        [row] = stage_rows
        assert row["amount_usd"] == pytest.approx(PaidStage.price)
        assert row["attempt_n"] >= STAGE_ROW_BASE
        assert job.cost_usd == pytest.approx(clip + PaidStage.price)
        assert spent == pytest.approx(clip + PaidStage.price)
    else:
        # the clip holds $0.25 of a $0.30 budget: the $0.10 call cannot be covered
        assert job.stages["paid"]["verdict"] == "skipped"
        assert "budget" in job.stages["paid"]["data"]["reason"]
        assert stage_rows == []
        assert job.cost_usd == pytest.approx(clip)
        assert spent == pytest.approx(clip)
    assert account["reserved_usd"] == pytest.approx(0.0)
