"""The service's own behaviour: error formats, route previews, server-sent events, metrics,
health, and the CLI's keys and spend against a running server."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.server.conftest import TERMINAL, Server, ServerFactory, Tenant, drain, submit_job
from tests.test_cli import vidgate

PROBLEM_KEYS = {"type", "title", "status", "detail"}


# -- error formats ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "auth", "status"),
    [
        ("GET", "/v1/jobs/job_00000000000000000000", None, True, 404),
        ("POST", "/v1/jobs", {"request": {}}, True, 422),
        ("POST", "/v1/jobs", {"request": {"prompt": "x"}, "surprise": 1}, True, 422),
        ("POST", "/v1/jobs", {"request": {"prompt": "x", "duration_s": 500}}, True, 422),
        ("POST", "/v1/jobs", {"request": {"prompt": "x"}, "offerings": ["veo-9"]}, True, 422),
        ("GET", "/v1/jobs?limit=0", None, True, 422),
        ("GET", "/v1/jobs", None, False, 401),
        ("POST", "/v1/route", {"request": {"prompt": "x", "resolution": "9k"}}, True, 422),
        ("DELETE", "/v1/jobs", None, True, 405),
        ("GET", "/v1/nothing-here", None, True, 404),
    ],
)
def test_native_errors_are_problem_json(
    server: Server,
    tenant: Tenant,
    method: str,
    path: str,
    body: Any,
    auth: bool,
    status: int,
) -> None:
    with server.client(tenant if auth else None) as c:
        r = c.request(method, path, json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem.keys() >= PROBLEM_KEYS
    assert problem["status"] == status
    assert problem["type"].startswith("https://")
    assert problem["title"]
    assert problem["detail"]
    assert len(problem["detail"]) < 500


def test_validation_problem_names_the_field(server: Server, tenant: Tenant) -> None:
    with server.client(tenant) as c:
        r = c.post("/v1/jobs", json={"request": {"prompt": "x", "aspect_ratio": "wide"}})
    assert r.status_code == 422
    assert r.json()["param"] == "request.aspect_ratio"
    assert "W:H" in r.json()["detail"]


def test_no_route_problem_lists_the_nearest(server: Server, tenant: Tenant) -> None:
    req = {
        "prompt": "x",
        "duration_s": 8,
        "resolution": "4k",
        "audio": "required",
        "constraints": {"max_cost_usd": 0.05},
    }
    with server.client(tenant) as c:
        r = c.post("/v1/jobs", json={"request": req})
    assert r.status_code == 422
    assert r.json()["code"] == "no_route"
    assert "under $0.05" in r.json()["detail"]
    assert r.json()["nearest"]


@pytest.mark.parametrize(
    ("method", "path", "body", "auth", "status", "code"),
    [
        ("GET", "/v1/videos/job_00000000000000000000", None, True, 404, "not_found"),
        ("POST", "/v1/videos", {"model": "auto"}, True, 400, "missing_prompt"),
        ("POST", "/v1/videos", {"prompt": "x", "seconds": "abc"}, True, 400, "invalid_seconds"),
        ("POST", "/v1/videos", {"prompt": "x", "size": "big"}, True, 400, "invalid_size"),
        ("POST", "/v1/videos", {"prompt": "x", "model": "sora-9"}, True, 400, "model_not_found"),
        ("GET", "/v1/videos?limit=1000", None, True, 400, "invalid_request"),
        ("GET", "/v1/videos", None, False, 401, "missing_api_key"),
    ],
)
def test_openai_routes_use_the_openai_envelope(
    server: Server,
    tenant: Tenant,
    method: str,
    path: str,
    body: Any,
    auth: bool,
    status: int,
    code: str,
) -> None:
    with server.client(tenant if auth else None) as c:
        r = c.request(method, path, json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["code"] == code
    assert err["type"] in ("invalid_request_error", "insufficient_quota")
    assert err["message"]


# -- routing preview ------------------------------------------------------------------------


def test_route_preview_ranks_and_explains_rejections(server: Server, tenant: Tenant) -> None:
    with server.client(tenant) as c:
        r = c.post(
            "/v1/route",
            json={
                "request": {
                    "prompt": "x",
                    "duration_s": 8,
                    "resolution": "1080p",
                    "audio": "required",
                }
            },
        )
    assert r.status_code == 200, r.text
    plan = r.json()
    costs = [o["estimated_cost_usd"] for o in plan["ranked"]]
    assert costs == sorted(costs)  # cheapest first
    assert plan["chosen"]["offering"] == plan["ranked"][0]["offering"]
    assert all(o["audio"] for o in plan["ranked"])
    reasons = {x["offering"]: x["reasons"] for x in plan["rejected"]}
    assert reasons
    assert all(isinstance(why, list) and why for why in reasons.values())
    assert any("retired" in w for oid, why in reasons.items() if "sora" in oid for w in why)
    ranked = {o["offering"] for o in plan["ranked"]}
    assert not ranked & set(reasons)
    assert len(ranked) + len(reasons) == len(server.gateway.catalog.offerings)


# -- server-sent events ---------------------------------------------------------------------


def test_events_stream_until_the_job_is_terminal(server: Server, tenant: Tenant) -> None:
    job = submit_job(server, tenant, "a paper crane unfolds")
    events: list[dict[str, Any]] = []
    with server.client(tenant) as c, c.stream("GET", f"/v1/jobs/{job['id']}/events") as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in r.iter_lines():  # ends when the server ends the stream
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                assert kind == "job"
                events.append(json.loads(line.removeprefix("data: ")))
    assert events
    assert all(e["id"] == job["id"] for e in events)
    assert events[-1]["state"] == "succeeded"
    assert all(e["state"] not in TERMINAL for e in events[:-1])
    seen = [(e["state"], e["progress"], len(e["attempts"])) for e in events]
    assert len(seen) == len(set(seen))  # an event per change, no repeats
    assert "uri" not in events[-1]["assets"][0]  # where we keep files is ours


def test_events_of_a_finished_job_end_at_once(server: Server, tenant: Tenant) -> None:
    job = submit_job(server, tenant)
    server.wait_job(tenant, job["id"])
    with server.client(tenant) as c:
        r = c.get(f"/v1/jobs/{job['id']}/events")
    data = [ln for ln in r.text.splitlines() if ln.startswith("data: ")]
    assert len(data) == 1
    assert json.loads(data[0].removeprefix("data: "))["state"] == "succeeded"


# -- metrics and health ----------------------------------------------------------------------


def metrics(server: Server) -> dict[str, list[Any]]:
    text = httpx.get(server.url + "/metrics").text
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_metrics_after_a_job_with_a_failed_attempt(make_server: ServerFactory) -> None:
    server = make_server()
    tenant = server.tenant()
    gw = server.gateway
    with server.client(tenant) as c:
        plan = c.post("/v1/route", json={"request": {"prompt": "x", "duration_s": 5}}).json()
    first, second = (o["offering"] for o in plan["ranked"][:2])
    offering = gw.catalog.offerings[first]
    fault = {
        "kind": "unavailable",
        "rate": 1.0,
        "protocol": offering.protocol,
        "model": offering.provider_model_id,
    }
    assert httpx.put(gw.sandbox_url() + "/sandbox/faults", json={"rules": [fault]}).is_success

    job = submit_job(server, tenant, offerings=[first, second])
    done = server.wait_job(tenant, job["id"])
    assert done["state"] == "succeeded", done["error"]
    assert [a["offering_id"] for a in done["attempts"]] == [first, second]
    failed_code = done["attempts"][0]["error"]["code"]

    m = metrics(server)

    def value(family: str, sample: str, /, **labels: str) -> float:
        hits = [s.value for s in m[family] if s.name == sample and s.labels == labels]
        assert len(hits) == 1, (sample, labels, m[family])
        return float(hits[0])

    assert (
        value(
            "vidgate_jobs_finished",
            "vidgate_jobs_finished_total",
            offering=second,
            state="succeeded",
        )
        == 1
    )
    assert value("vidgate_cost_usd", "vidgate_cost_usd_total", offering=second) == pytest.approx(
        done["cost_usd"]
    )
    assert (
        value("vidgate_job_latency_seconds", "vidgate_job_latency_seconds_count", offering=second)
        == 1
    )
    assert (
        value("vidgate_job_latency_seconds", "vidgate_job_latency_seconds_sum", offering=second) > 0
    )
    assert (
        value(
            "vidgate_provider_errors",
            "vidgate_provider_errors_total",
            offering=first,
            code=failed_code,
        )
        == 1
    )
    assert value("vidgate_breaker_open", "vidgate_breaker_open", kind="offering", name=second) == 0
    assert value("vidgate_jobs", "vidgate_jobs", state="succeeded") == 1
    assert value("vidgate_jobs_submitted", "vidgate_jobs_submitted_total", offering=first) == 1


async def test_job_gauges_follow_the_jobs(make_server: ServerFactory) -> None:
    server = make_server(run_worker=False)
    tenant = server.tenant()
    submit_job(server, tenant)

    def gauge(state: str) -> float:
        (hit,) = [s.value for s in metrics(server)["vidgate_jobs"] if s.labels["state"] == state]
        return float(hit)

    assert gauge("queued") == 1
    assert gauge("succeeded") == 0
    await drain(server.gateway.settings)
    assert gauge("queued") == 0  # not the count it had at the last scrape
    assert gauge("succeeded") == 1


def test_health_and_readiness(server: Server) -> None:
    health = httpx.get(server.url + "/healthz")
    assert health.status_code == 200
    assert health.json()["ok"] is True
    ready = httpx.get(server.url + "/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["ready"] is True
    assert body["sandbox"] is True
    assert body["offerings"] == len(server.gateway.catalog.offerings)


# -- the CLI against a running server --------------------------------------------------------


def test_cli_key_works_against_the_server_and_spend_reports(server: Server) -> None:
    home = server.gateway.settings.home
    tenant = "cli-" + server.tenant().name  # a fresh name
    proc = vidgate(
        "keys", "create", "--tenant", tenant, "--budget", "5", "--json", home=home, sandbox=False
    )
    assert proc.returncode == 0, proc.stderr
    created = json.loads(proc.stdout)
    assert created["tenant"] == tenant
    assert created["budget_usd"] == 5
    key = created["key"]
    assert key.startswith("vg_")

    cli_tenant = Tenant(tenant, key, created["id"])
    job = submit_job(server, cli_tenant, "a bonsai in the wind")
    done = server.wait_job(cli_tenant, job["id"])
    assert done["state"] == "succeeded"

    proc = vidgate("spend", "--tenant", tenant, "--json", home=home, sandbox=False)
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)
    assert row["tenant"] == tenant
    assert row["budget_usd"] == 5
    assert row["spent_usd"] == pytest.approx(done["cost_usd"])
    assert row["reserved_usd"] == pytest.approx(0, abs=1e-9)
    # by offering: the charge and clip count (beside them, reported vs estimated figures)
    [(oid, entry)] = row["by_offering"].items()
    assert oid == done["offering_id"]
    assert (entry["usd"], entry["clips"]) == (pytest.approx(done["cost_usd"]), 1)
    with server.client(cli_tenant) as c:
        assert c.get("/v1/spend").json()["spent_usd"] == pytest.approx(row["spent_usd"])
