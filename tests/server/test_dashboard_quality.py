"""The dashboard's quality panel in Chromium: a sandbox job whose stored video went through
the semantic stage (a tiny CLIP through the real loading path, the judge against the sandbox)
shows each check with its value, threshold and verdict, and a strip of the frames CLIP
flagged, cut from the stored video by the server. The frame endpoint is tenant-isolated and
serves flagged timestamps only."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect

from tests.server.conftest import Server, ServerFactory, Tenant
from tests.server.test_dashboard import browser  # noqa: F401 - the Chromium fixture
from tests.stages.semantic_support import save_tiny_clip
from vidgate.server.dashboard import THUMB_SHORT_SIDE
from vidgate.stages.base import StageContext, StageResult
from vidgate.stages.semantic import SemanticStage
from vidgate.types import Job, QualityGate


def semantic_result(server: Server, job: Job, workdir: Path) -> StageResult:
    gw = server.gateway

    async def go() -> StageResult:
        async with httpx.AsyncClient() as client:
            ctx = StageContext(
                job=job.model_copy(
                    update={
                        "request": job.request.model_copy(
                            update={"quality_gate": QualityGate(clip=True, judge=True)}
                        )
                    }
                ),
                asset=job.assets[0],
                path=Path(gw.storage_path(job.assets[0].uri)),
                workdir=workdir,
                settings=gw.settings,
                client=client,
                sandbox_url=gw.sandbox_url(),
            )
            return await SemanticStage().run(ctx)

    return asyncio.run(go())


@pytest.fixture
def judged(
    make_server: ServerFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Server, Tenant, str, StageResult]:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VIDGATE_CLIP_MODEL", str(save_tiny_clip(tmp_path / "clip")))
    # every frame under the bar: the strip shows all of them
    monkeypatch.setenv("VIDGATE_CLIP_MIN_SCORE", "10")
    server = make_server(sandbox_time_scale=0.01)
    who = server.tenant("q")
    with server.client(who) as c:
        r = c.post(
            "/v1/jobs",
            json={"request": {"prompt": "a heron in reeds", "duration_s": 4, "resolution": "480p"}},
        )
    assert r.status_code == 202, r.text
    assert server.wait_job(who, r.json()["id"])["state"] == "succeeded"
    job = server.gateway.store.get(r.json()["id"])
    result = semantic_result(server, job, tmp_path)
    job.stages["semantic"] = result.model_dump(mode="json")
    job.quality = {"verdict": "flagged", "score": result.score, "failed": ["clip_adherence"]}
    server.gateway.store.update_finished(job)
    return server, who, job.id, result


def test_panel_shows_checks_and_flagged_frames(
    judged: tuple[Server, Tenant, str, StageResult],
    browser: Browser,  # noqa: F811
) -> None:
    server, who, job_id, result = judged
    by = {c.name: c for c in result.checks}
    assert by["clip_adherence"].verdict == "fail"
    flagged = by["clip_adherence"].frames_s
    assert len(flagged) == 8

    page: Page = browser.new_page(viewport={"width": 1440, "height": 1200})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.url + "/")
    page.fill("#api-key", who.key)
    page.click("#key-submit")
    page.locator(f"#jobs tr[data-job-id='{job_id}']").click()

    box = page.locator("#quality-box")
    page.wait_for_timeout(500)
    assert errors == []
    expect(box).to_be_visible()
    expect(page.locator("#quality-summary")).to_contain_text("Gate: flagged")
    # every stage's checks are listed (the engine's technical checks ran too)
    stored = [c for r in server.gateway.store.get(job_id).stages.values() for c in r["checks"]]
    assert len(stored) > len(result.checks)
    rows = page.locator("#quality-checks tbody tr.check")
    expect(rows).to_have_count(len(stored))
    clip_row = page.locator("#quality-checks tr.check[data-check='clip_adherence']")
    expect(clip_row).to_contain_text("fail")
    expect(clip_row).to_contain_text(f"{by['clip_adherence'].threshold:.3f} cosine")
    for name in ("judge_prompt_adherence", "judge_artifacts", "judge_physics", "judge_text"):
        row = page.locator(f"#quality-checks tr.check[data-check='{name}']")
        expect(row).to_contain_text("pass")
        expect(row).to_contain_text(f"{by[name].value:g}/10")
    # the strip: one decoded thumbnail per flagged frame, none for the passing checks
    imgs = page.locator(".thumbs[data-check='clip_adherence'] img")
    expect(imgs).to_have_count(len(flagged))
    page.wait_for_function(
        "() => [...document.querySelectorAll('.thumbs img')]"
        ".every((i) => i.complete && i.naturalWidth > 0)",
        timeout=30_000,
    )
    heights = page.eval_on_selector_all(".thumbs img", "els => els.map((i) => i.naturalHeight)")
    shown = sum(min(12, len(c["frames_s"])) for c in stored)
    assert heights == [THUMB_SHORT_SIDE] * shown
    assert page.locator(".thumbs").count() == sum(1 for c in stored if c["frames_s"])
    assert errors == []
    page.close()


def test_frame_endpoint_is_isolated_and_serves_flagged_times_only(
    judged: tuple[Server, Tenant, str, StageResult],
) -> None:
    server, who, job_id, result = judged
    t = result.checks[0].frames_s[0]
    path = f"/v1/dashboard/jobs/{job_id}/frames"
    other = server.tenant("other")
    with server.client(who) as c:
        ok = c.get(path, params={"t": t})
        assert ok.status_code == 200, ok.text
        assert ok.headers["content-type"] == "image/jpeg"
        with Image.open(io.BytesIO(ok.content)) as im:
            assert min(im.size) == THUMB_SHORT_SIDE
        unflagged = c.get(path, params={"t": t + 0.01})
        assert unflagged.status_code == 404
        assert "flagged" in unflagged.text
        assert c.get(path, params={"t": -1}).status_code in (400, 422)
        assert c.get(path).status_code in (400, 422)
    with server.client(other) as c:
        r = c.get(path, params={"t": t})
        assert r.status_code == 404  # another tenant's job is simply not found
    with server.client() as c:
        assert c.get(path, params={"t": t}).status_code == 401
