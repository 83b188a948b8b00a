"""The lock gate: `make` targets and CI refuse a pyproject.toml that uv.lock does not match."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(sys.executable).parent.parent


def _project(tmp_path: Path) -> Path:
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "venv.py", tmp_path / "scripts" / "venv.py")
    return tmp_path


def _check(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "scripts/venv.py", "check", "--venv", str(VENV)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_committed_lock_matches(tmp_path: Path) -> None:
    res = _check(_project(tmp_path))
    assert res.returncode == 0, res.stderr


def test_a_dependency_edited_without_relocking_fails(tmp_path: Path) -> None:
    project = _project(tmp_path)
    text = (project / "pyproject.toml").read_text()
    assert '"pyyaml>=6",' in text
    (project / "pyproject.toml").write_text(text.replace('"pyyaml>=6",', '"pyyaml>=6.0.1",'))
    res = _check(project)
    assert res.returncode == 1
    assert "run `make lock`" in res.stderr


@pytest.mark.parametrize("package", ["pyyaml", "limits"])
def test_a_pin_deleted_from_the_lock_fails(tmp_path: Path, package: str) -> None:
    project = _project(tmp_path)
    lock = (project / "uv.lock").read_text()
    start = lock.index(f'[[package]]\nname = "{package}"')
    end = lock.index("[[package]]", start + 1)
    (project / "uv.lock").write_text(lock[:start] + lock[end:])
    res = _check(project)
    assert res.returncode == 1
    assert "run `make lock`" in res.stderr
