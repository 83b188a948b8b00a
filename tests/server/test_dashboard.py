"""The dashboard, end to end: a real server on loopback (worker in its lifespan), Debian's
Chromium driven by Playwright. The page is given a key, submits a job, follows it to
``succeeded`` and plays the video it fetched with the key; the summary it polls is checked
for tenant scoping over plain HTTP."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import IN_CI
from tests.server.conftest import Server, ServerFactory, Tenant, submit_job
from vidgate.sandbox.core import FaultConfig, FaultRule

CHROMIUM = Path(os.environ.get("VIDGATE_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
SCREENSHOT = Path("/tmp/dashboard.png")
#: the page's own text that must not appear as markup: it is data, shown as text
HOSTILE_PROMPT = 'a red fox in snow <img src=x onerror="window.__pwned=1"><b>bold</b>'


@pytest.fixture
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        if IN_CI:
            pytest.fail(f"Chromium is required in CI and {CHROMIUM} is missing")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def dash(make_server: ServerFactory) -> Server:
    # time scale 0.01: a catalog latency of a minute or two becomes a second or two
    return make_server(sandbox_time_scale=0.01)


def _job_via_api(server: Server, key: str) -> dict[str, Any]:
    with server.client() as c:
        r = c.get("/v1/jobs", headers={"authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    jobs: list[dict[str, Any]] = r.json()["data"]
    assert len(jobs) == 1, jobs
    return jobs[0]


def test_page_submits_a_job_and_plays_its_video(dash: Server, browser: Browser) -> None:
    _, key = dash.gateway.accounts.create_key("demo")
    page: Page = browser.new_page(viewport={"width": 1440, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(dash.url + "/")

    # the key is asked for once, then kept
    page.fill("#api-key", key)
    page.click("#key-submit")
    expect(page.locator("#tenant-name")).to_have_text("demo")
    assert page.evaluate("localStorage.getItem('vidgate.apiKey')") == key
    # the form's choices come from the server: offerings grouped by model, the policies
    assert page.locator("#offering option").count() > 10
    assert page.locator("#policy option[value='best-quality']").count() == 1

    page.fill("#prompt", HOSTILE_PROMPT)
    page.fill("#duration", "4")
    page.select_option("#resolution", "480p")
    with page.expect_response(
        lambda r: r.url.endswith("/v1/jobs") and r.request.method == "POST"
    ) as posted:
        page.click("#submit-job")
    assert posted.value.status == 202

    job = _job_via_api(dash, key)  # the page made exactly one job, as asked
    assert job["id"] == posted.value.json()["id"]
    assert job["request"]["prompt"] == HOSTILE_PROMPT
    assert job["request"]["duration_s"] == 4
    assert job["request"]["resolution"] == "480p"
    row = page.locator(f"#jobs tr[data-job-id='{job['id']}']")
    expect(row).to_have_attribute("data-state", "succeeded", timeout=60_000)
    expect(row.locator(".prompt-cell")).to_have_text(HOSTILE_PROMPT)

    job = _job_via_api(dash, key)
    assert job["state"] == "succeeded", job
    asset = job["assets"][0]
    offering = job["offering_id"]

    row.click()
    details = page.locator("#details")
    expect(details.locator("#d-id")).to_have_text(job["id"])
    expect(details.locator("#d-state")).to_have_text("succeeded")
    # the route explanation: the chosen offering first, then the runners-up, rejections
    route = details.locator("#route tbody tr")
    expect(route.first).to_contain_text(offering)
    expect(route.first).to_contain_text("chosen")
    assert route.count() == 1 + len(job["route"]["runners_up"])
    expect(details.locator("#rejected-summary")).to_have_text(
        f"Rejected offerings ({len(job['route']['rejected'])})"
    )

    # the video plays: decoded frames, the measured duration, time moving after play()
    page.wait_for_function(
        "() => { const v = document.querySelector('#video');"
        " return v && v.src.startsWith('blob:') && v.readyState >= 2; }",
        timeout=30_000,
    )
    duration = page.evaluate("document.querySelector('#video').duration")
    assert duration == pytest.approx(asset["duration_s"], abs=0.25)
    assert duration == pytest.approx(job["route"]["chosen"]["duration_s"], abs=0.25)
    assert page.evaluate("document.querySelector('#video').videoWidth") == asset["width"]
    page.evaluate("document.querySelector('#video').play()")
    page.wait_for_function(
        "() => { const v = document.querySelector('#video');"
        " return !v.paused && v.currentTime > 0.3; }",
        timeout=15_000,
    )
    assert page.evaluate("document.querySelector('#video').paused") is False

    # the summary follows: the job is counted, billed to its offering, its provider healthy
    expect(page.locator("#t-succeeded")).to_have_text("1", timeout=10_000)
    cost_row = page.locator("#cost-offering tbody tr", has_text=offering)
    expect(cost_row).to_have_count(1, timeout=10_000)
    # charged, estimated, and what the provider reported (or a dash where it reports nothing)
    expect(cost_row.locator("td")).to_have_count(4)
    expect(cost_row.locator("td").nth(2)).to_have_text(re.compile(r"^\$\d"))
    expect(cost_row.locator("td").nth(3)).to_have_text(re.compile(r"^(\$\d.*|—)$"))
    provider = job["route"]["chosen"]["provider"]
    expect(page.locator(f"#health li[data-provider='{provider}'] .state")).to_have_text("healthy")
    expect(page.locator("#tenant-card")).to_be_hidden()  # not an admin key

    # the prompt stayed text: no element was made from it, no handler ran
    assert page.locator("#jobs img, #jobs b, #details img, #details b").count() == 0
    assert page.evaluate("window.__pwned === undefined")
    assert errors == []

    page.evaluate("document.querySelector('#video').pause()")
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    # the key is remembered: a reload goes straight to the dashboard
    page.reload()
    expect(page.locator("#tenant-name")).to_have_text("demo")
    expect(page.locator(f"#jobs tr[data-job-id='{job['id']}']")).to_have_count(1)
    page.close()


def test_page_flags_a_clip_billed_for_what_was_delivered(dash: Server, browser: Browser) -> None:
    # the sandbox delivers longer and larger than asked: the job is billed for the delivery,
    # and the page says so beside what was billed
    dash.gateway.sandbox_url()  # the in-process sandbox, started now so its faults can be set
    dash.gateway._sandbox.core.faults = FaultConfig(rules=[FaultRule(kind="oversize", rate=1.0)])
    who = dash.tenant("over")
    with dash.client(who) as c:
        r = c.post(
            "/v1/jobs",
            json={"request": {"prompt": "a heron", "duration_s": 4, "resolution": "480p"}},
        )
    assert r.status_code == 202, r.text
    job = dash.wait_job(who, r.json()["id"])
    assert job["state"] == "succeeded", job
    delivery = job["billing"]["delivery"]
    assert delivery["delivered"]["duration_s"] > delivery["priced"]["duration_s"]

    page: Page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page.goto(dash.url + "/")
    page.fill("#api-key", who.key)
    page.click("#key-submit")
    page.locator(f"#jobs tr[data-job-id='{job['id']}']").click()
    billing = page.locator("#d-facts dd.warn")
    expect(billing).to_have_count(1)
    expect(billing).to_contain_text("delivered")
    expect(billing).to_contain_text(f"charged ${job['cost_usd']:.2f}")


def test_page_refuses_a_bad_key(dash: Server, browser: Browser) -> None:
    page = browser.new_page()
    page.goto(dash.url + "/")
    page.fill("#api-key", "vg_not-a-key")
    page.click("#key-submit")
    expect(page.locator("#key-error")).to_contain_text("not valid")
    expect(page.locator("#app")).to_be_hidden()
    assert page.evaluate("localStorage.getItem('vidgate.apiKey')") is None
    page.close()


def _summary(server: Server, tenant: Tenant, **params: str) -> dict[str, Any]:
    with server.client(tenant) as c:
        r = c.get("/v1/dashboard/summary", params=params)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def _wait_all(server: Server, tenant: Tenant, ids: list[str]) -> list[dict[str, Any]]:
    jobs = [server.wait_job(tenant, i) for i in ids]
    assert [j["state"] for j in jobs] == ["succeeded"] * len(ids), jobs
    return jobs


def test_summary_is_scoped_to_the_tenant_and_admin_sees_all(make_server: ServerFactory) -> None:
    srv = make_server()
    a, b = srv.tenant("a"), srv.tenant("b")
    # admin is the key's explicit property: the tenant's name means nothing
    kid, raw = srv.gateway.accounts.create_key("ops", admin=True)
    admin = Tenant("ops", raw, kid)
    kid2, raw2 = srv.gateway.accounts.create_key("admin")
    named_admin = Tenant("admin", raw2, kid2)

    ja = _wait_all(srv, a, [submit_job(srv, a)["id"], submit_job(srv, a)["id"]])
    jb = _wait_all(srv, b, [submit_job(srv, b, policy="fastest")["id"]])

    sa = _summary(srv, a)
    assert sa["tenant"] == a.name
    assert sa["admin"] is False
    assert sa["jobs"]["by_state"]["succeeded"] == 2
    assert sa["jobs"]["total"] == 2
    assert sa["jobs"]["active"] == 0
    spent_a = sum(j["cost_usd"] for j in ja)
    assert sa["cost"]["total_usd"] == pytest.approx(spent_a)
    assert [t["tenant"] for t in sa["cost"]["by_tenant"]] == [a.name]  # never b's
    assert sum(o["clips"] for o in sa["cost"]["by_offering"]) == 2
    assert {o["offering"] for o in sa["cost"]["by_offering"]} == {j["offering_id"] for j in ja}
    assert sa["offerings"]
    assert {"id", "model", "provider"} <= set(sa["offerings"][0])
    assert "best-quality" in sa["form"]["policies"]
    assert "16:9" in sa["form"]["aspect_ratios"]

    sb = _summary(srv, b, offerings="false")
    assert sb["offerings"] == []  # the page asks for the list once, then polls without it
    assert sb["jobs"]["total"] == 1
    assert sb["cost"]["total_usd"] == pytest.approx(jb[0]["cost_usd"])

    impostor = _summary(srv, named_admin)  # a tenant called "admin" is just a tenant
    assert impostor["admin"] is False
    assert impostor["jobs"]["total"] == 0
    assert [t["tenant"] for t in impostor["cost"]["by_tenant"]] == ["admin"]

    sadm = _summary(srv, admin)
    assert sadm["admin"] is True
    assert sadm["jobs"]["by_state"]["succeeded"] == 3
    tenants = {t["tenant"]: t for t in sadm["cost"]["by_tenant"]}
    assert tenants[a.name]["spent_usd"] == pytest.approx(spent_a)
    assert tenants[a.name]["clips"] == 2
    assert tenants[b.name]["spent_usd"] == pytest.approx(jb[0]["cost_usd"])
    assert sadm["cost"]["total_usd"] == pytest.approx(spent_a + jb[0]["cost_usd"])

    # health is the gateway's: the providers that ran jobs are observed and closed
    used = {j["route"]["chosen"]["provider"] for j in ja + jb}
    health = {p["provider"]: p for p in sa["health"]["providers"]}
    for p in used:
        assert health[p]["observed"] is True
        assert health[p]["state"] == "closed"


def test_summary_needs_a_key_and_static_files_are_served(dash: Server) -> None:
    with dash.client() as c:
        r = c.get("/v1/dashboard/summary")
        assert r.status_code == 401
        assert r.json()["code"] == "missing_api_key"
        page = c.get("/")
        assert page.status_code == 200
        assert '<script src="/static/app.js"' in page.text
        assert 'href="/static/style.css"' in page.text
        js = c.get("/static/app.js")
        assert js.status_code == 200
        assert "javascript" in js.headers["content-type"]
        assert "innerHTML" not in js.text  # data only ever goes in as text
        css = c.get("/static/style.css")
        assert css.status_code == 200
        assert css.headers["content-type"].startswith("text/css")
