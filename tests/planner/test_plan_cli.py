"""`vidgate plan`, `vidgate plan breakeven` and `vidgate simulate` as a user runs them: a
real process, the shipped catalog and example workloads."""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_cli import assert_one_line_error, vidgate

from .conftest import EXAMPLES

PLATFORM = str(EXAMPLES / "seed-000-platform-mix.yaml")
ROUTER = str(EXAMPLES / "router-platform-mix.yaml")
VOLUME = str(EXAMPLES / "seed-000-volume-ray.yaml")


def test_plan_prints_tables_with_the_seed_figures(tmp_path: Path) -> None:
    proc = vidgate("plan", PLATFORM, home=tmp_path, sandbox=False)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "$4,525.00/day, $135,750.00/month" in out
    for offering in ("runway-gen-4.5-turbo-runway", "veo-3.1-fast-vertex", "luma-ray-3.14-luma"):
        assert offering in out
    assert "override $0.12/s" in out
    assert "single-model baselines" in out


def test_plan_json_and_as_of(tmp_path: Path) -> None:
    proc = vidgate("plan", VOLUME, "--json", "--as-of", "2026-02-17", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert d["as_of"] == "2026-02-17"
    assert d["totals"]["usd_per_month"] == 60_000.00
    assert d["totals"]["usd_per_year"] == 720_000.00
    sora = next(b for b in d["baselines"] if b["offering"] == "sora-2-openai")
    assert sora["usd_per_month"] == 150_000.00


def test_router_plan_saving_against_the_seed_picks(tmp_path: Path) -> None:
    proc = vidgate("plan", ROUTER, "--compare", PLATFORM, "--json", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    cmp = d["compare"]
    assert cmp["other_usd_per_month"] == 135_750.00
    assert d["totals"]["usd_per_month"] < 135_750.00
    assert cmp["saving_usd_per_month"] == round(135_750.00 - d["totals"]["usd_per_month"], 2)
    print(f"router plan saves ${cmp['saving_usd_per_month']:,.2f}/month against $135,750")
    text = vidgate("plan", ROUTER, "--compare", PLATFORM, home=tmp_path)
    assert text.returncode == 0, text.stderr
    assert f"saves ${cmp['saving_usd_per_month']:,.2f}/month" in text.stdout


def test_plan_writes_charts(tmp_path: Path) -> None:
    charts = tmp_path / "charts"
    proc = vidgate("plan", ROUTER, "--charts", str(charts), home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for name in ("cost-by-class.png", "frontier.png"):
        data = (charts / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(data) > 20_000
        assert str(charts / name) in proc.stdout


def test_breakeven_defaults_are_seed_001(tmp_path: Path) -> None:
    proc = vidgate("plan", "breakeven", "--json", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert round(d["cloud"]["seconds_per_month"]) == 46_154
    assert round(d["owned"]["seconds_per_month"]) == 41_889
    text = vidgate("plan", "breakeven", "--self-host-usd-per-second", "0.0067", home=tmp_path)
    assert text.returncode == 0, text.stderr
    assert "cloud GPU break-even: 46,189 s/month" in text.stdout
    assert "owned hardware break-even: 41,889 s/month" in text.stdout


def test_breakeven_without_a_break_even_is_one_line(tmp_path: Path) -> None:
    proc = vidgate("plan", "breakeven", "--api-usd-per-second", "0.005", home=tmp_path)
    assert_one_line_error(proc, "no break-even", "not dearer than self-hosting")


def test_bad_workloads_are_one_line_with_field_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "w.yaml"
    bad.write_text(
        "name: x\ndaily_volume: 10\nclasses:\n  - name: a\n    share: 1\n    offering: veo-9\n"
    )
    proc = vidgate("plan", str(bad), home=tmp_path)
    assert_one_line_error(proc, "line 6: classes[0].offering: unknown offering 'veo-9'", "did you")
    bad.write_text("name: x\ndaily_volume: 10\nclasses:\n  - name: a\n    share: 1.5\n")
    proc = vidgate("plan", str(bad), "--json", home=tmp_path)
    assert_one_line_error(proc, "line 5: classes[0].share: must be between 0 and 1")
    proc = vidgate("plan", str(tmp_path / "missing.yaml"), home=tmp_path)
    assert_one_line_error(proc, "no such file")
    bad.write_text(
        "name: x\ndaily_volume: 10\nclasses:\n  - name: a\n    share: 1\n"
        "    require_strengths: [multi-shot]\n"
    )
    proc = vidgate("plan", str(bad), home=tmp_path)
    assert_one_line_error(
        proc,
        "line 6: classes[0].require_strengths: no longer a class key",
        "request.constraints.required_strengths",
    )
    proc = vidgate("plan", VOLUME, "--as-of", "yesterday", home=tmp_path)
    assert_one_line_error(proc, "--as-of 'yesterday'")


def test_a_retired_pin_is_one_line(tmp_path: Path) -> None:
    w = tmp_path / "sora.yaml"
    w.write_text(
        "name: s\ndaily_volume: 10\nclasses: [{name: a, share: 1, offering: sora-2-openai}]\n"
    )
    proc = vidgate("plan", str(w), "--as-of", "2026-10-01", home=tmp_path)
    assert_one_line_error(proc, "retired by the provider after 2026-09-24", "--as-of")
    ok = vidgate("plan", str(w), "--as-of", "2026-09-24", "--json", home=tmp_path)
    assert ok.returncode == 0, ok.stderr


def test_plan_without_arguments_shows_help(tmp_path: Path) -> None:
    proc = vidgate("plan", "--help", home=tmp_path)
    assert proc.returncode == 0
    assert "breakeven" in proc.stdout
    assert "WORKLOAD.yaml" in proc.stdout


def test_simulate_reports_success_fallbacks_and_no_duplicates(tmp_path: Path) -> None:
    w = tmp_path / "sim.yaml"
    w.write_text(
        "name: sim\ndaily_volume: 100\n"
        "classes: [{name: std, share: 1, request: {quality: standard}}]\n"
        "faults: [{kind: unavailable, rate: 1.0, provider: fal, start_s: 0, end_s: 60}]\n"
    )
    proc = vidgate(
        "simulate",
        str(w),
        "--jobs",
        "6",
        "--concurrency",
        "3",
        "--seed",
        "1",
        "--json",
        home=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert d["jobs"] == 6
    assert d["success_rate"] == 1.0
    assert d["fallbacks"] >= 1  # the first job tried fal before the breaker knew it was down
    assert d["sandbox"]["duplicate_submissions"] == 0
    text = vidgate("simulate", str(w), "--jobs", "4", "--concurrency", "2", home=tmp_path)
    assert text.returncode == 0, text.stderr
    assert "success rate 100.0%" in text.stdout
    assert "0 duplicate submissions" in text.stdout


def test_simulate_bad_input_is_one_line(tmp_path: Path) -> None:
    proc = vidgate("simulate", str(tmp_path / "nope.yaml"), home=tmp_path)
    assert_one_line_error(proc, "no such file")
    proc = vidgate("simulate", VOLUME, "--jobs", "0", home=tmp_path)
    assert_one_line_error(proc, "jobs must be between 1 and 100000")
