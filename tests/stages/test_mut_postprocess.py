"""Post-processing's money and configuration, one behaviour at a time: what a job has
committed (a rejected clip is billed, a pending attempt counts at its estimate), what it has
cost, the ledger rows of stage costs, start-up errors for a bad stage list, and — through
the sandbox — why an extra attempt may not start, as the failed job says."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import pytest

from tests.stages.test_gate import BAD, assert_billed_every_clip, defects, request, run_all
from tests.stages.test_gate import gw as gw  # the fixtures, by name
from tests.stages.test_gate import sandbox as sandbox
from vidgate.errors import ConfigError
from vidgate.gateway import Gateway
from vidgate.jobs.postprocess import (
    DEFAULT_STAGES,
    STAGE_ROW_BASE,
    PostProcessor,
    committed,
    job_cost,
    stage_row,
)
from vidgate.jobs.worker import WorkerConfig
from vidgate.sandbox.app import SandboxServer
from vidgate.settings import Settings
from vidgate.stages.base import Stage, StageContext, StageResult, now
from vidgate.stages.checks import ChecksStage
from vidgate.types import Attempt, AttemptState, Job, JobState, QualityGate, VideoRequest

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _job(*attempts: tuple[AttemptState, float, float | None], stages: dict[str, object]) -> Job:
    return Job(
        id="job_pp",
        state=JobState.POST_PROCESSING,
        request=VideoRequest(prompt="x"),
        created_at=T0,
        updated_at=T0,
        attempts=[
            Attempt(
                n=i + 1,
                offering_id="o",
                state=state,
                idempotency_key=f"k{i}",
                started_at=T0,
                estimated_cost_usd=est,
                cost_usd=cost,
            )
            for i, (state, est, cost) in enumerate(attempts)
        ],
        billing={"stages_usd": stages} if stages else None,
    )


# --- money ----------------------------------------------------------------------------------


def test_stage_rows_never_collide_with_attempt_rows() -> None:
    assert STAGE_ROW_BASE == 100_000
    assert stage_row(1, 0) == 100_100
    assert stage_row(2, 3) == 100_203
    rows = {stage_row(n, i) for n in range(1, 6) for i in range(5)}
    assert len(rows) == 25
    assert min(rows) > 99


def test_what_a_job_committed_counts_open_attempts_at_their_estimate() -> None:
    job = _job(
        (AttemptState.REJECTED, 0.25, 0.25),  # made and billed
        (AttemptState.FAILED, 0.25, None),  # nothing made: nothing billed
        (AttemptState.AMBIGUOUS, 0.3, None),  # may have been billed
        (AttemptState.ABANDONED, 0.4, None),
        (AttemptState.SUCCEEDED, 0.5, None),  # the clip under review, settled on delivery
        stages={"1:paid": 0.1, "5:paid": "0.05"},
    )
    assert committed(job) == pytest.approx(0.25 + 0.3 + 0.4 + 0.5 + 0.1 + 0.05)


def test_a_settled_attempt_counts_at_its_bill_not_its_estimate() -> None:
    job = _job(
        (AttemptState.SUCCEEDED, 0.5, 0.2),
        (AttemptState.AMBIGUOUS, 0.3, 0.1),
        (AttemptState.CANCELED, 0.3, None),
        stages={},
    )
    assert committed(job) == pytest.approx(0.3)


def test_committed_and_cost_are_rounded_to_a_millionth() -> None:
    job = _job((AttemptState.REJECTED, 0.1, 0.1234564), stages={"1:a": 0.0000004})
    assert committed(job) == 0.123457
    assert job_cost(job) == 0.123457


def test_what_a_job_cost_is_its_bills_plus_its_stages() -> None:
    job = _job(
        (AttemptState.REJECTED, 0.25, 0.25),
        (AttemptState.SUCCEEDED, 0.5, None),  # not billed yet: nothing
        (AttemptState.AMBIGUOUS, 0.3, None),
        stages={"1:paid": 0.1, "2:paid": 0.2},
    )
    assert job_cost(job) == pytest.approx(0.55)
    assert job_cost(_job(stages={})) == 0.0
    assert committed(_job(stages={})) == 0.0


# --- configuration --------------------------------------------------------------------------


def test_the_default_stages_in_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert DEFAULT_STAGES == "checks,semantic,provenance"
    monkeypatch.delenv("VIDGATE_STAGES", raising=False)
    monkeypatch.delenv("VIDGATE_QUALITY_DEFAULT", raising=False)
    monkeypatch.delenv("VIDGATE_CLIP_MODEL", raising=False)
    post = PostProcessor.configure(Settings(home=tmp_path))
    assert [s.name for s in post.stages] == ["checks", "semantic", "provenance"]
    assert post.default_gate is None


def test_configured_stages_are_named_in_order_blanks_ignored(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("VIDGATE_STAGES", " provenance , ,checks,")
    monkeypatch.setenv("VIDGATE_QUALITY_DEFAULT", '{"min_score": 6, "on_fail": "fail"}')
    settings = Settings(home=tmp_path)
    post = PostProcessor.configure(settings, sandbox_url="http://sb")
    assert [s.name for s in post.stages] == ["provenance", "checks"]
    assert post.settings is settings
    assert post.default_gate == QualityGate(min_score=6, on_fail="fail")
    assert post.sandbox() == "http://sb"


def test_an_unknown_stage_is_a_start_up_error_naming_the_known(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VIDGATE_STAGES", "checks,sharpen")
    monkeypatch.delenv("VIDGATE_QUALITY_DEFAULT", raising=False)
    with pytest.raises(ConfigError) as e:
        PostProcessor.configure(object())
    assert str(e.value).startswith("VIDGATE_STAGES: unknown stage(s) sharpen; known: checks")
    assert e.value.__cause__ is None


def test_a_stage_that_cannot_run_fails_at_start_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("VIDGATE_STAGES", "semantic")
    monkeypatch.setenv("VIDGATE_CLIP_MODEL", str(tmp_path / "nowhere"))
    monkeypatch.delenv("VIDGATE_QUALITY_DEFAULT", raising=False)
    with pytest.raises(
        ConfigError, match=r"^VIDGATE_STAGES: VIDGATE_CLIP_MODEL=.* is not a saved CLIP"
    ):
        PostProcessor.configure(object())


def test_the_sandbox_url_is_asked_for_only_when_a_stage_runs() -> None:
    asked: list[int] = []

    def url() -> str:
        asked.append(1)
        return "http://sb:1"

    post = PostProcessor([ChecksStage()], sandbox_url=url)
    assert asked == []
    assert post.sandbox() == "http://sb:1"
    assert asked == [1]
    assert PostProcessor([]).sandbox() is None


def test_the_processor_applies_its_default_gate() -> None:
    tenant = QualityGate(on_fail="fail")
    post = PostProcessor([], default_gate=tenant)
    job = _job(stages={})
    assert post.gate(job) == (tenant, "tenant")
    assert PostProcessor([]).gate(job) == (QualityGate(), "builtin")


# --- why no extra attempt, through the sandbox ----------------------------------------------


async def test_fallback_with_no_other_offering_fails_saying_so(
    gw: Gateway, sandbox: SandboxServer
) -> None:
    defects(sandbox, BAD, frozen=1.0)
    job = gw.submit(request("alone", {"on_fail": "fallback"}), pinned=[BAD])
    await run_all(gw)
    job = gw.store.get(job.id)
    assert job.state is JobState.FAILED
    assert job.error is not None
    assert job.error["code"] == "quality_gate_failed"
    assert " and no other ranked offering is left to fall back on; raise" in job.error["message"]
    assert job.error["details"]["failed"] == ["checks.frozen"]
    assert [a.state for a in job.attempts] == [AttemptState.REJECTED]
    q = job.quality or {}
    [h] = q["history"]
    assert h["action"] == "fail"
    assert h["attempt"] == 1
    assert h["offering"] == BAD
    assert h["verdict"] == "fail"
    assert h["rejected"]["stages"]["checks"]["verdict"] == "fail"
    assert q["flagged"] is True
    assert q["regenerations"] == 0
    assert q["gate"]["source"] == "request"
    assert q["gate"]["on_fail"] == "fallback"
    # the rejected clip was made: billed in full
    assert job.cost_usd == pytest.approx(job.attempts[0].estimated_cost_usd)
    assert_billed_every_clip(gw, job)


async def test_the_request_cap_message_names_the_attempt_the_cap_and_the_spend(
    gw: Gateway, sandbox: SandboxServer
) -> None:
    defects(sandbox, BAD, frozen=1.0)
    job = gw.submit(request("capped", {"on_fail": "fallback"}, constraints={"max_cost_usd": 0.45}))
    nxt = (job.route or {})["ranked"][1]
    nxt_est = float((job.route or {})["estimates"][nxt])
    await run_all(gw)
    job = gw.store.get(job.id)
    assert job.state is JobState.FAILED
    est = job.attempts[0].estimated_cost_usd
    assert job.error is not None
    assert (
        f" and another attempt on {nxt} (${nxt_est:.2f}) would pass the request's "
        f"max_cost_usd $0.45 (${est:.2f} spent); raise"
    ) in job.error["message"]
    assert [a.offering_id for a in job.attempts] == [BAD]
    assert_billed_every_clip(gw, job)


async def test_a_cap_that_fits_exactly_two_clips_allows_the_second(
    gw: Gateway, sandbox: SandboxServer
) -> None:
    defects(sandbox, BAD, frozen=1.0)
    probe = gw.submit(request("price"), pinned=[BAD])
    est = float((probe.route or {})["estimates"][BAD])
    job = gw.submit(
        request(
            "two fit",
            {"on_fail": "regenerate", "max_extra_attempts": 3},
            constraints={"max_cost_usd": round(2 * est, 6)},
            seed=7,
        ),
        pinned=[BAD],
    )
    await run_all(gw)
    job = gw.store.get(job.id)
    assert [a.offering_id for a in job.attempts] == [BAD, BAD]
    assert job.cost_usd == pytest.approx(2 * est)
    # the regeneration asked for a new seed, recorded with the step
    history = (job.quality or {})["history"]
    assert history[0]["action"] == "regenerate"
    assert history[0]["attempt"] == 1
    assert history[0]["seed"] == 7  # the seed the rejected clip was made with
    assert job.request.seed is not None
    assert job.request.seed != 7


async def test_quality_on_fail_fail_lists_what_failed_in_the_error(
    gw: Gateway, sandbox: SandboxServer
) -> None:
    defects(sandbox, BAD, frozen=1.0)
    job = gw.submit(request("strict", {"on_fail": "fail"}), pinned=[BAD])
    await run_all(gw)
    job = gw.store.get(job.id)
    assert job.state is JobState.FAILED
    assert job.error is not None
    assert job.error["details"]["failed"] == ["checks.frozen"]
    assert "quality.on_fail is fail" in job.error["message"]


# --- a stage that writes a new file ------------------------------------------------------------


class Rewrite(Stage):
    """Writes a changed copy of the clip (as signing does), under the clip's id or a new one."""

    name = "rewrite"
    after_gate = True
    new_id: ClassVar[str | None] = None
    seen: ClassVar[list[str]] = []

    async def run(self, ctx: StageContext) -> StageResult:
        Rewrite.seen.append(ctx.asset.uri)
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        out = ctx.workdir / "signed.mp4"
        out.write_bytes(ctx.path.read_bytes() + b"\x00signed")
        t = now()
        asset = ctx.asset.model_copy(update={"uri": str(out), "id": self.new_id or ctx.asset.id})
        return StageResult(
            stage=self.name,
            asset_id=ctx.asset.id,
            verdict="pass",
            asset=asset,
            data={"note": "kept"},
            started_at=t,
            finished_at=t,
        )


