"""The gateway end to end in sandbox mode: route, submit, poll, download, measure, settle."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidgate.catalog.loader import Catalog
from vidgate.gateway import Gateway
from vidgate.jobs.store import JobStore
from vidgate.sandbox.app import SandboxServer
from vidgate.sandbox.core import FaultConfig, FaultRule
from vidgate.types import AttemptState, AudioMode, JobState, VideoRequest


async def run(gw: Gateway, req: VideoRequest, **kw: object):
    try:
        return await gw.generate(req, **kw)  # type: ignore[arg-type]
    finally:
        await gw.aclose()


async def test_generate_stores_a_measured_asset(gateway: Gateway) -> None:
    job = await run(gateway, VideoRequest(prompt="a fox", duration_s=5))
    assert job.state is JobState.SUCCEEDED, job.error
    assert job.offering_id == "beta-openai"  # cheapest feasible: $0.25 per 6 s clip
    assert job.cost_usd == pytest.approx(0.25)
    assert job.estimated_cost_usd == pytest.approx(0.25)
    [asset] = job.assets
    assert asset.synthetic
    assert (asset.width, asset.height) == (1280, 720)
    assert asset.duration_s == pytest.approx(5.0)
    assert asset.frames == 5 * 16  # beta renders at its first listed fps, 16
    assert not asset.has_audio
    assert len(asset.sha256) == 64
    assert Path(asset.uri).stat().st_size == asset.bytes
    [attempt] = job.attempts
    assert attempt.state is AttemptState.SUCCEEDED
    assert attempt.provider_job
    assert attempt.provider_job["remote_id"].startswith("video_")
    # the route's explanation is stored on the job
    assert job.route
    assert job.route["chosen"]["offering"] == "beta-openai"


async def test_required_audio_routes_to_an_audio_offering(gateway: Gateway) -> None:
    job = await run(
        gateway, VideoRequest(prompt="dialogue", duration_s=4, audio=AudioMode.REQUIRED)
    )
    assert job.offering_id == "alpha-openai"
    assert job.assets[0].has_audio
    assert job.assets[0].audio_codec == "aac"


async def test_fallback_after_a_refused_create(gateway: Gateway, sandbox: SandboxServer) -> None:
    sandbox.core.faults = FaultConfig(
        rules=[FaultRule(kind="unavailable", rate=1.0, model="beta-1")]
    )
    job = await run(gateway, VideoRequest(prompt="fallback", duration_s=4))
    assert job.state is JobState.SUCCEEDED
    assert [a.offering_id for a in job.attempts] == ["beta-openai", "alpha-openai"]
    assert job.attempts[0].state is AttemptState.FAILED
    assert job.attempts[0].error
    assert job.attempts[0].error["code"] == "provider_unavailable"
    assert job.attempts[0].cost_usd == 0.0  # nothing was created, nothing billed
    rows = gateway.store.ledger(job_id=job.id)
    assert [(r["attempt_n"], r["kind"], r["amount_usd"]) for r in rows] == [
        (1, "void", 0.0),
        (2, "charge", pytest.approx(0.40)),
    ]
    assert job.cost_usd == pytest.approx(0.40)  # alpha: 4 s x $0.10
    assert sandbox.core.store.stats()["creates"] == 1


async def test_generation_failure_falls_back_and_bills_nothing(gateway, sandbox) -> None:
    sandbox.core.faults = FaultConfig(rules=[FaultRule(kind="fail", rate=1.0, model="beta-1")])
    job = await run(gateway, VideoRequest(prompt="x", duration_s=4))
    assert job.state is JobState.SUCCEEDED
    assert job.attempts[0].cost_usd == 0.0
    assert job.cost_usd == pytest.approx(0.40)


async def test_fallback_respects_the_remaining_budget(gateway, sandbox) -> None:
    sandbox.core.faults = FaultConfig(
        rules=[FaultRule(kind="unavailable", rate=1.0, model="beta-1")]
    )
    req = VideoRequest(prompt="x", duration_s=4, constraints={"max_cost_usd": 0.30})
    job = await run(gateway, req)
    assert job.state is JobState.FAILED  # alpha ($0.40) is over the $0.30 budget
    assert [a.offering_id for a in job.attempts] == ["beta-openai"]


async def test_content_rejection_is_final(gateway, sandbox) -> None:
    job = await run(gateway, VideoRequest(prompt="[unsafe] x", duration_s=4))
    assert job.state is JobState.FAILED
    assert job.error
    assert job.error["code"] == "content_rejected"
    assert len(job.attempts) == 1


async def test_ambiguous_create_is_found_in_the_list_never_resubmitted(
    tmp_path, mini_catalog, sandbox
):
    # OpenAI-compatible servers list their videos (GET /videos): the dropped create is
    # adopted from there. A provider with no way to look it up parks the job instead
    # (tests/jobs/test_worker.py); several matches park it too (providers/test_find_list.py).
    from tests.conftest import sandbox_settings

    sandbox.core.faults = FaultConfig(rules=[FaultRule(kind="drop", rate=1.0)], hang_s=3)
    gw = Gateway(
        sandbox_settings(tmp_path / "h", sandbox.url, http_timeout_s=0.5), catalog=mini_catalog
    )
    try:
        job = await run(gw, VideoRequest(prompt="x", duration_s=4))
        assert job.state is JobState.SUCCEEDED, job.error
        assert len(job.attempts) == 1
        assert job.route
        assert job.route["reconciled"] == 1
        assert sandbox.core.store.stats()["creates"] == 1
        assert [r["kind"] for r in gw.store.ledger(job_id=job.id)] == ["charge"]
    finally:
        await gw.aclose()
        gw.close()


async def test_jobs_persist_across_store_instances(gateway: Gateway) -> None:
    job = await run(gateway, VideoRequest(prompt="persist", duration_s=4))
    other = JobStore(gateway.settings.resolved_database_url())
    try:
        again = other.get(job.id)
        assert again == job
        assert [j.id for j in other.list(state=JobState.SUCCEEDED)] == [job.id]
    finally:
        other.close()


async def test_in_process_sandbox_starts_when_no_url(tmp_path, mini_catalog: Catalog) -> None:
    from tests.conftest import sandbox_settings

    gw = Gateway(sandbox_settings(tmp_path / "h"), catalog=mini_catalog)
    try:
        job = await run(gw, VideoRequest(prompt="inline", duration_s=4))
        assert job.state is JobState.SUCCEEDED
        assert (tmp_path / "h" / "sandbox" / "sandbox.db").exists()
    finally:
        gw.close()


async def test_content_rejection_falls_back_to_another_vendor_when_allowed(gateway) -> None:
    req = VideoRequest(prompt="[unsafe] x", duration_s=4, fallback_on_content_rejection=True)
    job = await run(gateway, req)
    assert job.state is JobState.FAILED
    assert [a.offering_id for a in job.attempts] == ["beta-openai", "alpha-openai"]
    vendors = {
        gateway.catalog.model_of(gateway.catalog.offering(a.offering_id)).vendor
        for a in job.attempts
    }
    assert len(vendors) == 2


def breaker_gateway(tmp_path, mini_catalog, sandbox, **kw) -> Gateway:
    from tests.conftest import sandbox_settings

    return Gateway(
        sandbox_settings(
            tmp_path / "b",
            sandbox.url,
            breaker_min_calls=1,
            breaker_failure_ratio=1.0,
            breaker_open_s=300,
            **kw,
        ),
        catalog=mini_catalog,
    )


async def test_open_breaker_removes_an_offering_from_routing(
    tmp_path, mini_catalog, sandbox
) -> None:
    gw = breaker_gateway(tmp_path, mini_catalog, sandbox)
    try:
        sandbox.core.faults = FaultConfig(rules=[FaultRule(kind="fail", rate=1.0, model="beta-1")])
        first = await run(gw, VideoRequest(prompt="one", duration_s=4))
        assert [a.offering_id for a in first.attempts] == ["beta-openai", "alpha-openai"]
        # beta's breaker is now open: the next request is routed straight to alpha
        plan = gw.route(VideoRequest(prompt="two", duration_s=4))
        assert [c.offering.id for c in plan.ranked] == ["alpha-openai"]
        [beta] = [c for c in plan.rejected if c.offering.id == "beta-openai"]
        assert any("circuit open" in r.message for r in beta.rejections)
    finally:
        gw.close()


async def test_retry_after_cools_down_the_whole_provider(tmp_path, mini_catalog, sandbox) -> None:
    gw = breaker_gateway(tmp_path, mini_catalog, sandbox)
    try:
        sandbox.core.faults = FaultConfig(
            rules=[FaultRule(kind="rate_limit", rate=1.0, model="beta-1", retry_after_s=120)]
        )
        job = await run(gw, VideoRequest(prompt="one", duration_s=4))
        assert job.attempts[0].error
        assert job.attempts[0].error["code"] == "rate_limited"
        assert job.state is JobState.SUCCEEDED  # fell back to alpha
        why = gw.health.blocked("beta-openai", "compat")
        assert why is not None
        assert why.startswith("provider compat: circuit open for 1")  # ~120 s
    finally:
        gw.close()


async def test_fallback_follows_the_ranked_order(gateway, sandbox) -> None:
    sandbox.core.faults = FaultConfig(rules=[FaultRule(kind="unavailable", rate=1.0)])
    req = VideoRequest(prompt="x", duration_s=4)
    job = await run(gateway, req)
    ranked = job.route["ranked"]  # type: ignore[index]
    assert [a.offering_id for a in job.attempts] == ranked
    assert job.state is JobState.FAILED
    assert job.error
    assert job.error["code"] == "provider_unavailable"
