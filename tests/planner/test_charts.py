"""PNG charts: written, valid, of a readable size; a clear error without matplotlib."""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from vidgate.catalog.loader import Catalog
from vidgate.errors import ConfigError
from vidgate.planner.charts import (
    cost_by_class,
    frontier,
    frontier_points,
    png_size,
    write_charts,
)
from vidgate.planner.plan import plan
from vidgate.planner.workload import load_workload

from .conftest import EXAMPLES

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 20_000  # a real chart, not an empty canvas
    width, height = png_size(path)
    import matplotlib.image

    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == (height, width)
    assert pixels.std() > 0.05  # something is drawn
    return width, height


def test_both_charts_are_valid_pngs(tmp_path: Path, catalog: Catalog) -> None:
    w = load_workload(EXAMPLES / "router-platform-mix.yaml", catalog)
    now = datetime(2026, 11, 21, tzinfo=UTC)
    written = write_charts(plan(w, catalog, now=now), catalog, tmp_path / "charts", now.date())
    assert set(written) == {"cost_by_class", "frontier"}
    w1, h1 = _check_png(written["cost_by_class"])
    w2, h2 = _check_png(written["frontier"])
    assert w1 >= 700
    assert h1 >= 400
    assert w2 >= 1000
    assert h2 >= 700


def test_frontier_points_cover_every_available_offering(catalog: Catalog) -> None:
    today = date(2026, 11, 21)
    pts = frontier_points(catalog, today)
    ids = {p.offering for p in pts}
    available = {o.id for o in catalog.offerings.values() if o.enabled and o.available_on(today)}
    assert ids == available
    assert "sora-2-openai" not in ids  # retired after 2026-09-24
    by_id = {p.offering: p for p in pts}
    assert by_id["luma-ray-3.14-luma"].usd_per_second == pytest.approx(0.04)
    assert by_id["luma-ray-3.14-luma"].p50_s == pytest.approx(35)
    # the frontier is exactly the offerings no other beats on both cost and latency
    front = [p for p in pts if p.on_frontier]
    assert front
    for p in front:
        assert not any(
            q.usd_per_second <= p.usd_per_second
            and q.p50_s <= p.p50_s
            and (q.usd_per_second, q.p50_s) != (p.usd_per_second, p.p50_s)
            for q in pts
        )
    cheapest = min(p.usd_per_second for p in pts)
    assert any(p.on_frontier and p.usd_per_second == cheapest for p in pts)


def test_missing_matplotlib_is_a_config_error(
    tmp_path: Path, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = load_workload(EXAMPLES / "seed-000-volume-ray.yaml", catalog)
    report = plan(w, catalog, now=datetime(2026, 2, 17, tzinfo=UTC))
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(ConfigError, match=r"pip install 'vidgate\[plan\]'"):
        cost_by_class(report, tmp_path / "x.png")
    with pytest.raises(ConfigError, match=r"pip install 'vidgate\[plan\]'"):
        frontier(catalog, tmp_path / "y.png", date(2026, 2, 17))
    assert not (tmp_path / "x.png").exists()
