# Two commands on a fresh machine: `make demo` and `make test`. Each creates or refreshes
# .venv from the committed lock (uv.lock) with only python3 present; see scripts/venv.py.
# Upgrading is deliberate: `make lock` after editing pyproject.toml, `make upgrade` for newer
# releases; a pyproject.toml that disagrees with uv.lock fails every target (and CI).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
EXTRAS ?= dev,server,contract,local,mcp,ray

.PHONY: venv lock upgrade demo test test-latest lint typecheck check bench chaos mutate clean

venv:
	@$(PYTHON) scripts/venv.py sync --venv $(VENV) --extras $(EXTRAS)

lock:
	$(PYTHON) scripts/venv.py lock --venv $(VENV)

upgrade:
	$(PYTHON) scripts/venv.py lock --venv $(VENV) --upgrade

demo: venv
	@$(PY) scripts/demo.py

# The suite runs on every core (pytest-xdist; each test file stays on one worker, tests are
# independent: fresh PostgreSQL schemas, homes and loopback ports per test).
PYTEST_ARGS ?= -n auto --dist loadfile

test: venv
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

typecheck: venv
	$(VENV)/bin/mypy

check: lint typecheck test

bench: venv
	$(PY) -m benchmarks $(BENCH_ARGS)
	@$(PY) scripts/mutate.py --summary || true

# Mutation testing (mutmut 3) over the money, crash and security paths; not part of CI's gate.
# `make mutate MUTATE_ARGS="net billing"` narrows it; MUTATE_ARGS=--changed for a change's files.
mutate: venv
	$(PY) scripts/mutate.py $(MUTATE_ARGS)

# The suite against the newest releases of every dependency, in its own venv; outside CI's
# gate, so upstream drift is seen when we choose to look rather than when it breaks a stop.
test-latest:
	$(PYTHON) scripts/venv.py latest --venv .venv-latest --extras $(EXTRAS)
	.venv-latest/bin/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .venv-latest .demo .pytest_cache .mypy_cache .ruff_cache

chaos: venv
	$(PY) scripts/chaos.py
