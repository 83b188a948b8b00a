"""`make chaos`: crash the worker over and over and prove no job is lost or paid twice.

A sandbox runs as its own process (with injected faults: refused creates, dropped create
responses, status-call outages). 200 jobs are submitted across several providers' wire
protocols. Worker processes are then killed with SIGKILL again and again: half of the runs
arm one named crash point (rotating through every window that matters: before the create,
after the create but before its id is stored, while polling, while downloading, before the
final write), the other half are killed from outside at a random moment. Then one clean
worker finishes whatever is left, and the audit reads the sandbox's own records and ours.

Exit status 0 only if: no job is lost or left unfinished; no provider job was created twice
(the sandbox counts identical creates); every ambiguous create ended as reconciled or
needs_reconciliation; every attempt has exactly one ledger row and each job's ledger adds up
to its cost.

Then the **bursts** (``--scenario burst``, run by default after the classic run): 60 jobs
submitted at once to ONE provider (the cheapest 480p 4 s offering) and to several, the
worker(s) SIGKILLed at least 8 times in the first seconds and a few times later, the sandbox
dropping some create responses. Beyond the checks above: ``needs_reconciliation`` at most
2 % of the jobs, and no job counted more attempts than it sent creates plus refusals. The
same burst with SIGTERM restarts instead: 0 parked, 0 duplicates, every job succeeds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

POINTS = [
    "before_submit",
    "after_create",
    "while_polling",
    "while_downloading",
    "before_final_write",
]
OFFERINGS = [
    "luma-ray-3.14-luma",
    "kling-3.0-kling",
    "hailuo-2.3-minimax",
    "runway-gen-4.5-aleph-runway",
    "grok-imagine-xai",
    "wan-2.6-fal",
    "seedance-2.0-byteplus",
    "veo-3.1-fast-gemini",
]


def live_offerings(gw: Any) -> list[str]:
    """OFFERINGS the router still serves today (the catalog retires offerings by date)."""
    from vidgate.errors import NoRoute
    from vidgate.types import VideoRequest

    live = []
    for oid in OFFERINGS:
        caps = gw.catalog.offering(oid).capabilities
        probe = VideoRequest(
            prompt="probe",
            duration_s=caps.durations.nearest(5.0),
            resolution=min(caps.resolutions, key=lambda r: r.short_side),
            aspect_ratio=caps.aspect_ratios[0],
        )
        try:
            gw.route(probe, pinned=[oid])
        except NoRoute:
            continue
        live.append(oid)
    return live


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", choices=["all", "classic", "burst"], default="all")
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--kills", type=int, default=24, help="minimum worker kills")
    ap.add_argument("--burst-jobs", type=int, default=60)
    ap.add_argument("--burst-kills", type=int, default=8, help="SIGKILLs in the first seconds")
    ap.add_argument(
        "--burst-modes",
        default="one-kill,many-kill,one-term,one-kill-2procs",
        help="comma-separated: {one,many}-{kill,term}[-2procs]",
    )
    ap.add_argument("--drop-rate", type=float, default=0.02, help="dropped create responses")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    args = ap.parse_args(argv)
    ok = True
    if args.scenario in ("all", "classic"):
        ok = _with_sandbox(args, None, run) == 0 and ok
    if args.scenario in ("all", "burst"):
        for mode in args.burst_modes.split(","):
            ok = _with_sandbox(args, mode, burst) == 0 and ok
    print("ALL CHAOS PASSED" if ok else "SOME CHAOS FAILED")
    return 0 if ok else 1


def _with_sandbox(args: argparse.Namespace, mode: str | None, fn: Any) -> int:
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="vidgate-chaos-"))
    port = free_port()
    sandbox_url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDGATE_")}
    env.update(
        {
            "VIDGATE_HOME": str(work / "home"),
            "VIDGATE_SANDBOX": "1",
            "VIDGATE_SANDBOX_URL": sandbox_url,
            "VIDGATE_POLL_INTERVAL_S": "0.1",
            "VIDGATE_HTTP_TIMEOUT_S": "2",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if args.database_url:
        env["VIDGATE_DATABASE_URL"] = args.database_url
    faults: dict[str, Any] = {
        "hang_s": 4,
        "rules": [
            {"kind": "unavailable", "rate": 0.03},
            {"kind": "drop", "rate": 0.02},
            {"kind": "poll_unavailable", "rate": 0.02},
            {"kind": "fail", "rate": 0.02},
        ],
    }
    if mode is not None:
        # 60 creates at once on a shared 2-core machine take seconds to answer: a 2 s limit
        # would make load, not crashes, the source of ambiguity. Dropped responses still
        # time out (the sandbox hangs them for hang_s, then closes the connection).
        env["VIDGATE_HTTP_TIMEOUT_S"] = "10"
        # The bursts isolate the crash windows: only dropped create responses are injected.
        # SIGTERM bursts inject none: they prove a graceful restart alone parks nothing.
        rate = args.drop_rate if "kill" in mode else 0.0
        faults = {"hang_s": 4, "rules": [{"kind": "drop", "rate": rate}]}
    (work / "faults.json").write_text(json.dumps(faults))
    sandbox = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vidgate",
            "sandbox",
            "serve",
            "--port",
            str(port),
            "--time-scale",
            "0.02",
            "--faults",
            str(work / "faults.json"),
        ],
        env={**env, "VIDGATE_HOME": str(work / "sandbox-home")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{sandbox_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        print(
            f"\n=== {mode or 'classic'} === sandbox pid {sandbox.pid} on {sandbox_url}; work {work}"
        )
        if mode is None:
            return int(fn(args, rng, env, work, sandbox_url))
        return int(fn(args, rng, env, work, sandbox_url, mode))
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=10)


def run(
    args: argparse.Namespace, rng: random.Random, env: dict[str, str], work: Path, sandbox_url: str
) -> int:
    os.environ.update({k: v for k, v in env.items() if k.startswith("VIDGATE_")})
    from vidgate.gateway import Gateway
    from vidgate.settings import Settings
    from vidgate.types import AttemptState, VideoRequest

    gw = Gateway(Settings())
    live = live_offerings(gw)
    ids: list[str] = []

    def submit(n: int) -> None:
        for _ in range(n):
            i = len(ids)
            offering = gw.catalog.offering(live[i % len(live)])
            caps = offering.capabilities
            request = VideoRequest(
                prompt=f"chaos job {i}",
                duration_s=caps.durations.nearest(5.0),
                resolution=min(caps.resolutions, key=lambda r: r.short_side),
                aspect_ratio=caps.aspect_ratios[0],
            )
            ids.append(gw.submit(request, pinned=[offering.id]).id)

    submit(args.jobs)
    print(f"submitted {len(ids)} jobs across {len(live)} offerings")

    crash_log = work / "crashes.log"
    kills = 0
    hit: Counter[str] = Counter()
    run_no = 0
    while kills < args.kills or set(hit) < set(POINTS):
        run_no += 1
        if sum(not gw.store.get(i).state.terminal for i in ids) < 20:
            submit(40)  # keep work in flight until every crash window has been hit
            print(f"submitted 40 more jobs ({len(ids)} in all)")
        worker_env = dict(env)
        armed = None
        if run_no % 2 == 1:
            missing = [p for p in POINTS if p not in hit] or POINTS
            armed = missing[(run_no // 2) % len(missing)]
            worker_env["VIDGATE_CRASH_POINTS"] = f"{armed}:0.15"
            worker_env["VIDGATE_CRASH_LOG"] = str(crash_log)
        proc = subprocess.Popen(
            [sys.executable, "-m", "vidgate", "worker", "--lease", "2", "--concurrency", "16"],
            env=worker_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Start the clock once the worker is up (its heartbeat row): on a loaded machine
        # Python's start-up alone can outlast the kill window, and a kill before the first
        # claim tests nothing.
        until = time.monotonic() + 60
        while (
            time.monotonic() < until
            and proc.poll() is None
            and proc.pid not in {r["pid"] for r in gw.store.live_workers(within_s=30)}
        ):
            time.sleep(0.05)
        try:
            proc.wait(timeout=rng.uniform(1.5, 5.0))
            how = (
                f"crashed itself at {armed}"
                if proc.returncode == -signal.SIGKILL
                else f"exited {proc.returncode}"
            )
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            how = "killed -9 from outside"
        kills += 1
        hit = Counter(crash_log.read_text().split()) if crash_log.exists() else Counter()
        done = sum(gw.store.get(i).state.terminal for i in ids)
        print(f"run {run_no:2d}: worker {how}; {done}/{len(ids)} jobs terminal")
        time.sleep(2.2)  # let the dead worker's leases lapse

    print("final clean worker…")
    final = subprocess.Popen(
        [sys.executable, "-m", "vidgate", "worker", "--lease", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not all(gw.store.get(i).state.terminal for i in ids):
        time.sleep(0.5)
    final.send_signal(signal.SIGTERM)
    final.wait(timeout=30)

    # -- the audit -------------------------------------------------------------------------
    jobs = [gw.store.get(i) for i in ids]
    stats = httpx.get(f"{sandbox_url}/sandbox/stats", timeout=10).json()
    states = Counter(j.state.value for j in jobs)
    not_terminal = [j.id for j in jobs if not j.state.terminal]
    ambiguous = [
        j
        for j in jobs
        if any(a.state is AttemptState.AMBIGUOUS for a in j.attempts)
        or (j.route or {}).get("reconciled")
    ]
    bad_ambiguous = [
        j.id
        for j in ambiguous
        if j.state.value not in ("needs_reconciliation", "succeeded", "failed", "canceled")
    ]
    ledger_violations = []
    for j in jobs:
        rows = gw.store.ledger(job_id=j.id)
        ended = [
            a.n
            for a in j.attempts
            if a.state
            not in (AttemptState.SUBMITTING, AttemptState.SUBMITTED, AttemptState.RUNNING)
        ]
        if sorted(r["attempt_n"] for r in rows) != sorted(ended):
            ledger_violations.append(j.id)
        billed = sum(r["amount_usd"] for r in rows if r["kind"] == "charge")
        if j.cost_usd is not None and abs(billed - j.cost_usd) > 1e-9:
            ledger_violations.append(j.id)
    print()
    print(
        f"worker kills: {kills} ({sum(hit.values())} at named crash points: "
        f"{dict(sorted(hit.items()))})"
    )
    print(f"final states: {dict(sorted(states.items()))}")
    print(f"jobs lost: {len(ids) - len(jobs)}")
    print(f"jobs not terminal: {len(not_terminal)}")
    print(
        f"provider creates: {stats['creates']}; duplicate provider submissions: "
        f"{stats['duplicate_submissions']}"
    )
    print(
        f"ambiguous creates: {len(ambiguous)} "
        f"(reconciled: {sum(1 for j in ambiguous if (j.route or {}).get('reconciled'))}, "
        f"needs_reconciliation: {states.get('needs_reconciliation', 0)}); "
        f"not settled: {len(bad_ambiguous)}"
    )
    print(f"ledger rows per ended attempt ≠ 1, or ledger ≠ cost: {len(ledger_violations)} jobs")
    ok = (
        not not_terminal
        and len(jobs) == len(ids)
        and stats["duplicate_submissions"] == 0
        and not bad_ambiguous
        and not ledger_violations
        and set(hit) >= set(POINTS)
        and kills >= args.kills
    )
    print("CHAOS PASSED" if ok else "CHAOS FAILED")
    gw.close()
    return 0 if ok else 1


def _spawn(env: dict[str, str], procs: int) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vidgate",
                "worker",
                "--lease",
                "2",
                "--concurrency",
                "100",
                "--grace",
                "10",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(procs)
    ]


def burst(
    args: argparse.Namespace,
    rng: random.Random,
    env: dict[str, str],
    work: Path,
    sandbox_url: str,
    mode: str,
) -> int:
    """A burst of jobs, workers killed (or terminated) again and again in its first seconds."""
    os.environ.update({k: v for k, v in env.items() if k.startswith("VIDGATE_")})
    from vidgate.gateway import Gateway
    from vidgate.settings import Settings
    from vidgate.types import AttemptState, JobState, VideoRequest

    target, how, *rest = mode.split("-")
    procs = 2 if rest and rest[0] == "2procs" else 1
    gw = Gateway(Settings())
    base = VideoRequest(prompt="burst", duration_s=4, resolution="480p")
    if target == "one":
        offerings = [gw.route(base, policy="cheapest").choice.offering.id]
    else:
        offerings = live_offerings(gw)
    ids = []
    for i in range(args.burst_jobs):
        offering = gw.catalog.offering(offerings[i % len(offerings)])
        caps = offering.capabilities
        request = VideoRequest(
            prompt=f"burst {mode} job {i}",
            duration_s=caps.durations.nearest(4.0),
            resolution=min(caps.resolutions, key=lambda r: r.short_side),
            aspect_ratio=caps.aspect_ratios[0],
        )
        ids.append(gw.submit(request, pinned=[offering.id]).id)
    print(f"{mode}: {len(ids)} jobs to {', '.join(offerings)}; {procs} worker process(es)")

    sig = signal.SIGKILL if how == "kill" else signal.SIGTERM
    restarts = args.burst_kills + 3
    for n in range(restarts):
        workers = _spawn(env, procs)
        # Wait until the workers are up (their heartbeat row: claims follow at once), so the
        # kill lands in the burst's first second of work rather than in Python's start-up.
        pids = {w.pid for w in workers}
        until = time.monotonic() + 60
        while time.monotonic() < until and not pids & {
            r["pid"] for r in gw.store.live_workers(within_s=30)
        }:
            time.sleep(0.05)
        # The first restarts land in the burst's first second, the rest at random later.
        time.sleep(rng.uniform(0.1, 1.0) if n < args.burst_kills else rng.uniform(1.5, 4.0))
        for w in workers:
            w.send_signal(sig)
        for w in workers:
            try:
                w.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()
        done = sum(gw.store.get(i).state.terminal for i in ids)
        print(f"  restart {n + 1:2d}: {sig.name} after a burst second; {done}/{len(ids)} terminal")

    during = httpx.get(f"{sandbox_url}/sandbox/stats", timeout=10).json()["creates"]
    submitting = sum(
        1 for i in ids for a in gw.store.get(i).attempts if a.state is AttemptState.SUBMITTING
    )
    print(
        f"  after the restarts: {during} creates had reached the sandbox; "
        f"{submitting} intents without an id were left"
    )
    final = _spawn(env, procs)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not all(gw.store.get(i).state.terminal for i in ids):
        time.sleep(0.5)
    for w in final:
        w.send_signal(signal.SIGTERM)
    for w in final:
        w.wait(timeout=60)

    jobs = [gw.store.get(i) for i in ids]
    stats = httpx.get(f"{sandbox_url}/sandbox/stats", timeout=10).json()
    states = Counter(j.state.value for j in jobs)
    parked = states.get(JobState.NEEDS_RECONCILIATION.value, 0)
    attempts = sum(len(j.attempts) for j in jobs)
    ambiguous = sum(1 for j in jobs for a in j.attempts if a.state is AttemptState.AMBIGUOUS)
    ledger_bad = []
    for j in jobs:
        rows = gw.store.ledger(job_id=j.id)
        ended = [
            a.n
            for a in j.attempts
            if a.state
            not in (AttemptState.SUBMITTING, AttemptState.SUBMITTED, AttemptState.RUNNING)
        ]
        billed = sum(r["amount_usd"] for r in rows if r["kind"] == "charge")
        if sorted(r["attempt_n"] for r in rows) != sorted(ended) or (
            j.cost_usd is not None and abs(billed - j.cost_usd) > 1e-9
        ):
            ledger_bad.append(j.id)
    spend = gw.accounts.spend()
    reserved_left = sum(e["reserved_usd"] for e in spend)
    held_for_parked = sum(j.reserved_usd or 0.0 for j in jobs if j.state.terminal)
    pct = 100.0 * parked / len(jobs)
    print(f"{mode} audit: final states {dict(sorted(states.items()))}")
    print(
        f"{mode} audit: jobs lost {len(ids) - len(jobs)}; not terminal "
        f"{sum(not j.state.terminal for j in jobs)}; attempts {attempts}; provider creates "
        f"{stats['creates']}; duplicate provider submissions {stats['duplicate_submissions']}"
    )
    print(
        f"{mode} audit: ambiguous attempts {ambiguous}; needs_reconciliation {parked} "
        f"({pct:.1f}%); ledger ≠ attempts/cost {len(ledger_bad)}; reserved left "
        f"${reserved_left:.2f} (held for parked jobs ${held_for_parked:.2f})"
    )
    ok = (
        len(jobs) == len(ids)
        and all(j.state.terminal for j in jobs)
        and stats["duplicate_submissions"] == 0
        and not ledger_bad
        and abs(reserved_left - held_for_parked) < 1e-6
    )
    if how == "kill":
        ok = ok and parked <= 0.02 * len(jobs)
    else:
        ok = ok and parked == 0 and states.get("succeeded", 0) == len(jobs)
    print(f"{mode}: {'PASSED' if ok else 'FAILED'}")
    gw.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
