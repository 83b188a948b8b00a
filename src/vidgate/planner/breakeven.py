"""Self-hosting break-even: the monthly volume of video above which running a model yourself
costs less than paying an API per second (seed 001, "The Break-Even Calculation").

Cloud GPUs::

    V = ops_usd_month / (api_usd_per_second − self_host_usd_per_video_second)

where the self-host cost of one second of video is given directly or derived from the GPU's
hourly price and its throughput: ``gpu_usd_per_hour / 60 / video_seconds_per_gpu_minute``.

Owned hardware (amortised purchase, electricity and the same operations overhead, all
monthly, with no per-second GPU cost)::

    V = (purchase_usd / amortize_months + electricity_usd_month + ops_usd_month)
        / api_usd_per_second

``vidgate plan breakeven --from-server URL`` replaces the seed's throughput with what a running
model server measured (:func:`from_server`: 60 / its ``compute_s_per_video_s`` seconds of
video per GPU-minute) and, when the server was given one, its ``--usd-per-hour``.

The defaults are seed 001's inputs: Wan 2.6 via fal.ai at $0.05/s, an RTX 4090 at $0.40/h
producing 1 s of video per GPU-minute, $2,000/month of engineering time, a $1,600 card
amortised over 36 months and $50/month of electricity. They give ≈ 46,154 s/month (the seed
rounds the self-host rate to $0.0067/s and gets 46,189 ≈ 46,200) and 41,889 s/month owned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vidgate.errors import InvalidRequest

#: seed 001's inputs
API_USD_PER_SECOND = 0.05
GPU_USD_PER_HOUR = 0.40
VIDEO_SECONDS_PER_GPU_MINUTE = 1.0
OPS_USD_PER_MONTH = 2000.0
PURCHASE_USD = 1600.0
AMORTIZE_MONTHS = 36.0
ELECTRICITY_USD_PER_MONTH = 50.0
CLIP_SECONDS = 5.0


@dataclass(frozen=True)
class BreakEven:
    api_usd_per_second: float
    self_host_usd_per_second: float
    ops_usd_per_month: float
    #: seconds of video per month above which cloud self-hosting is cheaper
    cloud_seconds_per_month: float
    #: the same with owned hardware, or None when no purchase price was given
    owned_seconds_per_month: float | None
    owned_usd_per_month: float | None
    clip_seconds: float = CLIP_SECONDS

    @property
    def api_bill_at_break_even(self) -> float:
        return self.api_usd_per_second * self.cloud_seconds_per_month

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "api_usd_per_second": self.api_usd_per_second,
            "self_host_usd_per_second": round(self.self_host_usd_per_second, 6),
            "ops_usd_per_month": self.ops_usd_per_month,
            "cloud": {
                "seconds_per_month": round(self.cloud_seconds_per_month, 1),
                "minutes_per_month": round(self.cloud_seconds_per_month / 60, 1),
                "clips_per_month": round(self.cloud_seconds_per_month / self.clip_seconds, 1),
                "api_usd_per_month_at_break_even": round(self.api_bill_at_break_even, 2),
            },
            "owned": None,
            "clip_seconds": self.clip_seconds,
        }
        if self.owned_seconds_per_month is not None:
            out["owned"] = {
                "seconds_per_month": round(self.owned_seconds_per_month, 1),
                "clips_per_month": round(self.owned_seconds_per_month / self.clip_seconds, 1),
                "self_host_usd_per_month": round(self.owned_usd_per_month or 0.0, 2),
            }
        return out


def _positive(name: str, value: float, *, zero_ok: bool = False) -> None:
    if value < 0 or (value == 0 and not zero_ok) or value != value:
        raise InvalidRequest(f"{name} must be {'≥ 0' if zero_ok else '> 0'} (got {value:g})")


def break_even(
    *,
    api_usd_per_second: float = API_USD_PER_SECOND,
    gpu_usd_per_hour: float = GPU_USD_PER_HOUR,
    video_seconds_per_gpu_minute: float = VIDEO_SECONDS_PER_GPU_MINUTE,
    self_host_usd_per_second: float | None = None,
    ops_usd_per_month: float = OPS_USD_PER_MONTH,
    purchase_usd: float | None = PURCHASE_USD,
    amortize_months: float = AMORTIZE_MONTHS,
    electricity_usd_per_month: float = ELECTRICITY_USD_PER_MONTH,
    clip_seconds: float = CLIP_SECONDS,
) -> BreakEven:
    """Both break-even volumes; raises :class:`InvalidRequest` when there is none."""
    _positive("api_usd_per_second", api_usd_per_second)
    _positive("ops_usd_per_month", ops_usd_per_month, zero_ok=True)
    _positive("clip_seconds", clip_seconds)
    if self_host_usd_per_second is None:
        _positive("gpu_usd_per_hour", gpu_usd_per_hour, zero_ok=True)
        _positive("video_seconds_per_gpu_minute", video_seconds_per_gpu_minute)
        self_host_usd_per_second = gpu_usd_per_hour / 60.0 / video_seconds_per_gpu_minute
    else:
        _positive("self_host_usd_per_second", self_host_usd_per_second, zero_ok=True)
    margin = api_usd_per_second - self_host_usd_per_second
    if margin <= 0:
        raise InvalidRequest(
            f"no break-even: the API (${api_usd_per_second:g}/s) is not dearer than "
            f"self-hosting (${self_host_usd_per_second:.4g}/s per video second), so "
            "self-hosting never pays for its overhead; use the API"
        )
    owned_seconds = owned_usd = None
    if purchase_usd is not None:
        _positive("purchase_usd", purchase_usd, zero_ok=True)
        _positive("amortize_months", amortize_months)
        _positive("electricity_usd_per_month", electricity_usd_per_month, zero_ok=True)
        owned_usd = purchase_usd / amortize_months + electricity_usd_per_month + ops_usd_per_month
        owned_seconds = owned_usd / api_usd_per_second
    return BreakEven(
        api_usd_per_second=api_usd_per_second,
        self_host_usd_per_second=self_host_usd_per_second,
        ops_usd_per_month=ops_usd_per_month,
        cloud_seconds_per_month=ops_usd_per_month / margin,
        owned_seconds_per_month=owned_seconds,
        owned_usd_per_month=owned_usd,
        clip_seconds=clip_seconds,
    )


@dataclass(frozen=True)
class Measured:
    """A model server's own throughput and price (its ``/v1/models`` stats)."""

    server: str
    model: str
    #: the server's ``--usd-per-hour`` (0 when it was started without one)
    usd_per_hour: float
    compute_s_per_video_s: float
    jobs: int

    @property
    def video_seconds_per_gpu_minute(self) -> float:
        return 60.0 / self.compute_s_per_video_s