async def _run_with(gw: Gateway, stages: list[Stage], tenant: str = "default") -> Job:
    job = gw.submit(request("signed"), pinned=[BAD], tenant=tenant)
    w = gw.worker(WorkerConfig(deliver_webhooks=False))
    w.driver._post = PostProcessor(stages, settings=gw.settings)
    try:
        await w.run(until_idle=True)
    finally:
        await gw.aclose()
    return gw.store.get(job.id)


async def test_a_rewritten_clip_replaces_the_stored_one_and_the_old_file_goes(
    gw: Gateway,
) -> None:
    Rewrite.seen = []
    Rewrite.new_id = None
    job = await _run_with(gw, [ChecksStage(), Rewrite()])
    assert job.state is JobState.SUCCEEDED
    [original] = Rewrite.seen
    [asset] = job.assets
    assert asset.uri != original
    data = Path(gw.storage_path(asset.uri)).read_bytes()
    assert data.endswith(b"\x00signed")
    # what was stored is measured again: its digest and size, not the input's
    assert asset.sha256 == hashlib.sha256(data).hexdigest()
    assert asset.bytes == len(data)
    assert not Path(gw.storage_path(original)).exists()
    kept = job.stages["rewrite"]
    assert kept["asset"] is None
    assert kept["data"] == {
        "note": "kept",
        "replaced": {"sha256": asset.sha256, "bytes": asset.bytes},
    }
    assert (tuple(asset.uri.split("/")[-3:-1])) == ("default", job.id)


