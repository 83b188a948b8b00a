"""provider_options are governed, not trusted (providers/options.py): through the real HTTP
service (native and OpenAI-format routes) and the library, against the sandbox emulators."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from tests.server.conftest import Server, Tenant, sandbox_settings, start_server
from vidgate.catalog.loader import load_catalog
from vidgate.catalog.schema import Offering
from vidgate.errors import InvalidRequest
from vidgate.gateway import Gateway
from vidgate.net.ssrf import BlockedAddress
from vidgate.providers.base import registry
from vidgate.providers.options import Meaning, fields_for
from vidgate.types import Mode, VideoRequest

CATALOG = load_catalog()
INTERNAL = "http://127.0.0.1:9/probe.png"


def _request(offering: Offering, **kw: Any) -> dict[str, Any]:
    """A text-to-video request this offering can take (so pinning it routes)."""
    caps = offering.capabilities
    spec = caps.durations
    duration = spec.values[0] if spec.values else float(spec.min or 5)
    return {
        "prompt": "a lighthouse at dusk",
        "duration_s": duration,
        "resolution": caps.resolutions[0].value,
        "aspect_ratio": caps.aspect_ratios[0],
        **kw,
    }


def _routable() -> dict[str, Offering]:
    """One routable text-to-video offering per adapter protocol, the first in catalog order."""
    out: dict[str, Offering] = {}
    for o in CATALOG.offerings.values():
        live = o.enabled and o.available_on(date.today())
        if live and o.protocol in registry() and Mode.TEXT_TO_VIDEO in o.capabilities.modes:
            out.setdefault(o.protocol, o)
    return out


PER_PROTOCOL = _routable()
URL_FIELDS = [
    (o.id, name)
    for o in PER_PROTOCOL.values()
    for name, spec in fields_for(registry()[o.protocol], o).items()
    if spec.meaning is Meaning.URL
]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(sandbox_settings(tmp_path_factory.mktemp("options")))
    yield s
    s.stop()


@pytest.fixture
def who(srv: Server) -> Tenant:
    return srv.tenant("opts")


def _post(srv: Server, who: Tenant, offering: Offering, options: dict[str, Any]) -> Any:
    body = {
        "request": _request(offering, provider_options={offering.provider: options}),
        "offerings": [offering.id],
    }
    with srv.client(who) as c:
        return c.post("/v1/jobs", json=body)


def _no_jobs(srv: Server, who: Tenant) -> None:
    with srv.client(who) as c:
        assert c.get("/v1/jobs").json()["data"] == []


def test_every_sandboxed_adapter_is_covered() -> None:
    # the parametrised cases below are built from this table: an adapter missing from it
    # would silently escape the tests
    # (OpenAI's Sora offerings and Veo on the Gemini API are retired in the catalog, so
    # nothing routes to them)
    assert set(PER_PROTOCOL) >= {
        "fal-queue", "replicate", "kling", "luma", "runway", "minimax",
        "byteplus-ark", "xai-video", "vertex-veo",
    }  # fmt: skip
    assert {o.split("-")[-1] for o, _ in URL_FIELDS} >= {"fal", "replicate", "kling"}


@pytest.mark.parametrize("protocol", sorted(PER_PROTOCOL))
def test_a_duration_override_is_refused_naming_the_request_field(
    srv: Server, who: Tenant, protocol: str
) -> None:
    offering = PER_PROTOCOL[protocol]
    r = _post(srv, who, offering, {"duration": 10})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert f"provider_options.{offering.provider}.duration" in detail
    assert "use the request's duration_s instead" in detail
    _no_jobs(srv, who)


@pytest.mark.parametrize(
    ("offering_id", "options", "use"),
    [
        # the case: fal's duration and resolution overrides, billed as 5 s 720p
        ("kling-3.0-fal", {"resolution": "1080p"}, "resolution"),
        ("kling-3.0-fal", {"num_videos": 2}, "one job per request"),
        ("grok-imagine-xai", {"generate_audio": True}, "audio"),
        ("kling-3.0-kling", {"mode": "pro"}, "resolution"),
        ("kling-3.0-kling", {"external_task_id": "x"}, "Idempotency-Key"),
        ("kling-3.0-fal", {"model": "other"}, "model"),
        ("grok-imagine-xai", {"seed": 7}, "seed"),
    ],
)
def test_price_and_route_fields_are_refused(
    srv: Server, who: Tenant, offering_id: str, options: dict[str, Any], use: str
) -> None:
    r = _post(srv, who, CATALOG.offering(offering_id), options)
    assert r.status_code == 422, r.text
    assert f"use the request's {use}" in r.json()["detail"]
    _no_jobs(srv, who)


def test_input_names_an_offering_maps_from_catalog_data_are_refused(
    srv: Server, who: Tenant
) -> None:
    # Wan on Replicate takes no duration input: the clip is num_frames / frames_per_second,
    # names that only its catalog entry knows
    offering = next(
        o
        for o in CATALOG.offerings.values()
        if o.protocol == "replicate" and o.adapter_options.get("input.fps") == "frames_per_second"
    )
    for name, use in (("frames_per_second", "fps"), ("num_frames", "duration_s")):
        r = _post(srv, who, offering, {name: 121})
        assert r.status_code == 422, r.text
        assert f"use the request's {use} instead" in r.json()["detail"]
    _no_jobs(srv, who)


@pytest.mark.parametrize(("offering_id", "field"), URL_FIELDS)
def test_an_internal_url_in_every_url_field_is_refused(
    srv: Server, who: Tenant, offering_id: str, field: str
) -> None:
    offering = CATALOG.offering(offering_id)
    r = _post(srv, who, offering, {field: INTERNAL})
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "blocked_address"
    assert r.json()["detail"].startswith(
        f"provider_options.{offering.provider}.{field} {INTERNAL!r} is not allowed"
    )
    assert "loopback" in r.json()["detail"]
    _no_jobs(srv, who)


def test_a_url_nested_in_a_passed_field_is_checked_too(srv: Server, who: Tenant) -> None:
    shots = [{"index": 1, "prompt": "a", "duration": "5", "image": "http://10.1.2.3/a.png"}]
    r = _post(srv, who, CATALOG.offering("kling-3.0-kling"), {"multi_prompt": shots})
    assert r.status_code == 422, r.text
    assert "10.1.2.3" in r.json()["detail"]
    assert "private" in r.json()["detail"]
    _no_jobs(srv, who)


def test_the_openai_route_applies_the_same_rule(srv: Server, who: Tenant) -> None:
    body = {
        "prompt": "a lighthouse at dusk",
        "vidgate": {
            "offerings": ["kling-3.0-fal"],
            "provider_options": {"fal": {"duration": "10"}},
        },
    }
    with srv.client(who) as c:
        r = c.post("/v1/videos", json=body)
    assert r.status_code == 400, r.text
    assert "use the request's duration_s instead" in r.json()["error"]["message"]
    _no_jobs(srv, who)


def test_unknown_fields_and_providers_are_refused(srv: Server, who: Tenant) -> None:
    r = _post(srv, who, CATALOG.offering("kling-3.0-kling"), {"turbo": True})
    assert r.status_code == 422, r.text
    assert "provider_options.kling.turbo is not an option" in r.json()["detail"]
    with srv.client(who) as c:
        r = c.post(
            "/v1/jobs",
            json={"request": {"prompt": "x", "provider_options": {"klingg": {"a": 1}}}},
        )
    assert r.status_code == 422, r.text
    assert "unknown provider 'klingg'" in r.json()["detail"]
    _no_jobs(srv, who)


def test_an_allowed_field_passes_and_reaches_the_emulator(srv: Server, who: Tenant) -> None:
    offering = CATALOG.offering("kling-3.0-kling")
    r = _post(srv, who, offering, {"cfg_scale": 0.25, "shot_type": "customize"})
    assert r.status_code == 202, r.text
    job = srv.wait_job(who, r.json()["id"])
    assert job["state"] == "succeeded", job
    sandbox = srv.gateway._sandbox
    assert sandbox is not None
    received = [j.params["received"] for j in sandbox.core.store.list("kling")]
    ours = [b for b in received if b.get("cfg_scale") == 0.25]
    assert len(ours) == 1
    assert ours[0]["shot_type"] == "customize"


# -- the library facade, and the catalog's free-form flag -----------------------------------


@pytest.fixture
def free_form_gateway(tmp_path: Path) -> Iterator[Gateway]:
    override = tmp_path / "catalog.yaml"
    override.write_text("offerings:\n  kling-3.0-fal: {free_form_options: true}\n")
    gw = Gateway(sandbox_settings(tmp_path / "home", catalog=override))
    yield gw
    gw.close()


def test_library_submit_refuses_before_any_job_exists(tmp_path: Path) -> None:
    gw = Gateway(sandbox_settings(tmp_path))
    try:
        offering = gw.catalog.offering("kling-3.0-fal")
        bad = VideoRequest(**_request(offering, provider_options={"fal": {"image_url": INTERNAL}}))
        with pytest.raises(BlockedAddress, match=r"provider_options\.fal\.image_url"):
            gw.submit(bad, pinned=[offering.id])
        with pytest.raises(InvalidRequest, match="not an option vidgate passes"):
            gw.submit(
                VideoRequest(**_request(offering, provider_options={"fal": {"steps": 50}})),
                pinned=[offering.id],
            )
        assert gw.store.list(tenant="default") == []
    finally:
        gw.close()


def test_free_form_offerings_pass_unknown_fields_at_the_same_price(
    free_form_gateway: Gateway,
) -> None:
    gw = free_form_gateway
    offering = gw.catalog.offering("kling-3.0-fal")
    plain = gw.submit(VideoRequest(**_request(offering)), pinned=[offering.id])
    extra = {"fal": {"steps": 50, "style": {"preset": "noir"}}}
    job = gw.submit(
        VideoRequest(**_request(offering, provider_options=extra)), pinned=[offering.id]
    )
    assert job.estimated_cost_usd == plain.estimated_cost_usd
    assert job.request.provider_options == extra
    # free-form never opens the priced fields, nor internal addresses anywhere in a value
    for options, error in (
        ({"duration": "10"}, "duration_s"),
        ({"style": {"ref": "http://[::1]/x"}}, "loopback"),
    ):
        req = VideoRequest(**_request(offering, provider_options={"fal": options}))
        with pytest.raises(InvalidRequest, match=error):
            gw.submit(req, pinned=[offering.id])
    # an offering without the flag still refuses the unknown field
    other = gw.catalog.offering("kling-3.0-kling")
    req = VideoRequest(**_request(other, provider_options={"kling": {"steps": 50}}))
    with pytest.raises(InvalidRequest, match="not an option"):
        gw.submit(req, pinned=[other.id])