def from_server(url: str, *, timeout_s: float = 5.0) -> Measured:
    """What the model server at ``url`` measured: the first model it has finished a job of.

    Raises :class:`InvalidRequest` naming what is missing (no answer, no finished job)."""
    import asyncio

    import httpx

    from vidgate.providers.local_fleet import Fleet

    async def read() -> tuple[list[Any], list[str]]:
        async with httpx.AsyncClient(
            timeout=timeout_s, transport=httpx.AsyncHTTPTransport(retries=0)
        ) as client:
            return await Fleet(client, [url], ttl_s=0.0).models()

    served, down = asyncio.run(read())
    if down:
        raise InvalidRequest(
            f"--from-server {url}: {down[0]}; start one with `vidgate model serve DIR`"
        )
    if not served:
        raise InvalidRequest(f"--from-server {url}: the server lists no model")
    done = [s for s in served if s.compute_s_per_video_s is not None]
    if not done:
        ids = ", ".join(s.id for s in served)
        raise InvalidRequest(
            f"--from-server {url}: {ids} has finished no job yet, so its throughput is not "
            "measured; generate one clip through it first, or give "
            "--video-seconds-per-gpu-minute"
        )
    s = done[0]
    jobs = s.raw.get("stats", {}).get("jobs") if isinstance(s.raw.get("stats"), dict) else None
    return Measured(
        server=s.server,
        model=s.id,
        usd_per_hour=s.usd_per_hour,
        compute_s_per_video_s=float(s.compute_s_per_video_s or 0.0),
        jobs=int(jobs) if isinstance(jobs, int) else 0,
    )
