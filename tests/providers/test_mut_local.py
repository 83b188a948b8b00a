"""A self-hosted route, one behaviour at a time, against a scripted model server over real
loopback HTTP: what the servers say they serve and at what measured speed, the price a
self-hosted offering gets from it, which server takes a job (capacity and queue), every
answer of a server in the error tree, and what a finished job reports it cost."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from vidgate.catalog.loader import Catalog, load_catalog
from vidgate.errors import (
    AmbiguousSubmission,
    AuthFailed,
    CapabilityMismatch,
    ContentRejected,
    InvalidRequest,
    ProviderProtocolError,
    ProviderUnavailable,
    RateLimited,
    VidgateError,
)
from vidgate.providers.base import ProviderJob, RemoteState
from vidgate.providers.local_diffusers import LocalDiffusers, adjustments, failure
from vidgate.providers.local_fleet import (
    ENV,
    PROTOCOL,
    TTL_S,
    Fleet,
    Served,
    configured,
    discover,
    discover_sync,
    normalise,
    parse_models,
    self_hosted_catalog,
    servers_for,
    unavailable_reason,
    with_servers,
)
from vidgate.sandbox.app import LoopbackServer
from vidgate.settings import Credentials
from vidgate.types import Mode, Resolution, VideoRequest

CATALOG = load_catalog()
WAN = CATALOG.offering("wan-2.1-self-hosted")  # model wan-2.1, 5 s clips at 24 fps
LTX = CATALOG.offering("ltx-2-self-hosted")
WAN_ID = WAN.provider_model_id


# --- a scripted model server ---------------------------------------------------------------


@dataclass
class Script:
    """What the server answers, set per test; what it was sent, kept."""

    models: Any = field(default_factory=lambda: {"data": []})
    models_status: int = 200
    create: tuple[int, Any, dict[str, str]] = (200, {"id": "vid_1"}, {})
    video: tuple[int, Any] = (200, {"status": "queued"})
    cancel: tuple[int, Any] = (200, {})
    cancel_delay_s: float = 0.0
    create_delay_s: float = 0.0
    models_delay_s: float = 0.0
    sent: list[dict[str, Any]] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)
    model_reads: int = 0


def _answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    if isinstance(body, str):
        return Response(body, status_code=status, headers=headers)
    return JSONResponse(body, status_code=status, headers=headers)


class ModelServer:
    def __init__(self) -> None:
        self.script = Script()
        app = FastAPI()

        @app.get("/v1/models")
        async def models() -> Response:
            self.script.model_reads += 1
            await asyncio.sleep(self.script.models_delay_s)
            return _answer(self.script.models_status, self.script.models)

        @app.post("/v1/videos")
        async def create(request: Request) -> Response:
            self.script.sent.append(
                {"json": await request.json(), "key": request.headers.get("idempotency-key")}
            )
            await asyncio.sleep(self.script.create_delay_s)
            return _answer(*self.script.create)

        @app.get("/v1/videos/{vid}")
        async def video(vid: str) -> Response:
            return _answer(*self.script.video)

        @app.post("/v1/videos/{vid}/cancel")
        async def cancel(vid: str) -> Response:
            self.script.cancels.append(vid)
            await asyncio.sleep(self.script.cancel_delay_s)
            return _answer(*self.script.cancel)

        self.loop = LoopbackServer(app).start()
        self.url = self.loop.url
        self.root = f"{self.url}/v1"

    def reset(self) -> Script:
        self.script = Script()
        return self.script


def model(
    mid: str = WAN_ID,
    *,
    catalog_model: Any = "wan-2.1",
    usd_per_hour: Any = 3.6,
    cs: Any = None,
    depth: Any = 0,
    max_depth: Any = 4,
    running: Any = None,
    modes: Any = ("text_to_video",),
    **extra: Any,
) -> dict[str, Any]:
    m: dict[str, Any] = {
        "id": mid,
        "object": "model",
        "catalog_model": catalog_model,
        "usd_per_hour": usd_per_hour,
        "modes": list(modes) if modes is not None else None,
        "stats": {"compute_s_per_video_s": cs},
        "queue": {"depth": depth, "max_depth": max_depth, "running": running},
    }
    m.update(extra)
    return m


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[ModelServer, ModelServer]]:
    a, b = ModelServer(), ModelServer()
    yield a, b
    a.loop.stop()
    b.loop.stop()


@pytest.fixture
def one(servers: tuple[ModelServer, ModelServer]) -> ModelServer:
    servers[0].reset()
    servers[1].reset()
    return servers[0]


@pytest.fixture
def two(servers: tuple[ModelServer, ModelServer]) -> tuple[ModelServer, ModelServer]:
    servers[0].reset()
    servers[1].reset()
    return servers


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    Fleet.forget()
    yield
    Fleet.forget()


def adapter(http: httpx.AsyncClient, *urls: str) -> LocalDiffusers:
    return LocalDiffusers(client=http, credentials=Credentials({ENV: ",".join(urls)}))


def req(**kw: Any) -> VideoRequest:
    body: dict[str, Any] = {
        "prompt": "a lighthouse",
        "duration_s": 5,
        "resolution": Resolution.R480P,
        "aspect_ratio": "16:9",
    }
    body.update(kw)
    return VideoRequest(**body)


def job_on(server: ModelServer, remote_id: str = "vid_1") -> ProviderJob:
    return ProviderJob(
        protocol=PROTOCOL, offering_id=WAN.id, remote_id=remote_id, base_url=server.root
    )


def served(**kw: Any) -> Served:
    base: dict[str, Any] = {
        "server": "http://s/v1",
        "id": WAN_ID,
        "catalog_model": "wan-2.1",
        "modes": ("text_to_video",),
        "usd_per_hour": 3.6,
        "compute_s_per_video_s": None,
        "depth": 0,
        "max_depth": 4,
        "running": False,
    }
    base.update(kw)
    return Served(**base)


# --- which servers -------------------------------------------------------------------------


def test_a_server_url_is_its_v1_root_whatever_the_user_typed() -> None:
    assert normalise("http://gpu:8100") == "http://gpu:8100/v1"
    assert normalise(" http://gpu:8100/ ") == "http://gpu:8100/v1"
    assert normalise("http://gpu:8100/v1/") == "http://gpu:8100/v1"
    assert normalise("http://gpu:8100/v1") == "http://gpu:8100/v1"


def test_the_configured_list_drops_blanks_the_sandbox_and_repeats_in_order() -> None:
    assert configured(None) == []
    assert configured("") == []
    assert configured("sandbox") == []
    assert configured(" http://b:1 , sandbox,, http://a:1/v1,http://b:1/") == [
        "http://b:1/v1",
        "http://a:1/v1",
    ]


def test_sandbox_adds_the_emulator_only_in_sandbox_mode() -> None:
    assert servers_for("sandbox", lambda: "http://sb:9") == ["http://sb:9/local-diffusers/v1"]
    assert servers_for("http://a:1, sandbox ", lambda: "http://sb:9") == [
        "http://a:1/v1",
        "http://sb:9/local-diffusers/v1",
    ]
    assert servers_for("http://a:1,sandbox", lambda: "http://sb:9") == [
        "http://a:1/v1",
        "http://sb:9/local-diffusers/v1",
    ]
    assert servers_for("sandbox") == []
    assert servers_for("http://a:1", lambda: "http://sb:9") == ["http://a:1/v1"]
    assert servers_for(None, lambda: "http://sb:9") == []
    assert servers_for("", lambda: "http://sb:9") == []


def test_no_server_configured_routes_on_the_catalog_as_it_is() -> None:
    assert self_hosted_catalog(CATALOG, None) is CATALOG
    assert self_hosted_catalog(CATALOG, "sandbox") is CATALOG


# --- what a server says it serves ------------------------------------------------------------


def test_a_models_answer_becomes_what_each_server_serves() -> None:
    body = {
        "data": [
            model(cs=30.0, depth=2, max_depth=3, running={"id": "vid_x"}),
            model("ltx", catalog_model=7, usd_per_hour="cheap", modes=None, cs=0),
            {"object": "model"},  # no id: skipped
            "junk",
            model("loading", loaded=False),  # still loading: skipped
            model("ready", loaded=True, cs=-1, depth=True, max_depth=None),
            {"id": "bare", "stats": "x", "queue": [1]},
        ]
    }
    wan, ltx, ready, bare = parse_models("http://s/v1", body)
    assert wan == Served(
        server="http://s/v1",
        id=WAN_ID,
        catalog_model="wan-2.1",
        modes=("text_to_video",),
        usd_per_hour=3.6,
        compute_s_per_video_s=30.0,
        depth=2,
        max_depth=3,
        running=True,
    )
    assert wan.raw["id"] == WAN_ID
    assert (ltx.catalog_model, ltx.usd_per_hour, ltx.modes) == (None, 0.0, ())
    assert ltx.compute_s_per_video_s is None  # 0 is not a measurement
    assert ltx.running is False
    assert ready.id == "ready"
    assert ready.compute_s_per_video_s is None
    assert (ready.depth, ready.max_depth) == (0, 0)  # a bool is not a count
    assert bare == served(
        server="http://s/v1",
        id="bare",
        catalog_model=None,
        modes=(),
        usd_per_hour=0.0,
        max_depth=0,
    )
    assert parse_models("http://s/v1", {}) == []
    assert parse_models("http://s/v1", {"data": None}) == []


def test_integer_figures_are_taken_as_numbers() -> None:
    [m] = parse_models("http://s/v1", {"data": [model(usd_per_hour=2, cs=12, depth=1)]})
    assert (m.usd_per_hour, m.compute_s_per_video_s, m.depth) == (2.0, 12.0, 1)


def test_a_servers_load_is_its_queue_plus_the_job_on_the_device() -> None:
    assert served(depth=2, running=False).load == 2
    assert served(depth=2, running=True).load == 3
    assert served(depth=0, running=True).load == 1


def test_a_server_is_full_at_its_max_depth_and_never_without_one() -> None:
    assert served(depth=3, max_depth=4).full is False
    assert served(depth=4, max_depth=4).full is True
    assert served(depth=5, max_depth=4).full is True
    assert served(depth=9, max_depth=0).full is False


def test_a_second_of_video_costs_the_gpu_hour_times_the_measured_compute() -> None:
    assert served(usd_per_hour=3.6, compute_s_per_video_s=30.0).usd_per_video_s == (
        pytest.approx(0.03)
    )
    assert served(usd_per_hour=7.2, compute_s_per_video_s=5.0).usd_per_video_s == (
        pytest.approx(0.01)
    )
    assert served(compute_s_per_video_s=None).usd_per_video_s is None


def test_a_server_serves_an_offering_by_catalog_model_or_by_repo_id() -> None:
    assert served(catalog_model="wan-2.1", id="other").serves(WAN)
    assert served(catalog_model=None, id=WAN_ID).serves(WAN)
    assert not served(catalog_model="ltx-2", id="other").serves(WAN)


# --- the price of a self-hosted offering -----------------------------------------------------


def test_a_served_offering_is_enabled_and_priced_from_the_dearest_measured_server() -> None:
    day = date(2026, 3, 1)
    fast = served(server="http://a/v1", compute_s_per_video_s=10.0, usd_per_hour=3.6)
    slow = served(server="http://b/v1", compute_s_per_video_s=40.0, usd_per_hour=1.8)
    fresh = served(server="http://c/v1", id="wan-c", compute_s_per_video_s=None)
    other = served(server="http://d/v1", id="x", catalog_model="ltx-9")
    cat = with_servers(CATALOG, [fast, slow, fresh, other], today=day)
    wan = cat.offering(WAN.id)
    assert wan.enabled is True
    [price] = wan.price
    assert price.usd == pytest.approx(1.8 / 3600 * 40.0)  # 0.02 > 0.01
    assert price.source.doc == "user-config"
    assert price.source.section == "model server /v1/models stats"
    assert price.source.as_of == day
    assert price.source.note == (
        f"http://b/v1 ({WAN_ID}): 40 s of compute per second of video at $1.8/h"
    )
    assert wan.adapter_options["served_by"] == (
        f"http://a/v1 ({WAN_ID}), http://b/v1 ({WAN_ID}), http://c/v1 (wan-c)"
    )
    # what no server serves stays as the catalog has it
    assert cat.offering(LTX.id) == CATALOG.offering(LTX.id)
    api = next(o for o in CATALOG.data.offerings if o.protocol != PROTOCOL)
    assert cat.offering(api.id) == api


def test_a_server_that_charges_nothing_prices_its_seconds_at_nothing() -> None:
    free = served(server="http://a/v1", usd_per_hour=0.0, compute_s_per_video_s=10.0)
    assert free.usd_per_video_s == 0.0
    [price] = with_servers(CATALOG, [free]).offering(WAN.id).price
    assert price.usd == 0.0
    paid = served(server="http://b/v1", usd_per_hour=3.6, compute_s_per_video_s=10.0)
    [price] = with_servers(CATALOG, [free, paid]).offering(WAN.id).price
    assert price.usd == pytest.approx(0.01)
    assert price.source.note is not None
    assert price.source.note.startswith("http://b/v1 ")


def test_until_a_server_measured_its_speed_the_seed_price_stands() -> None:
    cat = with_servers(CATALOG, [served(compute_s_per_video_s=None)])
    wan = cat.offering(WAN.id)
    assert wan.enabled is True
    assert wan.price == WAN.price
    assert wan.adapter_options["served_by"] == f"http://s/v1 ({WAN_ID})"


def test_an_offering_marked_unavailable_is_never_enabled_by_a_server() -> None:
    data = CATALOG.data.model_copy(
        update={
            "offerings": [
                o.model_copy(update={"adapter_options": {"unavailable": "licence"}})
                if o.id == WAN.id
                else o
                for o in CATALOG.data.offerings
            ]
        }
    )
    cat = Catalog(data)
    assert unavailable_reason(cat.offering(WAN.id)) == "licence"
    assert unavailable_reason(WAN) is None
    out = with_servers(cat, [served(compute_s_per_video_s=10.0)])
    assert out.offering(WAN.id).enabled is False
    assert out.offering(WAN.id).price == WAN.price


def test_the_gateway_catalog_comes_from_what_the_servers_answer_now(one: ModelServer) -> None:
    one.script.models = {"data": [model(cs=20.0, usd_per_hour=3.6)]}
    cat = self_hosted_catalog(CATALOG, one.url)
    wan = cat.offering(WAN.id)
    assert wan.enabled
    assert wan.price[0].usd == pytest.approx(0.02)
    assert wan.price[0].source.as_of == date.today()


async def test_discovery_reads_every_answering_server_afresh(
    two: tuple[ModelServer, ModelServer], http: httpx.AsyncClient
) -> None:
    a, b = two
    a.script.models = {"data": [model()]}
    b.script.models_status = 500
    got = await discover(http, [a.url, b.url, "http://127.0.0.1:9"])
    assert [(s.server, s.id) for s in got] == [(a.root, WAN_ID)]
    a.script.models = {"data": [model(), model("ltx")]}
    assert len(await discover(http, [a.url])) == 2  # not cached
    # from inside a running event loop too (catalog loading in an async service)
    assert [s.id for s in discover_sync([a.url])] == [WAN_ID, "ltx"]


def test_discovery_at_start_up_waits_at_most_three_seconds_for_a_server(
    one: ModelServer,
) -> None:
    one.script.models = {"data": [model()]}
    one.script.models_delay_s = 3.6
    assert discover_sync([one.url]) == []  # gave up: the gateway starts without it
    one.script.models_delay_s = 0.0
    assert len(discover_sync([one.url], timeout_s=1.0)) == 1


def test_discovery_from_synchronous_code(one: ModelServer) -> None:
    one.script.models = {"data": [model()]}
    assert [s.server for s in discover_sync([one.url])] == [one.root]


# --- the fleet's view, cached -----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


async def test_an_answer_is_trusted_for_the_ttl_then_read_again(
    one: ModelServer, http: httpx.AsyncClient
) -> None:
    assert TTL_S == 2.0
    clock = Clock()
    fleet = Fleet(http, [one.url], clock=clock)
    assert fleet.servers == [one.root]
    one.script.models = {"data": [model(depth=0)]}
    [m] = (await fleet.models())[0]
    assert m.depth == 0
    one.script.models = {"data": [model(depth=3)]}
    clock.t += 1.999
    assert (await fleet.models())[0][0].depth == 0
    assert one.script.model_reads == 1
    clock.t = 102.0  # exactly the TTL later: read again
    assert (await fleet.models())[0][0].depth == 3
    assert one.script.model_reads == 2
    Fleet.forget()
    await fleet.models()
    assert one.script.model_reads == 3


async def test_a_fleet_with_no_ttl_reads_every_time(
    one: ModelServer, http: httpx.AsyncClient
) -> None:
    one.script.models = {"data": [model()]}
    fleet = Fleet(http, [one.url], ttl_s=0.0)
    await fleet.models()
    await fleet.models()
    assert one.script.model_reads == 2


async def test_servers_that_fail_say_why_and_the_rest_still_serve(
    two: tuple[ModelServer, ModelServer], http: httpx.AsyncClient
) -> None:
    a, b = two
    a.script.models_status = 503
    b.script.models = {"data": [model()]}
    fleet = Fleet(http, [a.url, b.url])
    got, down = await fleet.models()
    assert [s.server for s in got] == [b.root]
    assert down == [f"{a.root}: model server {a.root} answered 503 to /v1/models"]


async def test_a_server_answering_400_is_down_too(
    one: ModelServer, http: httpx.AsyncClient
) -> None:
    one.script.models_status = 400
    _, down = await Fleet(http, [one.url]).models()
    assert down == [f"{one.root}: model server {one.root} answered 400 to /v1/models"]


async def test_a_server_loading_some_models_serves_the_loaded_ones(
    one: ModelServer, http: httpx.AsyncClient
) -> None:
    one.script.models = {"data": [model(), model("ltx", loaded=False)]}
    got, down = await Fleet(http, [one.url]).models()
    assert [s.id for s in got] == [WAN_ID]
    assert down == []
    one.script.models = {"data": [model("ltx", loaded=False)]}
    Fleet.forget()
    got, down = await Fleet(http, [one.url]).models()
    assert got == []
    assert down == [f"{one.root}: model server {one.root} is still loading its pipeline"]


async def test_a_server_serving_nothing_is_up_not_down(
    one: ModelServer, http: httpx.AsyncClient
) -> None:
    one.script.models = {"data": []}
    assert await Fleet(http, [one.url]).models() == ([], [])
    Fleet.forget()
    one.script.models = "not json"
    assert await Fleet(http, [one.url]).models() == ([], [])


# --- which server takes a job ---------------------------------------------------------------


async def test_the_least_loaded_server_takes_the_job(
    two: tuple[ModelServer, ModelServer], http: httpx.AsyncClient
) -> None:
    a, b = two
    a.script.models = {"data": [model(depth=1, running={"id": "v"})]}  # load 2
    b.script.models = {"data": [model(depth=1)]}  # load 1
    got = await Fleet(http, [a.url, b.url]).choose(WAN, "text_to_video")
    assert got.server == b.root


async def test_equal_load_goes_to_the_first_listed(
    two: tuple[ModelServer, ModelServer], http: httpx.AsyncClient
) -> None:
    a, b = two
    a.script.models = {"data": [model(depth=1)]}
    b.script.models = {"data": [model(depth=1)]}
    assert (await Fleet(http, [b.url, a.url]).choose(WAN, "text_to_video")).server == b.root
    Fleet.forget()
    assert (await Fleet(http, [a.url, b.url]).choose(WAN, "text_to_video")).server == a.root


async def test_a_full_server_takes_a_job_only_when_every_one_is_full(
    two: tuple[ModelServer, ModelServer], http: httpx.AsyncClient
) -> None:
    a, b = two
    a.script.models = {"data": [model(depth=2, max_depth=2)]}  # full, load 2
    b.script.models = {"data": [model(depth=3, max_depth=5, running={"id": "v"})]}  # load 4
    assert (await Fleet(http, [a.url, b.url]).choose(WAN, "text_to_video")).server == b.root
    Fleet.forget()
    a.script.models = {"data": [model(depth=2, max_depth=2)]}
    b.script.models = {"data": [model(depth=1, max_depth=1)]}
    assert (await Fleet(http, [a.url, b.url]).choose(WAN, "text_to_video")).server == b.root


async def test_only_a_server_with_the_mode_takes_the_job(
    two: tuple[ModelServer, ModelServer], http: httpx.AsyncClient
) -> None:
    a, b = two
    a.script.models = {"data": [model(modes=["text_to_video"])]}
    b.script.models = {"data": [model(modes=["text_to_video", "image_to_video"], depth=3)]}
    got = await Fleet(http, [a.url, b.url]).choose(WAN, "image_to_video")
    assert got.server == b.root
    Fleet.forget()
    b.script.models = {"data": [model(modes=[], depth=3)]}  # no modes listed: any
    assert (await Fleet(http, [a.url, b.url]).choose(WAN, "image_to_video")).server == b.root


async def test_a_model_no_server_has_names_what_they_do_serve(
    one: ModelServer, http: httpx.AsyncClient
) -> None:
    one.script.models = {
        "data": [model("ltx", catalog_model="ltx-2"), model("z", catalog_model=None)]
    }
    with pytest.raises(CapabilityMismatch) as e:
        await Fleet(http, [one.url]).choose(WAN, "image_to_video")
    assert e.value.message == (
        "no configured model server serves wan-2.1 for image-to-video (offering "
        f"{WAN.id}); they serve: ltx (ltx-2), z (None). Start one with `vidgate model serve` "
        f"and list it in {ENV}"
    )
    assert e.value.provider == PROTOCOL
    Fleet.forget()
    one.script.models = {"data": []}
    with pytest.raises(CapabilityMismatch, match=r"they serve: nothing\. Start"):
        await Fleet(http, [one.url]).choose(WAN, "text_to_video")


async def test_with_a_server_down_a_missing_model_is_not_final(
    two: tuple[ModelServer, ModelServer], http: httpx.AsyncClient
) -> None:
    a, b = two
    a.script.models_status = 502
    b.script.models = {"data": [model("ltx", catalog_model="ltx-2")]}
    with pytest.raises(ProviderUnavailable) as e:
        await Fleet(http, [a.url, b.url]).choose(WAN, "text_to_video")
    assert e.value.message == (
        f"no model server answered with wan-2.1 ({a.root}: model server {a.root} answered "
        "502 to /v1/models)"
    )
    assert e.value.retryable


async def test_every_silent_server_is_named_in_the_outage(
    two: tuple[ModelServer, ModelServer], http: httpx.AsyncClient
) -> None:
    a, b = two
    a.script.models_status = 500
    b.script.models_status = 503
    with pytest.raises(ProviderUnavailable) as e:
        await Fleet(http, [a.url, b.url]).choose(WAN, "text_to_video")
    assert e.value.message == (
        f"no model server answered with wan-2.1 ({a.root}: model server {a.root} answered 500 "
        f"to /v1/models; {b.root}: model server {b.root} answered 503 to /v1/models)"
    )
    assert e.value.provider == PROTOCOL


async def test_a_job_just_sent_counts_against_its_server_until_the_next_read(
    two: tuple[ModelServer, ModelServer], http: httpx.AsyncClient
) -> None:
    a, b = two
    a.script.models = {"data": [model(), model("ltx", catalog_model="ltx-2")]}
    b.script.models = {"data": [model(depth=1)]}
    fleet = Fleet(http, [a.url, b.url])
    first = await fleet.choose(WAN, "text_to_video")
    assert first.server == a.root
    fleet.note_submitted(first)
    again = await fleet.choose(WAN, "text_to_video")
    assert (again.server, again.depth) == (a.root, 1)  # 1 each: the first listed
    fleet.note_submitted(again)
    second = await fleet.choose(WAN, "text_to_video")
    assert second.server == b.root  # a now has 2 waiting, b 1
    assert second.depth == 1
    got, _ = await fleet.models()
    depths = {(s.server, s.id): s.depth for s in got}
    # only the model sent to on that server counts the job
    assert depths == {(a.root, WAN_ID): 2, (a.root, "ltx"): 0, (b.root, WAN_ID): 1}
    # a server with no cached answer, or a failed one, has nothing to count
    fleet.note_submitted(served(server="http://nowhere/v1"))
    a.script.models_status = 500
    Fleet.forget()
    await fleet.models()
    fleet.note_submitted(first)
    assert (await fleet.models())[1] != []


# --- the adapter: what it asks a server -------------------------------------------------------


def test_only_text_and_image_to_video_are_taken() -> None:
    a = LocalDiffusers(client=httpx.AsyncClient(), credentials=Credentials({}))
    a.check(req(), WAN)
    with pytest.raises(CapabilityMismatch) as e:
        a.check(
            req(
                mode=Mode.EXTEND,
                references=[{"role": "source_video", "kind": "video", "url": "https://x/v.mp4"}],
            ),
            WAN,
        )
    assert e.value.message == ("the model server takes text-to-video or image-to-video, not extend")
    assert e.value.provider == PROTOCOL
    i2v = req(
        mode=Mode.IMAGE_TO_VIDEO,
        references=[{"role": "first_frame", "url": "data:image/png;base64,AAAA"}],
    )
    a.check(i2v, LTX)  # an inline first frame is fine
    url = req(
        mode=Mode.IMAGE_TO_VIDEO,
        references=[{"role": "first_frame", "url": "https://example.com/a.png"}],
    )
    with pytest.raises(CapabilityMismatch) as e:
        a.check(url, LTX)
    assert e.value.message == (
        "the model server takes its first frame inline: give the reference as a data: URL "
        "(data:image/png;base64,...)"
    )
    assert e.value.provider == PROTOCOL


def test_the_create_body_names_the_model_and_what_the_request_asks() -> None:
    a = LocalDiffusers(client=httpx.AsyncClient(), credentials=Credentials({}))
    body = a.body(req(duration_s=4, seed=9, negative_prompt="blur"), WAN, "repo/wan")
    assert body == {
        "model": "repo/wan",
        "prompt": "a lighthouse",
        "seconds": 5,
        "size": "854x480",
        "fps": req().fps,
        "negative_prompt": "blur",
        "seed": 9,
        "shape": "round",
    }
    frame = "data:image/png;base64,AAAA"
    i2v = req(
        mode=Mode.IMAGE_TO_VIDEO,
        references=[{"role": "first_frame", "url": frame}],
        provider_options={"self-hosted": {"steps": 4, "shape": "exact"}},
    )
    body = a.body(i2v, LTX, "ltx")
    assert body["input_reference"] == frame
    assert body["steps"] == 4
    assert body["shape"] == "exact"  # the user's choice wins
    assert "input_reference" not in a.body(req(), WAN, "w")


async def test_a_job_is_created_on_the_chosen_server_with_its_key(
    two: tuple[ModelServer, ModelServer], http: httpx.AsyncClient
) -> None:
    a, b = two
    a.script.models = {"data": [model(depth=2)]}
    b.script.models = {"data": [model("served-wan", depth=0)]}
    adj = [{"field": "width", "requested": 854, "used": 848}]
    b.script.create = (200, {"id": "vid_42", "adjustments": adj}, {})
    ad = adapter(http, a.url, b.url)
    job = await ad.submit(req(), WAN, idempotency_key="k-1")
    assert job.protocol == PROTOCOL
    assert job.offering_id == WAN.id
    assert job.remote_id == "vid_42"
    assert job.base_url == b.root
    assert job.extra["model"] == "served-wan"
    assert adjustments(job) == adj
    [sent] = b.script.sent
    assert sent["key"] == "k-1"
    assert sent["json"]["model"] == "served-wan"
    assert a.script.sent == []
    # the job just sent counts: b now has one waiting, a has two, so b again
    b.script.create = (200, {"id": "vid_43"}, {})
    again = await ad.submit(req(), WAN, idempotency_key="k-2")
    assert again.base_url == b.root
    assert adjustments(again) == []


async def test_a_create_without_a_video_id_is_a_protocol_error(
    one: ModelServer, http: httpx.AsyncClient
) -> None:
    one.script.models = {"data": [model()]}
    for answer in ({}, {"id": ""}, {"id": 7}):
        one.script.create = (200, answer, {})
        with pytest.raises(ProviderProtocolError) as e:
            await adapter(http, one.url).submit(req(), WAN, idempotency_key="k")
        assert e.value.message == f"{one.root} answered the create without a video id"
        assert e.value.provider == PROTOCOL


async def test_a_create_that_times_out_after_sending_is_ambiguous(one: ModelServer) -> None:
    one.script.models = {"data": [model()]}
    one.script.create_delay_s = 1.0
    async with httpx.AsyncClient(timeout=0.3) as quick:
        with pytest.raises(AmbiguousSubmission) as e:
            await adapter(quick, one.url).submit(req(), WAN, idempotency_key="k-slow")
    # the job may exist and be billed: never sent again blindly
    assert e.value.message == (
        "create call to local-diffusers timed out after sending; the job may exist"
    )
    assert e.value.provider == PROTOCOL
    assert len(one.script.sent) == 1


def _refused(code: str | None, message: str = "why") -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


async def _submit_refused(
    server: ModelServer, http: httpx.AsyncClient, status: int, body: Any, **headers: str
) -> VidgateError:
    server.script.models = {"data": [model()]}
    server.script.create = (status, body, headers)
    Fleet.forget()
    with pytest.raises(VidgateError) as e:
        await adapter(http, server.url).submit(req(), WAN, idempotency_key="k")
    return e.value


async def test_each_refusal_of_a_create_maps_into_the_error_tree(
    one: ModelServer, http: httpx.AsyncClient
) -> None:
    s = one.root
    e = await _submit_refused(one, http, 404, _refused("model_not_loaded", "no wan"))
    assert isinstance(e, CapabilityMismatch)
    assert e.message == f"{s} does not serve this model: no wan"
    assert (e.status_code, e.provider) == (404, PROTOCOL)
    assert e.details == {"code": "model_not_loaded", "server": s}

    e = await _submit_refused(
        one, http, 503, _refused("queue_full", "8 waiting"), **{"Retry-After": "7"}
    )
    assert isinstance(e, RateLimited)
    assert e.message == f"{s}'s queue is full: 8 waiting"
    assert e.retry_after == 7
    assert e.status_code == 503

    e = await _submit_refused(one, http, 429, {}, **{"Retry-After": "2"})
    assert isinstance(e, RateLimited)
    assert e.message == f"{s}'s queue is full: Too Many Requests"
    assert e.retry_after == 2

    for code in ("invalid_request", "invalid_shape"):
        e = await _submit_refused(one, http, 422, _refused(code, "width 854→848"))
        assert isinstance(e, InvalidRequest)
        assert e.message == f"{s}: width 854→848"
        assert e.details["code"] == code

    e = await _submit_refused(one, http, 503, _refused("not_ready", "warming"))
    assert isinstance(e, ProviderUnavailable)
    assert e.message == f"{s} is still loading its pipeline: warming"
    assert (e.status_code, e.provider) == (503, PROTOCOL)
    assert e.details == {"code": "not_ready", "server": s}


async def test_a_refusal_without_the_servers_own_code_goes_by_status(
    one: ModelServer, http: httpx.AsyncClient
) -> None:
    s = one.root
    e = await _submit_refused(one, http, 401, {"error": "denied"})
    assert isinstance(e, AuthFailed)
    assert e.message == f"{s}: Unauthorized"
    assert (e.status_code, e.provider) == (401, PROTOCOL)
    e = await _submit_refused(one, http, 500, _refused("pipeline_error", "boom"))
    assert isinstance(e, ProviderUnavailable)
    assert e.message == f"{s}: boom"
    assert e.status_code == 500
    e = await _submit_refused(one, http, 400, _refused(None, ""))
    assert isinstance(e, InvalidRequest)
    assert e.message == f"{s}: Bad Request"
    e = await _submit_refused(one, http, 400, "plain text")
    assert isinstance(e, InvalidRequest)
    e = await _submit_refused(one, http, 418, {"error": {"message": 5}})
    assert isinstance(e, InvalidRequest)
    assert e.message == f"{s}: 5"
    assert e.status_code == 418


async def test_a_refused_create_is_not_counted_against_the_server(
    two: tuple[ModelServer, ModelServer], http: httpx.AsyncClient
) -> None:
    a, b = two
    a.script.models = {"data": [model(depth=0)]}
    b.script.models = {"data": [model(depth=1)]}
    a.script.create = (422, _refused("invalid_shape", "no"), {})
    ad = adapter(http, a.url, b.url)
    with pytest.raises(InvalidRequest):
        await ad.submit(req(), WAN, idempotency_key="k")
    a.script.create = (200, {"id": "v"}, {})
    job = await ad.submit(req(), WAN, idempotency_key="k2")
    assert job.base_url == a.root  # still 0 waiting there, not 1


# --- the adapter: following a job ----------------------------------------------------------


async def _poll(server: ModelServer, http: httpx.AsyncClient, status: int, body: Any) -> Any:
    server.script.video = (status, body)
    return await adapter(http, server.url).poll(job_on(server))


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("queued", RemoteState.QUEUED),
        ("in_progress", RemoteState.RUNNING),
        ("completed", RemoteState.SUCCEEDED),
        ("failed", RemoteState.FAILED),
        ("cancelled", RemoteState.CANCELED),
    ],
)
async def test_each_server_status_maps_to_a_state(
    one: ModelServer, http: httpx.AsyncClient, raw: str, state: RemoteState
) -> None:
    st = await _poll(one, http, 200, {"status": raw})
    assert st.state is state
    assert st.raw == raw


async def test_an_unknown_status_is_a_protocol_error(
    one: ModelServer, http: httpx.AsyncClient
) -> None:
    with pytest.raises(
        ProviderProtocolError,
        match=r"^unknown status 'done' from local-diffusers; known: cancelled, completed, ",
    ):
        await _poll(one, http, 200, {"status": "done"})


async def test_progress_is_a_share_of_one(one: ModelServer, http: httpx.AsyncClient) -> None:
    assert (await _poll(one, http, 200, {"status": "in_progress", "progress": 40})).progress == (
        pytest.approx(0.4)
    )
    assert (await _poll(one, http, 200, {"status": "in_progress", "progress": 12.5})).progress == (
        pytest.approx(0.125)
    )
    assert (await _poll(one, http, 200, {"status": "in_progress"})).progress is None
    assert (await _poll(one, http, 200, {"status": "queued", "progress": "x"})).progress is None


async def test_a_finished_job_reports_what_the_server_says_it_cost(
    one: ModelServer, http: httpx.AsyncClient
) -> None:
    st = await _poll(one, http, 200, {"status": "completed", "cost_usd": 0.0425})
    assert st.reported_cost is not None
    assert (st.reported_cost.amount, st.reported_cost.unit, st.reported_cost.field) == (
        0.0425,
        "usd",
        "cost_usd",
    )
    assert st.reported_cost.usd(WAN) == 0.0425
    whole = await _poll(one, http, 200, {"status": "completed", "cost_usd": 1})
    assert whole.reported_cost is not None
    assert whole.reported_cost.amount == 1.0
    assert (await _poll(one, http, 200, {"status": "completed"})).reported_cost is None
    bad = await _poll(one, http, 200, {"status": "completed", "cost_usd": "0.1"})
    assert bad.reported_cost is None
    # a job still running or failed bills nothing yet
    assert (
        await _poll(one, http, 200, {"status": "in_progress", "cost_usd": 0.1})
    ).reported_cost is None
    failed = await _poll(one, http, 200, {"status": "failed", "cost_usd": 0.1})
    assert failed.reported_cost is None
    assert (await _poll(one, http, 200, {"status": "completed", "cost_usd": 0.1})).error is None


async def test_a_failed_job_says_why_in_the_error_tree(
    one: ModelServer, http: httpx.AsyncClient
) -> None:
    s = one.root
    st = await _poll(
        one,
        http,
        200,
        {"status": "failed", "error": {"code": "content_rejected", "message": "nsfw"}},
    )
    assert isinstance(st.error, ContentRejected)
    assert st.error.message == "refused by the model server's safety check: nsfw"
    assert st.error.details == {"code": "content_rejected", "server": s}
    assert st.error.provider == PROTOCOL
    st = await _poll(
        one, http, 200, {"status": "failed", "error": {"code": "out_of_memory", "message": "80G"}}
    )
    assert isinstance(st.error, ProviderUnavailable)
    assert st.error.message == f"out of GPU memory on {s}: 80G"
    assert st.error.details == {"code": "out_of_memory", "server": s}
    st = await _poll(
        one, http, 200, {"status": "failed", "error": {"code": "pipeline_error", "message": "nan"}}
    )
    assert isinstance(st.error, ProviderUnavailable)
    assert st.error.message == f"generation failed on {s} (pipeline_error): nan"
    st = await _poll(one, http, 200, {"status": "failed", "error": "x"})
    assert isinstance(st.error, ProviderUnavailable)
    assert st.error.message == f"generation failed on {s} (None): failed"
    assert st.error.details == {"code": None, "server": s}
    st = await _poll(one, http, 200, {"status": "failed"})
    assert st.error is not None
    assert st.error.message == f"generation failed on {s} (None): failed"


def test_failure_codes_without_a_server_round_trip() -> None:
    assert isinstance(failure("content_rejected", "m", "s"), ContentRejected)
    assert not failure("content_rejected", "m", "s").retryable
    assert failure("out_of_memory", "m", "s").retryable
    assert failure("something_new", "m", "s").retryable


async def test_a_job_the_restarted_server_no_longer_has_failed_and_may_be_sent_again(
    one: ModelServer, http: httpx.AsyncClient
) -> None:
    st = await _poll(one, http, 404, {"error": {"code": "not_found"}})
    assert st.state is RemoteState.FAILED
    assert st.raw == "not_found"
    assert isinstance(st.error, ProviderUnavailable)
    assert st.error.message == f"{one.root} no longer has job vid_1 (the server restarted)"
    assert st.error.status_code == 404
    assert st.error.provider == PROTOCOL
    assert st.error.details == {"code": "lost", "server": one.root, "resend_safe": True}


async def test_an_error_answer_to_a_poll_is_raised(
    one: ModelServer, http: httpx.AsyncClient
) -> None:
    with pytest.raises(ProviderUnavailable):
        await _poll(one, http, 500, {})
    with pytest.raises(InvalidRequest) as e:
        await _poll(one, http, 400, _refused("invalid_request", "bad id"))
    assert e.value.message == f"{one.root}: bad id"


async def test_polling_a_server_nobody_listens_on_may_be_sent_again(
    http: httpx.AsyncClient,
) -> None:
    gone = "http://127.0.0.1:9/v1"
    job = ProviderJob(protocol=PROTOCOL, offering_id=WAN.id, remote_id="v", base_url=gone)
    with pytest.raises(ProviderUnavailable) as e:
        await adapter(http, gone).poll(job)
    assert e.value.details["code"] == "unreachable"
    assert e.value.details["server"] == gone
    assert e.value.details["resend_safe"] is True
    assert e.value.provider == PROTOCOL
    assert e.value.message.startswith("cannot connect to local-diffusers: ")


async def test_the_content_is_fetched_from_the_server_that_made_it(
    one: ModelServer, http: httpx.AsyncClient
) -> None:
    [asset] = await adapter(http, "http://other:1").fetch(job_on(one, "vid_9"))
    assert asset.url == f"{one.root}/videos/vid_9/content"
    assert asset.content_type == "video/mp4"


async def test_cancel_asks_the_server_that_has_the_job(
    one: ModelServer, http: httpx.AsyncClient
) -> None:
    await adapter(http, "http://other:1").cancel(job_on(one, "vid_7"))
    assert one.script.cancels == ["vid_7"]
    assert LocalDiffusers.supports_cancel is True


async def test_cancel_of_a_job_the_server_lost_is_done(
    one: ModelServer, http: httpx.AsyncClient
) -> None:
    one.script.cancel = (404, {})
    await adapter(http, one.url).cancel(job_on(one))


async def test_a_refused_cancel_is_raised(one: ModelServer, http: httpx.AsyncClient) -> None:
    one.script.cancel = (409, _refused(None, "already done"))
    with pytest.raises(InvalidRequest) as e:
        await adapter(http, one.url).cancel(job_on(one))
    assert e.value.message == f"{one.root}: already done"
    one.script.cancel = (400, {})
    with pytest.raises(InvalidRequest):
        await adapter(http, one.url).cancel(job_on(one))
    one.script.cancel = (503, _refused("not_ready", "loading"))
    with pytest.raises(ProviderUnavailable):
        await adapter(http, one.url).cancel(job_on(one))


async def test_a_cancel_that_times_out_is_an_outage(one: ModelServer) -> None:
    one.script.cancel_delay_s = 1.0
    async with httpx.AsyncClient(timeout=0.1) as quick:
        with pytest.raises(ProviderUnavailable) as e:
            await adapter(quick, one.url).cancel(job_on(one))
    assert e.value.message.startswith(f"cancel at {one.root} failed: ")
    assert e.value.provider == PROTOCOL
    assert isinstance(e.value.__cause__, httpx.TimeoutException)


def test_adjustments_read_back_from_the_job() -> None:
    j = ProviderJob(protocol=PROTOCOL, offering_id=WAN.id, remote_id="v", base_url="http://s")
    assert adjustments(j) == []
    j.extra["adjustments"] = json.dumps([{"field": "frames"}])
    assert adjustments(j) == [{"field": "frames"}]
    j.extra["adjustments"] = json.dumps({"field": "frames"})
    assert adjustments(j) == []
    j.extra["adjustments"] = ""
    assert adjustments(j) == []


def test_a_server_faster_than_real_time_is_a_measurement() -> None:
    """Under 1 s of compute per second of video (a distilled model on a big GPU) is measured
    speed, priced as such; only 0 or less means "not measured yet"."""
    [m] = parse_models("http://s/v1", {"data": [model(usd_per_hour=3.6, cs=0.5)]})
    assert m.compute_s_per_video_s == 0.5
    assert m.usd_per_video_s == pytest.approx(3.6 / 3600 * 0.5)
