"""Named crash points for chaos testing (off unless ``VIDGATE_CRASH_POINTS`` is set).

``VIDGATE_CRASH_POINTS="before_submit:0.05,after_create:0.05"`` makes the process SIGKILL
itself at those points with those probabilities, after appending the point's name to
``VIDGATE_CRASH_LOG``. Random external ``kill -9`` cannot be aimed at the narrow windows that
matter (between a provider's answer and our write of its id); these can, so `make chaos`
proves every window is survived.
"""

from __future__ import annotations

import os
import random
import signal

POINTS = (
    "before_submit",
    "after_create",
    "while_polling",
    "while_downloading",
    "before_final_write",
)


def _parse(spec: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in spec.split(","):
        name, _, p = part.strip().partition(":")
        if name:
            out[name] = float(p or 1.0)
    return out


_ACTIVE = _parse(os.environ.get("VIDGATE_CRASH_POINTS", ""))


def crash_point(name: str) -> None:
    p = _ACTIVE.get(name)
    if not p or random.random() >= p:
        return
    log = os.environ.get("VIDGATE_CRASH_LOG")
    if log:
        with open(log, "a") as f:
            f.write(name + "\n")
            f.flush()
            os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)
