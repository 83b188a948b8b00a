"""The story file: the smallest valid one works; a file with errors at several places gets
each named with its line and what would work, exit code 2; the published JSON Schema is the
model's own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.stories.story_helpers import write_png
from vidgate.cli.main import main
from vidgate.stories.spec import json_schema, load_story, parse_story

SMALLEST = """\
title: Fox at dawn
resolution: 720p
shots:
  - prompt: A red fox trots across a frosty meadow at dawn
    duration: 8
  - prompt: The fox stops and looks back at the camera
    duration: 5
"""

BAD = """\
title: Bad
resolution: 480p
budget: 0.05
characters:
  fox:
    description: a red fox
    references: [fox.png, missing.png]
shots:
  - prompt: A fox in the snow
    duration: 8
    characters: [fox, owl]
  - prompt: The owl lands
    duration: -3
"""


def test_the_smallest_file_is_a_story() -> None:
    story = load_story(SMALLEST).story
    assert [s.duration for s in story.shots] == [8, 5]
    assert story.resolution.value == "720p"
    assert story.fps == 24
    assert story.aspect == "16:9"
    assert story.shot_audio(story.shots[0]) == "none"
    # one seed for the story, the same on every read
    assert load_story(SMALLEST).story.story_seed() == story.story_seed()


def test_json_is_read_with_lines_too() -> None:
    doc = {"title": "T", "shots": [{"prompt": "p", "duration": 0}]}
    checked = parse_story(json.dumps(doc, indent=2))
    [p] = checked.problems
    assert p.field == "shots[0].duration"
    assert p.line == 6


def test_every_problem_is_named_with_its_line_and_the_exit_code_is_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_png(tmp_path / "fox.png", (200, 80, 20))
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    monkeypatch.setenv("VIDGATE_HOME", str(tmp_path / "home"))
    code = main(["story", str(path), "--dry-run", "--sandbox"])
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    want = {
        f"{path}:3: budget:": "below the plan's $",
        f"{path}:7: characters.fox.references[1]:": "'missing.png' not found",
        f"{path}:11: shots[0].characters[1]:": "unknown character 'owl'",
        f"{path}:13: shots[1].duration:": "must be above 0",
    }
    for head, what in want.items():
        assert any(head in line and what in line for line in lines), (head, err)
    assert len(lines) == 4, err
    assert "Traceback" not in err


def test_budget_below_the_plan_names_what_would_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(SMALLEST.replace("resolution: 720p", "resolution: 720p\nbudget: 0.01"))
    monkeypatch.setenv("VIDGATE_HOME", str(tmp_path / "home"))
    assert main(["story", str(path), "--dry-run", "--sandbox", "--json"]) == 2
    err = capsys.readouterr().err
    assert f"{path}:3: budget: $0.01 is below the plan's $" in err
    assert "raise budget: to at least" in err


def test_the_dry_run_prints_the_plan_at_80_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(SMALLEST)
    monkeypatch.setenv("VIDGATE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["story", str(path), "--dry-run", "--sandbox"]) == 0
    out = capsys.readouterr().out
    assert "Fox at dawn" in out
    assert "total $" in out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert main(["story", str(path), "--dry-run", "--sandbox", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["summary"]["shots"] == 2
    assert plan["summary"]["estimated_cost_usd"] == pytest.approx(
        sum(s["segments"][0]["cost_usd"] for s in plan["plan"]["shots"])
    )


def test_the_published_schema_is_the_model_s(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["story", "schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json_schema()
    published = json.loads((ROOT / "docs" / "story.schema.json").read_text())
    assert published == printed, "regenerate docs/story.schema.json with `vidgate story schema`"


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        ("title: [unclosed\n", 2, "not valid YAML or JSON"),
        ("- a list\n", 1, "a story is a mapping with title: and shots:"),
        ("title: x\n", 1, "shots: is required"),
        ("title: x\nshots:\n  - {prompt: a, duration: 700}\n", 3, "at most 600 s"),
        ("title: x\nshots:\n  - {prompt: a, duration: true}\n", 3, "a number of seconds"),
    ],
)
def test_broken_files_are_one_line_each_with_exit_2(
    text: str,
    line: int,
    says: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    monkeypatch.setenv("VIDGATE_HOME", str(tmp_path / "home"))
    assert main(["story", str(path), "--dry-run", "--sandbox"]) == 2
    err = capsys.readouterr().err
    [first] = [x for x in err.splitlines() if x.startswith("error:")]
    assert first.startswith(f"error: {path}:{line}: ")
    assert says in first
    assert "Traceback" not in err
