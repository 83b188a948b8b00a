"""`vidgate serve`, `vidgate keys ...`, `vidgate spend`."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from vidgate.cli.common import JsonOpt, SandboxOpt, console, err_console, print_json, settings_from
from vidgate.cli.output import print_table
from vidgate.errors import ConfigError
from vidgate.extras import require
from vidgate.gateway import Gateway
from vidgate.settings import Settings
from vidgate.supervise import METRICS_ENV

if TYPE_CHECKING:
    from vidgate.supervise import ChildSpec

keys_app = typer.Typer(
    help="API keys: one per app or team, each tied to a tenant.", no_args_is_help=True
)


def serve(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port.")] = 8000,
    workers: Annotated[
        int,
        typer.Option("--workers", min=0, help="Worker processes to run (0: run workers apart)."),
    ] = 1,
    api_processes: Annotated[
        int, typer.Option("--api-processes", min=1, help="API processes sharing the port.")
    ] = 1,
    in_process: Annotated[
        bool,
        typer.Option(
            "--in-process",
            help="One process: the API and one worker share it (small set-ups, tests).",
        ),
    ] = False,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="Only serve the API (same as --workers 0).")
    ] = False,
    grace: Annotated[
        float,
        typer.Option(
            "--grace", min=0, help="Seconds workers get to finish creates on the wire at Ctrl-C."
        ),
    ] = 30.0,
    fd: Annotated[int | None, typer.Option("--fd", hidden=True)] = None,
    sandbox: SandboxOpt = False,
) -> None:
    """Run the HTTP service (OpenAI-compatible /v1/videos, /v1/jobs, /metrics, dashboard).

    By default the API and its workers run as separate processes under one supervisor: one
    command, one Ctrl-C, a dead process restarted (and /readyz failing while a worker is
    down). The worker's polling then never takes CPU from the API's requests."""
    require("server")
    settings = settings_from(sandbox)
    # a bad C2PA signing pair stops the service here, not at the first job it would sign
    from vidgate.provenance.keys import startup_check

    startup_check(settings)
    if no_worker:
        workers = 0
    if fd is not None:
        # A supervised API process: serve on the socket the supervisor opened and shares.
        _run_api(settings, fd=fd, run_worker=False)
        return
    if in_process:
        err_console.print(_banner(host, port, settings, "one process (API and worker)"))
        _run_api(settings, host=host, port=port, run_worker=workers > 0)
        return

    import socket

    from vidgate.supervise import ChildSpec, vidgate_argv

    env, specs = _prepare(settings)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    fileno = sock.fileno()
    specs += [
        ChildSpec(
            f"api-{i + 1}",
            vidgate_argv("serve", "--fd", str(fileno)),
            env,
            role="api",
            pass_fds=(fileno,),
        )
        for i in range(api_processes)
    ]
    specs += [
        ChildSpec(f"worker-{i + 1}", vidgate_argv("worker", "--grace", f"{grace:g}"), env)
        for i in range(workers)
    ]
    err_console.print(
        _banner(
            host,
            port,
            settings,
            f"{api_processes} API process(es), {workers} worker process(es)",
        )
    )
    try:
        # a worker's own --grace bounds its stop; the supervisor waits a little longer
        code = _supervise(settings, specs, grace + 5.0)
    finally:
        sock.close()
    raise typer.Exit(code)


def _banner(host: str, port: int, settings: Settings, how: str) -> str:
    return f"vidgate on http://{host}:{port} (dashboard at /, API docs at /docs) — {how}" + (
        " — sandbox mode" if settings.sandbox else ""
    )


def _run_api(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    fd: int | None = None,
    run_worker: bool,
) -> None:
    import uvicorn

    from vidgate.server.app import create_app

    app = create_app(settings, run_worker=run_worker)
    # log_config=None: uvicorn keeps the logging the CLI set up (plain, or JSON on request);
    # no access log: a line per request costs CPU that belongs to requests.
    if fd is not None:
        import socket

        # Not uvicorn's fd= option: it wraps the descriptor as an AF_UNIX socket, so asyncio
        # never sets TCP_NODELAY on accepted connections and every small response waits
        # ~40 ms for a delayed ACK. socket(fileno=) reads the real family from the kernel.
        sock = socket.socket(fileno=fd)
        config = uvicorn.Config(app, log_config=None, access_log=False)
        uvicorn.Server(config).run(sockets=[sock])
    else:
        uvicorn.run(app, host=host, port=port, log_config=None, access_log=False)


def _prepare(settings: Settings) -> tuple[dict[str, str], list[ChildSpec]]:
    """What every supervised child shares: the database migrated once (two processes
    migrating at once would race), and in sandbox mode one sandbox process that all of
    them talk to (each starting its own would pin jobs to different emulators)."""
    from vidgate.supervise import ChildSpec, vidgate_argv

    gw = Gateway(settings)
    try:
        gw.store  # noqa: B018 - runs the migrations
    finally:
        gw.close()
    env: dict[str, str] = {METRICS_ENV: str(_metrics_dir(settings))}
    specs: list[ChildSpec] = []
    if settings.sandbox:
        env["VIDGATE_SANDBOX"] = "1"
        if not settings.sandbox_url:
            port = _sandbox_port(settings)
            url = f"http://127.0.0.1:{port}"
            env["VIDGATE_SANDBOX_URL"] = url
            specs.append(
                ChildSpec(
                    "sandbox",
                    vidgate_argv("sandbox", "serve", "--port", str(port)),
                    role="sandbox",
                    ready=lambda: _answers(f"{url}/healthz"),
                )
            )
    return env, specs


def _metrics_dir(settings: Settings) -> Path:
    """An empty folder for this supervisor's processes' metric files (samples left by an
    earlier run would be added to this one's)."""
    import shutil

    folder = settings.resolved_home() / f"metrics-{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def _sandbox_port(settings: Settings) -> int:
    """The port the sandbox had last time when it is free (jobs pin their provider's URL, so
    a restarted service must find the sandbox where it left it), else any free port."""
    import socket

    port_file = settings.sandbox_home() / "port"
    candidates = []
    with contextlib.suppress(OSError, ValueError):
        candidates.append(int(port_file.read_text().strip()))
    candidates.append(0)
    for want in candidates:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", want))
            except OSError:
                continue
            port = int(s.getsockname()[1])
        port_file.write_text(str(port))
        return port
    raise ConfigError("no free port for the sandbox")


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _supervise(settings: Settings, specs: list[ChildSpec], grace: float) -> int:
    from vidgate.supervise import Supervisor

    state = settings.resolved_home() / f"supervisor-{os.getpid()}.json"
    try:
        return Supervisor(specs, grace_s=grace, state_file=state).run()
    finally:
        state.unlink(missing_ok=True)
        import shutil

        shutil.rmtree(settings.resolved_home() / f"metrics-{os.getpid()}", ignore_errors=True)


def supervise_workers(ctx: typer.Context, processes: int, sandbox: bool) -> int:
    """``vidgate worker --processes N``: N copies of this very command (same options, minus
    ``--processes``) under one supervisor, sharing the queue through the job store."""
    from vidgate.supervise import ChildSpec, vidgate_argv

    settings = settings_from(sandbox)
    env, specs = _prepare(settings)
    args = child_args(ctx, drop={"processes", "sandbox"})
    specs += [
        ChildSpec(f"worker-{i + 1}", vidgate_argv("worker", *args), env) for i in range(processes)
    ]
    err_console.print(f"supervising {processes} worker processes")
    return _supervise(settings, specs, grace=float(ctx.params.get("grace") or 30.0) + 5.0)


def child_args(ctx: typer.Context, drop: set[str]) -> list[str]:
    """The options ``ctx``'s command was given, as argv again (so a supervised copy gets
    every option, including ones added to the command later)."""
    out: list[str] = []
    for p in ctx.command.params:
        opts = getattr(p, "opts", None)
        if not opts or p.name in drop or p.name is None:
            continue
        value = ctx.params.get(p.name)
        if value is None:
            continue
        if getattr(p, "is_flag", False):
            secondary = getattr(p, "secondary_opts", [])
            if value:
                out.append(opts[0])
            elif secondary:
                out.append(secondary[0])
            continue
        values = value if isinstance(value, list | tuple) else [value]
        for v in values:
            out += [opts[0], str(v)]
    return out


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
    admin: Annotated[
        bool,
        typer.Option("--admin", help="This key sees every tenant's jobs and spend (dashboard)."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a key and print it once (it is stored hashed and cannot be shown again)."""
    gw = Gateway(settings_from(False))
    try:
        gw.accounts.ensure_tenant(
            tenant, budget_usd=budget, markup=markup, max_concurrent_jobs=max_jobs
        )
        kid, raw = gw.accounts.create_key(tenant, rpm=rpm, admin=admin)
    finally:
        gw.close()
    if as_json:
        print_json(
            {
                "id": kid,
                "tenant": tenant,
                "key": raw,
                "rpm": rpm,
                "budget_usd": budget,
                "admin": admin,
            }
        )
        return
    console.print(
        f"{'admin ' if admin else ''}key {kid} for tenant {tenant}:\n[bold]{raw}[/]\n"
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
    for col in ("id", "tenant", "prefix", "rpm", "admin", "revoked", "created"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["id"],
            r["tenant"],
            r["prefix"] + "…",
            str(r["rpm"] or "—"),
            "yes" if r["admin"] else "no",
            "yes" if r["revoked"] else "no",
            str(r["created_at"])[:19],
        )
    print_table(console, table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(metavar="KEY_ID")]) -> None:
    """Revoke a key (refused within 30 s by running servers)."""
    gw = Gateway(settings_from(False))
    try:
        gw.accounts.revoke_key(key_id)
    finally:
        gw.close()
    console.print(f"revoked {key_id}")


def _reported(e: dict[str, Any]) -> str:
    """Provider-reported cost: "$x (n clips)", with a "!" when one exceeded its reservation."""
    n = e.get("reported_clips", 0)
    if not n:
        return "—"
    flag = f" !{e['over_reservation']} over" if e.get("over_reservation") else ""
    return f"${e['reported_usd']:.2f} ({n}){flag}"


def spend(
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """What each tenant spent, by offering, against its budget: the cost charged, our
    estimate beside it, and what providers reported (where they report a cost)."""
    gw = Gateway(settings_from(False))
    try:
        rows = gw.accounts.spend(tenant)
    finally:
        gw.close()
    if as_json:
        print_json(rows)
        return
    table = Table(show_edge=False)
    cols = ("tenant", "offering", "clips", "cost", "estimated", "reported", "charged")
    for col in (*cols, "budget", "reserved"):
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
                f"${e['estimated_usd']:.2f}" if "estimated_usd" in e else "—",
                _reported(e),
                f"${e['usd'] * r['markup']:.2f}",
                budget,
                f"${r['reserved_usd']:.2f}",
            )
    print_table(console, table)
