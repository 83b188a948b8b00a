"""`vidgate mcp`: the MCP server for agents, over stdio (default) or streamable HTTP.

Without provider keys in the environment (or with ``--sandbox``) every offering is served by
the offline sandbox, so an agent can try the whole flow without spending anything. Nothing but
the protocol is written to stdout: with stdio, stdout *is* the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from typing import Annotated

import typer

from vidgate.cli.common import err_console, fail, settings_from
from vidgate.extras import require
from vidgate.settings import Credentials, Settings


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def keyed_providers(settings: Settings) -> list[str]:
    """Providers whose every credential variable is set (self-hosted ones need none: they
    do not count, since they alone would make every API offering unroutable)."""
    from vidgate.catalog.loader import load_catalog

    creds = Credentials()
    catalog = load_catalog(settings.catalog)
    return sorted(
        {
            o.provider
            for o in catalog.offerings.values()
            if o.credential_env and creds.present(o.credential_env)
        }
    )


def mcp(
    transport: Annotated[
        str, typer.Option("--transport", "-t", help="stdio (default) or http (streamable HTTP).")
    ] = "stdio",
    port: Annotated[int, typer.Option("--port", help="HTTP port (with --transport http).")] = 8000,
    host: Annotated[
        str, typer.Option("--host", help="HTTP interface; loopback only (no authentication).")
    ] = "127.0.0.1",
    sandbox: Annotated[
        bool | None,
        typer.Option(
            "--sandbox/--live",
            envvar="VIDGATE_SANDBOX",
            help="Serve every offering from the sandbox (default when no provider key is set).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve vidgate's tools to agents over MCP: route, generate, follow a job, price a
    workload, plan and run a story."""
    if transport not in ("stdio", "http"):
        fail(f"--transport {transport!r}: use stdio or http")
    if transport == "http" and not 1 <= port <= 65535:
        fail(f"--port {port}: give a port from 1 to 65535")
    if transport == "http" and not _loopback(host):
        fail(
            f"--host {host}: the MCP server has no authentication; bind it to loopback "
            "(127.0.0.1, ::1 or localhost) and put an authenticating proxy in front"
        )
    require("mcp")  # before any work: a missing SDK is one line, exit 2
    settings = settings_from(bool(sandbox))
    if sandbox is None:
        keyed = keyed_providers(settings)
        if not keyed:
            settings = settings.model_copy(update={"sandbox": True})
        mode = "sandbox (no provider keys set)" if not keyed else f"live: {', '.join(keyed)}"
    else:
        mode = "sandbox" if sandbox else "live"
    from vidgate.mcp.server import serve

    where = f"http://{host}:{port}/mcp" if transport == "http" else "stdio"
    err_console.print(f"vidgate MCP server on {where}; offerings: {mode}", highlight=False)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            serve(settings, "http" if transport == "http" else "stdio", host=host, port=port)
        )
