"""The README's promises: its quick-start commands and its model table match reality."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_quick_start_shows_demo_and_test_first() -> None:
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "make demo" in quick
    assert "make test" in quick


def test_model_table_is_generated_from_the_catalog() -> None:
    table = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "model_table.py")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert table in (ROOT / "README.md").read_text(), (
        "README's model table is stale: regenerate it with scripts/model_table.py"
    )
    assert "no public API" in table  # Movie Gen
    assert "retired by provider (2026-09-24)" in table  # Sora
