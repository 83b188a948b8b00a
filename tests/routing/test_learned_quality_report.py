"""`vidgate quality report` over a real job store: by offering, pass rate, mean score and the
most common failures, as a table, JSON and a PNG chart; bad input exits 2 in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tests.routing.test_learned_quality import N, gated_job, outcome
from vidgate.cli.main import main
from vidgate.jobs.store import JobStore

A, B = "cogvideox-5b-replicate", "pixverse-fal"


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "q.db"
    store = JobStore(f"sqlite:///{path}")
    # A: 25 jobs, every 5th clip defective and regenerated (30 clips, 25 pass)
    for i in range(25):
        store.create(gated_job(i, outcome(A, defective=i % 5 == 4)))
    # B: 4 clean jobs (under N: routing does not use it yet)
    for i in range(4):
        store.create(gated_job(100 + i, outcome(B, defective=False)))
    store.close()
    monkeypatch.setenv("VIDGATE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VIDGATE_DATABASE_URL", f"sqlite:///{path}")
    monkeypatch.setenv("VIDGATE_LEARN_MIN_SAMPLES", str(N))
    return path


def test_json_report(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["quality", "report", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["jobs_read"] == 29
    a, b = out["offerings"]  # worst pass rate first
    assert a["offering"] == A
    assert (a["clips"], a["passed"]) == (30, 25)
    assert a["pass_rate"] == round(25 / 30, 4)
    assert a["mean_score"] == round((25 * 8.0 + 5 * 2.0) / 30, 2)
    assert a["top_failures"] == [{"check": "judge_prompt_adherence", "clips": 5}]
    assert a["routing_uses_it"] is True
    assert b == {
        "offering": B,
        "clips": 4,
        "passed": 4,
        "pass_rate": 1.0,
        "mean_score": 8.0,
        "top_failures": [],
        "routing_uses_it": False,
    }


def test_table_and_chart(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "charts" / "quality.png"
    assert main(["quality", "report", "--chart", str(png)]) == 0
    text = capsys.readouterr().out
    assert A in text
    assert "83%" in text
    assert "judge_prompt_adherence (5)" in text
    assert f"catalog (<{N})" in text
    with Image.open(png) as im:
        assert im.format == "PNG"
        assert im.size[0] > 400


def test_only_real_jobs(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["quality", "report", "--json", "--sandbox"]) == 0
    assert json.loads(capsys.readouterr().out)["offerings"] == []


def test_bad_chart_name_is_one_line(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["quality", "report", "--chart", "out.jpg"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--chart out.jpg: give a .png file name" in err
    assert len(err.splitlines()) == 1
