"""The router's plan for seed 000's platform against the seed's fixed picks.

Plans ``examples/workloads/router-platform-mix.yaml`` (the five classes routed by the router
under constraints at least as strict as the seed's picks, billed as planned) and
``examples/workloads/seed-000-platform-mix.yaml`` (every class pinned to the seed's pick,
billed the seed's way: $135,750.00/month) with :func:`vidgate.planner.plan`, exactly as
``vidgate plan ROUTER --compare SEED`` does, and prints both monthly costs and the saving.
The figures are the catalog's: when the catalog's prices move, so does the saving.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from benchmarks.common import ROOT, Options, heading, say, table
from vidgate.catalog.loader import load_catalog
from vidgate.planner import load_workload, plan
from vidgate.planner.plan import PlanReport, compare

NAME = "planner"
ROUTER_MIX = ROOT / "examples" / "workloads" / "router-platform-mix.yaml"
SEED_MIX = ROOT / "examples" / "workloads" / "seed-000-platform-mix.yaml"
#: seed 000, "Cost Model for Multi-Model Platform"
SEED_MONTHLY_USD = 135_750.00


def _classes(report: PlanReport) -> list[list[object]]:
    return [
        [
            c.name,
            f"{c.share:.0%}",
            c.offering,
            f"{c.billed_seconds:g}",
            f"${c.usd_per_clip:,.4f}",
            f"${c.usd_per_month:,.2f}",
            f"{c.latency_s['p90']:.0f}",
        ]
        for c in report.classes
    ]


def run(options: Options) -> dict[str, Any]:
    heading("planner: the router's plan vs seed 000's fixed platform mix")
    catalog = load_catalog()
    now = datetime.now(UTC)
    t0 = time.perf_counter()
    routed = plan(load_workload(ROUTER_MIX, catalog), catalog, now=now)
    fixed = plan(load_workload(SEED_MIX, catalog), catalog, now=now)
    saving = compare(routed, fixed)
    took_ms = (time.perf_counter() - t0) * 1e3

    headers = ["class", "share", "offering", "billed s", "$/clip", "$/month", "p90 s"]
    for title, report in (("router's plan", routed), ("seed's fixed picks", fixed)):
        say(f"\n{title}: {report.workload} (billing: {report.billing}, as of {report.as_of})")
        say(table(headers, _classes(report), align="lrlrrrr"))
        say(f"  total: ${report.usd_per_day:,.2f}/day, ${report.usd_per_month:,.2f}/month")

    say()
    say(
        table(
            ["", "$/month", "$/year"],
            [
                [
                    "seed 000 fixed mix",
                    f"${fixed.usd_per_month:,.2f}",
                    f"${fixed.usd_per_year:,.2f}",
                ],
                ["router's plan", f"${routed.usd_per_month:,.2f}", f"${routed.usd_per_year:,.2f}"],
                [
                    "saving",
                    f"${saving.usd_per_month:,.2f}",
                    f"${saving.usd_per_month * 12:,.2f}",
                ],
            ],
        )
    )
    say(
        f"\nsaving: {saving.fraction:.1%} of the seed's fixed mix; both plans took {took_ms:.0f} ms"
    )
    if abs(fixed.usd_per_month - SEED_MONTHLY_USD) > 0.005:
        say(
            f"note: the fixed mix costs ${fixed.usd_per_month:,.2f}, not the seed's "
            f"${SEED_MONTHLY_USD:,.2f}: the catalog's prices differ from the seed's"
        )
    return {
        "as_of": now.date().isoformat(),
        "router_usd_per_month": round(routed.usd_per_month, 2),
        "seed_usd_per_month": round(fixed.usd_per_month, 2),
        "seed_published_usd_per_month": SEED_MONTHLY_USD,
        "saving_usd_per_month": round(saving.usd_per_month, 2),
        "saving_fraction": round(saving.fraction, 4),
        "router_classes": {c.name: c.offering for c in routed.classes},
        "plan_ms": round(took_ms, 1),
    }
