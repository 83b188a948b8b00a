"""Process supervision: run several vidgate processes as one command.

``vidgate worker --processes N`` and ``vidgate serve`` start their processes through a
:class:`Supervisor`. It

* starts every child in its own process group, so a Ctrl-C at the terminal reaches only the
  supervisor, which then sends each child exactly one SIGTERM (a worker treats SIGTERM as
  "finish what is on the wire, hand every other claim back"); a second Ctrl-C, or a child
  still running ``grace_s`` later, gets SIGKILL — the job store's leases make that safe too;
* restarts a child that dies, with exponential backoff (a child that keeps crashing at start
  does not spin a core), reset once it has stayed up for a while;
* asks Linux to SIGTERM every child if the supervisor itself dies (``PR_SET_PDEATHSIG``), so
  a killed supervisor leaves no orphans holding claims;
* writes its view of the children to a small JSON state file on every change, which the API
  processes read for ``/readyz`` (a dead worker makes the service not ready until it is back).

It knows nothing about what its children do: each is an argv and an environment.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

log = logging.getLogger("vidgate.supervise")

#: env var naming the supervisor's state file; set for every child it starts
STATE_ENV = "VIDGATE_SUPERVISOR_STATE"
_PR_SET_PDEATHSIG = 1
#: prometheus_client's own switch: set, every process writes its samples to files in this
#: folder and a scrape of any API process adds up all of them (workers included)
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def vidgate_argv(*args: str) -> list[str]:
    """The argv that runs ``vidgate ARGS`` with this interpreter (no PATH lookup)."""
    return [sys.executable, "-m", "vidgate.cli.main", *args]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class ChildSpec:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    #: its role, as /readyz reads it ("worker" children must all be alive)
    role: str = "worker"
    pass_fds: tuple[int, ...] = ()
    #: started before the children after it, which wait (up to 60 s) until this says True
    ready: Callable[[], bool] | None = None


@dataclass
class _Child:
    spec: ChildSpec
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    next_start: float = 0.0
    last_exit: int | None = None


class Supervisor:
    def __init__(
        self,
        specs: Sequence[ChildSpec],
        *,
        grace_s: float = 30.0,
        state_file: Path | None = None,
        base_env: dict[str, str] | None = None,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        stable_s: float = 30.0,
        on_change: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.children = [_Child(s) for s in specs]
        self.grace_s = grace_s
        self.state_file = state_file
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.stable_s = stable_s
        self.on_change = on_change
        self._stopping = False
        self._force = False

    # -- the loop ----------------------------------------------------------------------------

    def run(self, *, install_signals: bool = True) -> int:
        """Start every child and keep them running until SIGINT/SIGTERM; returns 0 after a
        clean stop, 1 if a child had to be killed."""
        if install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self._on_signal)
        for c in self.children:
            self._start(c)
            if c.spec.ready is not None:
                self._await_ready(c)
        self._write_state()
        try:
            while not self._stopping:
                self._tick()
                time.sleep(0.1)
        finally:
            code = self._shutdown()
        return code

    def _await_ready(self, c: _Child) -> None:
        assert c.spec.ready is not None
        assert c.proc is not None
        deadline = time.monotonic() + 60
        while not self._stopping and time.monotonic() < deadline and c.proc.poll() is None:
            if c.spec.ready():
                return
            time.sleep(0.1)
        log.warning("%s did not become ready; starting the others anyway", c.spec.name)

    def stop(self) -> None:
        self._stopping = True

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stopping:
            self._force = True  # the second Ctrl-C: do not wait for the grace period
        self._stopping = True

    def _tick(self) -> None:
        now = time.monotonic()
        changed = False
        for c in self.children:
            if c.proc is not None and c.proc.poll() is not None:
                c.last_exit = c.proc.returncode
                up = now - c.started_at
                # A child that ran for a while before dying is restarted at once; one that
                # keeps dying at start waits longer each time.
                if up >= self.stable_s:
                    c.restarts = 0
                delay = min(self.max_backoff_s, self.backoff_s * (2 ** min(c.restarts, 10)))
                log.warning(
                    "%s (pid %d) exited with %s after %.1fs; restarting in %.1fs",
                    c.spec.name,
                    c.proc.pid,
                    c.last_exit,
                    up,
                    delay,
                )
                c.proc = None
                c.next_start = now + delay
                c.restarts += 1
                changed = True
            if c.proc is None and now >= c.next_start:
                self._start(c)
                changed = True
        if changed:
            self._write_state()

    def _start(self, c: _Child) -> None:
        env = {**self.base_env, **c.spec.env}
        if self.state_file is not None:
            env[STATE_ENV] = str(self.state_file)
        c.proc = subprocess.Popen(
            c.spec.argv,
            env=env,
            process_group=0,  # terminal signals reach the supervisor only
            preexec_fn=_die_with_parent,
            pass_fds=c.spec.pass_fds,
        )
        c.started_at = time.monotonic()
        log.info("started %s (pid %d)", c.spec.name, c.proc.pid)

    def _shutdown(self) -> int:
        # Children others depend on (those with a readiness check: the sandbox) stop last,
        # so a worker's graceful stop can still finish its calls.
        deps = [c for c in self.children if c.spec.ready is not None]
        rest = [c for c in self.children if c.spec.ready is None]
        deadline = time.monotonic() + self.grace_s
        killed = self._stop_group(rest, deadline)
        killed |= self._stop_group(deps, max(deadline, time.monotonic() + 5))
        self._write_state(stopped=True)
        return 1 if killed else 0

    def _stop_group(self, group: list[_Child], deadline: float) -> bool:
        live = [c for c in group if c.proc is not None and c.proc.poll() is None]
        for c in live:
            assert c.proc is not None
            with contextlib.suppress(ProcessLookupError):
                c.proc.send_signal(signal.SIGTERM)
        killed = False
        for c in live:
            assert c.proc is not None
            while c.proc.poll() is None:
                if self._force or time.monotonic() >= deadline:
                    log.warning(
                        "%s (pid %d) did not stop in time; killing", c.spec.name, c.proc.pid
                    )
                    with contextlib.suppress(ProcessLookupError):
                        c.proc.kill()
                    c.proc.wait()
                    killed = True
                    break
                time.sleep(0.05)
        for c in group:
            c.proc = None
        return killed

    # -- state ---------------------------------------------------------------------------------

    def state(self, *, stopped: bool = False) -> dict[str, Any]:
        return {
            "supervisor_pid": os.getpid(),
            "stopped": stopped,
            "children": [
                {
                    "name": c.spec.name,
                    "role": c.spec.role,
                    "pid": c.proc.pid if c.proc is not None else None,
                    "alive": c.proc is not None and c.proc.poll() is None,
                    "restarts": c.restarts,
                    "last_exit": c.last_exit,
                }
                for c in self.children
            ],
        }

    def _write_state(self, *, stopped: bool = False) -> None:
        st = self.state(stopped=stopped)
        if self.on_change is not None:
            self.on_change(st)
        if self.state_file is None:
            return
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(st))
        tmp.replace(self.state_file)  # atomic: a reader never sees half a file


def workers_ready(state_file: str | os.PathLike[str] | None = None) -> tuple[bool, str]:
    """For ``/readyz`` in a supervised API process: are all worker children alive?

    (True, "") when not supervised. Reads a few hundred bytes; the supervisor rewrites the
    file atomically whenever a child dies or starts."""
    path = state_file or os.environ.get(STATE_ENV)
    if not path:
        return True, ""
    try:
        st = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        return False, f"supervisor state unreadable: {type(e).__name__}"
    if st.get("stopped"):
        return False, "supervisor stopping"
    dead = [c["name"] for c in st.get("children", []) if c["role"] == "worker" and not c["alive"]]
    if dead:
        return False, f"worker process down: {', '.join(dead)}"
    return True, ""
