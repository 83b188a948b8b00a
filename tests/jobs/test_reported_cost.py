"""The ledger settles at what the provider reports, where it reports it (Runway
``cost.credits``, BytePlus ``usage.completion_tokens``, Replicate ``metrics.predict_time`` on
time-priced hardware, xAI ``usage.cost_in_usd_ticks``): each sandbox reports a cost that
differs from the catalog estimate, the ledger row is the reported one, the estimate stays
beside it, and ``vidgate spend`` shows both. A reported cost above the job's reservation is
charged in full and flagged, never capped."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tests.conftest import sandbox_settings
from vidgate.catalog.loader import Catalog, load_catalog
from vidgate.cli.main import app
from vidgate.gateway import Gateway
from vidgate.sandbox.app import SandboxServer
from vidgate.sandbox.emulators.runway import CREDITS_PER_SECOND
from vidgate.types import VideoRequest

#: Replicate's public price of an H100 second (replicate.com/pricing, "Hardware"): a user's
#: catalog entry for a model billed by hardware time (no shipped offering is time-priced)
H100_USD_PER_SECOND = 0.001525


#: our (stale) list price for Grok Imagine: xAI's emulator bills from the shipped $0.07/s
STALE_GROK_USD_PER_SECOND = 0.05


#: that user's token rate for Seedance (the shipped one follows its per-resolution prices)
SEEDANCE_USD_PER_M_TOKENS = 3.24


def _catalog() -> Catalog:
    """The gateway's catalog: a user's time-priced Wan on Replicate, and a Grok price that
    lags xAI's. The sandbox serves the shipped catalog, as the providers bill."""
    cat = load_catalog()
    wan = cat.offering("wan-2.2-replicate")
    cat.offerings["wan-2.2-replicate"] = wan.model_copy(
        update={"usd_per_hardware_second": H100_USD_PER_SECOND}
    )
    grok = cat.offering("grok-imagine-xai")
    stale = [r.model_copy(update={"usd": STALE_GROK_USD_PER_SECOND}) for r in grok.price]
    cat.offerings["grok-imagine-xai"] = grok.model_copy(update={"price": stale})
    # A user's Seedance entry whose per-second price ignores resolution and whose token rate
    # is above what the estimate assumes: a 1080p clip then reports more than was held.
    seed = cat.offering("seedance-2.0-byteplus")
    blind = seed.price[-1].model_copy(update={"usd": 0.07, "resolutions": None})
    cat.offerings["seedance-2.0-byteplus"] = seed.model_copy(
        update={"price": [blind], "usd_per_million_tokens": SEEDANCE_USD_PER_M_TOKENS}
    )
    return cat


CATALOG = _catalog()


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[SandboxServer]:
    server = SandboxServer(tmp_path / "sb", load_catalog(), time_scale=0.002).start()
    yield server
    server.stop()


@pytest.fixture
def gw(tmp_path: Path, sb: SandboxServer) -> Iterator[Gateway]:
    g = Gateway(sandbox_settings(tmp_path / "home", sb.url), catalog=CATALOG)
    yield g
    g.close()


def spend_rows(home: Path) -> list[dict]:
    out = CliRunner().invoke(
        app, ["spend", "--json"], env={"VIDGATE_HOME": str(home), "VIDGATE_SANDBOX": "1"}
    )
    assert out.exit_code == 0, out.output
    return json.loads(out.output)


