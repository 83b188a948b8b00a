"""`vidgate models` and `vidgate models show ID`."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from vidgate.catalog.loader import Catalog, load_catalog
from vidgate.catalog.schema import Offering
from vidgate.cli.common import JsonOpt, console, print_json, settings_from
from vidgate.cli.output import print_table

app = typer.Typer(
    help="The model catalog: every model and every route to it.",
    no_args_is_help=False,
    invoke_without_command=True,
)


def _catalog() -> Catalog:
    """The catalog, with self-hosted offerings enabled where a configured model server
    (``VIDGATE_LOCAL_DIFFUSERS_BASE_URL``) serves their model now."""
    from vidgate.providers.local_fleet import ENV, self_hosted_catalog

    return self_hosted_catalog(load_catalog(settings_from(False).catalog), os.environ.get(ENV))


def server_of(o: Offering) -> str | None:
    """Which model server serves a self-hosted offering, or why none can (None: an API)."""
    from vidgate.providers.local_fleet import PROTOCOL, unavailable_reason

    if o.protocol != PROTOCOL:
        return None
    why = unavailable_reason(o)
    if why is not None:
        return f"unavailable: {why}"
    return o.adapter_options.get("served_by") or "no configured server serves it"


def per_second_floor(o: Offering) -> float | None:
    """The lowest base price per second of output across the offering's price rules."""
    rates = []
    for r in o.price:
        if r.surcharge:
            continue
        usd = r.usd if r.usd is not None else (r.credits or 0) * (o.usd_per_credit or 0)
        if r.unit == "clip":
            secs = r.clip_seconds or (min(r.durations) if r.durations else None)
            if not secs:
                continue
            usd = usd / secs
        rates.append(usd)
    return min(rates) if rates else None


def _offering_row(cat: Catalog, o: Offering, today: Any) -> dict[str, Any]:
    m = cat.model_of(o)
    caps = o.capabilities
    floor = per_second_floor(o)
    return {
        "offering": o.id,
        "model": m.id,
        "model_name": m.name,
        "vendor": m.vendor,
        "provider": o.provider,
        "protocol": o.protocol,
        "modes": [x.value for x in caps.modes],
        "max_duration_s": caps.durations.maximum,
        "resolutions": [r.value for r in caps.resolutions],
        "audio": caps.audio,
        "usd_per_second_from": round(floor, 4) if floor is not None else None,
        "latency_p50_s": o.latency.p50,
        "elo": m.quality.elo,
        "tier": (o.tier or m.quality.tier).value,
        "open_weights": m.open_weights,
        "jurisdiction": m.jurisdiction,
        "available_until": o.available_until,
        "available": o.enabled and o.available_on(today),
        "server": server_of(o),
    }


@app.callback()
def models(
    ctx: typer.Context,
    audio: Annotated[
        bool, typer.Option("--audio", help="Only offerings with native audio.")
    ] = False,
    open_weights: Annotated[
        bool, typer.Option("--open-weights", help="Only open-weight models.")
    ] = False,
    max_price: Annotated[
        float | None,
        typer.Option(
            "--max-price", help="Only offerings whose cheapest rate is at most this USD/second."
        ),
    ] = None,
    provider: Annotated[str | None, typer.Option("--provider", help="Only this provider.")] = None,
    include_retired: Annotated[
        bool, typer.Option("--all", help="Include retired offerings.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """List offerings: model, provider, price, latency, quality."""
    if ctx.invoked_subcommand is not None:
        return
    cat = _catalog()
    today = datetime.now(UTC).date()
    rows = []
    for o in cat.offerings.values():
        row = _offering_row(cat, o, today)
        if audio and o.capabilities.audio == "never":
            continue
        if open_weights and not row["open_weights"]:
            continue
        if max_price is not None and (
            row["usd_per_second_from"] is None or row["usd_per_second_from"] > max_price
        ):
            continue
        if provider and o.provider != provider:
            continue
        if not include_retired and not row["available"]:
            continue
        rows.append(row)
    rows.sort(
        key=lambda r: (
            r["usd_per_second_from"] is None,
            r["usd_per_second_from"] or 0,
            r["offering"],
        )
    )
    if as_json:
        print_json(rows)
        return
    table = Table(show_edge=False, header_style="bold")
    # the server column only when a shown row runs on a configured model server
    servers = any(r["server"] and not r["server"].startswith(("unavailable", "no ")) for r in rows)
    cols = ["offering", "provider", "max s", "max res", "audio", "$/s from", "p50", "Elo", "tier"]
    for col in cols + (["server"] if servers else []):
        table.add_column(
            col,
            justify="right" if col in ("max s", "$/s from", "p50", "Elo") else "left",
            no_wrap=col == "offering",  # ids are what users copy into --offering: never cut
        )
    for r in rows:
        table.add_row(
            r["offering"],
            r["provider"],
            f"{r['max_duration_s']:g}",
            r["resolutions"][-1] if r["resolutions"] else "—",
            r["audio"],
            f"{r['usd_per_second_from']:.3f}" if r["usd_per_second_from"] is not None else "—",
            f"{r['latency_p50_s']:.0f}s",
            f"{r['elo']:.0f}" if r["elo"] else "—",
            r["tier"],
            *([r["server"] or "—"] if servers else []),
        )
    print_table(console, table)
    hidden = len(cat.offerings) - len(rows)
    console.print(
        f"[dim]{len(rows)} offerings of {len(cat.offerings)} "
        f"({len(cat.models)} models){f'; {hidden} filtered or retired' if hidden else ''}"
        "; `vidgate models show ID` for sources[/]"
    )


@app.command("show")
def show(
    item_id: Annotated[str, typer.Argument(metavar="ID", help="A model or offering id.")],
    as_json: JsonOpt = False,
) -> None:
    """Everything the catalog knows of a model or offering, with each number's source."""
    cat = _catalog()
    if item_id in cat.offerings:
        o = cat.offerings[item_id]
        data: dict[str, Any] = {
            "offering": o.model_dump(mode="json"),
            "model": cat.model_of(o).model_dump(mode="json"),
        }
    else:
        m = cat.model(item_id)
        data = {
            "model": m.model_dump(mode="json"),
            "offerings": [o.model_dump(mode="json") for o in cat.by_model[m.id]],
        }
    if as_json:
        print_json(data)
        return
    from rich.pretty import Pretty

    console.print(Pretty(data, expand_all=False))
