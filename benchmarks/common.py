"""What every benchmark shares: percentiles, plain-text tables, the results file, and the
plumbing for benchmarks that run vidgate, the sandbox or LiteLLM as their own processes."""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
#: where benchmarks keep what they install (LiteLLM's own virtualenv); not in git
BENCH_DIR = ROOT / ".bench"


@dataclass
class Options:
    """The command line, as every benchmark sees it."""

    quick: bool = False
    pg: bool = False
    jobs: int | None = None
    keep: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


# -- numbers ---------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of already-sorted values, linearly interpolated."""
    if not sorted_values:
        return math.nan
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return float(sorted_values[lo] * (1 - frac) + sorted_values[hi] * frac)


def summary(values: Sequence[float], qs: Sequence[float] = (50, 90, 99)) -> dict[str, float]:
    """n, mean, min, max and the asked percentiles (keys ``p50``, ``p90``...)."""
    xs = sorted(values)
    out: dict[str, float] = {"n": float(len(xs))}
    if not xs:
        return out
    out["mean"] = sum(xs) / len(xs)
    out["min"] = float(xs[0])
    out["max"] = float(xs[-1])
    for q in qs:
        out[f"p{q:g}"] = percentile(xs, q)
    return out


def fmt(x: float | None, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:,.{digits}f}"


# -- output ----------------------------------------------------------------------------------


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    indent: int = 2,
    align: str | None = None,
) -> str:
    """A plain-text table. ``align`` has one letter per column, ``l`` or ``r``; by default
    the first column is left-aligned and the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    how = align or "l" + "r" * (len(headers) - 1)

    def line(r: Sequence[str]) -> str:
        parts = [
            r[i].ljust(widths[i]) if how[i] == "l" else r[i].rjust(widths[i]) for i in range(len(r))
        ]
        return " " * indent + "  ".join(parts).rstrip()

    rule = " " * indent + "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def heading(title: str) -> None:
    print()
    print(title)
    print("=" * len(title))
    one, five, _ = os.getloadavg()
    print(
        f"(machine: {os.cpu_count()} cpus, load average {one:.1f} / {five:.1f} over 1 / 5 min: "
        "other work on this machine shares the cores and moves the figures)",
        flush=True,
    )


def say(text: str = "") -> None:
    print(text, flush=True)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def record(name: str, options: Options, figures: Mapping[str, Any]) -> Path:
    """Append one benchmark's figures to ``benchmarks/results/latest.json`` (a JSON array of
    records, oldest first; the file is rewritten atomically)."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    entries: list[Any] = []
    if RESULTS.exists():
        try:
            loaded = json.loads(RESULTS.read_text("utf-8"))
            entries = loaded if isinstance(loaded, list) else [loaded]
        except (OSError, ValueError):
            entries = []  # a damaged file is replaced, not fatal
    entries.append(
        {
            "benchmark": name,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": _git_commit(),
            "quick": options.quick,
            "machine": {
                "cpus": os.cpu_count(),
                "load_average": [round(x, 2) for x in os.getloadavg()],
                "python": platform.python_version(),
                "platform": platform.platform(terse=True),
            },
            "figures": figures,
        }
    )
    fd, tmp = tempfile.mkstemp(dir=RESULTS.parent, prefix=".latest.", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(entries, f, indent=2, default=str)
        f.write("\n")
    os.replace(tmp, RESULTS)
    return RESULTS


# -- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(**overrides: str) -> dict[str, str]:
    """This environment without any VIDGATE_ setting (a benchmark sets its own), with
    LiteLLM kept off the network and Python's output unbuffered."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDGATE_")}
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


class Proc:
    """A child process with its output in a log file, stopped (and reaped) on exit."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_dir: Path,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=str(cwd or ROOT),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        self._log.close()

    def __enter__(self) -> Proc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_http(url: str, proc: Proc | None = None, timeout: float = 60.0) -> None:
    """Wait until ``url`` answers below 500; fail early (with the log) if the process died."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.tail()}")
        try:
            r = httpx.get(url, timeout=2)
            if r.status_code < 500:
                return
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as e:
            last = type(e).__name__
        time.sleep(0.2)
    tail = f"\n{proc.tail()}" if proc is not None else ""
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s ({last}){tail}")


def vidgate_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "vidgate", *args]


def rss_kib(pid: int) -> int | None:
    """Resident set size of a process in KiB (VmRSS in /proc/PID/status), None if gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used (from /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def tree_pids(pid: int) -> list[int]:
    """``pid`` and every descendant (from /proc/PID/task/*/children), parents first."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                with open(f"/proc/{p}/task/{t}/children", encoding="ascii") as f:
                    todo += [int(c) for c in f.read().split()]
            except (OSError, ValueError):
                continue
    return out


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU seconds used by ``pid`` and its descendants (a supervisor's API and workers)."""
    total = None
    for p in tree_pids(pid):
        cpu = cpu_seconds(p)
        if cpu is not None:
            total = (total or 0.0) + cpu
    return total
