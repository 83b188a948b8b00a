"""The gateway never imports torch; the model server's rules are readable without it."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module",
    [
        "vidgate.gateway",
        "vidgate.cli.main",
        "vidgate.local.families",
        "vidgate.local.shapes",
        "vidgate.local.protocol",
    ],
)
def test_importing_does_not_load_torch(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules)\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "", f"{module} imported {out.stdout.strip()}"
