"""``python -m benchmarks [--only NAME[,NAME]] [--quick] [--pg] [--jobs N] [--keep]``

Runs the benchmarks in order (routing, planner, worker, service), prints each one's table and
appends its figures to ``benchmarks/results/latest.json``. A benchmark that cannot run says
why and the others still run; the exit status is 1 if any failed to produce figures.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

# LiteLLM (imported by nothing here, but possibly by a dependency) must not try the network.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from benchmarks.common import RESULTS, Options, record, say

#: every benchmark is ``benchmarks/<name>.py`` with ``run(options) -> figures``
ORDER = [
    "routing",
    "planner",
    "worker",
    "service",
    "stages",
    "semantic",
    "provenance",
    "assembly",
    "local_models",
]


def _runner(name: str) -> Callable[[Options], dict[str, Any]]:
    # Imported on demand, so `--only routing` does not pay for the others' imports.
    module = importlib.import_module(f"benchmarks.{name}")
    run: Callable[[Options], dict[str, Any]] = module.run
    return run


def parse(argv: list[str] | None) -> tuple[list[str], Options]:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="vidgate benchmarks: print figures, never assert timings.",
    )
    ap.add_argument(
        "--only",
        default="",
        metavar="NAME[,NAME]",
        help=f"run only these (of {', '.join(ORDER)})",
    )
    ap.add_argument("--quick", action="store_true", help="smaller runs (a smoke test of each)")
    ap.add_argument(
        "--pg",
        action="store_true",
        help="worker: also run on PostgreSQL (VIDGATE_BENCH_PG, default "
        "postgresql+psycopg://postgres@127.0.0.1:5432/test)",
    )
    ap.add_argument(
        "--jobs",
        type=int,
        default=None,
        metavar="N",
        help="override the size: routing decisions, worker jobs, service requests",
    )
    ap.add_argument(
        "--keep", action="store_true", help="keep the temporary work directories (logs, databases)"
    )
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(ORDER)
    unknown = [n for n in names if n not in ORDER]
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(ORDER)}")
    if args.jobs is not None and args.jobs < 1:
        ap.error("--jobs must be at least 1")
    return names, Options(quick=args.quick, pg=args.pg, jobs=args.jobs, keep=args.keep)


def main(argv: list[str] | None = None) -> int:
    names, options = parse(argv)
    failed: list[str] = []
    started = time.monotonic()
    for name in names:
        t0 = time.monotonic()
        try:
            figures = _runner(name)(options)
        except KeyboardInterrupt:
            say(f"\n{name}: interrupted")
            return 130
        except Exception as e:
            traceback.print_exc()
            say(f"\n{name}: FAILED — {type(e).__name__}: {e}")
            failed.append(name)
            continue
        figures["wall_s"] = round(time.monotonic() - t0, 1)
        record(name, options, figures)
        say(f"\n[{name}: {figures['wall_s']:.1f} s; figures appended to {RESULTS}]")
    say(
        f"\n{len(names) - len(failed)}/{len(names)} benchmarks ran in "
        f"{time.monotonic() - started:.0f} s" + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
