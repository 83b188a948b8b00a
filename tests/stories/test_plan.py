"""Planning a story: one offering across shots unless a shot needs what it lacks (and the
plan says why), references and one seed where the offering takes them, segments by the
offering's own extend mode or by last-frame chaining, costs against the budget."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import sandbox_settings
from tests.stories.story_helpers import HERE, probe_video, story_catalog, write_png
from vidgate.catalog.loader import Catalog, catalog_from_yaml
from vidgate.catalog.schema import DurationSpec
from vidgate.gateway import Gateway
from vidgate.sandbox.app import SandboxServer
from vidgate.stories.driver import run_story, submit_story
from vidgate.stories.plan import ceil_duration, plan_story, split_frames
from vidgate.stories.spec import load_story
from vidgate.types import ReferenceRole


def _gateway(tmp_path: Path, cat: Catalog, sandbox_url: str = "http://127.0.0.1:9") -> Gateway:
    return Gateway(sandbox_settings(tmp_path / "home", sandbox_url), catalog=cat)


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    g = _gateway(tmp_path, story_catalog())
    yield g
    g.close()


def test_one_offering_unless_a_shot_needs_what_it_lacks(tmp_path: Path) -> None:
    raw = yaml.safe_load((HERE / "story_catalog.yaml").read_text())
    for o in raw["offerings"]:
        if o["id"] == "loom-sandbox":  # short clips only, and no way to continue one
            o["capabilities"]["durations"] = {"min": 1, "max": 4, "step": 1}
            o["capabilities"]["modes"] = ["text-to-video"]
    g = _gateway(tmp_path, catalog_from_yaml(yaml.safe_dump(raw), "short-loom"))
    try:
        story = load_story(
            "title: T\nresolution: 480p\nshots:\n"
            "  - {prompt: a, duration: 6}\n  - {prompt: b, duration: 6}\n"
            "  - {prompt: c, duration: 4, audio: native}\n  - {prompt: d, duration: 6}\n"
        )
        plan, problems = plan_story(story, g.router(), g.catalog)
    finally:
        g.close()
    assert problems == []
    # reel serves three shots of four (loom one): reel is the story's offering
    assert plan.primary == "reel-sandbox"
    assert [s.offering_id for s in plan.shots] == [
        "reel-sandbox",
        "reel-sandbox",
        "loom-sandbox",
        "reel-sandbox",
    ]
    why = plan.shots[2].switched_because
    assert why is not None
    assert why.startswith("reel-sandbox cannot:")
    assert "audio" in why
    assert [s.switched_because for s in plan.shots if s.index != 2] == [None] * 3
    # priced as the router prices each shot: per second on each offering
    assert plan.cost_usd == pytest.approx(0.01 * 18 + 0.05 * 4)


def test_the_offering_serving_every_shot_is_kept_even_when_another_is_cheaper(
    gw: Gateway,
) -> None:
    story = load_story(
        "title: T\nresolution: 480p\nshots:\n"
        "  - {prompt: a, duration: 4}\n  - {prompt: b, duration: 4, audio: native}\n"
    )
    plan, _ = plan_story(story, gw.router(), gw.catalog)
    # reel is cheaper for shot 1, but loom makes both: one offering for the story
    assert [s.offering_id for s in plan.shots] == ["loom-sandbox", "loom-sandbox"]
    assert plan.shots[0].segments[0].offerings[1:] == ["reel-sandbox"]  # kept as fallback


def test_characters_and_styles_go_to_offerings_that_take_them_with_one_seed(
    tmp_path: Path, gw: Gateway
) -> None:
    write_png(tmp_path / "fox.png", (200, 80, 20))
    write_png(tmp_path / "ink.png", (10, 10, 10))
    text = (
        "title: Looks\nresolution: 480p\nseed: 1234\nstyle: ink\n"
        "characters: {Fox: {description: a red fox, references: [fox.png]}}\n"
        "styles: {ink: {description: ink wash, references: [ink.png]}}\n"
        "shots:\n"
        "  - {prompt: a, duration: 8, characters: [Fox], audio: native}\n"
        "  - {prompt: b, duration: 7, characters: [Fox]}\n"
    )
    plan, problems = plan_story(load_story(text, base_dir=tmp_path), gw.router(), gw.catalog)
    assert problems == []
    # loom (subject and style references, seeds) serves both; reel could not take 7 s
    assert {s.offering_id for s in plan.shots} == {"loom-sandbox"}
    for shot in plan.shots:
        req = shot.segments[0].request
        roles = [r.role for r in req.references]
        assert roles == [ReferenceRole.SUBJECT, ReferenceRole.STYLE]
        assert all(r.url.startswith("data:image/png;base64,") for r in req.references)
        assert req.seed == 1234
        assert "a red fox" in req.prompt
        assert "ink wash" in req.prompt
    assert plan.seed == 1234


def test_durations_and_splits() -> None:
    assert ceil_duration(DurationSpec(values=[4, 8]), 5) == 8
    assert ceil_duration(DurationSpec(values=[4, 8]), 8.0001) is None
    assert ceil_duration(DurationSpec(min=2, max=10, step=1), 0.5) == 2
    assert ceil_duration(DurationSpec(min=2, max=10, step=1), 7.5) == 8
    assert ceil_duration(DurationSpec(min=2, max=10, step=1), 10) == 10
    # 30 s at 12 fps, 120 frames a clip, one repeated frame per join: 3 clips do not fit
    assert split_frames(360, 120, 1) == [90, 90, 90, 90]
    assert split_frames(360, 120, 0) == [120, 120, 120]
    assert split_frames(100, 120, 1) == [100]
    assert sum(split_frames(361, 120, 1)) == 361


def test_a_shot_longer_than_every_offering_and_no_way_to_continue_is_refused_with_its_line(
    tmp_path: Path,
) -> None:
    raw = yaml.safe_load((HERE / "story_catalog.yaml").read_text())
    for o in raw["offerings"]:
        if o["id"] == "loom-sandbox":
            o["capabilities"]["modes"] = ["text-to-video"]  # no image-to-video: no chaining
    g = _gateway(tmp_path, catalog_from_yaml(yaml.safe_dump(raw), "no-chain"))
    try:
        story = load_story("title: T\nresolution: 480p\nshots:\n  - {prompt: a, duration: 25}\n")
        _, problems = plan_story(story, g.router(), g.catalog)
    finally:
        g.close()
    [p] = problems
    assert p.field == "shots[0]"
    assert p.line == 4
    assert "no offering can make this shot" in p.message
    assert "25s" in p.message


def test_an_offering_s_own_extend_mode_makes_the_segments(tmp_path: Path) -> None:
    raw = yaml.safe_load((HERE / "story_catalog.yaml").read_text())
    for o in raw["offerings"]:
        o["enabled"] = o["id"] == "tide-sandbox"
    cat = catalog_from_yaml(yaml.safe_dump(raw), "extend-only")
    sb = SandboxServer(tmp_path / "sandbox", cat, time_scale=0.004).start()
    g = _gateway(tmp_path, cat, sb.url)
    try:
        loaded = load_story(
            "title: T\nresolution: 480p\nfps: 12\nshots:\n  - {prompt: a, duration: 20}\n"
        )
        plan, problems = plan_story(loaded, g.router(), g.catalog)
        assert problems == []
        [shot] = plan.shots
        assert shot.chain == "extend"
        assert [s.starts for s in shot.segments] == ["fresh", "extend", "extend"]
        # no repeated frame with extend: 240 frames in three clips of 8 s, 80 kept of each
        assert [round(s.keep_s * 12) for s in shot.segments] == [80, 80, 80]
        assert {s.delivered_s for s in shot.segments} == {8}
        assert all(s.trim_start_s == 0 for s in shot.segments)
        assert plan.cost_usd == pytest.approx(3 * 8 * 0.20)
        doc, _ = submit_story(g, loaded, plan)
        doc = asyncio.run(run_story(g, doc.id, timeout_s=180))
        assert doc.state.value == "succeeded", doc.error
        # each continuation was asked for as an extension of the segment before it
        for key, jid in sorted(doc.children.items()):
            job = g.store.get(jid)
            roles = [r.role for r in job.request.references]
            assert (ReferenceRole.SOURCE_VIDEO in roles) == (key != "0.0")
        assert [j["how"] for j in doc.joins] == ["extend", "extend"]
        assert doc.film is not None
        film = probe_video(Path(g.storage_path(doc.film["uri"])))
        assert film.frames == 240
        assert math.isclose(plan.film_s, 20.0)
    finally:
        g.close()
        sb.stop()
