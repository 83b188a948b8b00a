"""One worker process (and then two) holding thousands of in-flight jobs.

The sandbox runs as its own process (``vidgate sandbox serve``) and emulates one provider
whose jobs take 60-120 s of real time; N jobs (10,000; ``--quick``: 1,000) are queued into a
fresh database with :meth:`Gateway.submit`; then ONE ``vidgate worker --concurrency N``
process submits them all upstream, polls them, downloads and stores every output; then the
same with ``vidgate worker --processes 2 --concurrency N/2`` (two supervised processes sharing
the queue). Sampled every half second: the workers' RSS (``VmRSS``, summed over the process
tree: supervisor and workers) and CPU, and which jobs have left
submitted/running. Afterwards the sandbox's own records give, for every remote job, the
moment it completed (``created_at + latency_s``); the lag to our detection is measured three
ways: the first sample that saw the job leave submitted/running (±0.5 s), the sandbox's
record of our download request (exact; one database write after detection), and the
attempt's ``ended_at`` (the output downloaded, hashed, probed and the job saved).

Knobs (environment): ``VIDGATE_BENCH_POLL_INTERVAL_S`` (the worker's polling floor, passed
as ``VIDGATE_POLL_INTERVAL_S``; default 30), ``VIDGATE_BENCH_PER_PROVIDER`` (HTTP calls in
flight per provider; default the worker's 64), ``VIDGATE_BENCH_LIMIT_S`` (the worker phase's
time limit; default 390), ``VIDGATE_BENCH_PG`` (the PostgreSQL URL for ``--pg``),
``VIDGATE_BENCH_PROFILE=PATH`` (run the worker under cProfile, stats to PATH).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
import yaml

from benchmarks.common import (
    Options,
    Proc,
    child_env,
    cpu_seconds,
    fmt,
    free_port,
    heading,
    rss_kib,
    say,
    summary,
    table,
    tree_cpu_seconds,
    tree_pids,
    vidgate_cmd,
    wait_http,
)
from vidgate.catalog.loader import load_catalog
from vidgate.gateway import Gateway
from vidgate.settings import Settings
from vidgate.types import Job, VideoRequest

NAME = "worker"
#: a provider with no client-side rate limit in the catalog, small outputs (480p, 5 s, no
#: audio) so the benchmark measures the worker, not the disk
OFFERING = "wan-2.2-replicate"
#: the emulated provider's latency (log-normal through these, real seconds): every job
#: takes roughly 70-130 s, longer than the worker needs to submit them all
LATENCY_P50_S = 95.0
LATENCY_P90_S = 110.0
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
_ACTIVE = ("submitting", "submitted", "running", "downloading", "post_processing")
_BEFORE = ("queued", "routing", "submitting", "submitted", "running")


@dataclass
class Sampler:
    """Watches the worker process and the job table while the run goes on."""

    pid: int
    sandbox_pid: int
    db_url: str
    started: float = field(default_factory=time.time)
    rss: list[tuple[float, int]] = field(default_factory=list)
    cpu: list[tuple[float, float, float]] = field(default_factory=list)
    left_running: dict[str, float] = field(default_factory=dict)
    states: Counter[str] = field(default_factory=Counter)
    peak_active: int = 0
    _engine: sa.Engine | None = None
    _sqlite: sqlite3.Connection | None = None

    def _rows(self) -> list[tuple[str, str]]:
        query = "SELECT id, state FROM jobs"
        if self.db_url.startswith("sqlite"):
            if self._sqlite is None:
                path = self.db_url.split("///", 1)[1]
                # read-only and outside any write transaction: WAL readers never block writers
                self._sqlite = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
            return [(str(a), str(b)) for a, b in self._sqlite.execute(query).fetchall()]
        if self._engine is None:
            self._engine = sa.create_engine(self.db_url)
        with self._engine.connect() as conn:
            return [(str(a), str(b)) for a, b in conn.execute(sa.text(query)).all()]

    def sample(self) -> None:
        now = time.time()
        kib = tree_rss_kib(self.pid)
        if kib is not None:
            self.rss.append((now, kib))
        self.cpu.append(
            (now, tree_cpu_seconds(self.pid) or 0.0, cpu_seconds(self.sandbox_pid) or 0.0)
        )
        try:
            rows = self._rows()
        except (sqlite3.Error, sa.exc.SQLAlchemyError):
            return  # a busy moment; the next sample will see it
        self.states = Counter(state for _, state in rows)
        self.peak_active = max(self.peak_active, sum(self.states[s] for s in _ACTIVE))
        for job_id, state in rows:
            if state not in _BEFORE and job_id not in self.left_running:
                self.left_running[job_id] = now

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
        if self._engine is not None:
            self._engine.dispose()

    @property
    def peak_rss_kib(self) -> int:
        return max((k for _, k in self.rss), default=0)


def tree_rss_kib(pid: int) -> int | None:
    """RSS of ``pid`` and its descendants (a supervisor and its worker processes)."""
    sizes = [k for k in (rss_kib(p) for p in tree_pids(pid)) if k is not None]
    return sum(sizes) if sizes else None


def _worker_argv(n: int, processes: int) -> list[str]:
    per_process = -(-n // processes)  # each holds its share of the jobs at once
    argv = vidgate_cmd("worker", "--concurrency", str(per_process))
    return argv + (["--processes", str(processes)] if processes > 1 else [])


def _request(offering_id: str) -> VideoRequest:
    caps = load_catalog().offering(offering_id).capabilities
    return VideoRequest(
        prompt="a lighthouse in a storm, waves breaking",
        duration_s=caps.durations.nearest(5.0),
        resolution=min(caps.resolutions, key=lambda r: r.short_side),
        aspect_ratio=caps.aspect_ratios[0],
    )


def _sandbox_catalog(work: Path, request: VideoRequest) -> Path:
    """The sandbox's own catalog override: only the emulated provider's latency changes
    (vidgate's worker reads the shipped catalog, untouched). The sandbox scales a profile by
    the clip's size, so the profile is divided by that factor to give the real seconds."""
    w, h = request.frame_size
    factor = load_catalog().offering(OFFERING).latency.size_factor(request.duration_s, w * h)
    latency = {"p50": LATENCY_P50_S / factor, "p90": LATENCY_P90_S / factor}
    path = work / "sandbox-catalog.yaml"
    path.write_text(yaml.safe_dump({"offerings": {OFFERING: {"latency": latency}}}))
    return path


def _pg_database(admin_url: str) -> tuple[str, str]:
    """A fresh schema on the PostgreSQL server; returns (url, schema)."""
    schema = "bench_" + uuid.uuid4().hex[:10]
    admin = sa.create_engine(admin_url)
    with admin.begin() as c:
        c.execute(sa.text(f"CREATE SCHEMA {schema}"))
    admin.dispose()
    sep = "&" if "?" in admin_url else "?"
    return f"{admin_url}{sep}options=-csearch_path%3D{schema}", schema


def _drop_pg(admin_url: str, schema: str) -> None:
    admin = sa.create_engine(admin_url)
    with admin.begin() as c:
        c.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
    admin.dispose()


def _ts(dt: datetime | None) -> float | None:
    return dt.timestamp() if dt is not None else None


def _peak_overlap(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    best = cur = 0
    for _, d in edges:
        cur += d
        best = max(best, cur)
    return best


def run_one(n: int, backend: str, options: Options, processes: int = 1) -> dict[str, Any]:
    poll_s = float(os.environ.get("VIDGATE_BENCH_POLL_INTERVAL_S", "30"))
    per_provider = os.environ.get("VIDGATE_BENCH_PER_PROVIDER")
    limit_s = float(os.environ.get("VIDGATE_BENCH_LIMIT_S", "390"))
    work = Path(tempfile.mkdtemp(prefix=f"vidgate-bench-worker-{backend}-"))
    schema = None
    pg_admin = os.environ.get("VIDGATE_BENCH_PG", PG_DEFAULT)
    if backend == "postgresql":
        db_url, schema = _pg_database(pg_admin)
    else:
        db_url = f"sqlite:///{work / 'home' / 'vidgate.db'}"
    port = free_port()
    sandbox_url = f"http://127.0.0.1:{port}"
    sandbox_home = work / "sandbox-home"
    req0 = _request(OFFERING)
    say(
        f"\n[{backend}, {processes} worker process(es)] {n:,} jobs pinned to {OFFERING}; "
        f"emulated latency p50 "
        f"{LATENCY_P50_S:g} s, p90 {LATENCY_P90_S:g} s; worker poll floor "
        f"VIDGATE_POLL_INTERVAL_S={poll_s:g}; work dir {work}"
    )
    sandbox = Proc(
        "sandbox",
        vidgate_cmd("sandbox", "serve", "--port", str(port), "--time-scale", "1"),
        child_env(
            VIDGATE_HOME=str(sandbox_home), VIDGATE_CATALOG=str(_sandbox_catalog(work, req0))
        ),
        work,
    )
    worker: Proc | None = None
    sampler: Sampler | None = None
    try:
        wait_http(f"{sandbox_url}/healthz", sandbox)
        env = child_env(
            VIDGATE_HOME=str(work / "home"),
            VIDGATE_DATABASE_URL=db_url,
            VIDGATE_SANDBOX="1",
            VIDGATE_SANDBOX_URL=sandbox_url,
            VIDGATE_POLL_INTERVAL_S=f"{poll_s:g}",
        )

        # baseline: idle workers' RSS (imports, catalog, an empty claim loop; with
        # --processes, the supervisor too), the same command as the run
        idle_db = f"sqlite:///{work / 'idle' / 'vidgate.db'}"
        with Proc(
            "idle-worker",
            _worker_argv(n, processes),
            {**env, "VIDGATE_HOME": str(work / "idle"), "VIDGATE_DATABASE_URL": idle_db},
            work,
        ) as idle:
            want = 1 if processes == 1 else processes + 1
            for _ in range(120):
                if len(tree_pids(idle.pid)) >= want:
                    break
                time.sleep(0.25)
            time.sleep(6)
            idle_kib = tree_rss_kib(idle.pid) or 0

        # queue the jobs (route, reserve, insert: the same path as `vidgate submit`)
        gw = Gateway(
            Settings(home=work / "home", database_url=db_url, sandbox=True, sandbox_url=sandbox_url)
        )
        t0 = time.perf_counter()
        for i in range(n):
            gw.submit(
                req0.model_copy(update={"prompt": f"benchmark job {i}: {req0.prompt}"}),
                pinned=[OFFERING],
            )
        submit_s = time.perf_counter() - t0
        gw.close()
        say(
            f"  queued {n:,} jobs in {submit_s:.1f} s ({n / submit_s:,.0f}/s); idle worker RSS "
            f"{idle_kib / 1024:.0f} MiB"
        )

        argv = _worker_argv(n, processes)
        profile = os.environ.get("VIDGATE_BENCH_PROFILE")
        if profile:  # the worker's main thread under cProfile (stats written on exit)
            argv = [argv[0], "-m", "cProfile", "-o", profile, "-m", *argv[2:]]
        if per_provider:
            argv += ["--per-provider", per_provider]
        worker = Proc("worker", argv, env, work)
        sampler = Sampler(worker.pid, sandbox.pid, db_url)
        started = time.time()
        deadline = time.monotonic() + limit_s
        last_print = 0.0
        outcome = "all jobs finished"
        while True:
            time.sleep(0.5)
            sampler.sample()
            terminal = sum(
                k for s, k in sampler.states.items() if s not in (*_ACTIVE, "queued", "routing")
            )
            elapsed = time.time() - started
            if elapsed - last_print >= 15:
                last_print = elapsed
                c = sampler.states
                say(
                    f"  t={elapsed:5.0f}s  queued {c['queued'] + c['routing']:>6,}  "
                    f"in flight {sum(c[s] for s in _ACTIVE):>6,}  finished {terminal:>6,}  "
                    f"RSS {(sampler.rss[-1][1] if sampler.rss else 0) / 1024:6.0f} MiB"
                )
            if terminal >= n:
                break
            if not worker.alive():
                outcome = f"the worker exited ({worker.popen.returncode})"
                break
            if time.monotonic() > deadline:
                outcome = f"stopped at the {limit_s:.0f} s limit"
                break
        stopped = time.time()
        run_s = stopped - started
        worker_cpu = tree_cpu_seconds(worker.pid) or 0.0
        sandbox_cpu = cpu_seconds(sandbox.pid) or 0.0
        worker.stop(timeout=30)
        stats = httpx.get(f"{sandbox_url}/sandbox/stats", timeout=30).json()
        figures = _analyse(n, sandbox_home, db_url, sampler, stats, started, stopped)
    finally:
        if worker is not None:
            worker.stop()
        sandbox.stop()
        if sampler is not None:
            sampler.close()
        if schema is not None:
            _drop_pg(pg_admin, schema)
        if not options.keep:
            shutil.rmtree(work, ignore_errors=True)
    figures.update(
        {
            "backend": backend,
            "processes": processes,
            "offering": OFFERING,
            "latency_profile_s": {"p50": LATENCY_P50_S, "p90": LATENCY_P90_S},
            "poll_interval_s": poll_s,
            "per_provider": int(per_provider) if per_provider else 64,
            "outcome": outcome,
            "queue_s": round(submit_s, 1),
            "queue_per_s": round(n / submit_s, 1),
            "worker_run_s": round(run_s, 1),
            "worker_cpu_s": round(worker_cpu, 1),
            "sandbox_cpu_s": round(sandbox_cpu, 1),
            "idle_rss_mib": round(idle_kib / 1024, 1),
        }
    )
    return figures


def _lag(values: list[float], due: int, stopped: float, dues: list[float]) -> dict[str, Any]:
    """Percentiles of the lags seen, and how many completed remote jobs were not detected
    before the run stopped (their lag is at least ``stopped − done``: censored)."""
    out: dict[str, Any] = {k: round(v, 3) for k, v in summary(values).items()}
    out["not_by_end"] = due - len(values)
    if due > len(values):
        out["not_by_end_at_least_s"] = round(stopped - min(dues), 1) if dues else None
    return out


def _analyse(
    n: int,
    sandbox_home: Path,
    db_url: str,
    sampler: Sampler | None,
    stats: dict[str, Any],
    started: float,
    stopped: float,
) -> dict[str, Any]:
    # the sandbox's own record: when each remote job was done, and our first download of it
    sdb = sqlite3.connect(f"file:{sandbox_home / 'sandbox' / 'sandbox.db'}?mode=ro", uri=True)
    remote = {
        rid: (created, latency)
        for rid, created, latency in sdb.execute("SELECT id, created_at, latency_s FROM jobs")
    }
    downloads = dict(
        sdb.execute("SELECT detail, MIN(at) FROM events WHERE kind='download' GROUP BY detail")
    )
    sdb.close()

    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        docs = [
            Job.model_validate_json(d) for (d,) in conn.execute(sa.text("SELECT doc FROM jobs"))
        ]
    engine.dispose()

    states = Counter(j.state.value for j in docs)
    left_running = sampler.left_running if sampler is not None else {}
    lag_seen: list[float] = []
    lag_download: list[float] = []
    lag_stored: list[float] = []
    in_flight: list[tuple[float, float]] = []
    remote_spans: list[tuple[float, float]] = []
    due: list[float] = []  # remote completion times before the run stopped
    missed: dict[str, list[float]] = {"seen": [], "download": [], "stored": []}
    ended: list[float] = []
    for job in docs:
        for a in job.attempts:
            in_flight.append((a.started_at.timestamp(), _ts(a.ended_at) or stopped))
            if a.ended_at is not None and a.state.value == "succeeded":
                ended.append(a.ended_at.timestamp())
            rid = (a.provider_job or {}).get("remote_id")
            if rid not in remote:
                continue
            created, latency = remote[rid]
            done = created + latency
            remote_spans.append((created, done))
            if done >= stopped:
                continue
            due.append(done)
            seen = left_running.get(job.id)
            if seen is not None:
                lag_seen.append(seen - done)
            else:
                missed["seen"].append(done)
            if rid in downloads:
                lag_download.append(float(downloads[rid]) - done)
            else:
                missed["download"].append(done)
            if a.ended_at is not None and a.state.value == "succeeded":
                lag_stored.append(a.ended_at.timestamp() - done)
            else:
                missed["stored"].append(done)
    creates = sorted(c for c, _ in remote.values())

    peak_rss = sampler.peak_rss_kib if sampler else 0
    peak_in_flight = _peak_overlap(in_flight)
    return {
        "jobs": n,
        "states": dict(states),
        "finished_ok": states.get("succeeded", 0),
        "peak_in_flight": peak_in_flight,
        "peak_in_flight_sampled": sampler.peak_active if sampler else None,
        "peak_remote_running": _peak_overlap(remote_spans),
        "peak_rss_mib": round(peak_rss / 1024, 1),
        "remote_done_before_stop": len(due),
        "lag_left_running_s": _lag(lag_seen, len(due), stopped, missed["seen"]),
        "lag_download_request_s": _lag(lag_download, len(due), stopped, missed["download"]),
        "lag_stored_s": _lag(lag_stored, len(due), stopped, missed["stored"]),
        # how fast the one worker pushed creates upstream, and finished jobs
        "upstream_creates_per_s": round(len(creates) / max(1e-9, creates[-1] - started), 1)
        if creates
        else None,
        "all_created_after_s": round(creates[-1] - started, 1) if creates else None,
        "completions_per_s": round(len(ended) / max(1e-9, max(ended) - min(ended)), 1)
        if len(ended) > 1
        else None,
        "sandbox_creates": stats.get("creates"),
        "duplicate_submissions": stats.get("duplicate_submissions"),
        "rss_series_mib": [
            [round(t - sampler.started, 1), round(k / 1024, 1)] for t, k in sampler.rss[::4]
        ]
        if sampler
        else [],
    }


def _report(f: dict[str, Any]) -> None:
    per_job_kib = (
        (f["peak_rss_mib"] - f["idle_rss_mib"]) * 1024 / f["peak_in_flight"]
        if f["peak_in_flight"]
        else float("nan")
    )
    f["rss_per_in_flight_job_kib"] = round(per_job_kib, 1)
    say(
        table(
            ["figure", "value"],
            [
                ["jobs queued", f"{f['jobs']:,}"],
                ["jobs finished (succeeded)", f"{f['finished_ok']:,}"],
                ["final states", ", ".join(f"{k} {v:,}" for k, v in sorted(f["states"].items()))],
                ["run", f"{f['outcome']} after {f['worker_run_s']:.0f} s"],
                [
                    "upstream creates",
                    f"all {f['sandbox_creates']:,} made {f['all_created_after_s']:.0f} s after "
                    f"the worker started ({f['upstream_creates_per_s']:.0f}/s)",
                ],
                [
                    "completions (output stored, job saved)",
                    f"{f['completions_per_s'] or 0:.1f}/s between the first and the last",
                ],
                ["peak jobs in flight (attempt open)", f"{f['peak_in_flight']:,}"],
                ["peak remote jobs running at the sandbox", f"{f['peak_remote_running']:,}"],
                [
                    "worker RSS: idle / peak",
                    f"{f['idle_rss_mib']:.0f} / {f['peak_rss_mib']:.0f} MiB",
                ],
                ["RSS per in-flight job (peak − idle)", f"{per_job_kib:.1f} KiB"],
                [
                    "worker CPU / sandbox CPU",
                    f"{f['worker_cpu_s']:.0f} s / {f['sandbox_cpu_s']:.0f} s",
                ],
                ["duplicate submissions", f"{f['duplicate_submissions']}"],
            ],
            align="ll",
        )
    )
    say()
    rows = []
    for label, key in (
        ("left submitted/running (sampled ±0.5 s)", "lag_left_running_s"),
        ("download request reached the sandbox", "lag_download_request_s"),
        ("output stored, job saved (ended_at)", "lag_stored_s"),
    ):
        s = f[key]
        rows.append(
            [
                label,
                f"{int(s.get('n', 0)):,}",
                f"{s.get('not_by_end', 0):,}",
                fmt(s.get("p50"), 2),
                fmt(s.get("p90"), 2),
                fmt(s.get("p99"), 2),
                fmt(s.get("max"), 2),
            ]
        )
    say(
        f"  lag after the remote job completed, seconds ({f['remote_done_before_stop']:,} "
        "remote jobs completed before the run stopped):"
    )
    say(table(["detected when", "n", "not by end", "p50", "p90", "p99", "max"], rows))
    late = f["lag_stored_s"].get("not_by_end_at_least_s")
    if late is not None:
        say(
            f"  ('not by end': completed remotely but not yet detected/stored when the run "
            f"stopped; the oldest of them had waited {late:.0f} s — the percentiles above "
            "leave them out, so they understate the lag)"
        )


def run(options: Options) -> dict[str, Any]:
    n = options.jobs or (1_000 if options.quick else 10_000)
    heading(f"worker: one and two processes holding {n:,} in-flight sandbox jobs")
    out: dict[str, Any] = {}
    for backend in ["sqlite"] + (["postgresql"] if options.pg else []):
        for processes in (1, 2):
            f = run_one(n, backend, options, processes)
            _report(f)
            out[backend if processes == 1 else f"{backend}, {processes} processes"] = f
    _side_by_side(out)
    return out


def _side_by_side(out: dict[str, Any]) -> None:
    say("\n  side by side (lag: remote job completed → output stored, seconds):")
    rows = []
    for name, f in out.items():
        lag = f["lag_stored_s"]
        rows.append(
            [
                name,
                f"{f['finished_ok']:,}/{f['jobs']:,}",
                fmt(lag.get("p50"), 2),
                fmt(lag.get("p99"), 2),
                f"{lag.get('not_by_end', 0):,}",
                fmt(f.get("rss_per_in_flight_job_kib"), 1),
                f"{f['worker_cpu_s']:.0f}",
            ]
        )
    say(
        table(
            ["run", "succeeded", "lag p50", "lag p99", "not by end", "KiB/job", "worker CPU s"],
            rows,
        )
    )
