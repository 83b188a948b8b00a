"""Hostile and oversized stories: refused with a 4xx (or a one-line tool error) before any
money is held or any shot is made; never a local file read or an internal URL passed on;
long shots planned as segments rather than crashing the planner."""

from __future__ import annotations

import asyncio
import base64
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.server.conftest import sandbox_settings
from tests.stories.story_helpers import story_catalog, write_wav
from tests.stories.test_story_api import Api, api  # noqa: F401  (the fixture)
from vidgate.gateway import Gateway
from vidgate.mcp.tools import ToolInputError, VidgateTools
from vidgate.stories.driver import story_store
from vidgate.stories.plan import REQUEST_MAX_S, plan_story
from vidgate.stories.spec import MAX_FILM_S, MAX_SHOTS, parse_story

ONE_SHOT = "title: t\nshots: [{prompt: a, duration: 2}]\n"


def _wav_url() -> str:
    with tempfile.TemporaryDirectory() as d:
        wav = write_wav(Path(d) / "a.wav", 0.5)
        return "data:audio/wav;base64," + base64.b64encode(wav.read_bytes()).decode()


WAV = _wav_url()


@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        (f'voiceover: [{{file: "{WAV}", at: .inf}}]\n', "voiceover[0].at", "finite"),
        (f'voiceover: [{{file: "{WAV}", at: 2}}]\n', "voiceover[0].at", "after the shots end"),
        ("captions: [{text: hi, start: 0, end: .inf}]\n", "captions.items[0].end", "finite"),
        ("captions: [{text: hi, start: 0, end: .nan}]\n", "captions.items[0].end", "finite"),
        ("captions: [{text: hi, start: 2, end: 3}]\n", "captions.items[0]", "after the shots"),
        ('soundtrack: {file: "' + WAV + '", gain_db: .nan}\n', "soundtrack.gain_db", "finite"),
    ],
)
def test_times_past_the_film_or_infinite_are_problems_with_their_field(
    extra: str, field: str, words: str
) -> None:
    checked = parse_story(ONE_SHOT + extra, source="body", base_dir=None)
    assert not checked.ok
    by_field = {p.field: p.message for p in checked.problems}
    assert field in by_field, checked.problems
    assert words in by_field[field]


def test_a_voiceover_and_caption_inside_the_film_are_taken() -> None:
    body = ONE_SHOT + f'voiceover: [{{file: "{WAV}", at: 1.9}}]\n'
    body += "captions: [{text: hi, start: 1.9, end: 30}]\n"
    assert parse_story(body, source="body", base_dir=None).ok


@pytest.mark.parametrize(
    ("track", "words"),
    [
        ("data:audio/wav;base64,", "it is empty"),
        ("data:audio/wav;base64," + base64.b64encode(b"not a sound").decode(), "not a readable"),
        ("data:audio/wav;base64,@@@", "not a readable"),
        ("https://example.com/theme.wav", "not an http(s) URL"),
    ],
)
def test_a_soundtrack_that_cannot_be_played_is_refused_at_submit(track: str, words: str) -> None:
    # over HTTP and from the CLI alike: otherwise the film fails after every shot is paid for
    for base_dir in (None, Path(tempfile.gettempdir())):
        body = ONE_SHOT + f'soundtrack: "{track}"\nvoiceover: "{track}"\n'
        checked = parse_story(body, source="body", base_dir=base_dir)
        by_field = {p.field: p.message for p in checked.problems}
        assert set(by_field) == {"soundtrack", "voiceover"}, checked.problems
        assert all(words in m for m in by_field.values()), by_field


def test_a_local_sound_file_is_opened_before_anything_is_made(tmp_path: Path) -> None:
    (tmp_path / "noise.wav").write_bytes(b"RIFF....WAVEfmt nonsense")
    write_wav(tmp_path / "good.wav", 0.5)
    bad = parse_story(ONE_SHOT + "soundtrack: noise.wav\n", base_dir=tmp_path)
    assert [p.field for p in bad.problems] == ["soundtrack"]
    assert "not a readable sound file" in bad.problems[0].message
    assert parse_story(ONE_SHOT + "soundtrack: good.wav\n", base_dir=tmp_path).ok


def _story(shots: int, seconds: float) -> str:
    return json.dumps(
        {
            "title": "long",
            "resolution": "480p",
            "fps": 12,
            "shots": [{"prompt": f"shot {i}", "duration": seconds} for i in range(shots)],
        }
    )


