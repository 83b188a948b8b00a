"""Mutation testing over the money, crash and security paths, with mutmut 3.

    python scripts/mutate.py                    # every target, kill rate per module
    python scripts/mutate.py net billing        # some targets
    python scripts/mutate.py --changed [BASE]   # only files a change touched (default: HEAD~1)
    python scripts/mutate.py --summary          # the last run's figures, without running

Each target runs in its own scratch copy (``.mutate/<target>/``): mutmut keeps its state and
reads its configuration per project directory, and a target's own test selection keeps the
run short (mutmut then picks, per mutated function, only the tests that executed it).
A survivor is listed with file, line and the mutation; see docs/testing.md for what to do.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutate"


@dataclass(frozen=True)
class Target:
    name: str
    #: files or folders mutated (globs for mutmut's only_mutate)
    mutate: tuple[str, ...]
    #: the tests that exercise them
    tests: tuple[str, ...]
    #: extra pytest arguments (e.g. leave out meta-tests that break rules on purpose)
    args: tuple[str, ...] = ()


TARGETS = {
    t.name: t
    for t in (
        Target("net", ("src/vidgate/net/*",), ("tests/net", "tests/jobs/test_webhooks.py")),
        Target(
            "billing", ("src/vidgate/billing/*",), ("tests/jobs", "tests/server/test_budget.py")
        ),
        Target(
            "jobs", ("src/vidgate/jobs/driver.py", "src/vidgate/jobs/store.py"), ("tests/jobs",)
        ),
        Target(
            "server",
            (
                "src/vidgate/server/deps.py",
                "src/vidgate/server/guards.py",
                "src/vidgate/server/images.py",
            ),
            # the rules' own tests; the SDK, schemathesis and dashboard suites add only time
            (
                "tests/server/test_deps_rules.py",
                "tests/server/test_hardening.py",
                "tests/server/test_security.py",
                "tests/server/test_idempotency.py",
            ),
        ),
        Target(
            "routing",
            ("src/vidgate/routing/constraints.py", "src/vidgate/routing/router.py"),
            (
                "tests/routing/test_constraints.py",
                "tests/routing/test_router_property.py",
                "tests/routing/test_router.py",
            ),
            # these switch rules off themselves, in the warm property test: slow, and they
            # would see every mutant
            ("-k", "not fails_the_property and not every_cache_key_field"),
        ),
    )
}
PYTEST_ARGS = ["-p", "no:cacheprovider", "-q", "-x"]


def _scratch(target: Target, only: list[str]) -> Path:
    """A copy of the project whose pyproject.toml configures mutmut for one target."""
    where = WORK / target.name
    if where.exists():
        shutil.rmtree(where)
    where.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("src", "tests", "examples", "scripts"):
        shutil.copytree(ROOT / name, where / name, ignore=ignore)
    # tests find shared/ beside the checkout: beside the scratch copy, point at the real one
    shared = WORK / "shared"
    if not shared.exists() and (ROOT.parent / "shared").is_dir():
        shared.symlink_to(ROOT.parent / "shared")
    pyproject = (ROOT / "pyproject.toml").read_text()
    pyproject += "\n[tool.mutmut]\n" + "\n".join(
        (
            'source_paths = ["src/vidgate"]',
            f"only_mutate = {json.dumps(only)}",
            f"pytest_add_cli_args_test_selection = {json.dumps(list(target.tests))}",
            f"pytest_add_cli_args = {json.dumps(PYTEST_ARGS + list(target.args))}",
        )
    )
    (where / "pyproject.toml").write_text(pyproject + "\n")
    return where


def _mutmut(where: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "mutmut"
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    return subprocess.run(
        [str(exe), *args], cwd=where, env=env, capture_output=True, text=True, check=False
    )


_RESULT = re.compile(r"^\s*(\S+__mutmut_\d+): (\w[\w ]*)$")


def _results(where: Path) -> dict[str, str]:
    out = _mutmut(where, "results", "--all", "true").stdout
    return {m.group(1): m.group(2) for m in map(_RESULT.match, out.splitlines()) if m}


def _where(where: Path, mutant: str) -> str:
    """file:line and the mutated line of a survivor, from mutmut's own diff (whose hunk lines
    count from the function, so the line is found in the file after the function's def)."""
    diff = _mutmut(where, "show", mutant).stdout.splitlines()
    file = next((ln[4:].strip() for ln in diff if ln.startswith("+++ ")), "?")
    old = next((ln[1:] for ln in diff if ln.startswith("-") and not ln.startswith("---")), "")
    new = next(
        (ln[1:].strip() for ln in diff if ln.startswith("+") and not ln.startswith("+++")), ""
    )
    func = mutant.rsplit("__mutmut_", 1)[0].rsplit(".", 1)[-1].split("ǁ")[-1].removeprefix("x_")
    line = 0
    source = ROOT / file
    if source.exists() and old:
        seen_def = False
        for n, text in enumerate(source.read_text().splitlines(), 1):
            seen_def = seen_def or f"def {func}(" in text
            if seen_def and text.strip() == old.strip():
                line = n
                break
    return f"{file}:{line}  {new}".rstrip()


