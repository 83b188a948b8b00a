"""`vidgate submit | worker | jobs | job | wait | cancel`."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from vidgate.cli.common import (
    Aspect,
    AudioOpt,
    Duration,
    Fps,
    Image,
    JsonOpt,
    Judge,
    MaxCost,
    MaxLatency,
    MinScore,
    Negative,
    OfferingOpt,
    OnFail,
    Policy,
    Quality,
    ResolutionOpt,
    SandboxOpt,
    Seed,
    build_request,
    console,
    err_console,
    fail,
    print_json,
    settings_from,
)
from vidgate.errors import VidgateError
from vidgate.gateway import Gateway
from vidgate.jobs.worker import Worker, WorkerConfig
from vidgate.types import Job, JobState

Tenant = Annotated[str, typer.Option("--tenant", help="Tenant the job belongs to.")]


def job_json(job: Job) -> dict[str, Any]:
    return job.model_dump(mode="json")


def submit(
    prompt: Annotated[str, typer.Argument(help="What the video should show.")],
    duration: Duration = 5.0,
    resolution: ResolutionOpt = "720p",
    aspect: Aspect = "16:9",
    fps: Fps = None,
    audio: AudioOpt = False,
    quality: Quality = None,
    max_cost: MaxCost = None,
    max_latency: MaxLatency = None,
    policy: Policy = "cheapest",
    offering: OfferingOpt = None,
    image: Image = None,
    negative: Negative = None,
    seed: Seed = None,
    on_fail: OnFail = None,
    min_score: MinScore = None,
    judge: Judge = False,
    idempotency_key: Annotated[
        str | None,
        typer.Option("--idempotency-key", help="Repeat-safe: the same key returns the same job."),
    ] = None,
    webhook: Annotated[
        str | None, typer.Option("--webhook", help="URL to POST signed state-change events to.")
    ] = None,
    tenant: Tenant = "default",
    sandbox: SandboxOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Queue a job and print its id; a worker (`vidgate worker`) runs it."""
    request = build_request(
        prompt,
        duration=duration,
        resolution=resolution,
        aspect=aspect,
        fps=fps,
        audio=audio,
        quality=quality,
        max_cost=max_cost,
        max_latency=max_latency,
        image=image,
        negative=negative,
        seed=seed,
        on_fail=on_fail,
        min_score=min_score,
        judge=judge,
    )
    gw = Gateway(settings_from(sandbox))
    try:
        job = gw.submit(
            request,
            policy=policy,
            pinned=offering or None,
            tenant=tenant,
            idempotency_key=idempotency_key,
            webhook_url=webhook,
        )
    finally:
        gw.close()
    if as_json:
        print_json(job_json(job))
    else:
        print(job.id)


def _shared_metrics() -> Callable[[Job], None] | None:
    """Under a supervisor that collects metrics across processes (``vidgate serve``), the
    jobs this worker finishes are counted where the API's ``/metrics`` reads them."""
    from vidgate.supervise import METRICS_ENV

    if not os.environ.get(METRICS_ENV):
        return None
    try:
        from vidgate.server.observability import Metrics
    except ImportError:  # no server extra: no API to scrape either
        return None

    return Metrics().job_finished


def worker(
    ctx: typer.Context,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, help="Jobs held at once.")
    ] = 1000,
    per_provider: Annotated[
        int, typer.Option("--per-provider", min=1, help="Concurrent calls per provider.")
    ] = 64,
    lease: Annotated[
        float, typer.Option("--lease", min=1.0, help="Seconds a claim lasts between renewals.")
    ] = 30.0,
    grace: Annotated[
        float,
        typer.Option(
            "--grace",
            min=0.0,
            help="On SIGTERM: seconds creates already sent may take to store their ids; "
            "every other job is handed back at once.",
        ),
    ] = 30.0,
    sandbox: SandboxOpt = False,
    processes: Annotated[
        int, typer.Option("--processes", min=1, help="Worker processes to run and supervise.")
    ] = 1,
) -> None:
    """Claim and run jobs until interrupted; resumes every in-flight job after a restart."""
    # a bad C2PA signing pair stops the worker here, not at the first job it would sign
    from vidgate.provenance.keys import startup_check

    startup_check(settings_from(sandbox))
    if processes > 1:
        from vidgate.cli.service import supervise_workers

        raise typer.Exit(supervise_workers(ctx, processes, sandbox))
    gw = Gateway(settings_from(sandbox))
    config = WorkerConfig(
        concurrency=concurrency, per_provider=per_provider, lease_s=lease, grace_s=grace
    )

    async def main() -> None:
        w = Worker(gw, config, on_finished=_shared_metrics())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, w.stop)
        err_console.print(
            f"worker {w.id}: up to {concurrency} jobs, database "
            f"{gw.store.engine.url.render_as_string(hide_password=True)}"
        )
        try:
            await w.run()
        finally:
            await gw.aclose()

    try:
        asyncio.run(main())
    finally:
        gw.close()