def test_a_film_over_the_limit_is_refused_unplanned() -> None:
    # at the limit: taken
    assert parse_story(_story(8, MAX_FILM_S / 8), base_dir=None).ok
    over = parse_story(_story(8, MAX_FILM_S / 8 + 0.01), base_dir=None)
    assert [p.field for p in over.problems] == ["shots"]
    assert "split it into several stories" in over.problems[0].message
    assert over.loaded is None  # nothing left to plan: no work is spent on it


def test_a_shot_longer_than_one_request_is_planned_in_segments(tmp_path: Path) -> None:
    gw = Gateway(
        sandbox_settings(tmp_path / "home", sandbox_url="http://127.0.0.1:9"),
        catalog=story_catalog(),
    )
    try:
        seconds = REQUEST_MAX_S + 30
        checked = parse_story(_story(1, seconds), base_dir=None)
        assert checked.loaded is not None
        plan, problems = plan_story(checked.loaded, gw.router(), gw.catalog)
        assert problems == []
        (shot,) = plan.shots
        assert shot.chain != "none"
        assert len(shot.segments) > 1
        assert all(s.request.duration_s <= REQUEST_MAX_S for s in shot.segments)
        assert sum(s.keep_s for s in shot.segments) == pytest.approx(seconds, abs=0.2)
    finally:
        gw.close()


def _nothing_held(api: Api, tenant: str) -> None:  # noqa: F811
    assert api.sandbox.core.store.stats()["creates"] == 0
    row = api.gw.accounts.tenant(tenant)
    assert row is not None
    assert row["reserved_usd"] == 0.0
    with api.client(tenant) as c:
        assert c.get("/v1/stories").json()["data"] == []


def test_an_enormous_story_is_a_422_before_anything_is_held(api: Api) -> None:  # noqa: F811
    with api.client("erin", budget=1_000_000.0) as c:
        started = time.monotonic()
        r = c.post("/v1/stories", content=_story(MAX_SHOTS, 600))
        took = time.monotonic() - started
    assert r.status_code == 422, r.text
    assert "\n" not in r.json()["detail"]
    assert [e["field"] for e in r.json()["errors"]] == ["shots"]
    assert took < 5  # refused unplanned (planning it took seconds of CPU)
    _nothing_held(api, "erin")


def test_a_long_shot_over_http_is_accepted_not_a_500(api: Api) -> None:  # noqa: F811
    with api.client("frank", budget=1_000.0) as c:
        r = c.post("/v1/stories", content=_story(1, REQUEST_MAX_S + 10))
        assert r.status_code == 202, r.text
        (shot,) = r.json()["shots"]
        assert len(shot["segments"]) > 1
        assert c.post(f"/v1/stories/{r.json()['id']}/cancel").status_code == 200


HOSTILE_REFS = [
    "/etc/passwd",
    "../../../../etc/passwd",
    "~/.ssh/id_rsa",
    "file:///etc/passwd",
    "http://127.0.0.1:5432/x.png",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::ffff:127.0.0.1]/x.png",
    "http://2130706433/x.png",
    "https://10.0.0.1/x.png",
]


def _with_ref(ref: str, where: str) -> dict[str, Any]:
    story: dict[str, Any] = {"title": "probe", "shots": [{"prompt": "a", "duration": 2}]}
    if where == "character":
        story["characters"] = {"bob": {"description": "a man", "references": [ref]}}
        story["shots"][0]["characters"] = ["bob"]
    elif where == "style":
        story["styles"] = {"noir": {"description": "dark", "references": [ref]}}
        story["style"] = "noir"
    elif where == "soundtrack":
        story["soundtrack"] = ref
    else:
        story["voiceover"] = [{"file": ref}]
    return story


def test_local_files_and_internal_urls_are_refused_over_http(api: Api) -> None:  # noqa: F811
    with api.client("mallory", budget=100.0) as c:
        for where in ("character", "style", "soundtrack", "voiceover"):
            for ref in HOSTILE_REFS:
                r = c.post("/v1/stories", json=_with_ref(ref, where))
                assert r.status_code in (400, 422), (where, ref, r.status_code, r.text)
                assert "\n" not in r.json()["detail"]
    _nothing_held(api, "mallory")


def test_mcp_run_story_refuses_internal_image_urls(tmp_path: Path) -> None:
    gw = Gateway(
        sandbox_settings(tmp_path / "home", sandbox_url="http://127.0.0.1:9"),
        catalog=story_catalog(),
    )
    tools = VidgateTools(gw, story_dir=None)  # as over MCP's HTTP transport
    try:
        for ref in HOSTILE_REFS:
            body = json.dumps(_with_ref(ref, "character"))
            with pytest.raises(ToolInputError) as e:
                asyncio.run(tools.run_story(body, None))
            assert "\n" not in str(e.value)
        assert story_store(gw).list("default", limit=5) == []
    finally:
        gw.close()
