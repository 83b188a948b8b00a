"""Replay a workload through a real :class:`Gateway` against the sandbox, with its faults.

N requests are sampled from the workload's class mix (seeded) and run concurrently (bounded)
through the gateway in sandbox mode — routing, breakers, rate limits, fallbacks, polling,
downloads and cost settlement all run for real; only the providers are emulated. The sandbox
is started in-process unless ``VIDGATE_SANDBOX_URL`` (``settings.sandbox_url``) names a
running one.

Time is compressed: the sandbox's emulated latencies are multiplied by ``time_scale`` (0.02:
a 65 s Veo job takes 1.3 s), and so are the gateway's clocks that model the world's pace —
the polling interval, how long a tripped breaker stays open, and the providers' rate-limit
windows (a "30/minute" limit becomes 3,000/minute of wall-clock at 0.01), so a run of
minutes of real traffic plays out in seconds with the same proportions. Fault windows
(``start_s``/``end_s``) and ``retry_after_s`` are wall-clock seconds of the emulation.

Not scaled: our own work — downloading each clip, and the sandbox rendering a real MP4 the
first time a shape is asked for (a second or two each). So latency is reported twice: end to
end (submission to stored result), and until the provider's output was ready (the moment the
job starts downloading), which is the emulated latency and the one scaled back to real
seconds (÷ time scale). That figure also carries the gateway's own processing time, which
is not compressed and is magnified by 1 / time scale: with many jobs in flight on one machine
it can dominate; a lower concurrency or a larger time scale measures provider latency more
faithfully, a higher one measures this process's capacity.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

from vidgate.catalog.loader import Catalog, load_catalog
from vidgate.catalog.schema import CatalogData, Offering
from vidgate.errors import ConfigError, InvalidRequest, VidgateError
from vidgate.gateway import Gateway
from vidgate.planner.plan import with_price_overrides
from vidgate.planner.workload import Fault, Workload
from vidgate.sandbox.core import FaultConfig, FaultRule
from vidgate.settings import Settings
from vidgate.types import Job, JobState, VideoRequest

DEFAULT_TIME_SCALE = 0.02
#: the fastest the gateway polls during a simulation (seconds of wall-clock)
MIN_POLL_S = 0.05
#: the longest a provider call may take in a simulation; a "timeout" or "drop" fault hangs
#: one second longer, so the client really times out (these faults cost wall-clock time)
HTTP_TIMEOUT_S = 20.0

ProgressCallback = Callable[[int, int, Job | None], None]


@dataclass
class JobOutcome:
    index: int
    klass: str
    job_id: str | None
    state: str
    attempts: list[tuple[str, str, str | None]]  # (offering, attempt state, error code)
    cost_usd: float
    #: wall-clock seconds from submission to the stored result (includes our download)
    latency_s: float | None
    error: str | None = None
    skipped: int = 0  # offerings the runner passed over (breaker open, rate limit)
    #: wall-clock seconds from submission until the provider's output was ready to download
    ready_s: float | None = None


@dataclass
class SimReport:
    workload: str
    jobs: int
    concurrency: int
    seed: int | None
    time_scale: float
    wall_s: float
    outcomes: list[JobOutcome]
    sandbox: dict[str, Any]
    faults: list[dict[str, Any]] = field(default_factory=list)

    @property
    def succeeded(self) -> int:
        return sum(1 for o in self.outcomes if o.state == JobState.SUCCEEDED.value)

    @property
    def success_rate(self) -> float:
        return self.succeeded / len(self.outcomes) if self.outcomes else 0.0

    @property
    def fallbacks(self) -> int:
        """Jobs that needed more than one attempt."""
        return sum(1 for o in self.outcomes if len(o.attempts) > 1)

    @property
    def duplicate_submissions(self) -> int:
        return int(self.sandbox.get("duplicate_submissions", 0))

    def states(self) -> dict[str, int]:
        return dict(Counter(o.state for o in self.outcomes).most_common())

    def attempts_by_offering(self) -> dict[str, dict[str, int]]:
        out: dict[str, Counter[str]] = {}
        for o in self.outcomes:
            for offering, state, _code in o.attempts:
                out.setdefault(offering, Counter())[state] += 1
        return {k: dict(v.most_common()) for k, v in sorted(out.items())}

    def attempts_by_outcome(self) -> dict[str, int]:
        c: Counter[str] = Counter()
        for o in self.outcomes:
            for _offering, state, code in o.attempts:
                c[f"{state}:{code}" if code else state] += 1
        return dict(c.most_common())

    def cost_by_class(self) -> dict[str, float]:
        c: dict[str, float] = {}
        for o in self.outcomes:
            c[o.klass] = c.get(o.klass, 0.0) + o.cost_usd
        return c

    def latency(self, ready: bool = False) -> dict[str, float | None]:
        """Percentiles over succeeded jobs: end to end, or until the output was ready."""
        xs = sorted(
            x
            for o in self.outcomes
            if _ok(o) and (x := o.ready_s if ready else o.latency_s) is not None
        )
        return {p: percentile(xs, q) for p, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))}

    def to_dict(self) -> dict[str, Any]:
        wall = self.latency()
        ready = self.latency(ready=True)
        return {
            "workload": self.workload,
            "jobs": self.jobs,
            "concurrency": self.concurrency,
            "seed": self.seed,
            "time_scale": self.time_scale,
            "wall_s": round(self.wall_s, 3),
            "success_rate": round(self.success_rate, 4),
            "states": self.states(),
            "fallbacks": self.fallbacks,
            "skipped_offerings": sum(o.skipped for o in self.outcomes),
            "attempts": sum(len(o.attempts) for o in self.outcomes),
            "attempts_by_offering": self.attempts_by_offering(),
            "attempts_by_outcome": self.attempts_by_outcome(),
            "cost_usd": round(sum(o.cost_usd for o in self.outcomes), 2),
            "cost_usd_by_class": {k: round(v, 2) for k, v in self.cost_by_class().items()},
            "latency_s": {
                # emulation wall-clock, submission -> stored result (download included)
                "wall": {k: _r(v, 3) for k, v in wall.items()},
                # emulation wall-clock, submission -> output ready at the provider
                "ready_wall": {k: _r(v, 3) for k, v in ready.items()},
                # the same scaled back to real seconds (÷ time scale)
                "real": {
                    k: _r(v / self.time_scale if v is not None else None, 1)
                    for k, v in ready.items()
                },
            },
            "sandbox": self.sandbox,
            "faults": self.faults,
            "errors": dict(Counter(o.error for o in self.outcomes if o.error).most_common(5)),
        }


def _ok(o: JobOutcome) -> bool:
    return o.state == JobState.SUCCEEDED.value


def _r(x: float | None, nd: int) -> float | None:
    return round(x, nd) if x is not None else None


def percentile(xs: list[float], q: float) -> float | None:
    """Linear-interpolated percentile of sorted values (None when there are none)."""
    if not xs:
        return None
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


# --- compressing time -------------------------------------------------------------------------

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\w+)\s*$")


def scaled_rate_limit(spec: str, time_scale: float) -> str:
    """Scale a rate limit with time: "30/minute" at 0.01 -> "3000/minute" of wall-clock."""
    m = _RATE.match(spec)
    if m is None or time_scale <= 0:
        return spec
    return f"{max(1, math.ceil(int(m.group(1)) / time_scale))}/{m.group(2)}"


def simulation_catalog(catalog: Catalog, workload: Workload, time_scale: float) -> Catalog:
    cat = with_price_overrides(catalog, workload, datetime.now(UTC).date())
    providers = {
        name: info.model_copy(update={"rate_limit": scaled_rate_limit(info.rate_limit, time_scale)})
        if info.rate_limit
        else info
        for name, info in cat.providers.items()
    }
    return Catalog(CatalogData(**{**dict(cat.data), "providers": providers}))


def simulation_settings(base: Settings, time_scale: float) -> Settings:
    return base.model_copy(
        update={
            "sandbox": True,
            "sandbox_time_scale": time_scale,
            "poll_interval_s": max(MIN_POLL_S, base.poll_interval_s * time_scale),
            "breaker_open_s": max(0.2, base.breaker_open_s * time_scale),
            # not scaled: downloads and first renders of the emulated clips are real work
            "http_timeout_s": min(base.http_timeout_s, HTTP_TIMEOUT_S),
        }
    )


# --- faults -----------------------------------------------------------------------------------


def fault_rules(
    faults: list[Fault],
    catalog: Catalog,
    served_by: Callable[[Offering], str],
    t0: float,
) -> list[FaultRule]:
    """The workload's faults as sandbox rules, on the protocols the sandbox actually serves.

    An offering is ``(protocol, provider model id)``; a model is every offering of it; a
    provider is one rule per protocol it is served through — unless another provider shares
    that protocol, in which case its offerings are named one by one.
    """
    rules: list[FaultRule] = []
    offerings = list(catalog.offerings.values())
    for f in faults:
        window = {
            "start": t0 + f.start_s if f.start_s is not None else None,
            "end": t0 + f.end_s if f.end_s is not None else None,
        }
        base = {"kind": f.kind, "rate": f.rate, "retry_after_s": f.retry_after_s, **window}
        targets: list[Offering] | None = None
        if f.offering is not None:
            targets = [catalog.offering(f.offering)]
        elif f.model is not None:
            targets = [o for o in offerings if f.model in (o.model, o.provider_model_id)]
        elif f.provider is not None:
            mine = [o for o in offerings if o.provider == f.provider]
            for protocol in sorted({served_by(o) for o in mine}):
                shared = any(
                    o.provider != f.provider and served_by(o) == protocol for o in offerings
                )
                if shared:
                    rules.extend(
                        FaultRule(protocol=protocol, model=o.provider_model_id, **base)
                        for o in mine
                        if served_by(o) == protocol
                    )
                else:
                    rules.append(FaultRule(protocol=protocol, **base))
            continue
        else:
            rules.append(FaultRule(**base))
            continue
        seen: set[tuple[str, str]] = set()
        for o in targets:
            key = (served_by(o), o.provider_model_id)
            if key not in seen:
                seen.add(key)
                rules.append(FaultRule(protocol=key[0], model=key[1], **base))
    return rules


# --- the run ----------------------------------------------------------------------------------


def _outcome(index: int, klass: str, job: Job, ready_at: datetime | None) -> JobOutcome:
    attempts = [
        (a.offering_id, a.state.value, (a.error or {}).get("code") if a.error else None)
        for a in job.attempts
    ]
    skipped = len((job.route or {}).get("skipped", []))
    return JobOutcome(
        index=index,
        klass=klass,
        job_id=job.id,
        state=job.state.value,
        attempts=attempts,
        cost_usd=float(job.cost_usd or 0.0),
        latency_s=job.latency_s,
        error=(job.error or {}).get("code") if job.error else None,
        skipped=skipped,
        ready_s=(ready_at - job.created_at).total_seconds() if ready_at is not None else None,
    )


async def _stats(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    resp = await client.get(f"{url}/sandbox/stats")
    resp.raise_for_status()
    data: dict[str, Any] = resp.json()
    return data


def _delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    def sub(a: Any, b: Any) -> Any:
        if isinstance(a, dict):
            keys = set(a) | set(b or {})
            d = {k: sub(a.get(k, 0), (b or {}).get(k, 0)) for k in sorted(keys)}
            return {k: v for k, v in d.items() if v}
        if isinstance(a, int | float) and isinstance(b, int | float):
            return a - b
        return a

    keys = ("creates", "by_protocol", "by_model", "duplicate_submissions", "events")
    return {k: sub(after.get(k, 0), before.get(k, 0)) for k in keys}


def check_parameters(jobs: int, concurrency: int, time_scale: float) -> None:
    if jobs < 1 or jobs > 100_000:
        raise InvalidRequest(f"jobs must be between 1 and 100000 (got {jobs})")
    if concurrency < 1 or concurrency > 1024:
        raise InvalidRequest(f"concurrency must be between 1 and 1024 (got {concurrency})")
    if not 0 < time_scale <= 1:
        raise InvalidRequest(f"time scale must be in (0, 1] (got {time_scale:g})")


async def simulate_async(
    workload: Workload,
    *,
    jobs: int = 200,
    seed: int | None = None,
    settings: Settings | None = None,
    concurrency: int = 32,
    catalog: Catalog | None = None,
    time_scale: float = DEFAULT_TIME_SCALE,
    on_progress: ProgressCallback | None = None,
) -> SimReport:
    check_parameters(jobs, concurrency, time_scale)
    render_cache = None
    if settings is None:
        # Jobs go to a throwaway home, but rendered clips are kept with the regular
        # sandbox's (VIDGATE_HOME/sandbox/renders): rendering an MP4 takes a second or more
        # the first time, a cost no provider has, and it would swamp the emulated latency.
        try:
            render_cache = Settings().sandbox_home() / "renders"
        except (ValidationError, OSError) as e:
            raise ConfigError(f"settings: {str(e).splitlines()[0]}") from None
    with tempfile.TemporaryDirectory(prefix="vidgate-sim-") as tmp:
        base = settings or Settings(home=Path(tmp))
        return await _run(
            workload,
            base=base,
            catalog=catalog or load_catalog(base.catalog),
            jobs=jobs,
            seed=seed,
            concurrency=concurrency,
            time_scale=time_scale,
            on_progress=on_progress,
            render_cache=render_cache,
        )


async def _run(
    workload: Workload,
    *,
    base: Settings,
    catalog: Catalog,
    jobs: int,
    seed: int | None,
    concurrency: int,
    time_scale: float,
    on_progress: ProgressCallback | None,
    render_cache: Path | None = None,
) -> SimReport:
    workload.checked(catalog)
    cat = simulation_catalog(catalog, workload, time_scale)
    s = simulation_settings(base, time_scale)
    server = None
    if not s.sandbox_url:
        from vidgate.sandbox.app import SandboxServer

        server = SandboxServer(s.sandbox_home(), cat, time_scale=time_scale).start()
        if render_cache is not None:
            server.core.cache = render_cache
        s = s.model_copy(update={"sandbox_url": server.url})
    url = str(s.sandbox_url).rstrip("/")
    gw = Gateway(s, catalog=cat)
    client = httpx.AsyncClient(timeout=10, transport=httpx.AsyncHTTPTransport(retries=0))
    previous: dict[str, Any] | None = None
    try:
        try:
            if server is None:
                resp = await client.get(f"{url}/sandbox/faults")
                resp.raise_for_status()
                previous = resp.json()
                await client.put(f"{url}/sandbox/time-scale", json={"time_scale": time_scale})
            before = await _stats(client, url)
        except httpx.HTTPError as e:
            raise ConfigError(f"cannot reach the sandbox at {url}: {e}") from None

        rng = random.Random(seed)
        picks = rng.choices(
            range(len(workload.classes)), weights=[c.share for c in workload.classes], k=jobs
        )
        run_id = uuid.uuid4().hex[:8]
        t0 = time.time()
        rules = fault_rules(workload.faults, cat, _served_by, t0)
        config = FaultConfig(rules=rules, hang_s=s.http_timeout_s + 1.0)
        (await client.put(f"{url}/sandbox/faults", json=config.model_dump())).raise_for_status()

        sem = asyncio.Semaphore(concurrency)
        done = 0
        started = time.monotonic()

        async def one(k: int, ci: int) -> JobOutcome:
            nonlocal done
            c = workload.classes[ci]
            req = _request(workload, ci, f"simulated clip {k} of run {run_id} ({c.name})")
            ready_at: datetime | None = None

            def seen(j: Job) -> None:
                # the first time the job downloads, the provider's output was ready: the
                # emulated generation is over, our own copying begins
                nonlocal ready_at
                if ready_at is None and j.state is JobState.DOWNLOADING:
                    ready_at = datetime.now(UTC)

            async with sem:
                try:
                    job = gw.submit(req, policy=c.policy, pinned=c.pinned)
                    job = await gw.run(job.id, on_progress=seen)
                    out = _outcome(k, c.name, job, ready_at)
                except VidgateError as e:  # no route (every pin's breaker open...)
                    job = None
                    out = JobOutcome(k, c.name, None, "unroutable", [], 0.0, None, e.code)
            done += 1
            if on_progress is not None:
                on_progress(done, jobs, job)
            return out

        outcomes = await asyncio.gather(*(one(k, ci) for k, ci in enumerate(picks)))
        wall = time.monotonic() - started
        after = await _stats(client, url)
    finally:
        try:
            if previous is not None:
                await client.put(f"{url}/sandbox/faults", json=previous)
            elif server is None:
                await client.put(f"{url}/sandbox/faults", json=FaultConfig().model_dump())
        except httpx.HTTPError:
            pass
        await client.aclose()
        await gw.aclose()
        gw.close()
        if server is not None:
            server.stop()
    sandbox = _delta(before, after)
    sandbox["duplicate_fingerprints"] = after.get("duplicate_fingerprints", [])[:5]
    return SimReport(
        workload=workload.name,
        jobs=jobs,
        concurrency=concurrency,
        seed=seed,
        time_scale=time_scale,
        wall_s=wall,
        outcomes=list(outcomes),
        sandbox=sandbox,
        faults=[r.model_dump(exclude_none=True) for r in rules],
    )


def _served_by(offering: Offering) -> str:
    # the gateway serves each offering through its own protocol (in sandbox mode it routes
    # only the offerings whose protocol the sandbox emulates)
    return offering.protocol


def _request(workload: Workload, index: int, prompt: str) -> VideoRequest:
    c = workload.classes[index]
    return c.request.to_request(workload.clip_seconds, prompt)


def simulate(
    workload: Workload,
    jobs: int = 200,
    seed: int | None = None,
    settings: Settings | None = None,
    concurrency: int = 32,
    *,
    catalog: Catalog | None = None,
    time_scale: float = DEFAULT_TIME_SCALE,
    on_progress: ProgressCallback | None = None,
) -> SimReport:
    """Run :func:`simulate_async` to completion (for scripts and the CLI)."""
    return asyncio.run(
        simulate_async(
            workload,
            jobs=jobs,
            seed=seed,
            settings=settings,
            concurrency=concurrency,
            catalog=catalog,
            time_scale=time_scale,
            on_progress=on_progress,
        )
    )
