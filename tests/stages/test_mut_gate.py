"""The quality gate's decisions one by one: which gate applies, its verdict and score, what
happens to a rejected clip (regenerate once per offering, then fall back, within the extra
attempts allowed), the message a failed job carries, the OpenAI-style metadata, and the
start-up error for a bad tenant default. Each pins a behaviour users rely on."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from vidgate.errors import ConfigError, FinalError
from vidgate.stages.base import CheckResult, StageResult
from vidgate.stages.gate import (
    QualityGateFailed,
    Verdict,
    failure_message,
    gate_for,
    judge,
    next_action,
    openai_metadata,
    parse_default,
    rejected_count,
)
from vidgate.types import Job, JobState, QualityGate, VideoRequest

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def job(gate: QualityGate | None = None, quality: dict[str, Any] | None = None) -> Job:
    return Job(
        id="job_gate",
        state=JobState.POST_PROCESSING,
        request=VideoRequest(prompt="a fox", quality_gate=gate),
        created_at=NOW,
        updated_at=NOW,
        quality=quality,
    )


def history(*steps: tuple[str, str]) -> dict[str, Any]:
    """job.quality with a history of (action, offering) steps."""
    return {"history": [{"action": a, "offering": o, "verdict": "fail"} for a, o in steps]}


def result(
    stage: str,
    *checks: tuple[str, str, Any, Any],
    score: float | None = None,
    verdict: str = "pass",
) -> StageResult:
    return StageResult(
        stage=stage,
        asset_id="asset_1",
        verdict=verdict,
        score=score,
        checks=[CheckResult(name=n, verdict=v, value=x, threshold=t) for n, v, x, t in checks],
        started_at=NOW,
        finished_at=NOW,
    )


FAIL = Verdict("fail", None, ["checks.frozen"], ["frozen: 1.0 (threshold 0.5)"])
PASS = Verdict("pass", 8.0)


# --- which gate -------------------------------------------------------------------------


def test_the_requests_gate_wins_over_the_tenant_default() -> None:
    mine = QualityGate(min_score=7, on_fail="fail")
    tenant = QualityGate(min_score=3, on_fail="regenerate")
    assert gate_for(job(mine), tenant) == (mine, "request")


def test_the_tenant_default_applies_when_the_request_gives_none() -> None:
    tenant = QualityGate(min_score=3, on_fail="regenerate")
    assert gate_for(job(), tenant) == (tenant, "tenant")


def test_without_either_the_builtin_gate_delivers_flagged() -> None:
    gate, source = gate_for(job(), None)
    assert source == "builtin"
    assert gate == QualityGate()
    assert gate.on_fail == "deliver_flagged"
    assert gate.min_score is None


# --- the tenant default from its setting ------------------------------------------------


@pytest.mark.parametrize("raw", [None, "", "   ", "\n"])
def test_an_unset_or_blank_default_means_no_tenant_gate(raw: str | None) -> None:
    assert parse_default(raw) is None


def test_a_json_default_is_the_tenant_gate() -> None:
    gate = parse_default('{"min_score": 6, "on_fail": "regenerate", "max_extra_attempts": 3}')
    assert gate == QualityGate(min_score=6, on_fail="regenerate", max_extra_attempts=3)


def test_a_default_that_is_not_json_is_a_startup_error_naming_the_setting() -> None:
    with pytest.raises(ConfigError) as e:
        parse_default("{min_score: 6")
    msg = str(e.value)
    assert msg.startswith("VIDGATE_QUALITY_DEFAULT: Expecting property name enclosed in double")
    assert msg.endswith(
        '; give a JSON object such as {"min_score": 6, "on_fail": "regenerate", '
        '"max_extra_attempts": 2}'
    )


def test_a_default_out_of_range_names_the_field_and_the_rule() -> None:
    with pytest.raises(ConfigError) as e:
        parse_default('{"min_score": 11}')
    assert str(e.value).startswith(
        "VIDGATE_QUALITY_DEFAULT: min_score: Input should be less than or equal to 10; give"
    )


def test_a_nested_error_names_its_path_with_dots() -> None:
    with pytest.raises(ConfigError) as e:
        parse_default('{"checks": [5]}')
    assert str(e.value).startswith("VIDGATE_QUALITY_DEFAULT: checks.0: Input should be a valid")


def test_a_default_that_is_not_an_object_says_what_it_should_be() -> None:
    with pytest.raises(ConfigError) as e:
        parse_default("[1, 2]")
    msg = str(e.value)
    assert msg.startswith("VIDGATE_QUALITY_DEFAULT: Input should be a valid dictionary"), msg
    assert not msg.startswith("VIDGATE_QUALITY_DEFAULT: :")


def test_an_unknown_on_fail_is_refused() -> None:
    with pytest.raises(ConfigError, match="VIDGATE_QUALITY_DEFAULT: on_fail: Input should be"):
        parse_default('{"on_fail": "retry"}')


# --- the verdict -------------------------------------------------------------------------


def test_no_stage_results_pass_without_a_score() -> None:
    v = judge(QualityGate(min_score=5), {})
    assert (v.verdict, v.score, v.failed, v.detail) == ("pass", None, [], [])


def test_every_failed_check_is_named_stage_dot_check_with_its_value_and_threshold() -> None:
    results = {
        "checks": result(
            "checks",
            ("frozen", "fail", 0.9, 0.5),
            ("black_frames", "pass", 0.0, 0.2),
            ("hard_cut", "fail", 3, 1),
        ),
        "clip": result("clip", ("adherence", "fail", 0.1, 0.25), score=4.0),
    }
    v = judge(QualityGate(), results)
    assert v.verdict == "fail"
    assert v.failed == ["checks.frozen", "checks.hard_cut", "clip.adherence"]
    assert v.detail == [
        "frozen: 0.9 (threshold 0.5)",
        "hard_cut: 3.0 (threshold 1.0)",
        "adherence: 0.1 (threshold 0.25)",
    ]


def test_skipped_and_passed_checks_pass_the_clip() -> None:
    results = {"checks": result("checks", ("frozen", "pass", 0, 1), ("audio", "skipped", 0, 1))}
    v = judge(QualityGate(), results)
    assert v.verdict == "pass"
    assert v.failed == []


def test_the_score_is_the_mean_of_the_scoring_stages_to_two_decimals() -> None:
    results = {
        "a": result("a", score=7.0),
        "b": result("b", score=8.0),
        "c": result("c", score=8.0),
        "checks": result("checks"),  # no score: not in the mean
    }
    assert judge(QualityGate(), results).score == 7.67


def test_a_stage_that_errored_neither_scores_nor_fails_the_clip() -> None:
    results = {
        "judge": result("judge", score=0.0, verdict="error"),
        "clip": result("clip", score=9.0),
    }
    v = judge(QualityGate(min_score=8), results)
    assert v.score == 9.0
    assert v.verdict == "pass"


def test_only_errored_stages_leave_no_score_and_min_score_cannot_fail_it() -> None:
    v = judge(QualityGate(min_score=8), {"judge": result("judge", score=1.0, verdict="error")})
    assert (v.verdict, v.score) == ("pass", None)


def test_a_score_below_min_score_fails_and_says_by_how_much() -> None:
    v = judge(QualityGate(min_score=6), {"judge": result("judge", score=5.5)})
    assert v.verdict == "fail"
    assert v.score == 5.5
    assert v.failed == ["min_score"]
    assert v.detail == ["score 5.5 below min_score 6"]


def test_a_score_equal_to_min_score_passes() -> None:
    v = judge(QualityGate(min_score=6), {"judge": result("judge", score=6.0)})
    assert (v.verdict, v.failed) == ("pass", [])


def test_a_score_above_min_score_passes_and_no_min_score_never_fails() -> None:
    assert judge(QualityGate(min_score=6), {"j": result("j", score=6.01)}).verdict == "pass"
    assert judge(QualityGate(), {"j": result("j", score=0.0)}).verdict == "pass"


def test_a_failed_check_and_a_low_score_are_both_reported_in_order() -> None:
    results = {"checks": result("checks", ("frozen", "fail", 1, 0.5), score=2.0)}
    v = judge(QualityGate(min_score=3), results)
    assert v.failed == ["checks.frozen", "min_score"]
    assert v.detail[-1] == "score 2 below min_score 3"


# --- what next ---------------------------------------------------------------------------


def test_a_passing_clip_is_delivered_whatever_the_gate() -> None:
    for on_fail in ("regenerate", "fallback", "fail", "deliver_flagged"):
        gate = QualityGate(on_fail=on_fail)
        assert next_action(gate, PASS, job(), "o1") == "deliver"


def test_deliver_flagged_and_fail_act_at_once_even_with_attempts_left() -> None:
    for on_fail in ("deliver_flagged", "fail"):
        gate = QualityGate(on_fail=on_fail, max_extra_attempts=5)
        assert next_action(gate, FAIL, job(), "o1") == on_fail


def test_regenerate_first_tries_the_same_offering_with_a_new_seed() -> None:
    gate = QualityGate(on_fail="regenerate", max_extra_attempts=2)
    assert next_action(gate, FAIL, job(), "o1") == "regenerate"


def test_regenerate_falls_back_once_that_offering_was_regenerated() -> None:
    gate = QualityGate(on_fail="regenerate", max_extra_attempts=3)
    j = job(quality=history(("regenerate", "o1")))
    assert next_action(gate, FAIL, j, "o1") == "fallback"
    # the next ranked offering gets its own regeneration
    j = job(quality=history(("regenerate", "o1"), ("fallback", "o1")))
    assert next_action(gate, FAIL, j, "o2") == "regenerate"


def test_a_fallback_away_from_an_offering_is_not_a_regeneration_of_it() -> None:
    gate = QualityGate(on_fail="regenerate", max_extra_attempts=3)
    j = job(quality=history(("fallback", "o1")))
    assert next_action(gate, FAIL, j, "o1") == "regenerate"


def test_fallback_goes_to_the_next_offering() -> None:
    gate = QualityGate(on_fail="fallback", max_extra_attempts=2)
    assert next_action(gate, FAIL, job(), "o1") == "fallback"
    j = job(quality=history(("fallback", "o1")))
    assert next_action(gate, FAIL, j, "o2") == "fallback"


@pytest.mark.parametrize("on_fail", ["regenerate", "fallback"])
def test_the_job_fails_when_the_extra_attempts_are_used_up(on_fail: str) -> None:
    gate = QualityGate(on_fail=on_fail, max_extra_attempts=2)
    one = job(quality=history((on_fail, "o1")))
    two = job(quality=history((on_fail, "o1"), ("fallback", "o2")))
    assert next_action(gate, FAIL, one, "o3") != "fail"  # one of two used: one left
    assert next_action(gate, FAIL, two, "o3") == "fail"


@pytest.mark.parametrize("on_fail", ["regenerate", "fallback"])
def test_no_extra_attempts_fails_at_the_first_rejection(on_fail: str) -> None:
    gate = QualityGate(on_fail=on_fail, max_extra_attempts=0)
    assert next_action(gate, FAIL, job(), "o1") == "fail"


def test_only_retries_count_against_the_extra_attempts() -> None:
    steps = (("regenerate", "o1"), ("deliver", "o1"), ("fallback", "o1"), ("fail", "o2"))
    assert rejected_count(job(quality=history(*steps))) == 2
    assert rejected_count(job()) == 0
    assert rejected_count(job(quality={})) == 0
    assert rejected_count(job(quality=history(("deliver_flagged", "o1")))) == 0
    # a delivered step does not use up an attempt
    gate = QualityGate(on_fail="fallback", max_extra_attempts=1)
    j = job(quality=history(("deliver", "o1"), ("deliver_flagged", "o1")))
    assert next_action(gate, FAIL, j, "o1") == "fallback"


# --- what a failed job says --------------------------------------------------------------


def test_the_failure_message_names_what_failed_and_why_no_attempt_was_left() -> None:
    v = Verdict("fail", 3.0, ["checks.frozen", "min_score"], ["frozen: 1 (threshold 0.5)", "s"])
    assert failure_message(v, "no extra attempt is left") == (
        "the clip failed the quality gate (checks.frozen, min_score: frozen: 1 (threshold 0.5); "
        "s) and no extra attempt is left; raise quality.max_extra_attempts, or set "
        "quality.on_fail to deliver_flagged to receive flagged clips"
    )


def test_the_failure_message_without_named_failures_says_the_gate() -> None:
    msg = failure_message(Verdict("fail", None), "the budget is spent")
    assert msg.startswith("the clip failed the quality gate (the gate: ) and the budget is spent;")


def test_the_gate_failure_is_final_with_its_own_code() -> None:
    assert issubclass(QualityGateFailed, FinalError)
    assert QualityGateFailed.code == "quality_gate_failed"
    assert QualityGateFailed.http_status == 422


# --- OpenAI-style metadata ---------------------------------------------------------------


def test_no_gate_no_metadata() -> None:
    assert openai_metadata(job()) == {}
    assert openai_metadata(job(quality={})) == {}


def test_the_verdict_as_string_metadata() -> None:
    q = {
        "verdict": "fail",
        "score": 4.5,
        "flagged": True,
        "failed": ["checks.frozen", "min_score"],
        "regenerations": 2,
    }
    assert openai_metadata(job(quality=q)) == {
        "vidgate_quality_verdict": "fail",
        "vidgate_quality_score": "4.5",
        "vidgate_quality_flagged": "true",
        "vidgate_quality_failed": "checks.frozen,min_score",
        "vidgate_quality_regenerations": "2",
    }


def test_metadata_of_a_pass_without_a_score_and_defaults() -> None:
    meta = openai_metadata(job(quality={"verdict": "pass", "score": None}))
    assert meta == {
        "vidgate_quality_verdict": "pass",
        "vidgate_quality_score": "",
        "vidgate_quality_flagged": "false",
        "vidgate_quality_failed": "",
        "vidgate_quality_regenerations": "0",
    }


def test_a_whole_score_has_no_decimals_and_flagged_false_is_false() -> None:
    meta = openai_metadata(job(quality={"verdict": "pass", "score": 7.0, "flagged": False}))
    assert meta["vidgate_quality_score"] == "7"
    assert meta["vidgate_quality_flagged"] == "false"


def test_the_failed_list_is_cut_to_512_characters() -> None:
    failed = [f"checks.c{i:03d}" for i in range(100)]  # 11 characters each, 1,199 joined
    meta = openai_metadata(job(quality={"verdict": "fail", "failed": failed}))
    assert meta["vidgate_quality_failed"] == ",".join(failed)[:512]
    assert len(meta["vidgate_quality_failed"]) == 512
