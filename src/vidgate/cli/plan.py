"""`vidgate plan WORKLOAD.yaml`, `vidgate plan breakeven` and `vidgate simulate WORKLOAD.yaml`.

``plan`` takes either a workload file or the ``breakeven`` subcommand. A click group with an
optional positional argument would swallow the subcommand's name as the file, so the group
routes anything that is not a subcommand to a hidden ``run`` command instead
(``vidgate plan W.yaml`` is ``vidgate plan run W.yaml``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from typer.core import TyperGroup

from vidgate.cli.common import JsonOpt, console, err_console, print_json, settings_from
from vidgate.cli.output import print_table
from vidgate.errors import InvalidRequest
from vidgate.types import Job


class _PlanGroup(TyperGroup):
    """`plan FILE` runs the hidden `run` command; `plan breakeven` the subcommand."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_PlanGroup,
    name="plan",
    help=(
        "Plan a workload's cost and latency: `vidgate plan WORKLOAD.yaml [--json] "
        "[--charts DIR]`, or `vidgate plan breakeven` for self-hosting break-even."
    ),
    no_args_is_help=True,
)

WorkloadArg = Annotated[
    Path, typer.Argument(help="A WORKLOAD.yaml file (see docs/planner.md).", show_default=False)
]


def _money(x: float | None, cents: bool = True) -> str:
    if x is None:
        return "—"
    return f"${x:,.2f}" if cents else f"${x:,.0f}"


def _per_clip(x: float) -> str:
    """$0.25, $0.6 -> $0.60, $0.0833 (cents, or hundredths of a cent when they matter)."""
    text = f"{x:.4f}"
    while text.endswith("0") and len(text.split(".")[1]) > 2:
        text = text[:-1]
    return "$" + text


