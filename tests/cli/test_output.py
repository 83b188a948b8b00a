"""Quiet, readable CLI output: tables that fit 80 columns and logs, no library chatter."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tests.conftest import ROOT
from vidgate.cli.output import split_table

WORKLOAD = ROOT / "examples" / "workloads" / "router-platform-mix.yaml"
PLAN_HEADERS = ["class", "share", "policy", "offering", "clips/day", "billed s", "$/clip"]
PLAN_HEADERS += ["$/day", "$/month", "p50", "p90", "p99"]


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDGATE_")}
    env.pop("COLUMNS", None)
    env.update({"VIDGATE_HOME": str(home), "NO_COLOR": "1", **extra})
    return env


def _wide_table() -> Table:
    t = Table(title="wide", show_edge=False)
    headers = [f"column number {i}" for i in range(9)]
    for h in headers:
        t.add_column(h)
    t.add_row(*[f"value-{i}-{'x' * i}" for i in range(9)])
    t.add_section()
    t.add_row(*[f"total-{i}" for i in range(9)])
    return t


def test_split_table_keeps_every_header_and_value_whole_at_80_columns() -> None:
    console = Console(width=80, record=True, force_terminal=False, color_system=None)
    parts = split_table(_wide_table(), 80, console)
    assert len(parts) > 1
    for part in parts:
        console.print(part)
        # the key column leads every part, so each row can still be read
        assert part.columns[0].header == "column number 0"
    text = console.export_text()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    for i in range(9):
        assert f"column number {i}" in text
        assert f"value-{i}-{'x' * i}" in text
        assert f"total-{i}" in text


def test_split_table_leaves_a_table_that_fits_alone() -> None:
    t = Table()
    t.add_column("a")
    t.add_row("1")
    assert split_table(t, 80) == [t]


def test_plan_piped_at_80_columns_shows_every_column_header(tmp_path: Path) -> None:
    # `| cat`: stdout is a pipe, exactly as when the output goes to a log
    proc = subprocess.run(
        [sys.executable, "-m", "vidgate", "plan", str(WORKLOAD)],
        env=_env(tmp_path / "h", COLUMNS="80"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "…" not in out, out
    assert max(len(line) for line in out.splitlines()) <= 80, out
    header_lines = [line for line in out.splitlines() if "┃" in line]
    cells = {c.strip() for line in header_lines for c in line.split("┃")}
    for h in PLAN_HEADERS:
        assert h in cells, (h, out)
    assert "luma-ray-3.14-luma" in out


def test_worker_start_prints_no_library_setup_logging(tmp_path: Path) -> None:
    home = tmp_path / "h"  # a fresh database: the migrations run at this start
    proc = subprocess.Popen(
        [sys.executable, "-m", "vidgate", "worker", "--sandbox"],
        env=_env(home, VIDGATE_SANDBOX_TIME_SCALE="0.01"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("worker "):
                break
        assert any(line.startswith("worker ") for line in lines), "".join(lines)
        assert (home / "vidgate.db").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
    out = "".join(lines) + rest
    assert proc.returncode == 0, out
    assert "alembic" not in out.lower(), out
    assert " INFO " not in out, out


def test_json_logs_only_on_request(tmp_path: Path) -> None:
    import json

    def warn(*flags: str, **env: str) -> str:
        code = (
            "import logging, sys; from vidgate.cli.main import main; "
            "sys.exit(main([*sys.argv[1:], 'version']) or "
            "logging.getLogger('vidgate.test').warning('hello') or 0)"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code, *flags],
            env=_env(tmp_path, **env),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return proc.stderr.strip()

    plain = warn()
    assert plain.endswith("WARNING vidgate.test: hello"), plain
    for line in (warn("--log-json"), warn(VIDGATE_LOG_FORMAT="json")):
        record = json.loads(line)
        assert record["msg"] == "hello"
        assert record["level"] == "warning"
