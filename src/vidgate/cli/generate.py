"""`vidgate route` and `vidgate generate`."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
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
from vidgate.gateway import Gateway
from vidgate.routing.router import RoutePlan
from vidgate.types import Job, JobState


def _money(x: float | None) -> str:
    return f"${x:.2f}" if x is not None else "—"


def _print_plan(plan: RoutePlan, explain: bool) -> None:
    c = plan.choice
    console.print(
        f"[bold]route[/] ({plan.policy}): [cyan]{c.offering.id}[/] — {c.model.name} via "
        f"{c.offering.provider}, est. {_money(c.cost_usd)}, "
        f"p50 {c.latency_s['p50']:.0f}s / p90 {c.latency_s['p90']:.0f}s, {c.duration_s:g}s"
        + (" with audio" if c.audio else "")
    )
    table = Table(title=None if explain else "feasible offerings", show_edge=False)
    for col in ("#", "offering", "provider", "est. cost", "p50", "p90", "Elo"):
        table.add_column(
            col,
            justify="right" if col in ("#", "est. cost", "p50", "p90", "Elo") else "left",
            no_wrap=col == "offering",  # ids are what users copy into --offering: never cut
        )
    for i, cand in enumerate(plan.ranked[: 10 if not explain else len(plan.ranked)], 1):
        table.add_row(
            str(i),
            cand.offering.id,
            cand.offering.provider,
            _money(cand.cost_usd),
            f"{cand.latency_s['p50']:.0f}s",
            f"{cand.latency_s['p90']:.0f}s",
            f"{cand.model.quality.elo:.0f}" if cand.model.quality.elo else "—",
        )
    console.print(table)
    if explain and plan.rejected:
        rej = Table(title="rejected", show_edge=False)
        rej.add_column("offering", no_wrap=True)
        rej.add_column("why")
        for cand in plan.rejected:
            rej.add_row(cand.offering.id, "; ".join(r.message for r in cand.rejections))
        console.print(rej)
    elif plan.rejected:
        console.print(f"[dim]{len(plan.rejected)} offerings rejected; --explain lists why[/]")


def route(
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
    sandbox: SandboxOpt = False,
    explain: Annotated[
        bool, typer.Option("--explain", help="Show every rejected offering.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Rank the offerings that can serve a request, with cost estimates and rejections."""
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
    )
    gw = Gateway(settings_from(sandbox))
    try:
        plan = gw.route(request, policy=policy, pinned=offering or None)
    finally:
        gw.close()
    if as_json:
        out = plan.explain(runners_up=len(plan.ranked))
        out["ranked"] = [c.summary() for c in plan.ranked]
        out.pop("runners_up")
        print_json(out)
        return
    _print_plan(plan, explain)


def generate(
    prompt: Annotated[str, typer.Argument(help="What the video should show.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the MP4.")] = Path(
        "out.mp4"
    ),
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
    sandbox: SandboxOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Route, submit, wait with a progress bar, and write OUTPUT.mp4 and OUTPUT.json."""
    if output.suffix.lower() != ".mp4":
        fail(f"--output {output}: must end in .mp4")
    if not output.parent.exists():
        fail(f"--output {output}: directory {output.parent} does not exist")
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
        plan = gw.route(request, policy=policy, pinned=offering or None)
        if not as_json:
            _print_plan(plan, explain=False)
        job = gw.submit(request, policy=policy, pinned=offering or None)
        job = asyncio.run(_run_with_progress(gw, job, quiet=as_json))
        summary = _summary(gw, job)
        if job.state is JobState.SUCCEEDED:
            with (
                gw.storage.open(gw.storage_path(job.assets[0].uri)) as src,
                output.open("wb") as dst,
            ):
                shutil.copyfileobj(src, dst, 1 << 20)
            summary["output"] = str(output)
        output.with_suffix(".json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    finally:
        gw.close()
    if as_json:
        print_json(summary)
    else:
        _print_summary(summary, output)
    if job.state is not JobState.SUCCEEDED:
        raise typer.Exit(1)


async def _run_with_progress(gw: Gateway, job: Job, *, quiet: bool) -> Job:
    if quiet:
        try:
            return await gw.complete(job.id)
        finally:
            await gw.aclose()
    progress = Progress(
        TextColumn("[bold]{task.fields[offering]}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[state]}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    )
    task = progress.add_task("job", total=100, offering=job.offering_id or "", state="queued")

    def update(j: Job) -> None:
        progress.update(
            task,
            completed=(j.progress or 0.0) * 100,
            state=j.state.value,
            offering=j.offering_id or "",
        )

    try:
        with progress:
            return await gw.complete(job.id, on_progress=update)
    finally:
        await gw.aclose()


def _summary(gw: Gateway, job: Job) -> dict[str, Any]:
    return {
        "job": job.id,
        "state": job.state.value,
        "offering": job.offering_id,
        "policy": job.policy,
        "estimated_cost_usd": job.estimated_cost_usd,
        "cost_usd": job.cost_usd,
        "latency_s": round(job.latency_s, 3) if job.latency_s is not None else None,
        "attempts": [a.model_dump(mode="json") for a in job.attempts],
        "assets": [a.model_dump(mode="json") for a in job.assets],
        "error": job.error,
        "synthetic": job.synthetic,
        "route": {k: v for k, v in (job.route or {}).items() if k not in ("ranked", "estimates")},
        # the quality gate's verdict and each post-generation stage's (checks, signing)
        "quality": job.quality,
        "stages": {
            name: {
                "verdict": r.get("verdict"),
                "score": r.get("score"),
                "failed": [c["name"] for c in r.get("checks", []) if c.get("verdict") == "fail"],
            }
            for name, r in job.stages.items()
        },
        "created_at": job.created_at,
        "finished_at": job.finished_at,
    }


def _print_summary(summary: dict[str, Any], output: Path) -> None:
    if summary["state"] != "succeeded":
        err = summary.get("error") or {}
        console.print(
            f"[bold red]{summary['state']}[/]: {err.get('message', 'unknown error')}"
            f" (job {summary['job']}, {len(summary['attempts'])} attempt(s))"
        )
        return
    a = summary["assets"][0]
    console.print(
        f"[bold green]done[/] {output} — {a['width']}x{a['height']} {a['duration_s']}s "
        f"{a['fps']:g}fps {a['codec']}{' + ' + a['audio_codec'] if a['has_audio'] else ''}, "
        f"{a['bytes'] / 1e6:.2f} MB"
        + (" [yellow](synthetic: sandbox)[/]" if a["synthetic"] else "")
    )
    console.print(
        f"offering {summary['offering']}, cost {_money(summary['cost_usd'])} "
        f"(estimated {_money(summary['estimated_cost_usd'])}), latency {summary['latency_s']}s, "
        f"{len(summary['attempts'])} attempt(s); details in {output.with_suffix('.json')}"
    )
    if summary["stages"]:
        flagged = (summary["quality"] or {}).get("flagged")
        console.print(
            "stages: "
            + ", ".join(
                f"{name} {r['verdict']}" + (f" ({', '.join(r['failed'])})" if r["failed"] else "")
                for name, r in summary["stages"].items()
            )
            + (" [yellow]— delivered flagged[/]" if flagged else "")
        )
