"""The story view in a real browser (Debian's Chromium through Playwright) against a real
server: the shots as a strip, each shot's file, and the film in a player that plays."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from tests.conftest import IN_CI
from tests.server.conftest import sandbox_settings
from tests.stories.story_helpers import story_catalog, write_wav
from vidgate.gateway import Gateway
from vidgate.jobs.worker import WorkerConfig
from vidgate.sandbox.app import LoopbackServer, SandboxServer
from vidgate.server.app import create_app

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]


@pytest.fixture
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        if IN_CI:
            pytest.fail(f"Chromium is required in CI and {CHROMIUM} is missing")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Gateway]]:
    cat = story_catalog()
    sb = SandboxServer(tmp_path / "sandbox", cat, time_scale=0.004).start()
    gw = Gateway(sandbox_settings(tmp_path / "home", sandbox_url=sb.url), catalog=cat)
    server = LoopbackServer(create_app(gateway=gw, worker_config=WorkerConfig()))
    server.server.config.lifespan = "on"
    server.start()
    yield server.url, gw
    server.stop()
    sb.stop()


def test_the_story_view_shows_the_shots_and_plays_the_film(
    tmp_path: Path, served: tuple[str, Gateway], browser: Browser
) -> None:
    url, gw = served
    _, key = gw.accounts.create_key("viewer")
    wav = write_wav(tmp_path / "t.wav", 2.0)
    story = {
        "title": "A <b>bold</b> fox",  # shown as text, never as markup
        "resolution": "480p",
        "fps": 12,
        "soundtrack": "data:audio/wav;base64," + base64.b64encode(wav.read_bytes()).decode(),
        "shots": [{"prompt": "one", "duration": 2}, {"prompt": "two", "duration": 3}],
    }
    r = httpx.post(
        url + "/v1/stories", json=story, headers={"authorization": f"Bearer {key}"}, timeout=30
    )
    assert r.status_code == 202, r.text
    sid = r.json()["id"]

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url + "/static/story.html")
    page.fill("#api-key", key)
    page.click("#key-submit")
    expect(page.locator(f"#stories li[data-story-id='{sid}']")).to_be_visible()
    expect(page.locator("#s-title")).to_have_text("A <b>bold</b> fox")
    expect(page.locator("#s-state")).to_have_text("succeeded", timeout=90_000)
    shots = page.locator("#strip li.shot")
    expect(shots).to_have_count(2)
    for n in (1, 2):
        card = page.locator(f"#strip li[data-shot='{n}']")
        expect(card).to_have_attribute("data-state", "succeeded")
        # each shot's quality verdict (the built-in gate's checks ran on its job)
        expect(card).to_have_attribute("data-quality", "pass")
        expect(card.locator(".meta")).to_contain_text("quality pass")
    # every shot's own file in the strip, and the film in the player, decoded and playing
    page.wait_for_function(
        "() => [...document.querySelectorAll('#strip video')].length === 2 && "
        "[...document.querySelectorAll('#strip video')].every(v => v.readyState >= 1)",
        timeout=30_000,
    )
    page.wait_for_function(
        "() => { const v = document.querySelector('#film');"
        " return v && !v.hidden && v.readyState >= 2 && v.duration > 0; }",
        timeout=30_000,
    )
    duration = page.evaluate("document.querySelector('#film').duration")
    assert duration == pytest.approx(5.0, abs=0.2)
    page.evaluate("document.querySelector('#film').muted = true")
    page.evaluate("document.querySelector('#film').play()")
    page.wait_for_function("() => document.querySelector('#film').currentTime > 0.2")
    assert page.locator("#s-title b").count() == 0
    assert errors == []
