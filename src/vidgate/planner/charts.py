"""PNG charts for plans: monthly cost by class, and the catalog's cost / latency / quality
frontier. matplotlib is an optional dependency (``pip install 'vidgate[plan]'``); it is
imported only here, with the non-interactive Agg backend, so plans work without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from vidgate.catalog.loader import Catalog
from vidgate.errors import ConfigError
from vidgate.planner.plan import PlanReport
from vidgate.routing.compiled import compile_catalog
from vidgate.routing.policies import tier_priors
from vidgate.types import RESOLUTION_ORDER, Resolution

_TIER_COLOURS = {0: "#9aa5b1", 1: "#3b82c4", 2: "#d9822b"}
_TIER_NAMES = {0: "draft", 1: "standard", 2: "premium"}
REFERENCE_SECONDS = 5.0
REFERENCE_RESOLUTION = Resolution.R720P


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError(
            "charts need matplotlib, which is not installed: pip install 'vidgate[plan]'"
        ) from None
    return plt


def _money(x: float) -> str:
    if x >= 1e7:
        return f"${x / 1e6:.2f}M"
    return f"${x:,.0f}"


def cost_by_class(report: PlanReport, path: Path) -> Path:
    """A bar per class: monthly cost, with the chosen offering and share under each bar."""
    plt = _pyplot()
    classes = report.classes
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(classes) + 2), 4.8), dpi=120)
    try:
        values = [c.usd_per_month for c in classes]
        bars = ax.bar(
            range(len(classes)),
            values,
            color=[_TIER_COLOURS.get(_tier_rank(c.tier), "#3b82c4") for c in classes],
            edgecolor="#1f2933",
            linewidth=0.6,
        )
        for bar, v in zip(bars, values, strict=True):
            ax.annotate(
                _money(v),
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                fontsize=9,
            )
        ax.set_xticks(
            range(len(classes)),
            [f"{c.name}\n{c.offering}\n{c.share:.0%} of clips" for c in classes],
            fontsize=7.5,
        )
        ax.set_ylabel("USD per month")
        ax.yaxis.set_major_formatter(lambda v, _pos: _money(v))
        ax.set_ylim(0, max([*values, 1.0]) * 1.15)
        ax.set_title(
            f"{report.workload}: {_money(report.usd_per_month)}/month "
            f"({report.billing} billing, {report.days_per_month:g} days)",
            fontsize=10,
        )
        ax.spines[["top", "right"]].set_visible(False)
        handles = [
            plt.Rectangle((0, 0), 1, 1, color=_TIER_COLOURS[r]) for r in sorted(_TIER_COLOURS)
        ]
        ax.legend(handles, [_TIER_NAMES[r] for r in sorted(_TIER_NAMES)], fontsize=8, title="tier")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def _tier_rank(name: str) -> int:
    return {"draft": 0, "standard": 1, "premium": 2}.get(name, 1)


@dataclass(frozen=True)
class FrontierPoint:
    offering: str
    usd_per_second: float
    p50_s: float
    tier: int
    elo: float | None
    quality: float  # Elo, or the tier's mean Elo when the model has none
    on_frontier: bool = False


def frontier_points(
    catalog: Catalog, today: date, *, include_self_hosted: bool = True
) -> list[FrontierPoint]:
    """Every offering available on ``today``: $/s and p50 latency of a 5 s clip at 720p (or
    the nearest resolution it offers), with its cost/latency Pareto flag."""
    priors = tier_priors(catalog)
    raw: list[FrontierPoint] = []
    for c in compile_catalog(catalog):
        o = c.offering
        if not o.enabled or not o.available_on(today):
            continue
        if not include_self_hosted and o.provider == "self-hosted":
            continue
        res = _nearest_resolution(c.resolutions)
        duration = c.nearest_duration(REFERENCE_SECONDS)
        cost = c.cost(res, duration, c.audio == "always")
        if cost is None or duration <= 0:
            continue
        w, h = 16 * res.short_side / 9, res.short_side
        p50 = c.prior_latency(duration, int(w * h))[0]
        elo = c.model.quality.elo
        raw.append(
            FrontierPoint(o.id, cost / duration, p50, c.tier, elo, elo or priors[c.tier], False)
        )
    return [FrontierPoint(**{**p.__dict__, "on_frontier": not _dominated(p, raw)}) for p in raw]


def _nearest_resolution(offered: frozenset[Resolution]) -> Resolution:
    if REFERENCE_RESOLUTION in offered:
        return REFERENCE_RESOLUTION
    ref = RESOLUTION_ORDER.index(REFERENCE_RESOLUTION)
    return min(offered, key=lambda r: (abs(RESOLUTION_ORDER.index(r) - ref), -r.short_side))


def _dominated(p: FrontierPoint, pts: list[FrontierPoint]) -> bool:
    """Another offering is at least as cheap and as fast, and strictly better at one."""
    return any(
        q.usd_per_second <= p.usd_per_second
        and q.p50_s <= p.p50_s
        and (q.usd_per_second < p.usd_per_second or q.p50_s < p.p50_s)
        for q in pts
    )


def frontier(
    catalog: Catalog, path: Path, today: date, *, include_self_hosted: bool = True
) -> Path:
    """Scatter of $/s against p50 latency, coloured by tier and sized by quality, with the
    cost/latency Pareto frontier drawn as a line and every offering labelled."""
    plt = _pyplot()
    pts = frontier_points(catalog, today, include_self_hosted=include_self_hosted)
    if not pts:
        raise ConfigError("no offering is available to chart")
    fig, ax = plt.subplots(figsize=(11, 7.5), dpi=120)
    try:
        qs = [p.quality for p in pts]
        qlo, qhi = min(qs), max(qs)

        def size(q: float) -> float:
            return 40 + 260 * ((q - qlo) / (qhi - qlo) if qhi > qlo else 0.5)

        for tier in sorted(_TIER_COLOURS):
            group = [p for p in pts if p.tier == tier]
            if not group:
                continue
            ax.scatter(
                [p.usd_per_second for p in group],
                [p.p50_s for p in group],
                s=[size(p.quality) for p in group],
                c=_TIER_COLOURS[tier],
                alpha=0.75,
                edgecolors=["#111111" if p.elo else "#ffffff" for p in group],
                linewidths=0.8,
                label=f"{_TIER_NAMES[tier]} tier",
                zorder=3,
            )
        front = sorted((p for p in pts if p.on_frontier), key=lambda p: p.usd_per_second)
        if front:
            ax.step(
                [p.usd_per_second for p in front],
                [p.p50_s for p in front],
                where="post",
                color="#c0392b",
                linewidth=1.4,
                linestyle="--",
                label="cost/latency Pareto frontier",
                zorder=2,
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis, fmt in ((ax.xaxis, "${:.2f}"), (ax.yaxis, "{:.0f}s")):
            axis.set_major_formatter(lambda v, _pos, f=fmt: f.format(v))
            axis.set_minor_formatter(lambda v, _pos, f=fmt: f.format(v) if _round_tick(v) else "")
            axis.set_tick_params(which="both", labelsize=7.5)
        ax.set_xlabel("USD per second of video (5 s clip, 720p or nearest)")
        ax.set_ylabel("p50 latency (catalog, 5 s clip)")
        ax.set_title(
            f"Catalog cost / latency / quality frontier, {today.isoformat()} "
            f"({len(pts)} offerings; marker size = Elo or tier prior, black edge = measured Elo)",
            fontsize=10,
        )
        ax.grid(True, which="both", alpha=0.25)
        xs = [p.usd_per_second for p in pts]
        ys = [p.p50_s for p in pts]
        ax.set_xlim(min(xs) / 1.3, max(xs) * 2.2)
        ax.set_ylim(min(ys) / 1.3, max(ys) * 1.3)
        ax.legend(loc="upper left", fontsize=8, markerscale=0.6)
        fig.tight_layout()
        _label_points(fig, ax, pts)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def _round_tick(v: float) -> bool:
    """Label only the 2, 3 and 5 minor ticks of a log axis, so labels never crowd."""
    if v <= 0:
        return False
    mantissa = v / 10 ** math.floor(math.log10(v))
    return round(mantissa) in (2, 3, 5) and abs(mantissa - round(mantissa)) < 1e-6


#: label positions tried around a point (points offset, horizontal alignment)
_OFFSETS = [
    ((7, 3), "left"),
    ((7, -10), "left"),
    ((-7, 3), "right"),
    ((-7, -10), "right"),
    ((7, 13), "left"),
    ((7, -20), "left"),
    ((-7, 13), "right"),
    ((-7, -20), "right"),
    ((7, 23), "left"),
    ((7, -30), "left"),
]
_FONT = 6.5


def _label_points(fig: Any, ax: Any, pts: list[FrontierPoint]) -> None:
    """Label every point, merging offerings that share a spot and placing each label at the
    first nearby position that overlaps no label already placed (a greedy, good-enough
    layout: the catalog has a few dozen offerings)."""
    spots: dict[tuple[float, float], list[FrontierPoint]] = {}
    for p in pts:
        spots.setdefault((round(p.usd_per_second, 6), round(p.p50_s, 3)), []).append(p)
    scale = fig.dpi / 72.0  # points -> pixels
    placed: list[tuple[float, float, float, float]] = []
    frame = ax.bbox.extents  # the axes' pixel box: labels must stay inside it
    for (x, y), group in sorted(spots.items()):
        text = ", ".join(p.offering + (f" ({p.elo:.0f})" if p.elo else "") for p in group)
        px, py = ax.transData.transform((x, y))
        w, h = len(text) * _FONT * 0.55 * scale, _FONT * 1.2 * scale
        choice = _OFFSETS[0]
        for (dx, dy), ha in _OFFSETS:
            x0 = px + dx * scale - (w if ha == "right" else 0)
            y0 = py + dy * scale
            box = (x0, y0, x0 + w, y0 + h)
            inside = frame[0] <= box[0] and box[2] <= frame[2] and frame[1] <= y0 <= frame[3]
            if inside and not any(_overlap(box, b) for b in placed):
                choice = ((dx, dy), ha)
                break
        (dx, dy), ha = choice
        x0 = px + dx * scale - (w if ha == "right" else 0)
        placed.append((x0, py + dy * scale, x0 + w, py + dy * scale + h))
        ax.annotate(
            text,
            (x, y),
            xytext=(dx, dy),
            textcoords="offset points",
            ha=ha,
            fontsize=_FONT,
            color="#c0392b" if any(p.on_frontier for p in group) else "#333333",
            zorder=4,
        )


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def write_charts(
    report: PlanReport, catalog: Catalog, directory: Path, today: date
) -> dict[str, Path]:
    """Both charts into ``directory``: cost-by-class.png and frontier.png."""
    return {
        "cost_by_class": cost_by_class(report, directory / "cost-by-class.png"),
        "frontier": frontier(catalog, directory / "frontier.png", today),
    }


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR header; raises ValueError if it is not a PNG."""
    head = path.read_bytes()[:24]
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise ValueError(f"{path} is not a PNG")
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
