"""Replaying workloads through a real gateway against the sandbox, with injected faults."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidgate.catalog.loader import Catalog
from vidgate.planner.simulate import fault_rules, scaled_rate_limit, simulate
from vidgate.planner.workload import parse_workload
from vidgate.settings import Settings

# Cheapest standard-tier 5 s 720p clip: pixverse-fal ($0.20, p50 30 s), then Ray3.14 on Luma
# ($0.20, p50 35 s), so fal is the first choice and Luma the fallback.
STANDARD = """\
name: {name}
daily_volume: 1000
classes:
  - {{name: standard, share: 0.8, request: {{quality: standard}}}}
  - {{name: audio, share: 0.2, request: {{audio: required}}}}
faults:
{faults}
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # one home for the module: rendered clips are reused between runs, as in real use
    return tmp_path_factory.mktemp("sim-home")


def settings(home: Path) -> Settings:
    return Settings(home=home, sandbox_url=None)


def test_a_provider_down_for_a_window_is_survived_by_fallbacks(
    home: Path, catalog: Catalog
) -> None:
    w = parse_workload(
        STANDARD.format(
            name="fal outage",
            faults="  - {kind: unavailable, rate: 1.0, provider: fal, start_s: 0, end_s: 3}",
        )
    )
    report = simulate(w, jobs=30, seed=7, settings=settings(home), concurrency=8, catalog=catalog)
    d = report.to_dict()
    assert d["success_rate"] == 1.0, d
    assert report.fallbacks > 0
    assert d["states"] == {"succeeded": 30}
    assert d["sandbox"]["duplicate_submissions"] == 0
    assert d["sandbox"]["events"].get("fault:unavailable", 0) > 0
    assert d["attempts_by_outcome"].get("failed:provider_unavailable", 0) > 0
    # every failed attempt was on fal; the sandbox saw one create per successful attempt
    failed = {off for off, outcomes in d["attempts_by_offering"].items() if outcomes.get("failed")}
    assert failed
    assert all(catalog.offerings[o].provider == "fal" for o in failed)
    assert d["sandbox"]["creates"] == 30
    assert d["cost_usd"] == pytest.approx(sum(d["cost_usd_by_class"].values()), abs=0.011)
    assert d["cost_usd"] > 0
    lat = d["latency_s"]
    assert lat["wall"]["p50"] <= lat["wall"]["p90"] <= lat["wall"]["p99"]
    assert lat["ready_wall"]["p50"] <= lat["ready_wall"]["p90"] <= lat["ready_wall"]["p99"]
    # output is ready before it is stored; real seconds are the ready latency ÷ time scale
    assert all(o.ready_s is not None and o.ready_s <= (o.latency_s or 0) for o in report.outcomes)
    assert lat["real"]["p50"] == pytest.approx(lat["ready_wall"]["p50"] / 0.02, rel=1e-2)
    assert d["faults"][0]["protocol"] == "fal-queue"


def test_transient_errors_on_the_cheapest_offering_are_counted_as_fallbacks(
    home: Path, catalog: Catalog
) -> None:
    w = parse_workload(
        STANDARD.format(
            name="flaky pixverse",
            faults="  - {kind: unavailable, rate: 0.2, offering: pixverse-fal}",
        )
    )
    report = simulate(w, jobs=50, seed=3, settings=settings(home), concurrency=8, catalog=catalog)
    d = report.to_dict()
    assert d["success_rate"] == 1.0, d
    assert report.fallbacks > 0
    assert d["attempts_by_offering"]["pixverse-fal"].get("failed", 0) > 0
    # a fallback is a job with more than one attempt; each failed create led to one
    multi = [o for o in report.outcomes if len(o.attempts) > 1]
    assert len(multi) == report.fallbacks
    assert all(o.attempts[0][0] == "pixverse-fal" for o in multi)
    assert report.duplicate_submissions == 0
    assert d["fallbacks"] == report.fallbacks


def test_required_strengths_hold_through_fallbacks(home: Path, catalog: Catalog) -> None:
    # the cheapest standard clip is pixverse-fal, whose model is not known for multi-shot; the
    # cheapest that is, wan-2.6-fal, is down: the gateway falls back only among multi-shot models
    w = parse_workload(
        """\
name: multi-shot outage
daily_volume: 100
classes:
  - name: shots
    share: 1
    request:
      quality: standard
      constraints: {blocked_providers: [self-hosted], required_strengths: [multi-shot]}
faults:
  - {kind: unavailable, rate: 1.0, offering: wan-2.6-fal}
"""
    )
    report = simulate(w, jobs=8, seed=5, settings=settings(home), concurrency=4, catalog=catalog)
    d = report.to_dict()
    assert d["success_rate"] == 1.0, d
    assert report.fallbacks > 0
    assert d["attempts_by_offering"]["wan-2.6-fal"].get("failed", 0) > 0
    tried = set(d["attempts_by_offering"])
    assert len(tried) > 1, tried
    for oid in tried:
        assert "multi-shot" in catalog.model_of(catalog.offerings[oid]).quality.strengths, oid
    assert all(o.attempts[0][0] == "wan-2.6-fal" for o in report.outcomes if len(o.attempts) > 1)
    assert report.duplicate_submissions == 0


def test_fault_rules_map_targets_onto_served_protocols(catalog: Catalog) -> None:
    w = parse_workload(
        """\
name: rules
daily_volume: 1
classes: [{name: a, share: 1}]
faults:
  - {kind: unavailable, provider: runway, start_s: 2, end_s: 6}
  - {kind: rate_limit, rate: 0.5, offering: kling-3.0-fal, retry_after_s: 0.5}
  - {kind: fail, rate: 0.1, model: kling-3.0}
  - {kind: poll_unavailable, rate: 0.3}
"""
    )
    rules = fault_rules(w.faults, catalog, lambda o: o.protocol, t0=1000.0)
    runway, kling_fal, *kling_model, everything = rules
    assert (runway.protocol, runway.model, runway.start, runway.end) == (
        "runway",
        None,
        1002.0,
        1006.0,
    )
    assert (kling_fal.protocol, kling_fal.model, kling_fal.retry_after_s) == (
        "fal-queue",
        "fal-ai/kling-video/v3/pro/text-to-video",
        0.5,
    )
    assert {(r.protocol, r.model) for r in kling_model} == {
        ("fal-queue", "fal-ai/kling-video/v3/pro/text-to-video"),
        ("kling", "kling-v3"),
    }
    assert (everything.protocol, everything.model, everything.start) == (None, None, None)


def test_a_provider_sharing_a_served_protocol_is_named_by_model(catalog: Catalog) -> None:
    # in the sandbox, protocols without an emulator are served as OpenAI Videos; a fault on
    # one provider must not take down the others served the same way
    w = parse_workload(
        "name: r\ndaily_volume: 1\nclasses: [{name: a, share: 1}]\n"
        "faults: [{kind: unavailable, provider: openai}]\n"
    )
    rules = fault_rules(w.faults, catalog, lambda o: "openai-videos", t0=0.0)
    assert {r.model for r in rules} == {"sora-2", "sora-2-pro"}
    assert all(r.protocol == "openai-videos" for r in rules)


def test_rate_limits_scale_with_time() -> None:
    assert scaled_rate_limit("30/minute", 0.01) == "3000/minute"
    assert scaled_rate_limit("15 / minute", 0.5) == "30/minute"
    assert scaled_rate_limit("odd", 0.01) == "odd"