def jobs(
    state: Annotated[str | None, typer.Option("--state", help="Only jobs in this state.")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant's jobs.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """List recent jobs."""
    st = None
    if state is not None:
        try:
            st = JobState(state)
        except ValueError:
            fail(f"--state {state!r}: use one of {', '.join(s.value for s in JobState)}")
    gw = Gateway(settings_from(False))
    try:
        found = gw.store.list(tenant=tenant, state=st, limit=limit)
    finally:
        gw.close()
    if as_json:
        print_json([job_json(j) for j in found])
        return
    if st is JobState.NEEDS_RECONCILIATION:
        _show_parked(found)
        return
    table = Table(show_edge=False)
    for col in ("job", "state", "offering", "cost", "created", "attempts"):
        table.add_column(col, no_wrap=col == "job")
    for j in found:
        table.add_row(
            j.id,
            j.state.value,
            j.offering_id or "—",
            f"${j.cost_usd:.2f}" if j.cost_usd is not None else "—",
            j.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            str(len(j.attempts)),
        )
    console.print(table)


def _show_parked(found: list[Job]) -> None:
    """Why each parked job is parked and what to check (one block per job, fits 80 cols)."""
    from vidgate.catalog.loader import load_catalog
    from vidgate.jobs.reconcile import explain

    catalog = load_catalog()
    if not found:
        console.print("no job needs reconciliation")
    for j in found:
        try:
            p = explain(j, catalog)
        except VidgateError as e:
            console.print(f"[bold]{j.id}[/] ({j.tenant}): {e}")
            continue
        console.print(
            f"[bold]{p.job_id}[/] tenant {p.tenant}, attempt {p.attempt} on {p.offering_id} "
            f"({p.provider}), ${p.pending_usd:.2f} pending",
            soft_wrap=False,
        )
        console.print(f"  why:   {p.reason}")
        console.print(f"  check: {p.check}", highlight=False)


def job(
    job_id: Annotated[str, typer.Argument(metavar="ID")],
    as_json: JsonOpt = False,
) -> None:
    """Show one job: state, route, attempts, assets, cost."""
    gw = Gateway(settings_from(False))
    try:
        j = gw.job(job_id)
        ledger = gw.store.ledger(job_id=job_id)
    finally:
        gw.close()
    if as_json:
        data = job_json(j)
        data["ledger"] = [{k: v for k, v in r.items() if k != "id"} for r in ledger]
        print_json(data)
        return
    cost = f"${j.cost_usd:.2f}" if j.cost_usd is not None else "—"
    console.print(
        f"[bold]{j.id}[/] {j.state.value} — offering {j.offering_id}, "
        f"est. ${j.estimated_cost_usd or 0:.2f}, cost {cost}"
    )
    for a in j.attempts:
        err = f" — {a.error['message']}" if a.error else ""
        console.print(f"  attempt {a.n}: {a.offering_id} {a.state.value}{err}")
    for asset in j.assets:
        console.print(f"  asset {asset.uri} ({asset.width}x{asset.height}, {asset.duration_s}s)")
    if j.error:
        console.print(f"  error: {j.error.get('message')}")


def _progress_runner(gw: Gateway, job_id: str, timeout: float | None, quiet: bool) -> Job:
    async def go() -> Job:
        try:
            if quiet:
                return await gw.wait(job_id, timeout_s=timeout)
            progress = Progress(
                TextColumn("[bold]{task.fields[job]}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TextColumn("{task.fields[state]}"),
                TimeElapsedColumn(),
                console=err_console,
            )
            task = progress.add_task("wait", total=100, job=job_id, state="…")

            def show(j: Job) -> None:
                progress.update(task, completed=(j.progress or 0) * 100, state=j.state.value)

            with progress:
                return await gw.wait(job_id, timeout_s=timeout, on_progress=show)
        finally:
            await gw.aclose()

    return asyncio.run(go())


def wait(
    job_id: Annotated[str, typer.Argument(metavar="ID")],
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Give up after S seconds.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Wait for a job to finish (exit 0 if it succeeded)."""
    gw = Gateway(settings_from(False))
    try:
        gw.job(job_id)  # a clear NotFound before any waiting
        j = _progress_runner(gw, job_id, timeout, as_json)
    finally:
        gw.close()
    if as_json:
        print_json(job_json(j))
    else:
        console.print(f"{j.id} {j.state.value}")
    if j.state is not JobState.SUCCEEDED:
        raise typer.Exit(1)


def cancel(
    job_id: Annotated[str, typer.Argument(metavar="ID")],
    as_json: JsonOpt = False,
) -> None:
    """Cancel a job (remotely too, where the provider can)."""
    gw = Gateway(settings_from(False))

    async def go() -> Job:
        try:
            return await gw.cancel(job_id)
        finally:
            await gw.aclose()

    try:
        j = asyncio.run(go())
    finally:
        gw.close()
    if as_json:
        print_json(job_json(j))
    else:
        console.print(f"{j.id} {j.state.value}")