def _as_of(value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    try:
        return datetime.combine(date.fromisoformat(value), time(12), tzinfo=UTC)
    except ValueError:
        raise InvalidRequest(f"--as-of {value!r}: use a date like 2026-02-17") from None


def _catalog() -> Any:
    """The catalog, with self-hosted offerings priced and enabled from the model servers in
    ``VIDGATE_LOCAL_DIFFUSERS_BASE_URL`` (so a plan treats them like any offering)."""
    import os

    from vidgate.catalog.loader import load_catalog
    from vidgate.providers.local_fleet import ENV, self_hosted_catalog

    return self_hosted_catalog(load_catalog(settings_from(False).catalog), os.environ.get(ENV))


@app.command("run", hidden=True)
def plan_command(
    workload: WorkloadArg,
    as_json: JsonOpt = False,
    charts: Annotated[
        Path | None,
        typer.Option("--charts", help="Write cost-by-class.png and frontier.png into DIR."),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Plan with the catalog as of this date (YYYY-MM-DD)."),
    ] = None,
    compare: Annotated[
        Path | None,
        typer.Option("--compare", help="Another workload to compare monthly cost against."),
    ] = None,
) -> None:
    """Route every class of WORKLOAD.yaml and report its cost, latency and baselines."""
    from vidgate.planner.plan import compare as compare_plans
    from vidgate.planner.plan import plan
    from vidgate.planner.workload import load_workload

    catalog = _catalog()
    now = _as_of(as_of)
    report = plan(load_workload(workload, catalog), catalog, now=now)
    other = plan(load_workload(compare, catalog), catalog, now=now) if compare else None
    written: dict[str, Path] = {}
    if charts is not None:
        from vidgate.planner.charts import write_charts

        written = write_charts(report, catalog, charts, now.date())
    if as_json:
        out = report.to_dict()
        if other is not None:
            out["compare"] = compare_plans(report, other).to_dict()
        if written:
            out["charts"] = {k: str(v) for k, v in written.items()}
        print_json(out)
        return
    _print_plan(report.to_dict())
    if other is not None:
        s = compare_plans(report, other).to_dict()
        verb = "saves" if s["saving_usd_per_month"] >= 0 else "costs"
        console.print(
            f"[bold]vs {s['against']}[/] ({_money(s['other_usd_per_month'])}/month): this plan "
            f"{verb} [bold]{_money(abs(s['saving_usd_per_month']))}/month[/] "
            f"({abs(s['saving_fraction']):.1%}, {_money(abs(s['saving_usd_per_year']))}/year)"
            + ("" if verb == "saves" else " more")
        )
    for name, path in written.items():
        console.print(f"chart {name}: {path}")


def _print_plan(d: dict[str, Any]) -> None:
    sla = d["sla"]
    t = Table(
        title=f"{d['workload']} — as of {d['as_of']}, {d['billing']} billing, "
        f"{d['days_per_month']:g} days/month",
        show_edge=False,
    )
    cols = ["class", "share", "policy", "offering", "clips/day", "billed s", "$/clip"]
    cols += ["$/day", "$/month", "p50", "p90", "p99"]
    if sla:
        cols.append(f"≤{sla['max_latency_s']:g}s")
    for col in cols:
        left = col in ("class", "policy", "offering")
        t.add_column(col, justify="left" if left else "right", no_wrap=col == "offering")
    for c in d["classes"]:
        row = [
            c["name"],
            f"{c['share']:.0%}",
            c["policy"],
            c["offering"] + (" *" if c["price_from"] != "catalog" else ""),
            f"{c['clips_per_day']:,.0f}",
            f"{c['billed_seconds']:g}",
            _per_clip(c["usd_per_clip"]),
            _money(c["usd_per_day"]),
            _money(c["usd_per_month"]),
            f"{c['latency_s']['p50']:.0f}s",
            f"{c['latency_s']['p90']:.0f}s",
            f"{c['latency_s']['p99']:.0f}s",
        ]
        if sla:
            row.append(f"{c['sla_hit_rate']:.1%}")
        t.add_row(*row)
    tot = d["totals"]
    lat = d["latency_s"]
    total_row = ["total", "100%", "", "", f"{tot['clips_per_day']:,.0f}", "", ""]
    total_row += [_money(tot["usd_per_day"]), _money(tot["usd_per_month"])]
    total_row += [f"{lat['p50']:.0f}s", f"{lat['p90']:.0f}s", f"{lat['p99']:.0f}s"]
    if sla:
        total_row.append(f"{sla['hit_rate']:.1%}")
    t.add_section()
    t.add_row(*[f"[bold]{x}[/]" if x else x for x in total_row])
    print_table(console, t)
    console.print(
        f"[bold]{_money(tot['usd_per_day'])}/day, {_money(tot['usd_per_month'])}/month, "
        f"{_money(tot['usd_per_year'])}/year[/] (average {_money(tot['usd_per_clip'])}/clip)"
    )
    for c in d["classes"]:
        if c["price_from"] != "catalog":
            console.print(f"[dim]* {c['offering']}: {c['price_from']}[/]")
    if sla:
        met = "[green]met[/]" if sla["met"] else "[red]missed[/]"
        console.print(
            f"SLA {sla['percentile']} ≤ {sla['max_latency_s']:g}s: {met} — workload "
            f"{sla['percentile']} {sla['workload_latency_at_percentile_s']:.0f}s, "
            f"{sla['hit_rate']:.1%} of clips within {sla['max_latency_s']:g}s"
        )
    feasible = [b for b in d["baselines"] if b["feasible"]]
    if d["baselines"]:
        bt = Table(title="single-model baselines (one offering for every class)", show_edge=False)
        for col in ("offering", "model", "$/month", "$/year", "vs plan"):
            bt.add_column(col, justify="left" if col in ("offering", "model") else "right")
        shown = feasible[:8] + [b for b in feasible[8:] if b["named"]]
        for b in shown:
            diff = b["usd_per_month"] - tot["usd_per_month"]
            bt.add_row(
                b["offering"],
                b["model_name"],
                _money(b["usd_per_month"]),
                _money(b["usd_per_year"]),
                ("+" if diff >= 0 else "−") + _money(abs(diff)),
            )
        for b in d["baselines"]:
            if not b["feasible"] and b["named"]:
                bt.add_row(b["offering"], b["model_name"], "cannot serve", b["reasons"][0], "")
        print_table(console, bt)
        if len(feasible) > len(shown):
            console.print(f"[dim]{len(feasible) - len(shown)} more baselines in --json[/]")
    for s in d["savings"]:
        word = "saves" if s["saving_usd_per_month"] >= 0 else "costs"
        console.print(
            f"vs {s['kind']} {s['against']}: the plan {word} "
            f"{_money(abs(s['saving_usd_per_month']))}/month ({abs(s['saving_fraction']):.1%})"
            + ("" if word == "saves" else " more")
        )
    for n in d["notes"]:
        console.print(f"[dim]note: {n}[/]")


@app.command("breakeven")
def breakeven_command(
    api_usd_per_second: Annotated[
        float, typer.Option("--api-usd-per-second", help="API price per second of video.")
    ] = 0.05,
    gpu_usd_per_hour: Annotated[
        float, typer.Option("--gpu-usd-per-hour", help="Cloud GPU price per hour.")
    ] = 0.40,
    video_seconds_per_gpu_minute: Annotated[
        float,
        typer.Option("--video-seconds-per-gpu-minute", help="Seconds of video per GPU-minute."),
    ] = 1.0,
    self_host_usd_per_second: Annotated[
        float | None,
        typer.Option(
            "--self-host-usd-per-second",
            help="Self-host cost per second of video (instead of GPU price and throughput).",
        ),
    ] = None,
    ops_usd_per_month: Annotated[
        float, typer.Option("--ops-usd-per-month", help="Engineering/operations overhead.")
    ] = 2000.0,
    purchase_usd: Annotated[
        float, typer.Option("--purchase-usd", help="Price of owned hardware.")
    ] = 1600.0,
    amortize_months: Annotated[
        float, typer.Option("--amortize-months", help="Months to amortise the purchase over.")
    ] = 36.0,
    electricity_usd_per_month: Annotated[
        float, typer.Option("--electricity-usd-per-month", help="Power for owned hardware.")
    ] = 50.0,
    from_server: Annotated[
        str | None,
        typer.Option(
            "--from-server",
            help="A model server URL: use its measured throughput (and its $/hour if set).",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Monthly video volume above which self-hosting beats the API (defaults: seed 001)."""
    from vidgate.planner.breakeven import break_even
    from vidgate.planner.breakeven import from_server as measured_at

    measured = None
    if from_server is not None:
        if self_host_usd_per_second is not None:
            raise InvalidRequest(
                "--from-server measures the self-host cost; drop --self-host-usd-per-second"
            )
        measured = measured_at(from_server)
        video_seconds_per_gpu_minute = measured.video_seconds_per_gpu_minute
        if measured.usd_per_hour > 0:
            gpu_usd_per_hour = measured.usd_per_hour
    be = break_even(
        api_usd_per_second=api_usd_per_second,
        gpu_usd_per_hour=gpu_usd_per_hour,
        video_seconds_per_gpu_minute=video_seconds_per_gpu_minute,
        self_host_usd_per_second=self_host_usd_per_second,
        ops_usd_per_month=ops_usd_per_month,
        purchase_usd=purchase_usd,
        amortize_months=amortize_months,
        electricity_usd_per_month=electricity_usd_per_month,
    )
    d = be.to_dict()
    if measured is not None:
        d["measured"] = {
            "server": measured.server,
            "model": measured.model,
            "jobs": measured.jobs,
            "compute_s_per_video_s": measured.compute_s_per_video_s,
            "video_seconds_per_gpu_minute": round(measured.video_seconds_per_gpu_minute, 6),
            "gpu_usd_per_hour": gpu_usd_per_hour,
        }
    if as_json:
        print_json(d)
        return
    if measured is not None:
        console.print(
            f"measured on {measured.server} ({measured.model}, {measured.jobs} jobs): "
            f"{measured.video_seconds_per_gpu_minute:.3g} s of video per GPU-minute at "
            f"${gpu_usd_per_hour:g}/h"
        )
    cloud = d["cloud"]
    console.print(
        f"API ${d['api_usd_per_second']:g}/s vs self-hosted ${d['self_host_usd_per_second']:.4f}/s"
        f" per video second + {_money(d['ops_usd_per_month'], False)}/month operations"
    )
    console.print(
        f"[bold]cloud GPU break-even: {cloud['seconds_per_month']:,.0f} s/month[/] "
        f"({cloud['minutes_per_month']:,.0f} min, {cloud['clips_per_month']:,.0f} "
        f"{d['clip_seconds']:g}-second clips; API bill "
        f"{_money(cloud['api_usd_per_month_at_break_even'])}/month there)"
    )
    owned = d["owned"]
    if owned:
        console.print(
            f"[bold]owned hardware break-even: {owned['seconds_per_month']:,.0f} s/month[/] "
            f"({owned['clips_per_month']:,.0f} clips; self-hosting costs "
            f"{_money(owned['self_host_usd_per_month'])}/month)"
        )
    console.print("[dim]above these volumes self-hosting is cheaper; below them, use the API[/]")


def simulate(
    workload: WorkloadArg,
    jobs: Annotated[int, typer.Option("--jobs", "-n", help="Requests to replay.")] = 200,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", help="Jobs in flight at once.")
    ] = 32,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed for sampling the class mix.")
    ] = None,
    time_scale: Annotated[
        float,
        typer.Option("--time-scale", help="Wall-clock seconds per real second (0.02: 50x)."),
    ] = 0.02,
    as_json: JsonOpt = False,
) -> None:
    """Replay WORKLOAD.yaml through the gateway against the sandbox, with its faults."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from vidgate.planner.simulate import check_parameters
    from vidgate.planner.simulate import simulate as run_simulation
    from vidgate.planner.workload import load_workload

    check_parameters(jobs, concurrency, time_scale)
    catalog = _catalog()
    w = load_workload(workload, catalog)
    settings_from(True)  # a bad environment is one line, before any work
    # settings=None: a fresh temporary home per run (jobs are throwaway); the environment
    # still names a running sandbox (VIDGATE_SANDBOX_URL) and a catalog override
    settings = None
    if as_json:
        report = run_simulation(
            w, jobs, seed, settings, concurrency, catalog=catalog, time_scale=time_scale
        )
        print_json(report.to_dict())
    else:
        progress = Progress(
            TextColumn("[bold]simulate"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[last]}"),
            TimeElapsedColumn(),
            console=err_console,
        )
        task = progress.add_task("jobs", total=jobs, last="")

        def tick(done: int, total: int, job: Job | None) -> None:
            last = f"{job.offering_id} {job.state.value}" if job is not None else "unroutable"
            progress.update(task, completed=done, last=last)

        with progress:
            report = run_simulation(
                w,
                jobs,
                seed,
                settings,
                concurrency,
                catalog=catalog,
                time_scale=time_scale,
                on_progress=tick,
            )
        _print_sim(report.to_dict())
    if report.duplicate_submissions:
        raise typer.Exit(1)


def _print_sim(d: dict[str, Any]) -> None:
    console.print(
        f"[bold]{d['workload']}[/]: {d['jobs']} jobs, concurrency {d['concurrency']}, "
        f"time scale {d['time_scale']:g}, {d['wall_s']:.1f}s wall"
    )
    states = ", ".join(f"{k} {v}" for k, v in d["states"].items())
    console.print(
        f"success rate [bold]{d['success_rate']:.1%}[/] ({states}); fallbacks {d['fallbacks']} "
        f"jobs; {d['attempts']} attempts; {d['skipped_offerings']} offerings skipped "
        "(breaker or rate limit)"
    )
    t = Table(title="attempts by offering", show_edge=False)
    t.add_column("offering", no_wrap=True)
    t.add_column("outcomes")
    for offering, outcomes in d["attempts_by_offering"].items():
        t.add_row(offering, ", ".join(f"{k} {v}" for k, v in outcomes.items()))
    print_table(console, t)
    console.print(
        "attempts by outcome: " + ", ".join(f"{k} {v}" for k, v in d["attempts_by_outcome"].items())
    )
    by_class = ", ".join(f"{k} {_money(v)}" for k, v in d["cost_usd_by_class"].items())
    console.print(f"cost {_money(d['cost_usd'])} ({by_class})")
    lat = d["latency_s"]
    wall, ready, real = lat["wall"], lat["ready_wall"], lat["real"]
    if ready["p50"] is not None:
        console.print(
            f"latency to output ready p50/p90/p99: {ready['p50']:.2f}/{ready['p90']:.2f}/"
            f"{ready['p99']:.2f}s wall = {real['p50']:.0f}/{real['p90']:.0f}/{real['p99']:.0f}s "
            f"real; end to end (with download) {wall['p50']:.2f}/{wall['p90']:.2f}/"
            f"{wall['p99']:.2f}s wall"
        )
    sb = d["sandbox"]
    events = ", ".join(f"{k} {v}" for k, v in (sb.get("events") or {}).items())
    dup = sb.get("duplicate_submissions", 0)
    colour = "green" if not dup else "red"
    console.print(
        f"sandbox: {sb.get('creates', 0)} creates, [{colour}]{dup} duplicate submissions[/]"
        + (f"; events: {events}" if events else "")
    )
