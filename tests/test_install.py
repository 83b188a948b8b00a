"""The wheel a user installs: built from this tree, installed into clean virtual environments.

Two shapes: no extras (the library and CLI against the sandbox, and the one-line message for
a command that needs an extra), and ``[server]`` (``vidgate serve`` answers ``/healthz``).
Installs use the lock's versions as constraints, so the test checks our packaging, not
whatever an upstream release did today. uv's cache keeps the second and later runs quick.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
UV = Path(sys.executable).parent / "uv"

pytestmark = pytest.mark.slow


def _uv(*args: str | Path, **kw: object) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PIP_FIND_LINKS"}
    env["UV_NO_PROGRESS"] = "1"
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [str(UV), *map(str, args)], env=env, check=True, capture_output=True, text=True, **kw
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the wheel, a constraints file with the lock's pins)."""
    if not UV.exists():
        pytest.fail(f"uv is missing from the venv ({UV}); `make test` installs it")
    out = tmp_path_factory.mktemp("dist")
    _uv("build", "--wheel", "--sdist", "-o", out, "--quiet", cwd=ROOT)
    wheel = next(out.glob("vidgate-*.whl"))
    sdist = next(out.glob("vidgate-*.tar.gz"))
    assert sdist.stat().st_size > 0
    pins = out / "constraints.txt"
    _uv(
        "export", "--frozen", "--quiet", "--all-extras", "--no-emit-project", "--no-hashes",
        "--format", "requirements.txt", "-o", pins, cwd=ROOT,
    )  # fmt: skip
    return wheel, pins


def _venv(where: Path, wheel: Path, pins: Path, extras: str = "") -> Path:
    _uv("venv", "--quiet", "--python", sys.executable, where)
    py = where / "bin" / "python"
    _uv("pip", "install", "--quiet", "--python", py, "-c", pins, f"vidgate{extras} @ {wheel}")
    return where / "bin" / "vidgate"


def _run(exe: Path, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDGATE_")}
    env.update(VIDGATE_HOME=str(home), COLUMNS="100")
    return subprocess.run(
        [str(exe), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=home,
        stdin=subprocess.DEVNULL,
    )


def test_no_extras_runs_the_library_and_cli(built: tuple[Path, Path], tmp_path: Path) -> None:
    wheel, pins = built
    exe = _venv(tmp_path / "venv", wheel, pins)
    home = tmp_path / "home"
    home.mkdir()
    # nothing from any extra came along
    py = exe.parent / "python"
    probe = subprocess.run(
        [py, "-c", "import importlib.util as u; print([m for m in "
         "('prometheus_client','redis','psycopg','matplotlib','torch') if u.find_spec(m)])"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert probe.stdout.strip() == "[]"

    assert _run(exe, "--help", home=home).returncode == 0
    models = _run(exe, "models", "--json", home=home)
    assert models.returncode == 0, models.stderr
    assert len(json.loads(models.stdout)) > 10
    route = _run(exe, "route", "a fox", "--sandbox", "--json", home=home)
    assert route.returncode == 0, route.stderr
    assert json.loads(route.stdout)["chosen"]["offering"]
    gen = _run(exe, "generate", "a fox", "--sandbox", "-o", str(home / "fox.mp4"), home=home)
    assert gen.returncode == 0, gen.stderr
    assert (home / "fox.mp4").stat().st_size > 1000
    workload = ROOT / "examples" / "workloads" / "router-platform-mix.yaml"
    plan = _run(exe, "plan", str(workload), "--json", home=home)
    assert plan.returncode == 0, plan.stderr
    # the Python API, as a library user calls it
    api = subprocess.run(
        [py, "-c", "from vidgate.gateway import generate; from vidgate.types import VideoRequest;"
         "job = generate(VideoRequest(prompt='a koi pond'), sandbox=True);"
         "print(job.state.value, job.cost_usd is not None)"],
        capture_output=True, text=True, env={**os.environ, "VIDGATE_HOME": str(home)},
        timeout=300,
    )  # fmt: skip
    assert api.returncode == 0, api.stderr
    assert api.stdout.split() == ["succeeded", "True"]

    # a command that needs an extra: exit 2, one line naming it, no traceback
    for args, extra in ((("serve", "--sandbox"), "server"), (("plan", str(workload), "--charts",
                        str(home / "charts")), "plan")):  # fmt: skip
        res = _run(exe, *args, home=home)
        assert res.returncode == 2, (args, res.stderr)
        assert "Traceback" not in res.stderr
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1, res.stderr
        assert f"pip install 'vidgate[{extra}]'" in lines[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def server_venv(built: tuple[Path, Path], tmp_path: Path) -> Iterator[Path]:
    wheel, pins = built
    yield _venv(tmp_path / "venv", wheel, pins, "[server]")
    shutil.rmtree(tmp_path / "venv", ignore_errors=True)


def test_server_extra_serves(server_venv: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDGATE_")}
    env["VIDGATE_HOME"] = str(home)
    proc = subprocess.Popen(
        [str(server_venv), "serve", "--sandbox", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        last: Exception | None = None
        for _ in range(600):
            if proc.poll() is not None:
                pytest.fail(f"vidgate serve exited {proc.returncode}: {proc.stdout.read()}")  # type: ignore[union-attr]
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                assert r.status_code == 200
                return
            except httpx.HTTPError as e:
                last = e
                time.sleep(0.1)
        pytest.fail(f"vidgate serve never answered /healthz: {last}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
