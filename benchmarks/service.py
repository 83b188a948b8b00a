"""Control-plane overhead of the HTTP service: vidgate vs LiteLLM's proxy vs the provider.

Everything on loopback, against ONE sandbox process: its OpenAI Videos emulation is "the
provider". Six targets, measured one after the other in the same run:

* **sandbox direct**: ``POST/GET {sandbox}/openai-videos/v1/videos`` — the provider itself;
* **LiteLLM proxy** (its own virtualenv, ``.bench/litellm-venv``, ``pip install
  'litellm[proxy]'``) with one ``model_list`` entry ``openai/sora-2`` whose ``api_base`` is the
  sandbox's OpenAI emulation; its ``/v1/videos`` routes forward the create and every status
  call to the provider synchronously;
* **vidgate serve** (the default command, sandbox mode, ``model: auto``): a supervisor with
  one API process and one worker process. The create is validated, routed, budget-checked and
  stored durably, and answered as ``queued``; the worker process submits upstream and polls; a
  status read is a database read;
* **vidgate serve --api-processes 2**: the same with two API processes sharing the socket;
* **vidgate serve --in-process**: the API and its worker in one process (the default before
  the supervisor), for comparison;
* **vidgate serve --workers 0**: the API alone (what an API-only replica does when workers
  run elsewhere): the create's cost without upstream traffic competing for CPU.

Per target: latency (p50/p99 ms) of N sequential POSTs and N sequential GETs of the videos
just made (concurrency 1), then throughput at saturation: C concurrent clients for a bounded
time and count, POSTs then GETs, with the server process's CPU time per request. The load
generator (an ``httpx.AsyncClient`` in this process) shares the two cores with the servers.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from benchmarks.common import (
    BENCH_DIR,
    Options,
    Proc,
    child_env,
    fmt,
    free_port,
    heading,
    say,
    summary,
    table,
    tree_cpu_seconds,
    vidgate_cmd,
    wait_http,
)

NAME = "service"
#: the vidgate commands measured: (arguments after `vidgate serve --port P`, what it is)
VIDGATE_TARGETS: list[tuple[list[str], str]] = [
    ([], "default: supervisor, 1 API process + 1 worker process"),
    (["--api-processes", "2"], "2 API processes on one socket + 1 worker process"),
    (["--in-process"], "API and worker in one process (the old default)"),
    (["--workers", "0"], "the API alone; no upstream traffic"),
]
LITELLM_VENV = BENCH_DIR / "litellm-venv"
LITELLM_MASTER_KEY = "sk-bench-master-key"
#: the OpenAI Videos model the provider (the sandbox's emulation) is asked for
UPSTREAM_MODEL = "sora-2"
#: emulated jobs take minutes, so nothing finishes (and nothing is downloaded) while measuring
SANDBOX_TIME_SCALE = "10"
BODY = {"seconds": "4", "size": "1280x720"}


@dataclass
class Target:
    name: str
    base: str  # the URL that /videos hangs off
    key: str
    model: str
    pid: int | None  # the server process (and its children), for CPU time
    note: str = ""


@dataclass
class Result:
    target: str
    post_ms: dict[str, float] = field(default_factory=dict)
    get_ms: dict[str, float] = field(default_factory=dict)
    post_rps: float = 0.0
    get_rps: float = 0.0
    post_sat_ms: dict[str, float] = field(default_factory=dict)
    get_sat_ms: dict[str, float] = field(default_factory=dict)
    post_cpu_ms: float | None = None
    get_cpu_ms: float | None = None
    errors: dict[str, int] = field(default_factory=dict)
    first_error: str | None = None
    note: str = ""
    #: videos created through this target (warm-up included)
    queued: int = 0
    #: provider creates the sandbox saw while this target ran (vidgate: its worker's)
    upstream_creates: int | None = None


# -- the load generator ------------------------------------------------------------------------


class Load:
    def __init__(self, target: Target, result: Result) -> None:
        self.t = target
        self.r = result
        self.ids: list[str] = []
        self.n = 0

    def _fail(self, what: str, detail: str) -> None:
        self.r.errors[what] = self.r.errors.get(what, 0) + 1
        if self.r.first_error is None:
            self.r.first_error = f"{what}: {detail[:300]}"

    async def post(self, client: httpx.AsyncClient) -> float | None:
        self.n += 1
        body = {"model": self.t.model, "prompt": f"benchmark clip {self.n}: a fox", **BODY}
        t0 = time.perf_counter()
        try:
            resp = await client.post(
                f"{self.t.base}/videos",
                json=body,
                headers={"authorization": f"Bearer {self.t.key}"},
            )
        except httpx.HTTPError as e:
            self._fail("POST", f"{type(e).__name__}: {e}")
            return None
        ms = (time.perf_counter() - t0) * 1e3
        if resp.status_code != 200:
            self._fail(f"POST {resp.status_code}", resp.text)
            return None
        self.ids.append(str(resp.json()["id"]))
        return ms

    async def get(self, client: httpx.AsyncClient, i: int) -> float | None:
        vid = self.ids[i % len(self.ids)]
        t0 = time.perf_counter()
        try:
            resp = await client.get(
                f"{self.t.base}/videos/{vid}", headers={"authorization": f"Bearer {self.t.key}"}
            )
        except httpx.HTTPError as e:
            self._fail("GET", f"{type(e).__name__}: {e}")
            return None
        ms = (time.perf_counter() - t0) * 1e3
        if resp.status_code != 200:
            self._fail(f"GET {resp.status_code}", resp.text)
            return None
        return ms


async def _sequential(fn: Callable[[int], Any], n: int) -> list[float]:
    out: list[float] = []
    for i in range(n):
        ms = await fn(i)
        if ms is not None:
            out.append(ms)
    return out


async def _saturate(
    fn: Callable[[int], Any], clients: int, seconds: float, cap: int
) -> tuple[list[float], float, int]:
    """``clients`` loops issuing requests until ``seconds`` pass or ``cap`` were sent."""
    lat: list[float] = []
    sent = 0
    stop_at = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal sent
        while time.perf_counter() < stop_at and sent < cap:
            i = sent
            sent += 1
            ms = await fn(i)
            if ms is not None:
                lat.append(ms)

    t0 = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(clients)))
    return lat, time.perf_counter() - t0, sent


def _ms(values: list[float]) -> dict[str, float]:
    s = summary(values)
    return {k: round(v, 3) for k, v in s.items() if k in ("n", "p50", "p90", "p99", "mean")}


async def measure(target: Target, n: int, clients: int, seconds: float) -> Result:
    r = Result(target.name, note=target.note)
    load = Load(target, r)
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)
    async with httpx.AsyncClient(
        timeout=60, limits=limits, transport=httpx.AsyncHTTPTransport(retries=0, limits=limits)
    ) as client:
        # warm up: connections, caches, the server's first-request work
        for _ in range(20):
            await load.post(client)
        for i in range(20):
            if load.ids:
                await load.get(client, i)
        r.errors.clear()
        r.first_error = None
        r.post_ms = _ms(await _sequential(lambda i: load.post(client), n))
        if not load.ids:
            return r
        r.get_ms = _ms(await _sequential(lambda i: load.get(client, i), n))

        cpu0 = tree_cpu_seconds(target.pid) if target.pid else None
        lat, took, sent = await _saturate(lambda i: load.post(client), clients, seconds, 20 * n)
        cpu1 = tree_cpu_seconds(target.pid) if target.pid else None
        r.post_rps = len(lat) / took
        r.post_sat_ms = _ms(lat)
        if cpu0 is not None and cpu1 is not None and sent:
            r.post_cpu_ms = (cpu1 - cpu0) * 1e3 / sent

        lat, took, sent = await _saturate(lambda i: load.get(client, i), clients, seconds, 20 * n)
        cpu2 = tree_cpu_seconds(target.pid) if target.pid else None
        r.get_rps = len(lat) / took
        r.get_sat_ms = _ms(lat)
        if cpu1 is not None and cpu2 is not None and sent:
            r.get_cpu_ms = (cpu2 - cpu1) * 1e3 / sent
    r.queued = len(load.ids)
    return r


def _creates(sandbox_url: str) -> int:
    return int(httpx.get(f"{sandbox_url}/sandbox/stats", timeout=30).json()["creates"])


# -- LiteLLM ---------------------------------------------------------------------------------


def litellm_ready() -> tuple[Path | None, str]:
    """LiteLLM's proxy in its own virtualenv (created on first use); (litellm binary, version
    or the reason it is not available)."""
    exe = LITELLM_VENV / "bin" / "litellm"
    py = LITELLM_VENV / "bin" / "python"
    if not exe.exists():
        say(f"  installing LiteLLM's proxy into {LITELLM_VENV} (first run only)…")
        BENCH_DIR.mkdir(exist_ok=True)
        try:
            subprocess.run(
                [sys.executable, "-m", "venv", "--clear", str(LITELLM_VENV)],
                check=True,
                capture_output=True,
                text=True,
            )
            subprocess.run(
                [str(py), "-m", "pip", "install", "-q", "litellm[proxy]"],
                check=True,
                capture_output=True,
                text=True,
                timeout=1200,
            )
        except (OSError, subprocess.SubprocessError) as e:
            err = getattr(e, "stderr", "") or str(e)
            return None, f"installing litellm[proxy] failed: {err.strip()[-600:]}"
    try:
        out = subprocess.run(
            [str(py), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"the LiteLLM virtualenv is broken ({e}); delete {LITELLM_VENV}"
    return exe, out.stdout.strip()


def litellm_config(work: Path, sandbox_url: str) -> tuple[Path, Path]:
    config = {
        "model_list": [
            {
                "model_name": UPSTREAM_MODEL,
                "litellm_params": {
                    "model": f"openai/{UPSTREAM_MODEL}",
                    "api_base": f"{sandbox_url}/openai-videos/v1",
                    "api_key": "sandbox-key",
                },
            }
        ],
        "general_settings": {"master_key": LITELLM_MASTER_KEY},
    }
    cfg = work / "litellm.yaml"
    cfg.write_text(yaml.safe_dump(config))
    # uvicorn's access log off, as vidgate runs it (a log line per request costs CPU)
    log = work / "litellm-logging.json"
    log.write_text(
        json.dumps(
            {
                "version": 1,
                "disable_existing_loggers": False,
                "handlers": {"err": {"class": "logging.StreamHandler"}},
                "loggers": {
                    "uvicorn": {"handlers": ["err"], "level": "WARNING"},
                    "uvicorn.access": {"handlers": ["err"], "level": "WARNING"},
                },
            }
        )
    )
    return cfg, log


# -- the run ---------------------------------------------------------------------------------


def _vidgate(
    name: str, work: Path, sandbox_url: str, args: list[str], note: str
) -> tuple[Proc, Target]:
    home = work / name
    env = child_env(VIDGATE_HOME=str(home), VIDGATE_SANDBOX="1", VIDGATE_SANDBOX_URL=sandbox_url)
    out = subprocess.run(
        vidgate_cmd("keys", "create", "--tenant", "bench", "--json"),
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    key = json.loads(out.stdout)["key"]
    port = free_port()
    argv = vidgate_cmd("serve", "--port", str(port), *args)
    proc = Proc(name, argv, env, work)
    try:
        # /readyz, not /healthz: under the supervisor it also waits for the worker process
        wait_http(f"http://127.0.0.1:{port}/readyz", proc, timeout=240)
    except BaseException:
        proc.stop()  # never leave a server (and its supervised children) running
        raise
    return proc, Target(name, f"http://127.0.0.1:{port}/v1", key, "auto", proc.pid, note)


def run(options: Options) -> dict[str, Any]:
    n = options.jobs or (100 if options.quick else 500)
    clients = 16 if options.quick else 64
    seconds = 4.0 if options.quick else 10.0
    heading(
        f"service: /v1/videos overhead — sandbox direct, LiteLLM proxy, vidgate "
        f"({n} sequential requests; saturation: {clients} clients × ≤ {seconds:g} s)"
    )
    work = Path(tempfile.mkdtemp(prefix="vidgate-bench-service-"))
    results: list[Result] = []
    litellm_note = ""
    port = free_port()
    sandbox_url = f"http://127.0.0.1:{port}"
    sandbox = Proc(
        "sandbox",
        vidgate_cmd("sandbox", "serve", "--port", str(port), "--time-scale", SANDBOX_TIME_SCALE),
        child_env(VIDGATE_HOME=str(work / "sandbox-home")),
        work,
    )
    try:
        wait_http(f"{sandbox_url}/healthz", sandbox)
        say(f"  sandbox on {sandbox_url} (pid {sandbox.pid}); work dir {work}")
        direct = Target(
            "sandbox direct",
            f"{sandbox_url}/openai-videos/v1",
            "sandbox-key",
            UPSTREAM_MODEL,
            sandbox.pid,
            "the provider itself (OpenAI Videos emulation)",
        )
        results.append(asyncio.run(measure(direct, n, clients, seconds)))

        exe, version = litellm_ready()
        if exe is None:
            litellm_note = version
            say(f"  LiteLLM proxy: not measured — {version}")
        else:
            cfg, log = litellm_config(work, sandbox_url)
            lport = free_port()
            with Proc(
                "litellm",
                [
                    str(exe),
                    "--config",
                    str(cfg),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(lport),
                    "--num_workers",
                    "1",
                    "--log_config",
                    str(log),
                ],
                child_env(),
                work,
                cwd=work,
            ) as proxy:
                wait_http(f"http://127.0.0.1:{lport}/health/liveliness", proxy, timeout=180)
                litellm_note = f"litellm {version}, model openai/{UPSTREAM_MODEL} → sandbox"
                say(f"  LiteLLM proxy {version} on port {lport} (pid {proxy.pid})")
                target = Target(
                    "LiteLLM proxy",
                    f"http://127.0.0.1:{lport}/v1",
                    LITELLM_MASTER_KEY,
                    UPSTREAM_MODEL,
                    proxy.pid,
                    "forwards create and status to the provider synchronously",
                )
                results.append(asyncio.run(measure(target, n, clients, seconds)))

        for args, note in VIDGATE_TARGETS:
            name = " ".join(["vidgate serve", *args])
            slug = "vidgate" + "".join(a.strip("-") for a in args)
            proc, target = _vidgate(slug, work, sandbox_url, args, note)
            target.name = name
            no_worker = "--workers" in args
            before = _creates(sandbox_url)
            with proc:
                result = asyncio.run(measure(target, n, clients, seconds))
                after = _creates(sandbox_url)
            result.upstream_creates = after - before
            results.append(result)
            made = f"{result.upstream_creates:,}" if not no_worker else "0 (no worker)"
            say(f"  {name}: {result.queued:,} videos queued; provider creates meanwhile: {made}")
    finally:
        sandbox.stop()
        if not options.keep:
            shutil.rmtree(work, ignore_errors=True)

    return _report(results, litellm_note, n, clients, seconds)


def _report(
    results: list[Result], litellm_note: str, n: int, clients: int, seconds: float
) -> dict[str, Any]:
    say()
    say(
        table(
            [
                "target",
                "POST p50 ms",
                "POST p99 ms",
                "GET p50 ms",
                "GET p99 ms",
                "POST req/s",
                "GET req/s",
                "CPU ms/POST",
                "CPU ms/GET",
            ],
            [
                [
                    r.target,
                    fmt(r.post_ms.get("p50"), 2),
                    fmt(r.post_ms.get("p99"), 2),
                    fmt(r.get_ms.get("p50"), 2),
                    fmt(r.get_ms.get("p99"), 2),
                    fmt(r.post_rps, 0),
                    fmt(r.get_rps, 0),
                    fmt(r.post_cpu_ms, 2),
                    fmt(r.get_cpu_ms, 2),
                ]
                for r in results
            ],
        )
    )
    say(
        f"\n  latency: {n} sequential requests (concurrency 1) after 20 warm-up; req/s: "
        f"{clients} concurrent clients, ≤ {seconds:g} s and ≤ {20 * n:,} requests each; CPU "
        "ms: the server process's CPU time per request at saturation (the sandbox's own for "
        "'sandbox direct'; LiteLLM and vidgate exclude the sandbox's work)"
    )
    say("\n  under saturation, latency ms (p50 / p99):")
    say(
        table(
            ["target", "POST", "GET"],
            [
                [
                    r.target,
                    f"{fmt(r.post_sat_ms.get('p50'))} / {fmt(r.post_sat_ms.get('p99'))}",
                    f"{fmt(r.get_sat_ms.get('p50'))} / {fmt(r.get_sat_ms.get('p99'))}",
                ]
                for r in results
            ],
        )
    )
    base = results[0] if results and results[0].target == "sandbox direct" else None
    overhead: dict[str, dict[str, float]] = {}
    if base is not None:
        say("\n  overhead over calling the provider directly (ms, concurrency 1):")
        for r in results[1:]:
            o = {
                f"{verb}_{q}": round(mine.get(q, 0) - theirs.get(q, 0), 3)
                for verb, mine, theirs in (
                    ("post", r.post_ms, base.post_ms),
                    ("get", r.get_ms, base.get_ms),
                )
                for q in ("p50", "p99")
            }
            overhead[r.target] = o
            say(
                f"    {r.target:<36} POST p50 {o['post_p50']:+.2f} p99 {o['post_p99']:+.2f}   "
                f"GET p50 {o['get_p50']:+.2f} p99 {o['get_p99']:+.2f}   ({r.note})"
            )
    lite = next((r for r in results if r.target == "LiteLLM proxy"), None)
    vs_litellm: dict[str, float] = {}
    if lite is not None and lite.post_rps:
        say("\n  saturation throughput against LiteLLM's proxy (POST req/s, ratio; aim ≥ 3x):")
        for r in results:
            if r.target.startswith("vidgate"):
                vs_litellm[r.target] = round(r.post_rps / lite.post_rps, 2)
                say(
                    f"    {r.target:<36} {r.post_rps:7.0f} vs {lite.post_rps:.0f}"
                    f"  = {r.post_rps / lite.post_rps:.2f}x"
                )
    for r in results:
        if r.errors:
            say(f"  errors, {r.target}: {r.errors}; first: {r.first_error}")
    say(
        "\n  how to read it: LiteLLM's POST includes the provider's create call (it forwards "
        "synchronously) and every GET is a provider status call; vidgate's POST returns once "
        "the job is routed and durably queued (the provider create happens later, in its "
        "worker), and its GET reads vidgate's own database. The default 'vidgate serve' runs "
        "its worker in a separate process (the OS schedules it on the other core); "
        "'--in-process' shares one process and one core between the API and the worker's "
        "upstream traffic; '--workers 0' is the API alone. CPU ms counts the server's whole "
        "process tree (API and worker processes). The load generator runs in this process on "
        "the same 2 cores as every server, so req/s is a ceiling of the machine."
    )
    if litellm_note and not any(r.target == "LiteLLM proxy" for r in results):
        say(f"\n  LiteLLM proxy was not measured: {litellm_note}")
    return {
        "requests": n,
        "clients": clients,
        "seconds": seconds,
        "litellm": litellm_note,
        "vidgate_version": importlib.metadata.version("vidgate"),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "results": [r.__dict__ for r in results],
        "overhead_ms": overhead,
        "post_rps_vs_litellm": vs_litellm,
    }