async def test_runway_settles_at_reported_credits(gw: Gateway, tmp_path: Path) -> None:
    oid = "runway-gen-4.5-aleph-runway"
    job = await gw.generate(VideoRequest(prompt="a paper boat", duration_s=5), pinned=[oid])
    a = job.attempts[-1]
    credits = CREDITS_PER_SECOND["gen4.5"] * 5
    assert a.reported_cost == {
        "amount": credits,
        "unit": "credits",
        "field": "cost.credits",
        "usd": credits * 0.01,
    }
    assert a.estimated_cost_usd == pytest.approx(0.75)  # the catalog's $0.15/s
    assert a.cost_usd == pytest.approx(0.60)  # Runway's 60 credits at $0.01
    (row,) = gw.store.ledger(job_id=job.id)
    assert row["amount_usd"] == pytest.approx(0.60)
    assert job.cost_usd == pytest.approx(0.60)
    assert not job.billing["delivery"]["over_reservation"]

    (tenant,) = spend_rows(tmp_path / "home")
    e = tenant["by_offering"][oid]
    assert e["usd"] == pytest.approx(0.60)
    assert e["estimated_usd"] == pytest.approx(0.75)
    assert e["reported_usd"] == pytest.approx(0.60)
    assert e["reported_clips"] == 1
    table = CliRunner().invoke(
        app, ["spend"], env={"VIDGATE_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    )
    assert "estimated" in table.output
    assert "reported" in table.output
    assert "$0.75" in table.output
    assert "$0.60 (1)" in table.output


async def test_byteplus_tokens_above_the_reservation_are_charged_and_flagged(
    gw: Gateway, tmp_path: Path
) -> None:
    oid = "seedance-2.0-byteplus"
    gw.accounts.ensure_tenant("default", budget_usd=10.0)  # a budget: the estimate is held
    req = VideoRequest(prompt="a lighthouse", duration_s=5, resolution="1080p")
    job = await gw.generate(req, pinned=[oid])
    a = job.attempts[-1]
    tokens = 1920 * 1080 * 24 * 5 // 1024  # the task's usage.completion_tokens
    assert a.reported_cost is not None
    assert a.reported_cost["amount"] == tokens
    usd = round(tokens * SEEDANCE_USD_PER_M_TOKENS / 1e6, 6)
    assert a.estimated_cost_usd == pytest.approx(0.35)  # $0.07/s, resolution-blind
    assert a.cost_usd == pytest.approx(usd)
    note = job.billing["delivery"]
    assert note["reservation_room_usd"] == pytest.approx(0.35)  # what the budget held
    assert usd > 0.35  # more than was held: charged in full, flagged
    (row,) = gw.store.ledger(job_id=job.id)
    assert row["amount_usd"] == pytest.approx(usd)
    assert note["over_reservation"] is True
    assert note["charged_usd"] == pytest.approx(usd)

    (tenant,) = spend_rows(tmp_path / "home")
    e = tenant["by_offering"][oid]
    assert e["estimated_usd"] == pytest.approx(0.35)
    assert e["reported_usd"] == pytest.approx(usd)
    assert e["over_reservation"] == 1


async def test_replicate_settles_at_predict_time(
    gw: Gateway, sb: SandboxServer, tmp_path: Path
) -> None:
    oid = "wan-2.2-replicate"
    job = await gw.generate(VideoRequest(prompt="a kite", duration_s=5), pinned=[oid])
    a = job.attempts[-1]
    remote = a.provider_job["remote_id"]
    async with httpx.AsyncClient() as c:
        r = await c.get(
            f"{sb.url}/replicate/v1/predictions/{remote}", headers={"Authorization": "Bearer k"}
        )
    prediction = r.json()
    seconds = prediction["metrics"]["predict_time"]
    usd = round(seconds * H100_USD_PER_SECOND, 6)
    assert a.reported_cost == {
        "amount": seconds,
        "unit": "hardware_seconds",
        "field": "metrics.predict_time",
        "usd": usd,
    }
    assert usd != pytest.approx(a.estimated_cost_usd)
    (row,) = gw.store.ledger(job_id=job.id)
    assert row["amount_usd"] == pytest.approx(usd)
    e = spend_rows(tmp_path / "home")[0]["by_offering"][oid]
    assert e["estimated_usd"] == pytest.approx(a.estimated_cost_usd)
    assert e["reported_usd"] == pytest.approx(usd)


async def test_unpriced_report_keeps_the_estimate(gw: Gateway) -> None:
    """Replicate's shipped offerings bill by output: predict_time is kept, not charged."""
    cat = load_catalog()
    oid = "cogvideox-5b-replicate"
    assert cat.offering(oid).usd_per_hardware_second is None
    job = await gw.generate(VideoRequest(prompt="a kite", duration_s=5), pinned=[oid])
    a = job.attempts[-1]
    assert a.reported_cost is not None
    assert a.reported_cost["usd"] is None
    assert a.cost_usd == pytest.approx(a.estimated_cost_usd)


async def test_xai_settles_at_reported_usd_ticks(gw: Gateway, tmp_path: Path) -> None:
    oid = "grok-imagine-xai"
    job = await gw.generate(VideoRequest(prompt="a kite", duration_s=5), pinned=[oid])
    a = job.attempts[-1]
    assert a.reported_cost is not None
    assert a.reported_cost["unit"] == "usd"
    assert a.reported_cost["field"] == "usage.cost_in_usd_ticks"
    assert a.reported_cost["usd"] == pytest.approx(0.35)  # xAI's $0.07/s x 5 s
    assert a.estimated_cost_usd == pytest.approx(0.25)  # our stale $0.05/s
    (row,) = gw.store.ledger(job_id=job.id)
    assert row["amount_usd"] == pytest.approx(0.35)
    assert job.billing["delivery"]["over_reservation"] is True  # above what was promised
    e = spend_rows(tmp_path / "home")[0]["by_offering"][oid]
    assert e["estimated_usd"] == pytest.approx(0.25)
    assert e["reported_usd"] == pytest.approx(0.35)
