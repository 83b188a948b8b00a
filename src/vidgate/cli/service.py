"""`vidgate serve`, `vidgate keys ...`, `vidgate spend`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from vidgate.cli.common import JsonOpt, SandboxOpt, console, err_console, print_json, settings_from
from vidgate.gateway import Gateway

keys_app = typer.Typer(
    help="API keys: one per app or team, each tied to a tenant.", no_args_is_help=True
)


def serve(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port.")] = 8000,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="Only serve the API; run workers apart.")
    ] = False,
    sandbox: SandboxOpt = False,
    json_logs: Annotated[
        bool, typer.Option("--json-logs/--plain-logs", help="One JSON object per log line.")
    ] = True,
) -> None:
    """Run the HTTP service (OpenAI-compatible /v1/videos, /v1/jobs, /metrics, dashboard)."""
    import uvicorn

    from vidgate.server.app import create_app
    from vidgate.server.observability import configure_json_logs

    if json_logs:
        configure_json_logs()
    settings = settings_from(sandbox)
    app = create_app(settings, run_worker=not no_worker)
    err_console.print(
        f"vidgate on http://{host}:{port} (dashboard at /, API docs at /docs)"
        + (" — sandbox mode" if settings.sandbox else "")
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None if json_logs else uvicorn.config.LOGGING_CONFIG,
        access_log=False,
    )


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option("--tenant", help="Who the key belongs to.")],
    budget: Annotated[
        float | None, typer.Option("--budget", min=0, help="Tenant budget in USD.")
    ] = None,
    rpm: Annotated[
        int | None, typer.Option("--rpm", min=1, help="Requests per minute for this key.")
    ] = None,
    max_jobs: Annotated[
        int | None, typer.Option("--max-jobs", min=1, help="Cap on the tenant's running jobs.")
    ] = None,
    markup: Annotated[
        float | None, typer.Option("--markup", min=0, help="Resellers: charge per USD of cost.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a key and print it once (it is stored hashed and cannot be shown again)."""
    gw = Gateway(settings_from(False))
    try:
        gw.accounts.ensure_tenant(
            tenant, budget_usd=budget, markup=markup, max_concurrent_jobs=max_jobs
        )
        kid, raw = gw.accounts.create_key(tenant, rpm=rpm)
    finally:
        gw.close()
    if as_json:
        print_json({"id": kid, "tenant": tenant, "key": raw, "rpm": rpm, "budget_usd": budget})
        return
    console.print(
        f"key {kid} for tenant {tenant}:\n[bold]{raw}[/]\n"
        "[dim]store it now: it is not shown again[/]"
    )


@keys_app.command("list")
def keys_list(
    tenant: Annotated[str | None, typer.Option("--tenant")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List keys (ids and prefixes only)."""
    gw = Gateway(settings_from(False))
    try:
        rows = gw.accounts.keys(tenant)
    finally:
        gw.close()
    if as_json:
        print_json(rows)
        return
    table = Table(show_edge=False)
    for col in ("id", "tenant", "prefix", "rpm", "revoked", "created"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["id"],
            r["tenant"],
            r["prefix"] + "…",
            str(r["rpm"] or "—"),
            "yes" if r["revoked"] else "no",
            str(r["created_at"])[:19],
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(metavar="KEY_ID")]) -> None:
    """Revoke a key (refused within 30 s by running servers)."""
    gw = Gateway(settings_from(False))
    try:
        gw.accounts.revoke_key(key_id)
    finally:
        gw.close()
    console.print(f"revoked {key_id}")


def spend(
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """What each tenant spent, by offering, against its budget."""
    gw = Gateway(settings_from(False))
    try:
        rows = gw.accounts.spend(tenant)
    finally:
        gw.close()
    if as_json:
        print_json(rows)
        return
    table = Table(show_edge=False)
    for col in ("tenant", "offering", "clips", "cost", "charged", "budget", "reserved"):
        table.add_column(col, justify="left" if col in ("tenant", "offering") else "right")
    for r in rows:
        budget = f"${r['budget_usd']:.2f}" if r["budget_usd"] is not None else "—"
        offerings = r["by_offering"] or {"—": {"usd": 0.0, "clips": 0}}
        for oid, e in offerings.items():
            table.add_row(
                r["tenant"],
                oid,
                str(e["clips"]),
                f"${e['usd']:.2f}",
                f"${e['usd'] * r['markup']:.2f}",
                budget,
                f"${r['reserved_usd']:.2f}",
            )
    console.print(table)
