"""Stories end to end on the sandbox: a 6-shot film with two recurring characters and a
soundtrack, and a 30 s shot on an offering whose clips end at 10 s.

Real parts throughout: the sandbox renders real MP4s over loopback HTTP, children are
ordinary jobs driven by a real worker with a real SQLite store and ledger, the film is
assembled by PyAV and decoded here by PyAV.
"""

from __future__ import annotations

import asyncio
import base64
import math
from collections.abc import Iterator
from pathlib import Path

import pyloudnorm  # type: ignore[import-untyped]
import pytest
import yaml

from tests.conftest import sandbox_settings
from tests.jobs import conftest as jobs_fixtures
from tests.stories.story_helpers import probe_video, story_catalog, write_png, write_wav
from vidgate.gateway import Gateway
from vidgate.sandbox.app import SandboxServer
from vidgate.stories.driver import run_story, story_store, submit_story
from vidgate.stories.plan import plan_story
from vidgate.stories.spec import load_story
from vidgate.stories.store import StoryDoc


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[tuple[Gateway, SandboxServer]]:
    cat = story_catalog()
    sb = SandboxServer(tmp_path / "sandbox", cat, time_scale=0.004).start()
    gw = Gateway(sandbox_settings(tmp_path / "home", sb.url), catalog=cat)
    yield gw, sb
    gw.close()
    sb.stop()


def _run(gw: Gateway, text: str, base: Path, budget: float | None = None) -> StoryDoc:
    loaded = load_story(text, base_dir=base)
    plan, problems = plan_story(loaded, gw.router(), gw.catalog)
    assert problems == []
    if budget is not None:
        gw.accounts.ensure_tenant("default", budget_usd=budget)
    doc, _ = submit_story(gw, loaded, plan)
    return asyncio.run(run_story(gw, doc.id, timeout_s=240))


def _film_path(gw: Gateway, doc: StoryDoc) -> Path:
    assert doc.film is not None
    return Path(gw.storage_path(doc.film["uri"]))


SIX_SHOTS = """\
title: Fox and owl
resolution: 480p
fps: 12
budget: 5
characters:
  Fox: {description: a red fox with a white-tipped tail, references: [fox.png]}
  Owl: {description: a grey owl with amber eyes, references: [owl.png]}
soundtrack: {file: theme.wav, gain_db: -3}
captions:
  - {text: Dawn in the meadow, start: 0.5, end: 3}
  - {text: The owl is watching, start: 9, end: 12}
shots:
  - {prompt: The fox trots through a frosty meadow, duration: 8, characters: [Fox]}
  - {prompt: The owl watches, duration: 8, characters: [Owl], transition: crossfade:0.5}
  - {prompt: The fox looks up at the owl, duration: 8, characters: [Fox, Owl], camera: low angle}
  - {prompt: The owl swoops down, duration: 8, characters: [Owl]}
  - {prompt: They face each other, duration: 8, characters: [Fox, Owl], transition: crossfade}
  - {prompt: The fox runs off into the woods, duration: 6, characters: [Fox]}
"""


def test_six_shot_film_with_two_characters_and_a_soundtrack(
    tmp_path: Path, gw: tuple[Gateway, SandboxServer]
) -> None:
    gateway, sb = gw
    write_png(tmp_path / "fox.png", (200, 80, 20))
    write_png(tmp_path / "owl.png", (120, 120, 120))
    write_wav(tmp_path / "theme.wav", 20.0)
    doc = _run(gateway, SIX_SHOTS, tmp_path, budget=10.0)
    loaded_shots = yaml.safe_load(SIX_SHOTS)["shots"]
    assert doc.state.value == "succeeded", doc.error
    plan = doc.plan
    # one offering for every shot, the characters' references and the story's seed with it
    assert {s.offering_id for s in plan.shots} == {"loom-sandbox"}
    assert all(s.seed == plan.seed for s in plan.shots)
    assert "subject:Fox" in plan.shots[2].references
    assert "subject:Owl" in plan.shots[2].references
    assert sb.core.store.stats()["creates"] == 6
    # each shot's job carries its characters' images as subject references, and the seed
    fox = (tmp_path / "fox.png").read_bytes()
    for key, jid in doc.children.items():
        job = gateway.store.get(jid)
        shot = loaded_shots[int(key.split(".")[0])]
        subjects = [r.url for r in job.request.references if r.role.value == "subject"]
        assert len(subjects) == len(shot["characters"])
        assert ("Fox" in shot["characters"]) == any(
            base64.b64decode(u.split(",", 1)[1]) == fox for u in subjects
        )
        assert job.request.seed == plan.seed
    assert plan.film_s >= 45

    film = probe_video(_film_path(gateway, doc))
    # within one frame of the plan; one size and frame rate throughout
    assert abs(film.frames - plan.film_frames()) <= 1
    assert film.sizes == {(plan.width, plan.height)}
    assert film.fps == pytest.approx(plan.fps)
    # the soundtrack runs under the whole film at the loudness target (±1 LU)
    audio = film.audio
    assert audio is not None
    samples, rate = audio
    assert samples.shape[1] / rate == pytest.approx(film.frames / plan.fps, abs=0.1)
    lufs = pyloudnorm.Meter(rate).integrated_loudness(samples.T)
    assert abs(lufs - (-14.0)) <= 1.0

    # the captions as a WebVTT sidecar beside the film
    assert doc.film is not None
    vtt = Path(gateway.storage_path(doc.film["captions_uri"])).read_text()
    assert vtt.startswith("WEBVTT")
    assert "The owl is watching" in vtt

    # the record matches the ledger to the cent, and names the offering of every shot
    rec = doc.record
    assert rec is not None
    child_ids = set(doc.children.values())
    ledger = [r for r in gateway.store.ledger() if r["job_id"] in child_ids]
    booked = sum(r["amount_usd"] for r in ledger if r["kind"] in ("charge", "pending"))
    assert round(rec["cost_usd"], 2) == round(booked, 2)
    assert rec["matches_ledger"] is True
    assert [s["offering"] for s in rec["shots"]] == ["loom-sandbox"] * 6
    assert len(ledger) == len(child_ids) == 6
    # the whole-story hold is gone; spend is what the ledger booked
    tenant = gateway.accounts.tenant("default")
    assert tenant is not None
    assert tenant["reserved_usd"] == pytest.approx(0.0, abs=1e-9)
    assert tenant["spent_usd"] == pytest.approx(booked)
    assert story_store(gateway).reserved(doc.id) == 0.0


