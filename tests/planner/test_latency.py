"""The latency model: log-normal through p50 and p90, SLA hit rates, mixture percentiles.

Expected values are worked by hand (z(0.9) = 1.2816) and cross-checked with the standard
library's NormalDist, an implementation independent of the planner's erf-based CDF."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from statistics import NormalDist

import pytest

from vidgate.catalog.loader import Catalog
from vidgate.planner.plan import (
    Component,
    lognormal_sigma,
    mixture_cdf,
    mixture_quantile,
    plan,
    sla_hit_rate,
)
from vidgate.planner.workload import parse_workload

N = NormalDist()


def test_sigma_through_p50_and_p90() -> None:
    # sigma = ln(p90/p50) / 1.2816: p90 = 2 × p50 -> ln 2 / 1.28155 = 0.54087
    assert lognormal_sigma(20, 40) == pytest.approx(0.540866, abs=1e-6)
    assert lognormal_sigma(35, 55) == pytest.approx(math.log(55 / 35) / 1.2815516, rel=1e-7)
    with pytest.raises(ValueError, match="need 0 < p50 ≤ p90"):
        lognormal_sigma(40, 20)


def test_sla_hit_rate_by_hand() -> None:
    # p50 20 s, p90 40 s, SLA 30 s: z = ln 1.5 / 0.540866 = 0.74966 -> Phi = 0.77327
    assert sla_hit_rate(30, 20, 40) == pytest.approx(0.77327, abs=1e-5)
    # at the median and at p90 by construction
    assert sla_hit_rate(20, 20, 40) == pytest.approx(0.5, abs=1e-12)
    assert sla_hit_rate(40, 20, 40) == pytest.approx(0.9, abs=1e-9)
    # Ray3.14 (p50 35, p90 55) within 60 s: z = ln(60/35) / (ln(55/35)/1.28155)
    z = math.log(60 / 35) / (math.log(55 / 35) / N.inv_cdf(0.9))
    assert sla_hit_rate(60, 35, 55) == pytest.approx(N.cdf(z), abs=1e-12)
    # a point mass (p50 = p90) is all-or-nothing
    assert sla_hit_rate(29.9, 30, 30) == 0.0
    assert sla_hit_rate(30, 30, 30) == 1.0


def test_mixture_of_two_symmetric_classes() -> None:
    s = lognormal_sigma(10, 20)
    parts = [Component(0.5, 10, s), Component(0.5, 100, s)]
    # symmetric in log space about sqrt(10 × 100): the median is 31.623
    assert mixture_quantile(0.5, parts) == pytest.approx(math.sqrt(1000), rel=1e-9)
    # p90 solves 0.5 Phi(ln(x/10)/s) + 0.5 Phi(ln(x/100)/s) = 0.9: x = 157.65
    p90 = mixture_quantile(0.9, parts)
    assert p90 == pytest.approx(157.65, abs=0.01)
    check = 0.5 * N.cdf(math.log(p90 / 10) / s) + 0.5 * N.cdf(math.log(p90 / 100) / s)
    assert check == pytest.approx(0.9, abs=1e-9)
    assert mixture_cdf(p90, parts) == pytest.approx(0.9, abs=1e-9)


def test_share_weighted_mixture_with_a_point_mass() -> None:
    s = lognormal_sigma(10, 20)
    parts = [Component(0.8, 10, s), Component(0.2, 1000, 0.0)]
    # the median lies in the first class, at its quantile 0.5 / 0.8 = 0.625:
    # 10 × exp(0.54087 × 0.31864) = 11.881 s
    assert mixture_quantile(0.5, parts) == pytest.approx(
        10 * math.exp(s * N.inv_cdf(0.5 / 0.8)), rel=1e-9
    )
    assert mixture_quantile(0.5, parts) == pytest.approx(11.881, abs=1e-3)
    # below 1000 s at most 80% of clips are done, so p90 and p99 are the point mass
    assert mixture_quantile(0.9, parts) == pytest.approx(1000, rel=1e-9)
    assert mixture_quantile(0.99, parts) == pytest.approx(1000, rel=1e-9)


def test_a_plan_reports_class_and_workload_sla(catalog: Catalog) -> None:
    w = parse_workload(
        """\
name: sla
daily_volume: 1000
sla: {max_latency_s: 60, percentile: p90}
classes:
  - {name: ray, share: 0.75, offering: luma-ray-3.14-luma}
  - {name: kling, share: 0.25, offering: kling-3.0-kling}
"""
    )
    report = plan(w, catalog, now=datetime(2026, 2, 17, tzinfo=UTC))
    ray, kling = report.classes
    # catalog figures for a 5 s 720p clip: Ray3.14 35/55 s, Kling 3.0 90/150 s
    assert (ray.latency_s["p50"], ray.latency_s["p90"]) == (35, 55)
    assert (kling.latency_s["p50"], kling.latency_s["p90"]) == (90, 150)
    hit_ray = N.cdf(math.log(60 / 35) / (math.log(55 / 35) / N.inv_cdf(0.9)))
    hit_kling = N.cdf(math.log(60 / 90) / (math.log(150 / 90) / N.inv_cdf(0.9)))
    assert ray.sla_hit_rate == pytest.approx(hit_ray, abs=1e-9)
    assert kling.sla_hit_rate == pytest.approx(hit_kling, abs=1e-9)
    assert (ray.sla_met, kling.sla_met) == (True, False)
    sla = report.to_dict()["sla"]
    assert sla["hit_rate"] == round(0.75 * hit_ray + 0.25 * hit_kling, 4)
    # the workload p90 satisfies the mixture equation
    x = sla["workload_latency_at_percentile_s"]
    mix = 0.75 * N.cdf(math.log(x / 35) / (math.log(55 / 35) / N.inv_cdf(0.9))) + 0.25 * N.cdf(
        math.log(x / 90) / (math.log(150 / 90) / N.inv_cdf(0.9))
    )
    assert mix == pytest.approx(0.9, abs=2e-3)  # x is rounded to 0.1 s in the report
    assert sla["met"] is (x <= 60)
    lat = report.latency_percentiles()
    assert lat["p50"] < lat["p90"] < lat["p99"]
