"""Seed 001, "The Break-Even Calculation"."""

from __future__ import annotations

import pytest

from vidgate.errors import InvalidRequest
from vidgate.planner.breakeven import break_even


def test_seed_001_cloud_break_even_with_the_seeds_rounded_rate() -> None:
    # the seed rounds 0.40/60 to 0.0067 $/s: 2000 / (0.05 − 0.0067) = 2000 / 0.0433 = 46,189
    be = break_even(self_host_usd_per_second=0.0067)
    assert round(be.cloud_seconds_per_month) == 46_189
    assert round(be.cloud_seconds_per_month, -2) == 46_200  # "V ≈ 46,200 seconds/month"
    # "your API bill would be $2,310/month"
    assert round(be.api_bill_at_break_even, -1) == 2_310


def test_seed_001_cloud_break_even_with_exact_inputs() -> None:
    be = break_even()  # defaults: $0.05/s API, $0.40/h GPU, 1 s of video per GPU-minute
    assert be.self_host_usd_per_second == pytest.approx(0.40 / 60)
    assert be.cloud_seconds_per_month == pytest.approx(2000 / (0.05 - 0.4 / 60))
    assert round(be.cloud_seconds_per_month) == 46_154
    # "about 770 minutes"
    assert round(be.cloud_seconds_per_month / 60) == 769


def test_seed_001_owned_hardware() -> None:
    be = break_even()
    # 1600/36 + 50 + 2000 = 2094.44 $/month; / 0.05 = 41,889 s/month
    assert be.owned_usd_per_month == pytest.approx(2094.444, abs=1e-3)
    assert round(be.owned_seconds_per_month or 0) == 41_889
    d = be.to_dict()
    assert d["owned"]["seconds_per_month"] == 41_888.9
    assert d["cloud"]["seconds_per_month"] == 46_153.8


def test_gpu_throughput_sets_the_self_host_rate() -> None:
    # an H100 at $2.49/h making 5 s of video per minute (seed 001 throughput table)
    be = break_even(gpu_usd_per_hour=2.49, video_seconds_per_gpu_minute=5.0)
    assert be.self_host_usd_per_second == pytest.approx(2.49 / 60 / 5)
    assert be.cloud_seconds_per_month == pytest.approx(2000 / (0.05 - 2.49 / 300))


def test_no_break_even_when_the_api_is_not_dearer() -> None:
    with pytest.raises(InvalidRequest, match="no break-even"):
        break_even(api_usd_per_second=0.005)
    with pytest.raises(InvalidRequest, match="no break-even"):
        break_even(self_host_usd_per_second=0.05)


def test_inputs_are_checked() -> None:
    with pytest.raises(InvalidRequest, match="video_seconds_per_gpu_minute must be > 0"):
        break_even(video_seconds_per_gpu_minute=0)
    with pytest.raises(InvalidRequest, match="api_usd_per_second"):
        break_even(api_usd_per_second=-1)
    with pytest.raises(InvalidRequest, match="amortize_months"):
        break_even(amortize_months=0)