def run_target(target: Target, only: list[str], children: int) -> dict[str, object]:
    where = _scratch(target, only)
    started = time.monotonic()
    run = _mutmut(where, "run", "--max-children", str(children))
    results = _results(where)
    counted = {k: v for k, v in results.items() if v in ("killed", "survived", "timeout")}
    if not counted:
        # e.g. the clean test run failed in the scratch copy: say so, never report "0 of 0"
        sys.stderr.write(run.stdout[-3000:] + run.stderr[-3000:])
        raise SystemExit(f"mutmut checked no mutant of {target.name} (exit {run.returncode})")
    killed = sum(v in ("killed", "timeout") for v in counted.values())
    survivors = sorted(k for k, v in counted.items() if v == "survived")
    return {
        "target": target.name,
        "killed": killed,
        "total": len(counted),
        "no_tests": sum(v == "no tests" for v in results.values()),
        "kill_rate": round(killed / len(counted), 4) if counted else None,
        "seconds": round(time.monotonic() - started, 1),
        "survivors": [_where(where, s) + f"  [{s}]" for s in survivors],
    }


def changed_files(base: str) -> list[str]:
    out = subprocess.run(
        ["git", "diff", "--name-only", base, "--", "src/vidgate"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [ln for ln in out.stdout.splitlines() if ln.endswith(".py")]


def _matches(path: str, pattern: str) -> bool:
    return path == pattern or (pattern.endswith("*") and path.startswith(pattern[:-1]))


def report(rows: list[dict[str, object]]) -> None:
    print(f"{'target':<10} {'killed':>7} {'total':>6} {'rate':>7} {'no tests':>9} {'time':>8}")
    for r in rows:
        rate = f"{100 * r['kill_rate']:.1f}%" if r["kill_rate"] is not None else "—"  # type: ignore[operator]
        print(
            f"{r['target']:<10} {r['killed']:>7} {r['total']:>6} {rate:>7} "
            f"{r['no_tests']:>9} {r['seconds']:>7}s"
        )
    for r in rows:
        survivors = r["survivors"]
        assert isinstance(survivors, list)
        if survivors:
            print(f"\nsurvivors in {r['target']} ({len(survivors)}):")
            for s in survivors:
                print(f"  {s}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", nargs="*", choices=[[], *TARGETS], default=[])
    ap.add_argument("--changed", nargs="?", const="HEAD~1", metavar="BASE")
    ap.add_argument("--summary", action="store_true", help="print the last run's figures")
    ap.add_argument("--children", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()
    last = WORK / "last.json"
    if args.summary:
        if not last.exists():
            print("no mutation run yet: make mutate")
            return 1
        report(json.loads(last.read_text()))
        return 0
    chosen = [TARGETS[t] for t in args.targets] or list(TARGETS.values())
    rows = []
    for target in chosen:
        only = list(target.mutate)
        if args.changed:
            touched = changed_files(args.changed)
            only = [f for f in touched if any(_matches(f, p) for p in target.mutate)]
            if not only:
                continue
        rows.append(run_target(target, only, args.children))
    WORK.mkdir(exist_ok=True)
    last.write_text(json.dumps(rows, indent=1))
    report(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
