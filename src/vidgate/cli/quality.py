"""`vidgate quality report [--json] [--chart PNG]`: what the quality gate saw, by offering.

Read from the jobs in the database (each job's gate verdict, ``job.quality``, with its history
of regenerations; failed checks from the stage results where the verdict does not list them):
clips judged, pass rate, mean score, the most common failed checks, and whether the router
already uses the learned estimate (enough clips) for that offering.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from vidgate.cli.common import JsonOpt, console, fail, print_json, settings_from
from vidgate.cli.output import print_table
from vidgate.gateway import Gateway
from vidgate.routing.stats import QualityStats, quality_by_offering

app = typer.Typer(help="Quality gate results by offering.", no_args_is_help=True)


def rows(by_offering: dict[str, QualityStats], min_samples: int) -> list[dict[str, Any]]:
    """Report rows, worst pass rate first (what to look at first)."""
    out: list[dict[str, Any]] = []
    for oid, q in by_offering.items():
        out.append(
            {
                "offering": oid,
                "clips": q.samples,
                "passed": q.passed,
                "pass_rate": round(q.pass_rate, 4),
                "mean_score": round(q.mean_score, 2) if q.mean_score is not None else None,
                "top_failures": [{"check": c, "clips": n} for c, n in q.top_failures(3)],
                "routing_uses_it": q.samples >= min_samples,
            }
        )
    out.sort(key=lambda r: (float(r["pass_rate"]), -int(r["clips"]), str(r["offering"])))
    return out


def write_chart(report: list[dict[str, Any]], path: Path) -> Path:
    """A bar per offering: pass rate, labelled with clips and mean score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["offering"] for r in report]
    rates = [100 * r["pass_rate"] for r in report]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(report) + 1.4))
    bars = ax.barh(names, rates, color=["#d9822b" if x < 80 else "#3b82c4" for x in rates])
    for bar, r in zip(bars, report, strict=True):
        mean = f", mean {r['mean_score']:.1f}" if r["mean_score"] is not None else ""
        ax.text(
            bar.get_width() + 1,
            bar.get_y() + bar.get_height() / 2,
            f"{r['clips']} clips{mean}",
            va="center",
            fontsize=8,
        )
    ax.set_xlim(0, 125)
    ax.set_xlabel("clips passing the quality gate (%)")
    ax.set_title("Quality gate pass rate by offering")
    ax.invert_yaxis()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@app.command("report")
def report(
    as_json: JsonOpt = False,
    chart: Annotated[
        Path | None,
        typer.Option("--chart", metavar="PNG", help="Also draw pass rates into this PNG file."),
    ] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant's jobs.")] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=1_000_000, help="Most recent jobs to read.")
    ] = 5000,
    sandbox: Annotated[
        bool | None,
        typer.Option(
            "--sandbox/--real",
            help="Only sandbox jobs, or only real ones (default: both).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Pass rate, mean score and most common failures of the quality gate, by offering."""
    if chart is not None and chart.suffix.lower() != ".png":
        fail(f"--chart {chart}: give a .png file name")
    settings = settings_from(False)
    gw = Gateway(settings)
    try:
        jobs = gw.store.list(tenant=tenant, limit=limit)
    finally:
        gw.close()
    table = rows(quality_by_offering(jobs, synthetic=sandbox), settings.learn_min_samples)
    written = write_chart(table, chart) if chart is not None and table else None
    if as_json:
        out: dict[str, Any] = {"jobs_read": len(jobs), "offerings": table}
        if written is not None:
            out["chart"] = str(written)
        print_json(out)
        return
    if not table:
        console.print(f"no gated clips in the {len(jobs)} most recent jobs")
        return
    t = Table(title=f"quality gate by offering ({len(jobs)} jobs read)")
    for col in ("offering", "clips", "pass rate", "mean score", "most common failures", "routing"):
        t.add_column(
            col, justify="right" if col in ("clips", "pass rate", "mean score") else "left"
        )
    for r in table:
        t.add_row(
            r["offering"],
            str(r["clips"]),
            f"{r['pass_rate']:.0%}",
            f"{r['mean_score']:.1f}" if r["mean_score"] is not None else "-",
            ", ".join(f"{f['check']} ({f['clips']})" for f in r["top_failures"]) or "-",
            "learned" if r["routing_uses_it"] else f"catalog (<{settings.learn_min_samples})",
        )
    print_table(console, t)
    if written is not None:
        console.print(f"chart: {written}")