async def test_a_new_file_under_a_new_id_is_added_beside_the_clip(gw: Gateway) -> None:
    Rewrite.seen = []
    Rewrite.new_id = "asset_extra"
    try:
        job = await _run_with(gw, [ChecksStage(), Rewrite()])
    finally:
        Rewrite.new_id = None
    assert job.state is JobState.SUCCEEDED
    clip, extra = job.assets
    assert extra.id == "asset_extra"
    assert clip.uri == Rewrite.seen[0]
    assert Path(gw.storage_path(clip.uri)).exists()  # nothing replaced: nothing deleted
    extra_bytes = Path(gw.storage_path(extra.uri)).read_bytes()
    assert extra.sha256 == hashlib.sha256(extra_bytes).hexdigest()
    assert extra.bytes == len(extra_bytes)


async def test_a_stage_skipped_for_its_cost_says_why_with_utc_times(gw: Gateway) -> None:
    from tests.stages.test_gate import PaidStage

    gw.accounts.ensure_tenant("thrifty", budget_usd=0.3)
    job = await _run_with(gw, [ChecksStage(), PaidStage()], tenant="thrifty")
    paid = job.stages["paid"]
    assert paid["verdict"] == "skipped"
    assert "budget" in paid["data"]["reason"]
    for at in (paid["started_at"], paid["finished_at"]):
        assert datetime.fromisoformat(at).utcoffset() is not None
