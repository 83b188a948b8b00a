"""WORKLOAD.yaml: schema, and errors that name the field and the line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from vidgate.catalog.loader import Catalog
from vidgate.errors import ConfigError, FinalError
from vidgate.planner.workload import WorkloadError, load_workload, parse_workload
from vidgate.types import AudioMode, Mode, ReferenceRole, Resolution

from .conftest import EXAMPLES

Write = Callable[..., Path]

GOOD = """\
name: demo
daily_volume: 1000
classes:
  - name: previews
    share: 0.6
    request: {quality: draft}
  - name: finals
    share: 0.4
    policy: best-quality
    request:
      duration_s: 8
      resolution: 1080p
      audio: true
      hints: [dialogue]
      constraints: {max_cost_usd: 5}
"""


def test_a_good_workload_parses_with_defaults() -> None:
    w = parse_workload(GOOD)
    assert w.name == "demo"
    assert w.clip_seconds == 5.0
    assert w.days_per_month == 30
    assert w.billing == "planned"
    assert [c.name for c in w.classes] == ["previews", "finals"]
    assert w.classes[0].policy == "cheapest"
    req = w.classes[1].request.to_request(w.clip_seconds, "x")
    assert req.duration_s == 8
    assert req.resolution is Resolution.R1080P
    assert req.audio is AudioMode.REQUIRED
    assert req.constraints.max_cost_usd == 5
    assert w.classes[0].request.to_request(w.clip_seconds, "x").duration_s == 5.0


def test_modes_that_need_inputs_get_placeholder_references() -> None:
    w = parse_workload(GOOD.replace("{quality: draft}", "{mode: first-last-frame}"))
    req = w.classes[0].request.to_request(5, "x")
    assert req.mode is Mode.FIRST_LAST_FRAME
    assert req.reference_roles() == {ReferenceRole.FIRST_FRAME, ReferenceRole.LAST_FRAME}


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        (GOOD.replace("share: 0.4", "share: 1.4"), 8, "classes[1].share: must be between 0 and 1"),
        (GOOD.replace("share: 0.4", "share: 0.3"), 3, "classes: shares sum to 0.9"),
        (GOOD.replace("daily_volume: 1000", "daily_volume: 0"), 2, "daily_volume:"),
        (GOOD.replace("  - name: finals\n", "  - nam: finals\n"), 7, "classes[1].nam: unknown key"),
        (GOOD.replace("resolution: 1080p", "resolution: 9k"), 12, "classes[1].request.resolution"),
        (GOOD.replace("policy: best-quality", "policy: smartest"), 9, "classes[1].policy"),
        (GOOD.replace("max_cost_usd: 5", "max_cost: 5"), 15, "constraints.max_cost: unknown key"),
        (GOOD + "sla: {max_latency_s: -1}\n", 16, "sla.max_latency_s"),
        (GOOD + "billing: monthly\n", 16, "billing"),
        (GOOD + "colour: blue\n", 16, "colour: unknown key (allowed: name, description"),
    ],
)
def test_errors_name_the_field_and_the_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(WorkloadError) as err:
        parse_workload(text, "workload.yaml")
    msg = str(err.value)
    assert msg.startswith(f"workload.yaml line {line}: "), msg
    assert fragment in msg, msg
    assert err.value.line == line


def test_a_missing_field_points_at_its_mapping() -> None:
    text = GOOD.replace("  - name: finals\n    share: 0.4\n", "  - share: 0.4\n")
    with pytest.raises(WorkloadError, match=r"line 7: classes\[1\]\.name: required"):
        parse_workload(text, "workload.yaml")


def test_unknown_offering_is_named_with_a_suggestion(write: Write, catalog: Catalog) -> None:
    text = GOOD.replace("    policy: best-quality\n", "    offering: veo-3.1-gemni\n")
    with pytest.raises(WorkloadError) as err:
        load_workload(write(text), catalog)
    msg = str(err.value)
    assert "line 9: classes[1].offering: unknown offering 'veo-3.1-gemni'" in msg
    assert "(did you mean 'veo-3.1-gemini'?)" in msg


def test_unknown_offering_in_a_fallback_list_and_baselines(write: Write, catalog: Catalog) -> None:
    text = GOOD.replace(
        "    policy: best-quality\n",
        "    offering: [veo-3.1-vertex, veo-9]\n",
    )
    with pytest.raises(WorkloadError, match=r"line 9: classes\[1\]\.offering\[1\]: .*'veo-9'"):
        load_workload(write(text), catalog)
    with pytest.raises(WorkloadError, match=r"line 18: baselines\[1\]: unknown offering 'lumaray'"):
        load_workload(write(GOOD + "baselines:\n  - luma-ray-3.14-luma\n  - lumaray\n"), catalog)


def test_unknown_hint_provider_and_override(write: Write, catalog: Catalog) -> None:
    with pytest.raises(WorkloadError, match=r"line 14: .*hints\[0\]: unknown hint 'dialog'"):
        load_workload(write(GOOD.replace("[dialogue]", "[dialog]")), catalog)
    text = GOOD + "price_overrides:\n  kling-3-kling: {usd_per_second: 0.12}\n"
    with pytest.raises(WorkloadError, match=r"line 17: price_overrides\.kling-3-kling: .*did you"):
        load_workload(write(text), catalog)
    text = GOOD + "faults:\n  - {kind: unavailable, provider: lumaa}\n"
    with pytest.raises(WorkloadError, match=r"line 17: faults\[0\]\.provider: unknown provider"):
        load_workload(write(text), catalog)


def with_strengths(second: str) -> str:
    """GOOD, with the finals class requiring two model strengths (the second on line 19)."""
    return GOOD.replace(
        "      constraints: {max_cost_usd: 5}\n",
        "      constraints:\n"
        "        max_cost_usd: 5\n"
        "        required_strengths:\n"
        "          - dialogue\n"
        f"          - {second}\n",
    )


def test_required_strengths_are_a_request_constraint(write: Write, catalog: Catalog) -> None:
    w = load_workload(write(with_strengths("lip-sync")), catalog)
    assert w.classes[0].request.constraints.required_strengths == []
    req = w.classes[1].request.to_request(w.clip_seconds, "x")
    assert req.constraints.required_strengths == ["dialogue", "lip-sync"]
    assert req.constraints.max_cost_usd == 5


def test_an_unknown_strength_is_named_with_its_line(write: Write, catalog: Catalog) -> None:
    path = write(with_strengths("lipsync"))
    with pytest.raises(WorkloadError) as err:
        load_workload(path, catalog)
    field = "classes[1].request.constraints.required_strengths[1]"
    assert str(err.value) == (
        f"{path} line 19: {field}: no model in the catalog has strength 'lipsync' "
        "(did you mean 'lip-sync'?)"
    )
    assert (err.value.line, err.value.field) == (19, field)
    # without a catalog only the shape is checked
    w = parse_workload(with_strengths("lipsync"))
    assert w.classes[1].request.constraints.required_strengths == ["dialogue", "lipsync"]


def test_the_old_class_level_require_strengths_says_where_it_went() -> None:
    text = GOOD.replace(
        "    policy: best-quality\n",
        "    policy: best-quality\n    require_strengths: [dialogue]\n",
    )
    with pytest.raises(WorkloadError) as err:
        parse_workload(text, "workload.yaml")
    msg = str(err.value)
    assert msg.startswith("workload.yaml line 10: classes[1].require_strengths: "), msg
    assert "no longer a class key" in msg
    assert "request.constraints.required_strengths" in msg
    assert "unknown key" not in msg
    assert err.value.line == 10
    # other misspelt keys still list what is allowed, and the class schema has no such key
    typo = GOOD.replace("    policy: best-quality\n", "    polcy: best-quality\n")
    with pytest.raises(WorkloadError, match=r"line 9: classes\[1\]\.polcy: unknown key \(allowed"):
        parse_workload(typo)


def test_faults_are_validated() -> None:
    bad = GOOD + "faults:\n  - {kind: down, provider: luma}\n"
    with pytest.raises(WorkloadError, match=r"line 17: faults\[0\]\.kind"):
        parse_workload(bad)
    two = GOOD + "faults:\n  - {kind: unavailable, provider: luma, offering: x}\n"
    with pytest.raises(WorkloadError, match="name one target"):
        parse_workload(two)
    window = GOOD + "faults:\n  - {kind: unavailable, start_s: 5, end_s: 2}\n"
    with pytest.raises(WorkloadError, match=r"end_s .* must be after start_s"):
        parse_workload(window)


def test_yaml_syntax_errors_and_non_mappings(write: Write) -> None:
    with pytest.raises(WorkloadError, match=r"w\.yaml line 2: not valid YAML"):
        parse_workload("name: x\ndaily_volume: 1: 2\n", "w.yaml")
    with pytest.raises(WorkloadError, match="expected a mapping"):
        parse_workload("- 1\n- 2\n")
    with pytest.raises(WorkloadError, match="no such file"):
        load_workload(Path("/nonexistent/w.yaml"))


def test_workload_errors_are_final_config_errors() -> None:
    # the CLI maps FinalError to exit code 2
    assert issubclass(WorkloadError, ConfigError)
    assert issubclass(WorkloadError, FinalError)


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_every_example_workload_is_valid(name: str, catalog: Catalog) -> None:
    w = load_workload(EXAMPLES / name, catalog)
    assert abs(sum(c.share for c in w.classes) - 1) < 1e-9
