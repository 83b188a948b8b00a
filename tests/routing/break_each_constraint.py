"""Break each routing constraint in turn and report which routing test catches it.

    .venv/bin/python -m tests.routing.break_each_constraint [--keys]

For every constraint in vidgate.routing.constraints.CONSTRAINTS this runs the routing tests
(``-x``, in a fresh process) with that one rule switched off — its check made to pass for every
offering, everywhere it is used: shape cache, fast path and explanation alike — and prints the
first failing test. ``--keys`` also drops each declared field from each cached rule's ``reads``
(so it falls out of the cache key). A row reading SURVIVED is a rule no test holds.

It is the in-process twin of a mutation run, limited to the one mutation that matters most per
rule; the tests' own ``test_switching_off_any_rule_fails_the_property`` does the same against
the property test alone. Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TESTS = [
    "tests/routing/test_constraints.py",
    "tests/routing/test_router.py",
    "tests/routing/test_router_property.py",
    "tests/routing/test_policies.py",
]
#: the meta-tests break rules themselves and expect a failure: leave them out here
DESELECT = "not fails_the_property and not every_cache_key_field"
_ENV = "VIDGATE_BREAK"


def _always(v: object, c: object, e: object, w: object) -> bool:
    return True


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """In the child process: apply the one break named in the environment before any test
    module imports the constraints (a plugin loaded with ``-p`` configures first)."""
    spec = os.environ.get(_ENV)
    if not spec:
        return
    import dataclasses

    from vidgate.routing import constraints as mod

    kind, name, _, field = spec.partition(":")
    ks = list(mod.CONSTRAINTS)
    [i] = [i for i, k in enumerate(ks) if k.ok.__name__ == name]
    if kind == "off":
        # Swap the code, not the object: every holder of the function sees the break.
        ks[i].ok.__code__ = _always.__code__
    else:
        ks[i] = dataclasses.replace(ks[i], reads=tuple(f for f in ks[i].reads if f != field))
        mod.CONSTRAINTS = tuple(ks)
        mod.SHAPE_FIELDS = mod.shape_fields(mod.CONSTRAINTS)
        # the Router's default argument was bound at import: rebind it too
        from vidgate.routing import router

        defaults = router.Router.__init__.__defaults__
        assert defaults is not None
        router.Router.__init__.__defaults__ = (mod.CONSTRAINTS, *defaults[1:])


def run(spec: str) -> tuple[str, float]:
    env = {**os.environ, _ENV: spec}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
    cmd += ["-p", "tests.routing.break_each_constraint", "-k", DESELECT, *TESTS]
    t0 = time.monotonic()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    took = time.monotonic() - t0
    if out.returncode == 0:
        return "SURVIVED", took
    failed = re.search(r"^FAILED (\S+)", out.stdout, re.M)
    return (failed.group(1) if failed else f"exit {out.returncode}"), took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", action="store_true", help="also drop each cache-key field")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from vidgate.routing.constraints import CONSTRAINTS, SHAPE_STAGES, Stage

    specs = [(f"off:{k.ok.__name__}", f"{k.code} ({k.ok.__name__} off)") for k in CONSTRAINTS]
    if args.keys:
        specs += [
            (f"key:{k.ok.__name__}:{f}", f"{k.code} ({f} dropped from key)")
            for k in CONSTRAINTS
            if k.stage in SHAPE_STAGES or k.stage is Stage.SIZE
            for f in k.reads
        ]
    survived = 0
    print(f"{'break':<48} {'first failing test':<80} s")
    for spec, label in specs:
        verdict, took = run(spec)
        survived += verdict == "SURVIVED"
        print(f"{label:<48} {verdict:<80} {took:.0f}", flush=True)
    print(f"\n{len(specs) - survived}/{len(specs)} breaks caught")
    return 1 if survived else 0


if __name__ == "__main__":
    raise SystemExit(main())