LONG_SHOT = """\
title: The long walk
resolution: 480p
fps: 12
shots:
  - prompt: A fox walks along an endless frozen river
    duration: 30
"""


def test_a_30s_shot_on_a_10s_offering_is_chained_segments_with_continuity(
    tmp_path: Path, gw: tuple[Gateway, SandboxServer]
) -> None:
    gateway, sb = gw
    doc = _run(gateway, LONG_SHOT, tmp_path)
    assert doc.state.value == "succeeded", doc.error
    [shot] = doc.plan.shots
    assert shot.chain == "frames"
    assert len(shot.segments) == math.ceil(30 / (10 - 1 / 12))  # each carries one repeated frame
    assert all(seg.delivered_s <= 10 for seg in shot.segments)
    # segments after the first start from the frame before them, which is trimmed
    assert [seg.starts for seg in shot.segments][1:] == ["last_frame"] * (len(shot.segments) - 1)
    assert all(seg.trim_start_s == pytest.approx(1 / 12) for seg in shot.segments[1:])
    # the sandbox made exactly one clip per segment
    assert sb.core.store.stats()["creates"] == len(shot.segments)
    # one 30 s shot in the film, to the frame
    film = probe_video(_film_path(gateway, doc))
    assert film.frames == 30 * 12
    # every join scored and recorded
    joins = doc.joins
    assert [j["segment"] for j in joins] == list(range(1, len(shot.segments)))
    for j in joins:
        assert -1.0 <= j["continuity"] <= 1.0
        assert j["ok"] == (j["continuity"] >= 0.5)
    assert doc.record is not None
    assert doc.record["joins"] == joins
    # each continuing segment was asked for as image-to-video from a real frame
    for seg_key, jid in doc.children.items():
        job = gateway.store.get(jid)
        roles = [r.role.value for r in job.request.references]
        assert ("first_frame" in roles) == (seg_key != "0.0")
        assert job.parent_id == doc.id


def test_the_film_is_signed_with_every_shot_as_an_ingredient(tmp_path: Path) -> None:
    from vidgate.provenance.devca import make_dev_ca
    from vidgate.provenance.verify import verify_file

    ca = make_dev_ca(tmp_path / "ca")
    cat = story_catalog()
    sb = SandboxServer(tmp_path / "sandbox", cat, time_scale=0.004).start()
    settings = sandbox_settings(
        tmp_path / "home", sb.url, c2pa_cert=str(ca.cert), c2pa_key=str(ca.key)
    )
    gateway = Gateway(settings, catalog=cat)
    try:
        text = (
            "title: Signed\nresolution: 480p\nfps: 12\nshots:\n"
            "  - {prompt: one, duration: 1}\n  - {prompt: two, duration: 2}\n"
            "  - {prompt: three, duration: 1}\n"
        )
        doc = _run(gateway, text, tmp_path)
        assert doc.state.value == "succeeded", doc.error
        assert doc.film is not None
        assert doc.film["c2pa"] == {"signed": True, "ingredients": 3}
        report = verify_file(_film_path(gateway, doc), trust_anchors=ca.ca.read_bytes())
        assert report.ok, report.failures
        shots = [i for i in report.ingredients if i.relationship == "componentOf"]
        assert [i.title for i in shots] == [
            f"shot {n}: {s.offering_id}" for n, s in enumerate(doc.plan.shots, 1)
        ]
        assert report.generation is not None
        assert report.generation["job_id"] == doc.id
        # still the planned film after signing
        film = probe_video(_film_path(gateway, doc))
        assert film.frames == doc.plan.film_frames()
    finally:
        gateway.close()
        sb.stop()


pg_url = jobs_fixtures.pg_url


def test_a_story_runs_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    cat = story_catalog()
    sb = SandboxServer(tmp_path / "sandbox", cat, time_scale=0.004).start()
    gateway = Gateway(sandbox_settings(tmp_path / "home", sb.url, database_url=pg_url), catalog=cat)
    try:
        gateway.accounts.ensure_tenant("default", budget_usd=2.0)
        text = "title: PG\nresolution: 480p\nfps: 12\nshots:\n  - {prompt: a, duration: 12}\n"
        doc = _run(gateway, text, tmp_path)
        assert doc.state.value == "succeeded", doc.error
        assert len(doc.plan.shots[0].segments) == 2
        assert probe_video(_film_path(gateway, doc)).frames == 12 * 12
        assert doc.record is not None
        assert doc.record["matches_ledger"] is True
        tenant = gateway.accounts.tenant("default")
        assert tenant is not None
        assert tenant["reserved_usd"] == pytest.approx(0.0, abs=1e-9)
        assert tenant["spent_usd"] == pytest.approx(doc.record["ledger_usd"])
    finally:
        gateway.close()
        sb.stop()
